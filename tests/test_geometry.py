"""The predictor's snapped context and the ROI-to-slices helper."""

from __future__ import annotations

import gunpowder as gp
import numpy as np
import pytest
from funlib.geometry import Coordinate, Roi

from gp_hotdistance import HotDistancePredictor
from gp_hotdistance.geometry import roi_slices


@pytest.mark.parametrize(
    "scale_factor, voxel_size, expected",
    [
        (20.0, (4, 8), (20, 16)),  # 20 // 4 = 5 voxels, 20 // 8 = 2 voxels
        (40.0, (40, 4, 4), (40, 40, 40)),
        (37.5, (40, 4, 4), (0, 36, 36)),  # 37 world units: no whole 40-voxel
        (3.0, (7, 3), (0, 3)),
    ],
)
def test_snapped_context_hand_values(scale_factor, voxel_size, expected):
    predictor = HotDistancePredictor(["a"], scale_factor=scale_factor, mask_distances=True)
    negative, positive = predictor.snapped_context(Coordinate(voxel_size))
    assert negative == Coordinate(expected)
    assert positive == Coordinate(expected)


@pytest.mark.parametrize("mask_distances", [True, False])
@pytest.mark.parametrize(
    "scale_factor, voxel_size",
    [(20.0, (4, 8)), (37.5, (40, 4, 4)), (3.0, (7, 3)), (50.0, (1, 1)), (9.0, (10, 10))],
)
def test_snapped_context_equals_gt_region_for_roi(mask_distances, scale_factor, voxel_size):
    """``roi.grow(*snapped_context)`` is what ``gt_region_for_roi`` returns
    for random on-grid ROIs, negative offsets included."""
    predictor = HotDistancePredictor(
        ["a", "b"], scale_factor=scale_factor, mask_distances=mask_distances
    )
    voxel_size = Coordinate(voxel_size)
    negative, positive = predictor.snapped_context(voxel_size)
    if not mask_distances:
        assert negative == positive == Coordinate((0,) * voxel_size.dims)
    rng = np.random.default_rng(0)
    for _ in range(200):
        begin = Coordinate(int(b) for b in rng.integers(-50, 50, voxel_size.dims)) * voxel_size
        shape = Coordinate(int(s) for s in rng.integers(1, 20, voxel_size.dims)) * voxel_size
        roi = Roi(begin, shape)
        grown = predictor.gt_region_for_roi(gp.ArraySpec(roi=roi, voxel_size=voxel_size)).roi
        assert grown == roi.grow(negative, positive), roi


def test_roi_slices_hand_values():
    outer = Roi((-8, 40), (40, 80))
    roi = Roi((0, 48), (16, 24))
    # begin (8, 8) world = (2, 1) voxels of (4, 8); shape (4, 3) voxels
    assert roi_slices(roi, outer, (4, 8)) == (slice(2, 6), slice(1, 4))
    data = np.arange(10 * 10).reshape(10, 10)
    np.testing.assert_array_equal(data[roi_slices(roi, outer, (4, 8))], data[2:6, 1:4])


def test_roi_slices_errors():
    outer = Roi((0, 0), (40, 80))
    with pytest.raises(ValueError, match=r"not inside the array's ROI"):
        roi_slices(Roi((-4, 0), (8, 8)), outer, (4, 8))
    with pytest.raises(ValueError, match=r"ROI \[0:6, 0:8\] \(6, 8\) is not on the grid"):
        roi_slices(Roi((0, 0), (6, 8)), outer, (4, 8))


@pytest.mark.parametrize(
    "scale_factor, voxel_size, context, expected",
    [
        (40.0, (40, 4, 4), None, (40, 40, 40)),
        (37.5, (40, 4, 4), None, (40, 40, 40)),  # rounded up: one whole 40-voxel
        (20.0, (6, 8), None, (24, 24)),
        (20.0, (4, 8), (10.0, 0.0), (12, 0)),  # a given context is rounded up too
    ],
)
def test_whole_voxel_context_hand_values(scale_factor, voxel_size, context, expected):
    predictor = HotDistancePredictor(["a"], scale_factor=scale_factor, mask_distances=True)
    assert predictor.whole_voxel_context(Coordinate(voxel_size), context) == Coordinate(expected)
