"""Kernel-level tests of gp_hotdistance.functional: exact values, the face
distance definition (brute force), analytic shapes and parity with the slow
doubled-grid reference."""

from __future__ import annotations

import itertools
import math
import zlib

import numpy as np
import pytest

from gp_hotdistance import functional as F
from tests import reference as R
from tests.helpers import smooth_blobs

# ---------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------


def brute_force_signed_distance(channel: np.ndarray, voxel_size) -> np.ndarray:
    """The definition: min over every face centre between differing
    neighbours of the world distance to each voxel centre, O(N * F)."""
    channel = np.asarray(channel) != 0
    vs = np.asarray(voxel_size, dtype=np.float64)
    # doubled integer coordinates: voxel i at 2i, the face between i, i+1 at 2i+1
    centres = 2 * np.indices(channel.shape).reshape(channel.ndim, -1).T
    faces = []
    for axis in range(channel.ndim):
        lo = [slice(None)] * channel.ndim
        hi = [slice(None)] * channel.ndim
        lo[axis] = slice(0, -1)
        hi[axis] = slice(1, None)
        where = np.argwhere(channel[tuple(lo)] != channel[tuple(hi)]) * 2
        where[:, axis] += 1
        faces.append(where)
    faces = np.concatenate(faces)
    if len(faces) == 0:
        extent = min(s * v / 2 for s, v in zip(channel.shape, vs, strict=True))
        return np.full(channel.shape, extent if channel.all() else -extent, dtype=np.float32)
    delta = (centres[:, None, :] - faces[None, :, :]) * (vs / 2)
    squared = (delta * delta).sum(axis=-1).min(axis=1)
    distance = np.sqrt(squared).astype(np.float32).reshape(channel.shape)
    distance[~channel] *= -1
    return distance


# ---------------------------------------------------------------------------
# hand-checkable values
# ---------------------------------------------------------------------------


def test_row_distances_exact():
    # one face between x=1 and x=2; voxel 4 wide: centres at 2, 6, ... from it
    channel = np.array([[0, 0, 1, 1, 1]])
    expected = np.array([[-6, -2, 2, 6, 10]], dtype=np.float32)
    np.testing.assert_array_equal(F.signed_distance(channel, (1, 4)), expected)
    np.testing.assert_array_equal(R.reference_signed_distance(channel, (1, 4)), expected)


def test_single_voxel_anisotropic_2d():
    # a lone foreground voxel at (1, 1), voxel (2, 1): faces of that voxel at
    # (0.5, 1), (1.5, 1) (normal to y, 1 away in world) and (1, 0.5), (1, 1.5)
    # (normal to x, 0.5 away)
    channel = np.zeros((3, 3), dtype=np.uint8)
    channel[1, 1] = 1
    expected = np.array(
        [
            [-math.sqrt(2), -1, -math.sqrt(2)],  # corner: to (0.5, 1) is (1, 1) world
            [-0.5, 0.5, -0.5],  # x-neighbours touch an x-face; centre: nearest x-face
            [-math.sqrt(2), -1, -math.sqrt(2)],
        ],
        dtype=np.float32,
    )
    np.testing.assert_array_equal(F.signed_distance(channel, (2, 1)), expected)


def test_diagonal_corner_2d():
    # foreground quadrant y>=1, x>=1 of 3x3, voxel (1, 1): voxel (0, 0) is
    # sqrt(0.5^2 + 1^2) from the faces (0.5, 1) and (1, 0.5)
    channel = np.zeros((3, 3), dtype=np.uint8)
    channel[1:, 1:] = 1
    d = F.signed_distance(channel, (1, 1))
    assert d[0, 0] == np.float32(-math.sqrt(1.25))
    assert d[1, 1] == np.float32(0.5)  # touches two faces
    assert d[2, 2] == np.float32(1.5)  # 1.5 from the faces (2, 0.5) and (0.5, 2)
    assert d[0, 2] == np.float32(-0.5)


