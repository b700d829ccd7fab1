"""Synthetic, microscopy-like training data for hot-distance segmentation.

:func:`make_cellmap_demo` writes the layout of the CellMap segmentation
challenge (what ``python -m pipelines.train`` trains on)::

    demo_data.zarr/recon-1/em/fibsem-uint8/             OME-NGFF 0.4 multiscale raw (uint8):
                                                        s0 at V, s1 at 2 V translated by V/2
    demo_data.zarr/recon-1/labels/groundtruth/crop1/    every class        (training)
    demo_data.zarr/recon-1/labels/groundtruth/crop2/    all but the last   (training; the
                                                        last class is unknown there)
    demo_data.zarr/recon-1/labels/groundtruth/crop3/    every class        (held out)

Each ``cropN/<class>/`` is a multiscale group with one level ``s0`` at the
label voxel size ``V / label_factors`` (finer than ``V``), at a non-zero
translation inside the raw volume; the first class holds instance ids
(uint64, nonzero = the class), the others 0/1 (uint8). ``crop2`` starts one
label voxel off the ``V`` grid. The scene (:mod:`pipelines.demo_scene`) is
drawn on the label grid and raw is mean-pooled from it. Usage::

    python -m pipelines.demo_data --out demo_data.zarr

Nothing is ever written into a path that something else created: the
container must not exist, or must hold the marker file :data:`MARKER` that
an earlier run of this module wrote when it created the container (then the
demo is written again in it). Anything else at the path is refused with
:class:`DemoPathError` and left untouched.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import stat
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt
import zarr
from funlib.geometry import Coordinate, Roi
from scipy import ndimage

from gp_hotdistance.data import mean_pool, write_volume
from pipelines.demo_scene import KNOWN_CLASSES, check_classes, generate

# Default geometry, per (dims, anisotropic).
DEFAULT_VOXEL_SIZE = {(3, False): (8, 8, 8), (3, True): (40, 4, 4), (2, False): (8, 8)}


# The CellMap-style layout (make_cellmap_demo).
RAW_PATH = "recon-1/em/fibsem-uint8"
CROPS_PATH = "recon-1/labels/groundtruth"
DEFAULT_RAW_SHAPE = {(3, False): (48, 192, 192), (3, True): (64, 192, 192), (2, False): (768, 768)}
DEFAULT_LABEL_FACTORS = {(3, False): (2, 2, 2), (3, True): (1, 2, 2), (2, False): (2, 2)}
# Crop boxes as fractions of the raw shape, (begin, size) per in-plane axis
# (y, x); a 3-D z axis takes the y fractions. crop2 lacks the last class.
CROP_BOXES = {
    "crop1": ((1 / 12, 1 / 12), (11 / 24, 11 / 24)),
    "crop2": ((7 / 12, 1 / 12), (1 / 3, 1 / 3)),
    "crop3": ((7 / 12, 25 / 48), (1 / 4, 1 / 3)),
}
TRAIN_CROPS = ("crop1", "crop2")
EVAL_CROP = "crop3"

#: The file that marks a container as created by this module: only a
#: container holding it (a regular file, not a link) is ever written again.
MARKER = ".gp_hotdistance_demo"
# what the demo writes at the top of a container (removed before rewriting)
_DEMO_ENTRIES = (".zgroup", ".zattrs", "recon-1", "raw", "gt", "mask", "eval")


class DemoPathError(FileExistsError):
    """The demo's path holds something this module did not create."""


def is_demo_container(path: str | Path) -> bool:
    """Whether ``path`` is a directory (not a link) holding :data:`MARKER`
    (a regular file, not a link): a container this module created."""
    path = Path(path)
    try:
        return stat.S_ISDIR(os.lstat(path).st_mode) and stat.S_ISREG(
            os.lstat(path / MARKER).st_mode
        )
    except (FileNotFoundError, NotADirectoryError):
        return False


