"""gp_hotdistance.scores against hand-computed cases."""

import math

import numpy as np
import pytest

from gp_hotdistance import scores as S


def test_semantic_counts_and_pooled_iou_and_dice():
    prediction = np.array([[1, 1, 0, 0]])
    truth = np.array([[0, 7, 7, 0]])  # any id > 0 is the class
    result = S.score_semantic(prediction, truth)
    assert result == {"tp": 1, "fp": 1, "fn": 1}
    # a second crop: tp 2, fp 0, fn 1 -> pooled tp 3, fp 1, fn 2
    pooled = S.combine([("er", result), ("er", {"tp": 2, "fp": 0, "fn": 1})])
    assert pooled["label_scores"]["er"] == {
        "iou": 3 / 6,
        "dice": 6 / 9,
        "tp": 3,
        "fp": 1,
        "fn": 2,
    }
    assert pooled["overall_semantic_score"] == 0.5
    assert pooled["overall_instance_score"] == 0.0  # no instance class: the challenge's rule
    assert pooled["overall_score"] == 0.0


def test_instances_by_hand():
    # row 0 of a 10 x 10 crop at voxel size (2, 2); the cap is min(20, 20) / 2 = 10
    truth = np.zeros((10, 10), np.uint64)
    truth[0, 0:3] = 4
    truth[0, 5:7] = 9
    prediction = np.zeros((10, 10), np.uint64)
    prediction[0, 0:2] = 5  # matches 4 (IoU 2/3), Hausdorff: voxel 2 is 1 voxel = 2 from it
    prediction[0, 5:8] = 5  # same id, not connected: connected components make it another
    prediction[0, 9] = 3  # overlaps nothing: a false positive
    result = S.score_instance(prediction, truth, (2, 2))
    assert (result["tp"], result["fp"], result["fn"]) == (2, 1, 0)
    norm = np.sqrt(8)
    expected = [1.01 ** (-2 / norm), 1.01 ** (-2 / norm), 1.01 ** (-10 / norm)]
    assert result["n_hausdorff"] == 3
    assert result["hausdorff_norm_sum"] == pytest.approx(sum(expected))
    pooled = S.combine([("mito", result)])["label_scores"]["mito"]
    assert pooled["f1"] == pytest.approx(4 / 5)
    assert pooled["normalized_hausdorff_distance"] == pytest.approx(np.mean(expected))
    assert pooled["combined_score"] == pytest.approx(math.sqrt(0.8 * np.mean(expected)))


def test_matching_minimises_the_summed_cost_not_greedily():
    truth = np.zeros((1, 10), np.int64)
    truth[0, :6], truth[0, 6:] = 1, 2
    prediction = np.zeros((1, 10), np.int64)
    prediction[0, 2:8], prediction[0, :2] = 1, 2
    # IoU(t1, p1) = 4/8 is the best pair, but taking it leaves t2 alone (cost 0.5 + 1.000001);
    # t1-p2 (1 - 1/3) + t2-p1 (1 - 2/8) = 1.4167 is cheaper
    assert S.match_instances(truth, prediction) == {2: 1, 1: 2}


def test_hausdorff_is_capped_and_anisotropic():
    truth = np.zeros((4, 40), np.uint8)
    truth[1, 0:2] = 1
    prediction = np.zeros((4, 40), np.uint8)
    prediction[1, 0:30] = 1  # 28 voxels beyond the truth along x (voxel 1): 28; cap 4 * 10 / 2 = 20
    result = S.score_instance(prediction, truth, (10, 1))
    assert result["hausdorff_norm_sum"] == pytest.approx(1.01 ** (-20 / math.sqrt(101)))
    prediction = np.zeros((4, 40), np.uint8)
    prediction[2, 0:2] = 1  # one row down (10 world units): touches diagonally, matched
    result = S.score_instance(prediction, truth | prediction, (10, 1))
    assert result["tp"] == 1


def test_ids_above_two_to_the_32_are_exact():
    truth = np.zeros((2, 3, 8), np.uint64)
    truth[:, :, :3] = 2**40 + 3
    truth[:, :, 5:] = 2**33
    prediction = np.where(truth > 0, truth + np.uint64(2**45), 0).astype(np.uint64)
    result = S.score_instance(prediction, truth, (4, 4, 4))
    assert (result["tp"], result["fp"], result["fn"]) == (2, 0, 0)
    assert result["hausdorff_norm_sum"] == 2.0


