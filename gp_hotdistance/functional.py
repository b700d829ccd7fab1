"""Array kernels of the hot-distance predictor: numpy, edt, and numba loops.

No gunpowder, no torch: every function takes plain arrays plus an explicit
``voxel_size`` (world units per voxel, one entry per spatial axis) and returns
new arrays. Channels lead, spatial axes trail. The inner loops are numba
functions (compiled on first use, then cached on disk) that release the GIL;
large arrays are split over a thread pool of this process's cores.

Signed boundary distance
------------------------
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
of parabolas (Felzenszwalb & Huttenlocher) that interleaves the half-offset
sites with the native ones along one axis at a time gives the exact squared
distance on the native grid. Each envelope step first tries a windowed
minimum, vectorised over 64 neighbouring lines and exact once every point is
settled, and falls back to the envelope for lines it cannot settle.
"""

from __future__ import annotations

import logging
import math
import numbers
import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor

import edt
import numba
import numpy as np
import numpy.typing as npt

logger = logging.getLogger(__name__)

MovingCounts = list[dict[int, tuple[float, float]]]

SUPPORTED_DIMS = (2, 3)


# ---------------------------------------------------------------------------
# input conversion and validation
# ---------------------------------------------------------------------------

# How many distinct offending values an error message lists.
_SHOWN_VALUES = 5


def is_integer(value: object) -> bool:
    """True for Python and numpy integers; False for bools and everything else."""
    return isinstance(value, numbers.Integral) and not isinstance(value, (bool, np.bool_))


def is_real(value: object) -> bool:
    """True for Python and numpy integers and floats; False for bools,
    strings and everything else."""
    return isinstance(value, numbers.Real) and not isinstance(value, (bool, np.bool_))


def check_voxel_size(
    voxel_size: Sequence[float], dims: int | None = None, name: str = "voxel_size"
) -> tuple[float, ...]:
    """``voxel_size`` as a tuple, checked: real numbers (numpy scalars
    included), finite and positive, ``dims`` entries when given.

    Raises:
        TypeError: ``voxel_size`` is not a sequence of real numbers.
        ValueError: an entry is zero, negative or not finite, or the length
            is not ``dims``.
    """
    if isinstance(voxel_size, (str, bytes)) or not isinstance(voxel_size, Iterable):
        raise TypeError(f"{name} must be a sequence of numbers, got {voxel_size!r}")
    values = tuple(voxel_size)
    if not all(is_real(v) for v in values):
        raise TypeError(f"{name} must hold real numbers, got {values!r}")
    if dims is not None and len(values) != dims:
        raise ValueError(f"{name} must have {dims} entries (one per spatial axis), got {values!r}")
    if not all(math.isfinite(v) and v > 0 for v in values):
        raise ValueError(f"{name} must be positive and finite on every axis, got {values!r}")
    return values


def check_not_empty(array: npt.NDArray, name: str = "array") -> None:
    """Raise ``ValueError`` if ``array`` has no elements (an axis of length 0)."""
    if array.size == 0:
        raise ValueError(f"{name} is empty: shape {array.shape} has an axis of length 0")


def to_channels(labels: npt.NDArray, class_ids: Sequence[int]) -> npt.NDArray[np.uint8]:
    """Convert an integer class-id volume ``(*spatial)`` to binary channels.

    Channel ``i`` is 1 where ``labels == class_ids[i]``; ids not in
    ``class_ids`` are background in every channel. Works for any integer
    dtype, uint64 included (no cast, so no wrap-around).

    Raises:
        TypeError: ``labels`` is not an integer or boolean array, or a class
            id is not an integer.
        ValueError: ``class_ids`` is empty or holds duplicates.
    """
    labels = np.asarray(labels)
    if not (np.issubdtype(labels.dtype, np.integer) or labels.dtype == np.bool_):
        raise TypeError(f"class-id labels must have an integer dtype, got dtype={labels.dtype}")
    ids = list(class_ids)
    if len(ids) == 0:
        raise ValueError("class_ids must name at least one class id, got []")
    if not all(is_integer(i) for i in ids):
        raise TypeError(f"class_ids must be integers, got {ids!r}")
    if len(set(ids)) != len(ids):
        raise ValueError(f"class_ids must be unique, got {ids}")
    out = np.empty((len(ids),) + labels.shape, dtype=np.uint8)
    for i, class_id in enumerate(ids):
        np.equal(labels, class_id, out=out[i], casting="unsafe")
    return out


