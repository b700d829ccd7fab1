"""DistanceMaskNode: mask out distances the GT crop cannot know."""

from __future__ import annotations

import gunpowder as gp
import numpy as np

from gp_hotdistance.geometry import roi_slices
from gp_hotdistance.nodes.common import (
    ContextFilter,
    check_same_voxel_size,
    errors_about,
    grown_request,
    shrink,
    upstream_spec,
)
from gp_hotdistance.predictor import HotDistancePredictor


class DistanceMaskNode(ContextFilter):
    """Add the distance mask: ``C`` channels, 0 where a distance is unknown.

    Asked for ``distance_mask`` at ``R``, with ``G = gt_region_for_roi(R)``
    the GT region the target at ``R`` was computed on::

        mask requested at G     +---------------------------+
        (crop edge of G =       |  b = distance to unknown  |
         unknown)               |      +---------+          |
        target requested at R   |      |    R    |          |
                                |      +---------+          |
                                +---------------------------+

    For channel ``i``, ``b`` is the world distance to the nearest unknown
    voxel of ``mask[i]`` over ``G`` (the ring outside ``G`` is unknown); a
    voxel of ``R`` is set to 0 where ``min(|t_i| + epsilon, threshold) >=
    tanh(b / scale_factor)``, ``t_i`` the tanh distance channel of the
    target at ``R``; elsewhere the mask value is kept. The test is per
    voxel, so only the target at ``R`` is needed (it is the target computed
    over ``G``), and the result equals DaCapo's distance mask over ``G``
    cropped to ``R``. dtype: the mask's (uint8 without mask); not
    interpolatable.

    Args:
        predictor: A :class:`~gp_hotdistance.HotDistancePredictor`.
        target: The ``2C``-channel target (from :class:`TargetNode`).
        mask: ``(C, *spatial)`` or ``(*spatial)``, 1 = annotated, 0 =
            unknown (float: values in ``[0, 1]``; integer: 0/1; others fail
            the batch, context voxels included); ``None`` means all ones.
        distance_mask: The key to provide.
    """

    def __init__(
        self,
        predictor: HotDistancePredictor,
        target: gp.ArrayKey,
        mask: gp.ArrayKey | None,
        distance_mask: gp.ArrayKey,
    ):
        self.predictor = predictor
        self.target = target
        self.mask = mask
        self.distance_mask = distance_mask

    def setup(self) -> None:
        target_spec = upstream_spec(self, self.target, "target")
        mask_spec = None if self.mask is None else upstream_spec(self, self.mask, "mask")
        voxel_size = check_same_voxel_size(self, {self.target: target_spec, self.mask: mask_spec})
        # the context, computed once: prepare and process grow ROIs by it
        self.context = self.predictor.snapped_context(voxel_size)
        spec = target_spec.copy()
        spec.interpolatable = False
        inputs = {self.target: target_spec.roi}
        if mask_spec is None:
            spec.dtype = np.uint8
        else:
            spec.roi = spec.roi.intersect(shrink(mask_spec.roi, *self.context, voxel_size))
            spec.dtype = mask_spec.dtype
            inputs[self.mask] = mask_spec.roi
        self.advertise(self.distance_mask, spec, inputs)

    def prepare(self, request: gp.BatchRequest) -> gp.BatchRequest:
        deps = gp.BatchRequest()
        out = request[self.distance_mask]
        deps[self.target] = out.copy()
        deps[self.target].dtype = None
        deps[self.target].interpolatable = None
        if self.mask is not None:
            deps[self.mask] = grown_request(
                self,
                self.distance_mask,
                out,
                self.spec[self.distance_mask].voxel_size,
                self.context,
                self.mask,
                self.get_upstream_provider().spec[self.mask].roi,
            )
        return deps

    def process(self, batch: gp.Batch, request: gp.BatchRequest) -> gp.Batch:
        outputs = gp.Batch()
        classes = self.predictor.classes
        target = batch.arrays[self.target]
        voxel_size = target.spec.voxel_size
        roi = request[self.distance_mask].roi
        spec = self.spec[self.distance_mask].copy()
        if target.data.shape[0] != 2 * classes or target.data.ndim != voxel_size.dims + 1:
            raise ValueError(
                f"{self.name()}: {self.target} must have 2 * {classes} channels "
                f"(hot, then tanh distances) and {voxel_size.dims} spatial dims, "
                f"got shape {target.data.shape}"
            )
        if self.mask is None:
            grown_roi = roi.grow(*self.context)
            mask = None
            key = self.target
        else:
            mask_array = batch.arrays[self.mask]
            grown_roi = mask_array.spec.roi
            mask = mask_array.data
            key = self.mask
        # tanh distances over the grown ROI; only R's values reach the output
        crop = (slice(None),) + roi_slices(roi, grown_roi, voxel_size)
        distances = np.zeros((classes, *(grown_roi.shape / voxel_size)), dtype=np.float32)
        distances[crop] = target.data[classes:]
        with errors_about(self, key):
            masked = self.predictor.create_distance_mask(distances, mask, voxel_size)
        spec.roi = roi
        data = masked[crop].astype(spec.dtype, copy=False) if spec.dtype else masked[crop]
        outputs.arrays[self.distance_mask] = gp.Array(data, spec)
        return outputs
