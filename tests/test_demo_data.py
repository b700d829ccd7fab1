"""Tests of the synthetic demo data."""

import warnings
from pathlib import Path

import numpy as np
import pytest
import zarr
from funlib.geometry import Coordinate, Roi
from funlib.persistence import open_ds

from gp_hotdistance.data import OffGridWarning, Sample, open_volume
from gp_hotdistance.data.resample import downsample_labels, mean_pool
from pipelines.demo_data import CROPS_PATH, RAW_PATH, main, make_cellmap_demo
from pipelines.demo_scene import generate


def _read(path) -> np.ndarray:
    array = open_ds(str(path))
    return array[array.roi]


def test_generate_is_deterministic_for_a_seed():
    a = generate((10, 40, 40), (8, 8, 8), ("mito", "er"), seed=5)
    b = generate((10, 40, 40), (8, 8, 8), ("mito", "er"), seed=5)
    for x, y in zip(a, b, strict=True):
        np.testing.assert_array_equal(x, y)
    other = generate((10, 40, 40), (8, 8, 8), ("mito", "er"), seed=6)
    assert not np.array_equal(a[0], other[0])
    raw, gt, mask = a
    assert raw.dtype == gt.dtype == mask.dtype == np.uint8
    assert gt.shape == (2, 10, 40, 40) and set(np.unique(gt)) <= {0, 1}
    assert (gt.sum(axis=0) <= 1).all()  # classes do not overlap
    assert set(np.unique(mask)) == {0, 1}


def test_classes_differ_in_intensity():
    raw, gt, mask = generate((16, 64, 64), (8, 8, 8), ("mito", "er", "nucleus"), seed=0)
    background = raw[gt.sum(axis=0) == 0].mean()
    for channel, name in enumerate(("mito", "er", "nucleus")):
        assert gt[channel].any(), name
        # every organelle is darker than the cytoplasm around it
        assert raw[gt[channel] == 1].mean() < background - 20, name
    assert mask.dtype == np.uint8


# -- the CellMap-style layout ------------------------------------------------


def check_readable(container: Path, groups: list[str]) -> None:
    """``container`` opens with zarr at the root and at every group on the
    way to each of ``groups``; each group's ``s0`` opens with funlib's
    ``open_ds`` and the data layer's reader with the same voxel size and
    offset."""
    zarr.open_group(str(container), mode="r")
    for name in groups:
        parts = name.split("/")
        for depth in range(1, len(parts) + 1):
            zarr.open_group(str(container / "/".join(parts[:depth])), mode="r")
        ours = open_volume(container / name)
        funlib = open_ds(str(container / name / "s0"))
        assert ours.voxel_size == funlib.voxel_size, name
        assert ours.offset == funlib.roi.offset, name
        assert ours.roi == funlib.roi, name


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    path = tmp_path_factory.mktemp("demo") / "demo_data.zarr"
    return make_cellmap_demo(path, raw_shape=(96, 96), seed=2)


def test_cellmap_demo_layout(demo):
    # geometry: crops at fractions of the raw shape (96 voxels of 8 nm)
    assert demo.voxel_size == (8, 8) and demo.label_voxel_size == (4, 4)
    assert demo.crop_rois == {
        "crop1": Roi((64, 64), (352, 352)),  # voxels 8..52
        "crop2": Roi((452, 68), (256, 256)),  # voxels 56..88, one 4-nm voxel off the grid
        "crop3": Roi((448, 400), (192, 256)),  # voxels 56..80 x 50..82
    }
    assert sorted(demo.crops["crop1"]) == ["er", "mito"]
    assert sorted(demo.crops["crop2"]) == ["mito"]  # er unknown there
    assert sorted(demo.crops["crop3"]) == ["er", "mito"]
    groups = [RAW_PATH] + [f"{CROPS_PATH}/{c}/{k}" for c in demo.crops for k in demo.crops[c]]
    check_readable(demo.container, groups)
    for crop, labels in demo.crops.items():
        for channel, path in labels.items():
            volume = open_volume(path)
            assert volume.voxel_size == Coordinate(4, 4)
            assert volume.roi == demo.crop_rois[crop]
            assert volume.dtype == (np.uint64 if channel == "mito" else np.uint8)


