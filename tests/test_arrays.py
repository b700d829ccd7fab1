"""Predictor outputs and numpy-backed arrays read back as views
(:mod:`gp_hotdistance.arrays`, ``predictor._read``)."""

from __future__ import annotations

import numpy as np
from funlib.geometry import Coordinate
from funlib.persistence import Array

from gp_hotdistance import HotDistancePredictor
from gp_hotdistance.arrays import InMemoryArray
from gp_hotdistance.predictor import _read


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
