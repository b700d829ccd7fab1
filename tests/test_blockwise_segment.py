"""``python -m pipelines.blockwise segment``: blocks on 2 daisy workers give the
whole-volume segmentation of gp_hotdistance.segment."""

from __future__ import annotations

import numpy as np
import pytest
import zarr
from scipy.ndimage import gaussian_filter

from gp_hotdistance import segment as S
from pipelines.blockwise.cli import main

SHAPE = (20, 30, 36)  # not a multiple of the block: the last blocks shrink
BLOCK = ["10", "15", "18"]  # 2 x 2 x 2 = 8 blocks
VOXEL_SIZE = (16, 8, 8)
OFFSET = (-64, 32, -16)
SCALE = 40.0


@pytest.fixture(autouse=True)
def _daisy_logs_in_tmp(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)


def _prediction(tmp_path):
    """A 2-class prediction (mito: instances, er: semantic) with many touching objects."""
    rng = np.random.default_rng(5)
    distance = gaussian_filter(rng.normal(size=(2, *SHAPE)), (0, 1.5, 3, 3))
    distance = distance / distance.std() * 30 - 25  # about a quarter inside
    hot = distance / 10
    data = np.concatenate([hot, np.tanh(distance / SCALE)]).astype(np.float32)
    root = zarr.open_group(str(tmp_path / "in.zarr"), mode="w")
    array = root.create_dataset("prediction", data=data, chunks=(4, 10, 10, 12))
    array.attrs.update({"voxel_size": list(VOXEL_SIZE), "offset": list(OFFSET)})
    return data


@pytest.mark.slow
def test_segment_on_two_workers_equals_the_whole_volume(tmp_path, capsys):
    data = _prediction(tmp_path)
    out = tmp_path / "out.zarr"
    args = [
        "segment", "--input", str(tmp_path / "in.zarr"), "--output", str(out),
        "--channels", "mito", "er", "--scale-factor", str(SCALE), "--block-shape", *BLOCK,
        "--workers", "2", "--min-size", str(4 * 16 * 8 * 8), "--no-progress",
    ]  # fmt: skip
    assert main([*args, "--seed-level", "15"]) == 0
    assert "segment: 8 blocks" in capsys.readouterr().out
    params = S.SegmentParameters(seed_level=15.0, mask_threshold=0.5, min_size=4 * 16 * 8 * 8)
    whole = S.segment_prediction(data, ["mito", "er"], SCALE, VOXEL_SIZE, params)
    mito = zarr.open_group(str(out / "mito"), mode="r")
    assert "multiscales" in mito.attrs
    assert mito["s0"].dtype == np.uint64
    assert tuple(mito["s0"].attrs["offset"]) == OFFSET
    assert whole["mito"].max() > 8  # many objects, most cut by block faces
    # the same objects with the same ids (1..N in C order of their first voxel)
    np.testing.assert_array_equal(mito["s0"][...], whole["mito"])
    np.testing.assert_array_equal(zarr.open_array(str(out / "er" / "s0"))[...], whole["er"])
    # a rerun has nothing to do; other parameters are refused
    assert main([*args, "--seed-level", "15"]) == 0
    assert "nothing to do" in capsys.readouterr().out
    assert main([*args, "--seed-level", "20"]) == 2
    assert "refusing to resume" in capsys.readouterr().err
