"""Integer-factor resampling between a dataset's voxel size and the training
voxel size (pure numpy; no gunpowder, no torch).

Every function takes spatial arrays (no channel axis) and one integer factor
per axis; a factor of 1 leaves that axis alone. Downsampling functions need
each axis length to be a multiple of its factor, so that every coarse voxel
covers whole fine voxels::

    fine   |a|b|c|d|e|f|      factor 2 along this axis
    coarse | ab| cd| ef|      coarse voxel i covers fine voxels 2i, 2i+1
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt


def _blocks(data: npt.NDArray, factors: Sequence[int]) -> tuple[npt.NDArray, tuple[int, ...]]:
    """View ``data`` as ``(n0, f0, n1, f1, ...)`` and return it with the axes
    of the factors (1, 3, ...), after checking the factors fit the shape."""
    factors = tuple(int(f) for f in factors)
    if len(factors) != data.ndim:
        raise ValueError(f"{len(factors)} factors {factors} for a {data.ndim}-D array")
    if any(f < 1 for f in factors):
        raise ValueError(f"factors must be positive integers, got {factors}")
    if any(s % f for s, f in zip(data.shape, factors, strict=True)):
        raise ValueError(f"shape {data.shape} is not a multiple of the factors {factors}")
    shape = []
    for s, f in zip(data.shape, factors, strict=True):
        shape += [s // f, f]
    return data.reshape(shape), tuple(range(1, 2 * data.ndim, 2))


def downsample_labels(binary: npt.NDArray, factors: Sequence[int]) -> npt.NDArray[np.bool_]:
    """A coarse voxel is in the class iff MORE than half of the fine voxels it
    covers are (exactly half is not). ``binary`` is boolean or 0/1."""
    blocks, axes = _blocks(np.asarray(binary, dtype=bool), factors)
    count = blocks.sum(axis=axes, dtype=np.int64)
    return 2 * count > int(np.prod(factors))


def downsample_all(binary: npt.NDArray, factors: Sequence[int]) -> npt.NDArray[np.bool_]:
    """A coarse voxel is set iff EVERY fine voxel it covers is (used for
    masks: a coarse voxel is known only if all of it is known)."""
    blocks, axes = _blocks(np.asarray(binary, dtype=bool), factors)
    return blocks.all(axis=axes)


def mean_pool(raw: npt.NDArray, factors: Sequence[int]) -> npt.NDArray[np.float32]:
    """float32 mean of the fine voxels each coarse voxel covers (accumulated
    in float64)."""
    blocks, axes = _blocks(np.asarray(raw), factors)
    return blocks.mean(axis=axes, dtype=np.float64).astype(np.float32)


def upsample_nearest(data: npt.NDArray, factors: Sequence[int]) -> npt.NDArray:
    """Nearest-neighbour upsampling: every voxel repeated ``factors[a]`` times
    along axis ``a``; dtype kept."""
    data = np.asarray(data)
    factors = tuple(int(f) for f in factors)
    if len(factors) != data.ndim:
        raise ValueError(f"{len(factors)} factors {factors} for a {data.ndim}-D array")
    if any(f < 1 for f in factors):
        raise ValueError(f"factors must be positive integers, got {factors}")
    for axis, f in enumerate(factors):
        if f > 1:
            data = np.repeat(data, f, axis=axis)
    return data


def interpolate_linear(
    data: npt.NDArray, axis: int, positions: npt.NDArray[np.float64]
) -> npt.NDArray[np.float64]:
    """Values of ``data`` at fractional voxel ``positions`` along ``axis``,
    linearly interpolated between the two nearest voxels (float64).
    Positions are clamped to ``[0, n - 1]``: beyond the first or last voxel
    centre the edge voxel's value is taken."""
    data = np.asarray(data)
    n = data.shape[axis]
    positions = np.clip(np.asarray(positions, dtype=np.float64), 0, n - 1)
    low = np.floor(positions).astype(np.int64)
    high = np.minimum(low + 1, n - 1)
    shape = [1] * data.ndim
    shape[axis] = len(positions)
    t = (positions - low).reshape(shape)
    below = np.take(data, low, axis=axis).astype(np.float64)
    above = np.take(data, high, axis=axis).astype(np.float64)
    return below * (1 - t) + above * t


def fine_positions(first: int, count: int, factor: int) -> npt.NDArray[np.float64]:
    """Where fine voxels ``first .. first + count - 1`` (``factor`` per coarse
    voxel, both grids starting at the same corner) lie in coarse voxel
    coordinates, centre to centre: ``(j + 0.5) / factor - 0.5``."""
    return (np.arange(first, first + count, dtype=np.float64) + 0.5) / factor - 0.5


def upsample_linear(data: npt.NDArray, factors: Sequence[int]) -> npt.NDArray[np.float32]:
    """float32 linear interpolation onto a grid ``factors`` times finer, at
    the fine voxels' centres (:func:`fine_positions`); beyond the outer
    coarse voxel centres the edge value is kept (no extrapolation)."""
    data = np.asarray(data)
    factors = tuple(int(f) for f in factors)
    if len(factors) != data.ndim or any(f < 1 for f in factors):
        raise ValueError(f"factors {factors} must be {data.ndim} positive integers")
    out = data.astype(np.float64)
    for axis, f in enumerate(factors):
        if f > 1:
            out = interpolate_linear(out, axis, fine_positions(0, out.shape[axis] * f, f))
    return out.astype(np.float32)
