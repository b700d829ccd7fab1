"""HotDistancePredictor on funlib.persistence Arrays: parity with the slow
DaCapo-style reference over batches, context, sizes and bad input."""

from __future__ import annotations

import copy

import gunpowder as gp
import numpy as np
import pytest
from funlib.geometry import Coordinate, Roi
from funlib.persistence import Array

from gp_hotdistance import HotDistancePredictor
from tests import reference as R
from tests.helpers import smooth_blobs

AXES = {2: ["y", "x"], 3: ["z", "y", "x"]}


def make_gt(rng, shape, classes, kind):
    """``classes`` binary channels: blobby objects or pure noise; with three
    or more classes channel 1 is all background and channel 2 all foreground."""
    if kind == "blobs":
        gt = np.stack([smooth_blobs(rng, shape, 1.5, 0.1 + 0.2 * c) for c in range(classes)])
    else:
        gt = (rng.random((classes,) + shape) < 0.4).astype(np.uint8)
    if classes >= 3:
        gt[1] = 0
        gt[2] = 1
    return gt


def make_mask(rng, shape, classes, kind):
    """A mask with holes and an unannotated slab, spatial or per channel."""
    if kind == "none":
        return None
    mask = smooth_blobs(rng, shape, 2.0, 0.85)
    mask[(slice(None),) * (len(shape) - 1) + (slice(0, 2),)] = 0  # unannotated edge
    if kind == "per_channel":
        mask = np.stack([mask] + [smooth_blobs(rng, shape, 2.0, 0.9) for _ in range(classes - 1)])
    return mask


def channel_array(data, offset, voxel_size):
    return Array(
        data, offset=offset, voxel_size=voxel_size, axis_names=["c^", *AXES[data.ndim - 1]]
    )


def spatial_array(data, offset, voxel_size):
    return Array(data, offset=offset, voxel_size=voxel_size, axis_names=AXES[data.ndim])


def assert_counts_close(got, expected):
    assert len(got) == len(expected)
    for g, e in zip(got, expected, strict=True):
        assert g.keys() == e.keys()
        for k in g:
            np.testing.assert_allclose(g[k], e[k], rtol=1e-5, err_msg=f"class {k}")


# ---------------------------------------------------------------------------
# parity with the reference over three batches sharing moving counts
# ---------------------------------------------------------------------------

CASES = [
    # shape, voxel_size, classes, gt kind, mask kind
    ((20, 22, 24), (8, 8, 8), 1, "blobs", "spatial"),
    ((8, 24, 28), (40, 4, 4), 3, "blobs", "per_channel"),
    ((10, 16, 12), (40, 4, 4), 4, "noise", "spatial"),
    ((12, 12, 12), (8, 8, 8), 2, "noise", "none"),
    ((40, 36), (4, 8), 2, "blobs", "per_channel"),
    ((48, 48), (4, 4), 4, "blobs", "spatial"),
    ((30, 20), (1, 1), 3, "noise", "none"),
]


