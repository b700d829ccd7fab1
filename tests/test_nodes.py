"""TargetNode, DistanceMaskNode and WeightNode inside real gunpowder pipelines.

Every value is checked against the kernels: the target against
``predictor.process`` over ``gt_region_for_roi(R)`` cropped to ``R``, the
distance mask against ``predictor.create_distance_mask`` over that grown
region cropped to ``R``, the weights against
``functional.hot_distance_weights`` over ``R``.
"""

from __future__ import annotations

import json

import gunpowder as gp
import numpy as np
import pytest
from funlib.persistence import Array

from gp_hotdistance import DistanceMaskNode, HotDistancePredictor, TargetNode, WeightNode
from gp_hotdistance import functional as F
from tests.helpers import (
    CASES,
    CHANNELS,
    DIMS,
    DISTANCE_MASK,
    GT,
    MASK,
    TARGET,
    WEIGHTS,
    ArraySource,
    assert_names,
    chain,
    crop,
    expected_distance_mask,
    expected_target,
    grown,
    make_array,
    make_gt,
    make_mask,
    predictor,
    request,
    request_roi,
    source_roi,
    sources,
)

# ---------------------------------------------------------------------------
# TargetNode
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("dims", DIMS)
@pytest.mark.parametrize("form", ["ids", "channels"])
@pytest.mark.parametrize("mask_distances", [True, False])
def test_target_node_values(dims, form, mask_distances):
    p = predictor(dims, mask_distances)
    gt = make_gt(dims, seed=1, form=form)
    pipeline = sources(dims, gt=gt) + TargetNode(p, GT, TARGET)
    roi = request_roi(dims)
    with gp.build(pipeline):
        batch = pipeline.request_batch(request(roi, TARGET))

    target = batch[TARGET]
    assert list(batch.arrays) == [TARGET], "GT was not requested, so it must be absent"
    assert target.spec.roi == roi
    assert target.data.dtype == np.float32
    assert target.data.shape == (2 * len(CHANNELS), *(roi.shape / target.spec.voxel_size))
    np.testing.assert_array_equal(target.data, expected_target(p, gt, roi, dims))


@pytest.mark.parametrize("dims", DIMS)
@pytest.mark.parametrize("mask_distances", [True, False])
def test_target_node_spec(dims, mask_distances):
    p = predictor(dims, mask_distances)
    pipeline = sources(dims, gt=make_gt(dims, seed=2)) + TargetNode(p, GT, TARGET)
    vs = gp.Coordinate(CASES[dims]["voxel_size"])
    context = gp.Coordinate(CASES[dims]["context"]) * vs if mask_distances else vs * 0
    assert p.snapped_context(vs) == (context, context)
    with gp.build(pipeline):
        spec = pipeline.spec[TARGET]
        # the ROIs whose grown GT region fits in the source
        assert spec.roi == source_roi(dims).grow(-context, -context)
        assert spec.voxel_size == vs
        assert spec.dtype == np.float32
        assert spec.interpolatable is p.output_array_type.interpolatable is True
        assert pipeline.spec[GT].roi == source_roi(dims), "GT spec must be unchanged"
        assert pipeline.spec[GT].dtype == np.uint64


@pytest.mark.parametrize("dims", DIMS)
def test_target_node_whole_advertised_roi(dims):
    """The advertised ROI is really deliverable: its grown region is the source."""
    p = predictor(dims)
    gt = make_gt(dims, seed=3)
    pipeline = sources(dims, gt=gt) + TargetNode(p, GT, TARGET)
    with gp.build(pipeline):
        roi = pipeline.spec[TARGET].roi
        assert grown(p, roi, dims) == source_roi(dims)
        batch = pipeline.request_batch(request(roi, TARGET))
    np.testing.assert_array_equal(batch[TARGET].data, expected_target(p, gt, roi, dims))


