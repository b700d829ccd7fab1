"""pipelines.challenge: tuning the segmentation on evaluation crops, and the run's choice."""

from types import SimpleNamespace

import numpy as np
import pytest
from funlib.geometry import Roi

from gp_hotdistance.segment import SegmentParameters, default_parameters
from pipelines import challenge
from pipelines.config import ConfigError
from pipelines.summary import challenge_summary, parameter_lines, print_challenge_scores

SCALE = 40.0


def _config():
    return SimpleNamespace(
        channels=["mito", "er"], scale_factor=SCALE, data=SimpleNamespace(voxel_size=(4, 4))
    )


def _crop():
    """Two discs of radius 40 whose centres are 50 apart (a neck 15 high), predicted
    exactly; er predicted exactly too."""
    shape = (30, 60)
    points = (np.indices(shape).T + 0.5) * 4.0 + np.array([12.0, 8.0])  # world (y, x), last axis
    discs = [40.0 - np.linalg.norm(points - c, axis=-1).T for c in ([70.0, 70.0], [70.0, 120.0])]
    distance = np.maximum(*discs)
    truth = np.where(distance > 0, np.where(discs[0] >= discs[1], 1, 2), 0).astype(np.uint64)
    er = np.zeros(shape)
    er[:5] = 1
    er_distance = np.where(er > 0, 4.0, -4.0)
    prediction = np.stack(
        [distance, er_distance, np.tanh(distance / SCALE), np.tanh(er_distance / SCALE)]
    ).astype(np.float32)
    roi = Roi((12, 8), (120, 240))  # (y, x) offset, shape in world units
    truths = {
        "mito": challenge.Placed(truth, (4.0, 4.0), (12.0, 8.0)),
        "er": challenge.Placed(er.astype(np.uint8), (4.0, 4.0), (12.0, 8.0)),
    }
    return challenge.EvalCrop("crop", roi, prediction, truths)


def test_tuning_chooses_a_seed_level_above_the_neck(tmp_path):
    config = _config()
    tuned = challenge.tune(config, [_crop()])
    mito = tuned["parameters"]["mito"]
    # only seeds above the neck (15) separate the discs: 0.5 * 40 = 20 is the one candidate
    assert mito.seed_level == 20.0
    assert tuned["scores"]["label_scores"]["mito"]["f1"] == 1.0
    assert tuned["scores"]["label_scores"]["er"]["iou"] == 1.0
    # the untuned default (seed 10) merges them: one match, one missed disc
    default = tuned["default_scores"]["label_scores"]["mito"]
    assert (default["tp"], default["fp"], default["fn"]) == (1, 0, 1)
    assert tuned["scores"]["overall_score"] > tuned["default_scores"]["overall_score"]
    # saved in the run and read back as the run's parameters
    challenge.save_tuning(tmp_path, 7, tuned)
    assert challenge.run_parameters(tmp_path, config) == tuned["parameters"]


def test_run_parameters_default_and_errors(tmp_path, caplog):
    config = _config()
    assert challenge.run_parameters(tmp_path, config) == {
        c: default_parameters(SCALE) for c in config.channels
    }
    assert "untuned" in caplog.text
    (tmp_path / challenge.SEGMENTATION_NAME).write_text('{"parameters": {"mito": {"seed": 1}}}')
    with pytest.raises(ConfigError, match="segmentation.json"):
        challenge.run_parameters(tmp_path, config)
    assert SegmentParameters(seed_level=1.0) != default_parameters(SCALE)


def test_report_says_when_a_kind_of_class_is_missing():
    """Without instance classes the challenge's overall score is 0 (its mean
    over no class counts 0); the report line says so instead of a bare 0."""
    semantic = {"tp": 1, "fp": 1, "fn": 0, "iou": 0.5, "dice": 2 / 3}
    instance = {"tp": 1, "fp": 0, "fn": 0, "f1": 1.0, "normalized_hausdorff_distance": 1.0,
                "combined_score": 1.0}  # fmt: skip
    only_semantic = {
        "label_scores": {"er": semantic},
        "overall_instance_score": 0.0,
        "overall_semantic_score": 0.5,
        "overall_score": 0.0,
    }
    first = challenge.format_scores(only_semantic)[0]
    assert first == (
        "overall_score 0.000 (instance 0.000, semantic 0.500; "
        "no instance class: the challenge counts its mean as 0)"
    )
    both = {**only_semantic, "label_scores": {"er": semantic, "mito": instance},
            "overall_instance_score": 1.0}  # fmt: skip
    assert (
        challenge.format_scores(both)[0] == "overall_score 0.000 (instance 1.000, semantic 0.500)"
    )
    only_instance = {**both, "label_scores": {"mito": instance}}
    assert challenge.format_scores(only_instance)[0].endswith(
        "; no semantic class: the challenge counts its mean as 0)"
    )


def test_reports_show_a_semantic_class_without_seed_level(capsys):
    """er is semantic (a 0/1 mask): the summary and the printed lines give
    its mask threshold alone and say the rest is unused; mito (instance)
    keeps all three."""
    tuned = challenge.tune(_config(), [_crop()])
    entries = challenge_summary(tuned)
    assert set(tuned["parameters"]) == {"mito", "er"}
    mito, er = tuned["parameters"]["mito"], tuned["parameters"]["er"]
    assert entries["segmentation_parameters"] == {
        "mito": {"seed_level": 20.0, "mask_threshold": mito.mask_threshold, "min_size": 0.0},
        "er": {"mask_threshold": er.mask_threshold},
    }
    print_challenge_scores(entries)
    lines = [line.strip() for line in capsys.readouterr().out.splitlines()]
    assert mito.mask_threshold is None  # the d > 0 mask, which the line names
    assert "mito: seed_level 20.0, mask_threshold None (d > 0), min_size 0.0" in lines
    assert (
        f"er: mask_threshold {er.mask_threshold} (semantic class, a 0/1 mask: seed_level and "
        "min_size unused)"
    ) in lines
    # er counted as an instance class: all three are used again
    assert challenge_summary(tuned, ["mito", "er"])["segmentation_parameters"]["er"] == er.to_dict()
    # the d > 0 mask (mask_threshold None) says so
    assert parameter_lines({"er": {"mask_threshold": None}}) == [
        "er: mask_threshold None (d > 0) (semantic class, a 0/1 mask: seed_level and min_size "
        "unused)"
    ]