def check_binary(gt: npt.NDArray, name: str = "gt") -> None:
    """Raise unless ``gt`` is a bool/integer/float array holding only 0 and 1.

    Raises:
        TypeError: the dtype is not bool, integer or floating point.
        ValueError: a value other than 0 or 1 occurs (NaN included).
    """
    kind = gt.dtype.kind
    if kind not in "biuf":
        raise TypeError(f"{name} must be a bool, integer or float array, got dtype={gt.dtype}")
    if kind == "b" or gt.size == 0:
        return
    if kind in "iu" and gt.min() >= 0 and gt.max() <= 1:  # one pass each, no temporaries
        return
    bad = (gt != 0) & (gt != 1)
    if bad.any():
        values = np.unique(gt[bad])[:_SHOWN_VALUES]
        raise ValueError(f"{name} must be binary (0/1) per channel, found values {values.tolist()}")


def check_mask(mask: npt.NDArray, name: str = "mask") -> None:
    """Raise unless every value of ``mask`` lies in ``[0, 1]``.

    Masks weigh voxels: 1 = annotated, 0 = unknown. Float masks may hold
    fractional weights in between; integer masks therefore hold only 0 and
    1 (so a 0/255 mask is an error, never a weight of 255); bool masks are
    always valid. NaN and infinities are errors.

    Raises:
        TypeError: the dtype is not bool, integer or floating point.
        ValueError: a value is NaN or outside ``[0, 1]``; the message lists
            up to five of them.
    """
    kind = mask.dtype.kind
    if kind not in "biuf":
        raise TypeError(f"{name} must be a bool, integer or float array, got dtype={mask.dtype}")
    if kind == "b" or mask.size == 0:
        return
    # min/max propagate NaN, and every comparison with NaN is False
    if mask.min() >= 0 and mask.max() <= 1:
        return
    bad = ~((mask >= 0) & (mask <= 1))
    values = np.unique(mask[bad])[:_SHOWN_VALUES]
    rule = "finite values in [0, 1]" if kind == "f" else "only 0 and 1"
    raise ValueError(
        f"{name} must hold {rule} (1 = annotated, 0 = unknown), found "
        f"{int(bad.sum())} voxels with values such as {values.tolist()}"
    )


def check_dims(ndim: int, name: str = "array") -> None:
    """Raise ``ValueError`` unless ``ndim`` spatial dimensions are supported."""
    if ndim not in SUPPORTED_DIMS:
        raise ValueError(f"{name} must have 2 or 3 spatial dimensions, got {ndim}")


def broadcast_mask(
    mask: npt.NDArray | None, shape: tuple[int, ...], name: str = "mask"
) -> npt.NDArray:
    """Return ``mask`` as a ``(C, *spatial)`` view for channel shape ``shape``.

    ``None`` means all ones (float32); a ``(*spatial)`` mask is broadcast to
    every channel. The values are checked with :func:`check_mask`.

    Raises:
        ValueError: the mask shape is neither ``shape`` nor ``shape[1:]``, or
            a value is NaN or outside ``[0, 1]`` (integer masks: not 0/1).
        TypeError: the mask dtype is not bool, integer or floating point.
    """
    if mask is None:
        return np.ones(shape, dtype=np.float32)
    mask = np.asarray(mask)
    if mask.shape == shape:
        check_mask(mask, name)
        return mask
    if mask.shape == shape[1:]:
        check_mask(mask, name)
        return np.broadcast_to(mask, shape)
    raise ValueError(
        f"{name} shape {mask.shape} matches neither the channels {shape} "
        f"nor the spatial shape {shape[1:]}"
    )


