"""Bad input at the package boundary: every case is a clear error that names
the parameter, key or dataset and the offending value, never a silent wrong
batch. Valid edge cases (numpy scalars, fractional float masks) are checked
against hand-computed values."""

from __future__ import annotations

import json
import math
import re

import gunpowder as gp
import numpy as np
import pytest
from funlib.geometry import Coordinate, Roi
from funlib.persistence import Array

from gp_hotdistance import DistanceMaskNode, HotDistancePredictor, TargetNode, WeightNode
from gp_hotdistance import functional as F
from tests.helpers import (
    DISTANCE_MASK,
    GT,
    MASK,
    TARGET,
    WEIGHTS,
    assert_names,
    chain,
    make_gt,
    make_mask,
    predictor,
    request,
    request_roi,
    sources,
)

AXES = {2: ["y", "x"], 3: ["z", "y", "x"]}
NAN, INF = float("nan"), float("inf")


def make_predictor(**kwargs) -> HotDistancePredictor:
    args = dict(channels=["a", "b"], scale_factor=10.0, mask_distances=True)
    args.update(kwargs)
    return HotDistancePredictor(**args)


def channel_array(data, offset=(0, 0), voxel_size=(4, 4)) -> Array:
    spatial = AXES[len(voxel_size)]
    axes = spatial if data.ndim == len(spatial) else ["c^", *spatial]
    return Array(data, offset=offset, voxel_size=voxel_size, axis_names=axes)


def message_has(excinfo: pytest.ExceptionInfo, *parts: str) -> None:
    text = str(excinfo.value)
    for part in parts:
        assert part in text, f"{part!r} missing from the error: {text}"


# ---------------------------------------------------------------------------
# masks: finite, within [0, 1]; integer masks 0/1
# ---------------------------------------------------------------------------

BAD_MASKS = [
    # (dtype, bad value, how the value appears in the message)
    (np.float32, NAN, "nan"),
    (np.float64, INF, "inf"),
    (np.float32, -INF, "-inf"),
    (np.float32, 1.5, "1.5"),
    (np.float32, -0.25, "-0.25"),
    (np.uint8, 255, "255"),
    (np.uint8, 2, "2"),
    (np.int8, -1, "-1"),
    (np.int64, 7, "7"),
]


def mask_with(dtype, bad, shape=(4, 4)) -> np.ndarray:
    mask = np.ones(shape, dtype=dtype)
    mask[1, 2] = bad
    return mask


@pytest.mark.parametrize("dtype, bad, shown", BAD_MASKS)
def test_check_mask_rejects(dtype, bad, shown):
    with pytest.raises(ValueError) as excinfo:
        F.check_mask(mask_with(dtype, bad), "my_mask")
    message_has(excinfo, "my_mask", f"[{shown}]", "1 voxels")


def test_check_mask_lists_a_few_values():
    mask = np.arange(-3, 13, dtype=np.int16).reshape(4, 4)  # 14 bad values
    with pytest.raises(ValueError) as excinfo:
        F.check_mask(mask)
    message_has(excinfo, "mask must hold only 0 and 1", "14 voxels", "[-3, -2, -1, 2, 3]")


@pytest.mark.parametrize(
    "mask",
    [
        np.array([[0.0, 0.25], [1.0, 0.5]], dtype=np.float32),  # fractional weights
        np.array([[0, 1], [1, 1]], dtype=np.uint8),
        np.array([[0, 1], [1, 1]], dtype=np.int64),
        np.array([[False, True], [True, True]]),
        np.zeros((0, 3), dtype=np.float32),  # nothing to check
    ],
)
def test_check_mask_accepts(mask):
    F.check_mask(mask)  # raises on failure


@pytest.mark.parametrize("dtype", [np.complex64, object, "U1"])
def test_check_mask_rejects_dtype(dtype):
    with pytest.raises(TypeError, match=r"my_mask must be a bool, integer or float array"):
        F.check_mask(np.zeros((2, 2), dtype=dtype), "my_mask")


