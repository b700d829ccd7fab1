"""WeightNode: class-balanced loss weights with moving counts."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import gunpowder as gp
import numpy as np

from gp_hotdistance import kernels
from gp_hotdistance.kernels import MovingCounts
from gp_hotdistance.nodes.common import (
    ContextFilter,
    check_same_voxel_size,
    errors_about,
    upstream_spec,
)
from gp_hotdistance.predictor import HotDistancePredictor


class WeightNode(ContextFilter):
    """Add loss weights ``[hot x C, distance x C]`` (float32, ``2C`` channels).

    Each channel is balanced on its own between its two classes (0/1 of the
    GT channel) over the requested ROI ``R`` only (no context: context voxels
    never reach the loss). Hot channels are balanced over ``mask``, distance
    channels over ``mask * distance_mask`` when ``predictor.mask_distances``,
    else over ``mask``; weights are 0 wherever that product is 0. Not
    interpolatable: interpolation would leak weight into unknown voxels.

    Moving counts (``2C`` dicts ``{class: (num, den)}``, hot first) live in
    ``self.moving_counts`` and carry over from batch to batch, so weights
    depend on the batch order; read and restore them with
    :meth:`state_dict` / :meth:`load_state_dict`. Each ``PreCache`` worker
    process holds its own copy of this node and so its own counts, and the
    counts of the main process never change then. ``moving_counts=False``
    balances every batch on its own (fresh counts), reproducibly.

    Args:
        predictor: A :class:`~gp_hotdistance.HotDistancePredictor`.
        gt: Ground truth, channels ``(C, *spatial)`` or class ids ``(*spatial)``.
        target: The target key; not requested (balancing does not read it),
            but it must be provided upstream with GT's voxel size, and weights
            are only advertised where it is.
        weights: The key to provide.
        mask: ``(C, *spatial)`` or ``(*spatial)``, 1 = annotated, 0 =
            unknown; float masks may hold weights in ``[0, 1]``, integer
            masks only 0/1, anything else (NaN, 255, -1) fails the batch
            before the counts change. ``None`` means all ones.
        distance_mask: From :class:`DistanceMaskNode`; required exactly when
            ``predictor.mask_distances``.
        moving_counts: Keep the counts across batches.

    Raises:
        ValueError: ``distance_mask`` is missing although
            ``predictor.mask_distances`` is set, or given although it is not.
    """

    def __init__(
        self,
        predictor: HotDistancePredictor,
        gt: gp.ArrayKey,
        target: gp.ArrayKey,
        weights: gp.ArrayKey,
        mask: gp.ArrayKey | None = None,
        distance_mask: gp.ArrayKey | None = None,
        moving_counts: bool = True,
    ):
        if predictor.mask_distances and distance_mask is None:
            raise ValueError(
                "WeightNode: distance_mask=None, but predictor.mask_distances is True; "
                "pass the key of a DistanceMaskNode output"
            )
        if not predictor.mask_distances and distance_mask is not None:
            raise ValueError(
                f"WeightNode: distance_mask={distance_mask} is given, but "
                "predictor.mask_distances is False, so it would be ignored; pass None"
            )
        self.predictor = predictor
        self.gt = gt
        self.target = target
        self.weights = weights
        self.mask = mask
        self.distance_mask = distance_mask
        self.use_moving_counts = bool(moving_counts)
        self.moving_counts: MovingCounts = kernels.new_moving_counts(predictor.embedding_dims)

    def state_dict(self) -> dict[str, Any]:
        """The moving counts, JSON-serialisable:
        ``{"moving_counts": [{"0": [num, den], "1": [num, den]}, ...]}``."""
        return {
            "moving_counts": [
                {str(c): [num, den] for c, (num, den) in counts.items()}
                for counts in self.moving_counts
            ]
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore the moving counts saved by :meth:`state_dict`.

        The counts are checked before they replace the current ones: ``2C``
        dicts, each with exactly the classes ``"0"`` and ``"1"`` (or ints),
        each a pair ``[num, den]`` of finite numbers with ``num >= 0`` and
        ``den >= 1`` (see :func:`gp_hotdistance.kernels.check_moving_counts`).

        Raises:
            TypeError: ``state`` is not a dict, or a count has the wrong type.
            ValueError: ``state`` has no ``"moving_counts"``, the number of
                channels is not ``2C``, or a class or value is wrong.
        """
        if not isinstance(state, Mapping):
            raise TypeError(
                f"{self.name()}: state must be a dict as saved by state_dict(), got {state!r}"
            )
        if "moving_counts" not in state:
            raise ValueError(f"{self.name()}: state has no 'moving_counts', got keys {list(state)}")
        with errors_about(self, self.weights):
            counts = kernels.check_moving_counts(
                _int_classes(state["moving_counts"]), self.predictor.embedding_dims
            )
        self.moving_counts = counts

    def setup(self) -> None:
        specs = {
            self.gt: upstream_spec(self, self.gt, "gt"),
            self.target: upstream_spec(self, self.target, "target"),
        }
        if self.mask is not None:
            specs[self.mask] = upstream_spec(self, self.mask, "mask")
        if self.distance_mask is not None:
            specs[self.distance_mask] = upstream_spec(self, self.distance_mask, "distance_mask")
        check_same_voxel_size(self, specs)
        spec = specs[self.gt].copy()
        for other in specs.values():
            spec.roi = spec.roi.intersect(other.roi)
        spec.dtype = np.float32
        spec.interpolatable = False
        self.advertise(self.weights, spec, {key: s.roi for key, s in specs.items()})

    def prepare(self, request: gp.BatchRequest) -> gp.BatchRequest:
        deps = gp.BatchRequest()
        for key in (self.gt, self.mask, self.distance_mask):
            if key is not None:
                deps[key] = request[self.weights].copy()
                deps[key].dtype = None
                deps[key].interpolatable = None
        return deps

    def process(self, batch: gp.Batch, request: gp.BatchRequest) -> gp.Batch:
        outputs = gp.Batch()
        gt = batch.arrays[self.gt]
        dims = gt.spec.voxel_size.dims
        with errors_about(self, self.gt):
            gt_data = self.predictor.gt_channels(gt.data, dims, name=str(self.gt))
        mask = None
        if self.mask is not None:
            with errors_about(self, self.mask):
                mask = kernels.broadcast_mask(batch.arrays[self.mask].data, gt_data.shape)
        distance_mask = None
        if self.distance_mask is not None:
            with errors_about(self, self.distance_mask):
                distance_mask = kernels.broadcast_mask(
                    batch.arrays[self.distance_mask].data, gt_data.shape, name="distance_mask"
                )
        counts = self.moving_counts if self.use_moving_counts else None
        weights, counts = kernels.hot_distance_weights(
            gt_data,
            mask,
            distance_mask,
            counts,
            self.predictor.clipmin,
            self.predictor.clipmax,
        )
        if self.use_moving_counts:
            self.moving_counts = counts
        spec = self.spec[self.weights].copy()
        spec.roi = request[self.weights].roi
        outputs.arrays[self.weights] = gp.Array(weights, spec)
        return outputs


def _int_classes(counts: Any) -> Any:
    """``counts`` with the class keys ``"0"`` and ``"1"`` of a JSON round trip
    as ints; anything else is left for :func:`~gp_hotdistance.kernels.check_moving_counts`
    to refuse."""
    if not isinstance(counts, (list, tuple)):
        return counts
    converted = []
    for channel in counts:
        if isinstance(channel, Mapping):
            keys = [_JSON_CLASSES.get(k, k) if isinstance(k, str) else k for k in channel]
            if len(set(keys)) == len(channel):  # "0" beside 0 stays, to be refused
                channel = dict(zip(keys, channel.values(), strict=True))
        converted.append(channel)
    return converted


_JSON_CLASSES = {"0": 0, "1": 1}
