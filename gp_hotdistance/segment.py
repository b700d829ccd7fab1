"""From a hot-distance prediction to per-class instances (uint64) or masks (0/1).

A model's ``2C`` output is ``[hot logits x C, tanh(d / scale_factor) x C]``.
The predicted distance is ``d = scale_factor * atanh(t)`` (world units,
positive inside). Per class:

- **mask**: ``d > 0`` (``mask_threshold=None``) or ``sigmoid(hot) > mask_threshold``;
- semantic classes: the mask as 0/1 (uint8);
- instance classes (uint64 ids, 0 background):

  1. *seeds*: mask voxels with ``d > seed_level`` (world units);
  2. *basins* (watershed by steepest ascent): every other mask voxel follows
     its highest mask neighbour (full connectivity; first in a fixed
     neighbour order on ties) while that neighbour is strictly higher; the
     connected seeds, or connected neighbour-less tops (local maxima below
     the seed level), where a path ends make one basin with it;
  3. *flooding*: a basin without a seed joins the neighbouring basin across
     its highest pass (the largest ``min(d_u, d_v)`` over touching mask
     voxels ``u``, ``v``; ties: the basin whose first voxel comes first);
     seeded basins never join each other, so touching objects whose
     distance maxima are separate seeds stay separate instances;
  4. objects smaller than ``min_size`` (world volume) are removed; ids are
     ``1..N`` in the order of each object's first voxel (C order).

Every step decides from a voxel and its 1-voxel neighbourhood except the
joins of step 3, which act on a small graph of basins. So a volume cut into
blocks gives exactly the same objects (:func:`block_fragments` per block,
read with a :data:`HALO`-voxel border, then :func:`merge_fragments` over all
blocks): ``pipelines.blockwise segment`` relies on this, see
``docs/blockwise.md``.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import cc3d
import numpy as np
import numpy.typing as npt
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components
from scipy.special import expit

HALO = 2
"""Border (voxels) a block reads around itself: one to find its border voxels'
neighbours' tops, one more for their neighbours."""

DEFAULT_INSTANCE_CLASSES = (
    "nuc", "vim", "ves", "endo", "lyso", "ld", "perox", "mito", "np", "mt", "cell", "instance",
)  # fmt: skip
"""The CellMap challenge's instance classes; every other class is semantic."""

_TANH_LIMIT = 1.0 - 1e-6  # keeps atanh finite for saturated predictions


@dataclass(frozen=True)
class SegmentParameters:
    """How a prediction becomes instances.

    Attributes:
        seed_level: predicted distance (world units) above which a voxel seeds an object.
        mask_threshold: ``None``: a voxel is in the object where ``d > 0``;
            else where ``sigmoid(hot) > mask_threshold`` (in ``(0, 1)``).
        min_size: smallest object kept, world volume (e.g. nm^3; area in 2-D).
    """

    seed_level: float
    mask_threshold: float | None = None
    min_size: float = 0.0

    def __post_init__(self) -> None:
        if not np.isfinite(self.seed_level) or self.seed_level < 0:
            raise ValueError(f"seed_level must be finite and >= 0, got {self.seed_level!r}")
        if self.mask_threshold is not None and not 0.0 < self.mask_threshold < 1.0:
            raise ValueError(
                f"mask_threshold must be in (0, 1) or None, got {self.mask_threshold!r}"
            )
        if not np.isfinite(self.min_size) or self.min_size < 0:
            raise ValueError(f"min_size must be finite and >= 0, got {self.min_size!r}")

    def to_dict(self) -> dict[str, float | None]:
        return {
            "seed_level": float(self.seed_level),
            "mask_threshold": None if self.mask_threshold is None else float(self.mask_threshold),
            "min_size": float(self.min_size),
        }

    def used(self, instance: bool) -> dict[str, float | None]:
        """The entries of :meth:`to_dict` that segment a class: all for an instance
        class, ``mask_threshold`` alone for a semantic one (seeds and sizes are unused)."""
        values = self.to_dict()
        return values if instance else {"mask_threshold": values["mask_threshold"]}


