"""The kernels' threaded path gives bit-identical results to the serial path."""

from __future__ import annotations

import numpy as np
import pytest

from gp_hotdistance import functional as F
from tests.helpers import smooth_blobs


@pytest.mark.parametrize("shape, voxel_size", [((24, 40, 36), (40, 4, 4)), ((96, 80), (4, 8))])
def test_threaded_kernels_equal_serial(monkeypatch, shape, voxel_size):
    """Every array goes through the thread pool (4 threads) when
    ``PARALLEL_MIN_VOXELS`` is 0, through one thread when it is huge."""
    rng = np.random.default_rng(3)
    gt = np.stack([smooth_blobs(rng, shape, 2.0, f) for f in (0.2, 0.5)])
    mask = smooth_blobs(rng, shape, 3.0, 0.9)

    def run(min_voxels: int, threads: int):
        monkeypatch.setattr(F, "PARALLEL_MIN_VOXELS", min_voxels)
        monkeypatch.setattr(F, "_threads", lambda: threads)
        target = F.hot_distance_target(gt, voxel_size, 30.0)
        dm = F.distance_mask(target[2:], mask, voxel_size, 30.0, 0.05, 0.8)
        return target, dm

    serial_target, serial_dm = run(np.iinfo(np.int64).max, 1)
    threaded_target, threaded_dm = run(0, 4)
    np.testing.assert_array_equal(threaded_target, serial_target)
    np.testing.assert_array_equal(threaded_dm, serial_dm)
    # the inputs are not trivial: both classes and masked distances occur
    assert 0 < serial_target[0].mean() < 1 and 0 < serial_dm.mean() < 1