@pytest.mark.parametrize("dims", DIMS)
def test_target_node_crop_invariance(dims):
    """Requests of any size and position equal the kernel over their own
    grown region, cropped; a big request does not change a small one."""
    p = predictor(dims)
    gt = make_gt(dims, seed=4)
    rng = np.random.default_rng(4)
    pipeline = sources(dims, gt=gt) + TargetNode(p, GT, TARGET)
    with gp.build(pipeline):
        advertised = pipeline.spec[TARGET].roi
        vs = pipeline.spec[TARGET].voxel_size
        limit = advertised.shape / vs
        for _ in range(4):
            shape = gp.Coordinate(int(rng.integers(1, n + 1)) for n in limit)
            begin = gp.Coordinate(
                int(rng.integers(0, n - s + 1)) for n, s in zip(limit, shape, strict=True)
            )
            roi = gp.Roi(advertised.offset + begin * vs, shape * vs)
            batch = pipeline.request_batch(request(roi, TARGET))
            np.testing.assert_array_equal(
                batch[TARGET].data, expected_target(p, gt, roi, dims), err_msg=f"ROI {roi}"
            )


def test_target_node_uint64_class_ids():
    """Class ids beyond 2**32 and 2**63 select their voxels; an id equal to
    one of them modulo 2**32 stays background (no wrap-around)."""
    dims = "3d"
    big = [2**32 + 1, 2**63 + 7]
    p = predictor(dims, class_ids=big)
    gt = make_gt(dims, seed=5)  # ids 1, 2, 5
    gt[gt == 2] = np.uint64(big[0])
    gt[gt == 5] = np.uint64(big[1])
    gt[2:4, 12:15, 13:16] = 1  # equals 2**32 + 1 wrapped to 32 bit: background
    pipeline = sources(dims, gt=gt) + TargetNode(p, GT, TARGET)
    roi = request_roi(dims)
    with gp.build(pipeline):
        batch = pipeline.request_batch(request(roi, TARGET))
    hot = batch[TARGET].data[:2]
    gt_roi = crop(gt, roi, source_roi(dims), dims)
    np.testing.assert_array_equal(hot[0], gt_roi == np.uint64(big[0]))
    np.testing.assert_array_equal(hot[1], gt_roi == np.uint64(big[1]))
    assert (gt_roi == 1).any() and not hot[:, gt_roi == 1].any()
    np.testing.assert_array_equal(batch[TARGET].data, expected_target(p, gt, roi, dims))


# ---------------------------------------------------------------------------
# DistanceMaskNode
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("dims", DIMS)
@pytest.mark.parametrize("mask_form", [None, "spatial", "channels"])
@pytest.mark.parametrize("mask_distances", [True, False])
def test_distance_mask_node_values(dims, mask_form, mask_distances):
    p = predictor(dims, mask_distances)
    gt = make_gt(dims, seed=6)
    mask = make_mask(dims, seed=6, form=mask_form)
    mask_key = None if mask is None else MASK
    pipeline = (
        sources(dims, gt=gt, mask=mask)
        + TargetNode(p, GT, TARGET)
        + DistanceMaskNode(p, TARGET, mask_key, DISTANCE_MASK)
    )
    roi = request_roi(dims)
    with gp.build(pipeline):
        spec = pipeline.spec[DISTANCE_MASK]
        batch = pipeline.request_batch(request(roi, DISTANCE_MASK))

    assert spec.dtype == np.uint8
    assert spec.interpolatable is False
    assert list(batch.arrays) == [DISTANCE_MASK], "only the requested key"
    result = batch[DISTANCE_MASK]
    assert result.spec.roi == roi
    assert result.data.dtype == np.uint8
    assert result.data.shape == (len(CHANNELS), *(roi.shape / spec.voxel_size))
    expected = expected_distance_mask(p, gt, mask, roi, dims)
    np.testing.assert_array_equal(result.data, expected)
    assert expected.any()
    if mask is not None:
        assert not expected.all(), "the test data should mask some voxels"