def default_parameters(scale_factor: float) -> SegmentParameters:
    """Untuned parameters: seeds a quarter ``scale_factor`` inside, the mask
    ``sigmoid(hot) > 0.5`` (the plain segmentation), no size limit."""
    return SegmentParameters(seed_level=0.25 * float(scale_factor), mask_threshold=0.5)


def predicted_distance(
    tanh_distance: npt.ArrayLike, scale_factor: float
) -> npt.NDArray[np.float32]:
    """``scale_factor * atanh(t)`` in world units (``t`` clipped just inside ``(-1, 1)``)."""
    t = np.clip(np.asarray(tanh_distance, dtype=np.float64), -_TANH_LIMIT, _TANH_LIMIT)
    return (scale_factor * np.arctanh(t)).astype(np.float32)


def class_masks(prediction: npt.ArrayLike, mask_threshold: float | None) -> npt.NDArray[np.bool_]:
    """The object mask ``(C, *spatial)`` of a ``2C`` prediction (see module docs)."""
    prediction = np.asarray(prediction)
    if prediction.ndim < 3 or prediction.shape[0] % 2:
        raise ValueError(f"prediction must have shape (2C, *spatial), got {prediction.shape}")
    classes = prediction.shape[0] // 2
    if mask_threshold is None:
        return prediction[classes:] > 0
    return expit(prediction[:classes].astype(np.float32)) > mask_threshold


def segment_prediction(
    prediction: npt.ArrayLike,
    channels: Sequence[str],
    scale_factor: float,
    voxel_size: Sequence[float],
    parameters: SegmentParameters | Mapping[str, SegmentParameters],
    instance_classes: Sequence[str] = DEFAULT_INSTANCE_CLASSES,
) -> dict[str, npt.NDArray]:
    """Per class of ``channels``: uint64 instances (``instance_classes``) or a
    uint8 0/1 mask, from a ``2C`` prediction ``(2C, *spatial)``.

    ``parameters`` is one :class:`SegmentParameters` for every class or a
    mapping class -> parameters.

    Raises:
        ValueError: the prediction's channel count is not ``2 * len(channels)``.
    """
    prediction = np.asarray(prediction)
    if prediction.ndim < 3 or prediction.shape[0] != 2 * len(channels):
        raise ValueError(
            f"prediction of shape {prediction.shape} does not have 2 x {len(channels)} channels "
            f"for {list(channels)}"
        )
    classes = len(channels)
    out = {}
    for i, name in enumerate(channels):
        params = parameters[name] if isinstance(parameters, Mapping) else parameters
        out[name] = segment_class(
            prediction[i], prediction[classes + i], scale_factor, voxel_size, params,
            instance=name in instance_classes,
        )  # fmt: skip
    return out


def segment_class(
    hot: npt.ArrayLike,
    tanh_distance: npt.ArrayLike,
    scale_factor: float,
    voxel_size: Sequence[float],
    parameters: SegmentParameters,
    instance: bool,
) -> npt.NDArray:
    """One class of a prediction (its hot logits and tanh distances):
    uint64 instances if ``instance``, else a uint8 0/1 mask."""
    mask = class_masks(np.stack([hot, tanh_distance]), parameters.mask_threshold)[0]
    if not instance:
        return mask.astype(np.uint8)
    distance = predicted_distance(tanh_distance, scale_factor)
    return instances(distance, mask, voxel_size, parameters.seed_level, parameters.min_size)


