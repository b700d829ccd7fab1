"""Training, preview and config: tiny end-to-end runs in tmp_path."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import gunpowder as gp
import numpy as np
import pytest
import torch
import zarr
from funlib.geometry import Coordinate
from funlib.persistence import open_ds

from gp_hotdistance import HotDistancePredictor, WeightNode
from gp_hotdistance.torch import BalancedWeights, HotDistanceLoss, UNet
from gp_hotdistance.torch.inference import context_for, input_shape_for, predict_volume
from pipelines import common, evaluation
from pipelines import evaluate as evaluate_module
from pipelines import preview as preview_module
from pipelines import train as train_module
from pipelines.batch_io import BatchArray
from pipelines.batches import make_dataset, open_data, resolve_data
from pipelines.config import ConfigError, from_dict, load_config
from pipelines.demo_data import make_cellmap_demo
from tests.helpers import tiny_config

LOSS_ITEM = 2  # item of the training.seed-0 stream fitted in test_loss_falls_when_fitting_one_batch
LOSS_STEPS = 100  # Adam steps on that item: its loss falls to below half (measured)


@pytest.fixture(scope="module")
def demo_2d(tmp_path_factory):
    path = tmp_path_factory.mktemp("demo") / "demo_data.zarr"
    return make_cellmap_demo(path, raw_shape=(96, 96))


# -- config ------------------------------------------------------------------


@pytest.mark.parametrize("module", [train_module, preview_module])
def test_help(module, capsys):
    with pytest.raises(SystemExit) as exit_info:
        module.main(["--help"])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    assert "--out" in text and "--config" in text


def test_cli_reports_config_error(tmp_path, capsys):
    (tmp_path / "c.json").write_text(json.dumps({"training": {"iterations": 0}}))
    code = train_module.main(["--config", str(tmp_path / "c.json"), "--out", str(tmp_path / "o")])
    assert code == 2
    assert (
        "training.iterations: Input should be greater than or equal to 1, got 0"
        in capsys.readouterr().err
    )


# -- inference ---------------------------------------------------------------


@pytest.mark.parametrize("dims", [2, 3])
def test_tiled_prediction_does_not_depend_on_the_tile(dims):
    torch.manual_seed(0)
    predictor = HotDistancePredictor(["a"], 10.0, False)
    model = predictor.create_model(UNet(1, 2, 2, [(2,) * dims])).eval()
    shape = (12, 20, 16)[-dims:]
    raw = np.random.default_rng(0).random(shape).astype(np.float32)
    small = predict_volume(model, raw, (4,) * dims, "cpu")
    large = predict_volume(model, raw, (8,) * dims, "cpu")
    assert small.shape == (2,) + shape
    np.testing.assert_allclose(small, large, atol=1e-5)
    # one output voxel equals the model applied to its own field of view
    context = context_for(model, (4,) * dims)
    input_shape = input_shape_for(model, (4,) * dims)
    padded = np.pad(raw, [(c, c) for c in context])
    window = tuple(slice(0, s) for s in input_shape)
    with torch.no_grad():
        direct = model(torch.from_numpy(padded[window])[None, None])[0].numpy()
    np.testing.assert_allclose(small[(slice(None),) + (slice(0, 4),) * dims], direct, atol=1e-5)


def test_input_shape_for_rejects_impossible_output():
    model = HotDistancePredictor(["a"], 10.0, False).create_model(UNet(1, 2, 2, [(2, 2)]))
    with pytest.raises(ValueError, match=r"output_shape \(5, 5\) is not produced"):
        input_shape_for(model, (5, 5))


def test_dice():
    a = np.array([1, 1, 0, 0], bool)
    b = np.array([1, 0, 1, 0], bool)
    assert evaluation.dice(a, b) == pytest.approx(0.5)  # 2 * 1 / (2 + 2)
    assert evaluation.dice(np.zeros(3, bool), np.zeros(3, bool)) == 1.0


@pytest.mark.parametrize("logit", [10.0, -10.0])
def test_evaluate_scores_constant_models_exactly(demo_2d, tmp_path, logit, caplog):
    """A model that calls every voxel a class (logit > 0) scores
    2 T / (K + T) on the evaluation crop (K known voxels, T of them the
    class), the all-foreground score printed beside; one that calls none
    scores 0 where the class occurs and is "no foreground in the labels and
    none predicted" where it does not. Both get the constant warning."""
    config = resolve_data(tiny_config(demo_2d.data_section()), tmp_path / "run")
    data = open_data(config)
    model = common.make_model(config, common.make_predictor(config)).eval()
    with torch.no_grad():
        model.head.weight.zero_()
        model.head.bias.fill_(logit)
    scores = evaluation.evaluate(config, data, model, "cpu")
    (held_out,) = data.eval
    truth, known = held_out.read_labels(held_out.labelled_roi)
    assert set(scores) == {"mito", "er"}
    present = 0
    for i, name in enumerate(config.channels):
        k = int(known[i].sum())
        t = int((truth[i][known[i] == 1] == 1).sum())
        score = scores[name]
        assert (score.known, score.truth, score.crops) == (k, t, 1)
        assert score.all_foreground_dice == pytest.approx(2 * t / (k + t), abs=1e-12)
        present += 0 < t < k
        if logit > 0:  # predicted: all k known voxels
            assert score.dice == pytest.approx(2 * t / (k + t), abs=1e-12)
        elif t:  # predicted: none
            assert score.dice == 0.0
        else:
            assert score.dice is None and "no foreground in the labels" in score.describe()
    assert present  # some class holds both foreground and background there
    assert "hot channel is constant over the crop for ['mito', 'er']" in caplog.text
    kind = "foreground" if logit > 0 else "background"
    assert "the segmentation is uniform over the crop, whose labels hold both values: " in (
        caplog.text
    )
    assert f"all {kind}" in caplog.text


