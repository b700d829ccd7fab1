"""Samples read at the training voxel size, against brute-force oracles that
loop over the coarse voxels."""

from __future__ import annotations

import itertools
import warnings

import numpy as np
import pytest
from funlib.geometry import Coordinate, Roi

from gp_hotdistance.data import OffGridWarning, Sample, expand_label_template, write_volume
from tests.cellmap_fixture import BIG_ID, CHANNELS, expected_labels, write_cellmap_fixture

GEOMETRIES = {
    "3d": dict(voxel_size=(8, 8, 8), label_factors=(2, 2, 2)),
    "3d-anisotropic": dict(voxel_size=(40, 8, 8), label_factors=(1, 2, 2)),
    "2d": dict(voxel_size=(8, 8), label_factors=(2, 2)),
}


def test_expand_label_template():
    assert expand_label_template("a.zarr/crop7/[mito,er]") == {
        "mito": "a.zarr/crop7/mito",
        "er": "a.zarr/crop7/er",
    }
    assert expand_label_template("x/[ mito ]/s0", CHANNELS) == {"mito": "x/mito/s0"}
    with pytest.raises(ValueError, match=r"'x/mito' needs exactly one"):
        expand_label_template("x/mito")
    with pytest.raises(ValueError, match=r"names classes \['nuc'\] not in channels"):
        expand_label_template("x/[mito,nuc]", CHANNELS)


def test_geometry(tmp_path):
    fixture = write_cellmap_fixture(tmp_path)  # V = 8, raw offset -32, labels at 4 nm
    crop7 = Sample(fixture.raw_path, fixture.label_paths("crop7"), CHANNELS, (8, 8, 8))
    assert crop7.raw_roi == Roi((-32,) * 3, (256,) * 3)
    # crop 7 covers [20, 84): shrunk to the 8 nm grid, [24, 80)
    assert fixture.crop_offsets["crop7"] == Coordinate(20, 20, 20)
    assert crop7.labelled_rois == {
        "mito": Roi((24,) * 3, (56,) * 3),
        "er": Roi((24,) * 3, (56,) * 3),
    }
    assert crop7.labelled_roi == Roi((24,) * 3, (56,) * 3)
    assert crop7.labelled_volume == 7**3
    crop9 = Sample(fixture.raw_path, fixture.label_paths("crop9"), CHANNELS, (8, 8, 8))
    assert crop9.labelled_rois == {"mito": Roi((112,) * 3, (64,) * 3), "er": None}
    assert crop9.labelled_volume == 8**3


@pytest.mark.parametrize("geometry", GEOMETRIES)
@pytest.mark.parametrize("crop", ["crop7", "crop9"])
def test_read_labels_brute_force(tmp_path, geometry, crop):
    fixture = write_cellmap_fixture(tmp_path, **GEOMETRIES[geometry])
    voxel_size = fixture.voxel_size
    sample = Sample(fixture.raw_path, fixture.label_paths(crop), CHANNELS, voxel_size)
    roi = sample.labelled_roi.grow(voxel_size * 2, voxel_size)  # over the crop edges
    gt, mask = sample.read_labels(roi)
    expected_gt, expected_mask = expected_labels(fixture, crop, roi, voxel_size)
    assert gt.dtype == np.uint8 and mask.dtype == np.uint8
    np.testing.assert_array_equal(gt, expected_gt)
    np.testing.assert_array_equal(mask, expected_mask)
    assert gt[0].any() and not gt[0].all(), "the test crop should hold both classes"
    if crop == "crop9":
        assert not mask[1].any(), "er is unknown in crop 9"


def test_ties_are_background(tmp_path):
    # one 2x2 block at 4 nm, exactly half mito: background at 8 nm
    write_volume(tmp_path / "c.zarr", "raw", np.zeros((4, 4), np.uint8), (8, 8), (0, 0))
    labels = np.array([[0, 0, 1, 1], [0, 0, 0, 1], [1, 1, 1, 0], [0, 0, 1, 0]], dtype=np.uint8)
    write_volume(tmp_path / "c.zarr", "mito", labels, (4, 4), (8, 8))
    sample = Sample(tmp_path / "c.zarr/raw", {"mito": tmp_path / "c.zarr/mito"}, ["mito"], (8, 8))
    gt, mask = sample.read_labels(Roi((8, 8), (16, 16)))
    # blocks: top-left 0/4, top-right 3/4, bottom-left 2/4 (tie), bottom-right 2/4 (tie)
    np.testing.assert_array_equal(gt[0], [[0, 1], [0, 0]])
    np.testing.assert_array_equal(mask[0], [[1, 1], [1, 1]])