@pytest.mark.parametrize("shape, voxel_size, classes, kind, mask_kind", CASES)
@pytest.mark.parametrize("mask_distances", [True, False])
@pytest.mark.parametrize("scale_factor", [10.0, 50.0])
def test_matches_reference_over_batches(
    shape, voxel_size, classes, kind, mask_kind, mask_distances, scale_factor
):
    rng = np.random.default_rng(len(shape) * 1000 + classes * 10 + int(mask_distances))
    p = HotDistancePredictor(
        channels=[f"c{i}" for i in range(classes)],
        scale_factor=scale_factor,
        mask_distances=mask_distances,
    )
    offset = tuple(-3 * v for v in voxel_size)  # a negative offset
    counts = ref_counts = None
    for batch in range(3):
        gt = make_gt(rng, shape, classes, kind)
        mask = make_mask(rng, shape, classes, mask_kind)
        gt_array = channel_array(gt, offset, voxel_size)
        mask_array = None
        if mask is not None:
            maker = channel_array if mask.ndim == len(shape) + 1 else spatial_array
            mask_array = maker(mask, offset, voxel_size)

        target = p.create_target(gt_array)
        weights, counts = p.create_weight(gt_array, target, mask_array, counts)
        ref = R.reference_hot_distance(
            gt, mask, voxel_size, scale_factor, mask_distances, ref_counts
        )
        ref_target, ref_dmask, ref_weights, ref_counts = ref

        msg = f"batch {batch}"
        assert target.roi == gt_array.roi and target.voxel_size == gt_array.voxel_size
        assert weights.roi == gt_array.roi
        target_data = np.asarray(target.data)
        assert target_data.dtype == np.float32
        np.testing.assert_allclose(target_data, ref_target, rtol=0, atol=1e-5, err_msg=msg)
        np.testing.assert_array_equal(target_data, ref_target, err_msg=msg)  # in fact exact
        dmask_mask = np.ones(gt.shape, np.uint8) if mask is None else mask
        dmask = p.create_distance_mask(target_data[classes:], dmask_mask, voxel_size)
        expected_dmask = R.reference_distance_mask(
            ref_target[classes:], dmask_mask, voxel_size, scale_factor
        )
        np.testing.assert_array_equal(dmask, expected_dmask, err_msg=msg)
        if mask_distances:
            np.testing.assert_array_equal(dmask, ref_dmask, err_msg=msg)
        weights_data = np.asarray(weights.data)
        assert weights_data.dtype == np.float32
        assert weights_data.shape == (2 * classes,) + shape
        np.testing.assert_allclose(weights_data, ref_weights, rtol=1e-5, atol=0, err_msg=msg)
        assert_counts_close(counts, ref_counts)


def test_all_background_and_all_foreground_channels():
    p = HotDistancePredictor(channels=["bg", "fg"], scale_factor=10.0, mask_distances=True)
    gt = np.stack([np.zeros((6, 10), np.uint8), np.ones((6, 10), np.uint8)])
    target = np.asarray(p.create_target(channel_array(gt, (0, 0), (4, 4))).data)
    # no boundary: -/+ min(6*4/2, 10*4/2) = 12
    np.testing.assert_array_equal(target[2], np.tanh(np.float32(-12.0) / 10.0))
    np.testing.assert_array_equal(target[3], np.tanh(np.float32(12.0) / 10.0))
    np.testing.assert_array_equal(target, R.reference_target(gt, (4, 4), 10.0))


def test_process_row_exact():
    p = HotDistancePredictor(channels=["a"], scale_factor=1e6, mask_distances=False)
    out = p.process(np.array([[[0, 0, 1, 1, 1]]], dtype=np.uint8), (1, 4))
    np.testing.assert_array_equal(out[0], [[0, 0, 1, 1, 1]])
    d = np.array([-6, -2, 2, 6, 10], dtype=np.float32)
    np.testing.assert_array_equal(out[1, 0], np.tanh(d / 1e6))


@pytest.mark.parametrize(
    "shape, voxel_size", [((1, 9, 9), (8, 8, 8)), ((2, 2, 2), (40, 4, 4)), ((1, 6), (4, 4))]
)
def test_degenerate_shapes(shape, voxel_size):
    rng = np.random.default_rng(5)
    gt = (rng.random((2,) + shape) < 0.5).astype(np.uint8)
    p = HotDistancePredictor(channels=["a", "b"], scale_factor=10.0, mask_distances=True)
    gt_array = channel_array(gt, (0,) * len(shape), voxel_size)
    target = p.create_target(gt_array)
    weights, counts = p.create_weight(gt_array, target, None)
    ref_target, _, ref_weights, ref_counts = R.reference_hot_distance(
        gt, None, voxel_size, 10.0, True
    )
    np.testing.assert_array_equal(np.asarray(target.data), ref_target)
    np.testing.assert_allclose(np.asarray(weights.data), ref_weights, rtol=1e-5, atol=0)
    assert_counts_close(counts, ref_counts)


# ---------------------------------------------------------------------------
# class-id input
# ---------------------------------------------------------------------------


