"""Raw coarser than the training voxel size: linear upsampling (against a
per-voxel reference), windowed reads equal to the whole volume's, refusal
when upsampling is off, and a run on two datasets at different native voxel
sizes trained at the finer one."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from funlib.geometry import Coordinate, Roi

from gp_hotdistance.data import Sample, upsample_linear, write_volume
from gp_hotdistance.data.resample import mean_pool
from pipelines import train as train_module
from pipelines.batches import open_data
from pipelines.config import ConfigError, from_dict
from tests.cellmap_fixture import write_cellmap_fixture


def reference_upsample(data, factors):
    """Each fine voxel, one at a time: its centre in coarse voxel units,
    clamped to the outer coarse centres, then the multilinear mix of the
    2**dims coarse voxels around it."""
    out = np.zeros([s * f for s, f in zip(data.shape, factors, strict=True)])
    for index in np.ndindex(*out.shape):
        at = [
            min(max((j + 0.5) / f - 0.5, 0), n - 1)
            for j, f, n in zip(index, factors, data.shape, strict=True)
        ]
        value = 0.0
        for corner in itertools.product((0, 1), repeat=data.ndim):
            weight, source = 1.0, []
            for p, c, n in zip(at, corner, data.shape, strict=True):
                low = int(np.floor(p))
                weight *= (p - low) if c else (1 - (p - low))
                source.append(min(low + c, n - 1))
            value += weight * data[tuple(source)]
        out[index] = value
    return out


@pytest.mark.parametrize(("shape", "factors"), [((5, 4), (2, 3)), ((3, 4, 2), (4, 1, 2))])
def test_upsample_linear_equals_the_per_voxel_reference(shape, factors):
    data = np.random.default_rng(0).integers(0, 256, shape).astype(np.uint8)
    ours = upsample_linear(data, factors)
    assert ours.dtype == np.float32 and ours.shape == tuple(
        s * f for s, f in zip(shape, factors, strict=True)
    )
    np.testing.assert_allclose(ours, reference_upsample(data, factors), rtol=1e-6)
    assert ours.min() >= data.min() and ours.max() <= data.max()  # no overshoot
    # a constant stays constant, a ramp along an axis stays a ramp inside
    assert np.all(upsample_linear(np.full(shape, 7.0), factors) == 7.0)


def test_coarse_raw_reads_equal_the_whole_volume_upsampled(tmp_path):
    """Raw at (16, 4, 4) read at (8, 8, 8) with a negative offset: z is
    interpolated x2, y and x mean-pooled x2; every window, also at the
    volume's faces, equals the same voxels of the whole volume resampled."""
    rng = np.random.default_rng(1)
    raw = rng.integers(0, 256, (6, 16, 12)).astype(np.uint8)
    offset = Coordinate(-32, 16, -8)
    write_volume(tmp_path / "c.zarr", "raw", raw, (16, 4, 4), offset)
    write_volume(tmp_path / "c.zarr", "mito", np.ones((4, 4, 4), np.uint8), (8, 8, 8), offset)
    sample = Sample(tmp_path / "c.zarr/raw", {"mito": tmp_path / "c.zarr/mito"}, ["mito"], (8,) * 3)
    assert sample.raw_roi == Roi(offset, Coordinate(96, 64, 48))
    whole = upsample_linear(mean_pool(raw, (1, 2, 2)), (2, 1, 1))
    np.testing.assert_allclose(sample.read_raw(sample.raw_roi), whole, rtol=1e-6)
    for begin, shape in [((0, 0, 0), (3, 2, 2)), ((5, 3, 1), (7, 5, 5)), ((11, 7, 5), (1, 1, 1))]:
        roi = Roi(offset + Coordinate(begin) * 8, Coordinate(shape) * 8)
        window = tuple(slice(b, b + s) for b, s in zip(begin, shape, strict=True))
        np.testing.assert_allclose(sample.read_raw(roi), whole[window], rtol=1e-6)
    with pytest.raises(
        ValueError, match=r"raw voxel size \(16, 4, 4\) is coarser .* upsampling is off"
    ):
        Sample(
            tmp_path / "c.zarr/raw",
            {"mito": tmp_path / "c.zarr/mito"},
            ["mito"],
            (8,) * 3,
            upsample=False,
        )


@pytest.fixture(scope="module")
def two_resolutions(tmp_path_factory):
    """Dataset a: raw at 8 nm, labels at 4 nm; dataset b: raw at 16 nm,
    labels at 8 nm."""
    root = tmp_path_factory.mktemp("two")
    fine = write_cellmap_fixture(root / "a", (8, 8), (2, 2), raw_shape=(48, 48))
    coarse = write_cellmap_fixture(root / "b", (16, 16), (2, 2), raw_shape=(24, 24), seed=1)
    return fine, coarse


def config_for(fine, coarse, **data):
    samples = [
        {"raw": f.raw_path, "labels": f.label_paths(c)}
        for f in (fine, coarse)
        for c in ("crop7", "crop9")
    ]
    return from_dict(
        {
            "channels": ["mito", "er"],
            "scale_factor": 24.0,
            "data": {"voxel_size": [8, 8], "samples": samples[:3], "eval": samples[3:], **data},
            "model": {"num_fmaps": 2, "downsample_factors": [[2, 2]], "output_shape": [8, 8]},
            "training": {
                "iterations": 2,
                "save_every": 2,
                "snapshot_every": 2,
                "num_workers": 0,
                "augment": True,
            },
        }
    )


def test_two_datasets_at_different_voxel_sizes_train_at_the_finer(
    two_resolutions, tmp_path, capsys
):
    fine, coarse = two_resolutions
    config = config_for(fine, coarse)
    summary = train_module.train(config, tmp_path / "run")
    assert summary["iterations"] == 2 and summary["evaluation_crops"] == 1
    out = capsys.readouterr().out
    assert "data at the training voxel size (8, 8):" in out
    assert (
        f"  {fine.raw_path}/s0 (2 samples): raw at (8, 8) used as is; "
        "label datasets: 3 at (4, 4) pooled x(2, 2) (majority)"
    ) in out
    assert (
        f"  {coarse.raw_path}/s0 (2 samples): raw at (16, 16) upsampled x(2, 2) (linear); "
        "label datasets: 3 at (8, 8) used as is"
    ) in out
    data = open_data(config)
    assert [s.raw.voxel_size for s in data.samples] == [(8, 8), (8, 8), (16, 16)]
    with pytest.raises(ConfigError) as error:
        open_data(config_for(fine, coarse, upsample=False))
    text = str(error.value)
    assert text.startswith("2 sample(s) cannot be used")
    assert "data.samples[2] (raw " in text and "data.eval[0] (raw " in text
    assert text.count("upsampling is off") == 2
