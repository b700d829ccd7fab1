"""The fast paths of gp_hotdistance.functional against slow or serial
versions: the windowed minimum vs the envelope alone, threads vs one thread, arrays above the threading threshold vs the
doubled-grid reference, the distance-mask shortcut, the thread-count setting,
predictor outputs read back as views, and the numba cache of a read-only
install."""

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
from funlib.geometry import Coordinate
from funlib.persistence import Array

from gp_hotdistance import HotDistancePredictor
from gp_hotdistance import functional as F
from gp_hotdistance.arrays import InMemoryArray
from gp_hotdistance.predictor import _read
from tests import reference as R
from tests.helpers import smooth_blobs

PACKAGE = Path(F.__file__).resolve().parent


def batch(gt, mask, voxel_size, scale=20.0):
    """Target, distance mask and weights of one batch, all through functional."""
    target = F.hot_distance_target(gt, voxel_size, scale)
    dmask = F.distance_mask(target[gt.shape[0] :], mask, voxel_size, scale, 0.05, 0.8)
    weights, counts = F.hot_distance_weights(gt, mask, dmask)
    return target, dmask, weights, counts


def window_cases():
    """Channels where the windowed minimum settles every lane, some lanes, or
    none: blobs, one voxel in a corner, an object in one corner of a large
    empty region, stripes, no face at all, lines of 1 and 2 voxels."""
    rng = np.random.default_rng(11)
    corner = np.zeros((70, 90), dtype=np.uint8)
    corner[:6, :9] = 1
    dot = np.zeros((9, 70, 66), dtype=np.uint8)
    dot[0, 0, 0] = 1
    stripes = np.zeros((40, 130), dtype=np.uint8)
    stripes[:, ::9] = 1  # lanes far from any face only across axis 0
    stripes[17:19] = 1
    return [
        ("blobs 2-D", smooth_blobs(rng, (75, 140), 2.0, 0.3), (4, 4)),
        ("blobs 3-D anisotropic", smooth_blobs(rng, (11, 50, 70), 1.5, 0.2), (40, 4, 8)),
        ("corner 2-D", corner, (3, 5)),
        ("one voxel 3-D", dot, (8, 8, 8)),
        ("stripes", stripes, (6, 2)),
        ("no face", np.ones((6, 70), dtype=np.uint8), (4, 4)),
        ("thin", smooth_blobs(rng, (2, 1, 80), 1.0, 0.5), (8, 8, 8)),
        ("single slice", smooth_blobs(rng, (1, 30, 70), 1.0, 0.5), (8, 4, 4)),
    ]


@pytest.mark.parametrize("name, channel, voxel_size", window_cases(), ids=lambda c: str(c))
def test_windowed_minimum_equals_envelope(monkeypatch, name, channel, voxel_size):
    """Every window radius gives the envelope's result (radius 0: every lane
    through the envelope) bit for bit, and the doubled-grid reference's."""
    monkeypatch.setattr(F, "WINDOW_RADIUS", 0)
    envelope = F.signed_distance(channel, voxel_size)
    np.testing.assert_array_equal(envelope, R.reference_signed_distance(channel, voxel_size))
    for radius in (1, 2, 5, 200):
        monkeypatch.setattr(F, "WINDOW_RADIUS", radius)
        np.testing.assert_array_equal(
            F.signed_distance(channel, voxel_size), envelope, err_msg=f"{name}, radius {radius}"
        )