# -- training ----------------------------------------------------------------


def test_train_two_iterations_then_resume(demo_2d, tmp_path, capsys):
    out = tmp_path / "run"
    config = tiny_config(demo_2d.data_section())
    summary = train_module.train(config, out, quiet=True)
    assert summary["iterations"] == 2 and summary["resumed_from"] == 0
    assert (out / "model_checkpoint_2").exists()
    counts = torch.load(out / "model_checkpoint_2", weights_only=True)["moving_counts"]
    assert set(summary["dice"]) == {"mito", "er"}
    # the challenge's scores beside Dice, with the parameters chosen on the evaluation crop
    assert set(summary["challenge_scores"]["label_scores"]) == {"mito", "er"}
    assert 0.0 <= summary["challenge_scores"]["overall_score"] <= 1.0
    chosen = json.loads((out / "segmentation.json").read_text())
    assert chosen["iteration"] == 2 and set(chosen["parameters"]) == {"mito", "er"}
    # the summary gives each class what it uses (er is semantic: its mask alone);
    # segmentation.json keeps full sets, which blockwise may segment as instances
    assert set(summary["segmentation_parameters"]["er"]) == {"mask_threshold"}
    full = {"seed_level", "mask_threshold", "min_size"}
    assert set(summary["segmentation_parameters"]["mito"]) == full
    assert set(chosen["parameters"]["er"]) == full
    # the summary scores the trained model: evaluating its checkpoint again agrees
    trained = common.make_model(config, common.make_predictor(config))
    trained.load_state_dict(
        torch.load(out / "model_checkpoint_2", weights_only=True)["model_state_dict"]
    )
    data = open_data(resolve_data(config, out))
    scores = evaluation.evaluate(config, data, trained.eval(), "cpu")
    assert {c: s.dice for c, s in scores.items()} == summary["dice"]
    assert sorted(p.name for p in (out / "snapshots").iterdir()) == ["batch_1.zarr", "batch_2.zarr"]
    # a snapshot opens with zarr at every group, funlib and an OME-NGFF reader alike
    from ome_zarr.io import parse_url
    from ome_zarr.reader import Reader

    snapshot = out / "snapshots" / "batch_2.zarr"
    for group in ("", "raw", "target", "target/dist_er", "weights/hot_mito"):
        zarr.open_group(str(snapshot / group), mode="r")
    for name in ("raw", "target/dist_er", "weights/hot_mito", "mask/er"):
        array = open_ds(str(snapshot / name / "s0"))
        node = next(iter(Reader(parse_url(str(snapshot / name)))()))
        transforms = {t["type"]: t for t in node.metadata["coordinateTransformations"][0]}
        assert tuple(transforms["scale"]["scale"]) == tuple(array.voxel_size)
        assert tuple(transforms["translation"]["translation"]) == tuple(array.offset)
        assert tuple(array.voxel_size) == tuple(demo_2d.voxel_size)

    # the counts are WeightNode's JSON form, and load back into both
    predictor = common.make_predictor(config)
    balanced = BalancedWeights(predictor)
    train_module.load_counts_state(balanced, counts)
    assert json.loads(json.dumps(train_module.counts_state(balanced))) == counts
    weight_node = WeightNode(
        predictor, *(gp.ArrayKey(k) for k in "ABC"), distance_mask=gp.ArrayKey("D")
    )
    weight_node.load_state_dict(counts)
    assert weight_node.moving_counts == balanced.counts()

    resumed = train_module.train(config, out, iterations=4, quiet=True)
    assert resumed["resumed_from"] == 2 and resumed["iterations"] == 4
    later = torch.load(out / "model_checkpoint_4", weights_only=True)["moving_counts"]
    # the counts kept growing from the restored ones: every denominator grew
    for before, after in zip(counts["moving_counts"], later["moving_counts"], strict=True):
        for cls in ("0", "1"):
            assert after[cls][1] > before[cls][1]
    # choosing the parameters again for the newest checkpoint prints what each class uses
    capsys.readouterr()
    assert evaluate_module.main(["--tune", "--run", str(out)]) == 0
    lines = [line.strip() for line in capsys.readouterr().out.splitlines()]
    assert any(line.startswith("mito: seed_level ") for line in lines), lines
    er = next(line for line in lines if line.startswith("er: "))
    assert er.startswith("er: mask_threshold ") and er.endswith("seed_level and min_size unused)")