@pytest.mark.parametrize(
    "shape, voxel_size, extent",
    [
        ((3, 5), (4, 4), 6.0),  # min(3*4/2, 5*4/2)
        ((3, 5), (10, 1), 2.5),  # min(15, 2.5): anisotropy picks x
        ((4, 4, 4), (40, 4, 4), 8.0),
        ((1, 5), (1, 4), 0.5),  # a length-1 axis gives the smallest extent
    ],
)
@pytest.mark.parametrize("value, sign", [(1, 1.0), (0, -1.0)])
def test_no_boundary_rule(shape, voxel_size, extent, value, sign):
    channel = np.full(shape, value, dtype=np.uint8)
    expected = np.full(shape, sign * extent, dtype=np.float32)
    np.testing.assert_array_equal(F.signed_distance(channel, voxel_size), expected)
    np.testing.assert_array_equal(R.reference_signed_distance(channel, voxel_size), expected)


def test_target_layout_and_tanh():
    gt = np.array([[[0, 0, 1, 1, 1]], [[1, 1, 1, 1, 1]]], dtype=np.uint8)
    target = F.hot_distance_target(gt, (1, 4), 10.0)
    assert target.dtype == np.float32
    assert target.shape == (4, 1, 5)
    np.testing.assert_array_equal(target[:2], gt)
    d = np.array([-6, -2, 2, 6, 10], dtype=np.float32)
    np.testing.assert_array_equal(target[2, 0], np.tanh(d / 10.0))
    # all foreground: +min(1*1/2, 5*4/2) = 0.5
    np.testing.assert_array_equal(target[3], np.tanh(np.float32(0.5) / 10.0))


def test_balance_weights_hand_values():
    labels = np.array([[[0, 0, 1, 1, 1]]], dtype=np.uint8)
    scale = np.ones_like(labels, dtype=np.float32)
    w, counts = F.balance_weights(labels, scale)
    # den = 1 + 5; frac0 = 2/6 -> w0 = 1.5; frac1 = 3/6 -> w1 = 1
    np.testing.assert_array_equal(w, [[[1.5, 1.5, 1, 1, 1]]])
    assert counts == [{0: (2, 6), 1: (3, 6)}]
    w, counts = F.balance_weights(labels, scale, counts)
    # den = 11; frac0 = 4/11 -> w0 = 11/8; frac1 = 6/11 -> w1 = 11/12
    np.testing.assert_allclose(w, [[[11 / 8] * 2 + [11 / 12] * 3]], rtol=1e-7)
    assert counts == [{0: (4, 11), 1: (6, 11)}]


def test_balance_weights_clip_absent_and_mask():
    labels = np.zeros((2, 1, 100), dtype=np.uint8)
    labels[0, 0, 0] = 1
    scale = np.ones(labels.shape, dtype=np.float32)
    scale[1, 0, 50:] = 0  # channel 1: 50 masked in, all background
    w, counts = F.balance_weights(labels, scale)
    # channel 0: frac1 = 1/101 clipped to 0.05 -> 10; frac0 = 99/101 clipped to 0.95
    assert w[0, 0, 0] == np.float32(10.0)
    assert w[0, 0, 1] == np.float32(1 / 1.9)
    # channel 1: class 1 absent (num stays 0), frac0 = 50/51 -> 0.95; masked-out -> 0
    np.testing.assert_array_equal(w[1, 0, 50:], 0)
    assert w[1, 0, 0] == np.float32(1 / 1.9)
    assert counts[1] == {0: (50, 51), 1: (0, 51)}