def check_moving_counts(counts: object, channels: int, name: str = "moving_counts") -> MovingCounts:
    """``counts`` as :data:`MovingCounts`, checked: a list of ``channels``
    dicts, each holding exactly the classes 0 and 1 (ints, or the strings
    ``"0"`` / ``"1"`` of a JSON round trip) mapped to a pair ``(num, den)``
    of finite real numbers with ``num >= 0`` and ``den >= 1`` (counts start
    at ``(0, 1)``; ``num`` only grows by voxel counts, ``den`` by mask sums).

    Raises:
        TypeError: a container, key or number has the wrong type.
        ValueError: the number of channels, the classes or a value is wrong.
    """
    if not isinstance(counts, (list, tuple)):
        raise TypeError(f"{name} must be a list of {channels} dicts, got {counts!r}")
    if len(counts) != channels:
        raise ValueError(f"{name} holds {len(counts)} channels, expected {channels}")
    checked: MovingCounts = []
    for c, channel in enumerate(counts):
        where = f"{name}[{c}]"
        if not isinstance(channel, Mapping):
            raise TypeError(f"{where} must be a dict {{class: (num, den)}}, got {channel!r}")
        classes = {}
        for key, value in channel.items():
            if key in (0, 1, "0", "1") and not isinstance(key, (bool, np.bool_, float)):
                classes[int(key)] = value
            else:
                raise ValueError(f"{where} has class key {key!r}; the classes are 0 and 1")
        if sorted(classes) != [0, 1] or len(channel) != 2:
            raise ValueError(f"{where} must hold classes 0 and 1, got keys {list(channel)}")
        pairs = {}
        for class_id, value in sorted(classes.items()):
            if (
                isinstance(value, (str, bytes))
                or not isinstance(value, Sequence)
                or len(value) != 2
                or not all(is_real(v) for v in value)
            ):
                raise TypeError(
                    f"{where}[{class_id}] must be a pair (num, den) of numbers, got {value!r}"
                )
            num, den = value
            if not (math.isfinite(num) and math.isfinite(den) and num >= 0 and den >= 1):
                raise ValueError(
                    f"{where}[{class_id}] = {tuple(value)!r}: (num, den) must be finite "
                    "with num >= 0 and den >= 1"
                )
            pairs[class_id] = (num, den)
        checked.append(pairs)
    return checked


# ---------------------------------------------------------------------------
# exact signed distance to label faces
# ---------------------------------------------------------------------------
#
# A channel is viewed as ``(n0, n1, n2)`` (a 2-D ``(n0, n2)`` one as
# ``(n0, 1, n2)``). Faces normal to axis ``a`` form the family ``a``; they sit
# half a voxel off the grid along ``a`` only. Two passes:
#
#   plane pass, slice by slice (cache resident): per row along axis 2, the
#     nearest face of each family (family 2 at half offsets, families 1 and 0
#     at native ones, read straight from the labels); then along axis 1 a
#     lower envelope that merges family 1 (half offsets) into family 2, and
#     one for family 0 (between slice i and i + 1) on its own.
#   column pass along axis 0: a lower envelope merging family 0 (half
#     offsets) into the rest, then sqrt, sign and the tanh scale, written as
#     float32 straight into the target channel.
#
# Each "lower envelope" runs on lanes of 64 neighbouring lines at once
# (:func:`_transform_lanes`): first a windowed minimum over the sites within
# ``radius`` of each point, vectorised across the lanes and stopped early
# once every point is settled; a point is settled, so exact, as soon as its
# minimum is no larger than the cost of the nearest site not yet visited.
# Lanes with a point still unsettled at ``radius`` (objects far apart) go
# through the Felzenszwalb-Huttenlocher envelope instead, so the result is
# the same either way, bit for bit.


# names of the kernels compiled without the on-disk cache
_uncached: list[str] = []


def _jit(**options):
    """``numba.njit(cache=True, **options)``: compiled on first use, then
    loaded from numba's on-disk cache. numba picks the first writable place:
    ``NUMBA_CACHE_DIR`` if set, ``__pycache__`` beside this file, else the
    user cache directory (``$XDG_CACHE_HOME/numba`` or ``~/.cache/numba``),
    so a read-only install (site-packages on a cluster, a container) still
    caches. Where none is writable, the kernels compile at every start, and a
    warning says so (numba itself would fail the import)."""

    def decorate(func):
        try:
            return numba.njit(cache=True, **options)(func)
        except RuntimeError as error:
            if "no locator available" not in str(error):
                raise
            if not _uncached:
                logger.warning(
                    "no writable numba cache directory for %s (set NUMBA_CACHE_DIR): "
                    "its kernels are compiled at every start",
                    __file__,
                )
            _uncached.append(func.__name__)
            return numba.njit(**options)(func)

    return decorate


# Lines are transformed in lanes of this many neighbouring lines.
_BLOCK = 64