@pytest.mark.parametrize(
    "shape, voxel_size",
    [((37, 29), (4, 4)), ((5, 23, 19), (40, 4, 4)), ((9, 1, 17), (8, 8, 8)), ((1, 13), (1, 3))],
)
def test_threaded_equals_serial(monkeypatch, shape, voxel_size):
    rng = np.random.default_rng(zlib.crc32(repr(shape).encode()))
    gt = np.stack([smooth_blobs(rng, shape, 1.5, f) for f in (0.2, 0.5)])
    mask = smooth_blobs(rng, shape, 2.0, 0.8)
    monkeypatch.setattr(F, "PARALLEL_MIN_VOXELS", 0)  # thread even these tiny arrays
    results = {}
    for threads in ("1", "2", "3"):  # 3: uneven splits, more threads than some axes
        monkeypatch.setenv(F.THREADS_ENV, threads)
        results[threads] = batch(gt, mask, voxel_size)
    for threads in ("2", "3"):
        for got, expected in zip(results[threads][:3], results["1"][:3], strict=True):
            np.testing.assert_array_equal(got, expected, err_msg=f"{threads} threads")
        assert results[threads][3] == results["1"][3]
    # and the serial result is the reference's
    np.testing.assert_array_equal(results["1"][0], R.reference_target(gt, voxel_size, 20.0))


def test_above_threading_threshold_matches_reference():
    rng = np.random.default_rng(5)
    shape, voxel_size = (20, 60, 62), (40, 4, 4)
    assert np.prod(shape) >= F.PARALLEL_MIN_VOXELS, "must take the threaded path"
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
        monkeypatch.setattr(F, "BOUNDED_RADIUS_LIMIT", -1)  # every radius too large: edt
        full = F.distance_mask(t, mask, voxel_size, scale, 0.05, threshold)
        monkeypatch.undo()
        np.testing.assert_array_equal(windowed, full)
        expected = R.reference_distance_mask(t, mask, voxel_size, scale, 0.05, threshold)
        np.testing.assert_array_equal(windowed, expected)
        if threshold > 0:
            assert (windowed != np.broadcast_to(mask, t.shape)).any()


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


def test_kernel_threads_setting(monkeypatch):
    monkeypatch.delenv(F.THREADS_ENV, raising=False)
    assert F.kernel_threads() == len(os.sched_getaffinity(0))
    monkeypatch.setenv(F.THREADS_ENV, "3")
    assert F.kernel_threads() == 3
    for bad in ("0", "-1", "two", ""):
        monkeypatch.setenv(F.THREADS_ENV, bad)
        with pytest.raises(ValueError, match=rf"GP_HOTDISTANCE_THREADS .* got '{bad}'"):
            F.kernel_threads()


def test_predictor_output_read_back_as_view():
    p = HotDistancePredictor(channels=["a"], scale_factor=10.0, mask_distances=True)
    gt = np.zeros((1, 6, 8), dtype=np.uint8)
    gt[0, 2:, 3:] = 1
    gt_array = Array(gt, offset=(-8, 4), voxel_size=(4, 2), axis_names=["c^", "y", "x"])
    target = p.create_target(gt_array)
    assert isinstance(target, InMemoryArray)
    assert target.roi == gt_array.roi and target.axis_names == ["c^", "y", "x"]

    def at(roi):  # an Array covering roi, which _read reads ``target`` at
        shape = roi.shape / Coordinate(4, 2)
        return Array(np.zeros(shape, np.uint8), offset=roi.offset, voxel_size=(4, 2))

    whole = _read(target, target, "target")
    assert np.shares_memory(whole, target.ndarray)
    np.testing.assert_array_equal(whole, np.asarray(target.data))
    sub = target.roi.grow((-4, -2), (0, -4))
    np.testing.assert_array_equal(_read(target, at(sub), "target"), np.asarray(target[sub]))
    # a lazy op changes the data: read through funlib, not the stale buffer
    target.lazy_op(lambda data: data * 2)
    np.testing.assert_array_equal(_read(target, at(target.roi), "target"), 2 * whole)