@pytest.mark.parametrize("dtype, bad, shown", BAD_MASKS)
@pytest.mark.parametrize("spatial", [True, False])
def test_broadcast_mask_rejects_values(dtype, bad, shown, spatial):
    shape = (4, 4) if spatial else (2, 4, 4)
    mask = np.ones(shape, dtype=dtype)
    mask[..., 1, 2] = bad
    with pytest.raises(ValueError) as excinfo:
        F.broadcast_mask(mask, (2, 4, 4), name="MASK")
    message_has(excinfo, "MASK must hold", f"[{shown}]")


@pytest.mark.parametrize("dtype, bad, shown", BAD_MASKS)
def test_kernels_reject_bad_mask(dtype, bad, shown):
    """Every functional entry point that takes a mask refuses it."""
    gt = np.zeros((2, 4, 4), dtype=np.uint8)
    gt[:, :2] = 1
    mask = mask_with(dtype, bad)
    distances = F.hot_distance_target(gt, (4, 4), 10.0)[2:]
    calls = [
        lambda: F.balance_weights(gt, mask),
        lambda: F.hot_distance_weights(gt, mask, None),
        lambda: F.hot_distance_weights(gt, None, np.stack([mask, mask])),
        lambda: F.distance_mask(distances, mask, (4, 4), 10.0, 0.05, 0.8),
    ]
    for call in calls:
        with pytest.raises(ValueError, match=re.escape(f"[{shown}]")):
            call()


@pytest.mark.parametrize("dtype, bad, shown", BAD_MASKS)
@pytest.mark.parametrize("mask_distances", [True, False])
def test_create_weight_rejects_bad_mask(dtype, bad, shown, mask_distances):
    p = make_predictor(mask_distances=mask_distances)
    gt = channel_array(np.zeros((2, 4, 4), np.uint8))
    target = p.create_target(gt)
    mask = channel_array(mask_with(dtype, bad))
    with pytest.raises(ValueError) as excinfo:
        p.create_weight(gt, target, mask)
    message_has(excinfo, "mask must hold", f"[{shown}]")
    with pytest.raises(ValueError) as excinfo:
        p.create_distance_mask(target.data[2:], mask.data, (4, 4))
    message_has(excinfo, "mask must hold", f"[{shown}]")


def test_fractional_float_mask_weights():
    """A float mask weighs voxels: by hand, labels [1, 0, 0, 0] with scale
    [0.5, 1, 1, 1]: masked_in = 3.5, den = 1 + 3.5 = 4.5 for both classes;
    class 0: 3 voxels, frac 3 / 4.5, w0 = 4.5 / 6 = 0.75; class 1: 1 voxel,
    frac 1 / 4.5, w1 = 4.5 / 2 = 2.25; weights = scale * w[label]."""
    labels = np.array([[[1, 0, 0, 0]]], dtype=np.uint8)
    scale = np.array([[0.5, 1.0, 1.0, 1.0]], dtype=np.float32)
    weights, counts = F.balance_weights(labels, scale, clipmin=0.01, clipmax=0.99)
    np.testing.assert_allclose(weights, [[[0.5 * 2.25, 0.75, 0.75, 0.75]]], rtol=1e-6)
    assert counts == [{0: (3, 4.5), 1: (1, 4.5)}]


# ---------------------------------------------------------------------------
# masks inside pipelines: the node and the key are named, counts stay finite
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("dtype, bad, shown", [(np.float32, NAN, "nan"), (np.uint8, 255, "255")])
@pytest.mark.parametrize("mask_distances", [True, False])
def test_nodes_reject_bad_mask_and_keep_counts(dtype, bad, shown, mask_distances):
    p = predictor("2d", mask_distances)
    gt = make_gt("2d", seed=31)
    good = make_mask("2d", seed=31).astype(dtype)
    pipeline, node = chain(p, "2d", gt, good, moving_counts=True)
    roi = request_roi("2d")
    with gp.build(pipeline):
        pipeline.request_batch(request(roi, WEIGHTS))
    counts = node.moving_counts
    assert all(math.isfinite(v) for c in counts for pair in c.values() for v in pair)

    bad_mask = good.copy()
    bad_mask[10, 8] = bad  # inside the request
    pipeline, node = chain(p, "2d", gt, bad_mask, moving_counts=True)
    node.moving_counts = counts
    with gp.build(pipeline):
        with pytest.raises(gp.PipelineRequestError) as excinfo:
            pipeline.request_batch(request(roi, WEIGHTS))
    # the first node to read the mask names itself and the key
    first = "DistanceMaskNode" if mask_distances else "WeightNode"
    assert_names(excinfo, first, "MASK", f"[{shown}]")
    assert node.moving_counts == counts, "a refused batch must not touch the counts"