@pytest.mark.parametrize("dims", DIMS)
def test_distance_mask_node_spec(dims):
    """With a mask the advertised ROI is also limited by the mask's ROI
    shrunk by the context."""
    p = predictor(dims)
    case = CASES[dims]
    vs = gp.Coordinate(case["voxel_size"])
    context = gp.Coordinate(case["context"]) * vs
    # the mask covers only the upper half of the first axis
    mask = make_mask(dims, seed=7)
    half = mask.shape[0] // 2
    mask_array = make_array(
        mask[half:],
        gp.Coordinate(case["offset"]) + vs * gp.Coordinate(half, *[0] * (vs.dims - 1)),
        vs,
    )
    pipeline = (
        (
            ArraySource(GT, make_array(make_gt(dims, seed=7), case["offset"], vs)),
            ArraySource(MASK, mask_array),
        )
        + gp.MergeProvider()
        + TargetNode(p, GT, TARGET)
        + DistanceMaskNode(p, TARGET, MASK, DISTANCE_MASK)
    )
    with gp.build(pipeline):
        target_roi = source_roi(dims).grow(-context, -context)
        mask_roi = mask_array.spec.roi.grow(-context, -context)
        assert pipeline.spec[DISTANCE_MASK].roi == target_roi.intersect(mask_roi)


def test_distance_mask_node_float_mask_dtype():
    """The distance mask keeps the mask's dtype."""
    dims = "2d"
    p = predictor(dims)
    gt = make_gt(dims, seed=8)
    mask = make_mask(dims, seed=8).astype(np.float32)
    pipeline = (
        sources(dims, gt=gt, mask=mask)
        + TargetNode(p, GT, TARGET)
        + DistanceMaskNode(p, TARGET, MASK, DISTANCE_MASK)
    )
    roi = request_roi(dims)
    with gp.build(pipeline):
        assert pipeline.spec[DISTANCE_MASK].dtype == np.float32
        batch = pipeline.request_batch(request(roi, DISTANCE_MASK))
    assert batch[DISTANCE_MASK].data.dtype == np.float32
    np.testing.assert_array_equal(
        batch[DISTANCE_MASK].data, expected_distance_mask(p, gt, mask, roi, dims)
    )


# ---------------------------------------------------------------------------
# the chain: TargetNode + DistanceMaskNode + WeightNode
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("dims", DIMS)
@pytest.mark.parametrize("mask_distances", [True, False])
def test_chain_values(dims, mask_distances):
    p = predictor(dims, mask_distances)
    gt = make_gt(dims, seed=9)
    mask = make_mask(dims, seed=9)
    pipeline, _ = chain(p, dims, gt, mask)
    roi = request_roi(dims)
    keys = [TARGET, WEIGHTS] + ([DISTANCE_MASK] if mask_distances else [])
    with gp.build(pipeline):
        spec = pipeline.spec[WEIGHTS]
        batch = pipeline.request_batch(request(roi, *keys))

    assert spec.dtype == np.float32 and spec.interpolatable is False
    assert sorted(batch.arrays, key=str) == sorted(keys, key=str), "GT/MASK were not requested"
    target = expected_target(p, gt, roi, dims)
    np.testing.assert_array_equal(batch[TARGET].data, target)
    gt_roi = F.to_channels(crop(gt, roi, source_roi(dims), dims), p.class_ids)
    mask_roi = crop(mask, roi, source_roi(dims), dims)
    distance_mask = None
    if mask_distances:
        distance_mask = expected_distance_mask(p, gt, mask, roi, dims)
        np.testing.assert_array_equal(batch[DISTANCE_MASK].data, distance_mask)
    weights, _ = F.hot_distance_weights(gt_roi, mask_roi, distance_mask)
    assert batch[WEIGHTS].data.dtype == np.float32
    assert batch[WEIGHTS].spec.roi == roi
    np.testing.assert_array_equal(batch[WEIGHTS].data, weights)
    assert (batch[WEIGHTS].data[:, mask_roi == 0] == 0).all()

    if not mask_distances:
        # this project's HotDistancePredictor.create_weight (not DaCapo's) on the same arrays
        vs = CASES[dims]["voxel_size"]
        offset = roi.offset
        array_weights, _ = p.create_weight(
            Array(crop(gt, roi, source_roi(dims), dims), offset=offset, voxel_size=vs),
            Array(target, offset=offset, voxel_size=vs),
            Array(mask_roi, offset=offset, voxel_size=vs),
        )
        np.testing.assert_array_equal(batch[WEIGHTS].data, np.asarray(array_weights.data))


