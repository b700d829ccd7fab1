"""Evaluation of a trained model on the evaluation crops (``data.eval``):
prediction as blockwise prediction writes it, and per-class Dice pooled over
every crop.

Prediction of a crop (:func:`predict_crop`) is what ``python -m
pipelines.blockwise predict`` writes for the same sample: output tiles of
``model.output_shape`` laid from the first voxel of the crop's labelled ROI
(blockwise blocks are multiples of the tile, laid from the same voxel), raw
read with the model's context around them and zeros beyond the raw volume,
and ``segment`` (``sigmoid(hot) > 0.5``). The score printed for a crop is
therefore the score of what blockwise prediction writes for its voxels.

Scores are pooled as the challenge pools them: per class, the counts of
every crop are summed (known voxels, true and predicted foreground, their
overlap) and Dice is computed once from the sums. Only voxels where the
class is known (mask 1) count; a crop that does not annotate a class adds
nothing to it.

Other scores (instance scores, say) plug in through ``evaluate(...,
on_crop=...)``, which sees every :class:`CropPrediction` once.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np
from funlib.geometry import Coordinate, Roi

from gp_hotdistance.data import Sample, normalize_raw
from gp_hotdistance.torch.inference import context_for, predict_padded
from gp_hotdistance.torch.postprocess import segment
from pipelines.config import Config

logger = logging.getLogger(__name__)


def dice(prediction: np.ndarray, truth: np.ndarray) -> float:
    """Dice coefficient of two boolean arrays (1.0 if both are empty)."""
    total = int(prediction.sum()) + int(truth.sum())
    if total == 0:
        return 1.0
    return 2.0 * int(np.logical_and(prediction, truth).sum()) / total


@dataclass(frozen=True)
class CropPrediction:
    """One evaluation crop, predicted as blockwise prediction writes it.

    ``prediction`` is ``(2C, *roi)`` float32 (hot then distance channels),
    ``segmentation``, ``truth`` and ``known`` are ``(C, *roi)`` booleans over
    ``roi``, the crop's labelled ROI at the training voxel size."""

    where: str
    sample: Sample
    roi: Roi
    prediction: np.ndarray
    segmentation: np.ndarray
    truth: np.ndarray
    known: np.ndarray


def predict_crop(config: Config, sample: Sample, where: str, model, device: str) -> CropPrediction:
    """Predict ``sample``'s labelled ROI (see the module docs)."""
    voxel_size = sample.voxel_size
    context = Coordinate(context_for(model, config.model.output_shape)) * voxel_size
    roi = sample.labelled_roi
    raw = normalize_raw(sample.read_raw_padded(roi.grow(context, context)), sample.raw.dtype)
    prediction = predict_padded(model, raw, config.model.output_shape, device)
    truth, known = sample.read_labels(roi)
    return CropPrediction(
        where=where,
        sample=sample,
        roi=roi,
        prediction=prediction,
        segmentation=segment(prediction).astype(bool),
        truth=truth == 1,
        known=known == 1,
    )


def predict_crops(
    config: Config, samples: list[Sample], model, device: str
) -> Iterator[CropPrediction]:
    """:func:`predict_crop` for every evaluation sample, one at a time
    (``where`` is ``data.eval[i]``)."""
    for i, sample in enumerate(samples):
        yield predict_crop(config, sample, f"data.eval[{i}]", model, device)