# Sites up to this many voxels away are tried by the windowed minimum before
# a lane falls back to the envelope (read at every call). One window step, a
# point looking one voxel further, costs about 1/50 of what the envelope
# spends per point (about 0.35 ns against 16 ns here).
WINDOW_RADIUS = 32

# A lane block whose windowed minimum takes more than this many steps per
# point goes through the envelope instead, so a window that fails costs at
# most about half of the envelope's own time on top of it.
_WINDOW_BUDGET = 24

# After a block gave up on the window, the block at the same place in this
# many following slices goes straight through the envelope.
_WINDOW_RETRY = 8


@_jit()
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


@_jit(inline="always")
def _push_site(q, f, weight, k, pos, val, icept, bnum, bden):  # pragma: no cover - jit
    """Push the parabola ``f + weight * (x - q) ** 2`` onto the envelope
    ``0 .. k`` (popping the ones it hides); return the new top index.

    A site at ``q`` with cost ``f`` is kept as ``pos``, ``val`` and its
    intercept ``f + weight * q**2``; two parabolas meet at
    ``(icept_q - icept_p) / (2 * weight * (q - p))``, kept as the fraction
    ``bnum / bden`` (no division on the loop's critical path).
    """
    cq = f + weight * q * q
    num = -np.inf
    den = 1.0
    while k >= 0:
        num = cq - icept[k]
        den = 2.0 * weight * (q - pos[k])
        if num * bden[k] > bnum[k] * den:  # the intersection lies right of k's start
            break
        k -= 1
    k += 1
    pos[k] = q
    val[k] = f
    icept[k] = cq
    bnum[k] = num if k > 0 else -np.inf
    bden[k] = den if k > 0 else 1.0
    return k


@_jit()
def _envelope_line(
    native, half, use_half, weight, pos, val, icept, bnum, bden, out
):  # pragma: no cover - jit
    """Lower envelope of parabolas (Felzenszwalb & Huttenlocher 2012) on
    one row: costs ``native[j]`` at ``j`` and, if ``use_half``, ``half[j]``
    at ``j + 0.5`` (``inf``: no site);
    ``out[x] = min cost + weight * (x - position) ** 2``, ``inf`` without sites.
    ``pos``, ``val``, ``icept`` hold ``2n`` and ``bnum``, ``bden`` ``2n + 1``
    entries of scratch.
    """
    n = out.shape[0]
    k = -1
    for j in range(n):
        if native[j] != np.inf:
            k = _push_site(float(j), native[j], weight, k, pos, val, icept, bnum, bden)
        if use_half and j + 1 < n and half[j] != np.inf:
            # a half site no lower than both native neighbours at their own
            # positions lies above them everywhere on the grid: skipped
            at_j = half[j] + 0.25 * weight
            if at_j >= native[j] and at_j >= native[j + 1]:
                continue
            k = _push_site(j + 0.5, half[j], weight, k, pos, val, icept, bnum, bden)
    if k < 0:
        for x in range(n):
            out[x] = np.inf
        return
    bnum[k + 1] = np.inf
    bden[k + 1] = 1.0
    t = 0
    for x in range(n):
        while bnum[t + 1] < x * bden[t + 1]:
            t += 1
        d = x - pos[t]
        out[x] = val[t] + weight * d * d


