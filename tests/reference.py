"""Slow, obviously-correct reference of docs/SPEC.md, the DaCapo way.

Used by the tests (parity with :mod:`gp_hotdistance.functional`) and by the
benchmarks (the baseline to beat). Written straight from the specification,
independent of ``functional``'s kernels:

- target: boundaries on a grid doubled per axis (``2n - 1`` samples, a
  boundary at the odd position between two differing labels), scipy's exact
  EDT with ``sampling=voxel_size / 2``, even samples kept, then
  ``np.tanh(d_f32 / scale)`` in float32;
- distance mask: EDT of the mask zero-padded by one voxel,
  ``sampling=voxel_size``, cropped back;
- weights: ``np.unique`` counts and moving ``(num, den)`` counts per channel.

Nothing here is optimised; do not use it in a pipeline.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence

import numpy as np
import numpy.typing as npt
from scipy.ndimage import distance_transform_edt

RefCounts = list[dict[int, tuple[float, float]]]


def reference_boundaries(channel: npt.NDArray) -> npt.NDArray[np.bool_]:
    """Boundaries of one channel on the doubled grid (``2n - 1`` per axis).

    Sample ``2i`` is voxel ``i``; along axis ``a`` the sample at odd position
    ``2i + 1`` (even along the other axes) is True where voxels ``i`` and
    ``i + 1`` differ::

        labels   0 0 1 1 1         n = 5
        doubled  0.0.0|1.1.1.1     2n - 1 = 9, boundary at position 3
    """
    dims = channel.ndim
    labels = np.asarray(channel).astype(np.int64)
    boundaries = np.zeros(tuple(2 * s - 1 for s in channel.shape), dtype=bool)
    for axis in range(dims):
        hi = [slice(None)] * dims
        lo = [slice(None)] * dims
        hi[axis] = slice(1, None)
        lo[axis] = slice(0, -1)
        diff = labels[tuple(hi)] != labels[tuple(lo)]
        where = [slice(None, None, 2)] * dims
        where[axis] = slice(1, None, 2)
        boundaries[tuple(where)] = diff
    return boundaries


def reference_signed_distance(
    channel: npt.NDArray, voxel_size: Sequence[float]
) -> npt.NDArray[np.float32]:
    """Signed world distance (float32, + inside) of every voxel centre to the
    nearest boundary face: doubled-grid scipy EDT, even samples kept. Slow
    reference used by tests and benchmarks."""
    channel = np.asarray(channel)
    boundaries = reference_boundaries(channel)
    if not boundaries.any():
        extent = min(s * float(v) / 2 for s, v in zip(channel.shape, voxel_size, strict=True))
        sign = 1.0 if np.sum(channel) > 0 else -1.0
        return np.full(channel.shape, sign * extent, dtype=np.float32)
    distances = distance_transform_edt(
        ~boundaries, sampling=tuple(float(v) / 2 for v in voxel_size)
    ).astype(np.float32)
    distances = distances[(slice(None, None, 2),) * channel.ndim]
    distances[channel == 0] = -distances[channel == 0]
    return distances


def reference_target(
    gt: npt.NDArray, voxel_size: Sequence[float], scale_factor: float
) -> npt.NDArray[np.float32]:
    """``[hot x C, tanh(d / scale_factor) x C]`` (float32) of binary channels
    ``gt`` ``(C, *spatial)``, tanh in float32 as DaCapo does. Slow reference
    used by tests and benchmarks."""
    gt = np.asarray(gt)
    distances = np.stack([reference_signed_distance(c, voxel_size) for c in gt])
    return np.concatenate([gt.astype(np.float32), np.tanh(distances / scale_factor)])


def reference_distance_mask(
    t: npt.NDArray[np.float32],
    mask: npt.NDArray,
    voxel_size: Sequence[float],
    scale_factor: float,
    epsilon: float = 0.05,
    threshold: float = 0.8,
) -> npt.NDArray:
    """Distance mask of tanh distances ``t`` ``(C, *spatial)``: ``mask``
    (``(C, *spatial)`` or ``(*spatial)``) set to 0 where
    ``clip(|t| + epsilon, 0, threshold) >= tanh(b / scale_factor)``, ``b`` the
    EDT of the mask zero-padded by one voxel and cropped back. Slow reference
    used by tests and benchmarks."""
    t = np.asarray(t)
    mask = np.asarray(mask)
    if mask.shape != t.shape:
        mask = np.broadcast_to(mask, t.shape)
    out = mask.copy()
    inner = (slice(1, -1),) * (t.ndim - 1)
    for i in range(t.shape[0]):
        padded = np.zeros(tuple(s + 2 for s in mask[i].shape), dtype=mask.dtype)
        padded[inner] = mask[i]
        b = distance_transform_edt(padded, sampling=tuple(float(v) for v in voxel_size))[inner]
        known = np.tanh(b / scale_factor)
        needed = np.clip(np.abs(t[i]) + epsilon, 0, threshold)
        out[i][needed >= known] = 0
    return out


def reference_balance(
    labels: npt.NDArray,
    masks: Sequence[npt.NDArray],
    counts: RefCounts | None,
    clipmin: float = 0.05,
    clipmax: float = 0.95,
) -> tuple[npt.NDArray[np.float32], RefCounts]:
    """Per-channel two-class balancing of binary ``labels`` ``(C, *spatial)``
    over the product of ``masks``, DaCapo's ``balance_weights`` with one slab
    per channel. Returns the weights and new counts (``counts`` untouched).
    Slow reference used by tests and benchmarks."""
    labels = np.asarray(labels)
    counts = (
        [{0: (0, 1), 1: (0, 1)} for _ in range(labels.shape[0])]
        if counts is None
        else copy.deepcopy(counts)
    )
    scale = np.ones(labels.shape, dtype=np.float32)
    for m in masks:
        scale = scale * m
    for c in range(labels.shape[0]):
        scale_c = scale[c]
        label_c = (labels[c] != 0).astype(np.int64)
        masked_in = float(np.sum(scale_c, dtype=np.float64))
        classes, class_counts = np.unique(label_c[np.nonzero(scale_c)], return_counts=True)
        slab = counts[c]
        for key, (num, den) in slab.items():
            slab[key] = (num, den + masked_in)
        fracs = []
        for class_id, n in zip(classes.tolist(), class_counts.tolist(), strict=True):
            num, den = slab[class_id]
            slab[class_id] = (num + n, den)
            fracs.append((num + n) / den)
        w = np.zeros(2)
        w[classes] = 1.0 / 2.0 / np.clip(np.array(fracs), clipmin, clipmax)
        scale_c *= np.take(w, label_c)
    return scale, counts


def reference_weights(
    gt: npt.NDArray,
    mask: npt.NDArray | None,
    distance_mask: npt.NDArray | None,
    counts: RefCounts | None,
    clipmin: float = 0.05,
    clipmax: float = 0.95,
) -> tuple[npt.NDArray[np.float32], RefCounts]:
    """Weights ``[hot x C, distance x C]`` and ``2C`` new count dicts (hot
    first): hot channels balanced over ``mask``, distance channels over
    ``mask * distance_mask`` (``distance_mask=None``: over ``mask``). Slow
    reference used by tests and benchmarks."""
    gt = np.asarray(gt)
    channels = gt.shape[0]
    mask = np.ones(gt.shape, dtype=np.float32) if mask is None else np.asarray(mask)
    if counts is None:
        counts = [{0: (0, 1), 1: (0, 1)} for _ in range(2 * channels)]
    hot, hot_counts = reference_balance(gt, [mask], counts[:channels], clipmin, clipmax)
    dist_masks = [mask] if distance_mask is None else [mask, distance_mask]
    dist, dist_counts = reference_balance(gt, dist_masks, counts[channels:], clipmin, clipmax)
    return np.concatenate([hot, dist]), hot_counts + dist_counts


def reference_hot_distance(
    gt: npt.NDArray,
    mask: npt.NDArray | None,
    voxel_size: Sequence[float],
    scale_factor: float,
    mask_distances: bool,
    counts: RefCounts | None = None,
    epsilon: float = 0.05,
    threshold: float = 0.8,
    clipmin: float = 0.05,
    clipmax: float = 0.95,
) -> tuple[npt.NDArray[np.float32], npt.NDArray, npt.NDArray[np.float32], RefCounts]:
    """One DaCapo-style batch over the whole crop: ``(target, distance_mask,
    weights, counts)``. ``distance_mask`` is all ones in the mask's dtype
    when ``mask_distances`` is off (distances still balanced, the SPEC's
    deviation). Slow reference used by tests and benchmarks."""
    gt = np.asarray(gt)
    channels = gt.shape[0]
    if mask is None:
        mask = np.ones(gt.shape, dtype=np.float32)
    mask = np.asarray(mask)
    if mask.shape != gt.shape:
        mask = np.broadcast_to(mask, gt.shape).copy()
    target = reference_target(gt, voxel_size, scale_factor)
    if mask_distances:
        dmask = reference_distance_mask(
            target[channels:], mask, voxel_size, scale_factor, epsilon, threshold
        )
        weights, counts = reference_weights(gt, mask, dmask, counts, clipmin, clipmax)
    else:
        dmask = np.ones_like(mask)
        weights, counts = reference_weights(gt, mask, None, counts, clipmin, clipmax)
    return target, dmask, weights, counts
