"""Every sample checked before the first batch: crops at, across and beyond
the raw volume's edge, the worst augmentation growth, unusable samples
listed at once, and no batch failing on the data's geometry."""

from __future__ import annotations

import dataclasses
import logging

import gunpowder as gp
import numpy as np
import pytest
from funlib.geometry import Coordinate, Roi

from gp_hotdistance.data import write_volume
from gp_hotdistance.torch.dataset import augmented_axes
from gp_hotdistance.torch.inference import input_shape_for
from pipelines.batches import Keys, build_data_pipeline, make_dataset, open_data
from pipelines.common import make_model, make_predictor, open_sample
from pipelines.config import ConfigError, from_dict
from pipelines.data_report import augmentation_growth, describe_data, request_reach


class RecordingSource(gp.BatchProvider):
    """Zeros over all of space; remembers the ROI of every request."""

    def __init__(self, key, voxel_size):
        self.key, self.voxel_size, self.rois = key, Coordinate(voxel_size), []

    def setup(self):
        dims = self.voxel_size.dims
        self.provides(
            self.key,
            gp.ArraySpec(
                roi=Roi((None,) * dims, (None,) * dims),
                voxel_size=self.voxel_size,
                dtype=np.float32,
                interpolatable=True,
            ),
        )

    def provide(self, request):
        roi = request[self.key].roi
        self.rois.append(roi)
        batch = gp.Batch()
        spec = self.spec[self.key].copy()
        spec.roi = roi
        batch[self.key] = gp.Array(np.zeros(roi.shape / self.voxel_size, np.float32), spec)
        return batch


@pytest.mark.parametrize(
    ("voxel_size", "shape"),
    [((8, 8), (30, 44)), ((8, 8, 8), (12, 16, 20)), ((40, 8, 8), (6, 26, 20))],
)
def test_augmentation_growth_bounds_what_the_augmentations_request(voxel_size, shape):
    """Over 40 seeds, the ROI the pipeline's ElasticAugment + SimpleAugment
    ask upstream for stays inside the request grown by augmentation_growth
    (a non-square request: transposition swaps its sides)."""
    dims = len(shape)
    config = from_dict({"model": {"output_shape": [8] * dims, "downsample_factors": [[2] * dims]}})
    voxel_size, shape = Coordinate(voxel_size), Coordinate(shape)
    growth = augmentation_growth(config, voxel_size, shape)
    key = gp.ArrayKey("RAW")
    source = RecordingSource(key, voxel_size)
    transposed, plane = augmented_axes(voxel_size)
    assert config.training.augment
    pipeline = source
    if plane:
        pipeline += gp.ElasticAugment(
            (8,) * plane, (1.0,) * plane, (0, np.pi / 8), spatial_dims=plane
        )
        pipeline += gp.SimpleAugment(transpose_only=transposed)
    else:
        pipeline += gp.SimpleAugment(transpose_only=[])
    requested = Roi(Coordinate((0,) * shape.dims), shape * voxel_size)
    allowed = requested.grow(growth * voxel_size, growth * voxel_size)
    with gp.build(pipeline):
        for seed in range(40):
            request = gp.BatchRequest(random_seed=seed)
            request[key] = gp.ArraySpec(roi=requested)
            pipeline.request_batch(request)
    assert all(allowed.contains(roi) for roi in source.rois), (growth, source.rois)
    # and not by much: the rotation alone needs most of it
    reached = [max(requested.begin[a] - r.begin[a] for r in source.rois) for a in range(shape.dims)]
    assert all(g * v - r <= 6 * v for g, v, r in zip(growth, voxel_size, reached, strict=True))


V = Coordinate(8, 8)
V3 = Coordinate(8, 8, 8)
RAW_SHAPE = (64, 64)
RAW_OFFSET = Coordinate(-16, 24)