def test_resume_skips_a_checkpoint_without_counts(demo_2d, tmp_path):
    out = tmp_path / "run"
    config = tiny_config(demo_2d.data_section())
    train_module.train(config, out, quiet=True)
    state = torch.load(out / "model_checkpoint_2", weights_only=True)
    del state["moving_counts"]
    torch.save(state, out / "model_checkpoint_2")
    summary = train_module.train(config, out, iterations=3, quiet=True)
    assert summary["resumed_from"] == 0 and summary["iterations"] == 3


@pytest.mark.slow
def test_train_3d_anisotropic_batches_and_snapshots(tmp_path):
    """Batch shapes, finite losses, the snapshot's target is ``process`` of
    its gt, and snapshot numbers equal checkpoint numbers, across a resume."""
    demo = make_cellmap_demo(
        tmp_path / "demo_data.zarr", anisotropic=True, dims=3, raw_shape=(36, 128, 128)
    )
    section = demo.data_section()
    values = tiny_config(section, dims=3, iterations=4, save_every=2, snapshot_every=2).to_dict()
    values["model"]["downsample_factors"] = [[1, 2, 2]]
    values["model"]["output_shape"] = [4, 8, 8]
    values["scale_factor"] = 40.0
    values["mask_distances"] = False  # target at R = process(gt at R): no context
    # each iteration's batch follows from (seed, iteration), resumed or not;
    # with this seed batch 6 holds both gt values
    values["training"]["seed"] = 2
    config = from_dict(values)
    out = tmp_path / "run"
    summary = train_module.train(config, out, quiet=True)
    assert summary["iterations"] == 4
    assert np.isfinite(summary["first_50_loss"]) and np.isfinite(summary["last_50_loss"])
    assert summary["loss_window"] == 2  # 4 iterations: the first 2 and the last 2
    resumed = train_module.train(config, out, iterations=6, quiet=True)
    assert resumed["resumed_from"] == 4 and resumed["loss_window"] == 1  # trained 2
    snapshots = sorted(p.name for p in (out / "snapshots").iterdir())
    assert snapshots == ["batch_2.zarr", "batch_4.zarr", "batch_6.zarr"]
    checkpoints = sorted(p.name for p in out.glob("model_checkpoint_*"))
    assert checkpoints == ["model_checkpoint_2", "model_checkpoint_4", "model_checkpoint_6"]

    predictor = common.make_predictor(config)
    model = common.make_model(config, predictor)
    input_shape = tuple(input_shape_for(model, (4, 8, 8)))
    snapshot = zarr.open_group(str(out / "snapshots" / "batch_6.zarr"), mode="r")
    assert snapshot["raw/s0"].shape == input_shape  # first sample of the batch
    channels = [f"hot_{c}" for c in config.channels] + [f"dist_{c}" for c in config.channels]
    for name in ("target", "weights", "prediction"):
        for channel in channels:
            assert snapshot[f"{name}/{channel}/s0"].shape == (4, 8, 8), (name, channel)
    assert tuple(snapshot["target/hot_mito/s0"].attrs["voxel_size"]) == (40, 4, 4)
    gt = np.stack([snapshot[f"gt/{c}/s0"][:] for c in config.channels])
    assert gt.any() and not gt.all()
    target = np.stack([snapshot[f"target/{c}/s0"][:] for c in channels])
    np.testing.assert_array_equal(target, predictor.process(gt, (40, 4, 4)))