def test_class_id_dataset_exact_uint64(tmp_path):
    big = 2**53  # float64 cannot tell 2**53 from 2**53 + 1
    ids = np.array([[big, big + 1], [big + 1, 0]], dtype=np.uint64)
    write_volume(tmp_path / "c.zarr", "raw", np.zeros((2, 2), np.uint8), (4, 4), (0, 0))
    write_volume(tmp_path / "c.zarr", "ids", ids, (4, 4), (0, 0))
    sample = Sample(
        tmp_path / "c.zarr/raw",
        tmp_path / "c.zarr/ids",
        ["a", "b"],
        (4, 4),
        class_ids={"a": big + 1, "b": big},
    )
    gt, mask = sample.read_labels(Roi((0, 0), (8, 8)))
    np.testing.assert_array_equal(gt, [[[0, 1], [1, 0]], [[1, 0], [0, 0]]])
    np.testing.assert_array_equal(mask, np.ones((2, 2, 2)))


def test_coarser_labels_upsample_nearest(tmp_path):
    write_volume(tmp_path / "c.zarr", "raw", np.zeros((8, 8), np.uint8), (4, 4), (0, 0))
    labels = np.array([[3, 0], [0, BIG_ID]], dtype=np.uint64)
    write_volume(tmp_path / "c.zarr", "mito", labels, (8, 8), (4, 8))  # offset on the 4 grid
    sample = Sample(tmp_path / "c.zarr/raw", {"mito": tmp_path / "c.zarr/mito"}, ["mito"], (4, 4))
    assert sample.labelled_rois["mito"] == Roi((4, 8), (16, 16))
    # rows y = 8, 12, 16, 20 (20 is outside), columns x = 4 (outside), 8, ..., 20
    gt, mask = sample.read_labels(Roi((8, 4), (16, 20)))
    np.testing.assert_array_equal(
        gt[0], [[0, 1, 1, 0, 0], [0, 0, 0, 1, 1], [0, 0, 0, 1, 1], [0, 0, 0, 0, 0]]
    )
    np.testing.assert_array_equal(
        mask[0], [[0, 1, 1, 1, 1], [0, 1, 1, 1, 1], [0, 1, 1, 1, 1], [0, 0, 0, 0, 0]]
    )


def test_user_mask_known_only_where_all_fine_voxels_known(tmp_path):
    write_volume(tmp_path / "c.zarr", "raw", np.zeros((4, 4), np.uint8), (8, 8), (0, 0))
    write_volume(tmp_path / "c.zarr", "mito", np.ones((4, 4), np.uint8), (4, 4), (0, 0))
    known = np.array([[1, 1, 1, 1], [1, 1, 0, 1]], dtype=np.uint8)  # rows 0..8 only
    write_volume(tmp_path / "c.zarr", "mask", known, (4, 4), (0, 0))
    sample = Sample(
        tmp_path / "c.zarr/raw",
        {"mito": tmp_path / "c.zarr/mito"},
        ["mito", "er"],
        (8, 8),
        mask=tmp_path / "c.zarr/mask",
    )
    gt, mask = sample.read_labels(Roi((0, 0), (16, 16)))
    np.testing.assert_array_equal(gt, [[[1, 1], [1, 1]], [[0, 0], [0, 0]]])
    # second coarse row is outside the mask's ROI; er has no dataset
    np.testing.assert_array_equal(mask, [[[1, 0], [0, 0]], [[0, 0], [0, 0]]])


def test_read_raw_levels(tmp_path):
    fixture = write_cellmap_fixture(tmp_path)  # s0 at 8 (offset -32), s1 at 16 (offset -28)
    labels = fixture.label_paths("crop9")
    sample = Sample(fixture.raw_path, labels, CHANNELS, (8, 8, 8))
    roi = Roi((-8, 0, 8), (16, 32, 24))
    window = ((roi - fixture.raw_offset) / 8).to_slices()
    raw = sample.read_raw(roi)
    assert raw.dtype == np.float32
    np.testing.assert_array_equal(raw, fixture.raw[window])

    # V = 16: s1 (at V) is translated by half an s0 voxel, s0 is on the grid:
    # raw is mean-pooled from s0 (2x), nothing moves, nothing warns
    with warnings.catch_warnings():
        warnings.simplefilter("error", OffGridWarning)
        sample = Sample(fixture.raw_path, labels, CHANNELS, (16, 16, 16))
    assert sample.raw.path.endswith("s0")
    for target, factor in (((16,) * 3, 2), ((32,) * 3, 4)):
        sample = Sample(fixture.raw_path, labels, CHANNELS, target)
        roi = Roi((-32,) * 3, (2 * target[0],) * 3)
        raw = sample.read_raw(roi)
        assert raw.shape == (2, 2, 2)
        for index in itertools.product(range(2), repeat=3):
            block = fixture.raw[tuple(slice(factor * i, factor * (i + 1)) for i in index)]
            assert raw[index] == np.float32(block.astype(np.float64).mean())