@dataclass
class ClassScore:
    """Pooled counts of one class over the evaluation crops, and its Dice.

    ``known``: voxels where the class is annotated; ``truth`` /
    ``predicted``: foreground voxels among them in the labels / the
    prediction; ``overlap``: both; ``crops``: crops annotating the class."""

    known: int = 0
    truth: int = 0
    predicted: int = 0
    overlap: int = 0
    crops: int = 0

    def add(self, segmentation: np.ndarray, truth: np.ndarray, known: np.ndarray) -> None:
        """Add one crop's counts (boolean arrays of one class)."""
        if not known.any():
            return
        predicted, true = segmentation[known], truth[known]
        self.known += int(known.sum())
        self.truth += int(true.sum())
        self.predicted += int(predicted.sum())
        self.overlap += int(np.logical_and(predicted, true).sum())
        self.crops += 1

    @property
    def empty(self) -> bool:
        """No foreground in the labels and none predicted: Dice is undefined."""
        return self.truth == 0 and self.predicted == 0

    @property
    def dice(self) -> float | None:
        """``2 overlap / (truth + predicted)``; ``None`` when :attr:`empty`."""
        if self.empty:
            return None
        return 2.0 * self.overlap / (self.truth + self.predicted)

    @property
    def foreground_fraction(self) -> float:
        """Fraction of the known voxels that are foreground in the labels."""
        return self.truth / self.known if self.known else 0.0

    @property
    def all_foreground_dice(self) -> float:
        """Dice of a prediction that calls every known voxel foreground:
        ``2 truth / (truth + known)`` (what a constant model scores)."""
        return 2.0 * self.truth / (self.truth + self.known) if self.known else 0.0

    def to_dict(self) -> dict:
        return {
            "dice": self.dice,
            "known_voxels": self.known,
            "truth_voxels": self.truth,
            "predicted_voxels": self.predicted,
            "overlap_voxels": self.overlap,
            "crops": self.crops,
            "foreground_fraction": self.foreground_fraction,
            "all_foreground_dice": self.all_foreground_dice,
        }

    def describe(self) -> str:
        """One line for the report, e.g. ``0.812 (foreground 12.3% of 40960
        known voxels in 3 crops; all-foreground prediction scores 0.219)``."""
        where = f"{self.known} known voxels in {self.crops} crop{'s' if self.crops != 1 else ''}"
        if self.empty:
            return f"no foreground in the labels and none predicted ({where})"
        return (
            f"{self.dice:.3f} (foreground {100 * self.foreground_fraction:.1f}% of {where}; "
            f"all-foreground prediction scores {self.all_foreground_dice:.3f})"
        )


def constant_channels(config: Config, crop: CropPrediction) -> list[str]:
    """The classes whose hot channel is one constant over the crop."""
    hot = crop.prediction[: len(config.channels)]
    flat = hot.reshape(len(config.channels), -1)
    return [c for c, values in zip(config.channels, flat, strict=True) if np.ptp(values) == 0]


def uniform_segmentations(config: Config, crop: CropPrediction) -> dict[str, str]:
    """Classes whose segmentation is all ``foreground`` or all
    ``background`` over the crop's known voxels while the labels there hold
    both (the Dice of such a crop is the all-foreground or the
    all-background score, whatever the model learnt)."""
    uniform = {}
    for i, name in enumerate(config.channels):
        known = crop.known[i]
        truth, predicted = crop.truth[i][known], crop.segmentation[i][known]
        if truth.size and truth.any() and not truth.all():
            if predicted.all():
                uniform[name] = "foreground"
            elif not predicted.any():
                uniform[name] = "background"
    return uniform


def evaluate(
    config: Config,
    data,
    model,
    device: str,
    on_crop: Callable[[CropPrediction], None] | None = None,
) -> dict[str, ClassScore]:
    """Per-class scores pooled over ``data.eval`` (see the module docs);
    classes annotated in no evaluation crop are left out. A crop whose hot
    channel is constant for a class, or whose segmentation of a class is
    uniform (:func:`uniform_segmentations`), is logged as a warning (its Dice
    is the all-foreground or the all-background score, whatever the model
    learnt).
    ``on_crop`` is called with every crop's prediction."""
    scores = {c: ClassScore() for c in config.channels}
    for crop in predict_crops(config, data.eval, model, device):
        constant = constant_channels(config, crop)
        if constant:
            logger.warning(
                "%s (%s): the prediction's hot channel is constant over the crop for %s",
                crop.where,
                crop.sample.raw.path,
                constant,
            )
        uniform = uniform_segmentations(config, crop)
        if uniform:
            logger.warning(
                "%s (%s): the segmentation is uniform over the crop, whose labels hold both "
                "values: %s",
                crop.where,
                crop.sample.raw.path,
                ", ".join(f"{c} all {kind}" for c, kind in uniform.items()),
            )
        for i, name in enumerate(config.channels):
            scores[name].add(crop.segmentation[i], crop.truth[i], crop.known[i])
        if on_crop is not None:
            on_crop(crop)
    return {c: s for c, s in scores.items() if s.crops}
