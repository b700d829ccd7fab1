"""Blockwise targets and prediction of a configured sample (CellMap-style
data read through gp_hotdistance.data.Sample)."""

from __future__ import annotations

import numpy as np
import pytest
import zarr
from funlib.geometry import Coordinate, Roi
from funlib.persistence import open_ds

from gp_hotdistance import functional as F
from gp_hotdistance.data import Sample
from gp_hotdistance.geometry import roi_slices
from gp_hotdistance.predictor import HotDistancePredictor
from pipelines import blockwise as bw
from tests.cellmap_fixture import CHANNELS, write_cellmap_fixture
from tests.helpers import block_rois, open_sides, write_run_dir

VOXEL_SIZE = Coordinate(8, 8, 8)
BLOCK = (4, 4, 4)  # crop 9 is 8 voxels per axis: 2 x 2 x 2 blocks
SCALE = 16.0  # context 16 = 2 voxels

OUTPUT_TILE = [8, 16, 16]


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    """A tiny untrained checkpoint (scale 40, as the sample tests use)."""
    return write_run_dir(tmp_path_factory.mktemp("run"), 40.0, OUTPUT_TILE)


@pytest.fixture(autouse=True)
def _daisy_logs_in_tmp(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)


@pytest.fixture(scope="module")
def fixture(tmp_path_factory):
    return write_cellmap_fixture(tmp_path_factory.mktemp("cellmap"))


def _read(path):
    array = open_ds(str(path))
    return np.asarray(array[array.roi])


@pytest.mark.slow
def test_sample_targets_equal_whole_region_where_exact(fixture, tmp_path):
    """Targets of crop 9 (mito annotated, er not) equal ``predictor.process``
    of ``Sample.read_labels`` over the labelled ROI on the voxels the
    exactness condition marks (docs/blockwise.md); er's mask is 0."""
    sample = Sample(fixture.raw_path, fixture.label_paths("crop9"), CHANNELS, VOXEL_SIZE)
    predictor = HotDistancePredictor(CHANNELS, scale_factor=SCALE, mask_distances=True)
    output = tmp_path / "out.zarr"
    job = bw.plan_targets(sample, output, predictor, BLOCK)
    volume = sample.labelled_roi
    assert job.volume_roi == volume == Roi(fixture.crop_offsets["crop9"], VOXEL_SIZE * 8)
    context = predictor.whole_voxel_context(VOXEL_SIZE)
    assert job.context == context == Coordinate(16, 16, 16)
    bw.run_job(job, num_workers=2, progress=False)

    gt, mask = sample.read_labels(volume)
    assert mask[0].all() and not mask[1].any()  # er is not annotated in crop 9
    whole = predictor.process(gt, VOXEL_SIZE)
    target = _read(output / "target" / "s0")
    distance_mask = _read(output / "distance_mask" / "s0")
    assert target.shape == whole.shape == (4, 8, 8, 8)
    np.testing.assert_array_equal(target[:2], whole[:2])
    assert not distance_mask[1].any()  # unknown channel: never trained on
    labels = gt[0]
    known_total = 0
    for write in block_rois(volume, Coordinate(BLOCK) * VOXEL_SIZE):
        read = write.grow(context, context).intersect(volume)
        m, _ = open_sides(read, volume, VOXEL_SIZE, write)
        block_labels = labels[roi_slices(read, volume, VOXEL_SIZE)]
        has_face = block_labels.min() != block_labels.max()
        d_read = F.signed_distance(block_labels, VOXEL_SIZE)[roi_slices(write, read, VOXEL_SIZE)]
        known = np.isinf(m) | (has_face & (np.abs(d_read) <= m))
        in_write = roi_slices(write, volume, VOXEL_SIZE)
        np.testing.assert_array_equal(target[2][in_write][known], whole[2][in_write][known])
        known_total += int(known.sum())
    assert known_total > 0.3 * labels.size
    signature = zarr.open_array(str(output / "done" / "targets"), mode="r").attrs["signature"]
    assert signature["gt"] is None and set(signature["sample"]["labels"]) == {"mito"}