def test_distance_mask_node_rejects_bad_mask():
    p = predictor("2d", True)
    mask = make_mask("2d", seed=32).astype(np.float32)
    mask[2, 2] = -1.0  # outside the request, inside its context (from voxel (1, 1))
    pipeline = (
        sources("2d", gt=make_gt("2d", seed=32), mask=mask)
        + TargetNode(p, GT, TARGET)
        + DistanceMaskNode(p, TARGET, MASK, DISTANCE_MASK)
    )
    roi = request_roi("2d")
    with gp.build(pipeline):
        with pytest.raises(gp.PipelineRequestError) as excinfo:
            pipeline.request_batch(request(roi, DISTANCE_MASK))
    assert_names(excinfo, "DistanceMaskNode", "MASK", "[-1.0]")


# ---------------------------------------------------------------------------
# moving counts
# ---------------------------------------------------------------------------

GOOD_CHANNEL = {"0": [3, 10.5], "1": [4, 10.5]}


def state_with(channel, index=1, channels=4):
    counts = [dict(GOOD_CHANNEL) for _ in range(channels)]
    counts[index] = channel
    return {"moving_counts": counts}


BAD_COUNTS = [
    # (state, error type, parts of the message)
    ({}, ValueError, ["no 'moving_counts'", "[]"]),
    (None, TypeError, ["state must be a dict", "None"]),
    ([[0, 1]], TypeError, ["state must be a dict", "[[0, 1]]"]),
    ({"moving_counts": None}, TypeError, ["moving_counts must be a list", "None"]),
    ({"moving_counts": {"0": [0, 1]}}, TypeError, ["moving_counts must be a list"]),
    (state_with({"0": [0, 1]}), ValueError, ["moving_counts[1]", "classes 0 and 1", "keys [0]"]),
    (state_with({}), ValueError, ["moving_counts[1]", "classes 0 and 1", "[]"]),
    (state_with(None), TypeError, ["moving_counts[1]", "None"]),
    (state_with([[0, 1], [0, 1]]), TypeError, ["moving_counts[1]", "[[0, 1], [0, 1]]"]),
    (state_with({"0": [0, 1], "a": [0, 1]}), ValueError, ["moving_counts[1]", "'a'"]),
    (state_with({"0": [0, 1], "2": [0, 1]}), ValueError, ["moving_counts[1]", "'2'"]),
    (state_with({"0": [0, 1], 1.0: [0, 1]}), ValueError, ["moving_counts[1]", "1.0"]),
    (state_with({"0": [0, 1], "1": [0, 1], "2": [0, 1]}), ValueError, ["'2'"]),
    (state_with({"0": [NAN, 1], "1": [0, 1]}), ValueError, ["moving_counts[1][0]", "nan"]),
    (state_with({"0": [0, INF], "1": [0, 1]}), ValueError, ["moving_counts[1][0]", "inf"]),
    (state_with({"0": [0, 1], "1": [-2, 5]}), ValueError, ["moving_counts[1][1]", "-2"]),
    (state_with({"0": [0, 0.5], "1": [0, 1]}), ValueError, ["moving_counts[1][0]", "0.5"]),
    (state_with({"0": ["3", 10], "1": [0, 1]}), TypeError, ["moving_counts[1][0]", "'3'"]),
    (state_with({"0": [True, 10], "1": [0, 1]}), TypeError, ["moving_counts[1][0]", "True"]),
    (state_with({"0": [0, 1, 2], "1": [0, 1]}), TypeError, ["moving_counts[1][0]", "[0, 1, 2]"]),
    (state_with({"0": "01", "1": [0, 1]}), TypeError, ["moving_counts[1][0]", "'01'"]),
    ({"moving_counts": [GOOD_CHANNEL] * 3}, ValueError, ["3 channels, expected 4"]),
]