def test_loss_falls_when_fitting_one_batch(demo_2d):
    """The targets and weights of a real batch are learnable: Adam on that
    one batch lowers the loss (a target misaligned with raw, or zero
    weights, would not)."""
    torch.manual_seed(0)
    np.random.seed(0)
    config = tiny_config(demo_2d.data_section())
    predictor = common.make_predictor(config)
    model = common.make_model(config, predictor)
    output_shape = Coordinate(config.model.output_shape)
    dataset = make_dataset(
        config, open_data(config), Coordinate(input_shape_for(model, output_shape)), output_shape
    )
    stream = iter(dataset)  # the stream of training.seed: the same items in any test order
    item = [next(stream) for _ in range(LOSS_ITEM + 1)][-1]
    raw, target = item["raw"][None], item["target"][None]
    weights = BalancedWeights(predictor)(target, item["mask"][None], item["distance_mask"][None])
    assert target.shape == weights.shape == (1, 4, *output_shape)
    loss_fn = HotDistanceLoss(dims=2)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    losses = []
    for _ in range(LOSS_STEPS):
        optimizer.zero_grad()
        loss = loss_fn(model(raw), target, weights)
        loss.backward()
        optimizer.step()
        losses.append(float(loss.detach()))
    assert np.all(np.isfinite(losses))
    assert np.mean(losses[-5:]) < 0.5 * np.mean(losses[:5]), losses


def test_missing_dataset_is_a_config_error(tmp_path):
    config = tiny_config(
        {
            "voxel_size": [8, 8],
            "samples": [{"raw": str(tmp_path / "nothing.zarr/raw"), "labels": {"mito": "x"}}],
        }
    )
    with pytest.raises(
        ConfigError,
        match=r"2 data path\(s\) do not exist:\n  data.samples\[0\].raw: .*nothing.zarr/raw\n"
        r"  data.samples\[0\].labels.mito: x",
    ):
        train_module.train(config, tmp_path / "run", quiet=True)


# -- preview -----------------------------------------------------------------


def test_preview_writes_readable_zarr_and_png(demo_2d, tmp_path, capsys):
    config_path = tmp_path / "config.json"
    config_path.write_text(json.dumps(tiny_config(demo_2d.data_section()).to_dict()))
    out = tmp_path / "preview"
    assert (
        preview_module.main(["--batches", "2", "--out", str(out), "--config", str(config_path)])
        == 0
    )
    printed = capsys.readouterr().out
    zarr_path = (out / "preview.zarr").resolve()
    assert f"wrote {zarr_path}: batch_0, batch_1 (raw, and gt, mask, target" in printed
    assert f"wrote {(out / 'batch_1.png').resolve()}" in printed
    assert len(printed.splitlines()) < 20  # a summary, not every array
    paths = demo_2d.data_section()
    for index in range(2):
        attrs = zarr.open_group(str(out / "preview.zarr" / f"batch_{index}"), mode="r").attrs
        sample = attrs["sample"]
        assert attrs["where"] == f"data.samples[{sample}]"
        expected = paths["samples"][sample]
        assert attrs["datasets"]["raw"] == expected["raw"]
        assert {k.removeprefix("labels.") for k in attrs["datasets"] if k != "raw"} == set(
            expected["labels"]
        )
        assert (out / f"batch_{index}.png").stat().st_size > 0
        group = out / "preview.zarr" / f"batch_{index}"
        hot = open_ds(str(group / "target" / "hot_mito" / "s0"))
        dist = open_ds(str(group / "target" / "dist_mito" / "s0"))
        gt = open_ds(str(group / "gt" / "mito" / "s0"))
        weights = open_ds(str(group / "weights" / "dist_er" / "s0"))
        assert tuple(hot.voxel_size) == tuple(demo_2d.voxel_size)
        assert hot.axis_names == ["y", "x"]
        assert hot.roi == dist.roi == gt.roi == weights.roi
        assert hot.shape == (8, 8)
        np.testing.assert_array_equal(np.asarray(hot.data), np.asarray(gt.data))
        d = np.asarray(dist.data)
        assert np.all(np.abs(d) < 1) and np.all((d > 0) == (np.asarray(gt.data) > 0))
        assert np.all(np.asarray(weights.data) >= 0)
        raw = open_ds(str(group / "raw" / "s0"))
        assert raw.roi.contains(hot.roi)


