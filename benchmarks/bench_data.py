"""Batches per second of the training data pipeline on CellMap-style data.

The pipeline of ``pipelines.batches.build_data_pipeline`` without the
network (samples -> RandomLabelledLocation -> RandomProvider -> augmentations
-> TargetNode -> DistanceMaskNode -> PreCache -> WeightNode -> Stack) for a
3-D, 3-class config (mito, er, nucleus) at 8 nm, labels at 4 nm (strict
majority downsampling on every read), a 64^3 output and the raw input of the
demo's UNet for it, with PreCache workers 0, 1 and 2. The data is
:func:`pipelines.demo_data.make_cellmap_demo` (two training crops, one with
the last class unknown), written once into ``--data``.

Beside it, the path training takes: ``pipelines.batches.make_dataset``
(``HotDistanceDataset``: the same pipeline up to ``DistanceMaskNode``) in a
``DataLoader`` with 0, 1 and 2 worker processes, each batch balanced by
``BalancedWeights`` in this process: the same batch size, augmentation and
request shapes, so the two figures compare batches with the same arrays.

    PYTHONPATH=. python benchmarks/bench_data.py
    PYTHONPATH=. python benchmarks/bench_data.py --batches 5 --workers 0   # quick
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import gunpowder as gp
from funlib.geometry import Coordinate

from gp_hotdistance.torch import BalancedWeights
from gp_hotdistance.torch.inference import input_shape_for
from pipelines.batches import Keys, build_data_pipeline, make_dataset, make_loader, open_data
from pipelines.common import make_model, make_predictor
from pipelines.config import from_dict
from pipelines.demo_data import CROP_BOXES, CROPS_PATH, make_cellmap_demo

CLASSES = ("mito", "er", "nucleus")
VOXEL_SIZE = (8, 8, 8)
OUTPUT_SHAPE = (64, 64, 64)


def config_for(demo, augment: bool):
    return from_dict(
        {
            "channels": list(CLASSES),
            "scale_factor": 50.0,
            "data": demo.data_section(),
            "model": {
                "num_fmaps": 12,
                "downsample_factors": [[2, 2, 2], [2, 2, 2]],
                "output_shape": list(OUTPUT_SHAPE),
            },
            "training": {"augment": augment, "cache_size": 8},
        }
    )


def throughput(config, workers: int, batches: int, warmup: int) -> float:
    data = open_data(config)
    model = make_model(config, make_predictor(config))
    output_shape = Coordinate(OUTPUT_SHAPE)
    input_shape = Coordinate(input_shape_for(model, output_shape))
    keys = Keys.create(config)
    pipeline, request, _ = build_data_pipeline(
        config, data, keys, input_shape, output_shape, workers
    )
    with gp.build(pipeline):
        for _ in range(warmup):
            pipeline.request_batch(request)
        began = time.perf_counter()
        for _ in range(batches):
            pipeline.request_batch(request)
        return batches / (time.perf_counter() - began)


def loader_throughput(config, workers: int, batches: int, warmup: int) -> float:
    values = config.to_dict()
    values["training"]["num_workers"] = workers
    config = from_dict(values)
    data = open_data(config)
    predictor = make_predictor(config)
    model = make_model(config, predictor)
    output_shape = Coordinate(OUTPUT_SHAPE)
    input_shape = Coordinate(input_shape_for(model, output_shape))
    balanced = BalancedWeights(predictor)
    loader = iter(make_loader(config, make_dataset(config, data, input_shape, output_shape)))
    for _ in range(warmup):
        batch = next(loader)
        balanced(batch["target"], batch["mask"], batch["distance_mask"])
    began = time.perf_counter()
    for _ in range(batches):
        batch = next(loader)
        balanced(batch["target"], batch["mask"], batch["distance_mask"])
    rate = batches / (time.perf_counter() - began)
    del loader  # ends the workers
    return rate


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="runs/bench_data/demo_data.zarr")
    parser.add_argument("--raw-shape", type=int, nargs=3, default=(192, 192, 192))
    parser.add_argument("--batches", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--no-augment", action="store_true")
    args = parser.parse_args()
    path = Path(args.data)
    kwargs = dict(raw_shape=args.raw_shape, voxel_size=VOXEL_SIZE, classes=CLASSES, dims=3)
    last = path / CROPS_PATH / list(CROP_BOXES)[-1] / CLASSES[-1] / "s0"
    began = time.perf_counter()
    demo = make_cellmap_demo(path, write=not last.exists(), **kwargs)
    print(
        f"data: {path} (raw {tuple(args.raw_shape)} at {VOXEL_SIZE} nm, labels at "
        f"{demo.label_voxel_size} nm; {time.perf_counter() - began:.1f} s to open or write)"
    )
    config = config_for(demo, augment=not args.no_augment)
    print(
        f"output {OUTPUT_SHAPE} voxels, {len(CLASSES)} classes, augment {not args.no_augment}, "
        f"{args.batches} batches after {args.warmup} warm-up"
    )
    for workers in args.workers:
        load = os.getloadavg()[0]
        rate = throughput(config, workers, args.batches, args.warmup)
        print(f"PreCache workers {workers}: {rate:.2f} batches/s (load average before: {load:.2f})")
        load = os.getloadavg()[0]
        loader = loader_throughput(config, workers, args.batches, args.warmup)
        print(
            f"DataLoader workers {workers}: {loader:.2f} batches/s, {loader / rate:.2f}x PreCache "
            f"(load average before: {load:.2f})"
        )
    print(f"cpu count {os.cpu_count()}, load average now {os.getloadavg()}")


if __name__ == "__main__":
    main()
