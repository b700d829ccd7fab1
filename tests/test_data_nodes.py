"""Samples in real gunpowder pipelines: sources, labelled-centre sampling,
targets and weights on the CellMap-style fixture."""

from __future__ import annotations

import gunpowder as gp
import numpy as np
import pytest
from funlib.geometry import Coordinate, Roi

from gp_hotdistance import HotDistancePredictor, TargetNode, WeightNode
from gp_hotdistance.data import (
    RandomLabelledLocation,
    Sample,
    SampleSource,
    sample_sources,
    write_volume,
)
from tests.cellmap_fixture import CHANNELS, expected_labels, write_cellmap_fixture

GEOMETRIES = {
    "3d-anisotropic": dict(voxel_size=(40, 8, 8), label_factors=(1, 2, 2)),
    "2d": dict(voxel_size=(8, 8), label_factors=(2, 2)),
}
CROPS = ["crop7", "crop9"]
BATCHES = 8


@pytest.mark.parametrize("mask_distances", [False, True])
@pytest.mark.parametrize("geometry", GEOMETRIES)
def test_batches_match_the_documented_resampling(tmp_path, geometry, mask_distances):
    fixture = write_cellmap_fixture(tmp_path, **GEOMETRIES[geometry])
    voxel_size = fixture.voxel_size
    samples = [
        Sample(fixture.raw_path, fixture.label_paths(c), CHANNELS, voxel_size) for c in CROPS
    ]
    predictor = HotDistancePredictor(
        channels=CHANNELS,
        scale_factor=2.0 * voxel_size[-1],
        mask_distances=mask_distances,
        kernel_size=1,
    )
    raw, gt, mask, target, weights, shift, index = (
        gp.ArrayKey(n) for n in ("RAW", "GT", "MASK", "TARGET", "WEIGHTS", "SHIFT", "INDEX")
    )
    pipeline = sample_sources(samples, raw, gt, mask, random_shift=shift, sample_index=index)
    pipeline += TargetNode(predictor, gt, target)
    if not mask_distances:
        pipeline += WeightNode(predictor, gt, target, weights, mask=mask, moving_counts=False)

    output = Roi((0,) * voxel_size.dims, voxel_size * 6)
    raw_roi = output.grow(voxel_size * 2, voxel_size * 2)  # context from the raw volume
    keys = [gt, mask, target] + ([] if mask_distances else [weights])
    seen, outside = set(), 0
    with gp.build(pipeline):
        for seed in range(BATCHES):
            request = gp.BatchRequest(random_seed=seed)
            request[raw] = gp.ArraySpec(roi=raw_roi)
            for key in keys:
                request[key] = gp.ArraySpec(roi=output)
            request[shift] = gp.ArraySpec(nonspatial=True)
            request[index] = gp.ArraySpec(nonspatial=True)
            batch = pipeline.request_batch(request)

            crop = CROPS[int(batch[index].data)]
            seen.add(crop)
            world = output.shift(Coordinate(batch[shift].data))
            assert batch[gt].spec.roi == output and batch[raw].spec.roi == raw_roi
            assert batch[raw].spec.interpolatable and not batch[gt].spec.interpolatable
            # the centre voxel is labelled
            centre = world.begin + voxel_size * (world.shape / voxel_size / 2)
            assert samples[CROPS.index(crop)].labelled_roi.contains(centre)
            # raw is the real data (not padding), normalised like gp.Normalize
            window = ((raw_roi.shift(world.begin) - fixture.raw_offset) / voxel_size).to_slices()
            np.testing.assert_array_equal(batch[raw].data, fixture.raw[window] / np.float32(255))
            expected_gt, expected_mask = expected_labels(fixture, crop, world, voxel_size)
            np.testing.assert_array_equal(batch[gt].data, expected_gt)
            np.testing.assert_array_equal(batch[mask].data, expected_mask)
            # target = process of the resampled labels over the context-grown region
            region = predictor.gt_region_for_roi(gp.ArraySpec(roi=world, voxel_size=voxel_size)).roi
            region_gt, _ = expected_labels(fixture, crop, region, voxel_size)
            crop_slices = ((world - region.begin) / voxel_size).to_slices()
            expected_target = predictor.process(region_gt, voxel_size)[(slice(None), *crop_slices)]
            np.testing.assert_allclose(batch[target].data, expected_target, atol=1e-6)
            if not mask_distances:
                w = batch[weights].data
                unknown = np.concatenate([expected_mask, expected_mask]) == 0
                assert not w[unknown].any(), "unknown voxels must have zero weight"
                assert (w[~unknown] > 0).all()
                if crop == "crop9":
                    assert not w[[1, 3]].any(), "er is unknown in crop 9"
            outside += int((expected_mask[0] == 0).sum())
    assert seen == set(CROPS), f"batches came only from {seen}"
    assert outside > 0, "some batches should reach outside the crops"