@pytest.mark.parametrize("state, error, parts", BAD_COUNTS)
def test_load_state_dict_refuses(state, error, parts):
    node = WeightNode(predictor("2d", False), GT, TARGET, WEIGHTS)
    before = node.moving_counts
    with pytest.raises(error) as excinfo:
        node.load_state_dict(state)
    message_has(excinfo, "WeightNode", *parts)
    assert node.moving_counts == before


def test_load_state_dict_accepts_json_and_int_keys():
    node = WeightNode(predictor("2d", False), GT, TARGET, WEIGHTS)
    node.load_state_dict(json.loads(json.dumps(state_with(GOOD_CHANNEL))))
    assert node.moving_counts == [{0: (3, 10.5), 1: (4, 10.5)}] * 4
    node.load_state_dict(state_with({0: (np.int64(2), np.float32(3.0)), 1: (0, 1)}, index=0))
    assert node.moving_counts[0] == {0: (2, 3.0), 1: (0, 1)}
    assert node.state_dict()["moving_counts"][0] == {"0": [2, 3.0], "1": [0, 1]}


@pytest.mark.parametrize(
    "counts, error, part",
    [
        ([{0: (NAN, 1), 1: (0, 1)}], ValueError, "moving_counts[0][0]"),
        ([{0: (0, 1)}], ValueError, "classes 0 and 1"),
        ([{0: (0, 1), 1: (0, 1)}] * 2, ValueError, "2 channels, expected 1"),
        ({0: (0, 1), 1: (0, 1)}, TypeError, "must be a list"),
    ],
)
def test_balance_weights_refuses_counts(counts, error, part):
    labels = np.array([[[0, 1, 1]]], dtype=np.uint8)
    with pytest.raises(error) as excinfo:
        F.balance_weights(labels, np.ones(labels.shape), counts)
    message_has(excinfo, part)


def test_hot_distance_weights_names_the_channel():
    """Counts of the distance channels are named by their index in all 2C."""
    gt = np.zeros((2, 3, 3), dtype=np.uint8)
    counts = F.new_moving_counts(4)
    counts[2] = {0: (-1, 1), 1: (0, 1)}
    with pytest.raises(ValueError, match=re.escape("moving_counts[2][0] = (-1, 1)")):
        F.hot_distance_weights(gt, None, None, counts)
    with pytest.raises(ValueError, match="holds 3 channels, expected 4"):
        F.hot_distance_weights(gt, None, None, counts[:3])


def test_create_weight_refuses_counts():
    p = make_predictor(mask_distances=False)
    gt = channel_array(np.zeros((2, 4, 4), np.uint8))
    target = p.create_target(gt)
    counts = F.new_moving_counts(4)
    counts[3] = {0: (0, 1), 1: (1, NAN)}
    with pytest.raises(ValueError) as excinfo:
        p.create_weight(gt, target, None, counts)
    message_has(excinfo, "moving_class_counts[3][1]", "nan")


# ---------------------------------------------------------------------------
# predictor parameters
# ---------------------------------------------------------------------------