def claim_container(path: str | Path) -> Path:
    """Make ``path`` ready for the demo: create it (with :data:`MARKER`,
    exclusively, never through a link) if nothing is there, or, if it is a
    container this module created, remove the demo's own entries from it.

    Raises:
        DemoPathError: something else is at ``path`` (a folder or file of the
            user's, a link, a container without the marker); it is untouched.
    """
    path = Path(path)
    if os.path.lexists(path):
        if not is_demo_container(path):
            what = "a link" if path.is_symlink() else "a file" if not path.is_dir() else "a folder"
            raise DemoPathError(
                f"{path} already exists ({what} without the {MARKER} marker the demo writes): "
                "the demo data is written only where nothing is yet, and this is left as it "
                "is. Choose another path, or move it away yourself"
            )
        for name in _DEMO_ENTRIES:
            entry = path / name
            if entry.is_symlink() or entry.is_file():
                entry.unlink()
            elif entry.is_dir():
                shutil.rmtree(entry)
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.mkdir(path)
    except FileExistsError:
        raise DemoPathError(f"{path} appeared while the demo was about to create it") from None
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0)
    with os.fdopen(os.open(path / MARKER, flags, 0o666), "w") as marker:
        json.dump(
            {
                "created_by": "gp_hotdistance pipelines.demo_data",
                "meaning": "synthetic demo data; the project may delete and rewrite this container",
            },
            marker,
        )
    return path


@dataclass(frozen=True)
class CellmapDemo:
    """What :func:`make_cellmap_demo` wrote. Paths are absolute; world
    offsets are the first voxel's corner; ``crops`` maps each crop to
    ``{class: label group path}``."""

    container: Path
    raw: str
    voxel_size: tuple[int, ...]
    label_voxel_size: tuple[int, ...]
    raw_shape: tuple[int, ...]
    channels: tuple[str, ...]
    crops: dict[str, dict[str, str]]
    crop_rois: dict[str, Roi]

    def data_section(self) -> dict:
        """The config's ``data`` section for this demo: the training crops
        as samples, the held-out crop as ``eval``."""
        return {
            "voxel_size": list(self.voxel_size),
            "samples": [{"raw": self.raw, "labels": self.crops[c]} for c in TRAIN_CROPS],
            "eval": {"raw": self.raw, "labels": self.crops[EVAL_CROP]},
        }


def _crop_box(name: str, raw_shape: Sequence[int]) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """Begin and size (training voxels) of crop ``name`` in ``raw_shape``."""
    begin, size = CROP_BOXES[name]
    if len(raw_shape) == 3:
        begin, size = (begin[0], *begin), (size[0], *size)
    return (
        tuple(round(f * s) for f, s in zip(begin, raw_shape, strict=True)),
        tuple(max(round(f * s), 1) for f, s in zip(size, raw_shape, strict=True)),
    )


