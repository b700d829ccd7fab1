"""The CellMap challenge for the scripts: its container layout, its scores of
a trained run's held-out crops, and the segmentation parameters chosen on them.

Layout (predictions and truth alike)::

    container/cropN/<label>         array with voxel_size/translation attributes,
                                    or an OME-NGFF multiscale group (finest level)
    container/cropN/<label>_mask    optional (truth): > 0 where <label> is scored

The scores are :mod:`gp_hotdistance.scores`; the segmentation is
:mod:`gp_hotdistance.segment`. A run's chosen parameters live in
``RUN/segmentation.json`` (:func:`tune`, :func:`run_parameters`). A
submission's crops (the crops file, a crop segmented on its own grid, the
labels written) are :mod:`pipelines.submission`'s.
"""

from __future__ import annotations

import itertools
import json
import logging
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import cc3d
import numpy as np
import numpy.typing as npt
import zarr
from funlib.geometry import Roi

from gp_hotdistance import scores
from gp_hotdistance.data.ome import read_placement
from gp_hotdistance.segment import (
    DEFAULT_INSTANCE_CLASSES,
    SegmentParameters,
    default_parameters,
    segment_class,
)
from pipelines.config import Config, ConfigError

if TYPE_CHECKING:
    import torch

    from gp_hotdistance.data import Sample
    from pipelines.evaluation import CropPrediction

logger = logging.getLogger(__name__)

SEGMENTATION_NAME = "segmentation.json"
"""A run's chosen segmentation parameters and their scores."""

SEED_FRACTIONS = (0.05, 0.1, 0.2, 0.3, 0.5)
"""Seed levels tried, as fractions of ``scale_factor``."""
MASK_THRESHOLDS = (None, 0.3, 0.5, 0.7)
"""Masks tried: ``d > 0`` (None) and ``sigmoid(hot) >`` each value."""
MIN_SIZE_VOXELS = (0, 4, 16, 64)
"""Minimum sizes tried, in training voxels (stored in world units)."""


@dataclass(frozen=True)
class Placed:
    """An array placed in world units (float, as the challenge stores them)."""

    data: npt.NDArray
    voxel_size: tuple[float, ...]
    translation: tuple[float, ...]


def read_placed(path: str | Path) -> Placed:
    """``path`` as the challenge stores labels: an array with ``voxel_size``
    (or ``resolution``) and ``translation`` (or ``offset``) attributes, or an
    OME-NGFF multiscale group (its first level), read by
    :func:`gp_hotdistance.data.ome.read_placement` with float placements.

    Raises:
        ConfigError: nothing there, no voxel size (never assumed 1), or a
            channel axis.
    """
    try:
        array, voxel_size, translation, channels = read_placement(path)
    except (FileNotFoundError, ValueError) as error:
        raise ConfigError(str(error)) from None
    if channels:
        raise ConfigError(f"{path}: has a channel axis (shape {array.shape}); labels are spatial")
    return Placed(array[...], voxel_size, translation)


def truth_labels(truth: str | Path) -> list[tuple[str, str]]:
    """Every ``(cropN, label)`` of a truth container (``*_mask`` are masks, not labels).

    Raises:
        ConfigError: no ``crop*`` group with labels.
    """
    root = zarr.open_group(str(truth), mode="r")
    found = []
    for crop in sorted(root.group_keys(), key=_crop_order):
        if not crop.startswith("crop"):
            continue
        group = root[crop]
        names = sorted(set(group.array_keys()) | set(group.group_keys()))
        found += [(crop, n) for n in names if not n.endswith("_mask")]
    if not found:
        raise ConfigError(f"{truth}: no cropN/<label> datasets")
    return found


def _crop_order(name: str) -> tuple[int, str]:
    digits = name.removeprefix("crop")
    return (int(digits), name) if digits.isdigit() else (-1, name)


def evaluate_containers(
    prediction: str | Path,
    truth: str | Path,
    instance_classes: Sequence[str] = DEFAULT_INSTANCE_CLASSES,
) -> dict[str, Any]:
    """The challenge's scores of container ``prediction`` against ``truth``:
    every ``cropN/<label>`` of ``truth`` (module docs of
    :mod:`gp_hotdistance.scores`), plus ``crops[cropN][label]`` with each
    crop's counts (``missing`` where the prediction lacks the label)."""
    results = []
    crops: dict[str, dict[str, Any]] = {}
    for crop, label in truth_labels(truth):
        truth_placed = read_placed(Path(truth) / crop / label)
        instance = label in instance_classes
        mask_path = Path(truth) / crop / f"{label}_mask"
        mask = read_placed(mask_path).data if mask_path.exists() else None
        pred_path = Path(prediction) / crop / label
        if pred_path.exists():
            placed = read_placed(pred_path)
            if len(placed.voxel_size) != truth_placed.data.ndim:
                raise ConfigError(
                    f"{pred_path}: {len(placed.voxel_size)}-D, the truth {crop}/{label} is "
                    f"{truth_placed.data.ndim}-D"
                )
            on_grid = scores.resample_to_grid(
                placed.data,
                placed.voxel_size,
                placed.translation,
                truth_placed.voxel_size,
                truth_placed.translation,
                truth_placed.data.shape,
                instance,
            )
        else:
            logger.warning(
                "%s: no %s/%s: every truth of it counts as missed", prediction, crop, label
            )
            on_grid = None
        result = scores.score_label(
            on_grid, truth_placed.data, truth_placed.voxel_size, instance, mask
        )
        results.append((label, result))
        crops.setdefault(crop, {})[label] = {**result, "missing": on_grid is None}
    return {**scores.combine(results, instance_classes), "crops": crops}


