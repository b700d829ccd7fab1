"""Test helpers: an in-memory gunpowder source and random test volumes."""

from __future__ import annotations

import copy
from collections.abc import Sequence

import gunpowder as gp
import numpy as np
import numpy.typing as npt
from scipy.ndimage import gaussian_filter


class ArraySource(gp.BatchProvider):
    """Provide one pre-built in-memory :class:`gunpowder.Array` under ``key``.

    Combine several with ``(ArraySource(a, arr_a), ArraySource(b, arr_b)) +
    gp.MergeProvider()``.
    """

    def __init__(self, key: gp.ArrayKey, array: gp.Array):
        self.key = key
        self.array = array

    def setup(self) -> None:
        self.provides(self.key, self.array.spec.copy())

    def provide(self, request: gp.BatchRequest) -> gp.Batch:
        outputs = gp.Batch()
        if self.key in request:
            outputs[self.key] = copy.deepcopy(self.array.crop(request[self.key].roi))
        return outputs


def make_array(
    data: npt.NDArray,
    offset: Sequence[int],
    voxel_size: Sequence[int],
    interpolatable: bool = False,
) -> gp.Array:
    """``data`` (channels first allowed) as a gunpowder Array at the world
    ``offset`` with ``voxel_size``."""
    voxel_size = gp.Coordinate(voxel_size)
    shape = gp.Coordinate(data.shape[-voxel_size.dims :])
    spec = gp.ArraySpec(
        roi=gp.Roi(gp.Coordinate(offset), shape * voxel_size),
        voxel_size=voxel_size,
        interpolatable=interpolatable,
        dtype=data.dtype,
    )
    return gp.Array(data, spec)