def test_distance_mask_hand_values():
    # epsilon 0, threshold 1: masked out exactly where |d| >= b (tanh is monotone)
    gt = np.zeros((1, 5, 5), dtype=np.uint8)
    gt[0, :, 2:] = 1  # d along x: -1.5 -0.5 0.5 1.5 2.5
    t = F.hot_distance_target(gt, (1, 1), 7.0)[1:]
    mask = np.ones((5, 5), dtype=np.uint8)
    out = F.distance_mask(t, mask, (1, 1), 7.0, epsilon=0.0, threshold=1.0)
    i, j = np.indices((5, 5))
    b = np.minimum.reduce([i + 1, j + 1, 5 - i, 5 - j])  # to the zero-padded ring
    d = np.abs(np.array([-1.5, -0.5, 0.5, 1.5, 2.5]))[None, :]
    np.testing.assert_array_equal(out[0], (d < b).astype(np.uint8))
    assert out.dtype == np.uint8
    np.testing.assert_array_equal(
        out, R.reference_distance_mask(t, mask, (1, 1), 7.0, epsilon=0.0, threshold=1.0)
    )


def test_distance_mask_keeps_mask_values_and_dtype():
    rng = np.random.default_rng(3)
    t = np.zeros((2, 30, 30), dtype=np.float32)  # |t| + eps = 0.05: only the edge is lost
    mask = rng.uniform(0.5, 1.0, size=(2, 30, 30)).astype(np.float32)
    out = F.distance_mask(t, mask, (4, 4), 10.0, 0.05, 0.8)
    assert out.dtype == np.float32
    kept = out != 0
    np.testing.assert_array_equal(out[kept], mask[kept])
    # b = 4 on the outer ring: tanh(0.4) = 0.38 > 0.05, so nothing is lost
    assert kept.all()
    np.testing.assert_array_equal(out, R.reference_distance_mask(t, mask, (4, 4), 10.0))


# ---------------------------------------------------------------------------
# the definition, by brute force
# ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "shape, voxel_size",
    [
        ((9, 11), (1, 1)),
        ((8, 12), (4, 8)),
        ((7, 9), (1.5, 2.5)),
        ((6, 7, 8), (1, 1, 1)),
        ((6, 7, 8), (40, 4, 4)),
        ((1, 9, 9), (8, 8, 8)),  # length-1 axis
        ((9, 1, 9), (40, 4, 4)),
        ((2, 2, 2), (8, 8, 8)),  # length-2 axes
        ((2, 5), (3, 1)),
        ((1, 7), (1, 4)),
        ((7, 1), (1, 4)),
    ],
)
def test_signed_distance_equals_brute_force(shape, voxel_size):
    rng = np.random.default_rng(zlib.crc32(repr((shape, voxel_size)).encode()))
    for fraction in (0.05, 0.3, 0.5, 0.9):
        channel = (rng.random(shape) < fraction).astype(np.uint8)
        expected = brute_force_signed_distance(channel, voxel_size)
        got = F.signed_distance(channel, voxel_size)
        assert got.dtype == np.float32
        np.testing.assert_array_equal(got, expected, err_msg=f"{shape} {voxel_size}")


@pytest.mark.parametrize("voxel_size", [(1, 1, 1), (2, 1, 1), (1, 3, 2)])
def test_sphere(voxel_size):
    vs = np.asarray(voxel_size, dtype=np.float64)
    radius = 6.3  # world units; the crop holds the whole sphere plus a margin
    shape = tuple(int(2 * radius / v) + 5 for v in vs)
    centre = (np.asarray(shape) - 1) / 2 * vs + 0.3 * vs
    pos = np.moveaxis(np.indices(shape), 0, -1) * vs
    r = np.linalg.norm(pos - centre, axis=-1)
    channel = (r <= radius).astype(np.uint8)
    d = F.signed_distance(channel, voxel_size)
    # exact: the definition over all face centres
    np.testing.assert_array_equal(d, brute_force_signed_distance(channel, voxel_size))
    # approximate: the voxelised surface is within a voxel diagonal of the sphere
    assert np.all(np.abs(d - (radius - r)) <= np.linalg.norm(vs))
    assert np.all((d > 0) == (channel == 1))