def instances(
    distance: npt.ArrayLike,
    mask: npt.ArrayLike,
    voxel_size: Sequence[float],
    seed_level: float,
    min_size: float = 0.0,
) -> npt.NDArray[np.uint64]:
    """Instances (uint64, ``1..N``) of one class from its predicted distance
    (world units) inside ``mask``; the whole volume as one block.

    Raises:
        ValueError: shapes differ or ``voxel_size`` has the wrong length.
    """
    distance = np.asarray(distance, dtype=np.float32)
    mask = np.asarray(mask, dtype=bool)
    if distance.shape != mask.shape or len(voxel_size) != distance.ndim:
        raise ValueError(
            f"distance {distance.shape}, mask {mask.shape} and voxel size {tuple(voxel_size)} "
            "do not match"
        )
    pad = [(HALO, HALO)] * distance.ndim
    fragments = block_fragments(
        np.pad(distance, pad), np.pad(mask, pad), seed_level, (0,) * distance.ndim,
        distance.shape, id_offset=0,
    )  # fmt: skip
    table = merge_fragments([fragments], {}, float(np.prod(voxel_size)), min_size)
    return relabel(fragments.labels, table)


@dataclass
class Fragments:
    """One block's basins before the joins (:func:`block_fragments`).

    ``labels``: fragment ids of the block's voxels (0 outside the mask), unique
    in the volume (``id_offset + 1..n``). Per fragment (aligned with ``ids``):
    ``sizes`` (voxels), ``seeded``, ``first`` (global C-order index of its
    first voxel). ``merges``: must-join pairs ``(id, global index)`` with a
    voxel of another block (a path continuing there, touching tops).
    ``passes``: ``(id, id or global index, height)`` candidate passes, inside
    the block (``inner``) and to other blocks' voxels (``outer``).
    """

    labels: npt.NDArray[np.uint64]
    ids: npt.NDArray[np.uint64]
    sizes: npt.NDArray[np.int64]
    seeded: npt.NDArray[np.bool_]
    first: npt.NDArray[np.int64]
    merges: npt.NDArray[np.int64] = field(default_factory=lambda: np.zeros((0, 2), np.int64))
    inner: npt.NDArray[np.int64] = field(default_factory=lambda: np.zeros((0, 2), np.int64))
    inner_height: npt.NDArray[np.float32] = field(default_factory=lambda: np.zeros(0, np.float32))
    outer_ids: npt.NDArray[np.int64] = field(default_factory=lambda: np.zeros(0, np.int64))
    outer_index: npt.NDArray[np.int64] = field(default_factory=lambda: np.zeros(0, np.int64))
    outer_height: npt.NDArray[np.float32] = field(default_factory=lambda: np.zeros(0, np.float32))


def _offsets(ndim: int) -> list[tuple[int, ...]]:
    """The ``3**ndim - 1`` neighbour offsets in a fixed order."""
    return [o for o in itertools.product((-1, 0, 1), repeat=ndim) if any(o)]


def _view(array: npt.NDArray, offset: Sequence[int], margin: int) -> npt.NDArray:
    """``array`` without ``margin`` voxels per side, shifted by ``offset``."""
    return array[
        tuple(slice(margin + o, array.shape[a] - margin + o) for a, o in enumerate(offset))
    ]


