"""Test helpers: an in-memory gunpowder source, random test volumes, the
node test cases, and small writers of volumes and run directories."""

from __future__ import annotations

import copy
import json
from collections.abc import Sequence

import gunpowder as gp
import numpy as np
import numpy.typing as npt
import pytest
from funlib.geometry import Coordinate, Roi
from scipy.ndimage import gaussian_filter

from gp_hotdistance import DistanceMaskNode, HotDistancePredictor, TargetNode, WeightNode
from gp_hotdistance import functional as F
from gp_hotdistance.geometry import roi_slices


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


# the tiny volume of the blockwise worker tests (conftest's ``tiny_data``):
# daisy runs with worker processes over it take seconds
TINY_SHAPE = (8, 32, 48)
TINY_BLOCK = (4, 32, 32)  # 2 x 1 x 2 blocks, the last ones shrink
TINY_VOXEL_SIZE = (16, 8, 8)
TINY_OFFSET = (0, 0, 0)
TINY_SCALE = 40.0


def tiny_predictor() -> HotDistancePredictor:
    """The predictor of the tiny blockwise tests (mito and er, masked distances)."""
    return HotDistancePredictor(["mito", "er"], scale_factor=TINY_SCALE, mask_distances=True)


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
    """The synthetic demo scene (:func:`pipelines.demo_scene.generate`) as
    funlib arrays ``raw`` (uint8), ``gt`` (``(C, *spatial)`` uint8) and
    ``mask`` in the container ``path``: what the blockwise tools read with
    ``--input path --raw raw --gt gt --mask mask``."""
    from funlib.persistence import prepare_ds

    from pipelines.demo_scene import generate

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


# ---------------------------------------------------------------------------
# the node test cases: 2-D and 3-D sources, keys, requests, the node chain
# ---------------------------------------------------------------------------

# voxel size, source offset and shape, scale factor (= context), and a request
# inside the advertised ROI, as (begin, shape) in voxels from the source start
CASES = {
    # context (20, 20) world = (5, 2) voxels after snapping (20 // 4, 20 // 8)
    "2d": dict(
        voxel_size=(4, 8),
        offset=(-40, 16),
        shape=(40, 30),
        scale=20.0,
        context=(5, 2),
        request=((6, 3), (20, 16)),
    ),
    # context 40 world = (1, 10, 10) voxels
    "3d": dict(
        voxel_size=(40, 4, 4),
        offset=(-400, -8, 12),
        shape=(8, 28, 30),
        scale=40.0,
        context=(1, 10, 10),
        request=((1, 10, 11), (5, 8, 9)),
    ),
}
DIMS = list(CASES)
CHANNELS = ["mito", "er"]
IDS = [1, 2, 5]  # 5 is not a class: background in every channel

GT = gp.ArrayKey("GT")
MASK = gp.ArrayKey("MASK")
TARGET = gp.ArrayKey("TARGET")
DISTANCE_MASK = gp.ArrayKey("DISTANCE_MASK")
WEIGHTS = gp.ArrayKey("WEIGHTS")


def predictor(dims: str, mask_distances: bool = True, **kwargs) -> HotDistancePredictor:
    return HotDistancePredictor(CHANNELS, CASES[dims]["scale"], mask_distances, **kwargs)


def source_roi(dims: str) -> gp.Roi:
    case = CASES[dims]
    vs = gp.Coordinate(case["voxel_size"])
    return gp.Roi(case["offset"], gp.Coordinate(case["shape"]) * vs)


def request_roi(dims: str, begin=None, shape=None) -> gp.Roi:
    case = CASES[dims]
    vs = gp.Coordinate(case["voxel_size"])
    default_begin, default_shape = case["request"]
    begin = gp.Coordinate(default_begin if begin is None else begin)
    shape = gp.Coordinate(default_shape if shape is None else shape)
    return gp.Roi(gp.Coordinate(case["offset"]) + begin * vs, shape * vs)


def make_gt(dims: str, seed: int, form: str = "ids") -> np.ndarray:
    rng = np.random.default_rng(seed)
    ids = blobs(rng, CASES[dims]["shape"], IDS, n=8)
    if form == "ids":
        return ids
    return F.to_channels(ids, [1, 2])


def make_mask(dims: str, seed: int, form: str | None = "spatial") -> np.ndarray | None:
    if form is None:
        return None
    mask = random_mask(np.random.default_rng(seed + 1000), CASES[dims]["shape"])
    if form == "channels":
        second = np.roll(mask, 3, axis=-1)
        return np.stack([mask, second])
    return mask


def sources(dims: str, **arrays: np.ndarray | None):
    """``(ArraySource, ...) + MergeProvider()`` for the keys given by name."""
    case = CASES[dims]
    keys = {"gt": GT, "mask": MASK, "target": TARGET, "distance_mask": DISTANCE_MASK}
    providers = tuple(
        ArraySource(keys[name], make_array(data, case["offset"], case["voxel_size"]))
        for name, data in arrays.items()
        if data is not None
    )
    return providers + gp.MergeProvider()