def make_cellmap_demo(
    path: str | Path,
    raw_shape: Sequence[int] | None = None,
    voxel_size: Sequence[int] | None = None,
    label_factors: Sequence[int] | None = None,
    classes: Sequence[str] = ("mito", "er"),
    seed: int = 0,
    anisotropic: bool = False,
    dims: int = 2,
    write: bool = True,
) -> CellmapDemo:
    """Write the CellMap-style demo (see the module docs) into the zarr
    container ``path``.

    Args:
        path: the container, e.g. ``runs/demo/demo_data.zarr``: nothing may
            exist there yet, unless it is a demo container (see
            :func:`claim_container`).
        raw_shape: raw shape in voxels of ``voxel_size``. Default
            ``(768, 768)`` in 2-D, ``(48, 192, 192)`` in 3-D,
            ``(64, 192, 192)`` if ``anisotropic``.
        voxel_size: raw ``s0`` voxel size (the training voxel size). Default
            ``(8, 8)``, ``(8, 8, 8)``, or ``(40, 4, 4)`` if ``anisotropic``.
        label_factors: how much finer the labels are, per axis (integers
            dividing ``voxel_size``). Default 2 per axis (in-plane only if
            ``anisotropic``).
        classes: class names, a subset of ``("mito", "er", "nucleus")``.
        seed: seed of the scene.
        anisotropic: use the anisotropic 3-D defaults.
        dims: 2 or 3.
        write: ``False``: only describe what would be written.

    Raises:
        ValueError: unknown or repeated classes, dims other than 2/3,
            ``anisotropic`` with 2-D, shapes or voxel sizes that do not fit
            ``dims``, label factors that do not divide ``voxel_size``, or
            crops smaller than one voxel.
        DemoPathError: ``path`` holds something the demo did not create
            (only with ``write``).
    """
    classes = check_classes(classes)
    if dims not in (2, 3) or (anisotropic and dims != 3):
        raise ValueError(f"dims must be 2 or 3 (3 if anisotropic), got dims={dims!r}")
    key = (dims, anisotropic)
    raw_shape = tuple(raw_shape) if raw_shape is not None else DEFAULT_RAW_SHAPE[key]
    voxel_size = tuple(voxel_size) if voxel_size is not None else DEFAULT_VOXEL_SIZE[key]
    factors = tuple(label_factors) if label_factors is not None else DEFAULT_LABEL_FACTORS[key]
    for name, value in (("raw_shape", raw_shape), ("voxel_size", voxel_size)):
        if len(value) != dims or not all(int(v) == v and v >= 1 for v in value):
            raise ValueError(f"{name} must be {dims} positive ints, got {name}={value!r}")
    if len(factors) != dims or any(
        f < 1 or v % f for f, v in zip(factors, voxel_size, strict=True)
    ):
        raise ValueError(
            f"label_factors must be {dims} positive ints dividing voxel_size={voxel_size}, "
            f"got label_factors={factors!r}"
        )
    voxel = Coordinate(voxel_size)
    label_voxel = voxel / Coordinate(factors)
    path = Path(path)
    fine_shape = tuple(s * f for s, f in zip(raw_shape, factors, strict=True))

    crops: dict[str, dict[str, str]] = {}
    crop_rois: dict[str, Roi] = {}
    windows: dict[str, tuple[slice, ...]] = {}
    for crop in CROP_BOXES:
        begin, size = _crop_box(crop, raw_shape)
        # crop2 starts one label voxel off the V grid (its labelled ROI shrinks)
        off_grid = crop == "crop2" and factors != (1,) * dims
        offset = Coordinate(begin) * voxel + (label_voxel if off_grid else voxel * 0)
        fine_begin = offset / label_voxel
        fine_size = Coordinate(size) * Coordinate(factors)
        windows[crop] = tuple(slice(b, b + s) for b, s in zip(fine_begin, fine_size, strict=True))
        if any(w.stop > n for w, n in zip(windows[crop], fine_shape, strict=True)):
            raise ValueError(
                f"crop {crop} ({windows[crop]}) leaves the raw volume of shape {raw_shape}"
            )
        crop_classes = classes[:-1] if crop == "crop2" and len(classes) > 1 else classes
        crops[crop] = {c: str(path / CROPS_PATH / crop / c) for c in crop_classes}
        crop_rois[crop] = Roi(offset, fine_size * label_voxel)
    demo = CellmapDemo(
        container=path,
        raw=str(path / RAW_PATH),
        voxel_size=tuple(voxel),
        label_voxel_size=tuple(label_voxel),
        raw_shape=raw_shape,
        channels=classes,
        crops=crops,
        crop_rois=crop_rois,
    )
    if not write:
        return demo

    claim_container(path)
    fine_raw, gt, _ = generate(fine_shape, label_voxel, classes, seed)
    raw = np.round(mean_pool(fine_raw, factors)).astype(np.uint8)
    write_volume(
        path, RAW_PATH, raw, voxel, (0,) * dims, chunks=tuple(min(s, 64) for s in raw_shape)
    )
    _add_level(path / RAW_PATH, raw, voxel)
    for crop, labels in crops.items():  # the last class of the last crop is written last
        for c in labels:
            binary = gt[(classes.index(c), *windows[crop])]
            if c == classes[0]:  # instance ids: nonzero is the class
                data = ndimage.label(binary)[0].astype(np.uint64)
            else:
                data = binary.astype(np.uint8)
            write_volume(
                path, f"{CROPS_PATH}/{crop}/{c}", data, label_voxel, crop_rois[crop].offset
            )
    return demo


