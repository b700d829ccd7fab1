"""Blockwise targets and prediction on daisy (pipelines/blockwise/).

Every daisy run here uses 2 worker processes (except the serial failure
test); one targets run is shared by the module (``targets_run``).
"""

from __future__ import annotations

import dataclasses
import os
import pickle
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import zarr
from funlib.geometry import Coordinate
from funlib.persistence import open_ds, prepare_ds

from gp_hotdistance import functional as F
from gp_hotdistance.data import normalize_raw
from gp_hotdistance.geometry import roi_slices
from gp_hotdistance.predictor import HotDistancePredictor
from pipelines import blockwise as bw
from pipelines.common import load_model
from pipelines.config import load_config
from tests.blockwise_jobs import FailAlways, FailOnce
from tests.helpers import (
    block_rois,
    blockwise_targets_args,
    open_sides,
    write_run_dir,
    write_volumes,
)

ROOT = Path(__file__).resolve().parents[1]

SHAPE = (36, 64, 72)  # not a multiple of the block: the last blocks shrink
BLOCK = (16, 32, 32)  # 3 x 2 x 3 = 18 blocks
VOXEL_SIZE = (16, 8, 8)  # anisotropic
OFFSET = (-64, 32, -16)  # negative offset
SCALE = 40.0  # context: ceil(40 / 16) * 16 = 48 along z, 40 along y, x


@pytest.fixture(autouse=True)
def _daisy_logs_in_tmp(tmp_path, monkeypatch):
    """daisy writes ./daisy_logs unless told otherwise; keep the cwd clean."""
    monkeypatch.chdir(tmp_path)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    path = tmp_path_factory.mktemp("data") / "data.zarr"
    write_volumes(path, SHAPE, VOXEL_SIZE, OFFSET, seed=3)
    return path


def _predictor():
    return HotDistancePredictor(["mito", "er"], scale_factor=SCALE, mask_distances=True)


def _targets_args(data, output):
    return blockwise_targets_args(data, output, BLOCK, SCALE, "--workers", "2")


@pytest.fixture(scope="module")
def targets_run(data, tmp_path_factory):
    """One uninterrupted 2-worker run through the command line."""
    output = tmp_path_factory.mktemp("targets") / "out.zarr"
    assert bw.main(_targets_args(data, output)) == 0
    return output


def _read(path):
    array = open_ds(str(path))
    return np.asarray(array[array.roi])


def test_whole_voxel_context_rounds_up_unlike_snapped_context():
    """Blockwise needs context >= max_distance; gt_region_for_roi keeps whole
    voxels inside max_distance. max_distance = SCALE = 40 (epsilon default)."""
    predictor = _predictor()
    vs = Coordinate(VOXEL_SIZE)
    assert predictor.max_distance == pytest.approx(40.0)
    assert predictor.whole_voxel_context(vs) == Coordinate(48, 40, 40)
    assert predictor.snapped_context(vs) == (Coordinate(32, 40, 40), Coordinate(32, 40, 40))


def test_open_volume_reads_the_channel_first_outputs(data, targets_run):
    """The data layer's reader opens what blockwise writes: channels first,
    at the input's voxel size and offset."""
    from gp_hotdistance.data import open_volume

    gt = open_volume(data / "gt")
    for name, channels in (("target", 4), ("distance_mask", 2)):
        volume = open_volume(targets_run / name)
        assert volume.channels == 1 and volume.shape[0] == channels
        assert volume.voxel_size == Coordinate(VOXEL_SIZE) and volume.roi == gt.roi
        inner = volume.roi.grow(-Coordinate(VOXEL_SIZE), -Coordinate(VOXEL_SIZE))
        expected = _read(targets_run / name / "s0")[(slice(None), *slice_of(inner, volume))]
        np.testing.assert_array_equal(volume.read(inner), expected)


def slice_of(roi, volume):
    return ((roi - volume.offset) / volume.voxel_size).to_slices()