def test_cellmap_demo_raw_levels(demo):
    group = zarr.open_group(str(demo.container / RAW_PATH), mode="r")
    datasets = group.attrs["multiscales"][0]["datasets"]
    assert [d["path"] for d in datasets] == ["s0", "s1"]
    assert datasets[1]["coordinateTransformations"] == [
        {"type": "scale", "scale": [16, 16]},
        {"type": "translation", "translation": [4.0, 4.0]},  # CellMap's half voxel
    ]
    s0 = group["s0"][:]
    np.testing.assert_array_equal(group["s1"][:], np.round(mean_pool(s0, (2, 2))).astype(np.uint8))
    # funlib's reader places s1 as the multiscale metadata does (not at voxel size 1)
    s1 = open_ds(str(demo.container / RAW_PATH / "s1"))
    assert s1.voxel_size == Coordinate(16, 16) and s1.offset == Coordinate(4, 4)
    assert s1.axis_names == ["y", "x"]
    with warnings.catch_warnings():
        warnings.simplefilter("error", OffGridWarning)  # the 8-nm level needs no shift
        assert open_volume(demo.raw, (8, 8)).path.endswith("s0")
        # at 16 nm the aligned s0 (mean-pooled) is preferred over s1, which
        # would need a half-voxel move: the demo never warns
        assert open_volume(demo.raw, (16, 16)).path.endswith("s0")


def test_cellmap_demo_labels_are_the_scene(demo):
    """Raw s0 is the 4-nm scene mean-pooled; each crop's labels are the
    scene's classes there (mito as instance ids), so at 8 nm the Sample
    reads the strict-majority downsampling of the scene."""
    fine_raw, gt, _ = generate((192, 192), (4, 4), ("mito", "er"), seed=2)
    raw = open_volume(demo.raw)
    np.testing.assert_array_equal(
        raw.read(raw.roi), np.round(mean_pool(fine_raw, (2, 2))).astype(np.uint8)
    )
    for crop, labels in demo.crops.items():
        window = (demo.crop_rois[crop] / Coordinate(4, 4)).to_slices()
        for channel, path in labels.items():
            volume = open_volume(path)
            data = volume.read(volume.roi)
            np.testing.assert_array_equal(data != 0, gt[("mito", "er").index(channel)][window])
    sample = Sample(demo.raw, demo.crops["crop2"], ["mito", "er"], (8, 8))
    assert sample.labelled_rois["er"] is None
    roi = sample.labelled_rois["mito"]
    assert roi == Roi((456, 72), (248, 248))  # shrunk to the 8-nm grid
    labels, known = sample.read_labels(roi)
    fine = gt[0][(roi / Coordinate(4, 4)).to_slices()]
    np.testing.assert_array_equal(labels[0], downsample_labels(fine, (2, 2)))
    assert known[0].all() and not known[1].any()


def test_cellmap_demo_write_false_writes_nothing(tmp_path):
    demo = make_cellmap_demo(tmp_path / "d.zarr", raw_shape=(96, 96), write=False)
    assert not (tmp_path / "d.zarr").exists()
    assert demo.crops["crop2"] == {"mito": str(tmp_path / "d.zarr" / CROPS_PATH / "crop2/mito")}


@pytest.mark.parametrize(
    "kwargs, name",
    [
        ({"label_factors": (3, 3)}, "label_factors"),
        ({"raw_shape": (96,)}, "raw_shape"),
        ({"dims": 2, "anisotropic": True}, "dims"),
        ({"classes": ("golgi",)}, "classes"),
    ],
)
def test_cellmap_demo_argument_errors(tmp_path, kwargs, name):
    with pytest.raises(ValueError, match=name):
        make_cellmap_demo(tmp_path / "d.zarr", write=False, **kwargs)


def test_cli_cellmap(tmp_path, capsys):
    out = tmp_path / "demo_data.zarr"
    main(["--out", str(out), "--shape", "48", "48"])
    assert "crop2: ['mito']" in capsys.readouterr().out
    assert open_volume(out / CROPS_PATH / "crop1" / "er").voxel_size == Coordinate(4, 4)
