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
label voxel off the ``V`` grid. The scene is drawn on the label grid and raw
is mean-pooled from it.

Organelles (sizes in world units, so anisotropic data looks alike):

- ``mito``: elongated ellipsoids, dark membrane rim, medium interior with darker
  cristae stripes;
- ``er``: thin dark tubes following smooth random walks;
- ``nucleus``: one large ellipsoid, textured interior, dark envelope.

Classes do not overlap (nucleus before mito before er). Usage::

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

KNOWN_CLASSES = ("mito", "er", "nucleus")

# Default geometry, per (dims, anisotropic).
DEFAULT_VOXEL_SIZE = {(3, False): (8, 8, 8), (3, True): (40, 4, 4), (2, False): (8, 8)}

# Intensities (0-255) before blur and noise.
BACKGROUND = 175.0
BACKGROUND_TEXTURE = 12.0
MITO_RIM = 40.0
MITO_INTERIOR = 125.0
MITO_CRISTAE = 80.0
ER = 75.0
NUCLEUS_INTERIOR = 130.0
NUCLEUS_TEXTURE = 20.0
NUCLEUS_ENVELOPE = 65.0

# Geometry in world units (nm).
MITO_RADII = (40.0, 80.0)  # short semi-axes, drawn uniformly
MITO_ELONGATION = (1.5, 3.0)  # long semi-axis / short semi-axis
MITO_FRACTION = 0.10  # target area/volume fraction
MITO_RIM_WIDTH = 12.0
CRISTAE_PERIOD = 40.0
ER_RADIUS = 36.0
ER_FRACTION = 0.05
ER_WALK_LENGTH = 1200.0
ER_STIFFNESS = 0.25  # std of the direction change per step, in radians-ish
NUCLEUS_RADIUS = 0.35  # relative to the largest extent
NUCLEUS_ENVELOPE_WIDTH = 20.0
TEXTURE_SCALE = 60.0  # smoothing of the background/nucleus texture
BLUR = 6.0  # point spread, world units
NOISE = 10.0  # std of the additive gaussian noise

UNANNOTATED_FRACTION = (0.25, 0.4)  # extent of the unannotated box per axis

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


def _world_grid(shape: Sequence[int], voxel_size: Sequence[int]) -> list[npt.NDArray[np.float32]]:
    """Broadcastable voxel-centre coordinates in world units, one array per axis."""
    dims = len(shape)
    grid = []
    for axis, (size, vs) in enumerate(zip(shape, voxel_size, strict=True)):
        view = [1] * dims
        view[axis] = size
        grid.append(((np.arange(size, dtype=np.float32) + 0.5) * vs).reshape(view))
    return grid


def _random_rotation(rng: np.random.Generator, dims: int) -> npt.NDArray[np.float64]:
    q, r = np.linalg.qr(rng.normal(size=(dims, dims)))
    return q * np.sign(np.diag(r))


def _smooth_noise(
    rng: np.random.Generator, shape: Sequence[int], voxel_size: Sequence[int], scale: float
) -> npt.NDArray[np.float32]:
    """Gaussian noise smoothed over ``scale`` world units, rescaled to unit std."""
    noise = ndimage.gaussian_filter(
        rng.normal(size=shape).astype(np.float32), [scale / vs for vs in voxel_size]
    )
    return noise / max(float(noise.std()), 1e-6)