def test_targets_equal_whole_volume_where_known(data, targets_run):
    """The exact condition (docs/blockwise.md): per
    channel, a blockwise distance equals the whole-volume one at voxel ``v``
    of write ROI ``B`` (read ROI ``R = grow(B, c) ∩ W``) when ``R == W`` or
    the channel has a face in ``R`` and ``|d_R(v)| <= m(v)``, ``m`` the
    distance to the nearest open side of ``R``. Hot channels always equal."""
    predictor = _predictor()
    vs = Coordinate(VOXEL_SIZE)
    gt_array = open_ds(str(data / "gt"))
    volume = gt_array.roi
    gt = np.asarray(gt_array[volume])
    mask = _read(data / "mask")
    whole = predictor.process(gt, vs)
    whole_dm = predictor.create_distance_mask(whole[2:], mask, vs)
    block_target = _read(targets_run / "target" / "s0")
    block_dm = _read(targets_run / "distance_mask" / "s0")
    assert block_target.shape == whole.shape and block_target.dtype == np.float32
    assert block_dm.shape == whole_dm.shape and block_dm.dtype == mask.dtype
    np.testing.assert_array_equal(block_target[:2], whole[:2])

    context = Coordinate(48, 40, 40)  # SCALE rounded up to whole voxels per axis
    assert predictor.whole_voxel_context(vs) == context
    block_size = Coordinate(BLOCK) * vs
    known_total = 0
    for write in block_rois(volume, block_size):
        read = write.grow(context, context).intersect(volume)
        in_read, in_write = roi_slices(read, volume, vs), roi_slices(write, volume, vs)
        crop = roi_slices(write, read, vs)
        m, e = open_sides(read, volume, vs, write)
        for c in range(2):
            labels = gt[c][in_read]
            has_face = labels.min() != labels.max()
            d_read = F.signed_distance(labels, vs)[crop]
            known = np.isinf(m) | (has_face & (np.abs(d_read) <= m))
            got, want = block_target[2 + c][in_write], whole[2 + c][in_write]
            np.testing.assert_array_equal(got[known], want[known], err_msg=f"{write} ch {c}")
            known_total += int(known.sum())
            # every voxel within the context of a face (|d| <= 40 <= m - vs/2) is known
            assert known[np.abs(want) < np.tanh(40 / SCALE) - 1e-6].all()
            if has_face:
                # unknown voxels: both distances are at least m(v) away
                unknown = ~known
                bound = np.tanh(m[unknown] / SCALE) - 1e-6
                assert (np.abs(got[unknown]) >= bound).all()
                assert (np.abs(want[unknown]) >= bound).all()
                # distance mask: block zeroes a superset; equal where exact and b_W <= e
                got_dm, want_dm = block_dm[c][in_write], whole_dm[c][in_write]
                assert (got_dm <= want_dm).all(), f"{write} ch {c}"
                b_whole = F.boundary_distance(mask, vs)[in_write]
                same = known & (b_whole <= e)
                np.testing.assert_array_equal(got_dm[same], want_dm[same])
    # the condition marks a good share of the voxels, so the test is not vacuous
    assert known_total > 0.3 * 2 * gt[0].size
    done = zarr.open_array(str(targets_run / "done" / "targets"), mode="r")[...]
    assert done.shape == (3, 2, 3) and done.all()  # 18 blocks, none missing


_DRIVER = """
import dataclasses, pickle, sys, time
from pipelines import blockwise as bw

class Slow(bw.TargetsJob):
    def process(self, write_roi):
        seconds = super().process(write_roi)
        time.sleep(0.5)  # outputs written, done marker not yet
        return seconds

with open(sys.argv[1], "rb") as f:
    job = pickle.load(f)
slow = Slow(**{f.name: getattr(job, f.name) for f in dataclasses.fields(job)})
bw.run_job(slow, num_workers=2, progress=False)
"""