BAD_PARAMETERS = [
    # (keyword arguments, error type, parts of the message)
    (dict(scale_factor=INF), ValueError, ["scale_factor", "inf"]),
    (dict(scale_factor=1e400), ValueError, ["scale_factor", "inf"]),
    (dict(scale_factor=10**400), ValueError, ["scale_factor", "1000000"]),
    (dict(scale_factor=np.float32(NAN)), ValueError, ["scale_factor", "nan"]),
    (dict(scale_factor=True), TypeError, ["scale_factor", "True"]),
    (dict(scale_factor=None), TypeError, ["scale_factor", "None"]),
    (dict(mask_distances="no"), TypeError, ["mask_distances", "'no'"]),
    (dict(mask_distances=1), TypeError, ["mask_distances", "1"]),
    (dict(mask_distances=None), TypeError, ["mask_distances", "None"]),
    (dict(epsilon=NAN), ValueError, ["epsilon", "nan"]),
    (dict(epsilon=INF), ValueError, ["epsilon", "inf"]),
    (dict(epsilon=-0.1), ValueError, ["epsilon", "-0.1"]),
    (dict(epsilon="0.05"), TypeError, ["epsilon", "'0.05'"]),
    (dict(threshold=NAN), ValueError, ["threshold", "nan"]),
    (dict(threshold=0.0), ValueError, ["threshold", "0.0"]),
    (dict(threshold=1.5), ValueError, ["threshold", "1.5"]),
    (dict(clipmin=NAN), ValueError, ["clipmin", "nan"]),
    (dict(clipmax=NAN), ValueError, ["clipmax", "nan"]),
    (dict(clipmin=0.0), ValueError, ["clipmin=0.0"]),
    (dict(clipmin=0.6, clipmax=0.4), ValueError, ["clipmin=0.6", "clipmax=0.4"]),
    (dict(clipmax=1.5), ValueError, ["clipmax=1.5"]),
    (dict(kernel_size=0), ValueError, ["kernel_size", "0"]),
    (dict(kernel_size=1.5), ValueError, ["kernel_size", "1.5"]),
    (dict(kernel_size=True), ValueError, ["kernel_size", "True"]),
    (dict(class_ids=[1.7, 2]), TypeError, ["class_ids", "1.7"]),
    (dict(class_ids=[1.0, 2]), TypeError, ["class_ids", "1.0"]),
    (dict(class_ids=[True, 2]), TypeError, ["class_ids", "True"]),
    (dict(class_ids=[3, 3]), ValueError, ["class_ids", "[3, 3]"]),
    (dict(class_ids=[np.int64(3), 3]), ValueError, ["class_ids", "3"]),
    (dict(class_ids=[1]), ValueError, ["class_ids", "[1]"]),
    (dict(class_ids=[-1, 2]), ValueError, ["class_ids", "-1"]),
    (dict(class_ids=[1, 2**64]), ValueError, ["class_ids", str(2**64)]),
    (dict(class_ids="12"), TypeError, ["class_ids", "'12'"]),
    (dict(channels=["a", ""]), ValueError, ["channels", "''"]),
    (dict(channels=["a", 1]), ValueError, ["channels", "1"]),
    (dict(channels=["a", "a"]), ValueError, ["channels", "['a', 'a']"]),
    (dict(channels="ab"), ValueError, ["channels", "'ab'"]),
    (dict(norm=None), ValueError, ["norm", "None"]),
    (dict(norm="sigmoid"), ValueError, ["norm", "'sigmoid'"]),
    (dict(norm="none"), ValueError, ["norm", "'none'"]),
    (dict(norm="TANH"), ValueError, ["norm", "'TANH'"]),
    (dict(scale_factor=0), ValueError, ["scale_factor", "0"]),
    (dict(scale_factor=-1), ValueError, ["scale_factor", "-1"]),
    (dict(scale_factor=0.0), ValueError, ["scale_factor", "0.0"]),
    (dict(scale_factor=NAN), ValueError, ["scale_factor", "nan"]),
    (dict(scale_factor="50"), TypeError, ["scale_factor", "'50'"]),
    (dict(channels=[]), ValueError, ["channels", "[]"]),
    (dict(channels=()), ValueError, ["channels", "()"]),
]


@pytest.mark.parametrize("kwargs, error, parts", BAD_PARAMETERS)
def test_bad_parameters(kwargs, error, parts):
    with pytest.raises(error) as excinfo:
        make_predictor(**kwargs)
    message_has(excinfo, *parts)


