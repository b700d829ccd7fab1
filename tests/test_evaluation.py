"""Evaluation over several crops: pooled counts, the report's wording, and
evaluation equal to what blockwise prediction writes."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from funlib.geometry import Coordinate
from funlib.persistence import open_ds

from gp_hotdistance.torch.inference import context_for
from pipelines import blockwise as bw
from pipelines.batches import open_data
from pipelines.common import make_model, make_predictor
from pipelines.config import from_dict
from pipelines.evaluation import ClassScore, evaluate, predict_crop
from pipelines.rundir import RunDirectory
from tests.cellmap_fixture import CHANNELS, write_cellmap_fixture

V = Coordinate(8, 8)


def test_scores_pool_the_counts_of_every_crop():
    """Crop A: truth 1100, predicted 1000; crop B: truth 0000, predicted
    0100 (its last voxel unknown). Pooled: overlap 1, truth 2, predicted 2:
    Dice 0.5 (the mean of the per-crop Dice would be 1/3)."""
    score = ClassScore()
    known = np.array([1, 1, 1, 1], bool)
    score.add(np.array([1, 0, 0, 0], bool), np.array([1, 1, 0, 0], bool), known)
    score.add(
        np.array([0, 1, 0, 1], bool), np.array([0, 0, 0, 0], bool), np.array([1, 1, 1, 0], bool)
    )
    score.add(np.ones(4, bool), np.ones(4, bool), np.zeros(4, bool))  # not annotated: nothing
    assert (score.known, score.truth, score.predicted, score.overlap, score.crops) == (
        7,
        2,
        2,
        1,
        2,
    )
    assert score.dice == 0.5
    assert score.all_foreground_dice == pytest.approx(2 * 2 / (2 + 7))
    assert score.describe() == (
        "0.500 (foreground 28.6% of 7 known voxels in 2 crops; "
        "all-foreground prediction scores 0.444)"
    )
    empty = ClassScore()
    empty.add(np.zeros(3, bool), np.zeros(3, bool), np.ones(3, bool))
    assert empty.dice is None
    assert empty.describe() == (
        "no foreground in the labels and none predicted (3 known voxels in 1 crop)"
    )


@pytest.fixture(scope="module")
def fixture(tmp_path_factory):
    return write_cellmap_fixture(
        tmp_path_factory.mktemp("cellmap"), voxel_size=V, label_factors=(2, 2), raw_shape=(40, 40)
    )


def test_evaluation_equals_blockwise_prediction(fixture, tmp_path, monkeypatch):
    """Two evaluation crops, crop7 closer to the raw volume's edge than the
    model's context (zeros beyond the raw, as blockwise prediction reads
    them): the prediction and segmentation that
    evaluation scores equal what ``blockwise predict`` writes for each crop,
    and the pooled Dice equals the Dice of those outputs."""
    monkeypatch.chdir(tmp_path)  # daisy's logs
    config = from_dict(
        {
            "channels": CHANNELS,
            "scale_factor": 24.0,
            "data": {
                "voxel_size": list(V),
                "samples": [{"raw": fixture.raw_path, "labels": fixture.label_paths("crop9")}],
                "eval": [
                    {"raw": fixture.raw_path, "labels": fixture.label_paths(c)}
                    for c in ("crop7", "crop9")
                ],
            },
            "model": {"num_fmaps": 2, "downsample_factors": [[2, 2]], "output_shape": [4, 4]},
        }
    )
    torch.manual_seed(1)
    model = make_model(config, make_predictor(config)).eval()
    run = tmp_path / "run"
    with RunDirectory(run) as directory:
        directory.write_config(config)
        directory.save(1, model.state_dict(), {}, {"moving_counts": []})
    data = open_data(config)
    sample = data.eval[0]
    context = Coordinate(context_for(model, config.model.output_shape)) * V
    assert not sample.raw_roi.contains(sample.labelled_roi.grow(context, context))
    overlap = truth = predicted = 0
    for i, sample in enumerate(data.eval):
        ours = predict_crop(config, sample, f"data.eval[{i}]", model, "cpu")
        job = bw.plan_predict(run, sample, tmp_path / f"out{i}.zarr", block_shape=(8, 8))
        bw.run_job(job, num_workers=1, progress=False, multiprocessing=False)
        written = {}
        for name in ("prediction", "segmentation"):
            array = open_ds(str(tmp_path / f"out{i}.zarr" / name / "s0"))
            assert array.roi == ours.roi
            written[name] = np.asarray(array[array.roi])
        np.testing.assert_allclose(written["prediction"], ours.prediction, atol=1e-6)
        np.testing.assert_array_equal(written["segmentation"] == 1, ours.segmentation)
        known = ours.known[0]
        segmentation = written["segmentation"][0].astype(bool)[known]
        overlap += int((segmentation & ours.truth[0][known]).sum())
        truth += int(ours.truth[0][known].sum())
        predicted += int(segmentation.sum())
    scores = evaluate(config, data, model, "cpu")
    assert scores["mito"].crops == 2
    assert scores["mito"].dice == pytest.approx(2 * overlap / (truth + predicted), abs=1e-12)