@pytest.fixture(scope="module")
def edges(tmp_path_factory):
    """A raw volume (64 x 64 voxels of 8 nm at a negative offset) and crops
    (labels at 4 nm): at its corner, half across its far edge, wholly
    beyond it, and well inside."""
    root = tmp_path_factory.mktemp("edges") / "c.zarr"
    rng = np.random.default_rng(0)
    raw = rng.integers(1, 256, RAW_SHAPE, dtype=np.uint8)
    write_volume(root, "raw", raw, V, RAW_OFFSET)
    end = RAW_OFFSET + Coordinate(RAW_SHAPE) * V
    boxes = {
        "corner": (RAW_OFFSET, (16, 16)),
        "across": (end - Coordinate(4, 4) * V, (16, 16)),
        "beyond": (end + V, (8, 8)),
        "inside": (RAW_OFFSET + V * 26, (24, 24)),
    }
    paths = {}
    for name, (offset, shape) in boxes.items():
        labels = (rng.random(shape) < 0.4).astype(np.uint8)
        write_volume(root, f"crops/{name}/mito", labels, V / 2, offset)
        paths[name] = str(root / "crops" / name / "mito")
    return {"raw": str(root / "raw"), "labels": paths, "raw_array": raw}


def config_for(edges, crops, **data):
    return from_dict(
        {
            "channels": ["mito"],
            "scale_factor": 16.0,
            "data": {
                "voxel_size": list(V),
                "samples": [
                    {"raw": edges["raw"], "labels": {"mito": edges["labels"][c]}} for c in crops
                ],
                **data,
            },
            "model": {"num_fmaps": 2, "downsample_factors": [[2, 2]], "output_shape": [12, 12]},
            "training": {"num_workers": 0, "augment": True, "batch_size": 1},
        }
    )


def test_unusable_samples_are_listed_at_once_then_skipped_on_request(edges, caplog):
    config = config_for(edges, ["corner", "beyond", "inside", "beyond"])
    with pytest.raises(ConfigError) as error:
        open_data(config)
    text = str(error.value)
    assert "2 sample(s) cannot be used (set data.skip_unusable: true to skip them)" in text
    for index in (1, 3):
        assert (
            f"data.samples[{index}] (raw {edges['raw']}, labels.mito {edges['labels']['beyond']}): "
            in text
        )
    assert text.count("no labelled voxels at voxel size (8, 8): the labels") == 2
    assert "lie wholly outside the raw volume's ROI" in text
    values = config.to_dict()
    values["data"]["skip_unusable"] = True
    with caplog.at_level(logging.WARNING):
        data = open_data(from_dict(values))
    assert data.where == ["data.samples[0]", "data.samples[2]"]
    assert len(data.skipped) == 2 and "skipping unusable sample data.samples[1]" in caplog.text


def test_dataset_errors_name_the_config_sample_after_a_skipped_one(edges):
    """With data.samples[0] skipped, the second opened sample is the config's
    data.samples[2]: an error about it names that index and its paths."""
    config = config_for(edges, ["beyond", "corner", "inside"], skip_unusable=True)
    data = open_data(config)
    assert data.where == ["data.samples[1]", "data.samples[2]"]
    coarse = open_sample(config, config.data.samples[2], "data.samples[2]", voxel_size=[16, 16])
    mixed = dataclasses.replace(data, samples=[data.samples[0], coarse])
    output_shape = Coordinate(config.model.output_shape)
    with pytest.raises(ConfigError) as error:
        make_dataset(config, mixed, output_shape + 8, output_shape)
    assert str(error.value) == (
        f"data.samples[2] (raw {edges['raw']}, labels.mito {edges['labels']['inside']}) "
        "is at voxel size (16, 16), not (8, 8)"
    )


def test_every_missing_path_is_reported_at_once(edges, tmp_path):
    config = config_for(
        edges,
        ["corner"],
        eval=[{"raw": str(tmp_path / "no_raw"), "labels": {"mito": str(tmp_path / "no_mito")}}],
    )
    values = config.to_dict()
    values["data"]["samples"].append({"raw": edges["raw"], "labels": "x/[mito]", "mask": "m"})
    with pytest.raises(ConfigError) as error:
        open_data(from_dict(values))
    assert str(error.value).splitlines() == [
        "4 data path(s) do not exist:",
        "  data.samples[1].labels.mito: x/mito",
        "  data.samples[1].mask: m",
        f"  data.eval[0].raw: {tmp_path / 'no_raw'}",
        f"  data.eval[0].labels.mito: {tmp_path / 'no_mito'}",
    ]


