"""The summary of a training run (``summary.json``): the mean losses
(:func:`loss_summary`), the challenge's entries (:func:`challenge_summary`)
and the report ``python -m pipelines.train`` prints of it
(:func:`print_summary`): device, iterations, losses, per-class Dice pooled
over the evaluation crops and the challenge's scores.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from gp_hotdistance.segment import DEFAULT_INSTANCE_CLASSES
from pipelines.challenge import format_scores
from pipelines.evaluation import ClassScore
from pipelines.rundir import SUMMARY_NAME

#: The report's mean losses are over at most this many first and last iterations.
REPORT_LOSS_WINDOW = 50


def loss_summary(losses: Sequence[float]) -> dict:
    """The summary's mean losses of the ``n = len(losses)`` iterations a run
    trained: ``first_50_loss`` over the first ``loss_window`` of them and
    ``last_50_loss`` over the last, where ``loss_window`` is
    ``min(REPORT_LOSS_WINDOW, n // 2)`` (1 for one iteration), so the two do not
    overlap; ``None`` (window 0) when nothing was trained."""
    if not losses:
        return {"first_50_loss": None, "last_50_loss": None, "loss_window": 0}
    window = min(REPORT_LOSS_WINDOW, max(len(losses) // 2, 1))
    return {
        "first_50_loss": float(np.mean(losses[:window])),
        "last_50_loss": float(np.mean(losses[-window:])),
        "loss_window": window,
    }


def challenge_summary(
    tuned: dict | None, instance_classes: Sequence[str] = DEFAULT_INSTANCE_CLASSES
) -> dict:
    """The summary entries of :func:`pipelines.challenge.tune_and_save`'s result:
    the challenge's scores with the parameters chosen on the held-out crops
    (saved in ``segmentation.json``) and with the untuned defaults. The
    parameters are those each class uses (``SegmentParameters.used``):
    a semantic class (not in ``instance_classes``) has its ``mask_threshold``
    alone, while ``segmentation.json`` keeps every class's full set, since
    ``blockwise segment --instance-classes`` may segment it into instances."""
    if tuned is None:
        return {}
    return {
        "challenge_scores": tuned["scores"],
        "challenge_default_scores": tuned["default_scores"],
        "segmentation_parameters": {
            c: p.used(c in instance_classes) for c, p in tuned["parameters"].items()
        },
    }


def parameter_lines(parameters: Mapping[str, Mapping[str, float | None]]) -> list[str]:
    """One line per class of the parameters it uses (``SegmentParameters.used``;
    ``mask_threshold None`` is the ``d > 0`` mask); a semantic class's line
    says that it has no seed level or size limit."""
    lines = []
    for name, values in parameters.items():
        words = ", ".join(
            f"{key} {value}" + (" (d > 0)" if key == "mask_threshold" and value is None else "")
            for key, value in values.items()
        )
        if "seed_level" not in values:
            words += " (semantic class, a 0/1 mask: seed_level and min_size unused)"
        lines.append(f"{name}: {words}")
    return lines


def print_scores(evaluation: dict[str, dict], crops: int) -> None:
    """The report of :func:`pipelines.evaluation.evaluate` (as saved in the
    summary): one line per class."""
    if not evaluation:
        return
    print(f"Dice per class, pooled over {crops} evaluation crop{'s' if crops != 1 else ''}:")
    for name, values in evaluation.items():
        score = ClassScore(
            values["known_voxels"],
            values["truth_voxels"],
            values["predicted_voxels"],
            values["overlap_voxels"],
            values["crops"],
        )
        print(f"dice {name}: {score.describe()}")


def print_challenge_scores(summary: dict) -> None:
    """The challenge's scores of the evaluation crops (see :func:`challenge_summary`)."""
    if "challenge_scores" not in summary:
        return
    print("challenge scores of the evaluation crops (segmentation parameters chosen on them):")
    for line in format_scores(summary["challenge_scores"]):
        print(f"  {line}")
    for line in parameter_lines(summary["segmentation_parameters"]):
        print(f"  {line}")
    default = summary["challenge_default_scores"]["overall_score"]
    print(f"  (untuned default parameters: overall_score {default:.3f})")


def print_summary(summary: dict, asked: int, out: str | Path) -> None:
    """The report of ``python -m pipelines.train`` on stdout: device, iterations, losses,
    the scores and where the outputs are (``asked``: the iteration asked for)."""
    print(
        f"device: {summary['device']}"
        + (f", {summary['processes']} processes" if summary["processes"] > 1 else "")
    )
    if summary["trained"]:
        print(
            f"iterations: {summary['iterations']} (resumed from {summary['resumed_from']}), "
            f"wall time {summary['wall_seconds']:.1f} s"
        )
    else:
        print(
            f"nothing to train: the newest checkpoint is at iteration {summary['iterations']} "
            f"(asked for {asked}); evaluated it"
        )
    if summary["first_50_loss"] is not None:
        window = summary["loss_window"]
        its = "iteration" if window == 1 else "iterations"
        print(
            f"mean loss: first {window} {its} {summary['first_50_loss']:.4f}, "
            f"last {window} {its} {summary['last_50_loss']:.4f} (of {summary['trained']} trained)"
        )
    print_scores(summary["evaluation"], summary["evaluation_crops"])
    print_challenge_scores(summary)
    if not summary["summary_written"]:
        print(
            f"kept {SUMMARY_NAME}, which already evaluates iteration {summary['iterations']} or later"
        )
    print(f"outputs in {out}")