@pytest.mark.parametrize("dims", DIMS)
def test_chain_only_weights(dims):
    """Asked only for weights, the chain returns only weights, computed with
    the distance mask the chain would deliver."""
    p = predictor(dims)
    gt = make_gt(dims, seed=10)
    mask = make_mask(dims, seed=10)
    pipeline, _ = chain(p, dims, gt, mask)
    roi = request_roi(dims)
    with gp.build(pipeline):
        batch = pipeline.request_batch(request(roi, WEIGHTS))
    assert list(batch.arrays) == [WEIGHTS]
    gt_roi = F.to_channels(crop(gt, roi, source_roi(dims), dims), p.class_ids)
    weights, _ = F.hot_distance_weights(
        gt_roi,
        crop(mask, roi, source_roi(dims), dims),
        expected_distance_mask(p, gt, mask, roi, dims),
    )
    np.testing.assert_array_equal(batch[WEIGHTS].data, weights)


@pytest.mark.parametrize("dims", DIMS)
def test_chain_autoskip(dims):
    """A request for the inputs only passes through all three nodes."""
    p = predictor(dims)
    gt = make_gt(dims, seed=11)
    pipeline, weight_node = chain(p, dims, gt, make_mask(dims, seed=11), moving_counts=True)
    roi = request_roi(dims)
    with gp.build(pipeline):
        batch = pipeline.request_batch(request(roi, GT))
    assert list(batch.arrays) == [GT]
    np.testing.assert_array_equal(batch[GT].data, crop(gt, roi, source_roi(dims), dims))
    assert weight_node.moving_counts == F.new_moving_counts(4), "skipped: counts untouched"


# ---------------------------------------------------------------------------
# WeightNode moving counts
# ---------------------------------------------------------------------------


def weight_inputs(p, gt, mask, roi, dims):
    gt_roi = F.to_channels(crop(gt, roi, source_roi(dims), dims), p.class_ids)
    return gt_roi, crop(mask, roi, source_roi(dims), dims), None


@pytest.mark.parametrize("dims", DIMS)
def test_weight_node_moving_counts(dims):
    """Two batches equal two calls of the kernel threading the counts."""
    p = predictor(dims, mask_distances=False)
    gt = make_gt(dims, seed=12)
    mask = make_mask(dims, seed=12)
    pipeline, node = chain(p, dims, gt, mask, moving_counts=True)
    rois = [request_roi(dims), request_roi(dims, begin=(0,) * len(CASES[dims]["shape"]))]
    counts = None
    with gp.build(pipeline):
        for roi in rois:
            batch = pipeline.request_batch(request(roi, WEIGHTS))
            expected, counts = F.hot_distance_weights(
                *weight_inputs(p, gt, mask, roi, dims), counts, p.clipmin, p.clipmax
            )
            np.testing.assert_array_equal(batch[WEIGHTS].data, expected)
            assert node.moving_counts == counts
    assert counts != F.new_moving_counts(4)