def block_fragments(
    distance: npt.NDArray[np.float32],
    mask: npt.NDArray[np.bool_],
    seed_level: float,
    origin: Sequence[int],
    volume_shape: Sequence[int],
    id_offset: int,
) -> Fragments:
    """Fragments of a block read with a :data:`HALO`-voxel border.

    ``distance``/``mask`` cover the block plus the border (mask False outside
    the volume); ``origin`` is the block's first voxel and ``volume_shape``
    the volume's shape, both in voxels.
    """
    ndim = distance.ndim
    offsets = np.array(_offsets(ndim), dtype=np.int64)
    height = np.where(mask, distance, -np.inf).astype(np.float32)
    ring_shape = tuple(s - 2 for s in height.shape)  # the block + 1 ring
    ring_mask = mask[(slice(1, -1),) * ndim]
    ring = height[(slice(1, -1),) * ndim]
    # over the mask voxels of the block + 1 ring: highest neighbour and its direction
    ring_voxels = np.flatnonzero(ring_mask)
    read_strides = np.array([int(np.prod(height.shape[a + 1 :])) for a in range(ndim)], np.int64)
    in_read = (np.stack(np.unravel_index(ring_voxels, ring_shape), 1) + 1) @ read_strides
    flat_height = height.ravel()
    own = flat_height[in_read]
    best = np.full(ring_voxels.size, -np.inf, np.float32)
    direction = np.full(ring_voxels.size, -1, np.int8)
    higher = np.empty(ring_voxels.size, bool)
    for k, delta in enumerate(offsets @ read_strides):
        neighbour = flat_height[in_read + delta]
        np.greater(neighbour, best, out=higher)
        np.copyto(best, neighbour, where=higher)
        np.copyto(direction, k, where=higher)
    top = np.zeros(ring_shape, bool)  # seeds and neighbour-less tops
    top.ravel()[ring_voxels] = (own > seed_level) | (best <= own)
    ring_direction = np.full(ring_shape, -1, np.int8)
    ring_direction.ravel()[ring_voxels] = direction
    inside = (slice(1, -1),) * ndim
    block_shape = tuple(s - 2 * HALO for s in distance.shape)
    block_mask, block_top, block_height = ring_mask[inside], top[inside], ring[inside]
    connectivity = 26 if ndim == 3 else 8
    tops = cc3d.connected_components(block_top, connectivity=connectivity).astype(np.int64)
    n_tops = int(tops.max())
    seeded_top = np.zeros(n_tops + 1, bool)
    seeded_top[tops[block_mask & (block_height > seed_level)]] = True
    # paths inside the block (over its mask voxels, numbered 0..M-1): each
    # voxel that is no top points at its highest neighbour
    size = int(np.prod(block_shape))
    strides = np.array([int(np.prod(block_shape[a + 1 :])) for a in range(ndim)], np.int64)
    global_strides = np.array([int(np.prod(volume_shape[a + 1 :])) for a in range(ndim)], np.int64)
    origin = np.asarray(origin, np.int64)
    voxels = np.flatnonzero(block_mask)
    number = np.full(size, -1, np.int64)
    number[voxels] = np.arange(voxels.size)
    parent = np.arange(voxels.size, dtype=np.int64)
    follows = np.flatnonzero(~block_top.ravel()[voxels])  # numbers of the voxels that follow
    step = offsets[ring_direction[inside].ravel()[voxels[follows]]]
    target = np.stack(np.unravel_index(voxels[follows], block_shape), 1) + step
    within = np.all((target >= 0) & (target < np.array(block_shape)), axis=1)
    parent[follows[within]] = number[target[within] @ strides]
    exits = follows[~within]  # a path leaving the block ends at its last voxel inside
    exit_target = (target[~within] + origin) @ global_strides
    while True:
        jumped = parent[parent]
        if np.array_equal(jumped, parent):
            break
        parent = jumped
    terminal = tops.ravel()[voxels]
    terminal[exits] = n_tops + 1 + np.arange(exits.size)
    flat_labels = np.zeros(size, np.int64)
    flat_labels[voxels] = terminal[parent]
    local_labels = flat_labels.reshape(block_shape)
    n = n_tops + exits.size
    sizes = np.bincount(flat_labels[voxels], minlength=n + 1)
    first_local = np.zeros(n + 1, np.int64)
    first_local[flat_labels[voxels[::-1]]] = voxels[::-1]  # the last write, the first voxel, wins
    ids = np.flatnonzero(sizes[1:]) + 1
    first = (np.stack(np.unravel_index(first_local[ids], block_shape), 1) + origin) @ global_strides
    seeded = np.zeros(n + 1, bool)
    seeded[: n_tops + 1] = seeded_top
    labels = np.where(local_labels > 0, local_labels + id_offset, 0).astype(np.uint64)
    # joins with other blocks: paths that leave, and tops touching tops across the border
    merges = [np.stack([flat_labels[voxels[exits]] + id_offset, exit_target], 1)]
    outer_ids, outer_index, outer_height = [], [], []
    shell = np.zeros(block_shape, bool)
    for axis in range(ndim):
        shell[(slice(None),) * axis + (0,)] = True
        shell[(slice(None),) * axis + (-1,)] = True
    shell_flat = np.flatnonzero(shell & block_mask)
    shell_coords = np.stack(np.unravel_index(shell_flat, block_shape), 1)
    shell_labels = flat_labels[shell_flat] + id_offset
    shell_top = block_top.ravel()[shell_flat]
    shell_height = block_height.ravel()[shell_flat]
    inner, inner_height = [], []
    coordinates = np.stack(np.unravel_index(voxels, block_shape), 1)
    voxel_labels = flat_labels[voxels]
    flat_block_height = block_height.ravel()
    voxel_height = flat_block_height[voxels]
    for offset in offsets:
        neighbour = shell_coords + offset
        across = np.any((neighbour < 0) | (neighbour >= np.array(block_shape)), axis=1)
        ring_index = tuple((neighbour[across] + 1).T)  # in the block + 1 ring
        touching = ring_mask[ring_index]
        where = np.flatnonzero(across)[touching]
        gidx = (neighbour[where] + origin) @ global_strides
        both_tops = shell_top[where] & top[ring_index][touching]
        merges.append(np.stack([shell_labels[where][both_tops], gidx[both_tops]], 1))
        outer_ids.append(shell_labels[where])
        outer_index.append(gidx)
        outer_height.append(np.minimum(shell_height[where], ring[ring_index][touching]))
        if tuple(offset) > (0,) * ndim:  # each pair inside the block once
            moved = coordinates + offset
            valid = np.all((moved >= 0) & (moved < np.array(block_shape)), axis=1)
            there = flat_labels[voxels[valid] + offset @ strides]
            here = voxel_labels[valid]
            differ = (there != here) & (there > 0)
            if differ.any():
                inner.append(np.stack([here[differ] + id_offset, there[differ] + id_offset], 1))
                inner_height.append(
                    np.minimum(
                        voxel_height[valid][differ],
                        flat_block_height[voxels[valid][differ] + offset @ strides],
                    )
                )
    return Fragments(
        labels=labels,
        ids=ids.astype(np.uint64) + np.uint64(id_offset),
        sizes=sizes[ids].astype(np.int64),
        seeded=seeded[ids],
        first=first.astype(np.int64),
        merges=np.concatenate(merges).astype(np.int64),
        inner=np.concatenate(inner).astype(np.int64) if inner else np.zeros((0, 2), np.int64),
        inner_height=(
            np.concatenate(inner_height).astype(np.float32) if inner else np.zeros(0, np.float32)
        ),
        outer_ids=np.concatenate(outer_ids).astype(np.int64),
        outer_index=np.concatenate(outer_index).astype(np.int64),
        outer_height=np.concatenate(outer_height).astype(np.float32),
    )