# -- a run's held-out crops ---------------------------------------------------


@dataclass
class EvalCrop:
    """A held-out crop's prediction at the training voxel size over ``roi``
    and its truths ``{class: Placed}`` at their own voxel sizes."""

    name: str
    roi: Roi
    prediction: npt.NDArray[np.float32]
    truths: dict[str, Placed]


def eval_crop(crop: CropPrediction) -> EvalCrop:
    """A crop predicted by :mod:`pipelines.evaluation`, with its truths as stored."""
    return EvalCrop(crop.where, crop.roi, crop.prediction, sample_truths(crop.sample))


def predict_eval_crops(
    config: Config, data: Any, model: torch.nn.Module, device: str
) -> list[EvalCrop]:
    """Every evaluation crop (``data.eval``) predicted as
    :func:`pipelines.evaluation.predict_crops` does, with its truths."""
    from pipelines.evaluation import predict_crops

    return [eval_crop(c) for c in predict_crops(config, list(data.eval), model, device)]


def sample_truths(sample: Sample) -> dict[str, Placed]:
    """Each annotated class of ``sample`` as stored (ids), at its own voxel size."""
    truths = {}
    for channel, volume in sample.labels.items():
        data = volume.array[...]
        if sample.class_ids is not None:
            data = cc3d.connected_components(data == sample.class_ids[channel]).astype(np.uint64)
        truths[channel] = Placed(
            data,
            tuple(float(v) for v in volume.voxel_size),
            tuple(float(o) for o in volume.offset),
        )
    return truths


def class_results(
    crops: Sequence[EvalCrop],
    channels: Sequence[str],
    channel: str,
    scale_factor: float,
    voxel_size: Sequence[int],
    parameters: SegmentParameters,
    instance: bool,
) -> list[tuple[str, dict[str, Any]]]:
    """One class of every crop segmented with ``parameters`` and scored."""
    index, classes = list(channels).index(channel), len(channels)
    results = []
    for crop in crops:
        truth = crop.truths.get(channel)
        if truth is None:
            continue
        segmentation = segment_class(
            crop.prediction[index],
            crop.prediction[classes + index],
            scale_factor,
            voxel_size,
            parameters,
            instance,
        )
        on_grid = scores.resample_to_grid(
            segmentation,
            tuple(voxel_size),
            tuple(crop.roi.offset),
            truth.voxel_size,
            truth.translation,
            truth.data.shape,
            instance,
        )
        results.append(
            (channel, scores.score_label(on_grid, truth.data, truth.voxel_size, instance))
        )
    return results


def challenge_scores(
    config: Config,
    crops: Sequence[EvalCrop],
    parameters: Mapping[str, SegmentParameters],
    instance_classes: Sequence[str] = DEFAULT_INSTANCE_CLASSES,
) -> dict[str, Any]:
    """The challenge's scores of the crops segmented with ``parameters`` (per class)."""
    results = []
    for channel in config.channels:
        results += class_results(
            crops,
            config.channels,
            channel,
            config.scale_factor,
            config.data.voxel_size,
            parameters[channel],
            channel in instance_classes,
        )
    return scores.combine(results, instance_classes)


def parameter_grid(config: Config, instance: bool) -> list[SegmentParameters]:
    """The candidates :func:`tune` tries for one class, untuned defaults first."""
    voxel_volume = float(np.prod(config.data.voxel_size))
    default = default_parameters(config.scale_factor)
    if not instance:
        candidates = [SegmentParameters(default.seed_level, m) for m in MASK_THRESHOLDS]
    else:
        candidates = [
            SegmentParameters(config.scale_factor * s, m, n * voxel_volume)
            for s, m, n in itertools.product(SEED_FRACTIONS, MASK_THRESHOLDS, MIN_SIZE_VOXELS)
        ]
    return [default] + [c for c in candidates if c != default]