def test_class_ids_uint64_no_wraparound():
    big = 2**32 + 7
    p = HotDistancePredictor(
        channels=["a", "b"], scale_factor=10.0, mask_distances=False, class_ids=[big, 2**40]
    )
    ids = np.zeros((4, 5), dtype=np.uint64)
    ids[0, :] = 7  # == big mod 2**32: must stay background
    ids[1, :] = big
    ids[2, :] = 2**40
    ids[3, :] = 3  # unmapped
    target = np.asarray(p.create_target(spatial_array(ids, (0, 0), (4, 4))).data)
    expected_hot = np.zeros((2, 4, 5), np.float32)
    expected_hot[0, 1] = 1
    expected_hot[1, 2] = 1
    np.testing.assert_array_equal(target[:2], expected_hot)
    np.testing.assert_array_equal(target, R.reference_target(expected_hot, (4, 4), 10.0))


def test_default_class_ids():
    p = HotDistancePredictor(channels=["a", "b", "c"], scale_factor=10.0, mask_distances=False)
    ids = np.array([[0, 1, 2, 3, 4, 9]], dtype=np.int32)
    out = p.process(ids, (4, 4))
    # channel i is id i + 1; 0, 4 and 9 are background everywhere
    np.testing.assert_array_equal(
        out[:3, 0], [[0, 1, 0, 0, 0, 0], [0, 0, 1, 0, 0, 0], [0, 0, 0, 1, 0, 0]]
    )


# ---------------------------------------------------------------------------
# counts, context, sizes
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("mask_distances", [True, False])
def test_create_weight_does_not_mutate_counts(mask_distances):
    rng = np.random.default_rng(2)
    gt = np.stack([smooth_blobs(rng, (16, 16), 2.0, 0.3)])
    p = HotDistancePredictor(channels=["a"], scale_factor=10.0, mask_distances=mask_distances)
    gt_array = channel_array(gt, (0, 0), (4, 4))
    target = p.create_target(gt_array)
    counts = [{0: (10, 100.0), 1: (5, 100.0)}, {0: (1, 3.0), 1: (2, 3.0)}]
    before = copy.deepcopy(counts)
    _, new = p.create_weight(gt_array, target, None, counts)
    assert counts == before
    assert new != before
    _, again = p.create_weight(gt_array, target, None, counts)
    assert again == new  # same input counts, same result


def test_gt_region_for_roi_grows_and_snaps():
    p = HotDistancePredictor(channels=["a"], scale_factor=50.0, mask_distances=True)
    spec = gp.ArraySpec(roi=Roi((0, 0, 0), (64, 64, 64)), voxel_size=Coordinate(8, 8, 8))
    grown = p.gt_region_for_roi(spec)
    # grown by 50 then shrunk to the 8-grid: 48 on each side
    assert grown.roi == Roi((-48, -48, -48), (160, 160, 160))
    assert grown.voxel_size == Coordinate(8, 8, 8)
    assert spec.roi == Roi((0, 0, 0), (64, 64, 64))  # the given spec is untouched
    assert grown is not spec


def test_gt_region_for_roi_anisotropic():
    p = HotDistancePredictor(channels=["a"], scale_factor=50.0, mask_distances=True)
    spec = gp.ArraySpec(roi=Roi((-40, 0, 0), (400, 40, 40)), voxel_size=Coordinate(40, 4, 4))
    # z: 50 -> 40 (the 40-grid), y/x: 50 -> 48 (the 4-grid)
    assert p.gt_region_for_roi(spec).roi == Roi((-80, -48, -48), (480, 136, 136))


def test_gt_region_for_roi_without_mask_distances():
    p = HotDistancePredictor(channels=["a"], scale_factor=50.0, mask_distances=False)
    spec = gp.ArraySpec(roi=Roi((0, 0, 0), (64, 64, 64)), voxel_size=Coordinate(8, 8, 8))
    out = p.gt_region_for_roi(spec)
    assert out.roi == spec.roi
    assert out is not spec


@pytest.mark.parametrize("mask_distances", [True, False])
def test_padding(mask_distances):
    p = HotDistancePredictor(channels=["a"], scale_factor=50.0, mask_distances=mask_distances)
    assert p.padding(Coordinate(8, 8, 8)) == Coordinate(50, 50, 50)
    assert p.padding(Coordinate(4, 4)) == Coordinate(50, 50)
    assert p.max_distance == 50.0