@pytest.mark.parametrize(
    "shape, voxel_size, axis, i0",
    [
        ((10, 12), (4, 8), 0, 3),
        ((10, 12), (4, 8), 1, 11),  # face next to the far edge
        ((6, 8, 9), (40, 4, 4), 0, 1),
        ((6, 8, 9), (40, 4, 4), 2, 5),
    ],
)
def test_half_space(shape, voxel_size, axis, i0):
    index = np.indices(shape)[axis]
    channel = (index >= i0).astype(np.uint8)
    expected = ((index - i0 + 0.5) * voxel_size[axis]).astype(np.float32)
    np.testing.assert_array_equal(F.signed_distance(channel, voxel_size), expected)


# ---------------------------------------------------------------------------
# parity with the doubled-grid reference
# ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "shape, voxel_size",
    [((40, 36), (4, 8)), ((30, 30), (1, 1)), ((8, 24, 24), (40, 4, 4)), ((16, 16, 16), (8, 8, 8))],
)
@pytest.mark.parametrize("kind", ["blobs", "noise"])
@pytest.mark.parametrize("scale_factor", [10.0, 50.0])
def test_target_and_distance_mask_match_reference(shape, voxel_size, kind, scale_factor):
    rng = np.random.default_rng(zlib.crc32(repr((shape, kind, scale_factor)).encode()))
    if kind == "blobs":
        gt = np.stack([smooth_blobs(rng, shape, 2.0, f) for f in (0.1, 0.4, 0.7)])
    else:
        gt = (rng.random((3,) + shape) < 0.5).astype(np.uint8)
    target = F.hot_distance_target(gt, voxel_size, scale_factor)
    expected = R.reference_target(gt, voxel_size, scale_factor)
    np.testing.assert_array_equal(target, expected)
    mask = smooth_blobs(rng, shape, 3.0, 0.8)
    np.testing.assert_array_equal(
        F.distance_mask(target[3:], mask, voxel_size, scale_factor, 0.05, 0.8),
        R.reference_distance_mask(expected[3:], mask, voxel_size, scale_factor),
    )


def test_hot_distance_weights_match_reference():
    rng = np.random.default_rng(11)
    shape, vs = (20, 24), (4, 4)
    counts = ref_counts = None
    for _ in range(3):
        gt = np.stack([smooth_blobs(rng, shape, 2.0, f) for f in (0.2, 0.6)])
        mask = np.stack([smooth_blobs(rng, shape, 3.0, 0.9), np.ones(shape, np.uint8)])
        t = F.hot_distance_target(gt, vs, 10.0)
        dm = F.distance_mask(t[2:], mask, vs, 10.0, 0.05, 0.8)
        w, counts = F.hot_distance_weights(gt, mask, dm, counts)
        rw, ref_counts = R.reference_weights(gt, mask, dm, ref_counts)
        np.testing.assert_allclose(w, rw, rtol=1e-5, atol=0)
        for got, exp in zip(counts, ref_counts, strict=True):
            assert got.keys() == exp.keys()
            for k in got:
                np.testing.assert_allclose(got[k], exp[k], rtol=1e-5)


# ---------------------------------------------------------------------------
# class ids, shapes and bad input
# ---------------------------------------------------------------------------


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


def test_balance_weights_does_not_mutate_counts():
    labels = np.array([[[0, 1, 1]]], dtype=np.uint8)
    counts = [{0: (3, 10), 1: (4, 10)}]
    before = [dict(c) for c in counts]
    _, new = F.balance_weights(labels, np.ones(labels.shape), counts)
    assert counts == before
    assert new == [{0: (4, 13), 1: (6, 13)}]


def test_tiny_shapes_match_reference():
    # every 3-D shape with axes of length 1, 2 or 3, several random fills each
    rng = np.random.default_rng(7)
    for shape in itertools.product((1, 2, 3), repeat=3):
        gt = (rng.random((4,) + shape) < 0.5).astype(np.uint8)
        np.testing.assert_array_equal(
            F.hot_distance_target(gt, (40, 4, 4), 50.0),
            R.reference_target(gt, (40, 4, 4), 50.0),
            err_msg=f"{shape}",
        )
