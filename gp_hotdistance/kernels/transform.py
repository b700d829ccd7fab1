"""Exact signed world distance of every voxel centre to the nearest label
face, and the hot-distance target built from it.

Boundaries live on the faces between neighbouring voxels whose labels differ.
The distance of a voxel is the Euclidean distance, in world units, from its
centre to the nearest face centre::

    labels   0   0   1   1   1          voxel_size 4
    faces          |                    (one face, between voxel 1 and 2)
    d       -6  -2  +2  +6  +10         (-/+ : outside/inside)

The reference construction (DaCapo's) runs an EDT on a grid doubled per axis
(``2n - 1`` samples) and keeps the even samples. :func:`signed_distance`
computes the same numbers without the doubled grid: faces normal to axis ``a``
sit half a voxel off the grid along ``a`` only, so a separable lower envelope
of parabolas (Felzenszwalb & Huttenlocher, :mod:`.envelope`) that interleaves
the half-offset sites with the native ones along one axis at a time gives the
exact squared distance on the native grid.

A channel is viewed as ``(n0, n1, n2)`` (a 2-D ``(n0, n2)`` one as
``(n0, 1, n2)``). Faces normal to axis ``a`` form the family ``a``; they sit
half a voxel off the grid along ``a`` only. Two passes:

  plane pass, slice by slice (cache resident): per row along axis 2, the
    nearest face of each family (family 2 at half offsets, families 1 and 0
    at native ones, read straight from the labels); then along axis 1 a
    lower envelope that merges family 1 (half offsets) into family 2, and
    one for family 0 (between slice i and i + 1) on its own.
  column pass along axis 0: a lower envelope merging family 0 (half
    offsets) into the rest, then sqrt, sign and the tanh scale, written as
    float32 straight into the target channel.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

from gp_hotdistance.kernels.envelope import BLOCK, lane_scratch, transform_lanes
from gp_hotdistance.kernels.threads import jit, split
from gp_hotdistance.kernels.validation import check_voxel_size

# Sites up to this many voxels away are tried by the windowed minimum before
# a lane falls back to the envelope (read at every call). One window step, a
# point looking one voxel further, costs about 1/50 of what the envelope
# spends per point (about 0.35 ns against 16 ns here).
WINDOW_RADIUS = 32

# After a block gave up on the window, the block at the same place in this
# many following slices goes straight through the envelope.
_WINDOW_RETRY = 8


@jit()
def _scan_row(
    row, right, below, has_right, has_below, weight, f2, f1, f0
):  # pragma: no cover - jit
    """One row along axis 2, in one sweep each way: ``f2[x] = weight * (x -
    nearest face) ** 2`` over the faces at ``k + 0.5`` where ``row[k] !=
    row[k + 1]``; if ``has_right``, ``f1[x] = weight * (x - nearest k) ** 2``
    over the ``k`` where ``row[k] != right[k]``; if ``has_below``, ``f0``
    likewise against ``below``. ``inf`` where there is none."""
    n = f2.shape[0]
    first = row[0]
    uniform = True  # a uniform row equal to its neighbours has no site
    for x in range(n):
        if (
            row[x] != first
            or (has_right and right[x] != first)
            or (has_below and below[x] != first)
        ):
            uniform = False
            break
    if uniform:
        for x in range(n):
            f2[x] = np.inf
            if has_right:
                f1[x] = np.inf
            if has_below:
                f0[x] = np.inf
        return
    last2 = -np.inf
    last1 = -np.inf
    last0 = -np.inf
    previous = row[0]
    for x in range(n):
        v = row[x]
        if v != previous:
            last2 = x - 0.5
        previous = v
        f2[x] = x - last2
        if has_right:
            if v != right[x]:
                last1 = x
            f1[x] = x - last1
        if has_below:
            if v != below[x]:
                last0 = x
            f0[x] = x - last0
    next2 = np.inf
    next1 = np.inf
    next0 = np.inf
    following = row[n - 1]
    for x in range(n - 1, -1, -1):
        v = row[x]
        if v != following:
            next2 = x + 0.5
        following = v
        d = min(f2[x], next2 - x)
        f2[x] = weight * d * d
        if has_right:
            if v != right[x]:
                next1 = x
            d = min(f1[x], next1 - x)
            f1[x] = weight * d * d
        if has_below:
            if v != below[x]:
                next0 = x
            d = min(f0[x], next0 - x)
            f0[x] = weight * d * d


@jit(nogil=True)
def _plane_pass(labels, w1, w2, radius, native, half, first, stop):  # pragma: no cover - jit
    """Slices ``first .. stop - 1`` of ``labels`` ``(n0, n1, n2)``: writes
    ``native[i]``, the squared in-plane distance to the faces normal to axes
    1 and 2, and ``half[i]`` (``i < n0 - 1``), the squared in-plane distance
    to the faces between slices ``i`` and ``i + 1`` (``inf``: none)."""
    n0, n1, n2 = labels.shape
    f2 = np.empty((n1, n2), dtype=np.float64)  # family 2, native along axis 1
    f1 = np.empty((max(n1 - 1, 1), n2), dtype=np.float64)  # family 1, half along axis 1
    f0 = np.empty((n1, n2), dtype=np.float64)  # family 0 of slice i + 0.5
    scratch = lane_scratch(n1)
    # per family (2 and 1 merged, 0) and lane block: slices left to go
    # straight through the envelope, as the block gave up on the window
    direct = np.zeros((2, -(-n2 // BLOCK)), dtype=np.int64)
    for i in range(first, stop):
        between = i + 1 < n0
        for j in range(n1):
            _scan_row(
                labels[i, j],
                labels[i, min(j + 1, n1 - 1)],
                labels[min(i + 1, n0 - 1), j],
                j + 1 < n1,
                between,
                w2,
                f2[j],
                f1[min(j, f1.shape[0] - 1)],
                f0[j],
            )
        if n1 == 1:  # nothing to transform along axis 1
            native[i, 0] = f2[0]
            if between:
                half[i, 0] = f0[0]
            continue
        for p0 in range(0, n2, BLOCK):
            p1 = min(p0 + BLOCK, n2)
            blk = p0 // BLOCK
            for family in range(2 if between else 1):
                if direct[family, blk] > 0:
                    direct[family, blk] -= 1
                    r = -1
                else:
                    r = radius
                # one call site with a run-time flag: one compiled variant
                merged = family == 0
                src = f2 if merged else f0
                dst = native[i] if merged else half[i]
                gave_up = transform_lanes(src, f1, merged, w1, r, p0, p1, dst, p0, scratch)
                if gave_up and r >= 0:
                    direct[family, blk] = _WINDOW_RETRY


@jit(nogil=True)
def _column_pass(
    labels, native, half, w0, radius, scale, out, first, stop
):  # pragma: no cover - jit
    """Column blocks ``first .. stop - 1`` of ``(n0, m)`` arrays: the lower
    envelope along axis 0 of ``native`` (at ``i``) and ``half`` (at
    ``i + 0.5``), as ``out = ±float32(sqrt(squared)) / scale`` (``-``
    where ``labels == 0``)."""
    n0, m = native.shape
    scratch = lane_scratch(n0)
    best = np.empty((n0, BLOCK), dtype=np.float64)  # one block's lanes
    for block in range(first, stop):
        p0 = block * BLOCK
        p1 = min(p0 + BLOCK, m)
        transform_lanes(native, half, n0 > 1, w0, radius, p0, p1, best, 0, scratch)
        for i in range(n0):
            for b in range(p1 - p0):
                d = np.float32(np.sqrt(best[i, b]))
                if labels[i, p0 + b] == 0:
                    d = -d
                out[i, p0 + b] = d / scale


# Arrays of fewer voxels than this are transformed on one thread: below it,


def as_3d(channel: npt.NDArray) -> npt.NDArray:
    """A contiguous ``(n0, n1, n2)`` view (2-D ``(n0, n2)`` as ``(n0, 1, n2)``)."""
    channel = np.ascontiguousarray(channel)
    if channel.dtype == np.bool_:
        channel = channel.view(np.uint8)
    return channel[:, None, :] if channel.ndim == 2 else channel


def _transform_buffers(shape: Sequence[int]) -> tuple[npt.NDArray, npt.NDArray]:
    """The float64 buffers the two passes share for a channel of ``shape``:
    in-plane results at the slices and between them."""
    n0, n1, n2 = (shape[0], 1, shape[1]) if len(shape) == 2 else tuple(shape)
    return (
        np.empty((n0, n1, n2), dtype=np.float64),
        np.empty((max(n0 - 1, 0), n1, n2), dtype=np.float64),
    )


def _scaled_signed_distance(
    channel: npt.NDArray,
    voxel_size: Sequence[float],
    scale: float,
    out: npt.NDArray[np.float32],
    buffers: tuple[npt.NDArray, npt.NDArray] | None = None,
) -> None:
    """Write ``signed_distance(channel) / scale`` (float32) into ``out``
    (``channel``'s shape), through float64 buffers shared by the two passes
    (:func:`_transform_buffers`, new ones if not given): the slice-wise
    in-plane pass, then the column pass along axis 0, which reads what the
    first wrote."""
    channel = np.asarray(channel)
    labels = as_3d(channel)
    n0, n1, n2 = labels.shape
    weights = [float(v) ** 2 for v in voxel_size]
    w0, w1, w2 = (weights[0], 1.0, weights[1]) if channel.ndim == 2 else weights
    native, half = _transform_buffers(channel.shape) if buffers is None else buffers
    radius = int(WINDOW_RADIUS)
    split(_plane_pass, n0, labels.size, labels, w1, w2, radius, native, half)
    split(
        _column_pass,
        -(-(n1 * n2) // BLOCK),
        labels.size,
        labels.reshape(n0, -1),
        native.reshape(n0, -1),
        half.reshape(max(n0 - 1, 0), n1 * n2),
        w0,
        radius,
        np.float32(scale),
        out.reshape(n0, n1 * n2),
    )
    if np.isinf(out.flat[0]):  # no face anywhere in the channel
        sign = 1.0 if channel.flat[0] else -1.0
        extent = np.float32(sign * no_boundary_extent(channel.shape, voxel_size))
        out[...] = extent / np.float32(scale)


def signed_distance(channel: npt.NDArray, voxel_size: Sequence[float]) -> npt.NDArray[np.float32]:
    """Signed world distance of every voxel centre to the nearest label face.

    Positive inside (``channel != 0``), negative outside. A channel without
    any face gets ``±min(shape[a] * voxel_size[a] / 2)``: ``+`` if all
    foreground, ``-`` if all background. Exact: equals the doubled-grid EDT
    sampled at the voxel centres.
    """
    out = np.empty(np.shape(channel), dtype=np.float32)
    _scaled_signed_distance(channel, voxel_size, 1.0, out)
    return out


def hot_distance_target(
    gt: npt.NDArray, voxel_size: Sequence[float], scale_factor: float
) -> npt.NDArray[np.float32]:
    """Target ``[hot x C, tanh(d / scale_factor) x C]`` for binary channels
    ``gt`` of shape ``(C, *spatial)``; ``d`` in world units.

    Equal to ``np.tanh(signed_distance(gt[i]) / scale_factor)`` per
    channel: the division by ``scale_factor`` happens in float32 in the last
    pass of the transform, the tanh in place.
    """
    voxel_size = check_voxel_size(voxel_size, gt.ndim - 1)
    channels = gt.shape[0]
    target = np.empty((2 * channels,) + gt.shape[1:], dtype=np.float32)
    target[:channels] = gt
    buffers = _transform_buffers(gt.shape[1:])  # shared by the channels
    for i in range(channels):
        _scaled_signed_distance(gt[i], voxel_size, scale_factor, target[channels + i], buffers)
    np.tanh(target[channels:], out=target[channels:])
    return target


def no_boundary_extent(shape: Sequence[int], voxel_size: Sequence[float]) -> float:
    """``min(shape[a] * voxel_size[a] / 2)``: the distance given to a channel
    without any boundary in the crop."""
    return min(s * float(v) / 2 for s, v in zip(shape, voxel_size, strict=True))