def test_preview_replaces_an_earlier_preview(demo_2d, tmp_path, capsys):
    """--batches 1 into a directory that held 2 batches lists and keeps one;
    files that are not the preview's stay."""
    config_path = tmp_path / "config.json"
    config_path.write_text(json.dumps(tiny_config(demo_2d.data_section()).to_dict()))
    out = tmp_path / "preview"
    args = ["--out", str(out), "--config", str(config_path)]
    assert preview_module.main(["--batches", "2", *args]) == 0
    (out / "notes.txt").write_text("mine")
    capsys.readouterr()
    assert preview_module.main(["--batches", "1", *args]) == 0
    printed = capsys.readouterr().out
    assert "batch_0 (raw" in printed and "batch_1" not in printed
    assert sorted(p.name for p in (out / "preview.zarr").glob("batch_*")) == ["batch_0"]
    assert sorted(p.name for p in out.glob("batch_*.png")) == ["batch_0.png"]
    assert (out / "notes.txt").read_text() == "mine"


@pytest.mark.parametrize("file", ["out", "out/preview.zarr"])
def test_preview_refuses_files_where_directories_go(demo_2d, tmp_path, capsys, file):
    config_path = tmp_path / "config.json"
    config_path.write_text(json.dumps(tiny_config(demo_2d.data_section()).to_dict()))
    (tmp_path / file).parent.mkdir(parents=True, exist_ok=True)
    (tmp_path / file).write_text("not a directory")
    args = ["--batches", "1", "--out", str(tmp_path / "out"), "--config", str(config_path)]
    assert preview_module.main(args) == 2
    error = capsys.readouterr().err
    assert f"{tmp_path / file} is a file, not a directory" in error
    assert (tmp_path / file).read_text() == "not a directory"


@pytest.mark.parametrize("name", ["demo_2d.yaml", "anisotropic_3d.yaml"])
def test_example_configs_are_valid(name):
    from pathlib import Path

    config = load_config(Path(__file__).parent.parent / "configs" / name)
    assert config.channels == ["mito", "er"]
    model = common.make_model(config, common.make_predictor(config))
    input_shape_for(model, config.model.output_shape)  # raises if the shape is impossible


def test_demo_config_is_the_default():
    from pathlib import Path

    from pipelines.batches import DEMO_CONTAINER

    root = Path(__file__).parent.parent
    path = root / "configs" / "demo_2d.yaml"
    written = load_config(path)
    default = load_config(None)
    for section in ("channels", "scale_factor", "mask_distances", "model", "training"):
        assert getattr(written, section) == getattr(default, section), section
    # the default generates the demo into the run directory (default runs/demo),
    # which is where demo_2d.yaml points
    demo = make_cellmap_demo(root / "runs" / "demo" / DEMO_CONTAINER, write=False)
    expected = from_dict({"data": demo.data_section()}).data
    assert written.data.voxel_size == expected.voxel_size
    pairs = [*zip(written.data.samples, expected.samples, strict=True)]
    pairs += [*zip(written.data.eval, expected.eval, strict=True)]
    for ours, theirs in pairs:
        assert os.path.normpath(ours.raw) == theirs.raw
        labels = {c: os.path.normpath(p) for c, p in ours.label_datasets.items()}
        assert labels == theirs.label_datasets


def test_learning_rate_decays_along_a_half_cosine():
    config = from_dict({"training": {"learning_rate": 0.002, "final_lr_fraction": 0.1}})
    rates = [train_module.learning_rate(config, i, 101) for i in range(101)]
    assert rates[0] == pytest.approx(0.002)
    assert rates[50] == pytest.approx(0.0002 + 0.0018 * 0.5)  # cos(pi / 2) = 0
    assert rates[100] == pytest.approx(0.0002)
    assert all(a > b for a, b in zip(rates, rates[1:], strict=False))
    with pytest.raises(
        ConfigError, match=r"final_lr_fraction: .* less than or equal to 1, got 1.5"
    ):
        from_dict({"training": {"final_lr_fraction": 1.5}})


