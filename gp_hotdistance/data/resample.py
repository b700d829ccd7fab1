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