def test_missing_labels_are_false_negatives():
    truth = np.array([[0, 3, 3, 0, 8]])
    assert S.score_label(None, truth, (1, 1), instance=True) == {
        "tp": 0, "fp": 0, "fn": 2, "hausdorff_norm_sum": 0.0, "n_hausdorff": 2,
    }  # fmt: skip
    assert S.score_label(None, truth, (1, 1), instance=False) == {"tp": 0, "fp": 0, "fn": 3}
    pooled = S.combine(
        [("mito", S.score_label(None, truth, (1, 1), True)), ("er", {"tp": 1, "fp": 0, "fn": 0})]
    )
    assert pooled["label_scores"]["mito"]["combined_score"] == 0.0
    assert pooled["overall_score"] == 0.0


def test_nothing_anywhere_scores_one_and_the_overall_is_the_geometric_mean():
    empty = S.score_instance(np.zeros((3, 3), int), np.zeros((3, 3), int), (1, 1))
    assert empty == {"tp": 0, "fp": 0, "fn": 0, "hausdorff_norm_sum": 0.0, "n_hausdorff": 0}
    pooled = S.combine(
        [
            ("mito", empty),
            ("nuc", {"tp": 1, "fp": 1, "fn": 0, "hausdorff_norm_sum": 1.0, "n_hausdorff": 2}),
            ("er", {"tp": 1, "fp": 3, "fn": 0}),
            ("cyto", {"tp": 0, "fp": 0, "fn": 0}),
        ]
    )
    scores = pooled["label_scores"]
    assert scores["mito"]["combined_score"] == 1.0
    assert scores["nuc"]["combined_score"] == pytest.approx(math.sqrt(2 / 3 * 0.5))
    assert scores["cyto"]["iou"] == 1.0
    instance = (1.0 + math.sqrt(1 / 3)) / 2
    semantic = (0.25 + 1.0) / 2
    assert pooled["overall_instance_score"] == pytest.approx(instance)
    assert pooled["overall_semantic_score"] == pytest.approx(semantic)
    assert pooled["overall_score"] == pytest.approx(math.sqrt(instance * semantic))


def test_mask_multiplies_prediction_and_truth():
    truth = np.array([[1, 1, 0, 0]])
    prediction = np.array([[0, 1, 1, 1]])
    mask = np.array([[1, 1, 1, 0]])
    assert S.score_label(prediction, truth, (1, 1), False, mask) == {"tp": 1, "fp": 1, "fn": 1}


def test_resampling_onto_the_truth_grid():
    ids = np.array([[1, 2], [3, 2**40]], np.uint64)  # voxel size 4, at (0, 0)
    # nearest: the truth voxel centres 3 and 5 fall in prediction voxels 0 and 1
    np.testing.assert_array_equal(
        S.resample_to_grid(ids, (4, 4), (0, 0), (2, 2), (2, 2), (2, 2), instance=True), ids
    )
    up = S.resample_to_grid(ids, (4, 4), (0, 0), (2, 2), (-2, 0), (6, 4), instance=True)
    # row centres -1, 1, 3, 5, 7, 9: prediction rows -1 (outside), 0, 0, 1, 1, 2 (outside)
    np.testing.assert_array_equal(up[[0, 5]], 0)
    np.testing.assert_array_equal(up[1:3], [[1, 1, 2, 2]] * 2)
    np.testing.assert_array_equal(up[3:5], [[3, 3, 2**40, 2**40]] * 2)
    # semantic: linear weights 3/4, 1/4 at the upsampled centres, zeros outside, then > 0.5
    semantic = np.array([[1.0, 0.0], [1.0, 0.0]])
    out = S.resample_to_grid(semantic, (4, 4), (0, 0), (2, 2), (0, 0), (4, 4), instance=False)
    np.testing.assert_array_equal(out, [[1, 1, 0, 0]] * 4)
    # same voxel size: shifted by whole voxels, values kept
    shifted = S.resample_to_grid(
        np.array([[0.3, 0.0, 1.0]]), (4, 4), (0, 8), (4, 4), (0, 4), (1, 3), instance=False
    )
    np.testing.assert_array_equal(shifted, [[0.0, 0.3, 0.0]])
