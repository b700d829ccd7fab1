"""The distance mask (:mod:`gp_hotdistance.kernels.masking`):
hand-checked values, the shortcut past the threshold and the windowed
distances to unknown voxels against ``edt`` and the doubled-grid reference."""

from __future__ import annotations

import zlib

import numpy as np
import pytest

import gp_hotdistance.kernels as F
from gp_hotdistance.kernels import masking
from tests import reference as R
from tests.helpers import smooth_blobs


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


@pytest.mark.parametrize("threshold", [0.0, 0.3, 0.8, 1.0])
def test_distance_mask_shortcut_matches_reference(threshold):
    # distances near tanh^-1(threshold) * scale are where the kernel starts
    # skipping the tanh; a small scale puts many voxels around that bound
    rng = np.random.default_rng(int(threshold * 10))
    shape, voxel_size, scale = (40, 44), (1, 2), 6.0
    gt = np.stack([smooth_blobs(rng, shape, 2.0, f) for f in (0.3, 0.6)])
    mask = np.stack([smooth_blobs(rng, shape, 2.5, 0.85), smooth_blobs(rng, shape, 1.5, 0.7)])
    t = F.hot_distance_target(gt, voxel_size, scale)[2:]
    got = F.distance_mask(t, mask, voxel_size, scale, 0.05, threshold)
    expected = R.reference_distance_mask(t, mask, voxel_size, scale, 0.05, threshold)
    np.testing.assert_array_equal(got, expected)
    assert 0 < (got != mask).sum() or threshold == 0.0, "the mask must remove something"


@pytest.mark.parametrize(
    "shape, voxel_size, scale",
    [
        ((40, 44), (1, 2), 6.0),
        ((7, 30, 33), (40, 4, 8), 50.0),
        ((12, 1, 25), (4, 4, 4), 30.0),
        ((30, 41), (1.5, 2.5), 6.0),  # weights not integers: no tanh table
    ],
)
@pytest.mark.parametrize("threshold", [0.0, 0.5, 0.9])
def test_bounded_boundary_distances_equal_edt(monkeypatch, shape, voxel_size, scale, threshold):
    """The windowed distances to unknown voxels (bounded by what the mask
    needs) give the same distance mask as the full edt transform, and the
    reference's, with masks shared by all channels and per channel."""
    rng = np.random.default_rng(len(shape) * 7 + int(threshold * 10))
    gt = np.stack([smooth_blobs(rng, shape, 1.5, f) for f in (0.3, 0.6)])
    per_channel = np.stack([smooth_blobs(rng, shape, 2.0, 0.8) for _ in range(2)])
    t = F.hot_distance_target(gt, voxel_size, scale)[2:]
    for mask in (per_channel[0], per_channel):
        windowed = F.distance_mask(t, mask, voxel_size, scale, 0.05, threshold)
        monkeypatch.setattr(masking, "BOUNDED_RADIUS_LIMIT", -1)  # every radius too large: edt
        full = F.distance_mask(t, mask, voxel_size, scale, 0.05, threshold)
        monkeypatch.undo()
        np.testing.assert_array_equal(windowed, full)
        expected = R.reference_distance_mask(t, mask, voxel_size, scale, 0.05, threshold)
        np.testing.assert_array_equal(windowed, expected)
        if threshold > 0:
            assert (windowed != np.broadcast_to(mask, t.shape)).any()
