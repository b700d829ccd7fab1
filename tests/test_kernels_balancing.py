"""Class-balanced weights and moving counts
(:mod:`gp_hotdistance.kernels.balancing`): hand-checked values, counts never
mutated, fractional masks, parity with the reference."""

from __future__ import annotations

import numpy as np

import gp_hotdistance.kernels as F
from tests import reference as R
from tests.helpers import smooth_blobs


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


def test_balance_weights_does_not_mutate_counts():
    labels = np.array([[[0, 1, 1]]], dtype=np.uint8)
    counts = [{0: (3, 10), 1: (4, 10)}]
    before = [dict(c) for c in counts]
    _, new = F.balance_weights(labels, np.ones(labels.shape), counts)
    assert counts == before
    assert new == [{0: (4, 13), 1: (6, 13)}]


def test_weights_with_fractional_masks_match_reference():
    rng = np.random.default_rng(8)
    shape = (30, 31)
    gt = np.stack([smooth_blobs(rng, shape, 2.0, f) for f in (0.1, 0.5, 0.9)])
    mask = (rng.uniform(0.2, 1.0, shape) * smooth_blobs(rng, shape, 3.0, 0.8)).astype(np.float32)
    dmask = np.stack([smooth_blobs(rng, shape, 2.0, 0.7) for _ in range(3)]) * mask
    counts = ref_counts = None
    for _ in range(2):  # twice: moving counts carried over
        weights, counts = F.hot_distance_weights(gt, mask, dmask, counts)
        ref_weights, ref_counts = R.reference_weights(gt, mask, dmask, ref_counts)
        np.testing.assert_allclose(weights, ref_weights, rtol=1e-6, atol=0)
        for got, exp in zip(counts, ref_counts, strict=True):
            for key in (0, 1):
                np.testing.assert_allclose(got[key], exp[key], rtol=1e-12)
