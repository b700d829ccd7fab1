"""pipelines.submit: a trained run's submission, scored back against the truth."""

import zipfile

import numpy as np
import pytest
import zarr

from pipelines import submit, train
from pipelines.challenge import evaluate_containers
from pipelines.demo_data import EVAL_CROP, make_cellmap_demo
from tests.helpers import tiny_config


@pytest.mark.slow
def test_submission_scores_as_the_run_evaluated_it(tmp_path, capsys):
    demo = make_cellmap_demo(tmp_path / "demo_data.zarr", raw_shape=(96, 96))
    run = tmp_path / "run"
    summary = train.train(tiny_config(demo.data_section()), run, quiet=True)
    roi = demo.crop_rois[EVAL_CROP]  # world ROI of the held-out crop's labels
    label_voxel_size = demo.label_voxel_size
    shape = [s // v for s, v in zip(roi.shape, label_voxel_size, strict=True)]
    crops = tmp_path / "crops.csv"
    crops.write_text(
        "crop_name,raw,class_label,voxel_size,translation,shape\n"
        + "".join(
            f"{EVAL_CROP.removeprefix('crop')},{demo.raw},{label},"
            f"[{';'.join(map(str, label_voxel_size))}],[{';'.join(map(str, roi.offset))}],"
            f"[{';'.join(map(str, shape))}]\n"
            for label in ("mito", "er")
        )
    )
    out = tmp_path / "submission.zarr"
    assert submit.main(["--run", str(run), "--crops", str(crops), "--out", str(out)]) == 0
    mito = zarr.open_array(str(out / EVAL_CROP / "mito"), mode="r")
    assert mito.dtype == np.uint64 and list(mito.shape) == shape
    assert mito.attrs["voxel_size"] == list(label_voxel_size)
    assert mito.attrs["translation"] == list(roi.offset)
    assert zarr.open_array(str(out / EVAL_CROP / "er"), mode="r").dtype == np.uint8
    with zipfile.ZipFile(tmp_path / "submission.zip") as packed:
        assert f"submission.zarr/{EVAL_CROP}/mito/.zattrs" in packed.namelist()
    # scored against the crop's truth, the submission gets what training reported
    truth = demo.container / "recon-1/labels/groundtruth"
    scored = evaluate_containers(out, truth)
    reported = summary["challenge_scores"]
    for label in ("mito", "er"):
        counts = {k: scored["crops"][EVAL_CROP][label][k] for k in ("tp", "fp", "fn")}
        assert counts == {k: reported["label_scores"][label][k] for k in ("tp", "fp", "fn")}
    # an existing submission is never replaced
    capsys.readouterr()
    assert submit.main(["--run", str(run), "--crops", str(crops), "--out", str(out)]) == 2
    assert "exists" in capsys.readouterr().err
