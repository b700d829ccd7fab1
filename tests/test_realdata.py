"""train and preview on data in the CellMap layout (tests/cellmap_fixture.py):
targets from resampled labels, unknown classes and unlabelled voxels with
zero weights, raw context from the large volume, batches from every crop,
world offsets, held-out crop checks, outputs readable everywhere."""

from __future__ import annotations

import json

import numpy as np
import pytest
import zarr
from funlib.geometry import Coordinate, Roi
from funlib.persistence import open_ds
from ome_zarr.io import parse_url
from ome_zarr.reader import Reader

from gp_hotdistance import HotDistancePredictor
from gp_hotdistance.data import open_volume, write_volume
from pipelines import preview as preview_module
from pipelines import train as train_module
from pipelines.config import ConfigError, from_dict
from tests.cellmap_fixture import BIG_ID, CROPS, write_cellmap_fixture

CHANNELS = ["mito", "er"]
SCALE = 24.0  # 3 voxels of 8 nm
V = Coordinate(8, 8)
CROP_NAMES = ["crop7", "crop9"]


@pytest.fixture(scope="module")
def fixture(tmp_path_factory):
    root = tmp_path_factory.mktemp("cellmap")
    return write_cellmap_fixture(root, voxel_size=V, label_factors=(2, 2), raw_shape=(48, 48))


def config_for(fixture, crops=CROP_NAMES, eval_crop=None, **training):
    settings = {
        "iterations": 2,
        "save_every": 2,
        "snapshot_every": 1,
        "num_workers": 0,
        "augment": False,
    }
    settings.update(training)
    data = {
        "voxel_size": list(V),
        "samples": [{"raw": fixture.raw_path, "labels": fixture.label_paths(c)} for c in crops],
    }
    if eval_crop is not None:
        data["eval"] = {"raw": fixture.raw_path, "labels": fixture.label_paths(eval_crop)}
    return from_dict(
        {
            "channels": CHANNELS,
            "scale_factor": SCALE,
            "data": data,
            "model": {"num_fmaps": 2, "downsample_factors": [[2, 2]], "output_shape": [8, 8]},
            "training": settings,
        }
    )


# -- slow, obviously correct references ---------------------------------------


def crop_roi(fixture, crop: str) -> Roi:
    shape = Coordinate(next(iter(fixture.labels[crop].values())).shape)
    return Roi(fixture.crop_offsets[crop], shape * fixture.label_voxel_size)


def reference_labels(fixture, crop: str, roi: Roi) -> tuple[np.ndarray, np.ndarray]:
    """(gt, known) at 8 nm over ``roi``, one coarse voxel at a time: known
    iff the class has a dataset in ``crop`` and the coarse voxel lies wholly
    inside the crop; in the class iff MORE than half its fine voxels are
    nonzero."""
    shape = tuple(roi.shape / V)
    gt = np.zeros((len(CHANNELS), *shape), np.uint8)
    known = np.zeros_like(gt)
    box = crop_roi(fixture, crop)
    lv = fixture.label_voxel_size
    for c, channel in enumerate(CHANNELS):
        if channel not in fixture.labels[crop]:
            continue
        labels = fixture.labels[crop][channel]
        for index in np.ndindex(*shape):
            voxel = Roi(roi.offset + Coordinate(index) * V, V)
            if not box.contains(voxel):
                continue
            fine = labels[((voxel - box.offset) / lv).to_slices()] != 0
            known[(c, *index)] = 1
            gt[(c, *index)] = 2 * int(fine.sum()) > fine.size
    return gt, known


def crop_of(fixture, roi: Roi) -> str:
    """The crop whose labelled ROI holds the centre voxel of ``roi``."""
    centre = roi.offset + (roi.shape / V) // 2 * V
    found = [c for c in CROP_NAMES if crop_roi(fixture, c).contains(Roi(centre, V))]
    assert len(found) == 1, (roi, found)
    return found[0]


