"""Write a datasplit CSV from a collection in the CellMap challenge's layout.

::

    python -m pipelines.datasplit ROOT --classes mito er nuc --voxel-size 8 8 8 \\
        [--datasets 'jrc_*'] [--crops 'crop1*'] [--validation-fraction 0.1] [--seed 0] \\
        [--raw-path recon-1/em/fibsem-uint8] --out split.csv

Layout: ``ROOT/{dataset}/{dataset}.zarr/recon-1/labels/groundtruth/{crop}/{class}``
with raw at ``ROOT/{dataset}/{dataset}.zarr/{raw-path}``. Each crop lists
the requested classes it has (the others are unknown in it) whose labels
can be read at the training voxel size: a level at or finer than it (a
label level coarser than the training voxel size is not used, as in the
challenge's own split) and at least one whole training voxel. Crops with
none of the classes are left out and counted. Crops are split at random,
deterministically for a seed: ``round(fraction * crops)`` validate crops,
at least one when there are two crops or more and the fraction is not 0,
and at least one train crop. The CSV is the challenge's five-column form
(:func:`gp_hotdistance.data.write_datasplit`), which ``data.datasplit``
reads. An existing ``--out`` is refused unless ``--force``.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from funlib.geometry import Coordinate

from gp_hotdistance.data import DatasplitRow, open_volume, write_datasplit

RAW_PATH = "recon-1/em/fibsem-uint8"
CROPS_PATH = "recon-1/labels/groundtruth"


@dataclass
class Crop:
    """A crop of the collection and the requested classes it can train."""

    dataset: str
    name: str
    path: Path
    raw: Path
    classes: list[str]


@dataclass
class Survey:
    """What :func:`survey` found: the usable crops, the native raw voxel size
    of each dataset, and what was left out, with why."""

    crops: list[Crop] = field(default_factory=list)
    voxel_sizes: dict[str, tuple[int, ...]] = field(default_factory=dict)
    no_raw: list[str] = field(default_factory=list)
    no_classes: list[str] = field(default_factory=list)
    coarse: dict[str, int] = field(default_factory=dict)  # class -> crops too coarse


def _usable(path: Path, voxel_size: Coordinate) -> bool:
    """Whether the label dataset at ``path`` has a level at or finer than
    ``voxel_size`` covering at least one whole voxel of it."""
    try:
        volume = open_volume(path, voxel_size)
    except (ValueError, FileNotFoundError):
        return False
    if any(v > t for v, t in zip(volume.voxel_size, voxel_size, strict=True)):
        return False
    return not volume.roi.snap_to_grid(voxel_size, mode="shrink").empty


def survey(
    root: Path,
    classes: Sequence[str],
    voxel_size: Sequence[int],
    datasets: str = "*",
    crops: str = "*",
    raw_path: str = RAW_PATH,
) -> Survey:
    """Find the crops of ``root`` (see the module docs), in sorted order."""
    voxel_size = Coordinate(voxel_size)
    found = Survey()
    for folder in sorted(p for p in Path(root).glob(datasets) if p.is_dir()):
        container = folder / f"{folder.name}.zarr"
        if not container.is_dir():
            continue
        raw = container / raw_path
        try:
            found.voxel_sizes[folder.name] = tuple(open_volume(raw).voxel_size)
        except (ValueError, FileNotFoundError):
            found.no_raw.append(folder.name)
            continue
        for crop in sorted(p for p in (container / CROPS_PATH).glob(crops) if p.is_dir()):
            present = [c for c in classes if (crop / c).is_dir()]
            usable = [c for c in present if _usable(crop / c, voxel_size)]
            for name in set(present) - set(usable):
                found.coarse[name] = found.coarse.get(name, 0) + 1
            if usable:
                found.crops.append(Crop(folder.name, crop.name, crop, raw, usable))
            else:
                found.no_classes.append(f"{folder.name}/{crop.name}")
    return found


def split(crops: list[Crop], fraction: float, seed: int) -> list[str]:
    """``train``/``validate`` for each crop (see the module docs)."""
    count = len(crops)
    validate = round(fraction * count)
    if fraction > 0 and count >= 2:
        validate = min(max(validate, 1), count - 1)
    chosen = set(np.random.default_rng(seed).permutation(count)[:validate].tolist())
    return ["validate" if i in chosen else "train" for i in range(count)]


def table(found: Survey, usages: list[str], classes: Sequence[str]) -> list[str]:
    """The printed summary: crops per dataset and per class."""
    lines = []
    width = max([len("dataset"), *(len(d) for d in found.voxel_sizes)])
    lines.append(f"{'dataset':<{width}}  {'voxel size':<14} {'train':>6} {'validate':>8}")
    for dataset, voxel_size in found.voxel_sizes.items():
        used = [u for c, u in zip(found.crops, usages, strict=True) if c.dataset == dataset]
        lines.append(
            f"{dataset:<{width}}  {str(voxel_size):<14} {used.count('train'):>6} "
            f"{used.count('validate'):>8}"
        )
    width = max([len("class"), *(len(c) for c in classes)])
    lines.append("")
    lines.append(f"{'class':<{width}}  {'train':>6} {'validate':>8}")
    for name in classes:
        used = [u for c, u in zip(found.crops, usages, strict=True) if name in c.classes]
        lines.append(
            f"{name:<{width}}  {used.count('train'):>6} {used.count('validate'):>8}"
            + (
                f"   ({found.coarse[name]} crops coarser than the voxel size)"
                if name in found.coarse
                else ""
            )
        )
    lines.append("")
    lines.append(
        f"left out: {len(found.no_classes)} crops with none of the classes, "
        f"{len(found.no_raw)} datasets without raw at the raw path"
        + (f" ({', '.join(found.no_raw)})" if found.no_raw else "")
    )
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m pipelines.datasplit",
        description="Write a datasplit CSV (train/validate crops, the CellMap challenge's "
        "five-column form) from a collection in the challenge's layout.",
    )
    parser.add_argument("root", help="folder holding {dataset}/{dataset}.zarr")
    parser.add_argument("--classes", nargs="+", required=True, help="class names to look for")
    parser.add_argument(
        "--voxel-size", type=int, nargs="+", required=True, help="training voxel size (Z Y X)"
    )
    parser.add_argument("--datasets", default="*", help="glob of dataset names (default *)")
    parser.add_argument("--crops", default="*", help="glob of crop names (default *)")
    parser.add_argument("--raw-path", default=RAW_PATH, help=f"raw inside a container ({RAW_PATH})")
    parser.add_argument("--validation-fraction", type=float, default=0.1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", required=True, help="the CSV to write")
    parser.add_argument("--force", action="store_true", help="replace an existing --out")
    args = parser.parse_args(argv)
    out = Path(args.out)
    problems = []
    if not 0 <= args.validation_fraction < 1:
        problems.append(f"--validation-fraction must be in [0, 1), got {args.validation_fraction}")
    if len(args.voxel_size) not in (2, 3) or min(args.voxel_size) < 1:
        problems.append(f"--voxel-size must be 2 or 3 positive ints, got {args.voxel_size}")
    if not Path(args.root).is_dir():
        problems.append(f"{args.root} is not a directory")
    if out.exists() and not args.force:
        problems.append(f"{out} exists; pass --force to replace it")
    if problems:
        for problem in problems:
            print(f"error: {problem}", file=sys.stderr)
        return 2
    found = survey(
        Path(args.root).absolute(),
        args.classes,
        args.voxel_size,
        args.datasets,
        args.crops,
        args.raw_path,
    )
    if not found.crops:
        print(
            f"error: no crop under {args.root} holds any of {args.classes} "
            f"({len(found.voxel_sizes)} datasets, {len(found.no_classes)} crops without them)",
            file=sys.stderr,
        )
        return 2
    usages = split(found.crops, args.validation_fraction, args.seed)
    rows = [
        DatasplitRow(usage, str(crop.raw), f"{crop.path}/[{','.join(crop.classes)}]")
        for crop, usage in zip(found.crops, usages, strict=True)
    ]
    print("\n".join(table(found, usages, args.classes)))
    write_datasplit(out, rows)
    print(
        f"wrote {out}: {len(rows)} crops ({usages.count('train')} train, "
        f"{usages.count('validate')} validate)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