def test_sample_roi_must_be_on_grid(fixture, tmp_path):
    sample = Sample(fixture.raw_path, fixture.label_paths("crop9"), CHANNELS, VOXEL_SIZE)
    predictor = HotDistancePredictor(CHANNELS, scale_factor=SCALE, mask_distances=True)
    off = Roi(sample.labelled_roi.offset + Coordinate(4, 0, 0), VOXEL_SIZE * 4)
    with pytest.raises(ValueError, match=r"ROI .* grid of the sample's voxel size \(8, 8, 8\)"):
        bw.plan_targets(sample, tmp_path / "o.zarr", predictor, BLOCK, roi=off)
    assert not (tmp_path / "o.zarr").exists()


@pytest.mark.slow
def test_sample_predict_equals_one_piece(fixture, run_dir, tmp_path):
    """Prediction over a world ROI of the sample equals ``predict_volume`` of
    the same raw (``Sample.read_raw`` over the ROI grown by the model's
    context, all inside the raw); the default ROI is the labelled one."""
    from gp_hotdistance.data import normalize_raw
    from gp_hotdistance.torch.inference import context_for, predict_volume
    from pipelines.common import load_model
    from pipelines.config import load_config

    sample = Sample(fixture.raw_path, fixture.label_paths("crop9"), CHANNELS, VOXEL_SIZE)
    tile = Coordinate(OUTPUT_TILE)
    roi = Roi(sample.raw_roi.offset + VOXEL_SIZE * Coordinate(12, 8, 8), tile * VOXEL_SIZE)
    model = load_model(load_config(run_dir / "config.json"), run_dir / "model_checkpoint_3")
    context = Coordinate(context_for(model, OUTPUT_TILE)) * VOXEL_SIZE
    grown = roi.grow(context, context)
    assert sample.raw_roi.contains(grown)  # so no zero padding is involved
    output = tmp_path / "pred.zarr"
    job = bw.plan_predict(run_dir, sample, output, OUTPUT_TILE, roi=roi, num_workers=1)
    bw.run_job(job, num_workers=1, progress=False, multiprocessing=False)
    raw = normalize_raw(sample.read_raw(grown), sample.raw.dtype)
    whole = predict_volume(model, raw, OUTPUT_TILE)[
        (slice(None), *roi_slices(roi, grown, VOXEL_SIZE))
    ]
    prediction = open_ds(str(output / "prediction" / "s0"))
    assert prediction.roi == roi
    np.testing.assert_allclose(np.asarray(prediction[roi]), whole, atol=1e-5, rtol=0)

    default = bw.plan_predict(run_dir, sample, tmp_path / "p2.zarr", OUTPUT_TILE)
    assert default.volume_roi == sample.labelled_roi


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--sample", "0"], "--sample needs a config whose data section lists samples"),
        (["--sample", "0", "--input", "x.zarr"], "give either --input"),
        ([], "give either --input"),
        (["--input", "x.zarr", "--roi-offset", "0", "0", "0"], "select a region of a --sample"),
    ],
)
def test_sample_command_line_errors(tmp_path, capsys, extra, message):
    args = ["targets", "--output", str(tmp_path / "o.zarr"), "--block-shape", "4", "4", "4"]
    assert bw.main(args + extra) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "o.zarr").exists()


def _samples_config(fixture, path):
    """A samples-form config for crop 9 of the fixture, written as JSON."""
    import json

    config = {
        "channels": CHANNELS,
        "scale_factor": SCALE,
        "data": {
            "voxel_size": list(VOXEL_SIZE),
            "samples": [{"raw": fixture.raw_path, "labels": fixture.label_paths("crop9")}],
        },
        "model": {
            "num_fmaps": 2,
            "fmap_inc_factor": 2,
            "downsample_factors": [[2, 2, 2]],
            "output_shape": OUTPUT_TILE,
        },
    }
    path.write_text(json.dumps(config))
    return path


