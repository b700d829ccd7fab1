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
distance on the native grid.
"""

from __future__ import annotations

import math
import numbers
import os
from collections.abc import Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor

import edt
import numba
import numpy as np
import numpy.typing as npt

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
    if kind == "b":
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


# Rows along the transformed axis are gathered in blocks of this many into
# contiguous scratch buffers, so that strided reads stay cache friendly.
_BLOCK = 16


@numba.njit(cache=True)
def _block_rows(r0, r1, post, ii, cc):  # pragma: no cover - jit
    """Write the indices ``(i, k)`` of rows ``r0 .. r1 - 1`` of a
    ``(pre, n, post)`` array into ``ii`` and ``cc``."""
    for r in range(r0, r1):
        ii[r - r0] = r // post
        cc[r - r0] = r % post


@numba.njit(cache=True)
def _scan_line(sites, half, weight, out):  # pragma: no cover - jit
    """``out[x] = weight * (x - nearest site) ** 2`` on one row; sites at
    ``j + 0.5`` if ``half`` else at ``j``; ``inf`` without sites."""
    n = out.shape[0]
    m = sites.shape[0]
    shift = 0.5 if half else 0.0
    last = -np.inf
    for x in range(n):
        j = x - 1 if half else x
        if 0 <= j < m and sites[j]:
            last = j + shift
        out[x] = x - last
    nxt = np.inf
    for x in range(n - 1, -1, -1):
        if x < m and sites[x]:
            nxt = x + shift
        d = min(out[x], nxt - x)
        out[x] = weight * d * d


@numba.njit(cache=True)
def _envelope_line(
    native, half, use_native, use_half, weight, pos, val, icept, bound, out
):  # pragma: no cover - jit
    """Lower envelope of parabolas (Felzenszwalb & Huttenlocher 2012) on
    one row: costs ``native[j]`` at ``j`` and ``half[j]`` at ``j + 0.5``
    (``inf``: no site); ``out[x] = min cost + weight * (x - position) ** 2``.

    A site at ``q`` with cost ``f`` is kept as ``pos``, ``val`` and its
    intercept ``f + weight * q**2``; two parabolas meet at
    ``(icept_q - icept_p) / (2 * weight * (q - p))``.
    """
    n = out.shape[0]
    k = -1
    num = 0.0
    den = 1.0
    for j2 in range(2 * n - 1):
        j = j2 // 2
        if j2 % 2 == 0:
            if not use_native:
                continue
            fj = native[j]
        else:
            if not use_half:
                continue
            fj = half[j]
        if fj == np.inf:
            continue
        q = 0.5 * j2
        cq = fj + weight * q * q
        while k >= 0:
            num = cq - icept[k]
            den = 2.0 * weight * (q - pos[k])
            if num > bound[k] * den:  # the intersection lies right of bound[k]
                break
            k -= 1
        k += 1
        pos[k] = q
        val[k] = fj
        icept[k] = cq
        bound[k] = num / den if k > 0 else -np.inf
        bound[k + 1] = np.inf
    if k < 0:
        for x in range(n):
            out[x] = np.inf
        return
    t = 0
    for x in range(n):
        while bound[t + 1] < x:
            t += 1
        d = x - pos[t]
        out[x] = val[t] + weight * d * d


@numba.njit(nogil=True, cache=True)
def _nearest_site(sites, half, weight, out, first_block, stop_block):  # pragma: no cover - jit
    """Squared distance along axis 1 of ``(pre, n, post)`` arrays to the
    nearest True entry of ``sites`` (``(pre, m, post)``, site ``j`` at
    ``j + 0.5`` if ``half`` else at ``j``), times ``weight``; for the rows
    of blocks ``first_block .. stop_block - 1``."""
    pre, m, post = sites.shape
    n = out.shape[1]
    rows = pre * post
    ii = np.empty(_BLOCK, dtype=np.int64)
    cc = np.empty(_BLOCK, dtype=np.int64)
    line_in = np.empty((_BLOCK, max(m, 1)), dtype=np.bool_)
    line_out = np.empty((_BLOCK, n), dtype=np.float64)
    for block in range(first_block, stop_block):
        r0 = block * _BLOCK
        r1 = min(r0 + _BLOCK, rows)
        _block_rows(r0, r1, post, ii, cc)
        for j in range(m):
            for b in range(r1 - r0):
                line_in[b, j] = sites[ii[b], j, cc[b]]
        for b in range(r1 - r0):
            _scan_line(line_in[b, :m], half, weight, line_out[b])
        for x in range(n):
            for b in range(r1 - r0):
                out[ii[b], x, cc[b]] = line_out[b, x]


@numba.njit(nogil=True, cache=True)
def _lower_envelope(
    native, half, use_native, use_half, weight, out, first_block, stop_block
):  # pragma: no cover - jit
    """Squared-distance min-plus transform along axis 1 of ``(pre, n, post)``
    arrays: costs ``native[i, j, k]`` at ``j`` and ``half[i, j, k]`` at
    ``j + 0.5`` (each used only if its flag is set; ``inf``: no site);
    ``out[i, x, k] = min cost + weight * (x - position) ** 2``, ``inf`` for a
    row without sites; for the rows of blocks ``first_block .. stop_block - 1``."""
    pre, n, post = out.shape
    rows = pre * post
    ii = np.empty(_BLOCK, dtype=np.int64)
    cc = np.empty(_BLOCK, dtype=np.int64)
    line_native = np.empty((_BLOCK, n), dtype=np.float64)
    line_half = np.empty((_BLOCK, max(n - 1, 1)), dtype=np.float64)
    line_out = np.empty((_BLOCK, n), dtype=np.float64)
    pos = np.empty(2 * n, dtype=np.float64)
    val = np.empty(2 * n, dtype=np.float64)
    icept = np.empty(2 * n, dtype=np.float64)
    bound = np.empty(2 * n + 1, dtype=np.float64)
    for block in range(first_block, stop_block):
        r0 = block * _BLOCK
        r1 = min(r0 + _BLOCK, rows)
        _block_rows(r0, r1, post, ii, cc)
        if use_native:
            for x in range(n):
                for b in range(r1 - r0):
                    line_native[b, x] = native[ii[b], x, cc[b]]
        if use_half:
            for j in range(n - 1):
                for b in range(r1 - r0):
                    line_half[b, j] = half[ii[b], j, cc[b]]
        for b in range(r1 - r0):
            _envelope_line(
                line_native[b],
                line_half[b],
                use_native,
                use_half,
                weight,
                pos,
                val,
                icept,
                bound,
                line_out[b],
            )
        for x in range(n):
            for b in range(r1 - r0):
                out[ii[b], x, cc[b]] = line_out[b, x]


# Arrays of fewer voxels than this are transformed on one thread: below it,
# handing blocks to threads costs more than it saves.
PARALLEL_MIN_VOXELS = 1 << 16

_executor: tuple[int, ThreadPoolExecutor] | None = None


def _threads() -> int:
    """Threads for the kernels: the cores this process may use."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def _pool() -> ThreadPoolExecutor:
    """This process's thread pool (a forked worker makes its own)."""
    global _executor
    if _executor is None or _executor[0] != os.getpid():
        _executor = (os.getpid(), ThreadPoolExecutor(max_workers=_threads()))
    return _executor[1]