@pytest.mark.slow
def test_kill_and_resume_gives_identical_output(data, targets_run, tmp_path):
    output = tmp_path / "out.zarr"
    job = bw.plan_targets(
        data / "gt", output, _predictor(), BLOCK, mask=data / "mask", num_workers=2
    )
    (tmp_path / "job.pkl").write_bytes(pickle.dumps(job))
    (tmp_path / "driver.py").write_text(_DRIVER)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(
        [sys.executable, str(tmp_path / "driver.py"), str(tmp_path / "job.pkl")],
        env=env,
        start_new_session=True,  # its own process group: the run and its workers
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 180
        while job.markers.done().sum() < 2:
            assert proc.poll() is None, "driver ended before it was killed"
            assert time.monotonic() < deadline, "driver made no progress"
            time.sleep(0.05)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    done_at_kill = int(job.markers.done().sum())
    assert 2 <= done_at_kill < 18, done_at_kill

    report = bw.run_job(job, num_workers=2, progress=False)
    assert report.skipped == done_at_kill
    assert report.completed == report.blocks == 18
    assert job.markers.done().all()  # no block missing
    for name in ("target", "distance_mask"):
        np.testing.assert_array_equal(_read(output / name / "s0"), _read(targets_run / name / "s0"))


@pytest.mark.parametrize(
    "mismatch, kwargs",
    [
        ("channels", {"shape": (3, *SHAPE)}),
        ("spatial shape", {"shape": (4, SHAPE[0], SHAPE[1], SHAPE[2] - 8)}),
        ("voxel size", {"voxel_size": (8, 8, 8), "offset": (-64, 32, -16)}),
        ("dtype", {"dtype": np.float64}),
        ("offset", {"offset": (0, 0, 0)}),
        ("channel names", {"names": ["hot_er", "hot_mito", "dist_er", "dist_mito"]}),
        ("not an OME-NGFF output group", {"layout": "array"}),
    ],
)
def test_refuses_mismatched_output(data, tmp_path, mismatch, kwargs):
    from gp_hotdistance.data import prepare_volume

    output = tmp_path / "out.zarr"
    spec = {
        "shape": (4, *SHAPE),
        "offset": OFFSET,
        "voxel_size": VOXEL_SIZE,
        "dtype": np.float32,
        "names": ["hot_mito", "hot_er", "dist_mito", "dist_er"],
        "layout": "ome",
        **kwargs,
    }
    if spec["layout"] == "ome":
        existing = prepare_volume(
            output,
            "target",
            spec["shape"],
            spec["dtype"],
            spec["voxel_size"],
            spec["offset"],
            channel_axis=True,
        )
        existing.attrs["channel_names"] = spec["names"]
        kept_path = output / "target" / "s0"
    else:  # the layout of older runs: a plain funlib array output/target
        existing = prepare_ds(
            str(output / "target"),
            shape=spec["shape"],
            offset=spec["offset"],
            voxel_size=spec["voxel_size"],
            axis_names=["c^", "z", "y", "x"],
            dtype=spec["dtype"],
            mode="w",
        )._source_data
        kept_path = output / "target"
    existing[...] = 7
    with pytest.raises(bw.OutputMismatchError, match=rf"target.*{mismatch}"):
        bw.plan_targets(data / "gt", output, _predictor(), BLOCK, mask=data / "mask")
    kept = _read(kept_path)
    assert kept.shape == spec["shape"] and (kept == 7).all()  # never overwritten
    assert not (output / "distance_mask").exists() and not (output / "done").exists()
    # the command line reports it and fails
    assert bw.main(_targets_args(data, output)) == 2


def test_resume_refuses_other_parameters(data, tmp_path, capsys):
    output = tmp_path / "out.zarr"
    bw.plan_targets(data / "gt", output, _predictor(), BLOCK, mask=data / "mask")
    other = HotDistancePredictor(["mito", "er"], scale_factor=80.0, mask_distances=True)
    with pytest.raises(bw.OutputMismatchError, match=r"done/targets.*scale_factor"):
        bw.plan_targets(data / "gt", output, other, BLOCK, mask=data / "mask")
    with pytest.raises(bw.OutputMismatchError, match=r"done/targets.*block_size"):
        bw.plan_targets(data / "gt", output, _predictor(), (32, 32, 32), mask=data / "mask")
    with pytest.raises(bw.OutputMismatchError, match=r"target: chunks \(16, 32, 32\) do not"):
        bw.plan_targets(data / "gt", output, _predictor(), (8, 32, 32), mask=data / "mask")
    # the same parameters resume
    bw.plan_targets(data / "gt", output, _predictor(), BLOCK, mask=data / "mask")


def _as(cls, job):
    return cls(**{f.name: getattr(job, f.name) for f in dataclasses.fields(job)})


@pytest.mark.slow
def test_failed_block_is_retried_and_reported(data, targets_run, tmp_path, caplog):
    output = tmp_path / "out.zarr"
    job = bw.plan_targets(data / "gt", output, _predictor(), BLOCK, mask=data / "mask")
    report = bw.run_job(_as(FailOnce, job), num_workers=2, progress=False)
    assert (tmp_path / "failed_once").exists()
    assert report.retried_error is not None and "injected failure" in report.retried_error
    assert "retried" in caplog.text
    assert job.markers.done().all()
    np.testing.assert_array_equal(
        _read(output / "target" / "s0"), _read(targets_run / "target" / "s0")
    )


@pytest.mark.slow
def test_permanent_failure_raises_with_missing_block(data, tmp_path):
    output = tmp_path / "out.zarr"
    job = bw.plan_targets(data / "gt", output, _predictor(), BLOCK, mask=data / "mask")
    # serial mode (in this process): daisy stops at the failing block
    with pytest.raises(bw.BlockwiseError, match=r"(?s)blocks not done.*injected failure") as info:
        bw.run_job(_as(FailAlways, job), max_retries=1, progress=False, multiprocessing=False)
    missing = 18 - int(job.markers.done().sum())
    assert missing >= 1 and f"{missing} of 18 blocks not done" in str(info.value)
    assert "[-64:192, 32:288, -16:240]" in str(info.value)  # the failing block's write ROI


# ---------------------------------------------------------------------------
# prediction
# ---------------------------------------------------------------------------

OUTPUT_TILE = [8, 16, 16]


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    return write_run_dir(tmp_path_factory.mktemp("run"), SCALE, OUTPUT_TILE)


def test_predict_skips_a_truncated_newest_checkpoint(data, run_dir, tmp_path):
    """A training killed while saving leaves a truncated newest checkpoint:
    predict uses the newest complete one and says which it skipped."""
    import shutil

    run = tmp_path / "run"
    shutil.copytree(run_dir, run)
    (run / "model_checkpoint_9").write_bytes((run / "model_checkpoint_3").read_bytes()[:100])
    job = bw.plan_predict(run, data / "raw", tmp_path / "out.zarr", BLOCK)
    assert job.checkpoint == str(run / "model_checkpoint_3")


@pytest.mark.slow
def test_predict_equals_one_piece(data, run_dir, tmp_path):
    from gp_hotdistance.torch.inference import predict_volume

    output = tmp_path / "pred.zarr"
    args = [
        "predict",
        "--run", str(run_dir),
        "--input", str(data),
        "--raw", "raw",
        "--output", str(output),
        "--block-shape", *map(str, BLOCK),  # 2 x 2 x 2 tiles per block
        "--workers", "2",
        "--no-progress",
    ]  # fmt: skip
    assert bw.main(args) == 0
    prediction = open_ds(str(output / "prediction" / "s0"))
    segmentation = open_ds(str(output / "segmentation" / "s0"))
    assert prediction.axis_names == ["c^", "z", "y", "x"]
    assert prediction.roi == open_ds(str(data / "raw")).roi
    assert prediction.dtype == np.float32 and segmentation.dtype == np.uint8
    assert prediction.shape == (4, *SHAPE) and segmentation.shape == (2, *SHAPE)

    model = load_model(load_config(run_dir / "config.json"), run_dir / "model_checkpoint_3")
    raw = open_ds(str(data / "raw"))
    whole = predict_volume(model, normalize_raw(raw[raw.roi], raw.dtype), OUTPUT_TILE)
    got = np.asarray(prediction[prediction.roi])
    np.testing.assert_allclose(got, whole, atol=1e-5, rtol=0)
    certain = np.abs(whole[:2]) > 1e-4  # logits this close to 0 may flip either way
    seg = np.asarray(segmentation[segmentation.roi])
    np.testing.assert_array_equal(seg[certain], (whole[:2] > 0)[certain])
    done = zarr.open_array(str(output / "done" / "predict"), mode="r")[...]
    assert done.shape == (3, 2, 3) and done.all()


def test_predict_block_shape_must_be_tile_multiple(data, run_dir, tmp_path):
    with pytest.raises(ValueError, match="multiple of the model's output tile"):
        bw.plan_predict(run_dir, data / "raw", tmp_path / "out.zarr", (12, 32, 32))
    assert not (tmp_path / "out.zarr").exists()


@pytest.mark.parametrize("command", ["targets", "predict"])
def test_input_without_a_dataset_name_is_a_clear_error(tmp_path, capsys, command):
    """``--input`` reads only the datasets named on the command line, the
    config's data section describes samples."""
    config = Path(__file__).parents[1] / "configs" / "samples_3d.yaml"
    extra = ["--config", str(config)] if command == "targets" else ["--run", str(tmp_path)]
    argv = [command, "--input", str(tmp_path / "x.zarr"), "--output", str(tmp_path / "o.zarr")]
    assert bw.main([*argv, "--block-shape", "8", "8", "8", *extra]) == 2
    flag = "--gt" if command == "targets" else "--raw"
    error = capsys.readouterr().err
    assert error.startswith(f"error: --input needs {flag}, the dataset inside it to read")
    assert "--sample N" in error and not (tmp_path / "o.zarr").exists()


@pytest.mark.parametrize(
    "blocks, skipped, processed",
    [(18, 0, 180), (18, 12, 60), (18, 18, 0)],  # 10 voxels per block
)
def test_rate_counts_the_processed_blocks_only(blocks, skipped, processed):
    report = bw.Report("targets", blocks, blocks - skipped, skipped, None, 180, 2.0)
    assert report.processed_voxels == processed
    assert report.voxels_per_second == processed / 2.0


def test_help_documents_units(capsys):
    for command in ("targets", "predict"):
        with pytest.raises(SystemExit) as exit_info:
            bw.main([command, "--help"])
        assert exit_info.value.code == 0
        text = capsys.readouterr().out
        assert "VOXELS" in text and "--workers" in text and "--output" in text


def _ome_level(path):
    """Axes, level-0 transforms and data as the ome-zarr package reads them."""
    from ome_zarr.io import parse_url
    from ome_zarr.reader import Reader

    node = next(iter(Reader(parse_url(str(path)))()))
    return node.metadata["axes"], node.metadata["coordinateTransformations"][0], node.data[0]


def test_outputs_are_ome_ngff_groups(data, targets_run):
    """Every output reads back with zarr (root and each group), funlib
    (``name/s0``), blockwise's own input reader and ome-zarr, at the gt's
    voxel size and offset, with named channels."""
    from pipelines.blockwise.plan import open_input

    for group in ("", "target", "distance_mask", "done"):
        assert isinstance(zarr.open_group(str(targets_run / group), mode="r"), zarr.Group)
    channels = {
        "target": ["hot_mito", "hot_er", "dist_mito", "dist_er"],
        "distance_mask": ["mito", "er"],
    }
    for name, names in channels.items():
        array = open_ds(str(targets_run / name / "s0"))
        assert array.voxel_size == Coordinate(VOXEL_SIZE)
        assert array.offset == Coordinate(OFFSET)
        assert array.shape == (len(names), *SHAPE)
        assert zarr.open_group(str(targets_run / name), mode="r").attrs["channel_names"] == names
        assert (
            zarr.open_array(str(targets_run / name / "s0"), mode="r").attrs["channel_names"]
            == names
        )
        reread = open_input(targets_run / name / "s0", name)
        assert (reread.voxel_size, reread.offset) == (Coordinate(VOXEL_SIZE), Coordinate(OFFSET))
        axes, transforms, level = _ome_level(targets_run / name)
        assert [a["type"] for a in axes] == ["channel", "space", "space", "space"]
        assert transforms == [
            {"type": "scale", "scale": [1, *VOXEL_SIZE]},
            {"type": "translation", "translation": [0, *OFFSET]},
        ]
        np.testing.assert_array_equal(np.asarray(level), _read(targets_run / name / "s0"))


def test_multiscale_and_metadata_free_inputs(data, targets_run, tmp_path):
    """gt and mask given as OME-NGFF multiscale groups give the same targets;
    an array without voxel-size metadata is refused, naming it."""
    from gp_hotdistance.data import write_volume

    inputs = tmp_path / "ome.zarr"
    for name in ("gt", "mask"):
        array = open_ds(str(data / name))
        values = np.asarray(array[array.roi])
        if values.ndim == 4:  # channel-first gt: the class-id form
            values = (values * np.arange(1, values.shape[0] + 1)[:, None, None, None]).max(0)
        write_volume(inputs, name, values, VOXEL_SIZE, OFFSET)
    predictor = HotDistancePredictor(
        ["mito", "er"], scale_factor=SCALE, mask_distances=True, class_ids=[1, 2]
    )
    output = tmp_path / "out.zarr"
    job = bw.plan_targets(inputs / "gt", output, predictor, BLOCK, mask=inputs / "mask")
    assert job.gt.path == str(inputs / "gt" / "s0")
    bw.run_job(job, num_workers=1, progress=False, multiprocessing=False)
    for name in ("target", "distance_mask"):
        np.testing.assert_array_equal(_read(output / name / "s0"), _read(targets_run / name / "s0"))

    bare = zarr.open_array(str(tmp_path / "bare.zarr"), mode="w", shape=(8, 8, 8), dtype="u1")
    bare[...] = 1
    with pytest.raises(ValueError, match=r"gt dataset .*bare.zarr .*no voxel-size metadata"):
        bw.plan_targets(tmp_path / "bare.zarr", tmp_path / "o.zarr", predictor, (8, 8, 8))
