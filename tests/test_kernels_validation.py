"""Input checks of the kernels (:mod:`gp_hotdistance.kernels.validation`):
class ids, binary channels, dimensions, mask shapes."""

from __future__ import annotations

import numpy as np
import pytest

import gp_hotdistance.kernels as F


def test_to_channels_large_uint64_ids():
    big = 2**32 + 1
    labels = np.array([[1, big, 2**33, 5]], dtype=np.uint64)
    out = F.to_channels(labels, [big, 2**33])
    # 1 == big mod 2**32 but must not match; 5 is unmapped: background
    np.testing.assert_array_equal(out, [[[0, 1, 0, 0]], [[0, 0, 1, 0]]])
    assert out.dtype == np.uint8


@pytest.mark.parametrize(
    "labels, match",
    [
        (np.zeros((3, 3), dtype=np.complex64), "dtype=complex64"),
        (np.array([["a", "b"]]), "dtype=<U1"),
        (np.zeros((3, 3), dtype=np.float32), "dtype=float32"),
    ],
)
def test_to_channels_rejects_non_integer(labels, match):
    with pytest.raises(TypeError, match=match):
        F.to_channels(labels, [1])


def test_to_channels_rejects_bad_ids():
    with pytest.raises(ValueError, match=r"class_ids.*\[\]"):
        F.to_channels(np.zeros((2, 2), dtype=int), [])
    with pytest.raises(ValueError, match=r"class_ids.*\[1, 1\]"):
        F.to_channels(np.zeros((2, 2), dtype=int), [1, 1])


@pytest.mark.parametrize("bad", [2, -1, 0.5])
def test_check_binary_rejects_values(bad):
    gt = np.zeros((2, 3, 3), dtype=np.float32)
    gt[1, 1, 1] = bad
    with pytest.raises(ValueError, match=rf"gt must be binary.*\[{float(bad)}\]"):
        F.check_binary(gt, "gt")


@pytest.mark.parametrize(
    "dtype, bad", [(np.uint8, 2), (np.uint8, 255), (np.int8, -1), (np.int64, 2), (np.uint64, 2**63)]
)
def test_check_binary_integer_dtypes(dtype, bad):
    gt = np.zeros((2, 3, 3), dtype=dtype)
    gt[0, 0, 0] = 1
    F.check_binary(gt, "gt")  # 0/1 passes
    gt[1, 2, 0] = bad
    with pytest.raises(ValueError, match=rf"gt must be binary.*\[{bad}\]"):
        F.check_binary(gt, "gt")


@pytest.mark.parametrize("dtype", [np.complex128, "U1", object])
def test_check_binary_rejects_dtype(dtype):
    gt = np.zeros((2, 3, 3), dtype=dtype)
    with pytest.raises(TypeError, match=r"gt must be .*dtype="):
        F.check_binary(gt, "gt")


@pytest.mark.parametrize("ndim", [0, 1, 4])
def test_check_dims(ndim):
    with pytest.raises(
        ValueError, match=rf"labels must have 2 or 3 spatial dimensions, got {ndim}"
    ):
        F.check_dims(ndim, "labels")


@pytest.mark.parametrize("mask_shape", [(4, 4), (3, 5, 5), (2, 5, 4)])
def test_broadcast_mask_rejects_shape(mask_shape):
    with pytest.raises(ValueError, match=rf"mask shape \({mask_shape[0]}, "):
        F.broadcast_mask(np.ones(mask_shape), (2, 5, 5))
    with pytest.raises(ValueError, match="mask shape"):
        F.distance_mask(np.zeros((2, 5, 5), np.float32), np.ones(mask_shape), (1, 1), 1, 0, 1)


def test_broadcast_mask_spatial():
    mask = np.array([[0, 1, 1], [1, 0, 1]], dtype=np.uint8)
    out = F.broadcast_mask(mask, (4, 2, 3))
    assert out.shape == (4, 2, 3)
    np.testing.assert_array_equal(out[3], mask)


@pytest.mark.parametrize("key", ["0", 0.0, True])
def test_check_moving_counts_takes_int_classes_only(key):
    # the "0"/"1" keys of a JSON round trip are the loader's to convert
    # (WeightNode.load_state_dict); the kernel takes the ints 0 and 1
    with pytest.raises(ValueError, match=rf"moving_counts\[0\] has class key {key!r}"):
        F.check_moving_counts([{key: (0, 1), 1: (0, 1)}], 1)
    assert F.check_moving_counts([{0: (2, 3), 1: (0, 1.5)}], 1) == [{0: (2, 3), 1: (0, 1.5)}]


@pytest.mark.parametrize(
    "class_ids, classes, error, part",
    [
        ([], 0, ValueError, "at least one class id, got []"),
        ([1, 1], 2, ValueError, "one unique id per channel (2), got [1, 1]"),
        ([1, 2], 3, ValueError, "one unique id per channel (3), got [1, 2]"),
        ([-1, 2], 2, ValueError, "[0, 2**64)"),
        ([1, 2**64], 2, ValueError, str(2**64)),
        ([1.0, 2], 2, TypeError, "integers, got [1.0, 2]"),
        ([True, 2], 2, TypeError, "integers, got [True, 2]"),
        ("12", 2, TypeError, "a list of integers, got '12'"),
    ],
)
def test_check_class_ids(class_ids, classes, error, part):
    """The one check of class ids: the predictor, a Sample and to_channels."""
    with pytest.raises(error) as excinfo:
        F.check_class_ids(class_ids, classes)
    assert part in str(excinfo.value)
    assert F.check_class_ids([np.uint64(2**64 - 1), 0], 2) == (2**64 - 1, 0)