@_jit()
def _windowed_min(
    native, half, has_half, weight, radius, p0, p1, out, q0, failed, inf_row
):  # pragma: no cover - jit
    """Lower envelope along axis 0 of the lanes ``p0 .. p1 - 1`` of ``(n, m)``
    arrays (``native`` costs at ``i``, ``half`` at ``i + 0.5`` if
    ``has_half``), as a windowed minimum into ``out[:, q0 : q0 + p1 - p0]``.

    A point is settled once its minimum is at most the cost of the nearest
    site not yet visited (``weight * r**2`` at distance ``r``); points of
    lanes with ``failed[b] == 0`` are all settled. Lanes with a point not
    settled within ``radius`` get ``failed[b] = 1``. Returns the number of
    failed lanes, or -1 (every lane needs the envelope) once more than half
    of them failed or the search took more than ``_WINDOW_BUDGET`` steps per
    point of a lane; at once if ``radius < 0``.
    """
    n = native.shape[0]
    nb = p1 - p0
    if radius < 0:
        return -1
    for b in range(nb):
        failed[b] = 0
    nfailed = 0
    steps = 0
    for i in range(n):
        row = out[i, q0 : q0 + nb]
        own = native[i, p0:p1]
        nearest = 0.5 if has_half else 1.0
        bound = (weight * nearest) * nearest
        open_points = 0
        for b in range(nb):
            v = own[b]
            row[b] = v
            open_points += (v > bound) & (failed[b] == 0)
        last = max(i, n - 1 - i)  # beyond this distance there is no site
        r = 0
        while open_points > 0 and r < last:
            if r == radius:
                for b in range(nb):
                    if failed[b] == 0 and row[b] > bound:
                        failed[b] = 1
                        nfailed += 1
                if 2 * nfailed > nb:
                    return -1
                break
            r += 1
            steps += 1
            if steps > _WINDOW_BUDGET * n:
                return -1
            c = (weight * r) * r
            up = native[i + r, p0:p1] if i + r < n else inf_row[:nb]
            down = native[i - r, p0:p1] if i - r >= 0 else inf_row[:nb]
            open_points = 0
            if has_half:
                h = r - 0.5
                ch = (weight * h) * h
                half_up = half[i + r - 1, p0:p1] if i + r < n else inf_row[:nb]
                half_down = half[i - r, p0:p1] if i - r >= 0 else inf_row[:nb]
                bound = (weight * (r + 0.5)) * (r + 0.5)
                for b in range(nb):
                    v = min(min(row[b], up[b] + c), down[b] + c)
                    v = min(min(v, half_up[b] + ch), half_down[b] + ch)
                    row[b] = v
                    open_points += (v > bound) & (failed[b] == 0)
            else:
                bound = (weight * (r + 1.0)) * (r + 1.0)
                for b in range(nb):
                    v = min(min(row[b], up[b] + c), down[b] + c)
                    row[b] = v
                    open_points += (v > bound) & (failed[b] == 0)
    return nfailed


@_jit()
def _lane_scratch(n):  # pragma: no cover - jit
    """Scratch buffers of :func:`_transform_lanes` for lines of ``n`` points."""
    half_n = max(n - 1, 1)
    return (
        np.empty(_BLOCK, dtype=np.uint8),  # failed
        np.full(_BLOCK, np.inf),  # inf_row
        np.empty((_BLOCK, n), dtype=np.float64),  # line_native
        np.empty((_BLOCK, half_n), dtype=np.float64),  # line_half
        np.empty((_BLOCK, n), dtype=np.float64),  # line_out
        np.empty(2 * n, dtype=np.float64),  # pos
        np.empty(2 * n, dtype=np.float64),  # val
        np.empty(2 * n, dtype=np.float64),  # icept
        np.empty(2 * n + 1, dtype=np.float64),  # bnum
        np.empty(2 * n + 1, dtype=np.float64),  # bden
    )


@_jit()
def _transform_lanes(
    native, half, has_half, weight, radius, p0, p1, out, q0, scratch
):  # pragma: no cover - jit
    """Exact lower envelope along axis 0 of the lanes ``p0 .. p1 - 1`` of
    ``(n, m)`` arrays (see :func:`_windowed_min`), into ``out[:, q0 : q0 + p1
    - p0]``: the windowed minimum, then :func:`_envelope_line` for the lanes it
    did not settle. Returns whether the window was given up for every lane
    (see :func:`_windowed_min`)."""
    failed, inf_row, line_native, line_half, line_out, pos, val, icept, bnum, bden = scratch
    n = native.shape[0]
    nb = p1 - p0
    result = _windowed_min(native, half, has_half, weight, radius, p0, p1, out, q0, failed, inf_row)
    if result == 0:
        return False
    if result < 0:
        for b in range(nb):
            failed[b] = 1
    for i in range(n):
        for b in range(nb):
            if failed[b]:
                line_native[b, i] = native[i, p0 + b]
    if has_half:
        for i in range(n - 1):
            for b in range(nb):
                if failed[b]:
                    line_half[b, i] = half[i, p0 + b]
    for b in range(nb):
        if failed[b]:
            _envelope_line(
                line_native[b],
                line_half[b],
                has_half,
                weight,
                pos,
                val,
                icept,
                bnum,
                bden,
                line_out[b],
            )
    for i in range(n):
        for b in range(nb):
            if failed[b]:
                out[i, q0 + b] = line_out[b, i]
    return result < 0