def blobs(
    rng: np.random.Generator, shape: Sequence[int], ids: Sequence[int], n: int = 6
) -> npt.NDArray:
    """A class-id volume of axis-aligned boxes, each holding one of ``ids``
    (0 elsewhere), dtype uint64 so ids beyond 2**32 survive."""
    labels = np.zeros(tuple(shape), dtype=np.uint64)
    for _ in range(n):
        begin = [int(rng.integers(0, s)) for s in shape]
        size = [int(rng.integers(1, max(2, s // 2))) for s in shape]
        box = tuple(slice(b, b + z) for b, z in zip(begin, size, strict=True))
        labels[box] = np.uint64(ids[int(rng.integers(0, len(ids)))])
    return labels


def smooth_blobs(
    rng: np.random.Generator, shape: Sequence[int], sigma: float, fraction: float
) -> npt.NDArray[np.uint8]:
    """A binary uint8 volume: Gaussian-smoothed noise (``sigma`` voxels)
    thresholded to about ``fraction`` foreground."""
    noise = gaussian_filter(rng.standard_normal(tuple(shape)), sigma)
    return (noise > np.quantile(noise, 1 - fraction)).astype(np.uint8)


def random_mask(
    rng: np.random.Generator, shape: Sequence[int], p_unknown: float = 0.15
) -> npt.NDArray[np.uint8]:
    """A uint8 mask, 1 = annotated, with one unknown box plus sparse holes."""
    mask = (rng.random(tuple(shape)) >= p_unknown / 4).astype(np.uint8)
    begin = [int(rng.integers(0, s)) for s in shape]
    size = [max(1, int(s * p_unknown)) for s in shape]
    mask[tuple(slice(b, b + z) for b, z in zip(begin, size, strict=True))] = 0
    return mask


def augmented_pipeline(
    predictor,
    keys: dict[str, gp.ArrayKey],
    shape: Sequence[int] = (16, 64, 64),
    voxel_size: Sequence[int] = (8, 4, 4),
    seed: int = 0,
    ids: Sequence[int] = (1, 2, 2**40 + 3),
):
    """The training pipeline of the issue's point 5 up to the three nodes:
    ``source + Pad(gt, mask) + RandomLocation + ElasticAugment +
    SimpleAugment + IntensityAugment + TargetNode + DistanceMaskNode +
    WeightNode`` on random 3-D data (raw float32, uint64 class ids, uint8
    mask). ``keys`` maps raw, gt, mask, target, distance_mask, weights.
    Returns the pipeline and the WeightNode."""
    from gp_hotdistance import DistanceMaskNode, TargetNode, WeightNode

    rng = np.random.default_rng(seed)
    offset = (0,) * len(shape)
    labels = blobs(rng, shape, ids, n=40)
    raw = (labels % np.uint64(7)).astype(np.float32) / 7 + rng.normal(0, 0.1, shape)
    raw = np.clip(raw, 0, 1).astype(np.float32)
    mask = random_mask(rng, shape, p_unknown=0.3)
    padding = predictor.padding(gp.Coordinate(voxel_size))
    source = (
        ArraySource(keys["raw"], make_array(raw, offset, voxel_size, interpolatable=True)),
        ArraySource(keys["gt"], make_array(labels, offset, voxel_size)),
        ArraySource(keys["mask"], make_array(mask, offset, voxel_size)),
    ) + gp.MergeProvider()
    weight_node = WeightNode(
        predictor,
        keys["gt"],
        keys["target"],
        keys["weights"],
        keys["mask"],
        keys["distance_mask"] if predictor.mask_distances else None,
    )
    pipeline = (
        source
        + gp.Pad(keys["gt"], padding)
        + gp.Pad(keys["mask"], padding)
        + gp.RandomLocation()
        + gp.ElasticAugment(
            control_point_spacing=(8, 8),
            jitter_sigma=(1.0, 1.0),
            rotation_interval=(0, np.pi / 2),
            spatial_dims=2,
            subsample=4,
        )
        + gp.SimpleAugment(transpose_only=[len(shape) - 2, len(shape) - 1])
        + gp.IntensityAugment(keys["raw"], 0.9, 1.1, -0.1, 0.1)
        + TargetNode(predictor, keys["gt"], keys["target"])
    )
    if predictor.mask_distances:
        pipeline += DistanceMaskNode(predictor, keys["target"], keys["mask"], keys["distance_mask"])
    return pipeline + weight_node, weight_node


def blockwise_targets_args(data, output, block, scale, *extra) -> list[str]:
    """``python -m pipelines.blockwise targets`` arguments for a demo
    container ``data`` (datasets ``gt`` and ``mask``, classes mito and er)."""
    return [
        "targets",
        "--input", str(data),
        "--gt", "gt",
        "--mask", "mask",
        "--output", str(output),
        "--channels", "mito", "er",
        "--scale-factor", str(scale),
        "--block-shape", *map(str, block),
        "--no-progress",
        *extra,
    ]  # fmt: skip


def tiny_config(data_section, dims=2, **training):
    """A run config for the demo classes (mito, er) with the smallest model
    that trains: ``dims``-D, output 8 per axis, 2 iterations, checkpoints
    every 2, snapshots every iteration, no PreCache workers; ``training``
    overrides any of those settings."""
    from pipelines.config import from_dict

    settings = {"iterations": 2, "save_every": 2, "snapshot_every": 1, "num_workers": 0}
    settings.update(training)
    return from_dict(
        {
            "channels": ["mito", "er"],
            "scale_factor": 24.0,
            "data": data_section,
            "model": {
                "num_fmaps": 2,
                "downsample_factors": [[2] * dims],
                "output_shape": [8] * dims,
            },
            "training": settings,
        }
    )


def write_volumes(
    path,
    shape: Sequence[int],
    voxel_size: Sequence[int],
    offset: Sequence[int],
    seed: int = 0,
    classes: Sequence[str] = ("mito", "er"),
) -> None:
    """The synthetic demo scene (:func:`pipelines.demo_data.generate`) as
    funlib arrays ``raw`` (uint8), ``gt`` (``(C, *spatial)`` uint8) and
    ``mask`` in the container ``path``: what the blockwise tools read with
    ``--input path --raw raw --gt gt --mask mask``."""
    from funlib.persistence import prepare_ds

    from pipelines.demo_data import generate

    raw, gt, mask = generate(tuple(shape), tuple(voxel_size), tuple(classes), seed)
    spatial = ["z", "y", "x"][-len(voxel_size) :]
    for name, data, channels in (("raw", raw, False), ("gt", gt, True), ("mask", mask, False)):
        array = prepare_ds(
            str(path / name),
            shape=data.shape,
            offset=offset,
            voxel_size=voxel_size,
            axis_names=(["c^"] if channels else []) + spatial,
            chunk_shape=tuple(min(s, 64) for s in data.shape),
            dtype=data.dtype,
            mode="w",
        )
        array[array.roi] = data