def test_weight_node_state_dict_round_trip():
    dims = "2d"
    p = predictor(dims, mask_distances=False)
    gt = make_gt(dims, seed=13)
    mask = make_mask(dims, seed=13)
    first, first_node = chain(p, dims, gt, mask, moving_counts=True)
    second, second_node = chain(p, dims, gt, mask, moving_counts=True)
    roi_a = request_roi(dims)
    roi_b = request_roi(dims, begin=(2, 5), shape=(30, 20))
    with gp.build(first):
        first.request_batch(request(roi_a, WEIGHTS))
        state = json.loads(json.dumps(first_node.state_dict()))
        expected = first.request_batch(request(roi_b, WEIGHTS))[WEIGHTS].data
    second_node.load_state_dict(state)
    assert (
        second_node.moving_counts
        == F.hot_distance_weights(*weight_inputs(p, gt, mask, roi_a, dims))[1]
    )
    with gp.build(second):
        restored = second.request_batch(request(roi_b, WEIGHTS))[WEIGHTS].data
    np.testing.assert_array_equal(restored, expected)
    assert second_node.moving_counts == first_node.moving_counts


def test_weight_node_load_state_dict_wrong_channels():
    node = WeightNode(predictor("2d", False), GT, TARGET, WEIGHTS)
    with pytest.raises(ValueError, match="2 channels, expected 4"):
        node.load_state_dict({"moving_counts": [{"0": [0, 1], "1": [0, 1]}] * 2})


@pytest.mark.parametrize("dims", DIMS)
def test_weight_node_without_moving_counts(dims):
    """``moving_counts=False``: every batch is balanced on its own."""
    p = predictor(dims)
    gt = make_gt(dims, seed=14)
    mask = make_mask(dims, seed=14)
    pipeline, node = chain(p, dims, gt, mask, moving_counts=False)
    roi = request_roi(dims)
    with gp.build(pipeline):
        first = pipeline.request_batch(request(roi, WEIGHTS))[WEIGHTS].data
        other = request_roi(dims, begin=CASES[dims]["context"])
        pipeline.request_batch(request(other, WEIGHTS))
        again = pipeline.request_batch(request(roi, WEIGHTS))[WEIGHTS].data
    np.testing.assert_array_equal(first, again)
    gt_roi, mask_roi, _ = weight_inputs(p, gt, mask, roi, dims)
    expected, _ = F.hot_distance_weights(
        gt_roi, mask_roi, expected_distance_mask(p, gt, mask, roi, dims)
    )
    np.testing.assert_array_equal(first, expected)
    assert node.moving_counts == F.new_moving_counts(4)


@pytest.mark.parametrize("dims", DIMS)
def test_weight_node_spec(dims):
    """Weights need no context: advertised where all inputs (and the
    target) exist."""
    p = predictor(dims)
    pipeline, _ = chain(p, dims, make_gt(dims, seed=15), make_mask(dims, seed=15))
    with gp.build(pipeline):
        assert pipeline.spec[WEIGHTS].roi == pipeline.spec[DISTANCE_MASK].roi
        assert pipeline.spec[WEIGHTS].voxel_size == gp.Coordinate(CASES[dims]["voxel_size"])
        assert pipeline.spec[WEIGHTS].dtype == np.float32
        assert pipeline.spec[WEIGHTS].interpolatable is False


# ---------------------------------------------------------------------------
# errors: each names the node and the key
# ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "build_pipeline, node, key",
    [
        (lambda p, gt: sources("2d", mask=gt) + TargetNode(p, GT, TARGET), "TargetNode", "GT"),
        (
            lambda p, gt: (
                sources("2d", gt=gt)
                + TargetNode(p, GT, TARGET)
                + DistanceMaskNode(p, TARGET, MASK, DISTANCE_MASK)
            ),
            "DistanceMaskNode",
            "MASK",
        ),
        (
            lambda p, gt: (
                sources("2d", gt=gt)
                + TargetNode(p, GT, TARGET)
                + WeightNode(p, GT, TARGET, WEIGHTS, None, DISTANCE_MASK)
            ),
            "WeightNode",
            "DISTANCE_MASK",
        ),
        (
            lambda p, gt: sources("2d", gt=gt) + WeightNode(p, GT, TARGET, WEIGHTS, None, MASK),
            "WeightNode",
            "TARGET",
        ),
    ],
)
def test_error_missing_upstream_key(build_pipeline, node, key):
    pipeline = build_pipeline(predictor("2d"), make_gt("2d", seed=16))
    with pytest.raises(gp.PipelineSetupError) as excinfo:
        with gp.build(pipeline):
            pass
    assert_names(excinfo, node, "does not provide", key)


