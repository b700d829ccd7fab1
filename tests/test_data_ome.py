"""Reading and writing volumes: OME-NGFF 0.4 multiscales and funlib attributes."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import zarr
from funlib.geometry import Coordinate, Roi
from funlib.persistence import open_ds
from ome_zarr.io import parse_url
from ome_zarr.reader import Reader

from gp_hotdistance.data import OffGridWarning, Sample, open_volume, prepare_volume, write_volume
from gp_hotdistance.data.ome import read_placement
from tests.cellmap_fixture import add_level


def _ome_zarr_transforms(path):
    """Axes and level-0 transforms as the ome-zarr package reads them."""
    node = next(iter(Reader(parse_url(str(path)))()))
    return node.metadata["axes"], node.metadata["coordinateTransformations"][0], node.data[0]


@pytest.mark.parametrize(
    ("voxel_size", "offset"), [((40, 4, 8), (-40, 12, -8)), ((4, 2), (-6, 10))]
)
def test_write_volume_reads_back_everywhere(tmp_path, voxel_size, offset):
    rng = np.random.default_rng(0)
    data = rng.integers(0, 2**63, size=(3, 4, 5)[-len(voxel_size) :], dtype=np.uint64)
    container = tmp_path / "out.zarr"
    write_volume(container, "pred/seg", data, voxel_size, offset, chunks=(2,) * data.ndim)

    # every group opens as a zarr group
    for group in ("", "pred", "pred/seg"):
        assert isinstance(zarr.open_group(str(container / group), mode="r"), zarr.Group)
    np.testing.assert_array_equal(zarr.open_group(str(container), mode="r")["pred/seg/s0"], data)

    array = open_ds(str(container / "pred/seg/s0"))
    assert array.voxel_size == Coordinate(voxel_size)
    assert array.offset == Coordinate(offset)
    np.testing.assert_array_equal(array[array.roi], data)

    volume = open_volume(container / "pred/seg")
    assert volume.voxel_size == Coordinate(voxel_size)
    assert volume.offset == Coordinate(offset)
    assert volume.roi == Roi(offset, Coordinate(data.shape) * Coordinate(voxel_size))
    assert volume.dtype == np.uint64 and volume.shape == data.shape
    np.testing.assert_array_equal(volume.read(volume.roi), data)  # ids > 2**32 exact

    axes, transforms, level = _ome_zarr_transforms(container / "pred/seg")
    dims = len(voxel_size)
    assert axes == [{"name": n, "type": "space", "unit": "nm"} for n in ("z", "y", "x")[-dims:]]
    assert transforms == [
        {"type": "scale", "scale": list(voxel_size)},
        {"type": "translation", "translation": list(offset)},
    ]
    np.testing.assert_array_equal(np.asarray(level), data)


def test_write_volume_channel_axis(tmp_path):
    data = np.arange(2 * 3 * 4, dtype=np.float32).reshape(2, 3, 4)
    write_volume(tmp_path / "out.zarr", "prob", data, (8, 4), (16, -4), channel_axis=True)
    array = open_ds(str(tmp_path / "out.zarr/prob/s0"))
    assert array.voxel_size == Coordinate(8, 4)
    assert array.offset == Coordinate(16, -4)
    assert array.roi == Roi((16, -4), (24, 16))
    axes, transforms, _ = _ome_zarr_transforms(tmp_path / "out.zarr/prob")
    assert axes[0] == {"name": "c", "type": "channel"}
    assert transforms[0]["scale"] == [1, 8, 4]
    assert transforms[1]["translation"] == [0, 16, -4]
    # what this project writes reads back: channels first, spatial ROI
    for path in ("out.zarr/prob", "out.zarr/prob/s0"):
        volume = open_volume(tmp_path / path)
        assert volume.channels == 1 and volume.path.endswith("prob/s0")
        assert volume.voxel_size == Coordinate(8, 4) and volume.offset == Coordinate(16, -4)
        assert volume.roi == Roi((16, -4), (24, 16))
        # rows 1.., columns 1..2 of both channels
        np.testing.assert_array_equal(volume.read(Roi((24, 0), (16, 8))), data[:, 1:, 1:3])
    # ... but a sample reads spatial arrays only
    write_volume(tmp_path / "out.zarr", "raw", np.zeros((3, 4), np.uint8), (8, 4), (16, -4))
    with pytest.raises(ValueError, match=r"prob/s0: the labels a dataset has a channel axis"):
        Sample(tmp_path / "out.zarr/raw", {"a": tmp_path / "out.zarr/prob"}, ["a"], (8, 4))


def _pyramid(tmp_path, translations=((0, 0, 0), (2, 2, 2), (6, 6, 6)), top=None):
    """A multiscale group with levels at 4, 8, 16 nm."""
    path = tmp_path / "c.zarr"
    write_volume(path, "img", np.zeros((16, 16, 16), np.uint8), (4, 4, 4), translations[0])
    add_level(path / "img", "s1", np.ones((8, 8, 8), np.uint8), (8, 8, 8), translations[1])
    add_level(path / "img", "s2", np.full((4, 4, 4), 2, np.uint8), (16, 16, 16), translations[2])
    if top is not None:
        group = zarr.open_group(str(path / "img"), mode="a")
        multiscales = group.attrs["multiscales"]
        multiscales[0]["coordinateTransformations"] = top
        group.attrs["multiscales"] = multiscales
    return path / "img"


@pytest.mark.parametrize(
    ("voxel_size", "level"),
    [
        (None, "s0"),  # no training voxel size: the first level
        ((8, 8, 8), "s1"),  # the level at V
        ((32, 32, 32), "s2"),  # the coarsest finer level that divides V
        ((12, 12, 12), "s0"),  # 4 divides 12, 8 and 16 do not
        ((16, 8, 8), "s1"),  # anisotropic V: 8 is the coarsest dividing every axis
        ((2, 2, 2), "s0"),  # every level is coarser: the finest
    ],
)
def test_level_choice(tmp_path, voxel_size, level):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", OffGridWarning)
        volume = open_volume(_pyramid(tmp_path, translations=((0,) * 3,) * 3), voxel_size)
    assert volume.path.endswith(f"img/{level}")


def test_top_level_transform(tmp_path):
    top = [
        {"type": "scale", "scale": [2, 2, 2]},
        {"type": "translation", "translation": [8, 0, -8]},
    ]
    group = _pyramid(tmp_path, top=top)
    # level s1: scale 8 * 2, translation 2 * 2 + (8, 0, -8)
    volume = open_volume(group / "s1")
    assert volume.voxel_size == Coordinate(16, 16, 16)
    assert volume.offset == Coordinate(12, 4, -4)
    # V = 16: s1 (the level at V) is off the 16 grid, s0 at (8, 0, -8) is on
    # the grid of its own 8-nm voxels, so s0 is chosen and nothing moves
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        volume = open_volume(group, (16, 16, 16))
    assert volume.path.endswith("img/s0")
    assert volume.offset == Coordinate(8, 0, -8)


def test_on_grid_level_preferred_over_moving_one(tmp_path):
    # CellMap-style pyramid: s1 and s2 carry half-voxel translations, s0 is on its grid
    group = _pyramid(tmp_path, translations=((0, 0, 0), (4, 4, 4), (6, 6, 6)))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for target in ((8, 8, 8), (16, 16, 16), (32, 32, 32), (4, 4, 4)):
            volume = open_volume(group, target)
            assert volume.path.endswith("img/s0"), target
            assert volume.offset == Coordinate(0, 0, 0)


def test_off_grid_translation_moves_and_warns(tmp_path):
    # no level is on its grid: the preferred level is moved, with a warning
    group = _pyramid(tmp_path, translations=((2, 2, 2), (4, 4, 4), (6, 6, 6)))
    # s1 at 8 nm translated by 4: nearest multiple of 8 is 0 (ties move down)
    with pytest.warns(OffGridWarning, match=r"img/s1: .* moved by \(-4, -4, -4\)"):
        volume = open_volume(group, (8, 8, 8))
    assert volume.offset == Coordinate(0, 0, 0)
    # s2 at 16 nm translated by 6: 6 < 8, moves down by 6
    with pytest.warns(OffGridWarning, match=r"img/s2: .* moved by \(-6, -6, -6\)"):
        assert open_volume(group, (16, 16, 16)).offset == Coordinate(0, 0, 0)
    # s2 seen from V = 32 is finer: grid of its own voxel size 16
    with pytest.warns(OffGridWarning, match=r"img/s2: .* moved by \(-6, -6, -6\)"):
        assert open_volume(group, (32, 32, 32)).offset == Coordinate(0, 0, 0)
    # s0 at 4 nm translated by 2: a tie on the 4 grid, moves down by 2
    with pytest.warns(OffGridWarning, match=r"img/s0: .* moved by \(-2, -2, -2\)"):
        assert open_volume(group, (4, 4, 4)).offset == Coordinate(0, 0, 0)


@pytest.mark.parametrize(
    ("translation", "voxel_size", "target", "offset", "shift"),
    [
        ((3, 0), (4, 4), (8, 8), (4, 0), "(1, 0)"),  # finer: own grid, round to nearest
        ((10, 0), (16, 16), (8, 8), (8, 0), "(-2, 0)"),  # coarser: grid of V
        ((13, -13), (16, 16), (8, 8), (16, -16), "(3, -3)"),  # at most V/2 = 4
    ],
)
def test_off_grid_translation_of_plain_arrays(
    tmp_path, translation, voxel_size, target, offset, shift
):
    array = zarr.open_array(str(tmp_path / "a.zarr"), mode="w", shape=(4, 4), dtype=np.uint8)
    array.attrs.update({"voxel_size": list(voxel_size), "offset": list(translation)})
    with pytest.warns(OffGridWarning, match=rf"a.zarr: .*moved by \{shift[:-1]}\)"):
        volume = open_volume(tmp_path / "a.zarr", target)
    assert volume.offset == Coordinate(offset)


def test_funlib_attributes(tmp_path):
    array = zarr.open_array(str(tmp_path / "a.zarr"), mode="w", shape=(4, 6), dtype=np.uint16)
    array[:] = np.arange(24).reshape(4, 6)
    array.attrs["resolution"] = [8, 4]
    volume = open_volume(tmp_path / "a.zarr")
    assert volume.voxel_size == Coordinate(8, 4)
    assert volume.offset == Coordinate(0, 0)  # no offset attribute: 0
    array.attrs.update({"voxel_size": [2, 2], "offset": [-4, 6]})
    volume = open_volume(tmp_path / "a.zarr")
    assert volume.voxel_size == Coordinate(2, 2)  # voxel_size wins over resolution
    np.testing.assert_array_equal(volume.read(Roi((-2, 8), (4, 2))), [[7], [13]])


def test_challenge_translation_attribute(tmp_path):
    """The challenge's arrays state ``translation`` (floats) instead of ``offset``."""
    array = zarr.open_array(str(tmp_path / "a.zarr"), mode="w", shape=(4, 6), dtype=np.uint64)
    array.attrs.update({"voxel_size": [8.0, 8.0], "translation": [32.0, -40.0]})
    volume = open_volume(tmp_path / "a.zarr")
    assert (volume.voxel_size, volume.offset) == (Coordinate(8, 8), Coordinate(32, -40))
    array.attrs["offset"] = [32, -40]  # both, agreeing
    assert open_volume(tmp_path / "a.zarr").offset == Coordinate(32, -40)
    array.attrs["offset"] = [0, 0]  # both, differing: ambiguous
    with pytest.raises(ValueError, match=r"a.zarr: attributes offset .* translation .* differ"):
        open_volume(tmp_path / "a.zarr")


