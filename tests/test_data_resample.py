"""Integer-factor resampling against hand-checked rows and brute-force loops
over the coarse voxels."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from gp_hotdistance.data import downsample_all, downsample_labels, mean_pool, upsample_nearest


def _fine_block(data, index, factors):
    return data[tuple(slice(i * f, (i + 1) * f) for i, f in zip(index, factors, strict=True))]


def _coarse_indices(shape, factors):
    return itertools.product(*(range(s // f) for s, f in zip(shape, factors, strict=True)))


def test_downsample_labels_hand_checked():
    # pairs: 3 of 4 in (majority), 2 of 4 (exactly half: out), 1 of 4 (out), 4 of 4
    binary = np.array([[1, 1, 1, 0, 1, 0, 1, 1], [1, 0, 0, 1, 0, 0, 1, 1]], dtype=np.uint8)
    np.testing.assert_array_equal(downsample_labels(binary, (2, 2)), [[True, False, False, True]])
    # 1-axis factor: exactly half along one axis of two voxels is out
    np.testing.assert_array_equal(downsample_labels(binary, (1, 2)), [[1, 0, 0, 1], [0, 0, 0, 1]])


@pytest.mark.parametrize("factors", [(2, 2, 2), (1, 2, 2), (3, 1, 2)])
def test_downsample_labels_brute_force(factors):
    rng = np.random.default_rng(0)
    shape = tuple(f * n for f, n in zip(factors, (3, 4, 2), strict=True))
    binary = rng.random(shape) < 0.5
    result = downsample_labels(binary, factors)
    n = int(np.prod(factors))
    ties = 0
    for index in _coarse_indices(shape, factors):
        count = int(_fine_block(binary, index, factors).sum())
        ties += 2 * count == n
        assert result[index] == (2 * count > n), f"coarse voxel {index}: {count} of {n} set"
    if n % 2 == 0:
        assert ties > 0, "the random input should contain exact ties"


def test_downsample_all_brute_force():
    rng = np.random.default_rng(1)
    binary = rng.random((4, 6)) < 0.8
    result = downsample_all(binary, (2, 3))
    for index in _coarse_indices(binary.shape, (2, 3)):
        assert result[index] == _fine_block(binary, index, (2, 3)).all()


def test_mean_pool_brute_force():
    rng = np.random.default_rng(2)
    raw = rng.integers(0, 256, size=(4, 6, 2), dtype=np.uint8)
    result = mean_pool(raw, (2, 3, 1))
    assert result.dtype == np.float32
    assert result.shape == (2, 2, 2)
    for index in _coarse_indices(raw.shape, (2, 3, 1)):
        expected = _fine_block(raw, index, (2, 3, 1)).astype(np.float64).mean()
        assert result[index] == np.float32(expected)
    np.testing.assert_array_equal(mean_pool(np.array([[0, 1], [2, 5]]), (2, 2)), [[2.0]])


def test_upsample_nearest_brute_force():
    data = np.arange(6, dtype=np.uint64).reshape(2, 3) + np.uint64(2**40)
    result = upsample_nearest(data, (3, 2))
    assert result.dtype == np.uint64
    assert result.shape == (6, 6)
    for index in np.ndindex(result.shape):
        assert result[index] == data[index[0] // 3, index[1] // 2]


def test_bad_factors():
    with pytest.raises(
        ValueError, match=r"shape \(3, 4\) is not a multiple of the factors \(2, 2\)"
    ):
        downsample_labels(np.zeros((3, 4)), (2, 2))
    with pytest.raises(ValueError, match="positive"):
        mean_pool(np.zeros((2, 2)), (0, 1))
    with pytest.raises(ValueError, match="3 factors"):
        upsample_nearest(np.zeros((2, 2)), (1, 1, 1))