def test_error_voxel_size_mismatch_distance_mask():
    p = predictor("2d")
    gt = make_array(make_gt("2d", seed=17), (-40, 16), (4, 8))
    mask = make_array(make_mask("2d", seed=17), (-40, 16), (8, 8))
    pipeline = (
        (ArraySource(GT, gt), ArraySource(MASK, mask))
        + gp.MergeProvider()
        + TargetNode(p, GT, TARGET)
        + DistanceMaskNode(p, TARGET, MASK, DISTANCE_MASK)
    )
    with pytest.raises(gp.PipelineSetupError) as excinfo:
        with gp.build(pipeline):
            pass
    assert_names(excinfo, "DistanceMaskNode", "MASK", "(8, 8)", "(4, 8)")


def test_error_voxel_size_mismatch_weights():
    p = predictor("3d", mask_distances=False)
    gt = make_array(make_gt("3d", seed=18), (-400, -8, 12), (40, 4, 4))
    mask = make_array(make_mask("3d", seed=18), (-400, -8, 16), (40, 4, 8))
    pipeline = (
        (ArraySource(GT, gt), ArraySource(MASK, mask))
        + gp.MergeProvider()
        + TargetNode(p, GT, TARGET)
        + WeightNode(p, GT, TARGET, WEIGHTS, MASK)
    )
    with pytest.raises(gp.PipelineSetupError) as excinfo:
        with gp.build(pipeline):
            pass
    assert_names(excinfo, "WeightNode", "MASK", "(40, 4, 8)")


@pytest.mark.parametrize("dims", DIMS)
def test_error_no_room_for_context(dims):
    """A request reaching into the context border fails with the ROIs named."""
    p = predictor(dims)
    pipeline = sources(dims, gt=make_gt(dims, seed=19)) + TargetNode(p, GT, TARGET)
    vs = gp.Coordinate(CASES[dims]["voxel_size"])
    with gp.build(pipeline):
        advertised = pipeline.spec[TARGET].roi
        roi = advertised.grow(vs * 0, vs)  # one voxel too far on the positive side
        with pytest.raises(gp.PipelineRequestError) as excinfo:
            pipeline.request_batch(request(roi, TARGET))
    assert_names(excinfo, "TargetNode", "TARGET", str(roi), str(source_roi(dims)), "no room")


def test_error_no_room_at_setup():
    """A source smaller than twice the context leaves nothing to provide."""
    p = HotDistancePredictor(CHANNELS, 200.0, True)
    pipeline = sources("2d", gt=make_gt("2d", seed=20)) + TargetNode(p, GT, TARGET)
    with pytest.raises(gp.PipelineSetupError) as excinfo:
        with gp.build(pipeline):
            pass
    assert_names(excinfo, "TargetNode", "TARGET", "no room", str(source_roi("2d")))


def test_error_request_off_grid():
    p = predictor("2d")
    pipeline = sources("2d", gt=make_gt("2d", seed=21)) + TargetNode(p, GT, TARGET)
    roi = request_roi("2d").shift(gp.Coordinate(2, 0))
    with gp.build(pipeline):
        with pytest.raises(gp.PipelineRequestError) as excinfo:
            pipeline.request_batch(request(roi, TARGET))
    assert_names(excinfo, "TargetNode", "TARGET", "not aligned", str(roi))


def test_error_channel_count():
    gt = np.concatenate([make_gt("2d", seed=22, form="channels")] * 2)[:3]
    pipeline = sources("2d", gt=gt) + TargetNode(predictor("2d"), GT, TARGET)
    with gp.build(pipeline):
        with pytest.raises(gp.PipelineRequestError) as excinfo:
            pipeline.request_batch(request(request_roi("2d"), TARGET))
    assert_names(excinfo, "TargetNode", "GT", "3 channels", "['mito', 'er']")


