"""What a run prints about its data before the first batch
(:func:`describe_data`): each raw volume's resolution and what is done to
bring it to the training voxel size (:func:`resolution_report`), and how
each training sample serves the largest request the training pipeline can
send it (:func:`geometry_report`), the raw input grown by the worst
augmentation (:func:`augmentation_growth`, :func:`request_reach`).
"""

from __future__ import annotations

import itertools
import math

from funlib.geometry import Coordinate

from gp_hotdistance.data import Sample
from gp_hotdistance.torch.dataset import JITTER_SIGMA, ROTATION_MAX, augmented_axes
from pipelines.batches import Data
from pipelines.config import Config

#: The jitter's worst growth counted in the geometry report, in sigmas.
JITTER_BOUND = 4
#: The geometry report names at most this many padded samples (the most padded).
GEOMETRY_LINES = 10


def augmentation_growth(config: Config, voxel_size: Coordinate, shape: Coordinate) -> Coordinate:
    """Voxels per side by which the augmentations of
    :func:`pipelines.batches.build_data_pipeline` grow a request of ``shape``
    voxels, at worst. ``SimpleAugment`` (nearer
    the network) may transpose the request's in-plane axes first; for every
    such order, ``ElasticAugment``'s rotation (up to :data:`ROTATION_MAX` in
    the last two axes) grows the box as its worst angle does, and the
    jitter (normal, :data:`JITTER_SIGMA` voxels) is counted as
    :data:`JITTER_BOUND` sigmas plus the voxel gunpowder adds to the source
    box. A rarer draw only reads further into the zero padding."""
    dims = voxel_size.dims
    transposed, plane = augmented_axes(voxel_size)
    if not config.training.augment or plane == 0:
        return Coordinate((0,) * dims)
    jitter = math.ceil(JITTER_BOUND * JITTER_SIGMA) + 1
    worst = [0] * dims
    for order in itertools.permutations(transposed):
        sizes = list(shape)
        for axis, source in zip(transposed, order, strict=True):
            sizes[axis] = shape[source]
        half = [(s - 1) / 2 for s in sizes]
        a, b = half[-2], half[-1]
        angles = [0.0, ROTATION_MAX] + [
            t for t in (math.atan2(b, a), math.atan2(a, b)) if 0 <= t <= ROTATION_MAX
        ]
        half[-2] = max(a * math.cos(t) + b * math.sin(t) for t in angles)
        half[-1] = max(a * math.sin(t) + b * math.cos(t) for t in angles)
        for axis in range(dims):
            growth = half[axis] - (shape[axis] - 1) / 2
            if axis >= dims - plane:
                growth += jitter
            worst[axis] = max(worst[axis], math.ceil(growth - 1e-9))
    return Coordinate(worst)


def request_reach(
    config: Config, voxel_size: Coordinate, input_shape: Coordinate
) -> tuple[Coordinate, Coordinate]:
    """World extent below and above a request's centre voxel (its corner, as
    :class:`~gp_hotdistance.data.RandomLabelledLocation` places it) of the
    largest request the training pipeline can send to a sample: the raw
    input, grown by :func:`augmentation_growth`."""
    grown = Coordinate(input_shape) + augmentation_growth(config, voxel_size, input_shape) * 2
    below = Coordinate(n // 2 for n in grown)
    return below * voxel_size, (grown - below) * voxel_size


def describe_data(config: Config, data: Data, input_shape: Coordinate) -> list[str]:
    """What a run prints before its first batch: the geometry of every
    training sample (:func:`geometry_report`) for a network input of
    ``input_shape`` voxels."""
    below, above = request_reach(config, data.voxel_size, input_shape)
    return resolution_report(data) + geometry_report(data, below, above)


def _resampling(native: Coordinate, voxel_size: Coordinate, pool: str, up: str) -> str:
    """How data at ``native`` is brought to ``voxel_size``, in words."""
    if native == voxel_size:
        return "used as is"
    down = tuple(max(t // v, 1) for v, t in zip(native, voxel_size, strict=True))
    grow = tuple(max(v // t, 1) for v, t in zip(native, voxel_size, strict=True))
    words = []
    if any(f > 1 for f in down):
        words.append(f"pooled x{down} ({pool})")
    if any(f > 1 for f in grow):
        words.append(f"upsampled x{grow} ({up})")
    return " and ".join(words)


def resolution_report(data: Data) -> list[str]:
    """Per raw volume: its native voxel size, its label datasets' and what
    is done to bring each to the training voxel size."""
    voxel_size = data.voxel_size
    volumes: dict[str, list[Sample]] = {}
    for sample in [*data.samples, *data.eval]:
        volumes.setdefault(sample.raw.path, []).append(sample)
    lines = [f"data at the training voxel size {tuple(voxel_size)}:"]
    for path, samples in volumes.items():
        raw = samples[0].raw
        labels: dict[tuple[int, ...], int] = {}
        for sample in samples:
            for volume in {v.path: v for v in sample.labels.values()}.values():
                key = tuple(volume.voxel_size)
                labels[key] = labels.get(key, 0) + 1
        label_words = "; ".join(
            f"{n} at {size} {_resampling(Coordinate(size), voxel_size, 'majority', 'nearest')}"
            for size, n in sorted(labels.items())
        )
        lines.append(
            f"  {path} ({len(samples)} sample{'s' if len(samples) != 1 else ''}): raw at "
            f"{tuple(raw.voxel_size)} {_resampling(raw.voxel_size, voxel_size, 'mean', 'linear')}"
            f"; label datasets: {label_words}"
        )
    return lines


def geometry_report(
    data: Data, below: Coordinate, above: Coordinate, shown: int = GEOMETRY_LINES
) -> list[str]:
    """How each training sample serves the largest request (see
    :func:`request_reach`): a count of those it fits, and one line per
    sample whose raw is padded (zeros beyond its raw volume, at most how
    many voxels per axis below and above), the ``shown`` most padded ones,
    then how many more."""
    padded = []
    for where, sample in zip(data.where, data.samples, strict=True):
        low, high = sample.raw_padding(below, above)
        if any(low) or any(high):
            padded.append((max(*low, *high), where, sample.raw.path, low, high))
    fits = len(data.samples) - len(padded)
    lines = [
        f"geometry: the largest request reaches {tuple(below / data.voxel_size)} voxels below "
        f"and {tuple(above / data.voxel_size)} above its centre (raw input plus the worst "
        f"augmentation growth); {fits} of {len(data.samples)} training samples fit it"
        + (", the others read zeros beyond their raw volume:" if padded else "")
    ]
    padded.sort(key=lambda item: -item[0])
    for _, where, path, low, high in padded[:shown]:
        lines.append(
            f"  {where} ({path}): raw padded with zeros by up to {tuple(low)} voxels below "
            f"and {tuple(high)} above"
        )
    if len(padded) > shown:
        lines.append(f"  ... and {len(padded) - shown} more samples padded by less")
    return lines
