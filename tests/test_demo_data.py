"""Tests of the synthetic demo data."""

import numpy as np
import pytest
from funlib.geometry import Coordinate, Roi
from funlib.persistence import open_ds

from pipelines.demo_data import generate, main, make_demo_data


def _read(path) -> np.ndarray:
    array = open_ds(str(path))
    return array[array.roi]


@pytest.mark.parametrize(
    "kwargs, shape, voxel_size, offset",
    [
        ({"shape": (12, 40, 40)}, (12, 40, 40), (8, 8, 8), (0, 0, 0)),
        (
            {"shape": (6, 48, 48), "anisotropic": True, "offset": (-80, -40, 0)},
            (6, 48, 48),
            (40, 4, 4),
            (-80, -40, 0),
        ),
        ({"dims": 2, "shape": (48, 56), "offset": (-16, 8)}, (48, 56), (8, 8), (-16, 8)),
    ],
)
def test_datasets_reopen_with_metadata(tmp_path, kwargs, shape, voxel_size, offset):
    classes = ("mito", "er", "nucleus")
    data = make_demo_data(tmp_path / "demo.zarr", classes=classes, seed=3, **kwargs)
    assert data.channels == classes
    assert data.voxel_size == voxel_size
    assert data.shape == shape
    spatial = ["z", "y", "x"][-len(shape) :]
    roi = Roi(offset, Coordinate(shape) * Coordinate(voxel_size))
    for name, channels in [
        (data.raw, False),
        (data.gt, True),
        (data.mask, False),
        (data.eval_raw, False),
        (data.eval_gt, True),
    ]:
        array = open_ds(str(data.path / name))
        assert array.voxel_size == Coordinate(voxel_size), name
        assert array.roi == roi, name
        assert array.axis_names == (["c^"] if channels else []) + spatial, name
        assert array.shape == ((3,) if channels else ()) + shape, name
        assert array.dtype == np.uint8, name

    gt = _read(data.path / data.gt)
    assert set(np.unique(gt)) <= {0, 1}
    assert (gt.sum(axis=0) <= 1).all()  # classes do not overlap
    mask = _read(data.path / data.mask)
    assert set(np.unique(mask)) == {0, 1}


def test_deterministic_for_a_seed(tmp_path):
    a = make_demo_data(tmp_path / "a.zarr", shape=(10, 40, 40), seed=5)
    b = make_demo_data(tmp_path / "b.zarr", shape=(10, 40, 40), seed=5)
    for name in ("raw", "gt", "mask", "eval/raw", "eval/gt"):
        np.testing.assert_array_equal(_read(a.path / name), _read(b.path / name))
    train = _read(a.path / a.raw)
    held_out = _read(a.path / a.eval_raw)
    assert not np.array_equal(train, held_out)


def test_classes_differ_in_intensity():
    raw, gt, mask = generate((16, 64, 64), (8, 8, 8), ("mito", "er", "nucleus"), seed=0)
    background = raw[gt.sum(axis=0) == 0].mean()
    for channel, name in enumerate(("mito", "er", "nucleus")):
        assert gt[channel].any(), name
        # every organelle is darker than the cytoplasm around it
        assert raw[gt[channel] == 1].mean() < background - 20, name
    assert mask.dtype == np.uint8


@pytest.mark.parametrize(
    "kwargs, name",
    [
        ({"classes": ("mito", "golgi")}, "classes"),
        ({"classes": ()}, "classes"),
        ({"dims": 4}, "dims"),
        ({"dims": 2, "anisotropic": True}, "anisotropic"),
        ({"shape": (10, 10)}, "shape"),
        ({"offset": (4, 0, 0)}, "offset"),
    ],
)
def test_argument_errors(tmp_path, kwargs, name):
    with pytest.raises(ValueError, match=name):
        make_demo_data(tmp_path / "demo.zarr", **kwargs)


def test_cli(tmp_path):
    out = tmp_path / "cli.zarr"
    main(["--out", str(out), "--dims", "2", "--shape", "32", "32", "--classes", "er"])
    gt = open_ds(str(out / "gt"))
    assert gt.shape == (1, 32, 32)
    assert gt.voxel_size == Coordinate(8, 8)
