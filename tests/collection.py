"""A challenge-style collection for tests and benchmarks: several datasets
in the CellMap layout, many small crops, many classes, several voxel sizes.

::

    ROOT/{dataset}/{dataset}.zarr/recon-1/em/fibsem-uint8/s0          raw
    ROOT/{dataset}/{dataset}.zarr/recon-1/labels/groundtruth/cropN/C/s0  0/1 labels

:data:`DATASETS`: one isotropic at 8 nm, one anisotropic (16, 8, 8), one
isotropic at 16 nm; labels at half the raw voxel size on every axis (4 nm
labels for 8 nm raw, as CellMap publishes). Crops are numbered across the
collection (``crop1`` ...) and spread over the datasets; each annotates a
random few of the classes (blobs of about a third foreground), some touch
the raw volume's faces. Everything follows from ``seed``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from funlib.geometry import Coordinate

from gp_hotdistance.data import write_volume

RAW = "recon-1/em/fibsem-uint8"
CROPS = "recon-1/labels/groundtruth"
#: name -> (raw voxel size, raw shape in voxels)
DATASETS = {
    "jrc_iso8": ((8, 8, 8), (64, 96, 96)),
    "jrc_aniso": ((16, 8, 8), (32, 96, 96)),
    "jrc_iso16": ((16, 16, 16), (32, 48, 48)),
}
CROP_SHAPE = (8, 8, 8)  # label voxels


@dataclass
class Collection:
    root: Path
    classes: list[str]
    crops: dict[str, list[str]] = field(default_factory=dict)  # "dataset/cropN" -> classes

    def raw_path(self, dataset: str) -> Path:
        return self.root / dataset / f"{dataset}.zarr" / RAW

    def label_paths(self, key: str) -> dict[str, str]:
        """``{class: path}`` of crop ``key`` (``"dataset/cropN"``)."""
        dataset, crop = key.split("/")
        folder = self.root / dataset / f"{dataset}.zarr" / CROPS / crop
        return {c: str(folder / c) for c in self.crops[key]}


def class_names(count: int) -> list[str]:
    return [f"class{i:02d}" for i in range(count)]


def write_collection(
    root: str | Path,
    crops: int = 200,
    classes: int = 20,
    classes_per_crop: tuple[int, int] = (1, 4),
    seed: int = 0,
) -> Collection:
    """Write the collection under ``root`` (see the module docs)."""
    rng = np.random.default_rng(seed)
    root = Path(root)
    names = class_names(classes)
    collection = Collection(root, names)
    datasets = list(DATASETS)
    for dataset, (voxel_size, shape) in DATASETS.items():
        container = root / dataset / f"{dataset}.zarr"
        raw = rng.integers(0, 256, shape, dtype=np.uint8)
        write_volume(container, RAW, raw, voxel_size, (0, 0, 0), chunks=(16, 16, 16))
    for index in range(crops):
        dataset = datasets[index % len(datasets)]
        voxel_size, shape = DATASETS[dataset]
        label_size = Coordinate(v // 2 for v in voxel_size)
        extent = Coordinate(shape) * Coordinate(voxel_size)
        span = Coordinate(CROP_SHAPE) * label_size
        # a start on the label grid, the crop inside the raw volume (some at its faces)
        begin = Coordinate(
            int(rng.integers(0, (e - s) // v + 1)) * v
            for e, s, v in zip(extent, span, label_size, strict=True)
        )
        if index % 10 == 0:
            begin = Coordinate((0,) * 3)
        count = min(int(rng.integers(classes_per_crop[0], classes_per_crop[1] + 1)), len(names))
        chosen = sorted(rng.choice(len(names), size=count, replace=False).tolist())
        name = f"crop{index + 1}"
        container = root / dataset / f"{dataset}.zarr"
        for c in chosen:
            labels = (rng.random(CROP_SHAPE) < 0.35).astype(np.uint8)
            write_volume(container, f"{CROPS}/{name}/{names[c]}", labels, label_size, begin)
        collection.crops[f"{dataset}/{name}"] = [names[c] for c in chosen]
    return collection
