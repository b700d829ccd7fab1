"""The project's array type: a zarr array placed in world units
(padded reads, writes, pickling by path, errors that name the file)."""

from __future__ import annotations

import errno
import pickle

import numpy as np
import pytest
import zarr
from funlib.geometry import Coordinate, Roi

from gp_hotdistance.data import (
    Volume,
    VolumeReadError,
    VolumeWriteError,
    open_volume,
    prepare_volume,
    write_volume,
)


@pytest.fixture(params=["2d", "3d"])
def channel_first(tmp_path, request):
    """A channel-first volume (2 channels) with an offset off the absolute
    grid of its anisotropic voxel size, and its data."""
    if request.param == "2d":
        voxel_size, offset, shape = (4, 2), (-6, 10), (2, 5, 6)
    else:
        voxel_size, offset, shape = (10, 4, 2), (-20, 6, -3), (2, 3, 4, 5)
    data = np.arange(np.prod(shape), dtype=np.float32).reshape(shape)
    write_volume(tmp_path / "out.zarr", "target", data, voxel_size, offset, channel_axis=True)
    return open_volume(tmp_path / "out.zarr/target"), data


def _index(volume: Volume, roi: Roi) -> tuple[slice, ...]:
    """The slow way: voxel indices of ``roi`` counted from the volume's offset."""
    begin = [
        (b - o) // v for b, o, v in zip(roi.begin, volume.offset, volume.voxel_size, strict=True)
    ]
    size = [s // v for s, v in zip(roi.shape, volume.voxel_size, strict=True)]
    return (slice(None),) + tuple(slice(b, b + s) for b, s in zip(begin, size, strict=True))


def test_read_and_padded_read(channel_first):
    volume, data = channel_first
    assert volume.channels == 1 and volume.shape == data.shape
    vs = volume.voxel_size
    inner = Roi(volume.offset + vs, vs * 2)
    np.testing.assert_array_equal(volume.read(inner), data[_index(volume, inner)])

    # one voxel beyond every face: zeros there, the data inside
    outer = volume.roi.grow(vs, vs)
    padded = volume.read_padded(outer)
    assert padded.shape == (2, *(s + 2 for s in data.shape[1:]))
    assert padded.dtype == data.dtype
    inside = (slice(None),) + (slice(1, -1),) * (data.ndim - 1)
    np.testing.assert_array_equal(padded[inside], data)
    outside = np.ones(padded.shape, bool)
    outside[inside] = False
    assert not padded[outside].any()

    # wholly outside: all zeros
    far = Roi(volume.roi.end + vs * 3, vs * 2)
    assert not volume.read_padded(far).any()


def test_write_then_read_back(channel_first):
    volume, data = channel_first
    vs = volume.voxel_size
    roi = Roi(volume.offset + vs, vs)  # one voxel, every channel
    volume.write(roi, np.array([-1.0, -2.0], np.float32).reshape((2,) + (1,) * vs.dims))
    expected = data.copy()
    expected[_index(volume, roi)] = np.array([-1.0, -2.0]).reshape((2,) + (1,) * vs.dims)
    np.testing.assert_array_equal(zarr.open_array(volume.path, mode="r")[...], expected)
    np.testing.assert_array_equal(volume.read(volume.roi), expected)


def test_rois_outside_or_off_the_grid_are_refused(channel_first):
    volume, _ = channel_first
    vs = volume.voxel_size
    with pytest.raises(ValueError, match="is not inside the dataset's ROI"):
        volume.read(volume.roi.grow(vs, Coordinate((0,) * vs.dims)))
    with pytest.raises(ValueError, match="is not on the dataset's voxel grid"):
        volume.read(Roi(volume.offset + Coordinate((1,) * vs.dims), vs))
    with pytest.raises(ValueError, match=f"{volume.path}: ROI .* is not inside"):
        volume.write(volume.roi.grow(Coordinate((0,) * vs.dims), vs), np.zeros(1))


def test_pickles_as_its_path_and_reopens(channel_first):
    volume, data = channel_first
    volume.read(volume.roi)  # opened: the array is cached in this process
    state = pickle.dumps(volume)
    assert b"zarr.core" not in state and b"zarr.storage" not in state  # path and placement
    copy = pickle.loads(state)
    assert copy == volume and copy.roi == volume.roi and copy.channels == 1
    np.testing.assert_array_equal(copy.read(copy.roi), data)


def test_corrupt_chunk_is_named(tmp_path):
    data = np.arange(64, dtype=np.uint16).reshape(8, 8)
    write_volume(tmp_path / "c.zarr", "raw", data, (2, 2), (0, 0), chunks=(4, 4))
    volume = open_volume(tmp_path / "c.zarr/raw")
    chunk = tmp_path / "c.zarr/raw/s0/1/0"  # "/" separated chunk keys
    chunk.write_bytes(b"not a chunk")
    np.testing.assert_array_equal(volume.read(Roi((0, 0), (8, 16))), data[:4])  # chunks 0.x
    with pytest.raises(VolumeReadError, match=f"chunk file {chunk}"):
        volume.read(volume.roi)


def test_refused_write_names_the_path_and_errno(tmp_path, monkeypatch):
    prepare_volume(tmp_path / "w.zarr", "out", (4, 4), np.uint8, (1, 1), (0, 0))
    volume = open_volume(tmp_path / "w.zarr/out")

    def full(store, key, value):
        raise OSError(errno.ENOSPC, "No space left on device", key)

    monkeypatch.setattr(zarr.storage.DirectoryStore, "__setitem__", full)
    with pytest.raises(VolumeWriteError) as raised:
        volume.write(volume.roi, np.ones((4, 4), np.uint8))
    assert raised.value.errno == errno.ENOSPC
    assert str(raised.value) == (
        f"cannot write {volume.path} in {volume.roi}: No space left on device (errno 28)"
    )


def test_former_argument_order_warns_and_still_works(channel_first):
    volume, data = channel_first
    array = zarr.open_array(volume.path, mode="r")
    with pytest.warns(DeprecationWarning, match="Volume\\(path, array, voxel_size"):
        old = Volume(volume.path, array, volume.voxel_size, volume.offset, 1)
    assert old == volume and old.array is array
    np.testing.assert_array_equal(old.read(old.roi), data)
    new = Volume(volume.path, tuple(volume.voxel_size), list(volume.offset), channels=1)
    assert new == volume and isinstance(new.voxel_size, Coordinate)


def test_a_relative_path_is_kept_absolute(channel_first, tmp_path, monkeypatch):
    volume, data = channel_first
    monkeypatch.chdir(tmp_path)
    relative = open_volume("out.zarr/target")
    assert relative.path == volume.path == str(tmp_path / "out.zarr/target/s0")
    state = pickle.dumps(relative)
    monkeypatch.chdir("/")  # a worker started elsewhere
    np.testing.assert_array_equal(pickle.loads(state).read(volume.roi), data)