@_jit(nogil=True)
def _plane_pass(labels, w1, w2, radius, native, half, first, stop):  # pragma: no cover - jit
    """Slices ``first .. stop - 1`` of ``labels`` ``(n0, n1, n2)``: writes
    ``native[i]``, the squared in-plane distance to the faces normal to axes
    1 and 2, and ``half[i]`` (``i < n0 - 1``), the squared in-plane distance
    to the faces between slices ``i`` and ``i + 1`` (``inf``: none)."""
    n0, n1, n2 = labels.shape
    f2 = np.empty((n1, n2), dtype=np.float64)  # family 2, native along axis 1
    f1 = np.empty((max(n1 - 1, 1), n2), dtype=np.float64)  # family 1, half along axis 1
    f0 = np.empty((n1, n2), dtype=np.float64)  # family 0 of slice i + 0.5
    scratch = _lane_scratch(n1)
    # per family (2 and 1 merged, 0) and lane block: slices left to go
    # straight through the envelope, as the block gave up on the window
    direct = np.zeros((2, -(-n2 // _BLOCK)), dtype=np.int64)
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
        for p0 in range(0, n2, _BLOCK):
            p1 = min(p0 + _BLOCK, n2)
            blk = p0 // _BLOCK
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
                gave_up = _transform_lanes(src, f1, merged, w1, r, p0, p1, dst, p0, scratch)
                if gave_up and r >= 0:
                    direct[family, blk] = _WINDOW_RETRY


@_jit(nogil=True)
def _column_pass(
    labels, native, half, w0, radius, scale, out, first, stop
):  # pragma: no cover - jit
    """Column blocks ``first .. stop - 1`` of ``(n0, m)`` arrays: the lower
    envelope along axis 0 of ``native`` (at ``i``) and ``half`` (at
    ``i + 0.5``), as ``out = ±float32(sqrt(squared)) / scale`` (``-``
    where ``labels == 0``)."""
    n0, m = native.shape
    scratch = _lane_scratch(n0)
    best = np.empty((n0, _BLOCK), dtype=np.float64)  # one block's lanes
    for block in range(first, stop):
        p0 = block * _BLOCK
        p1 = min(p0 + _BLOCK, m)
        _transform_lanes(native, half, n0 > 1, w0, radius, p0, p1, best, 0, scratch)
        for i in range(n0):
            for b in range(p1 - p0):
                d = np.float32(np.sqrt(best[i, b]))
                if labels[i, p0 + b] == 0:
                    d = -d
                out[i, p0 + b] = d / scale


# Arrays of fewer voxels than this are transformed on one thread: below it,
# handing work to threads costs more than it saves. Read at every call.
PARALLEL_MIN_VOXELS = 1 << 16

# Environment variable that sets the number of kernel threads.
THREADS_ENV = "GP_HOTDISTANCE_THREADS"

_executor: tuple[int, int, ThreadPoolExecutor] | None = None


def kernel_threads() -> int:
    """Threads the kernels split large arrays over: ``GP_HOTDISTANCE_THREADS``
    if set, else the cores this process may run on (its CPU affinity, so a
    worker pinned to one core stays on one thread).

    Raises:
        ValueError: ``GP_HOTDISTANCE_THREADS`` is not a positive integer.
    """
    value = os.environ.get(THREADS_ENV)
    if value is not None:
        try:
            threads = int(value)
        except ValueError:
            threads = 0
        if threads < 1:
            raise ValueError(f"{THREADS_ENV} must be a positive integer, got {value!r}")
        return threads
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def _pool(threads: int) -> ThreadPoolExecutor:
    """This process's thread pool of ``threads`` workers (a forked worker,
    or a changed thread count, makes a new one)."""
    global _executor
    if _executor is None or _executor[:2] != (os.getpid(), threads):
        _executor = (os.getpid(), threads, ThreadPoolExecutor(max_workers=threads))
    return _executor[2]


def _split(kernel, items: int, voxels: int, *args) -> None:
    """Run ``kernel(*args, first, stop)`` over ``0 .. items - 1``, split over
    :func:`kernel_threads` threads when ``voxels >= PARALLEL_MIN_VOXELS`` (the
    kernels release the GIL)."""
    threads = min(kernel_threads(), items)
    if threads <= 1 or voxels < PARALLEL_MIN_VOXELS:
        kernel(*args, 0, items)
        return
    edges = np.linspace(0, items, threads + 1).astype(int)
    futures = [
        _pool(threads).submit(kernel, *args, int(a), int(b))
        for a, b in zip(edges[:-1], edges[1:], strict=True)
    ]
    for future in futures:
        future.result()


def _as_3d(channel: npt.NDArray) -> npt.NDArray:
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


def _transform_passes(
    channel: npt.NDArray,
    voxel_size: Sequence[float],
    scale: float,
    out: npt.NDArray[np.float32],
    buffers: tuple[npt.NDArray, npt.NDArray] | None = None,
) -> tuple[Callable[[], None], Callable[[], None]]:
    """The two passes that write ``signed_distance(channel) / scale`` into
    ``out`` (float32, ``channel``'s shape), as callables over shared buffers
    (:func:`_transform_buffers`, new ones if not given): the slice-wise
    in-plane pass, then the column pass along axis 0, which reads what the
    first wrote. A channel without faces is left at infinity."""
    labels = _as_3d(channel)
    n0, n1, n2 = labels.shape
    weights = [float(v) ** 2 for v in voxel_size]
    w0, w1, w2 = (weights[0], 1.0, weights[1]) if channel.ndim == 2 else weights
    native, half = _transform_buffers(channel.shape) if buffers is None else buffers
    blocks = -(-(n1 * n2) // _BLOCK)

    radius = int(WINDOW_RADIUS)

    def plane() -> None:
        _split(_plane_pass, n0, labels.size, labels, w1, w2, radius, native, half)

    def column() -> None:
        _split(
            _column_pass,
            blocks,
            labels.size,
            labels.reshape(n0, -1),
            native.reshape(n0, -1),
            half.reshape(max(n0 - 1, 0), n1 * n2),
            w0,
            radius,
            np.float32(scale),
            out.reshape(n0, n1 * n2),
        )

    return plane, column


def _scaled_signed_distance(
    channel: npt.NDArray,
    voxel_size: Sequence[float],
    scale: float,
    out: npt.NDArray[np.float32],
    buffers: tuple[npt.NDArray, npt.NDArray] | None = None,
) -> None:
    """Write ``signed_distance(channel) / scale`` (float32) into ``out``."""
    channel = np.asarray(channel)
    plane, column = _transform_passes(channel, voxel_size, scale, out, buffers)
    plane()
    column()
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


def tanh_normalize(
    distance: npt.NDArray[np.float32], scale_factor: float
) -> npt.NDArray[np.float32]:
    """``tanh(distance / scale_factor)``, computed in the input's dtype."""
    return np.tanh(distance / scale_factor)


def hot_distance_target(
    gt: npt.NDArray, voxel_size: Sequence[float], scale_factor: float
) -> npt.NDArray[np.float32]:
    """Target ``[hot x C, tanh(d / scale_factor) x C]`` for binary channels
    ``gt`` of shape ``(C, *spatial)``; ``d`` in world units.

    Equal to ``tanh_normalize(signed_distance(gt[i]), scale_factor)`` per
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


# ---------------------------------------------------------------------------
# distance mask
# ---------------------------------------------------------------------------


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
        parallel=kernel_threads() if known.size >= PARALLEL_MIN_VOXELS else 1,
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
        _split_flat(
            _mask_unknowable,
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
        _split_flat(_known_tanh, squared.size, squared, scale, bound_squared, known)
        return known
    known_voxels = _as_3d(np.asarray(mask != 0, dtype=np.uint8))
    n0, n1, n2 = known_voxels.shape
    if mask.ndim == 2:  # (n0, 1, n2): no ring along the added axis
        weights, radii = [weights[0], 0.0, weights[1]], [radii[0], 0, radii[1]]
    plane = np.empty((n0, n1 * n2), dtype=np.float64)
    _split(
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
    _split(
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


@_jit()
def _tanh_table(entries, unit, scale):  # pragma: no cover - jit
    """``tanh(sqrt(k * unit) / scale)`` for ``k < entries``, by
    :func:`_tanh_of_squared` as where it is not tabled."""
    table = np.empty(entries, dtype=np.float64)
    for k in range(entries):
        table[k] = _tanh_of_squared(k * unit, scale)
    return table


@_jit(inline="always")
def _tanh_of_squared(squared, scale):  # pragma: no cover - jit
    """``tanh(sqrt(squared) / scale)``: the one expression every distance-mask
    path uses, so that tabled and computed values agree bit for bit."""
    return np.tanh(np.sqrt(squared) / scale)


@_jit()
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


@_jit(nogil=True)
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


@_jit(nogil=True)
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


@_jit(nogil=True)
def _known_tanh(squared, scale, bound_squared, known, first, stop):  # pragma: no cover - jit
    """``known[v] = tanh(sqrt(squared[v]) / scale)`` for ``first <= v < stop``
    of flat arrays, ``inf`` beyond ``bound_squared`` (where the tanh exceeds
    the threshold, so it is never needed)."""
    for v in range(first, stop):
        b2 = np.float64(squared[v])
        known[v] = np.inf if b2 > bound_squared else _tanh_of_squared(b2, scale)


@_jit(nogil=True)
def _mask_unknowable(
    t, known, mask, epsilon, threshold, out, first, stop
):  # pragma: no cover - jit
    """``out[v] = 0`` where ``min(|t[v]| + epsilon, threshold) >= known[v]``,
    else ``mask[v]``, for ``first <= v < stop`` of flat arrays (the left side
    in the dtype of ``t``)."""
    for v in range(first, stop):
        out[v] = 0 if min(abs(t[v]) + epsilon, threshold) >= known[v] else mask[v]


# ---------------------------------------------------------------------------
# class balancing
# ---------------------------------------------------------------------------


def new_moving_counts(channels: int) -> MovingCounts:
    """Fresh moving counts: one ``{class: (num, den)}`` dict per channel."""
    return [{0: (0, 1), 1: (0, 1)} for _ in range(channels)]


def _split_flat(kernel, size: int, *args) -> list:
    """Run ``kernel(*args, first, stop)`` over ``0 .. size - 1`` in contiguous
    chunks, one per thread when ``size >= PARALLEL_MIN_VOXELS``; return the
    results in order."""
    threads = min(kernel_threads(), max(size, 1))
    if threads <= 1 or size < PARALLEL_MIN_VOXELS:
        return [kernel(*args, 0, size)]
    edges = np.linspace(0, size, threads + 1).astype(int)
    futures = [
        _pool(threads).submit(kernel, *args, int(a), int(b))
        for a, b in zip(edges[:-1], edges[1:], strict=True)
    ]
    return [future.result() for future in futures]


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
        parts = _split_flat(_masked_counts, labels_c.size, labels_c, scale_c)
        masked_in = float(sum(p[0] for p in parts))
        known, foreground = (int(sum(p[i] for p in parts)) for i in (1, 2))
        counts, w0, w1 = _update_counts(
            moving_counts[c], masked_in, known, foreground, clipmin, clipmax
        )
        _split_flat(
            _apply_class_weights,
            labels_c.size,
            labels_c,
            scale_c,
            np.float32(w0),
            np.float32(w1),
            weights[c].reshape(-1),
        )
        counts_out.append(counts)
    return weights, counts_out


@_jit(nogil=True)
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


@_jit(nogil=True)
def _apply_class_weights(labels, scale, w0, w1, out, first, stop):  # pragma: no cover - jit
    """``out[v] = scale[v] * (w1 if labels[v] != 0 else w0)`` for
    ``first <= v < stop`` of flat arrays."""
    for v in range(first, stop):
        out[v] = scale[v] * (w1 if labels[v] != 0 else w0)


@_jit(nogil=True)
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


@_jit(nogil=True)
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
        parts = _split_flat(_masked_counts_pair, labels_c.size, labels_c, mask_c, dmask_c)
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
        _split_flat(
            _apply_class_weights_pair,
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


def no_boundary_extent(shape: Sequence[int], voxel_size: Sequence[float]) -> float:
    """``min(shape[a] * voxel_size[a] / 2)``: the distance given to a channel
    without any boundary in the crop."""
    return min(s * float(v) / 2 for s, v in zip(shape, voxel_size, strict=True))


__all__ = [
    "MovingCounts",
    "balance_weights",
    "boundary_distance",
    "broadcast_mask",
    "check_binary",
    "check_dims",
    "check_mask",
    "check_moving_counts",
    "check_not_empty",
    "check_voxel_size",
    "distance_mask",
    "hot_distance_target",
    "hot_distance_weights",
    "is_integer",
    "is_real",
    "kernel_threads",
    "new_moving_counts",
    "no_boundary_extent",
    "signed_distance",
    "tanh_normalize",
    "to_channels",
]