def request(roi: gp.Roi, *keys: gp.ArrayKey) -> gp.BatchRequest:
    return gp.BatchRequest({key: gp.ArraySpec(roi=roi) for key in keys})


def grown(p: HotDistancePredictor, roi: gp.Roi, dims: str) -> gp.Roi:
    vs = gp.Coordinate(CASES[dims]["voxel_size"])
    return p.gt_region_for_roi(gp.ArraySpec(roi=roi, voxel_size=vs)).roi


def crop(data: np.ndarray, roi: gp.Roi, outer: gp.Roi, dims: str) -> np.ndarray:
    """``roi`` of ``data`` (covering ``outer``), keeping leading channels."""
    slices = roi_slices(roi, outer, CASES[dims]["voxel_size"])
    return data[(...,) + slices]


def expected_target(p, gt, roi, dims) -> np.ndarray:
    """DaCapo's target: ``process`` over the grown GT region, cropped to ``roi``."""
    region = grown(p, roi, dims)
    target = p.process(crop(gt, region, source_roi(dims), dims), CASES[dims]["voxel_size"])
    return crop(target, roi, region, dims)


def expected_distance_mask(p, gt, mask, roi, dims) -> np.ndarray:
    """DaCapo's distance mask: over the grown region, cropped to ``roi``."""
    region = grown(p, roi, dims)
    vs = CASES[dims]["voxel_size"]
    target = p.process(crop(gt, region, source_roi(dims), dims), vs)
    mask_region = None if mask is None else crop(mask, region, source_roi(dims), dims)
    masked = p.create_distance_mask(target[p.classes :], mask_region, vs)
    return crop(masked, roi, region, dims)


def assert_names(excinfo: pytest.ExceptionInfo, *parts: str) -> None:
    """The error (with its cause) names every one of ``parts``."""
    text = str(excinfo.value) + "\n" + str(excinfo.value.__cause__)
    for part in parts:
        assert part in text, f"{part!r} missing from the error:\n{text}"


def chain(p, dims, gt, mask, moving_counts=False):
    distance_mask = DISTANCE_MASK if p.mask_distances else None
    pipeline = sources(dims, gt=gt, mask=mask) + TargetNode(p, GT, TARGET)
    if p.mask_distances:
        pipeline += DistanceMaskNode(p, TARGET, MASK, DISTANCE_MASK)
    weight_node = WeightNode(
        p, GT, TARGET, WEIGHTS, MASK, distance_mask, moving_counts=moving_counts
    )
    return pipeline + weight_node, weight_node


# ---------------------------------------------------------------------------
# blockwise: block geometry and a tiny run directory
# ---------------------------------------------------------------------------


def open_sides(read: Roi, volume: Roi, voxel_size, write: Roi):
    """Per voxel of ``write``: world distance from its centre to the nearest
    side of ``read`` that is not a side of ``volume`` (``m``), and to the
    nearest voxel beyond such a side (``e``)."""
    shape = tuple(write.shape / Coordinate(voxel_size))
    m = np.full(shape, np.inf)
    e = np.full(shape, np.inf)
    for axis, vs in enumerate(voxel_size):
        centres = write.begin[axis] + (np.arange(shape[axis]) + 0.5) * vs
        view = [1] * len(shape)
        view[axis] = shape[axis]
        if read.begin[axis] > volume.begin[axis]:
            d = (centres - read.begin[axis]).reshape(view)
            m, e = np.minimum(m, d), np.minimum(e, d + vs / 2)
        if read.end[axis] < volume.end[axis]:
            d = (read.end[axis] - centres).reshape(view)
            m, e = np.minimum(m, d), np.minimum(e, d + vs / 2)
    return m, e


def block_rois(volume: Roi, block_size: Coordinate):
    grid = [-(-s // b) for s, b in zip(volume.shape, block_size, strict=True)]
    for index in np.ndindex(*grid):
        yield Roi(volume.offset + block_size * Coordinate(index), block_size).intersect(volume)


def write_run_dir(run, scale: float, output_tile: Sequence[int]):
    """A tiny untrained UNet saved as the training pipeline saves checkpoints."""
    import torch

    from pipelines.common import make_model, make_predictor
    from pipelines.config import from_dict
    from pipelines.rundir import RunDirectory

    config = from_dict(
        {
            "channels": ["mito", "er"],
            "scale_factor": scale,
            "model": {
                "num_fmaps": 2,
                "fmap_inc_factor": 2,
                "downsample_factors": [[2, 2, 2]],
                "output_shape": list(output_tile),
            },
        }
    )
    torch.manual_seed(0)
    model = make_model(config, make_predictor(config))
    (run / "config.json").write_text(json.dumps(config.to_dict()))
    counts = {"moving_counts": [{"0": [0, 1], "1": [0, 1]}] * 4}  # as WeightNode saves them
    with RunDirectory(run) as directory:
        directory.save(3, model.state_dict(), {}, counts)
    return run