def _ellipsoid(
    shape: Sequence[int],
    voxel_size: Sequence[int],
    center: npt.NDArray[np.float64],
    radii: npt.NDArray[np.float64],
    rotation: npt.NDArray[np.float64],
) -> tuple[tuple[slice, ...], npt.NDArray[np.float32], list[npt.NDArray[np.float32]]]:
    """Normalised radius ``|R^T (x - c) / r|`` in the ellipsoid's bounding box.

    Returns the box slices, the normalised radius there (< 1 inside) and the
    box coordinates in the ellipsoid frame (world units).
    """
    reach = float(max(radii))
    box = tuple(
        slice(max(int((c - reach) // vs), 0), min(int((c + reach) // vs) + 1, size))
        for c, vs, size in zip(center, voxel_size, shape, strict=True)
    )
    grid = _world_grid([s.stop - s.start for s in box], voxel_size)
    offsets = [
        g + s.start * vs - c for g, s, vs, c in zip(grid, box, voxel_size, center, strict=True)
    ]
    local = [sum(rotation[i, j] * offsets[i] for i in range(len(shape))) for j in range(len(shape))]
    radius = np.sqrt(sum((x / r) ** 2 for x, r in zip(local, radii, strict=True)))
    return box, radius.astype(np.float32), local


def _draw_nucleus(rng, shape, voxel_size, raw, labels, texture) -> None:
    extent = np.array(shape) * np.array(voxel_size)
    radii = NUCLEUS_RADIUS * extent.max() * rng.uniform(0.8, 1.2, size=len(shape))
    center = rng.uniform(0.25, 0.75, size=len(shape)) * extent
    box, radius, _ = _ellipsoid(shape, voxel_size, center, radii, _random_rotation(rng, len(shape)))
    inside = radius < 1
    region = labels[box]
    region[inside] = KNOWN_CLASSES.index("nucleus") + 1
    raw[box][inside] = NUCLEUS_INTERIOR + NUCLEUS_TEXTURE * texture[box][inside]


def _draw_mitos(rng, shape, voxel_size, raw, labels) -> None:
    dims = len(shape)
    total = float(np.prod(np.array(shape) * np.array(voxel_size)))
    drawn = 0.0
    mito = KNOWN_CLASSES.index("mito") + 1
    for _ in range(10_000):  # bound the attempts; placement fails only in crowded volumes
        if drawn >= MITO_FRACTION * total:
            break
        short = rng.uniform(*MITO_RADII)
        radii = np.full(dims, short)
        radii[0] = short * rng.uniform(*MITO_ELONGATION)
        center = rng.uniform(0, 1, size=dims) * np.array(shape) * np.array(voxel_size)
        rotation = _random_rotation(rng, dims)
        box, radius, local = _ellipsoid(shape, voxel_size, center, radii, rotation)
        inside = radius < 1
        if not inside.any() or (labels[box][inside] != 0).any():
            continue  # outside the volume or overlapping another organelle
        rim = radius > 1 - MITO_RIM_WIDTH / short
        cristae = np.cos(2 * np.pi * local[0] / CRISTAE_PERIOD) > 0.5
        values = np.where(rim, MITO_RIM, np.where(cristae, MITO_CRISTAE, MITO_INTERIOR))
        labels[box][inside] = mito
        raw[box][inside] = values[inside]
        drawn += float(np.prod(radii)) * (4 / 3 * np.pi if dims == 3 else np.pi)


def _draw_er(rng, shape, voxel_size, raw, labels) -> None:
    dims = len(shape)
    extent = np.array(shape) * np.array(voxel_size)
    cross_section = np.pi * ER_RADIUS**2 if dims == 3 else 2 * ER_RADIUS
    walks = max(1, round(ER_FRACTION * float(np.prod(extent)) / (cross_section * ER_WALK_LENGTH)))
    step = min(voxel_size) / 2
    steps = int(ER_WALK_LENGTH / step)
    skeleton = np.zeros(shape, dtype=bool)
    for _ in range(walks):
        position = rng.uniform(0, 1, size=dims) * extent
        direction = rng.normal(size=dims)
        points = np.empty((steps, dims))
        for i in range(steps):
            direction += rng.normal(scale=ER_STIFFNESS * step / ER_RADIUS, size=dims)
            direction /= np.linalg.norm(direction)
            position = position + step * direction
            # reflect at the volume faces, so walks stay inside
            low, high = position < 0, position >= extent
            position = np.where(
                low, -position, np.where(high, 2 * extent - position - step, position)
            )
            direction[low | high] *= -1
            points[i] = position
        index = np.floor(points / np.array(voxel_size)).astype(int)
        index = index[np.all((index >= 0) & (index < np.array(shape)), axis=1)]
        skeleton[tuple(index.T)] = True
    if not skeleton.any():
        return
    tube = ndimage.distance_transform_edt(~skeleton, sampling=voxel_size) < ER_RADIUS
    tube &= labels == 0
    labels[tube] = KNOWN_CLASSES.index("er") + 1
    raw[tube] = ER


def _nucleus_envelope(labels, voxel_size, raw) -> None:
    nucleus = labels == KNOWN_CLASSES.index("nucleus") + 1
    if nucleus.any():
        depth = ndimage.distance_transform_edt(nucleus, sampling=voxel_size)
        raw[nucleus & (depth < NUCLEUS_ENVELOPE_WIDTH)] = NUCLEUS_ENVELOPE


def generate(
    shape: Sequence[int],
    voxel_size: Sequence[int],
    classes: Sequence[str],
    seed: int,
) -> tuple[npt.NDArray[np.uint8], npt.NDArray[np.uint8], npt.NDArray[np.uint8]]:
    """One synthetic volume: ``raw`` (*spatial), ``gt`` (C, *spatial), ``mask`` (*spatial).

    All three are uint8; ``gt`` and ``mask`` hold 0 and 1 only. The same
    arguments always give the same arrays.
    """
    rng = np.random.default_rng(seed)
    shape = tuple(shape)
    raw = BACKGROUND + BACKGROUND_TEXTURE * _smooth_noise(rng, shape, voxel_size, TEXTURE_SCALE)
    labels = np.zeros(shape, dtype=np.uint8)  # 0 = background, else index in KNOWN_CLASSES + 1
    if "nucleus" in classes:
        texture = _smooth_noise(rng, shape, voxel_size, TEXTURE_SCALE / 3)
        _draw_nucleus(rng, shape, voxel_size, raw, labels, texture)
        _nucleus_envelope(labels, voxel_size, raw)
    if "mito" in classes:
        _draw_mitos(rng, shape, voxel_size, raw, labels)
    if "er" in classes:
        _draw_er(rng, shape, voxel_size, raw, labels)

    raw = ndimage.gaussian_filter(raw, [BLUR / vs for vs in voxel_size])
    raw += rng.normal(scale=NOISE, size=shape)
    raw = np.clip(np.round(raw), 0, 255).astype(np.uint8)
    gt = np.stack([labels == KNOWN_CLASSES.index(c) + 1 for c in classes]).astype(np.uint8)

    mask = np.ones(shape, dtype=np.uint8)
    box = []
    for size in shape:
        length = max(1, int(size * rng.uniform(*UNANNOTATED_FRACTION)))
        start = int(rng.integers(0, size - length + 1))
        box.append(slice(start, start + length))
    mask[tuple(box)] = 0
    return raw, gt, mask


def _check_classes(classes: Sequence[str]) -> tuple[str, ...]:
    classes = tuple(classes)
    if not classes or len(set(classes)) != len(classes) or not set(classes) <= set(KNOWN_CLASSES):
        raise ValueError(
            f"classes must be distinct names from {KNOWN_CLASSES}, got classes={classes!r}"
        )
    return classes


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
    classes = _check_classes(classes)
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