def _add_level(group_path: Path, s0: npt.NDArray[np.uint8], voxel_size: Coordinate) -> None:
    """Append ``s1`` (``s0`` mean-pooled by 2 where the shape allows) with
    CellMap's translation: half an ``s0`` voxel, the centre of the first
    ``s1`` voxel sitting on the centre of the first 2x2 ``s0`` block."""
    factors = tuple(2 if s >= 2 else 1 for s in s0.shape)
    crop = tuple(slice(0, s - s % f) for s, f in zip(s0.shape, factors, strict=True))
    s1 = np.round(mean_pool(s0[crop], factors)).astype(np.uint8)
    scale = [v * f for v, f in zip(voxel_size, factors, strict=True)]
    translation = [v * (f - 1) / 2 for v, f in zip(voxel_size, factors, strict=True)]
    group = zarr.open_group(str(group_path), mode="a")
    level = group.create_dataset(
        "s1", data=s1, chunks=tuple(min(s, 64) for s in s1.shape), dimension_separator="/"
    )
    if all(float(t).is_integer() for t in translation):  # funlib offsets are integers
        level.attrs.update(
            {
                **group["s0"].attrs.asdict(),
                "voxel_size": [int(v) for v in scale],
                "offset": [int(t) for t in translation],
            }
        )
    multiscales = group.attrs["multiscales"]
    multiscales[0]["datasets"].append(
        {
            "path": "s1",
            "coordinateTransformations": [
                {"type": "scale", "scale": scale},
                {"type": "translation", "translation": translation},
            ],
        }
    )
    group.attrs["multiscales"] = multiscales


def main(argv: Sequence[str] | None = None) -> int:
    """Command line: ``python -m pipelines.demo_data --out demo_data.zarr``.
    Returns the exit status:
    2 when ``--out`` holds something the demo did not create."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--out",
        required=True,
        help="zarr container to create (refused if it exists, unless an earlier run of this "
        "command created it)",
    )
    parser.add_argument("--shape", type=int, nargs="+", help="(raw) spatial shape in voxels")
    parser.add_argument("--voxel-size", type=int, nargs="+", help="world units per voxel")
    parser.add_argument("--classes", nargs="+", default=["mito", "er"], choices=KNOWN_CLASSES)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--dims", type=int, choices=(2, 3), help="default 2")
    parser.add_argument("--anisotropic", action="store_true", help="(40, 4, 4)-style voxels")
    args = parser.parse_args(argv)
    if args.anisotropic and args.dims is None:
        args.dims = 3
    try:
        _write_demo(args)
    except DemoPathError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0


def _write_demo(args: argparse.Namespace) -> None:
    demo = make_cellmap_demo(
        args.out,
        raw_shape=args.shape,
        voxel_size=args.voxel_size,
        classes=args.classes,
        seed=args.seed,
        anisotropic=args.anisotropic,
        dims=args.dims or 2,
    )
    print(
        f"wrote {demo.container}: raw {RAW_PATH} (s0 at {demo.voxel_size}, s1), shape {demo.raw_shape}"
    )
    for crop, labels in demo.crops.items():
        print(
            f"  {CROPS_PATH}/{crop}: {sorted(labels)} at {demo.label_voxel_size}, roi {demo.crop_rois[crop]}"
        )


if __name__ == "__main__":
    sys.exit(main())