def test_in_memory_array_holds_no_copy():
    import tracemalloc

    data = np.arange(2 * 256 * 512, dtype=np.float32).reshape(2, 256, 512)  # 1 MiB
    tracemalloc.start()
    try:
        array = InMemoryArray(data, offset=(4, 0), voxel_size=(2, 2), axis_names=["c^", "y", "x"])
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < data.nbytes // 8  # dask.array.from_array would copy all of it
    assert array.roi.shape == (512, 1024) and array.roi.offset == (4, 0)
    np.testing.assert_array_equal(np.asarray(array.data), data)
    sub = array.roi.grow((-6, -4), (0, -1000))
    # rows 3.., columns 2..11 of every channel
    np.testing.assert_array_equal(np.asarray(array[sub]), data[:, 3:, 2:12])


def test_numpy_backed_array_read_as_view():
    data = np.arange(6 * 8, dtype=np.uint16).reshape(6, 8)
    array = Array(data, offset=(-8, 4), voxel_size=(4, 2), axis_names=["y", "x"])
    whole = _read(array, array, "gt")
    assert np.shares_memory(whole, data)
    np.testing.assert_array_equal(whole, data)
    sub = array.roi.grow((-4, -2), (0, -4))
    like = Array(np.zeros((5, 5), np.uint8), offset=sub.offset, voxel_size=(4, 2))
    part = _read(array, like, "gt")
    assert np.shares_memory(part, data)
    # rows 1.., columns 1..5 of the data
    np.testing.assert_array_equal(part, data[1:, 1:6])
    np.testing.assert_array_equal(part, np.asarray(array[sub]))
    # a write through funlib lands in the source, and is read back
    array[sub] = np.full((5, 5), 7, np.uint16)
    np.testing.assert_array_equal(_read(array, like, "gt"), np.full((5, 5), 7))
    # a lazy op changes the data: read through funlib, not the source
    array.lazy_op(lambda d: d + 1)
    np.testing.assert_array_equal(_read(array, like, "gt"), np.full((5, 5), 8))
    # dask-backed data has no numpy source: read through funlib
    import dask.array as da

    lazy = Array(da.from_array(data), offset=(-8, 4), voxel_size=(4, 2))
    read = _read(lazy, lazy, "gt")
    assert not np.shares_memory(read, data)
    np.testing.assert_array_equal(read, data)


# loads functional.py on its own: the cache works per file, and importing the
# whole package (gunpowder, torch) would cost seconds per run
SCRIPT = """
import importlib.util, json, sys
import numpy as np
spec = importlib.util.spec_from_file_location("functional", sys.argv[1])
F = sys.modules["functional"] = importlib.util.module_from_spec(spec)
spec.loader.exec_module(F)
out = np.empty(4, dtype=np.float32)
labels = np.array([0, 1, 0, 1], dtype=np.uint8)
F._apply_class_weights(labels, np.ones(4, np.float32), np.float32(1), np.float32(2), out, 0, 4)
hits = sum(F._apply_class_weights.stats.cache_hits.values())
print(json.dumps({"file": F.__file__, "hits": hits, "uncached": F._uncached, "out": out.tolist()}))
"""


def test_numba_cache_of_read_only_install(tmp_path):
    # the package copied where numba cannot write beside it: __pycache__ is a
    # file (which stops root too), the directory read-only
    site = tmp_path / "site"
    shutil.copytree(PACKAGE, site / "gp_hotdistance", ignore=shutil.ignore_patterns("__pycache__"))
    (site / "gp_hotdistance" / "__pycache__").write_text("")
    (site / "gp_hotdistance").chmod(0o555)
    home = tmp_path / "home"
    home.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("NUMBA_CACHE_DIR", "XDG_CACHE_HOME")}
    env["HOME"] = str(home)

    def run():
        done = subprocess.run(
            [sys.executable, "-c", SCRIPT, str(site / "gp_hotdistance" / "functional.py")],
            env=env,
            cwd=tmp_path,  # not the checkout, whose package would be imported first
            capture_output=True,
            text=True,
            check=False,
        )
        assert done.returncode == 0, done.stderr
        result = json.loads(done.stdout.strip().splitlines()[-1])
        assert result["file"] == str(site / "gp_hotdistance" / "functional.py")
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
        (site / "gp_hotdistance").chmod(0o755)