def test_level_array_reads_parent_multiscales(tmp_path):
    volume = open_volume(_pyramid(tmp_path) / "s2")  # s2 has no funlib attributes
    assert volume.voxel_size == Coordinate(16, 16, 16)
    assert volume.offset == Coordinate(6, 6, 6)


def test_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"nowhere.zarr/img does not exist"):
        open_volume(tmp_path / "nowhere.zarr/img")
    zarr.open_array(str(tmp_path / "bare.zarr"), mode="w", shape=(4, 4), dtype=np.uint8)
    with pytest.raises(ValueError, match=r"bare.zarr has no voxel-size metadata"):
        open_volume(tmp_path / "bare.zarr")
    zarr.open_group(str(tmp_path / "g.zarr"), mode="w")
    with pytest.raises(ValueError, match=r"g.zarr is a zarr group without OME-NGFF"):
        open_volume(tmp_path / "g.zarr")
    with pytest.raises(ValueError, match=r"img: no multiscale level .* \(6, 6, 6\).*\(4, 4, 4\)"):
        open_volume(_pyramid(tmp_path), (6, 6, 6))
    # a 2-D config on 3-D data, as a group and as a plain array
    with pytest.raises(ValueError, match=r"img has 3 spatial dimensions .* \(8, 8\) has 2"):
        open_volume(tmp_path / "c.zarr/img", (8, 8))
    array = zarr.open_array(str(tmp_path / "a.zarr"), mode="w", shape=(4, 4), dtype=np.uint8)
    array.attrs["voxel_size"] = [3, 4]
    with pytest.raises(ValueError, match=r"a.zarr: voxel size \(3, 4\) .* \(8, 8\)"):
        open_volume(tmp_path / "a.zarr", (8, 8))
    with pytest.raises(ValueError, match=r"a.zarr has 2 spatial dimensions .* has 3: a 3-D"):
        open_volume(tmp_path / "a.zarr", (8, 8, 8))
    volume = open_volume(tmp_path / "a.zarr")
    with pytest.raises(ValueError, match=r"a.zarr: ROI .* is not inside the dataset's ROI"):
        volume.read(Roi((0, 0), (15, 8)))
    with pytest.raises(ValueError, match=r"a.zarr: ROI .* is not on the dataset's voxel grid"):
        volume.read(Roi((1, 0), (3, 8)))


