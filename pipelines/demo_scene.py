"""The synthetic scene of the demo data: microscopy-like raw, binary
per-class labels and an annotation mask, drawn in world units (numpy and
scipy only).

Organelles (sizes in world units, so anisotropic data looks alike):

- ``mito``: elongated ellipsoids, dark membrane rim, medium interior with darker
  cristae stripes;
- ``er``: thin dark tubes following smooth random walks;
- ``nucleus``: one large ellipsoid, textured interior, dark envelope.

Classes do not overlap (nucleus before mito before er).
:mod:`pipelines.demo_data` writes the scene in the CellMap layout.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt
from scipy import ndimage

KNOWN_CLASSES = ("mito", "er", "nucleus")

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


def check_classes(classes: Sequence[str]) -> tuple[str, ...]:
    classes = tuple(classes)
    if not classes or len(set(classes)) != len(classes) or not set(classes) <= set(KNOWN_CLASSES):
        raise ValueError(
            f"classes must be distinct names from {KNOWN_CLASSES}, got classes={classes!r}"
        )
    return classes