def _run_blocks(kernel, out: np.ndarray, *args) -> None:
    """Run ``kernel(*args, out, first_block, stop_block)`` over all row
    blocks of ``out`` (``(pre, n, post)``), split across threads when large
    (the kernels release the GIL)."""
    pre, n, post = out.shape
    blocks = -(-(pre * post) // _BLOCK)
    threads = min(_threads(), blocks)
    if threads <= 1 or out.size < PARALLEL_MIN_VOXELS:
        kernel(*args, out, 0, blocks)
        return
    edges = np.linspace(0, blocks, threads + 1).astype(int)
    futures = [
        _pool().submit(kernel, *args, out, int(a), int(b))
        for a, b in zip(edges[:-1], edges[1:], strict=True)
    ]
    for future in futures:
        future.result()


def _rows(array: np.ndarray, axis: int) -> np.ndarray:
    """View a C-contiguous array as ``(pre, n, post)`` around ``axis``."""
    shape = array.shape
    pre = int(np.prod(shape[:axis], dtype=np.int64))
    post = int(np.prod(shape[axis + 1 :], dtype=np.int64))
    return array.reshape(pre, shape[axis], post)


def _native_shape(shape: tuple[int, ...], axis: int, n: int) -> tuple[int, ...]:
    return shape[:axis] + (n,) + shape[axis + 1 :]


def face_sites(channel: npt.NDArray) -> list[npt.NDArray[np.bool_]]:
    """One boolean array per axis ``a``, of shape ``n_a - 1`` along ``a``:
    True where voxels ``i`` and ``i + 1`` along ``a`` have different labels."""
    sites = []
    for axis in range(channel.ndim):
        lo = [slice(None)] * channel.ndim
        hi = [slice(None)] * channel.ndim
        lo[axis] = slice(0, -1)
        hi[axis] = slice(1, None)
        sites.append(np.ascontiguousarray(channel[tuple(lo)] != channel[tuple(hi)]))
    return sites


def squared_face_distance(
    channel: npt.NDArray, voxel_size: Sequence[float]
) -> npt.NDArray[np.float64]:
    """Squared world distance from every voxel centre to the nearest face
    centre between differently labelled neighbours (``inf`` if none).

    Exact: equals the doubled-grid EDT sampled at the voxel centres. Faces
    normal to axis ``a`` sit on a grid shifted by half a voxel along ``a``;
    axis by axis, their costs are carried to the native grid (merging them
    with the native costs there) while the others stay on their own grids.
    """
    dims = channel.ndim
    weights = [float(v) ** 2 for v in voxel_size]
    sites = face_sites(channel)
    # first axis: binary sites, nearest-site scan
    n = channel.shape[0]
    native = np.empty(channel.shape, dtype=np.float64)
    _run_blocks(_nearest_site, _rows(native, 0), _rows(sites[0], 0), True, weights[0])
    pending: list[np.ndarray | None] = [None]
    for other in range(1, dims):
        out = np.empty(_native_shape(sites[other].shape, 0, n), dtype=np.float64)
        _run_blocks(_nearest_site, _rows(out, 0), _rows(sites[other], 0), False, weights[0])
        pending.append(out)
    empty = np.empty((1, 0, 1), dtype=np.float64)
    for axis in range(1, dims):
        n = channel.shape[axis]
        half = pending[axis]
        pending[axis] = None
        merged = np.empty(channel.shape, dtype=np.float64)
        _run_blocks(
            _lower_envelope,
            _rows(merged, axis),
            _rows(native, axis),
            _rows(half, axis),
            True,
            n > 1,
            weights[axis],
        )
        native = merged
        for other in range(axis + 1, dims):
            costs = pending[other]
            out = np.empty(_native_shape(costs.shape, axis, n), dtype=np.float64)
            _run_blocks(
                _lower_envelope,
                _rows(out, axis),
                _rows(costs, axis),
                empty,
                True,
                False,
                weights[axis],
            )
            pending[other] = out
    return native


def signed_distance(channel: npt.NDArray, voxel_size: Sequence[float]) -> npt.NDArray[np.float32]:
    """Signed world distance of every voxel centre to the nearest label face.

    Positive inside (``channel != 0``), negative outside. A channel without
    any face gets ``±min(shape[a] * voxel_size[a] / 2)``: ``+`` if all
    foreground, ``-`` if all background.
    """
    squared = squared_face_distance(channel, voxel_size)
    inside = channel != 0
    if np.isinf(squared.flat[0]):
        sign = 1.0 if inside.flat[0] else -1.0
        return np.full(
            channel.shape, sign * no_boundary_extent(channel.shape, voxel_size), dtype=np.float32
        )
    distance = np.sqrt(squared).astype(np.float32)
    np.negative(distance, out=distance, where=~inside)
    return distance


def tanh_normalize(
    distance: npt.NDArray[np.float32], scale_factor: float
) -> npt.NDArray[np.float32]:
    """``tanh(distance / scale_factor)``, computed in the input's dtype."""
    return np.tanh(distance / scale_factor)


def hot_distance_target(
    gt: npt.NDArray, voxel_size: Sequence[float], scale_factor: float
) -> npt.NDArray[np.float32]:
    """Target ``[hot x C, tanh(d / scale_factor) x C]`` for binary channels
    ``gt`` of shape ``(C, *spatial)``; ``d`` in world units."""
    voxel_size = check_voxel_size(voxel_size, gt.ndim - 1)
    channels = gt.shape[0]
    target = np.empty((2 * channels,) + gt.shape[1:], dtype=np.float32)
    target[:channels] = gt
    for i in range(channels):
        target[channels + i] = tanh_normalize(signed_distance(gt[i], voxel_size), scale_factor)
    return target


# ---------------------------------------------------------------------------
# distance mask
# ---------------------------------------------------------------------------


def boundary_distance(mask: npt.NDArray, voxel_size: Sequence[float]) -> npt.NDArray[np.float64]:
    """World distance from every voxel to the nearest unknown voxel
    (``mask == 0``), the ring just outside the array counting as unknown."""
    known = np.ascontiguousarray(mask != 0, dtype=np.uint8)
    squared = edt.edtsq(
        known,
        anisotropy=tuple(float(v) for v in voxel_size),
        black_border=True,
        parallel=_threads() if known.size >= PARALLEL_MIN_VOXELS else 1,
    )
    return np.sqrt(squared.astype(np.float64))


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
    out = np.array(mask, copy=True)
    # epsilon and threshold in the distances' dtype, as numpy would cast them
    as_dtype = tanh_distances.dtype.type
    known = None
    for i in range(tanh_distances.shape[0]):
        if known is None or not shared:
            known = np.tanh(boundary_distance(mask[i], voxel_size) / scale_factor)
        _mask_unknowable(
            np.ascontiguousarray(tanh_distances[i]).reshape(-1),
            known.reshape(-1),
            as_dtype(epsilon),
            as_dtype(threshold),
            out[i].reshape(-1),
        )
    return out


@numba.njit(nogil=True, cache=True)
def _mask_unknowable(t, known, epsilon, threshold, out):  # pragma: no cover - jit
    """``out[v] = 0`` where ``min(|t[v]| + epsilon, threshold) >= known[v]``
    (flat arrays; arithmetic in the dtype of ``t``)."""
    for v in range(t.size):
        if min(abs(t[v]) + epsilon, threshold) >= known[v]:
            out[v] = 0


# ---------------------------------------------------------------------------
# class balancing
# ---------------------------------------------------------------------------


def new_moving_counts(channels: int) -> MovingCounts:
    """Fresh moving counts: one ``{class: (num, den)}`` dict per channel."""
    return [{0: (0, 1), 1: (0, 1)} for _ in range(channels)]


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
        labels_c = np.ascontiguousarray(labels[c]).reshape(-1)
        scale_c = np.ascontiguousarray(scale[c]).reshape(-1)
        masked_in, n_known, n_fg = _masked_counts(labels_c, scale_c)
        masked_in, n_fg = float(masked_in), int(n_fg)
        n_bg = int(n_known) - n_fg
        counts = {key: (num, den + masked_in) for key, (num, den) in moving_counts[c].items()}
        w = np.zeros(2, dtype=np.float64)
        for class_id, count in ((0, n_bg), (1, n_fg)):
            if count == 0:
                continue
            num, den = counts[class_id]
            counts[class_id] = (num + count, den)
            frac = min(max((num + count) / den, clipmin), clipmax)
            w[class_id] = 1.0 / (2.0 * frac)
        _apply_class_weights(
            labels_c, scale_c, np.float32(w[0]), np.float32(w[1]), weights[c].reshape(-1)
        )
        counts_out.append(counts)
    return weights, counts_out


@numba.njit(nogil=True, cache=True)
def _masked_counts(labels, scale):  # pragma: no cover - jit
    """``(sum(scale), #(scale != 0), #(scale != 0 and labels != 0))`` of flat arrays."""
    total = 0.0
    known = 0
    foreground = 0
    for v in range(labels.size):
        s = scale[v]
        if s != 0:
            total += s
            known += 1
            if labels[v] != 0:
                foreground += 1
    return total, known, foreground


@numba.njit(nogil=True, cache=True)
def _apply_class_weights(labels, scale, w0, w1, out):  # pragma: no cover - jit
    """``out[v] = scale[v] * (w1 if labels[v] != 0 else w0)`` on flat arrays."""
    for v in range(labels.size):
        out[v] = scale[v] * (w1 if labels[v] != 0 else w0)


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
    """
    channels = gt.shape[0]
    mask = broadcast_mask(mask, gt.shape)
    if moving_counts is None:
        moving_counts = new_moving_counts(2 * channels)
    moving_counts = check_moving_counts(moving_counts, 2 * channels)
    weights = np.empty((2 * channels,) + gt.shape[1:], dtype=np.float32)
    _, hot_counts = balance_weights(
        gt, mask, moving_counts[:channels], clipmin, clipmax, out=weights[:channels]
    )
    if distance_mask is None:
        distance_scale = mask
    else:
        distance_scale = np.asarray(mask, dtype=np.float32) * broadcast_mask(
            distance_mask, gt.shape, name="distance_mask"
        )
    _, dist_counts = balance_weights(
        gt, distance_scale, moving_counts[channels:], clipmin, clipmax, out=weights[channels:]
    )
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
    "face_sites",
    "hot_distance_target",
    "hot_distance_weights",
    "is_integer",
    "is_real",
    "new_moving_counts",
    "no_boundary_extent",
    "signed_distance",
    "squared_face_distance",
    "tanh_normalize",
    "to_channels",
]
