"""The distance mask: distances a crop cannot know are masked out.

A voxel's tanh distance is only known if the nearest unknown voxel (mask 0,
or the ring just outside the crop) is farther than the distance itself:
:func:`distance_mask` keeps the mask where ``min(|t| + epsilon, threshold) <
tanh(b / scale_factor)``, with ``b`` the world distance to that voxel.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import edt
import numpy as np
import numpy.typing as npt

from gp_hotdistance.kernels.threads import jit, split, threads_for
from gp_hotdistance.kernels.transform import as_3d
from gp_hotdistance.kernels.validation import broadcast_mask, check_voxel_size


def boundary_distance(mask: npt.NDArray, voxel_size: Sequence[float]) -> npt.NDArray[np.float64]:
    """World distance from every voxel to the nearest unknown voxel
    (``mask == 0``), the ring just outside the array counting as unknown."""
    return np.sqrt(_boundary_distance_squared(mask, voxel_size).astype(np.float64))


def _boundary_distance_squared(
    mask: npt.NDArray, voxel_size: Sequence[float]
) -> npt.NDArray[np.float32]:
    """:func:`boundary_distance` squared, as ``edt`` returns it (float32)."""
    known = np.ascontiguousarray(mask != 0, dtype=np.uint8)
    return edt.edtsq(
        known,
        anisotropy=tuple(float(v) for v in voxel_size),
        black_border=True,
        parallel=threads_for(known.size),
    )


def distance_mask(
    tanh_distances: npt.NDArray[np.float32],
    mask: npt.NDArray,
    voxel_size: Sequence[float],
    scale_factor: float,
    epsilon: float,
    threshold: float,
) -> npt.NDArray:
    """Mask out distances the crop cannot know.

    For channel ``i``: with ``b`` the world distance to the nearest unknown
    voxel of ``mask[i]`` (crop edge included), a voxel is set to 0 where
    ``min(|t_i| + epsilon, threshold) >= tanh(b / scale_factor)``; elsewhere
    the mask value is kept. Returns ``C`` channels in the mask's dtype.
    A spatial mask ``(*spatial)`` applies to every channel (its distances
    are computed once).
    """
    voxel_size = check_voxel_size(voxel_size, tanh_distances.ndim - 1)
    shared = np.ndim(mask) == tanh_distances.ndim - 1
    mask = broadcast_mask(mask, tanh_distances.shape)
    out = np.empty(mask.shape, dtype=mask.dtype)
    # epsilon and threshold in the distances' dtype, as numpy would cast them
    as_dtype = tanh_distances.dtype.type
    epsilon, threshold = as_dtype(epsilon), as_dtype(threshold)
    # tanh(b / scale) > threshold >= min(|t| + epsilon, threshold) for every
    # b beyond this bound (squared, with a relative margin far above rounding),
    # so the tanh is skipped there; it is computed once for a spatial mask
    if threshold >= 1:
        bound_squared = math.inf
    elif threshold <= 0:
        bound_squared = 0.0
    else:
        bound_squared = (scale_factor * math.atanh(float(threshold)) * (1 + 1e-9)) ** 2
    known = None
    for i in range(tanh_distances.shape[0]):
        if known is None or not shared:
            known = _known_tanh_of(mask[i], voxel_size, float(scale_factor), bound_squared)
        split(
            _mask_unknowable,
            known.size,
            known.size,
            np.ascontiguousarray(tanh_distances[i]).reshape(-1),
            known,
            np.ascontiguousarray(mask[i]).reshape(-1),
            epsilon,
            threshold,
            out[i].reshape(-1),
        )
    return out


# Above this many voxels per axis, the distances a distance mask needs are
# left to ``edt`` rather than to windowed minima (read at every call).
BOUNDED_RADIUS_LIMIT = 64


def _known_tanh_of(
    mask: npt.NDArray, voxel_size: Sequence[float], scale: float, bound_squared: float
) -> npt.NDArray[np.float64]:
    """Flat ``tanh(b / scale)`` with ``b`` the world distance of every voxel
    to the nearest unknown one of ``mask`` (the ring outside counting as
    unknown), ``inf`` where ``b**2 > bound_squared``.

    Only distances up to the bound are needed, so where the bound spans at
    most :data:`BOUNDED_RADIUS_LIMIT` voxels per axis they come from windowed
    minima over that radius (:func:`_near_unknown_plane`,
    :func:`_near_unknown_slices`); otherwise from a full ``edt`` transform.
    Both are exact: squared distances are sums of ``voxel_size[a]**2 * r**2``.
    """
    weights = [float(v) ** 2 for v in voxel_size]
    radii = [
        int(math.sqrt(bound_squared / w)) + 1 if math.isfinite(bound_squared) else -1
        for w in weights
    ]
    if min(radii) < 0 or max(radii) > BOUNDED_RADIUS_LIMIT:
        squared = _boundary_distance_squared(mask, voxel_size).reshape(-1)
        known = np.empty(squared.shape, dtype=np.float64)
        split(_known_tanh, squared.size, squared.size, squared, scale, bound_squared, known)
        return known
    known_voxels = as_3d(np.asarray(mask != 0, dtype=np.uint8))
    n0, n1, n2 = known_voxels.shape
    if mask.ndim == 2:  # (n0, 1, n2): no ring along the added axis
        weights, radii = [weights[0], 0.0, weights[1]], [radii[0], 0, radii[1]]
    plane = np.empty((n0, n1 * n2), dtype=np.float64)
    split(
        _near_unknown_plane,
        n0,
        known_voxels.size,
        known_voxels,
        weights[1],
        weights[2],
        radii[1],
        mask.ndim == 3,
        bound_squared,
        plane,
    )
    # squared distances are multiples of the weights' gcd: with integer
    # weights, few values lie below the bound, so their tanh is tabled
    unit = math.gcd(*(int(w) for w in weights)) if all(w == int(w) for w in weights) else 0
    entries = int(bound_squared // unit) + 1 if unit else 0
    if not 0 < entries <= _TANH_TABLE_LIMIT:
        unit, entries = 0, 0
    known = np.empty((n0, n1 * n2), dtype=np.float64)
    split(
        _near_unknown_slices,
        n0,
        known_voxels.size,
        plane,
        weights[0],
        radii[0],
        scale,
        bound_squared,
        _tanh_table(entries, float(unit), scale),
        float(unit),
        known,
    )
    return known.reshape(-1)


# Most entries of the table of tanh values of :func:`_known_tanh_of`.
_TANH_TABLE_LIMIT = 1 << 20


@jit()
def _tanh_table(entries, unit, scale):  # pragma: no cover - jit
    """``tanh(sqrt(k * unit) / scale)`` for ``k < entries``, by
    :func:`_tanh_of_squared` as where it is not tabled."""
    table = np.empty(entries, dtype=np.float64)
    for k in range(entries):
        table[k] = _tanh_of_squared(k * unit, scale)
    return table


@jit(inline="always")
def _tanh_of_squared(squared, scale):  # pragma: no cover - jit
    """``tanh(sqrt(squared) / scale)``: the one expression every distance-mask
    path uses, so that tabled and computed values agree bit for bit."""
    return np.tanh(np.sqrt(squared) / scale)


@jit()
def _window_with_ring(lines, j, weight, radius, ring, inf_row, out):  # pragma: no cover - jit
    """``out = min(ring, lines[j ± r] + weight * r**2 for r <= radius)``:
    the squared distance at line ``j`` of ``lines`` ``(n, m)`` to the nearest
    site up to ``radius`` lines away, or to the ring (squared distance ``ring``)."""
    n = lines.shape[0]
    own = lines[j]
    for k in range(out.shape[0]):
        out[k] = min(own[k], ring)
    for r in range(1, radius + 1):
        c = (weight * r) * r
        up = lines[j + r] if j + r < n else inf_row
        down = lines[j - r] if j - r >= 0 else inf_row
        for k in range(out.shape[0]):
            out[k] = min(out[k], min(up[k], down[k]) + c)


@jit(nogil=True)
def _near_unknown_plane(
    known, w1, w2, radius1, ring1, bound_squared, out, first, stop
):  # pragma: no cover - jit
    """Slices ``first .. stop - 1`` of ``known`` ``(n0, n1, n2)``: ``out[i]``
    (flat), the squared in-plane distance to the nearest voxel with
    ``known == 0`` or to the ring outside the slice (along axis 1 only if
    ``ring1``), ``inf`` above ``bound_squared``; sites along axis 1 are
    searched up to ``radius1`` voxels away."""
    n0, n1, n2 = known.shape
    rows = np.empty((n1, n2), dtype=np.float64)
    inf_row = np.full(n2, np.inf)
    for i in range(first, stop):
        for j in range(n1):
            row = rows[j]
            last = -1  # the ring before the row
            for k in range(n2):
                if known[i, j, k] == 0:
                    last = k
                row[k] = k - last
            nxt = n2  # the ring after the row
            for k in range(n2 - 1, -1, -1):
                if known[i, j, k] == 0:
                    nxt = k
                d = min(row[k], nxt - k)
                v = (w2 * d) * d
                row[k] = v if v <= bound_squared else np.inf
        for j in range(n1):
            target = out[i, j * n2 : (j + 1) * n2]
            edge = min(j + 1, n1 - j)
            ring = (w1 * edge) * edge if ring1 else np.inf
            _window_with_ring(rows, j, w1, radius1, ring, inf_row, target)
            for k in range(n2):
                if target[k] > bound_squared:
                    target[k] = np.inf


@jit(nogil=True)
def _near_unknown_slices(
    plane, w0, radius0, scale, bound_squared, table, unit, known, first, stop
):  # pragma: no cover - jit
    """Slices ``first .. stop - 1`` of ``(n0, m)`` arrays: the squared
    distance along axis 0 over ``plane`` (sites up to ``radius0`` slices away,
    the ring before and after the volume included), written as
    ``known = tanh(sqrt(squared) / scale)``, ``inf`` above ``bound_squared``;
    with ``unit > 0`` every squared distance is a multiple of ``unit`` and
    its tanh is ``table[squared / unit]``."""
    n0, m = plane.shape
    best = np.empty(m, dtype=np.float64)
    inf_row = np.full(m, np.inf)
    for i in range(first, stop):
        edge = min(i + 1, n0 - i)
        _window_with_ring(plane, i, w0, radius0, (w0 * edge) * edge, inf_row, best)
        target = known[i]
        for v in range(m):
            b2 = best[v]
            if b2 > bound_squared:
                target[v] = np.inf
            elif unit > 0:
                target[v] = table[int(b2 / unit)]
            else:
                target[v] = _tanh_of_squared(b2, scale)


@jit(nogil=True)
def _known_tanh(squared, scale, bound_squared, known, first, stop):  # pragma: no cover - jit
    """``known[v] = tanh(sqrt(squared[v]) / scale)`` for ``first <= v < stop``
    of flat arrays, ``inf`` beyond ``bound_squared`` (where the tanh exceeds
    the threshold, so it is never needed)."""
    for v in range(first, stop):
        b2 = np.float64(squared[v])
        known[v] = np.inf if b2 > bound_squared else _tanh_of_squared(b2, scale)


@jit(nogil=True)
def _mask_unknowable(
    t, known, mask, epsilon, threshold, out, first, stop
):  # pragma: no cover - jit
    """``out[v] = 0`` where ``min(|t[v]| + epsilon, threshold) >= known[v]``,
    else ``mask[v]``, for ``first <= v < stop`` of flat arrays (the left side
    in the dtype of ``t``)."""
    for v in range(first, stop):
        out[v] = 0 if min(abs(t[v]) + epsilon, threshold) >= known[v] else mask[v]