def test_error_channel_count_weights():
    p = predictor("2d", mask_distances=False)
    gt = make_gt("2d", seed=23, form="channels")
    pipeline = sources(
        "2d", gt=gt[:1], target=np.zeros((4, *gt.shape[1:]), np.float32)
    ) + WeightNode(p, GT, TARGET, WEIGHTS)
    with gp.build(pipeline):
        with pytest.raises(gp.PipelineRequestError) as excinfo:
            pipeline.request_batch(request(request_roi("2d"), WEIGHTS))
    assert_names(excinfo, "WeightNode", "GT", "1 channels")


@pytest.mark.parametrize("node", ["TargetNode", "WeightNode"])
def test_error_labels_not_binary(node):
    p = predictor("2d", mask_distances=False)
    gt = make_gt("2d", seed=24, form="channels")
    gt[1, 3, 4] = 2
    pipeline = sources("2d", gt=gt) + TargetNode(p, GT, TARGET) + WeightNode(p, GT, TARGET, WEIGHTS)
    key = TARGET if node == "TargetNode" else WEIGHTS
    roi = request_roi("2d", begin=(0, 0), shape=(20, 20))
    with gp.build(pipeline):
        with pytest.raises(gp.PipelineRequestError) as excinfo:
            pipeline.request_batch(request(roi, key))
    assert_names(excinfo, node, "GT", "binary", "[2]")


def test_error_class_ids_not_integer():
    gt = make_gt("2d", seed=25).astype(np.float32)
    pipeline = sources("2d", gt=gt) + TargetNode(predictor("2d"), GT, TARGET)
    with gp.build(pipeline):
        with pytest.raises(gp.PipelineRequestError) as excinfo:
            pipeline.request_batch(request(request_roi("2d"), TARGET))
    assert_names(excinfo, "TargetNode", "GT", "float32")


@pytest.mark.parametrize("node", ["DistanceMaskNode", "WeightNode"])
def test_error_mask_shape(node):
    gt = make_gt("2d", seed=26)
    mask = np.stack([make_mask("2d", seed=26)] * 3)  # 3 channels for 2 classes
    p = predictor("2d", mask_distances=node == "DistanceMaskNode")
    pipeline = sources("2d", gt=gt, mask=mask) + TargetNode(p, GT, TARGET)
    if node == "DistanceMaskNode":
        pipeline += DistanceMaskNode(p, TARGET, MASK, DISTANCE_MASK)
        key = DISTANCE_MASK
    else:
        pipeline += WeightNode(p, GT, TARGET, WEIGHTS, MASK)
        key = WEIGHTS
    with gp.build(pipeline):
        with pytest.raises(gp.PipelineRequestError) as excinfo:
            pipeline.request_batch(request(request_roi("2d"), key))
    assert_names(excinfo, node, "MASK", "(3, ")


def test_error_distance_mask_target_channels():
    """A target without its 2C channels is refused, naming the target key."""
    p = predictor("2d")
    target = np.zeros((2, *CASES["2d"]["shape"]), np.float32)  # C instead of 2C
    pipeline = sources("2d", target=target) + DistanceMaskNode(p, TARGET, None, DISTANCE_MASK)
    with gp.build(pipeline):
        with pytest.raises(gp.PipelineRequestError) as excinfo:
            pipeline.request_batch(request(request_roi("2d"), DISTANCE_MASK))
    assert_names(excinfo, "DistanceMaskNode", "TARGET", "(2, 20, 16)")


def test_error_weight_node_distance_mask_parameter():
    with pytest.raises(ValueError, match="distance_mask=None, but predictor.mask_distances"):
        WeightNode(predictor("2d", True), GT, TARGET, WEIGHTS, MASK)
    with pytest.raises(ValueError, match="distance_mask=DISTANCE_MASK is given"):
        WeightNode(predictor("2d", False), GT, TARGET, WEIGHTS, MASK, DISTANCE_MASK)