def test_crops_at_and_across_the_raw_edge_never_fail_a_batch(edges):
    """Labels beyond the raw volume are unknown (mask 0); the report says
    which samples read zeros beyond their raw volume; with elastic
    augmentation, 60 seeded batches from crops at the raw's corner, across
    its edge and inside it all arrive."""
    config = config_for(edges, ["corner", "across", "inside"])
    data = open_data(config)
    across = data.samples[1]
    raw_roi = Roi(RAW_OFFSET, Coordinate(RAW_SHAPE) * V)
    assert across.raw_roi == raw_roi
    assert across.labelled_rois["mito"] == Roi(raw_roi.end - V * 4, V * 4)  # cut to the raw
    gt, mask = across.read_labels(Roi(raw_roi.end - V * 4, V * 8))
    assert mask[0, :4, :4].all() and not mask[0, 4:].any() and not mask[0, :, 4:].any()
    model = make_model(config, make_predictor(config))
    output_shape = Coordinate(config.model.output_shape)
    input_shape = Coordinate(input_shape_for(model, output_shape))
    below, above = request_reach(config, V, input_shape)
    report = describe_data(config, data, input_shape)
    report = report[report.index(next(r for r in report if r.startswith("geometry"))) :]
    assert "1 of 3 training samples fit it" in report[0]
    assert [line.split(" (")[0].strip() for line in report[1:]] == [
        "data.samples[0]",
        "data.samples[1]",
    ]
    low, high = data.samples[0].raw_padding(below, above)
    assert tuple(low) == tuple(b // v for b, v in zip(below, V, strict=True)) and not any(high)
    keys = Keys.create(config)
    pipeline, request, _ = build_data_pipeline(config, data, keys, input_shape, output_shape, 0)
    seen = set()
    with gp.build(pipeline):
        for seed in range(60):
            seeded = gp.BatchRequest(random_seed=seed)
            for key, spec in request.items():
                seeded[key] = spec.copy()
            batch = pipeline.request_batch(seeded)
            seen.add(int(batch[keys.sample].data[0]))
    assert seen == {0, 1, 2}


def test_3d_crops_at_the_faces_of_anisotropic_raw_never_fail_an_item(tmp_path):
    """The torch dataset training draws from: crops of the challenge-style
    collection (raw at 16x8x8 and 16 nm read at 8 nm, crops at the raw's
    faces among them), elastic augmentation on, 24 items from 3 seeds."""
    from gp_hotdistance.torch import HotDistanceDataset
    from tests.collection import write_collection

    collection = write_collection(tmp_path / "data", crops=9, classes=3, seed=2)
    samples = [
        {"raw": str(collection.raw_path(key.split("/")[0])), "labels": collection.label_paths(key)}
        for key in collection.crops
    ]
    config = from_dict(
        {
            "channels": collection.classes,
            "scale_factor": 16.0,
            "data": {"voxel_size": [8, 8, 8], "samples": samples},
            "model": {"num_fmaps": 2, "downsample_factors": [[2, 2, 2]], "output_shape": [8, 8, 8]},
        }
    )
    data = open_data(config)
    assert {tuple(s.raw.voxel_size) for s in data.samples} == {(8, 8, 8), (16, 8, 8), (16, 16, 16)}
    faces = [s for s in data.samples if any(s.labelled_roi.begin[a] == 0 for a in range(3))]
    assert faces  # some crops touch the raw volume's first faces
    model = make_model(config, make_predictor(config))
    input_shape = input_shape_for(model, (8, 8, 8))
    for seed in range(3):
        dataset = HotDistanceDataset(
            data.samples, make_predictor(config), V3, input_shape, (8, 8, 8), seed=seed
        )
        items = iter(dataset)
        for _ in range(8):
            item = next(items)
            assert item["raw"].shape == (1, *input_shape)
            assert item["target"].shape == (6, 8, 8, 8)
