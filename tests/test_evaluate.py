"""pipelines.evaluate on challenge-layout containers, against hand-computed scores."""

import json
import math

import numpy as np
import pytest
import zarr

from gp_hotdistance.data import write_volume
from pipelines import evaluate


def _array(root, name, data, voxel_size, translation):
    array = zarr.open_group(str(root), mode="a").create_dataset(name, data=data, overwrite=True)
    array.attrs.update({"voxel_size": list(voxel_size), "translation": list(translation)})


def test_evaluate_containers_by_hand(tmp_path, capsys):
    truth, pred = tmp_path / "truth.zarr", tmp_path / "pred.zarr"
    zarr.open_group(str(truth), mode="w")
    zarr.open_group(str(pred), mode="w")
    mito = np.zeros((8, 8), np.uint64)
    mito[1:3, 1:3] = 2**40
    mito[5:7, 5:8] = 5
    _array(truth, "crop1/mito", mito, (4, 4), (8, 8))
    found = np.zeros((16, 16), np.uint64)  # at voxel size 2: the first instance only, exactly
    found[2:6, 2:6] = 7
    _array(pred, "crop1/mito", found, (2, 2), (8, 8))
    er = np.zeros((8, 8), np.uint8)
    er[0:4] = 1
    write_volume(str(truth), "crop1/er", er, (4, 4), (8, 8))  # an OME-NGFF group
    er_mask = np.zeros((8, 8), np.uint8)
    er_mask[:, 0:4] = 1
    _array(truth, "crop1/er_mask", er_mask, (4, 4), (8, 8))
    er_pred = np.zeros((8, 8), np.uint8)
    er_pred[2:6] = 1
    _array(pred, "crop1/er", er_pred, (4, 4), (8, 8))
    lone = np.zeros((4, 4), np.uint8)
    lone[1, 1] = 1
    _array(truth, "crop2/mito", lone, (4, 4), (0, 0))  # crop2 is missing from the prediction
    out = tmp_path / "scores.json"
    assert evaluate.main([str(pred), str(truth), "--out", str(out)]) == 0
    scores = json.loads(out.read_text())
    # mito: crop1 tp 1, fn 1 (distance 0 -> 1, unmatched -> cap 16), crop2 fn 1 (counts 0)
    hausdorff = (1 + 1.01 ** (-16 / math.sqrt(32)) + 0) / 3
    mito_scores = scores["label_scores"]["mito"]
    assert (mito_scores["tp"], mito_scores["fp"], mito_scores["fn"]) == (1, 0, 2)
    assert mito_scores["f1"] == pytest.approx(0.5)
    assert mito_scores["normalized_hausdorff_distance"] == pytest.approx(hausdorff)
    assert mito_scores["combined_score"] == pytest.approx(math.sqrt(0.5 * hausdorff))
    # er inside the mask (columns 0-3): truth rows 0-3, prediction rows 2-5 -> tp 8, fp 8, fn 8
    assert scores["label_scores"]["er"] == {
        "iou": pytest.approx(1 / 3), "dice": pytest.approx(0.5), "tp": 8, "fp": 8, "fn": 8,
    }  # fmt: skip
    assert scores["overall_score"] == pytest.approx(math.sqrt(math.sqrt(0.5 * hausdorff) / 3))
    assert scores["crops"]["crop2"]["mito"]["missing"] is True
    assert "overall_score" in capsys.readouterr().out
    # an existing scores file is never replaced
    assert evaluate.main([str(pred), str(truth), "--out", str(out)]) == 2
    assert "exists" in capsys.readouterr().err


def test_labels_without_voxel_size_are_refused(tmp_path, capsys):
    truth = tmp_path / "truth.zarr"
    zarr.open_group(str(truth), mode="w")
    zarr.open_group(str(truth), mode="a").zeros("crop1/mito", shape=(4, 4), dtype=np.uint8)
    assert evaluate.main([str(truth), str(truth)]) == 2
    assert "voxel_size" in capsys.readouterr().err


def test_float_voxel_sizes_and_translations_of_the_challenge(tmp_path):
    truth, pred = tmp_path / "truth.zarr", tmp_path / "pred.zarr"
    group = zarr.open_group(str(truth), mode="w").require_group("crop7/er")
    labels = np.zeros((4, 6), np.uint8)
    labels[1:3, 2:5] = 1
    group.create_dataset("s0", data=labels)
    group.attrs["multiscales"] = [
        {
            "version": "0.4",
            "axes": [{"name": "y", "type": "space"}, {"name": "x", "type": "space"}],
            "datasets": [
                {
                    "path": "s0",
                    "coordinateTransformations": [
                        {"type": "scale", "scale": [1.74, 2.0]},
                        {"type": "translation", "translation": [23837.13, 7599.0]},
                    ],
                }
            ],
        }
    ]
    zarr.open_group(str(pred), mode="w")
    shifted = np.zeros((4, 6), np.uint8)
    shifted[1:3, 3:6] = 1  # one voxel later in an array translated one voxel (2.0) earlier
    _array(pred, "crop7/er", shifted, (1.74, 2.0), (23837.13, 7597.0))
    scores = evaluate.evaluate_containers(pred, truth)
    assert scores["label_scores"]["er"] == {
        "iou": 1.0, "dice": 1.0, "tp": 6, "fp": 0, "fn": 0,
    }  # fmt: skip