@pytest.mark.slow
def test_sample_targets_command_line(fixture, tmp_path):
    """``targets --config C --sample 0`` writes what plan_targets of the
    same Sample writes."""
    config = _samples_config(fixture, tmp_path / "c.json")
    output = tmp_path / "cli.zarr"
    args = ["targets", "--config", str(config), "--sample", "0", "--output", str(output)]
    assert bw.main([*args, "--block-shape", *map(str, BLOCK), "--no-progress"]) == 0
    sample = Sample(fixture.raw_path, fixture.label_paths("crop9"), CHANNELS, VOXEL_SIZE)
    predictor = HotDistancePredictor(CHANNELS, scale_factor=SCALE, mask_distances=True)
    reference = tmp_path / "lib.zarr"
    job = bw.plan_targets(sample, reference, predictor, BLOCK)
    bw.run_job(job, num_workers=1, progress=False, multiprocessing=False)
    for name in ("target", "distance_mask"):
        np.testing.assert_array_equal(_read(output / name / "s0"), _read(reference / name / "s0"))


@pytest.mark.slow
def test_sample_predict_command_line_roi(fixture, run_dir, tmp_path):
    """``predict --sample 0 --roi-offset .. --roi-shape ..`` predicts that
    world ROI at the run's voxel size."""

    config = _samples_config(fixture, tmp_path / "c.json")
    run = tmp_path / "run"
    run.mkdir()
    (run / "model_checkpoint_3").write_bytes((run_dir / "model_checkpoint_3").read_bytes())
    (run / "config.json").write_text(config.read_text())
    sample = Sample(fixture.raw_path, fixture.label_paths("crop9"), CHANNELS, VOXEL_SIZE)
    roi = Roi(sample.labelled_roi.offset, Coordinate(OUTPUT_TILE) * VOXEL_SIZE)
    output = tmp_path / "pred.zarr"
    args = ["predict", "--run", str(run), "--sample", "0", "--output", str(output)]
    args += ["--roi-offset", *map(str, roi.offset), "--roi-shape", *map(str, roi.shape)]
    assert bw.main([*args, "--workers", "1", "--no-progress"]) == 0
    prediction = open_ds(str(output / "prediction" / "s0"))
    assert prediction.roi == roi and prediction.voxel_size == VOXEL_SIZE
    signature = zarr.open_array(str(output / "done" / "predict"), mode="r").attrs["signature"]
    assert signature["raw"] is None and signature["sample"]["raw"].endswith("fibsem-uint8/s0")


def test_multiscale_raw_needs_a_level_at_the_runs_voxel_size(fixture, run_dir, tmp_path):
    """``predict --raw GROUP`` with a samples-form run reads the level at the
    run's data.voxel_size; where the data layer would resample a finer level
    (s1 at 16 nm is half-voxel translated, so s0 is chosen), it refuses
    instead of predicting at the wrong voxel size."""
    import json

    config = json.loads(_samples_config(fixture, tmp_path / "c.json").read_text())
    run = tmp_path / "run"
    run.mkdir()
    (run / "model_checkpoint_3").write_bytes((run_dir / "model_checkpoint_3").read_bytes())
    for voxel_size, level in (([8, 8, 8], "s0"), ([16, 16, 16], None)):
        config["data"]["voxel_size"] = voxel_size
        (run / "config.json").write_text(json.dumps(config))
        output = tmp_path / f"p{voxel_size[0]}.zarr"
        if level is not None:
            job = bw.plan_predict(run, fixture.raw_path, output, OUTPUT_TILE)
            assert job.raw.path == f"{fixture.raw_path}/{level}"
            assert job.voxel_size == Coordinate(voxel_size)
            continue
        with pytest.raises(ValueError, match=r"raw dataset .*fibsem-uint8 .*no level at voxel"):
            bw.plan_predict(run, fixture.raw_path, output, OUTPUT_TILE)
        assert not output.exists()