def tune(
    config: Config,
    crops: Sequence[EvalCrop],
    instance_classes: Sequence[str] = DEFAULT_INSTANCE_CLASSES,
) -> dict[str, Any]:
    """Choose each class's parameters on ``crops`` to maximise its score
    (``combined_score``, semantic ``iou``), which maximises ``overall_score``
    (each class enters one plain mean). Ties keep the earlier candidate
    (defaults first). Returns ``{"parameters", "scores", "default_scores"}``."""
    chosen: dict[str, SegmentParameters] = {}
    for channel in config.channels:
        instance = channel in instance_classes
        key = "combined_score" if instance else "iou"
        best, best_score = None, -1.0
        for candidate in parameter_grid(config, instance):
            results = class_results(
                crops,
                config.channels,
                channel,
                config.scale_factor,
                config.data.voxel_size,
                candidate,
                instance,
            )
            if not results:
                break
            score = scores.combine(results, instance_classes)["label_scores"][channel][key]
            if score > best_score:
                best, best_score = candidate, score
        chosen[channel] = best if best is not None else default_parameters(config.scale_factor)
    defaults = {c: default_parameters(config.scale_factor) for c in config.channels}
    return {
        "parameters": chosen,
        "scores": challenge_scores(config, crops, chosen, instance_classes),
        "default_scores": challenge_scores(config, crops, defaults, instance_classes),
    }


def save_tuning(run: str | Path, iteration: int, tuned: Mapping[str, Any]) -> Path:
    """Write ``RUN/segmentation.json`` (atomically): the iteration tuned, the
    chosen parameters per class and both score sets."""
    path = Path(run) / SEGMENTATION_NAME
    content = {
        "iteration": iteration,
        "parameters": {c: p.to_dict() for c, p in tuned["parameters"].items()},
        "scores": tuned["scores"],
        "default_scores": tuned["default_scores"],
    }
    temporary = path.with_name(f".{path.name}.tmp")
    temporary.write_text(json.dumps(content, indent=2))
    os.replace(temporary, path)
    return path


def run_parameters(run: str | Path, config: Config) -> dict[str, SegmentParameters]:
    """The run's chosen parameters per class (``RUN/segmentation.json``), or
    the untuned defaults (with a warning) where it has none.

    Raises:
        ConfigError: a ``segmentation.json`` that cannot be read.
    """
    path = Path(run) / SEGMENTATION_NAME
    defaults = {c: default_parameters(config.scale_factor) for c in config.channels}
    if not path.exists():
        logger.warning(
            "%s has no %s (run `python -m pipelines.evaluate --tune --run %s`): untuned "
            "segmentation parameters",
            run,
            SEGMENTATION_NAME,
            run,
        )
        return defaults
    try:
        stored = json.loads(path.read_text())["parameters"]
        return {c: SegmentParameters(**stored[c]) if c in stored else defaults[c] for c in defaults}
    except (ValueError, KeyError, TypeError) as error:
        raise ConfigError(f"{path}: not a segmentation parameter file ({error})") from error


def format_scores(result: Mapping[str, Any]) -> list[str]:
    """Lines for a report: overall scores, then one line per class."""
    kinds = ["combined_score" in s for s in result["label_scores"].values()]
    missing = [
        f"no {kind} class: the challenge counts its mean as 0"
        for kind, present in (("instance", any(kinds)), ("semantic", not all(kinds)))
        if not present
    ]
    lines = [
        f"overall_score {result['overall_score']:.3f} (instance "
        f"{result['overall_instance_score']:.3f}, semantic {result['overall_semantic_score']:.3f}"
        + "".join(f"; {m}" for m in missing)
        + ")"
    ]
    for label, s in result["label_scores"].items():
        if "combined_score" in s:
            lines.append(
                f"  {label}: combined {s['combined_score']:.3f} = sqrt(f1 {s['f1']:.3f} x "
                f"hausdorff {s['normalized_hausdorff_distance']:.3f}) (tp {s['tp']}, fp {s['fp']}, "
                f"fn {s['fn']})"
            )
        else:
            lines.append(f"  {label}: iou {s['iou']:.3f}, dice {s['dice']:.3f}")
    return lines


def tune_and_save(
    run: str | Path,
    config: Config,
    crops: Sequence[EvalCrop],
    iteration: int,
    instance_classes: Sequence[str] = DEFAULT_INSTANCE_CLASSES,
) -> dict[str, Any] | None:
    """Choose the segmentation parameters on ``crops`` (:func:`tune`) and
    save them in ``RUN/segmentation.json``; ``None`` without crops."""
    if not crops:
        return None
    tuned = tune(config, crops, instance_classes)
    save_tuning(run, iteration, tuned)
    return tuned


def open_run(run: str | Path, device: str = "cpu") -> tuple[Config, Any, torch.nn.Module, int]:
    """A training run's config, opened data, newest complete model (eval
    mode, on ``device``) and its iteration.

    Raises:
        ConfigError: no ``config.json`` or no complete checkpoint in ``run``.
    """
    from pipelines.batches import open_data, resolve_data
    from pipelines.common import load_model
    from pipelines.config import load_config
    from pipelines.rundir import RunDirectory

    run = Path(run)
    if not (run / "config.json").exists():
        raise ConfigError(f"{run} is not a training run (no config.json)")
    config = resolve_data(load_config(run / "config.json"), run)
    newest = RunDirectory(run).newest_complete()
    if newest is None:
        raise ConfigError(f"no complete checkpoint in {run}")
    model = load_model(config, newest.path).to(device)
    return config, open_data(config), model, newest.iteration