@pytest.mark.parametrize(
    ("raw_roi", "centres"),
    [
        # no raw: every labelled voxel ([4, 12) x [-8, 4), 4 nm) can be the centre
        (None, {(y, x) for y in (4, 8) for x in (-8, -4, 0)}),
        # raw context [-20, 32): shifts within [-12, 0] keep it inside [-32, 32)
        (Roi((-20, -20), (52, 52)), {(4, x) for x in (-8, -4, 0)}),
    ],
)
def test_centres_uniform_over_labelled_voxels(tmp_path, raw_roi, centres):
    write_volume(tmp_path / "c.zarr", "raw", np.ones((16, 16), np.uint8), (4, 4), (-32, -32))
    write_volume(tmp_path / "c.zarr", "mito", np.ones((2, 3), np.uint8), (4, 4), (4, -8))
    sample = Sample(tmp_path / "c.zarr/raw", {"mito": tmp_path / "c.zarr/mito"}, ["mito"], (4, 4))
    raw, gt, shift = gp.ArrayKey("RAW"), gp.ArrayKey("GT"), gp.ArrayKey("SHIFT")
    pipeline = SampleSource(sample, raw, gt) + RandomLabelledLocation(sample, shift)
    counts: dict[tuple[int, ...], int] = {}
    draws = 60 * len(centres)
    with gp.build(pipeline):
        for seed in range(draws):
            request = gp.BatchRequest(random_seed=seed)
            request[gt] = gp.ArraySpec(roi=Roi((0, 0), (12, 12)))  # centre voxel at (4, 4)
            request[shift] = gp.ArraySpec(nonspatial=True)
            if raw_roi is not None:
                request[raw] = gp.ArraySpec(roi=raw_roi)
            batch = pipeline.request_batch(request)
            assert batch[gt].data[0, 1, 1] == 1
            assert batch[gt].spec.roi == Roi((0, 0), (12, 12))
            centre = tuple(int(c) for c in Coordinate(4, 4) + Coordinate(batch[shift].data))
            counts[centre] = counts.get(centre, 0) + 1
    assert set(counts) == centres
    # about 60 draws each (binomial standard deviation < 8)
    assert all(30 <= n <= 90 for n in counts.values()), counts


def test_request_that_cannot_be_placed(tmp_path):
    fixture = write_cellmap_fixture(tmp_path, **GEOMETRIES["2d"])
    sample = Sample(fixture.raw_path, fixture.label_paths("crop7"), CHANNELS, fixture.voxel_size)
    raw, gt = gp.ArrayKey("RAW"), gp.ArrayKey("GT")
    pipeline = SampleSource(sample, raw, gt) + RandomLabelledLocation(sample)
    request = gp.BatchRequest(random_seed=0)
    request[raw] = gp.ArraySpec(roi=Roi((0, 0), (400, 400)))  # larger than the raw volume
    with gp.build(pipeline), pytest.raises(gp.PipelineRequestError, match="no labelled voxel"):
        pipeline.request_batch(request)