def merge_fragments(
    blocks: Sequence[Fragments],
    resolve: Callable[[npt.NDArray[np.int64]], npt.NDArray[np.uint64]] | None,
    voxel_volume: float,
    min_size: float,
) -> tuple[npt.NDArray[np.uint64], npt.NDArray[np.uint64]]:
    """Join the fragments of every block into objects (module docs, steps 2-4).

    ``resolve`` maps global voxel indices to the fragment ids written there
    (needed when blocks refer to each other's voxels). Returns the table
    ``(fragment ids sorted, object id of each)`` with objects ``1..N`` in the
    order of their first voxel and 0 for removed ones.
    """
    ids = np.concatenate([b.ids for b in blocks]).astype(np.uint64)
    order = np.argsort(ids)
    ids = ids[order]
    sizes = np.concatenate([b.sizes for b in blocks])[order]
    seeded = np.concatenate([b.seeded for b in blocks])[order]
    first = np.concatenate([b.first for b in blocks])[order]
    n = ids.size
    if n == 0:
        return ids, np.zeros(0, np.uint64)

    def index(values: npt.ArrayLike) -> npt.NDArray[np.int64]:
        values = np.asarray(values, dtype=np.uint64)
        where = np.searchsorted(ids, values)
        if values.size and (np.any(where >= n) or np.any(ids[np.minimum(where, n - 1)] != values)):
            raise ValueError("a block refers to a fragment that no block reported")
        return where.astype(np.int64)

    def lookup(global_index: npt.NDArray[np.int64]) -> npt.NDArray[np.int64]:
        if global_index.size == 0:
            return np.zeros(0, np.int64)
        if resolve is None:
            raise ValueError("blocks refer to other blocks' voxels, but no resolve was given")
        return index(resolve(global_index))

    merges = np.concatenate([b.merges for b in blocks])
    a = index(merges[:, 0])
    b = lookup(merges[:, 1])
    basin = _components(n, a, b)
    n_basins = int(basin.max()) + 1
    basin_seeded = np.bincount(basin, weights=seeded, minlength=n_basins) > 0
    basin_first = np.full(n_basins, np.iinfo(np.int64).max, np.int64)
    np.minimum.at(basin_first, basin, first)
    inner = np.concatenate([blk.inner for blk in blocks])
    src = np.concatenate([index(inner[:, 0])] + [index(blk.outer_ids) for blk in blocks])
    dst = np.concatenate([index(inner[:, 1])] + [lookup(blk.outer_index) for blk in blocks])
    height = np.concatenate(
        [blk.inner_height for blk in blocks] + [blk.outer_height for blk in blocks]
    )
    src, dst = basin[src], basin[dst]
    differ = src != dst
    src, dst, height = (
        np.concatenate([src[differ], dst[differ]]),
        np.concatenate([dst[differ], src[differ]]),
        np.concatenate([height[differ], height[differ]]),
    )
    unseeded = ~basin_seeded[src]
    src, dst, height = src[unseeded], dst[unseeded], height[unseeded]
    chosen = np.lexsort((basin_first[dst], -height, src))
    src, dst = src[chosen], dst[chosen]
    leading = np.ones(src.size, bool)
    leading[1:] = src[1:] != src[:-1]
    group_of_basin = _components(n_basins, src[leading], dst[leading])
    group = group_of_basin[basin]
    n_groups = int(group.max()) + 1
    group_size = np.bincount(group, weights=sizes, minlength=n_groups)
    group_first = np.full(n_groups, np.iinfo(np.int64).max, np.int64)
    np.minimum.at(group_first, group, first)
    kept = group_size * voxel_volume >= min_size
    final = np.zeros(n_groups, np.uint64)
    kept_groups = np.flatnonzero(kept)
    final[kept_groups[np.argsort(group_first[kept_groups])]] = np.arange(
        1, kept_groups.size + 1, dtype=np.uint64
    )
    return ids, final[group]


def _components(
    n: int, a: npt.NDArray[np.int64], b: npt.NDArray[np.int64]
) -> npt.NDArray[np.int64]:
    """Connected components (``0..k-1``) of ``n`` nodes joined by edges ``a[i]-b[i]``."""
    graph = coo_matrix((np.ones(a.size, np.int8), (a, b)), shape=(n, n))
    return connected_components(graph, directed=False)[1].astype(np.int64)


def relabel(
    labels: npt.NDArray[np.uint64], table: tuple[npt.NDArray[np.uint64], npt.NDArray[np.uint64]]
) -> npt.NDArray[np.uint64]:
    """``labels`` (fragment ids, 0 background) mapped through :func:`merge_fragments`' table."""
    keys, values = table
    out = np.zeros(labels.shape, np.uint64)
    where = labels != 0
    if keys.size:
        out[where] = values[np.searchsorted(keys, labels[where])]
    return out
