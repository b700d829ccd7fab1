"""``python -m pipelines.blockwise segment``: ``--mask distance`` (``d > 0``)
and ``--mask-threshold T`` (``sigmoid(hot) > T``) give the masks their names
say, on a volume small enough to check by hand."""

from __future__ import annotations

import numpy as np
import pytest
import zarr

from pipelines.blockwise.cli import main

SCALE = 10.0
VOXEL_SIZE = (4, 4)
OFFSET = (-8, 12)
#: per column x: the hot logit and tanh(d / SCALE); rows are all alike
HOT = [2.0, 2.0, -2.0, -2.0, 2.0]  # sigmoid(hot) > 0.5 at x = 0, 1, 4
TANH = [0.5, -0.5, 0.5, -0.5, -0.5]  # d > 0 at x = 0, 2 (d = SCALE * atanh(0.5) = 5.5)


@pytest.fixture
def prediction(tmp_path, monkeypatch):
    """Both classes (mito: instances, er: semantic) predict the same 3 x 5 rows."""
    monkeypatch.chdir(tmp_path)  # daisy writes its logs into the working directory
    rows = np.array([HOT, TANH], np.float32)[:, None, :].repeat(3, axis=1)
    data = np.concatenate([rows[:1], rows[:1], rows[1:], rows[1:]])  # hot x 2, tanh x 2
    array = zarr.open_group(str(tmp_path / "in.zarr"), mode="w").create_dataset(
        "prediction", data=data
    )
    array.attrs.update({"voxel_size": list(VOXEL_SIZE), "offset": list(OFFSET)})
    return tmp_path


@pytest.mark.parametrize(
    ("flags", "er_row", "mito_row"),
    [
        # sigmoid(hot) > 0.5: x = 0, 1 touch (one object seeded at x = 0), x = 4 has no
        # seed (d < 0 everywhere in it) and no neighbour to join: its own object
        (["--mask-threshold", "0.5"], [1, 1, 0, 0, 1], [1, 1, 0, 0, 2]),
        # d > 0: x = 0 and x = 2 are two objects, apart
        (["--mask", "distance"], [1, 0, 1, 0, 0], [1, 0, 2, 0, 0]),
    ],
)
def test_mask_distance_and_mask_threshold(prediction, capsys, flags, er_row, mito_row):
    out = prediction / f"out_{flags[0][2:]}.zarr"
    args = [
        "segment", "--input", str(prediction / "in.zarr"), "--output", str(out),
        "--channels", "mito", "er", "--scale-factor", str(SCALE), "--seed-level", "2.0",
        "--block-shape", "3", "5", "--no-progress", *flags,
    ]  # fmt: skip
    assert main(args) == 0, capsys.readouterr().err
    er = zarr.open_array(str(out / "er" / "s0"), mode="r")[...]
    mito = zarr.open_array(str(out / "mito" / "s0"), mode="r")[...]
    np.testing.assert_array_equal(er, np.array([er_row] * 3, np.uint8))
    np.testing.assert_array_equal(mito, np.array([mito_row] * 3, np.uint64))


def test_mask_distance_excludes_a_threshold(prediction, capsys):
    with pytest.raises(SystemExit):
        main(["segment", "--mask", "distance", "--mask-threshold", "0.5"])
    assert "not allowed with argument" in capsys.readouterr().err