def run_preview(config, out, batches):
    """``preview`` without the PNG montages (matplotlib takes seconds per
    batch; test_pipelines checks them)."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(preview_module, "write_montage", lambda *args: None)
        preview_module.preview(config, out, batches)


def read(group, name) -> tuple[np.ndarray, Roi]:
    array = open_ds(str(group / name / "s0"))
    return np.asarray(array[array.roi]), array.roi


# -- preview -------------------------------------------------------------------


@pytest.fixture(scope="module")
def previewed(fixture, tmp_path_factory):
    out = tmp_path_factory.mktemp("preview")
    run_preview(config_for(fixture), out, batches=20)
    return out


def test_preview_batches_equal_the_references(fixture, previewed):
    predictor = HotDistancePredictor(CHANNELS, SCALE, mask_distances=True)
    seen = set()
    for index in range(20):
        group = previewed / "preview.zarr" / f"batch_{index}"
        target_hot, roi = read(group, "target/hot_mito")
        assert roi.shape == Coordinate(64, 64)
        crop = crop_of(fixture, roi)  # the centre lies inside a labelled ROI
        seen.add(crop)

        # raw: the large volume's voxels at the world offset, also outside the
        # crop, and zeros beyond the raw volume
        raw, raw_roi = read(group, "raw")
        begin = (raw_roi.offset - fixture.raw_offset) / V
        padded = np.pad(fixture.raw, 64)
        window = tuple(
            slice(b + 64, b + 64 + s) for b, s in zip(begin, raw_roi.shape / V, strict=True)
        )
        expected = padded[window]
        np.testing.assert_allclose(raw, expected / np.float32(255), rtol=1e-6)
        assert not crop_roi(fixture, crop).contains(raw_roi)  # context reaches outside

        # gt and mask: the strict-majority resampling, unknown outside the crop
        gt, known = reference_labels(fixture, crop, roi)
        grown = roi.grow(Coordinate(24, 24), Coordinate(24, 24))
        grown_gt, _ = reference_labels(fixture, crop, grown)
        target = predictor.process(grown_gt, V)[(slice(None), slice(3, -3), slice(3, -3))]
        for c, channel in enumerate(CHANNELS):
            np.testing.assert_array_equal(read(group, f"gt/{channel}")[0], gt[c])
            np.testing.assert_array_equal(read(group, f"mask/{channel}")[0], known[c])
            np.testing.assert_array_equal(read(group, f"target/hot_{channel}")[0], gt[c])
            np.testing.assert_allclose(
                read(group, f"target/dist_{channel}")[0], target[len(CHANNELS) + c], atol=1e-5
            )
            for kind in ("hot", "dist"):
                weights = read(group, f"weights/{kind}_{channel}")[0]
                assert not weights[known[c] == 0].any(), (index, channel, kind)
            distance_mask = read(group, f"distance_mask/dist_{channel}")[0]
            assert not distance_mask[known[c] == 0].any()
        if crop == "crop9":  # er is not annotated there: unknown, never background
            assert not read(group, "weights/hot_er")[0].any()
            assert not read(group, "weights/dist_er")[0].any()
        assert known.any(axis=0).any() and not known.all()  # batches straddle the crop edge
    assert seen == {"crop7", "crop9"}  # batches come from every crop


def test_preview_containers_open_everywhere(previewed):
    container = previewed / "preview.zarr"
    zarr.open_group(str(container), mode="r")
    for name in ["raw", "gt/mito", "mask/er", "target/dist_er", "weights/hot_mito"]:
        parts = f"batch_0/{name}".split("/")
        for depth in range(1, len(parts) + 1):
            zarr.open_group(str(container / "/".join(parts[:depth])), mode="r")
        ours = open_volume(container / "batch_0" / name)
        theirs = open_ds(str(container / "batch_0" / name / "s0"))
        assert ours.voxel_size == theirs.voxel_size == V
        assert ours.roi == theirs.roi
        # and an independent OME-NGFF reader places it the same way
        node = next(iter(Reader(parse_url(str(container / "batch_0" / name)))()))
        transforms = {t["type"]: t for t in node.metadata["coordinateTransformations"][0]}
        assert tuple(transforms["scale"]["scale"]) == tuple(V)
        assert tuple(transforms["translation"]["translation"]) == tuple(ours.offset)
        assert node.data[0].shape == ours.shape


def test_sampling_follows_labelled_volume_times_weight(fixture, tmp_path):
    """crop9 gets weight 1e-9: every batch comes from crop7."""
    values = config_for(fixture).to_dict()
    values["data"]["samples"][1]["weight"] = 1e-9
    out = tmp_path / "p"
    run_preview(from_dict(values), out, batches=6)
    crops = [
        crop_of(fixture, read(out / "preview.zarr" / f"batch_{i}", "gt/mito")[1]) for i in range(6)
    ]
    assert crops == ["crop7"] * 6


# -- class-id labels ---------------------------------------------------------


def test_class_id_labels_with_ids_above_2_pow_32(fixture, tmp_path):
    """One class-id dataset: mito is id BIG_ID (> 2**32), er is id 7;
    BIG_ID + 1 and other ids are background."""
    crop = "crop7"
    box = crop_roi(fixture, crop)
    shape = fixture.labels[crop]["mito"].shape
    ids = np.zeros(shape, np.uint64)
    ids[fixture.labels[crop]["mito"] != 0] = BIG_ID
    ids[fixture.labels[crop]["er"] != 0] = 7
    ids[: shape[0] // 4] = BIG_ID + 1  # a neighbouring id: not mito
    container = tmp_path / "ids.zarr"
    write_volume(container, "ids", ids, fixture.label_voxel_size, box.offset)
    values = config_for(fixture, crops=[crop]).to_dict()
    values["data"]["samples"][0]["labels"] = str(container / "ids")
    values["data"]["class_ids"] = [BIG_ID, 7]
    out = tmp_path / "p"
    run_preview(from_dict(values), out, batches=2)
    lv = fixture.label_voxel_size
    for index in range(2):
        group = out / "preview.zarr" / f"batch_{index}"
        gt, roi = read(group, "gt/mito")
        for c, class_id in enumerate([BIG_ID, 7]):
            expected = np.zeros(tuple(roi.shape / V), np.uint8)
            for voxel in np.ndindex(*expected.shape):
                world = Roi(roi.offset + Coordinate(voxel) * V, V)
                if box.contains(world):
                    fine = ids[((world - box.offset) / lv).to_slices()] == class_id
                    expected[voxel] = 2 * int(fine.sum()) > fine.size
            np.testing.assert_array_equal(read(group, f"gt/{CHANNELS[c]}")[0], expected)


# -- training ----------------------------------------------------------------


def test_train_on_crops_evaluates_the_held_out_crop(fixture, tmp_path):
    out = tmp_path / "run"
    summary = train_module.train(config_for(fixture, eval_crop="crop9"), out, quiet=True)
    assert summary["iterations"] == 2
    # er is not annotated in crop9: no Dice for it, rather than a wrong one
    assert set(summary["dice"]) == {"mito"}
    assert 0.0 <= summary["dice"]["mito"] <= 1.0
    snapshot = out / "snapshots" / "batch_2.zarr"
    zarr.open_group(str(snapshot), mode="r")
    for name in ["raw", "gt/er", "target/hot_mito", "prediction/dist_er", "weights/dist_er"]:
        ours = open_volume(snapshot / name)
        theirs = open_ds(str(snapshot / name / "s0"))
        assert ours.voxel_size == theirs.voxel_size == V
        assert ours.roi == theirs.roi
    gt, roi = read(snapshot, "gt/mito")
    crop = crop_of(fixture, roi)  # snapshots carry the world offset
    np.testing.assert_array_equal(gt, reference_labels(fixture, crop, roi)[0][0])
    config = json.loads((out / "config.json").read_text())
    assert config["data"]["voxel_size"] == [8, 8]


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (
            lambda v, f: v["data"].update(voxel_size=[12, 12]),
            r"data.samples\[0\] \(raw .*\): .*fibsem-uint8.* 12",
        ),
        (
            lambda v, f: v["data"]["samples"][1]["labels"].update(er=str(f.container / "no")),
            r"1 data path\(s\) do not exist:\n  data.samples\[1\].labels.er: .*no$",
        ),
        (
            lambda v, f: v["data"]["samples"][0].update(raw=str(f.container / "recon-1")),
            r"data.samples\[0\] \(raw .*recon-1, .*\): .*recon-1 is a zarr group without OME-NGFF",
        ),
    ],
)
def test_data_errors_name_the_sample(fixture, tmp_path, change, message):
    values = config_for(fixture).to_dict()
    change(values, fixture)
    with pytest.raises(ConfigError, match=message):
        run_preview(from_dict(values), tmp_path / "p", batches=1)


def test_label_classes_must_be_channels(fixture):
    values = config_for(fixture).to_dict()
    values["data"]["samples"][0]["labels"] = str(fixture.container / CROPS / "crop7/[mito,golgi]")
    with pytest.raises(
        ConfigError, match=r"data.samples\[0\].labels names class\(es\) \['golgi'\]"
    ):
        from_dict(values)