def test_numpy_scalars_are_accepted():
    p = make_predictor(
        scale_factor=np.float32(10),
        mask_distances=np.True_,
        kernel_size=np.int64(3),
        epsilon=np.float64(0.05),
        threshold=np.float32(0.5),
        clipmin=np.float16(0.125),
        clipmax=np.float64(0.875),
        class_ids=[np.uint64(2**40 + 3), np.int8(2)],
    )
    assert (p.scale_factor, p.mask_distances, p.kernel_size) == (10.0, True, 3)
    assert type(p.scale_factor) is float and type(p.kernel_size) is int
    assert (p.threshold, p.clipmin, p.clipmax) == (0.5, 0.125, 0.875)
    assert p.class_ids == (2**40 + 3, 2)
    labels = np.array([[0, 2**40 + 3], [2, 3]], dtype=np.uint64)
    np.testing.assert_array_equal(p.gt_channels(labels, 2), [[[0, 1], [0, 0]], [[0, 0], [1, 0]]])
    reference = make_predictor(scale_factor=10.0)
    gt = np.zeros((2, 6, 6), dtype=np.uint8)
    gt[:, 2:4, 1:5] = 1
    np.testing.assert_array_equal(p.process(gt, (4, 4)), reference.process(gt, (4, 4)))


def test_parameter_edges_are_accepted():
    p = make_predictor(epsilon=0, threshold=1, clipmin=1, clipmax=1, class_ids=[0, 2**64 - 1])
    assert (p.epsilon, p.threshold, p.clipmin, p.clipmax) == (0.0, 1.0, 1.0, 1.0)
    assert p.class_ids == (0, 2**64 - 1)


def test_to_channels_refuses_float_ids():
    with pytest.raises(TypeError, match=r"class_ids must be integers, got \[1.7\]"):
        F.to_channels(np.zeros((2, 2), dtype=np.int64), [1.7])


# ---------------------------------------------------------------------------
# voxel sizes
# ---------------------------------------------------------------------------

BAD_VOXEL_SIZES = [(0, 4), (-4, 4), (NAN, 4), (4, INF)]


@pytest.mark.parametrize("voxel_size", BAD_VOXEL_SIZES)
def test_bad_voxel_size_in_arrays(voxel_size):
    p = make_predictor()
    gt = np.zeros((2, 4, 4), dtype=np.uint8)
    shown = repr(tuple(voxel_size))
    calls = [
        lambda: p.process(gt, voxel_size),
        lambda: p.create_distance_mask(np.zeros((2, 4, 4), np.float32), None, voxel_size),
        lambda: F.hot_distance_target(gt, voxel_size, 10.0),
        lambda: F.distance_mask(
            np.zeros((2, 4, 4), np.float32), np.ones((4, 4)), voxel_size, 10.0, 0.05, 0.8
        ),
    ]
    for call in calls:
        with pytest.raises(ValueError) as excinfo:
            call()
        message_has(excinfo, "voxel_size must be positive and finite", shown)


@pytest.mark.parametrize(
    "voxel_size, error, part",
    [
        ((4,), ValueError, "voxel_size must have 2 entries"),
        ((4, "4"), TypeError, "voxel_size must hold real numbers"),
        ((4, True), TypeError, "voxel_size must hold real numbers"),
        (4, TypeError, "voxel_size must be a sequence of numbers, got 4"),
    ],
)
def test_voxel_size_shape_and_type(voxel_size, error, part):
    with pytest.raises(error, match=re.escape(part)):
        F.check_voxel_size(voxel_size, 2)


def test_voxel_size_numpy_and_float_accepted():
    assert F.check_voxel_size(np.array([40, 4, 4]), 3) == (40, 4, 4)
    assert F.check_voxel_size((np.float32(2.5), 4.0)) == (2.5, 4.0)


@pytest.mark.parametrize("voxel_size", [(0, 4), (-4, 4)])
@pytest.mark.parametrize("mask_distances", [True, False])
def test_bad_voxel_size_in_context(voxel_size, mask_distances):
    p = make_predictor(mask_distances=mask_distances)
    spec = gp.ArraySpec(roi=Roi((0, 0), (16, 16)), voxel_size=Coordinate(voxel_size))
    with pytest.raises(ValueError) as excinfo:
        p.gt_region_for_roi(spec)
    message_has(excinfo, "target_spec.voxel_size", str(tuple(voxel_size)))
    with pytest.raises(ValueError) as excinfo:
        p.padding(Coordinate(voxel_size))
    message_has(excinfo, "gt_voxel_size", str(tuple(voxel_size)))