def test_context_must_be_symmetric():
    # a 2x2 head shrinks every axis by one voxel: no symmetric context
    predictor = HotDistancePredictor(["a"], 10.0, False, kernel_size=2)
    model = predictor.create_model(UNet(1, 2, 2, [(2, 2)]))
    output_shape = model.output_shape(model.backbone.valid_input_shape((20, 20)))
    with pytest.raises(ValueError, match=r"needs an even shrink"):
        context_for(model, output_shape)


@pytest.mark.slow
def test_progress_without_a_terminal_is_plain_lines(demo_2d, tmp_path):
    """With stderr redirected to a file, training writes no carriage-return
    frames, only a bounded number of plain progress lines."""
    # more iterations than PLAIN_LINES + 5, so a line per iteration breaks the bound below
    config = tiny_config(demo_2d.data_section(), iterations=26, save_every=26, snapshot_every=26)
    (tmp_path / "c.json").write_text(json.dumps(config.to_dict()))
    root = Path(__file__).resolve().parents[1]
    with open(tmp_path / "stderr.txt", "w") as stderr:
        done = subprocess.run(
            [sys.executable, "-m", "pipelines.train", "--config", str(tmp_path / "c.json")]
            + ["--out", str(tmp_path / "run")],
            cwd=root,
            stderr=stderr,
            stdout=subprocess.PIPE,
            text=True,
            check=False,
        )
    text = (tmp_path / "stderr.txt").read_text()
    assert done.returncode == 0, text
    assert "\r" not in text
    progress = [line for line in text.splitlines() if line.startswith("iteration ")]
    # every ceil(26 / PLAIN_LINES) = 2 iterations: 13 lines, the last at 26
    assert len(progress) == 13, text
    assert progress[-1].startswith("iteration 26/26: loss (mean of last 26) ")
    assert len(text.splitlines()) <= train_module.PLAIN_LINES + 5, text


def test_montage_grid_rows_per_class_columns_per_kind(tmp_path):
    """A row per class, a column per kind the batch holds, every panel over
    the output region (3-D: its central section), raw over its whole ROI
    with that region boxed; a constant panel says so."""
    vs = Coordinate(2, 4, 4)
    raw = np.arange(4 * 6 * 6, dtype=np.float32).reshape(4, 6, 6)
    gt_a = np.array([[[0, 1], [1, 1]], [[1, 0], [0, 0]]], dtype=np.uint8)
    target = np.linspace(-1, 1, 2 * 2 * 2, dtype=np.float32).reshape(2, 2, 2)
    out = Coordinate(2, 8, 4)
    arrays = [
        BatchArray("raw", raw, Coordinate(0, 0, 0), vs),
        BatchArray("gt/a", gt_a, out, vs),
        BatchArray("gt/b", np.ones((2, 2, 2), np.uint8), out, vs),
        BatchArray("target/dist_a", target, out, vs),
        BatchArray("weights/dist_a", np.zeros((2, 2, 2)), out, vs),
    ]
    montage = preview_module.montage_grid(arrays, ["a", "b"])
    assert montage.classes == ["a", "b"]
    assert montage.kinds == ["gt", "distance target", "distance weight"]
    # region: z 2..6 -> raw voxels 1..3 (centre section: raw z voxel 2, index 1
    # of the outputs), y 8..16 -> rows 2..4, x 4..12 -> columns 1..3
    np.testing.assert_array_equal(montage.raw, raw[2])
    assert montage.box == (2, 1, 2, 2)
    panels = montage.panels
    assert sorted(panels) == [(0, 0), (0, 1), (0, 2), (1, 0)]  # no distances of class b
    np.testing.assert_array_equal(panels[(0, 0)].image, gt_a[1])
    np.testing.assert_array_equal(panels[(0, 1)].image, target[1])
    assert [panels[k].title for k in sorted(panels)] == [
        "gt/a",
        "target/dist_a",
        "weights/dist_a (all 0)",
        "gt/b (all 1)",
    ]
    png = tmp_path / "m.png"
    preview_module.write_montage(png, arrays, "batch 0", ["a", "b"])
    assert png.stat().st_size > 0
