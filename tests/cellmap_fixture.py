"""A small CellMap-style container, written with our own writer, for tests.

Layout (``V`` the raw voxel size, labels finer by ``label_factors``)::

    jrc_x.zarr/recon-1/em/fibsem-uint8/          s0 at V, s1 at 2V translated by
                                                 V/2 (CellMap's half-voxel shift)
    jrc_x.zarr/recon-1/labels/groundtruth/crop7/mito/   uint64 ids, one > 2**32
    jrc_x.zarr/recon-1/labels/groundtruth/crop7/er/     uint8 0/1
    jrc_x.zarr/recon-1/labels/groundtruth/crop9/mito/   (er not annotated)

Crop 7 starts one label voxel off the ``V`` grid (its labelled ROI is
shrunk); crop 9 starts on it. Label boxes have edges at arbitrary label
voxels, so some coarse voxels hold exactly half of a class.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import numpy.typing as npt
import zarr
from funlib.geometry import Coordinate, Roi

from gp_hotdistance.data import mean_pool, write_volume

CHANNELS = ["mito", "er"]
BIG_ID = 2**40 + 3  # an instance id beyond 2**32
RAW = "recon-1/em/fibsem-uint8"
CROPS = "recon-1/labels/groundtruth"


@dataclass
class CellmapFixture:
    """Paths and the arrays written, in world units (offsets: first voxel's
    corner)."""

    container: Path
    voxel_size: Coordinate  # raw s0, the natural training voxel size
    raw_offset: Coordinate
    raw: npt.NDArray[np.uint8]  # s0
    label_voxel_size: Coordinate
    crop_offsets: dict[str, Coordinate] = field(default_factory=dict)
    labels: dict[str, dict[str, npt.NDArray]] = field(default_factory=dict)

    @property
    def raw_path(self) -> str:
        return str(self.container / RAW)

    def label_paths(self, crop: str) -> dict[str, str]:
        return {c: str(self.container / CROPS / crop / c) for c in self.labels[crop]}


def add_level(
    group_path: str | Path,
    level: str,
    data: npt.NDArray,
    voxel_size: Sequence[int],
    translation: Sequence[float],
) -> None:
    """Append level ``level`` to the multiscale group at ``group_path``."""
    group = zarr.open_group(str(group_path), mode="a")
    group.create_dataset(level, data=data, chunks=True, dimension_separator="/")
    multiscales = group.attrs["multiscales"]
    multiscales[0]["datasets"].append(
        {
            "path": level,
            "coordinateTransformations": [
                {"type": "scale", "scale": list(voxel_size)},
                {"type": "translation", "translation": list(translation)},
            ],
        }
    )
    group.attrs["multiscales"] = multiscales


def _boxes(
    rng: np.random.Generator, shape: Sequence[int], values: Sequence[int], dtype
) -> npt.NDArray:
    data = np.zeros(tuple(shape), dtype=dtype)
    for value in values:
        begin = [int(rng.integers(0, s - 2)) for s in shape]
        end = [int(rng.integers(b + 2, s + 1)) for b, s in zip(begin, shape, strict=True)]
        data[tuple(slice(b, e) for b, e in zip(begin, end, strict=True))] = value
    return data


def write_cellmap_fixture(
    root: str | Path,
    voxel_size: Sequence[int] = (8, 8, 8),
    label_factors: Sequence[int] = (2, 2, 2),
    raw_shape: Sequence[int] | None = None,
    raw_offset: Sequence[int] | None = None,
    seed: int = 0,
) -> CellmapFixture:
    """Write the container under ``root`` and return what was written.
    Default raw shape 32 voxels per axis, default offset ``-4 V`` (negative)."""
    rng = np.random.default_rng(seed)
    voxel_size = Coordinate(voxel_size)
    dims = voxel_size.dims
    label_voxel_size = voxel_size / Coordinate(label_factors)
    raw_shape = Coordinate(raw_shape or (32,) * dims)
    raw_offset = Coordinate(raw_offset or (-4 * v for v in voxel_size))
    container = Path(root) / "jrc_x.zarr"

    raw = rng.integers(1, 256, size=tuple(raw_shape), dtype=np.uint8)
    write_volume(container, RAW, raw, voxel_size, raw_offset, chunks=(8,) * dims)
    s1 = mean_pool(raw, (2,) * dims).round().astype(np.uint8)
    add_level(container / RAW, "s1", s1, voxel_size * 2, raw_offset + voxel_size / 2)

    fixture = CellmapFixture(container, voxel_size, raw_offset, raw, label_voxel_size)
    crop_shape = Coordinate(8 * f for f in label_factors)  # 8 V voxels per axis
    starts = {
        "crop7": raw_offset + voxel_size * 6 + label_voxel_size,  # off the V grid
        "crop9": raw_offset + voxel_size * 18,
    }
    for crop, offset in starts.items():
        fixture.crop_offsets[crop] = offset
        labels = {"mito": _boxes(rng, crop_shape, [1, BIG_ID, 7], np.uint64)}
        if crop == "crop7":
            labels["er"] = _boxes(rng, crop_shape, [1, 1], np.uint8)
        fixture.labels[crop] = labels
        for channel, data in labels.items():
            write_volume(container, f"{CROPS}/{crop}/{channel}", data, label_voxel_size, offset)
    return fixture


def expected_labels(fixture, crop, roi, voxel_size):
    """(gt, mask) at ``voxel_size`` over ``roi`` by the documented rule,
    one coarse voxel at a time."""
    voxel_size = Coordinate(voxel_size)
    shape = roi.shape / voxel_size
    gt = np.zeros((len(CHANNELS), *shape), dtype=np.uint8)
    mask = np.zeros_like(gt)
    fine = fixture.label_voxel_size
    offset = fixture.crop_offsets[crop]
    for c, channel in enumerate(CHANNELS):
        if channel not in fixture.labels[crop]:
            continue  # unknown: mask 0
        labels = fixture.labels[crop][channel]
        crop_roi = Roi(offset, Coordinate(labels.shape) * fine)
        for index in itertools.product(*(range(s) for s in shape)):
            voxel = Roi(roi.begin + Coordinate(index) * voxel_size, voxel_size)
            if not crop_roi.contains(voxel):
                continue  # partly or not covered by the crop: not labelled
            block = labels[((voxel - offset) / fine).to_slices()]
            gt[(c, *index)] = 2 * np.count_nonzero(block) > block.size
            mask[(c, *index)] = 1
    return gt, mask