def test_errors(tmp_path):
    fixture = write_cellmap_fixture(tmp_path)
    labels = fixture.label_paths("crop7")
    sample = Sample(fixture.raw_path, labels, CHANNELS, (8, 8, 8))
    with pytest.raises(ValueError, match=r"fibsem-uint8/s0: ROI .* leaves the raw volume's ROI"):
        sample.read_raw(Roi((-40, 0, 0), (16, 16, 16)))
    with pytest.raises(ValueError, match=r"ROI .* is not on the training grid of voxel size"):
        sample.read_labels(Roi((4, 0, 0), (16, 16, 16)))
    with pytest.raises(ValueError, match=r"raw voxel size \(8, 8, 8\) is coarser .* is off"):
        Sample(fixture.raw_path, labels, CHANNELS, (4, 4, 4), upsample=False)
    with pytest.raises(
        ValueError, match=r"no multiscale level has an integer ratio .*\(12, 12, 12\)"
    ):
        Sample(fixture.raw_path, labels, CHANNELS, (12, 12, 12))
    with pytest.raises(FileNotFoundError, match=r"crop7/nuc does not exist"):
        Sample(
            fixture.raw_path, {"mito": labels["mito"].replace("mito", "nuc")}, CHANNELS, (8,) * 3
        )
    with pytest.raises(ValueError, match=r"label datasets for \['nuc'\] not in channels"):
        Sample(fixture.raw_path, {"nuc": labels["mito"]}, CHANNELS, (8,) * 3)
    write_volume(tmp_path / "c.zarr", "odd", np.zeros((4, 4, 4), np.uint8), (3, 3, 3), (0, 0, 0))
    with pytest.raises(ValueError, match=r"odd: no multiscale level .*\(8, 8, 8\).*\(3, 3, 3\)"):
        Sample(fixture.raw_path, {"mito": tmp_path / "c.zarr/odd"}, CHANNELS, (8, 8, 8))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # everything above at V = 8 is on the grid
        Sample(fixture.raw_path, labels, CHANNELS, (8, 8, 8))


def test_reads_touch_only_the_needed_chunks(tmp_path):
    fixture = write_cellmap_fixture(tmp_path)  # raw s0 in chunks of 8 voxels, offset -4 V
    sample = Sample(fixture.raw_path, fixture.label_paths("crop9"), CHANNELS, (8, 8, 8))
    # crop 9's labelled ROI is raw voxels [22, 30): chunks 2 and 3 per axis
    chunks = tmp_path / "jrc_x.zarr/recon-1/em/fibsem-uint8/s0"
    corrupted = 0
    for path in chunks.glob("*/*/*"):
        index = [int(p) for p in path.relative_to(chunks).parts]
        if not all(i in (2, 3) for i in index):
            path.write_bytes(b"not a chunk")
            corrupted += 1
    assert corrupted == 4**3 - 2**3
    roi = sample.labelled_roi
    window = ((roi - fixture.raw_offset) / 8).to_slices()
    np.testing.assert_array_equal(sample.read_raw(roi), fixture.raw[window])
    with pytest.raises(RuntimeError):  # a corrupted chunk, were it read
        sample.read_raw(Roi((-32, -32, -32), (8, 8, 8)))


@pytest.mark.parametrize(
    "data, expected",
    [
        (np.array([0, 51, 255], np.uint8), [0.0, 0.2, 1.0]),  # / 255
        (np.array([0, 65535], np.uint16), [0.0, 1.0]),  # / 65535
        (np.array([-0.5, 3.0], np.float64), [-0.5, 3.0]),  # floats are kept
    ],
)
def test_normalize_raw(data, expected):
    from gp_hotdistance.data import normalize_raw

    before = data.copy()
    out = normalize_raw(data, data.dtype)
    assert out.dtype == np.float32
    np.testing.assert_array_equal(out, np.array(expected, np.float32))
    np.testing.assert_array_equal(data, before)  # the input is not modified


def test_sample_checks_class_ids_as_the_predictor_does(tmp_path):
    write_volume(tmp_path / "c.zarr", "raw", np.zeros((4, 4), np.uint8), (8, 8), (0, 0))
    write_volume(tmp_path / "c.zarr", "ids", np.zeros((4, 4), np.uint8), (8, 8), (0, 0))
    args = (tmp_path / "c.zarr/raw", tmp_path / "c.zarr/ids", ["a", "b"], (8, 8))
    with pytest.raises(ValueError, match=r"Sample: class_ids must hold one unique id .*\[3, 3\]"):
        Sample(*args, class_ids=[3, 3])
    with pytest.raises(TypeError, match=r"Sample: class_ids must be integers, got \[1.5, 2\]"):
        Sample(*args, class_ids={"a": 1.5, "b": 2})
    assert Sample(*args, class_ids={"b": 7, "a": 2**64 - 1}).class_ids == {"a": 2**64 - 1, "b": 7}
