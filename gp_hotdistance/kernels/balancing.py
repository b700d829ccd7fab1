"""Class balancing: per-channel weights from moving class counts.

For each channel (two classes, the 0/1 of the labels) every class's
``den`` grows by the mask sum, present classes' ``num`` by their voxel
count; ``frac = num / den`` clipped, ``w = 1 / (2 * frac)`` (absent classes:
0), ``weight = mask * w[label]``. Counts are explicit inputs and outputs,
never hidden state.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from gp_hotdistance.kernels.threads import jit, split
from gp_hotdistance.kernels.validation import MovingCounts, broadcast_mask, check_moving_counts


def new_moving_counts(channels: int) -> MovingCounts:
    """Fresh moving counts: one ``{class: (num, den)}`` dict per channel."""
    return [{0: (0, 1), 1: (0, 1)} for _ in range(channels)]


def _update_counts(
    counts: dict[int, tuple[float, float]],
    masked_in: float,
    known: int,
    foreground: int,
    clipmin: float,
    clipmax: float,
) -> tuple[dict[int, tuple[float, float]], float, float]:
    """One channel's new counts and its class weights ``(w0, w1)``: every
    class's ``den += masked_in``; present classes ``num += count``,
    ``frac = num / den`` clipped, ``w = 1 / (2 * frac)``; absent ones 0."""
    counts = {key: (num, den + masked_in) for key, (num, den) in counts.items()}
    w = [0.0, 0.0]
    for class_id, count in ((0, known - foreground), (1, foreground)):
        if count == 0:
            continue
        num, den = counts[class_id]
        counts[class_id] = (num + count, den)
        frac = min(max((num + count) / den, clipmin), clipmax)
        w[class_id] = 1.0 / (2.0 * frac)
    return counts, w[0], w[1]


def _flat(array: npt.NDArray) -> npt.NDArray:
    """``array`` as a flat contiguous array (a view when it is contiguous)."""
    return np.ascontiguousarray(array).reshape(-1)


def balance_weights(
    labels: npt.NDArray,
    scale: npt.NDArray,
    moving_counts: MovingCounts | None = None,
    clipmin: float = 0.05,
    clipmax: float = 0.95,
    out: npt.NDArray[np.float32] | None = None,
) -> tuple[npt.NDArray[np.float32], MovingCounts]:
    """Class-balanced weights, each channel of ``labels`` on its own.

    For channel ``c`` (two classes, the 0/1 of ``labels[c]``):
    every class's ``den += sum(scale[c])``; each class present where
    ``scale[c] != 0`` gets ``num += count``; ``frac = num / den`` clipped to
    ``[clipmin, clipmax]``; ``w = 1 / (2 * frac)`` (absent classes: 0);
    ``weight = scale * w[label]``.

    Returns the float32 weights (written into ``out`` if given) and *new*
    moving counts; ``moving_counts`` (``None``: fresh) is not modified.
    """
    channels = labels.shape[0]
    scale = broadcast_mask(scale, labels.shape, name="scale")
    if moving_counts is None:
        moving_counts = new_moving_counts(channels)
    moving_counts = check_moving_counts(moving_counts, channels)
    weights = np.empty(labels.shape, dtype=np.float32) if out is None else out
    if weights.shape != labels.shape or not weights.flags.c_contiguous:
        raise ValueError(f"out must be a C-contiguous array of shape {labels.shape}")
    counts_out: MovingCounts = []
    for c in range(channels):
        labels_c, scale_c = _flat(labels[c]), _flat(scale[c])
        parts = split(_masked_counts, labels_c.size, labels_c.size, labels_c, scale_c)
        masked_in = float(sum(p[0] for p in parts))
        known, foreground = (int(sum(p[i] for p in parts)) for i in (1, 2))
        counts, w0, w1 = _update_counts(
            moving_counts[c], masked_in, known, foreground, clipmin, clipmax
        )
        split(
            _apply_class_weights,
            labels_c.size,
            labels_c.size,
            labels_c,
            scale_c,
            np.float32(w0),
            np.float32(w1),
            weights[c].reshape(-1),
        )
        counts_out.append(counts)
    return weights, counts_out


@jit(nogil=True)
def _masked_counts(labels, scale, first, stop):  # pragma: no cover - jit
    """``(sum(scale), #(scale != 0), #(scale != 0 and labels != 0))`` over
    ``first <= v < stop`` of flat arrays."""
    total = 0.0
    known = 0
    foreground = 0
    for v in range(first, stop):
        s = scale[v]
        if s != 0:
            total += s
            known += 1
            if labels[v] != 0:
                foreground += 1
    return total, known, foreground


@jit(nogil=True)
def _apply_class_weights(labels, scale, w0, w1, out, first, stop):  # pragma: no cover - jit
    """``out[v] = scale[v] * (w1 if labels[v] != 0 else w0)`` for
    ``first <= v < stop`` of flat arrays."""
    for v in range(first, stop):
        out[v] = scale[v] * (w1 if labels[v] != 0 else w0)


@jit(nogil=True)
def _masked_counts_pair(labels, mask, dmask, first, stop):  # pragma: no cover - jit
    """:func:`_masked_counts` over ``mask`` and over ``float32(mask) *
    dmask`` in one pass: ``(total, known, foreground)`` twice."""
    total = 0.0
    known = 0
    foreground = 0
    total_d = 0.0
    known_d = 0
    foreground_d = 0
    for v in range(first, stop):
        m = mask[v]
        if m == 0:
            continue
        fg = labels[v] != 0
        total += m
        known += 1
        foreground += fg
        s = np.float32(m) * dmask[v]
        if s != 0:
            total_d += s
            known_d += 1
            foreground_d += fg
    return total, known, foreground, total_d, known_d, foreground_d


@jit(nogil=True)
def _apply_class_weights_pair(
    labels, mask, dmask, w0, w1, wd0, wd1, out, out_d, first, stop
):  # pragma: no cover - jit
    """:func:`_apply_class_weights` over ``mask`` into ``out`` and over
    ``float32(mask) * dmask`` into ``out_d`` in one pass."""
    for v in range(first, stop):
        m = mask[v]
        fg = labels[v] != 0
        out[v] = m * (w1 if fg else w0)
        out_d[v] = (np.float32(m) * dmask[v]) * (wd1 if fg else wd0)


def hot_distance_weights(
    gt: npt.NDArray,
    mask: npt.NDArray | None,
    distance_mask: npt.NDArray | None,
    moving_counts: MovingCounts | None = None,
    clipmin: float = 0.05,
    clipmax: float = 0.95,
) -> tuple[npt.NDArray[np.float32], MovingCounts]:
    """Weights ``[hot x C, distance x C]`` for binary channels ``gt``.

    Hot channels are balanced over ``mask``, distance channels over
    ``mask * distance_mask`` (``distance_mask=None``: over ``mask``).
    ``moving_counts`` holds ``2C`` dicts, hot first. Returns new counts.
    Each channel is counted in one pass and written in one more, hot and
    distance weights together; a spatial mask is never broadcast in memory.
    """
    channels = gt.shape[0]
    mask = broadcast_mask(mask, gt.shape)
    if moving_counts is None:
        moving_counts = new_moving_counts(2 * channels)
    moving_counts = check_moving_counts(moving_counts, 2 * channels)
    weights = np.empty((2 * channels,) + gt.shape[1:], dtype=np.float32)
    if distance_mask is None:
        _, hot_counts = balance_weights(
            gt, mask, moving_counts[:channels], clipmin, clipmax, out=weights[:channels]
        )
        _, dist_counts = balance_weights(
            gt, mask, moving_counts[channels:], clipmin, clipmax, out=weights[channels:]
        )
        return weights, hot_counts + dist_counts
    distance_mask = broadcast_mask(distance_mask, gt.shape, name="distance_mask")
    hot_counts, dist_counts = [], []
    for c in range(channels):
        labels_c, mask_c, dmask_c = _flat(gt[c]), _flat(mask[c]), _flat(distance_mask[c])
        parts = split(_masked_counts_pair, labels_c.size, labels_c.size, labels_c, mask_c, dmask_c)
        sums = [sum(p[i] for p in parts) for i in range(6)]
        hot, w0, w1 = _update_counts(
            moving_counts[c], float(sums[0]), int(sums[1]), int(sums[2]), clipmin, clipmax
        )
        dist, wd0, wd1 = _update_counts(
            moving_counts[channels + c],
            float(sums[3]),
            int(sums[4]),
            int(sums[5]),
            clipmin,
            clipmax,
        )
        split(
            _apply_class_weights_pair,
            labels_c.size,
            labels_c.size,
            labels_c,
            mask_c,
            dmask_c,
            np.float32(w0),
            np.float32(w1),
            np.float32(wd0),
            np.float32(wd1),
            weights[c].reshape(-1),
            weights[channels + c].reshape(-1),
        )
        hot_counts.append(hot)
        dist_counts.append(dist)
    return weights, hot_counts + dist_counts
