"""Threads and compilation (:mod:`gp_hotdistance.kernels.threads`): threads
against one thread, arrays above the threading threshold against the
reference, the thread-count setting and the numba cache of a read-only install."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest

import gp_hotdistance.kernels as F
from gp_hotdistance.kernels import threads
from tests import reference as R
from tests.helpers import smooth_blobs

PACKAGE = Path(F.__file__).resolve().parents[1]  # gp_hotdistance/


def batch(gt, mask, voxel_size, scale=20.0):
    """Target, distance mask and weights of one batch, all through functional."""
    target = F.hot_distance_target(gt, voxel_size, scale)
    dmask = F.distance_mask(target[gt.shape[0] :], mask, voxel_size, scale, 0.05, 0.8)
    weights, counts = F.hot_distance_weights(gt, mask, dmask)
    return target, dmask, weights, counts


@pytest.mark.parametrize(
    "shape, voxel_size",
    [((37, 29), (4, 4)), ((5, 23, 19), (40, 4, 4)), ((9, 1, 17), (8, 8, 8)), ((1, 13), (1, 3))],
)
def test_threaded_equals_serial(monkeypatch, shape, voxel_size):
    rng = np.random.default_rng(zlib.crc32(repr(shape).encode()))
    gt = np.stack([smooth_blobs(rng, shape, 1.5, f) for f in (0.2, 0.5)])
    mask = smooth_blobs(rng, shape, 2.0, 0.8)
    monkeypatch.setattr(threads, "PARALLEL_MIN_VOXELS", 0)  # thread even these tiny arrays
    results = {}
    for count in ("1", "2", "3"):  # 3: uneven splits, more threads than some axes
        monkeypatch.setenv(F.THREADS_ENV, count)
        results[count] = batch(gt, mask, voxel_size)
    for count in ("2", "3"):
        for got, expected in zip(results[count][:3], results["1"][:3], strict=True):
            np.testing.assert_array_equal(got, expected, err_msg=f"{count} threads")
        assert results[count][3] == results["1"][3]
    # and the serial result is the reference's
    np.testing.assert_array_equal(results["1"][0], R.reference_target(gt, voxel_size, 20.0))


def test_above_threading_threshold_matches_reference():
    rng = np.random.default_rng(5)
    shape, voxel_size = (20, 60, 62), (40, 4, 4)
    assert np.prod(shape) >= threads.PARALLEL_MIN_VOXELS, "must take the threaded path"
    gt = smooth_blobs(rng, shape, 2.0, 0.3)[None]
    mask = smooth_blobs(rng, shape, 3.0, 0.9)
    target, dmask, weights, counts = batch(gt, mask, voxel_size)
    expected = R.reference_target(gt, voxel_size, 20.0)
    np.testing.assert_array_equal(target, expected)
    np.testing.assert_array_equal(
        dmask, R.reference_distance_mask(expected[1:], mask, voxel_size, 20.0)
    )
    ref_weights, ref_counts = R.reference_weights(gt, mask, dmask, None)
    np.testing.assert_array_equal(weights, ref_weights)
    assert counts == ref_counts


def test_kernel_threads_setting(monkeypatch):
    monkeypatch.delenv(F.THREADS_ENV, raising=False)
    assert F.kernel_threads() == len(os.sched_getaffinity(0))
    monkeypatch.setenv(F.THREADS_ENV, "3")
    assert F.kernel_threads() == 3
    for bad in ("0", "-1", "two", ""):
        monkeypatch.setenv(F.THREADS_ENV, bad)
        with pytest.raises(ValueError, match=rf"GP_HOTDISTANCE_THREADS .* got '{bad}'"):
            F.kernel_threads()


# imports the kernels from the copied package: its __init__ loads neither
# gunpowder nor torch, so a run costs a fraction of a second
SCRIPT = """
import json, sys
import numpy as np
sys.path.insert(0, sys.argv[1])
import gp_hotdistance.kernels.balancing as B
from gp_hotdistance.kernels.threads import uncached
out = np.empty(4, dtype=np.float32)
labels = np.array([0, 1, 0, 1], dtype=np.uint8)
B._apply_class_weights(labels, np.ones(4, np.float32), np.float32(1), np.float32(2), out, 0, 4)
hits = sum(B._apply_class_weights.stats.cache_hits.values())
print(json.dumps({"file": B.__file__, "hits": hits, "uncached": uncached, "out": out.tolist()}))
"""


@pytest.mark.slow
def test_numba_cache_of_read_only_install(tmp_path):
    # the package copied where numba cannot write beside it: __pycache__ is a
    # file (which stops root too), the directory read-only
    site = tmp_path / "site"
    shutil.copytree(PACKAGE, site / "gp_hotdistance", ignore=shutil.ignore_patterns("__pycache__"))
    kernels = site / "gp_hotdistance" / "kernels"
    (kernels / "__pycache__").write_text("")
    kernels.chmod(0o555)
    home = tmp_path / "home"
    home.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("NUMBA_CACHE_DIR", "XDG_CACHE_HOME")}
    env["HOME"] = str(home)

    def run():
        done = subprocess.run(
            [sys.executable, "-c", SCRIPT, str(site)],
            env=env,
            cwd=tmp_path,  # not the checkout, whose package would be imported first
            capture_output=True,
            text=True,
            check=False,
        )
        assert done.returncode == 0, done.stderr
        result = json.loads(done.stdout.strip().splitlines()[-1])
        assert result["file"] == str(kernels / "balancing.py")
        assert result["out"] == [1.0, 2.0, 1.0, 2.0]
        return result, done.stderr

    try:
        first, _ = run()  # compiles, caches in the user cache directory
        assert first["hits"] == 0 and first["uncached"] == []
        assert list((home / ".cache" / "numba").rglob("*_apply_class_weights*.nbi"))
        second, _ = run()  # loads it
        assert second["hits"] == 1
        shutil.rmtree(home / ".cache")
        (home / ".cache").write_text("")  # no writable cache anywhere
        third, stderr = run()
        assert "_apply_class_weights" in third["uncached"]
        assert "no writable numba cache directory" in stderr
    finally:
        kernels.chmod(0o755)