def test_padding_refuses_fractional_voxel_size():
    # Coordinate((4.5, 4)) would silently become (4, 4)
    with pytest.raises(ValueError, match=r"gt_voxel_size must be integers.*\(4\.5, 4\)"):
        make_predictor().padding((4.5, 4))
    assert make_predictor().padding((4.0, 4)) == Coordinate(10, 10)


def test_node_refuses_zero_voxel_size():
    p = predictor("2d", False)
    spec = gp.ArraySpec(roi=Roi((0, 0), (64, 64)), voxel_size=Coordinate(0, 4), dtype=np.uint8)

    class Source(gp.BatchProvider):
        def setup(self):
            self.provides(GT, spec)

        def provide(self, request):  # pragma: no cover - never reached
            raise AssertionError

    pipeline = Source() + TargetNode(p, GT, TARGET)
    with pytest.raises(gp.PipelineSetupError) as excinfo:
        with gp.build(pipeline):
            pass
    assert_names(excinfo, "TargetNode", "GT", "voxel size (0, 4)")


# ---------------------------------------------------------------------------
# empty arrays, and arrays that do not cover the target
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("shape", [(2, 0, 4), (2, 4, 0), (0, 4)])
def test_empty_arrays(shape):
    p = make_predictor()
    data = np.zeros(shape, dtype=np.uint8)
    with pytest.raises(ValueError) as excinfo:
        p.process(data, (4, 4))
    message_has(excinfo, "labels is empty", str(shape))
    if len(shape) == 3:
        with pytest.raises(ValueError) as excinfo:
            p.create_distance_mask(data.astype(np.float32), None, (4, 4))
        message_has(excinfo, "distances is empty", str(shape))
        with pytest.raises(ValueError) as excinfo:
            p.create_target(channel_array(data))
        message_has(excinfo, "is empty", str(shape))


@pytest.mark.parametrize(
    "name, offset, shape, voxel_size, parts",
    [
        # mask shifted by one voxel: covers only part of the target ROI
        ("mask", (4, 0), (4, 4), (4, 4), ["mask ROI [4:20, 0:16]", "target ROI [0:16, 0:16]"]),
        ("mask", (0, 0), (3, 4), (4, 4), ["mask ROI [0:12, 0:16]", "does not cover"]),
        ("gt", (0, 4), (4, 4), (4, 4), ["gt ROI [0:16, 4:20]", "target ROI [0:16, 0:16]"]),
        ("mask", (2, 0), (5, 4), (4, 4), ["mask ROI [2:22, 0:16]", "not on the voxel grid"]),
        ("mask", (0, 0), (2, 2), (8, 8), ["mask has voxel size (8, 8)", "(4, 4)"]),
    ],
)
@pytest.mark.parametrize("mask_distances", [True, False])
def test_create_weight_inputs_must_cover_target(
    name, offset, shape, voxel_size, parts, mask_distances
):
    p = make_predictor(mask_distances=mask_distances)
    gt = channel_array(np.zeros((2, 4, 4), np.uint8))
    target = p.create_target(gt)
    other = channel_array(np.ones(shape, np.uint8), offset, voxel_size)
    args = {"gt": gt, "mask": None}
    args[name] = other if name == "mask" else channel_array(np.zeros((2, *shape), np.uint8), offset)
    with pytest.raises(ValueError) as excinfo:
        p.create_weight(args["gt"], target, args["mask"])
    message_has(excinfo, *parts)


def test_create_weight_reads_a_larger_mask_at_the_target():
    """A mask larger than the target is read at the target ROI."""
    p = make_predictor(mask_distances=False)
    gt = channel_array(np.zeros((2, 4, 4), np.uint8))
    gt.data[:, :2] = 1
    target = p.create_target(gt)
    big = np.zeros((6, 6), np.uint8)
    big[1:5, 1:5] = 1
    mask = channel_array(big, (-4, -4))
    weights, _ = p.create_weight(gt, target, mask)
    expected, _ = p.create_weight(gt, target, channel_array(np.ones((4, 4), np.uint8)))
    np.testing.assert_array_equal(np.asarray(weights.data), np.asarray(expected.data))
