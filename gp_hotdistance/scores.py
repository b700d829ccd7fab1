"""The CellMap segmentation challenge's scores, on numpy arrays.

Per crop and label (:func:`score_label`, after :func:`resample_to_grid` put
the prediction on the truth's grid and a ``<label>_mask`` multiplied both):

- **instance classes**: the prediction is relabelled by connected components
  (full connectivity); predicted and true instances are matched one to one,
  minimising the summed ``1 - IoU`` of the matched pairs (any IoU > 0 may
  match) plus ``1 + 1e-6`` per unmatched true instance, as the challenge's
  min-cost flow prices them (so a match is always worth making);
  ``tp`` = matches, ``fp`` = unmatched predictions, ``fn`` = unmatched truths.
  Each true instance gets the Hausdorff distance (world units) to its match,
  capped at ``min(voxel_size * shape) / 2``; unmatched truths and unmatched
  predictions count the cap. Distances are normalised as
  ``1.01 ** (-d / ||voxel_size||)``.
- **semantic classes**: voxel ``tp``, ``fp``, ``fn`` of the ``> 0`` masks.

Pooled per class over crops (:func:`combine`): instance ``f1 = 2tp / (2tp +
fp + fn)``, ``normalized_hausdorff_distance`` (mean of the normalised
distances), ``combined_score = sqrt(f1 * normalized_hausdorff_distance)``, all 1
for a class with nothing anywhere; semantic ``iou = tp / (tp + fp + fn)`` and
``dice = 2tp / (2tp + fp + fn)`` (1 when the denominator is 0). The overall
instance and semantic scores are plain means over classes (0 without such
classes), ``overall_score`` their geometric mean. A label the prediction
lacks counts every true voxel (semantic) or instance (instance, with
normalised distance 0) as a false negative (:func:`missing_label_score`).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import cc3d
import edt
import fastremap
import numpy as np
import numpy.typing as npt
from scipy.ndimage import find_objects
from scipy.sparse import csr_matrix
from scipy.sparse.csgraph import min_weight_full_bipartite_matching

from gp_hotdistance.segment import DEFAULT_INSTANCE_CLASSES

UNMATCHED_COST = 1.0 + 1e-6
"""Cost of leaving a true instance unmatched, in units of ``1 - IoU``."""

SEMANTIC_THRESHOLD = 0.5
"""A resampled semantic prediction is foreground where its interpolated value exceeds this."""


def max_distance(voxel_size: Sequence[float], shape: Sequence[int]) -> float:
    """The Hausdorff cap: ``min(voxel_size * shape) / 2`` (world units)."""
    return float(min(v * s for v, s in zip(voxel_size, shape, strict=True)) / 2)


def normalize_distance(distance: npt.ArrayLike, voxel_size: Sequence[float]) -> npt.NDArray:
    """``1.01 ** (-d / ||voxel_size||)``."""
    return 1.01 ** (-np.asarray(distance, dtype=np.float64) / np.linalg.norm(voxel_size))


def resample_to_grid(
    prediction: npt.NDArray,
    voxel_size: Sequence[float],
    translation: Sequence[float],
    truth_voxel_size: Sequence[float],
    truth_translation: Sequence[float],
    truth_shape: Sequence[int],
    instance: bool,
) -> npt.NDArray:
    """``prediction`` on the truth's grid, zeros where it has no data.

    Instance ids: nearest neighbour (each truth voxel takes the prediction
    voxel containing its centre; ids kept exact). Semantic, at another voxel
    size: the challenge's rule, linear interpolation
    (``skimage.transform.rescale``, order 1, zeros outside) and then
    ``> 0.5``, placed ``floor((translation - truth_translation) / truth_voxel_size)``
    truth voxels from the truth's corner. At the same voxel size values are
    only shifted (the score counts ``> 0``).
    """
    prediction = np.asarray(prediction)
    vs = np.asarray(voxel_size, dtype=np.float64)
    tvs = np.asarray(truth_voxel_size, dtype=np.float64)
    tr = np.asarray(translation, dtype=np.float64)
    ttr = np.asarray(truth_translation, dtype=np.float64)
    shape = tuple(int(s) for s in truth_shape)
    if not prediction.ndim == vs.size == tvs.size == tr.size == ttr.size == len(shape):
        raise ValueError(
            f"prediction of shape {prediction.shape} with voxel size {tuple(vs)} and translation "
            f"{tuple(tr)} cannot be put on a grid of shape {shape}, voxel size {tuple(tvs)}"
        )
    if instance and not np.array_equal(vs, tvs):
        index = []
        for a in range(len(shape)):
            centres = ttr[a] + (np.arange(shape[a]) + 0.5) * tvs[a]
            index.append(np.floor((centres - tr[a]) / vs[a] + 1e-9).astype(np.int64))
        valid = [(i >= 0) & (i < prediction.shape[a]) for a, i in enumerate(index)]
        out = np.zeros(shape, prediction.dtype)
        source = prediction[np.ix_(*[i[v] for i, v in zip(index, valid, strict=True)])]
        out[np.ix_(*valid)] = source
        return out
    if not np.array_equal(vs, tvs):
        from skimage.transform import rescale

        prediction = (
            rescale(prediction.astype(np.float32), tuple(vs / tvs), order=1, mode="constant",
                    preserve_range=True)
            > SEMANTIC_THRESHOLD
        )  # fmt: skip
    shift = np.floor((tr - ttr) / tvs + 1e-9).astype(np.int64)
    out = np.zeros(shape, prediction.dtype)
    src, dst = [], []
    for a in range(len(shape)):
        begin, end = max(shift[a], 0), min(shift[a] + prediction.shape[a], shape[a])
        if end <= begin:
            return out
        dst.append(slice(begin, end))
        src.append(slice(begin - shift[a], end - shift[a]))
    out[tuple(dst)] = prediction[tuple(src)]
    return out


def score_semantic(prediction: npt.ArrayLike, truth: npt.ArrayLike) -> dict[str, int]:
    """Voxel ``tp``/``fp``/``fn`` of ``prediction > 0`` against ``truth > 0``."""
    p = np.asarray(prediction) > 0
    t = np.asarray(truth) > 0
    tp = int(np.count_nonzero(p & t))
    return {"tp": tp, "fp": int(np.count_nonzero(p)) - tp, "fn": int(np.count_nonzero(t)) - tp}


def match_instances(
    truth: npt.NDArray[np.integer], prediction: npt.NDArray[np.integer]
) -> dict[int, int]:
    """One-to-one matching ``{prediction id: truth id}`` of labels ``1..nT`` and
    ``1..nP`` minimising summed ``1 - IoU`` plus :data:`UNMATCHED_COST` per
    unmatched truth, over pairs that overlap."""
    n_truth, n_pred = int(truth.max(initial=0)), int(prediction.max(initial=0))
    t, p = truth.ravel(), prediction.ravel()
    both = (t > 0) & (p > 0)
    if n_truth == 0 or n_pred == 0 or not both.any():
        return {}
    truth_sizes = np.bincount(t, minlength=n_truth + 1).astype(np.int64)
    pred_sizes = np.bincount(p, minlength=n_pred + 1).astype(np.int64)
    keys = t[both].astype(np.uint64) * np.uint64(n_pred + 1) + p[both].astype(np.uint64)
    pairs, overlap = np.unique(keys, return_counts=True)
    rows = (pairs // np.uint64(n_pred + 1)).astype(np.int64)
    cols = (pairs % np.uint64(n_pred + 1)).astype(np.int64)
    iou = overlap / (truth_sizes[rows] + pred_sizes[cols] - overlap)
    # rows: truths 1..nT; columns: predictions 1..nP, then one "unmatched" column per truth;
    # every cost is shifted by 1 (positive weights), which changes no optimum
    graph = csr_matrix(
        (
            np.concatenate([2.0 - iou, np.full(n_truth, 1.0 + UNMATCHED_COST)]),
            (
                np.concatenate([rows - 1, np.arange(n_truth)]),
                np.concatenate([cols - 1, n_pred + np.arange(n_truth)]),
            ),
        ),
        shape=(n_truth, n_pred + n_truth),
    )
    matched = min_weight_full_bipartite_matching(graph)[1]
    return {int(c) + 1: int(r) + 1 for r, c in enumerate(matched) if c < n_pred}


def hausdorff_distance(
    a: npt.NDArray[np.bool_], b: npt.NDArray[np.bool_], voxel_size: Sequence[float]
) -> float:
    """Symmetric Hausdorff distance (world units) of two non-empty voxel sets."""
    to_b = edt.edt(~b, anisotropy=tuple(float(v) for v in voxel_size), black_border=False)
    to_a = edt.edt(~a, anisotropy=tuple(float(v) for v in voxel_size), black_border=False)
    return float(max(to_b[a].max(), to_a[b].max()))


def score_instance(
    prediction: npt.ArrayLike, truth: npt.ArrayLike, voxel_size: Sequence[float]
) -> dict[str, Any]:
    """``tp``/``fp``/``fn`` and the normalised Hausdorff sum and count of one crop
    (module docs). Ids may be any unsigned or signed integers (uint64 above
    2**32 included); 0 is background."""
    truth = np.asarray(truth)
    prediction = np.asarray(prediction)
    if truth.shape != prediction.shape:
        raise ValueError(f"prediction {prediction.shape} and truth {truth.shape} differ in shape")
    cap = max_distance(voxel_size, truth.shape)
    connectivity = 26 if truth.ndim == 3 else 8
    labels, n_pred = cc3d.connected_components(
        np.ascontiguousarray(prediction), connectivity=connectivity, return_N=True
    )
    labels = labels.astype(np.int64)
    truth_labels, remap = fastremap.renumber(np.ascontiguousarray(truth), preserve_zero=True)
    truth_labels = np.asarray(truth_labels).astype(np.int64)
    n_truth = len(remap) - (1 if 0 in remap else 0)
    mapping = match_instances(truth_labels, labels)
    truth_boxes = find_objects(truth_labels)
    pred_boxes = find_objects(labels)
    distances = np.full(n_truth + n_pred - len(mapping), cap)
    for k, (pred_id, truth_id) in enumerate(sorted(mapping.items(), key=lambda m: m[1])):
        box = tuple(
            slice(min(s.start, q.start), max(s.stop, q.stop))
            for s, q in zip(truth_boxes[truth_id - 1], pred_boxes[pred_id - 1], strict=True)
        )
        d = hausdorff_distance(truth_labels[box] == truth_id, labels[box] == pred_id, voxel_size)
        distances[k] = min(d, cap)
    norm = normalize_distance(distances, voxel_size)
    return {
        "tp": len(mapping),
        "fp": n_pred - len(mapping),
        "fn": n_truth - len(mapping),
        "hausdorff_norm_sum": float(norm.sum()),
        "n_hausdorff": int(norm.size),
    }


def missing_label_score(truth: npt.ArrayLike, instance: bool) -> dict[str, Any]:
    """Score of a label the prediction lacks: every true voxel (semantic) or
    instance (instance, normalised distance 0) a false negative."""
    truth = np.asarray(truth)
    if not instance:
        return {"tp": 0, "fp": 0, "fn": int(np.count_nonzero(truth))}
    ids = fastremap.unique(truth)
    n = int(np.count_nonzero(ids))
    return {"tp": 0, "fp": 0, "fn": n, "hausdorff_norm_sum": 0.0, "n_hausdorff": n}


def score_label(
    prediction: npt.ArrayLike | None,
    truth: npt.ArrayLike,
    voxel_size: Sequence[float],
    instance: bool,
    mask: npt.ArrayLike | None = None,
) -> dict[str, Any]:
    """Score of one crop's label; ``prediction`` already on the truth's grid
    (:func:`resample_to_grid`) or ``None`` when missing; ``mask`` (``> 0`` =
    scored) multiplies both."""
    truth = np.asarray(truth)
    if prediction is None:
        return missing_label_score(
            truth if mask is None else truth * (np.asarray(mask) > 0), instance
        )
    prediction = np.asarray(prediction)
    if mask is not None:
        keep = np.asarray(mask) > 0
        truth = np.where(keep, truth, 0)
        prediction = np.where(keep, prediction, 0)
    if instance:
        return score_instance(prediction, truth, voxel_size)
    return score_semantic(prediction, truth)


def combine(
    results: Iterable[tuple[str, Mapping[str, Any]]],
    instance_classes: Sequence[str] = DEFAULT_INSTANCE_CLASSES,
) -> dict[str, Any]:
    """Pool ``(label, crop score)`` pairs per class into the challenge's
    ``label_scores`` and overall scores (module docs)."""
    pooled: dict[str, dict[str, float]] = {}
    for label, result in results:
        entry = pooled.setdefault(label, {"tp": 0, "fp": 0, "fn": 0, "sum": 0.0, "count": 0})
        for key in ("tp", "fp", "fn"):
            entry[key] += result[key]
        if label in instance_classes:
            entry["sum"] += result["hausdorff_norm_sum"]
            entry["count"] += result["n_hausdorff"]
    label_scores: dict[str, dict[str, Any]] = {}
    instance_scores, semantic_scores = [], []
    for label in sorted(pooled):
        e = pooled[label]
        tp, fp, fn = int(e["tp"]), int(e["fp"]), int(e["fn"])
        if label in instance_classes:
            denominator = 2 * tp + fp + fn
            if denominator == 0 and e["count"] == 0:
                f1 = hausdorff = combined = 1.0
            else:
                f1 = 2 * tp / denominator if denominator else 0.0
                hausdorff = e["sum"] / e["count"] if e["count"] else 0.0
                combined = math.sqrt(f1 * hausdorff)
            label_scores[label] = {
                "f1": f1,
                "normalized_hausdorff_distance": hausdorff,
                "combined_score": combined,
            }
            instance_scores.append(combined)
        else:
            denominator = tp + fp + fn
            iou = tp / denominator if denominator else 1.0
            dice = 2 * tp / (2 * tp + fp + fn) if denominator else 1.0
            label_scores[label] = {"iou": iou, "dice": dice}
            semantic_scores.append(iou)
        label_scores[label].update({"tp": tp, "fp": fp, "fn": fn})
    overall_instance = float(np.mean(instance_scores)) if instance_scores else 0.0
    overall_semantic = float(np.mean(semantic_scores)) if semantic_scores else 0.0
    return {
        "label_scores": label_scores,
        "overall_instance_score": overall_instance,
        "overall_semantic_score": overall_semantic,
        "overall_score": math.sqrt(overall_instance * overall_semantic),
    }