def test_prepare_volume_filled_block_by_block(tmp_path):
    array = prepare_volume(
        tmp_path / "out.zarr",
        "seg",
        (2, 6, 4),
        np.uint8,
        (8, 4),
        (-16, 4),
        channel_axis=True,
        chunks=(1, 3, 2),
    )
    assert array.chunks == (1, 3, 2)
    assert not np.asarray(array).any()  # empty: fill value 0
    array[:, 3:, 2:] = 7  # one block
    written = open_ds(str(tmp_path / "out.zarr/seg/s0"))
    assert written.roi == Roi((-16, 4), (48, 16))
    block = Roi((8, 12), (24, 8))
    np.testing.assert_array_equal(written[block], np.full((2, 3, 2), 7))
    with pytest.raises(ValueError, match=r"seg: shape \(6, 4\) does not have 2 spatial axes after"):
        prepare_volume(
            tmp_path / "out.zarr", "seg", (6, 4), np.uint8, (8, 4), (0, 0), channel_axis=True
        )


def test_read_placement_keeps_float_placements_that_open_volume_refuses(tmp_path):
    array = zarr.open_array(str(tmp_path / "a.zarr"), mode="w", shape=(3, 4), dtype=np.uint8)
    array.attrs.update({"voxel_size": [1.74, 2.0], "translation": [23837.13, -7.5]})
    opened, voxel_size, translation, channels = read_placement(tmp_path / "a.zarr")
    assert (voxel_size, translation, channels) == ((1.74, 2.0), (23837.13, -7.5), 0)
    assert opened.shape == (3, 4)
    with pytest.raises(ValueError, match=r"voxel size \(1.74, 2.0\) is not a positive integer"):
        open_volume(tmp_path / "a.zarr")
    del array.attrs["voxel_size"]
    with pytest.raises(ValueError, match="no voxel-size metadata"):
        read_placement(tmp_path / "a.zarr")
