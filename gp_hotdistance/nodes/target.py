"""TargetNode: the hot-distance training target from ground truth."""

from __future__ import annotations

import gunpowder as gp
import numpy as np

from gp_hotdistance.geometry import roi_slices
from gp_hotdistance.nodes.common import (
    ContextFilter,
    errors_about,
    grown_request,
    shrink,
    upstream_spec,
)
from gp_hotdistance.predictor import HotDistancePredictor


class TargetNode(ContextFilter):
    """Add the target ``[hot x C, tanh(d / scale_factor) x C]`` of ``gt``.

    Channels first, float32, ``2C = predictor.embedding_dims`` channels:
    the binary class channels, then the tanh-normalised signed world
    distance of every voxel centre to the nearest label face (positive
    inside). Asked for ``target`` at ``R``, the node requests ``gt`` at
    ``G = predictor.gt_region_for_roi(R)`` (``R`` grown by ``max_distance``
    when ``mask_distances``), computes ``predictor.process`` over ``G`` and
    returns the crop to ``R``, so the target equals DaCapo's over ``G``.
    ``setup`` advertises the upstream GT ROI shrunk by that context; pad
    the GT by ``predictor.padding(voxel_size)`` to train near volume edges.

    Args:
        predictor: A :class:`~gp_hotdistance.HotDistancePredictor`.
        gt: Ground truth, binary channels ``(C, *spatial)`` or an integer
            class-id volume ``(*spatial)`` mapped by ``predictor.class_ids``
            (any integer dtype, uint64 included).
        target: The key to provide; spec ``interpolatable`` follows
            ``predictor.output_array_type``.
    """

    def __init__(self, predictor: HotDistancePredictor, gt: gp.ArrayKey, target: gp.ArrayKey):
        self.predictor = predictor
        self.gt = gt
        self.target = target

    def setup(self) -> None:
        gt_spec = upstream_spec(self, self.gt, "gt")
        # the context, computed once: prepare grows requests by it
        self.context = self.predictor.snapped_context(gt_spec.voxel_size)
        spec = gt_spec.copy()
        spec.roi = shrink(gt_spec.roi, *self.context, gt_spec.voxel_size)
        spec.dtype = np.float32
        spec.interpolatable = self.predictor.output_array_type.interpolatable
        self.advertise(self.target, spec, {self.gt: gt_spec.roi})

    def prepare(self, request: gp.BatchRequest) -> gp.BatchRequest:
        deps = gp.BatchRequest()
        deps[self.gt] = grown_request(
            self,
            self.target,
            request[self.target],
            self.spec[self.target].voxel_size,
            self.context,
            self.gt,
            self.get_upstream_provider().spec[self.gt].roi,
        )
        return deps

    def process(self, batch: gp.Batch, request: gp.BatchRequest) -> gp.Batch:
        outputs = gp.Batch()
        gt = batch.arrays[self.gt]
        voxel_size = gt.spec.voxel_size
        with errors_about(self, self.gt):
            target = self.predictor.process(gt.data, voxel_size)
        roi = request[self.target].roi
        crop = (slice(None),) + roi_slices(roi, gt.spec.roi, voxel_size)
        spec = self.spec[self.target].copy()
        spec.roi = roi
        outputs.arrays[self.target] = gp.Array(target[crop], spec)
        return outputs