def test_sizes_and_output_type():
    p = HotDistancePredictor(channels=["mito", "er"], scale_factor=50.0, mask_distances=True)
    assert p.classes == 2
    assert p.embedding_dims == 4
    out = p.output_array_type
    assert out.channels == ("hot_mito", "hot_er", "dist_mito", "dist_er")
    assert out.interpolatable is True
    assert (p.epsilon, p.threshold, p.clipmin, p.clipmax) == (0.05, 0.8, 0.05, 0.95)


# ---------------------------------------------------------------------------
# bad input
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("bad", [2, 255])
def test_labels_outside_binary(bad):
    p = HotDistancePredictor(channels=["a", "b"], scale_factor=10.0, mask_distances=False)
    gt = np.zeros((2, 4, 4), np.uint8)
    gt[1, 2, 2] = bad
    with pytest.raises(ValueError, match=rf"(gt|labels) must be binary.*\[{bad}\]"):
        p.create_target(channel_array(gt, (0, 0), (4, 4)))


@pytest.mark.parametrize(
    "data, match",
    [
        (np.zeros((2, 4, 4), np.complex64), "dtype=complex64"),
        (np.full((2, 4, 4), "a"), "dtype=<U1"),
        (np.zeros((4, 4), np.complex128), "dtype=complex128"),  # class-id form
        (np.zeros((4, 4), np.float32), "dtype=float32"),  # float class ids
    ],
)
def test_unknown_dtype(data, match):
    p = HotDistancePredictor(channels=["a", "b"], scale_factor=10.0, mask_distances=False)
    with pytest.raises(TypeError, match=match):
        p.process(data, (4, 4))


def test_channel_count_mismatch():
    p = HotDistancePredictor(channels=["a", "b"], scale_factor=10.0, mask_distances=False)
    gt = channel_array(np.zeros((3, 4, 4), np.uint8), (0, 0), (4, 4))
    with pytest.raises(ValueError, match=r"3 channels.*\['a', 'b'\]"):
        p.create_target(gt)
    with pytest.raises(ValueError, match="distances has 3 channels"):
        p.create_distance_mask(np.zeros((3, 4, 4), np.float32), None, (4, 4))


@pytest.mark.parametrize("mask_shape", [(3, 4, 4), (1, 4, 4)])
@pytest.mark.parametrize("mask_distances", [True, False])
def test_mask_not_broadcastable(mask_shape, mask_distances):
    # a (1, *spatial) mask is neither (C, *spatial) nor (*spatial): refused
    p = HotDistancePredictor(channels=["a", "b"], scale_factor=10.0, mask_distances=mask_distances)
    gt = channel_array(np.zeros((2, 4, 4), np.uint8), (0, 0), (4, 4))
    target = p.create_target(gt)
    mask = channel_array(np.ones(mask_shape, np.uint8), (0, 0), (4, 4))
    with pytest.raises(ValueError, match=rf"mask shape \({mask_shape[0]}, 4, 4\)"):
        p.create_weight(gt, target, mask)


@pytest.mark.parametrize("mask_shape", [(3, 4, 4), (1, 4, 4), (4, 5), (5, 4)])
def test_distance_mask_not_broadcastable(mask_shape):
    p = HotDistancePredictor(channels=["a", "b"], scale_factor=10.0, mask_distances=True)
    distances = np.zeros((2, 4, 4), np.float32)
    pattern = r"mask shape \(" + ", ".join(map(str, mask_shape)) + r"\)"
    with pytest.raises(ValueError, match=pattern):
        p.create_distance_mask(distances, np.ones(mask_shape, np.uint8), (4, 4))


@pytest.mark.parametrize("spatial", [(7,), (2, 3, 4, 5)])
def test_bad_dims(spatial):
    p = HotDistancePredictor(channels=["a"], scale_factor=10.0, mask_distances=False)
    voxel_size = (4,) * len(spatial)
    labels = np.zeros((1,) + spatial, np.uint8)
    with pytest.raises(ValueError, match=rf"2 or 3 spatial dimensions, got {len(spatial)}"):
        p.process(labels, voxel_size)
    with pytest.raises(ValueError, match=rf"got {len(spatial)}"):
        p.create_distance_mask(labels.astype(np.float32), None, voxel_size)
