"""The training data pipeline of any config: start-up, memory, batches/s
and the time of each node.

The pipeline is ``pipelines.batches.build_data_pipeline`` without the
network (samples -> RandomLabelledLocation -> RandomProvider -> augmentations
-> TargetNode -> DistanceMaskNode -> PreCache -> WeightNode -> Stack), with
the config's channels, voxel size, output shape, batch size and model (its
input shape). For each config it prints

- start-up: a fresh ``python`` process loading the config, opening every
  sample, building the pipeline and drawing one batch, timed from the
  process's start to that first batch (best of ``--startup-runs``), with the
  phases inside it and the process's peak resident memory at that point
  (before any training), and the ratio to the first config's;
- for the last config: batches/s with PreCache workers 0, 1, 2, beside the
  path training takes (``pipelines.batches.make_dataset``, a
  ``HotDistanceDataset`` in a ``DataLoader`` with as many worker processes,
  each batch balanced by ``BalancedWeights`` in this process: the same
  arrays, measured back to back with the ratio), and the mean time per
  batch of each node (gunpowder's profiling, workers 0; the nodes
  upstream of ``ElasticAugment`` are missing from its profiling, so their
  time is printed as the batch time minus the nodes listed).

Configs::

    PYTHONPATH=. python benchmarks/bench_data.py --config a.yaml [b.yaml ...]
    PYTHONPATH=. python benchmarks/bench_data.py --collection runs/bench_collection
    PYTHONPATH=. python benchmarks/bench_data.py   # the 3-class demo, 64^3 output

``--collection DIR`` writes the challenge-style collection of
``tests/collection.py`` (3 datasets at 8, 16x8x8 and 16 nm; 200 crops; 20
classes) into ``DIR`` if ``DIR`` does not exist, splits it with
``python -m pipelines.datasplit`` (all crops, and crops 1-6 alone), writes a
20-class 3-D config at a 64^3 output for each split, and measures both
(6 crops first, the reference, then 200). Without ``--config`` or ``--collection``, the
CellMap-style demo (3 classes) is written into ``--data`` if nothing is
there, and read if a complete demo is.

Nothing is ever deleted or overwritten: an existing ``--data`` that is not a
complete demo, or an existing ``--collection`` folder without its configs,
is refused.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

T0 = time.perf_counter()  # as early as possible: the start-up clock of --startup

CLASSES = ("mito", "er", "nucleus")
VOXEL_SIZE = (8, 8, 8)
OUTPUT_SHAPE = (64, 64, 64)
MODEL = {"num_fmaps": 12, "downsample_factors": [[2, 2, 2], [2, 2, 2]]}
COLLECTION_CONFIGS = ("config_6.yaml", "config_200.yaml")


def peak_rss_mb(who: int = resource.RUSAGE_SELF) -> float:
    """Peak resident memory in MiB (Linux reports KiB)."""
    return resource.getrusage(who).ru_maxrss / 1024


def build(config, workers: int):
    """The config's data pipeline and request (batch size from the config)."""
    from funlib.geometry import Coordinate

    from gp_hotdistance.torch.inference import input_shape_for
    from pipelines.batches import Keys, build_data_pipeline, open_data
    from pipelines.common import make_model, make_predictor

    data = open_data(config)
    model = make_model(config, make_predictor(config))
    output_shape = Coordinate(config.model.output_shape)
    input_shape = Coordinate(input_shape_for(model, output_shape))
    keys = Keys.create(config)
    pipeline, request, _ = build_data_pipeline(
        config, data, keys, input_shape, output_shape, workers
    )
    return data, pipeline, request


def startup(path: str) -> None:
    """Run in a fresh process: load, open, build, draw one batch; print the
    phases (seconds since this process's interpreter started its imports)
    and the peak memory as one JSON line."""
    import gunpowder as gp

    from pipelines.config import load_config

    phases = {"imports": time.perf_counter() - T0}
    config = load_config(path)
    phases["config"] = time.perf_counter() - T0
    data, pipeline, request = build(config, workers=0)
    phases["open and build"] = time.perf_counter() - T0
    with gp.build(pipeline):
        phases["gp.build"] = time.perf_counter() - T0
        pipeline.request_batch(request)
        phases["first batch"] = time.perf_counter() - T0
    report = {
        "phases": phases,
        "peak_rss_mb": peak_rss_mb(),
        "samples": len(data.samples),
        "eval": len(data.eval),
    }
    print(json.dumps(report), flush=True)


def measure_startup(path: str, runs: int) -> dict:
    """Best of ``runs`` fresh processes: wall time from launching the
    process to its first batch, and its report."""
    best = None
    for _ in range(runs):
        began = time.perf_counter()
        result = subprocess.run(
            [sys.executable, __file__, "--startup", path],
            capture_output=True,
            text=True,
            env={**os.environ, "PYTHONPATH": str(Path(__file__).parent.parent)},
            check=False,
        )
        wall = time.perf_counter() - began
        if result.returncode != 0:
            raise SystemExit(f"start-up run of {path} failed:\n{result.stderr[-3000:]}")
        report = json.loads(result.stdout.strip().splitlines()[-1])
        report["wall"] = wall
        if best is None or wall < best["wall"]:
            best = report
    return best


def throughput(config, workers: int, batches: int, warmup: int):
    """Batches/s after ``warmup`` batches, and the profiling stats."""
    import gunpowder as gp

    _, pipeline, request = build(config, workers)
    stats = gp.profiling.ProfilingStats()
    with gp.build(pipeline):
        for _ in range(warmup):
            pipeline.request_batch(request)
        began = time.perf_counter()
        for _ in range(batches):
            batch = pipeline.request_batch(request)
            stats.merge_with(batch.profiling_stats)
        return batches / (time.perf_counter() - began), stats


def loader_throughput(config, workers: int, batches: int, warmup: int) -> float:
    """Batches/s of the DataLoader path (see the module docs)."""
    from funlib.geometry import Coordinate

    from gp_hotdistance.torch import BalancedWeights
    from gp_hotdistance.torch.inference import input_shape_for
    from pipelines.batches import make_dataset, make_loader, open_data
    from pipelines.common import make_model, make_predictor
    from pipelines.config import from_dict

    values = config.to_dict()
    values["training"]["num_workers"] = workers
    config = from_dict(values)
    data = open_data(config)
    predictor = make_predictor(config)
    model = make_model(config, predictor)
    output_shape = Coordinate(config.model.output_shape)
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


def node_times(stats, batches: int) -> tuple[list[str], float]:
    """Mean milliseconds per batch of each node's work (gunpowder names
    ``prepare``/``provide``/``process``), largest first, summed over nodes
    of the same name; and their sum."""
    totals: dict[str, float] = {}
    for (node, method), summary in stats.get_timing_summaries().items():
        name = node if method is None else f"{node}.{method}"
        totals[name] = totals.get(name, 0.0) + float(sum(summary.times))
    ordered = sorted(totals.items(), key=lambda item: -item[1])
    lines = [f"  {name:<40} {1000 * total / batches:9.2f} ms/batch" for name, total in ordered]
    return lines, 1000 * sum(totals.values()) / batches


def demo_config(data: Path, raw_shape, augment: bool) -> Path:
    """The 3-class demo config (written beside ``data``), the demo written
    into ``data`` only if nothing is there."""
    from pipelines.demo_data import CROP_BOXES, CROPS_PATH, make_cellmap_demo

    last = data / CROPS_PATH / list(CROP_BOXES)[-1] / CLASSES[-1] / "s0"
    if data.exists() and not last.exists():
        raise SystemExit(
            f"{data} exists but is not a complete demo; it is left as it is. Pass another --data"
        )
    kwargs = dict(raw_shape=raw_shape, voxel_size=VOXEL_SIZE, classes=CLASSES, dims=3)
    demo = make_cellmap_demo(data, write=not last.exists(), **kwargs)
    values = {
        "channels": list(CLASSES),
        "scale_factor": 50.0,
        "data": demo.data_section(),
        "model": {**MODEL, "output_shape": list(OUTPUT_SHAPE)},
        "training": {"augment": augment, "cache_size": 8},
    }
    path = data.parent / f"bench_data_{'augment' if augment else 'plain'}.json"
    if not path.exists():
        path.write_text(json.dumps(values, indent=2))
    elif json.loads(path.read_text()) != values:
        raise SystemExit(f"{path} exists with other settings; it is left as it is")
    return path


def collection_configs(folder: Path) -> list[Path]:
    """Write the collection, its two splits and configs into ``folder`` if
    it does not exist; return the configs (see the module docs)."""
    configs = [folder / name for name in COLLECTION_CONFIGS]
    if folder.exists():
        if not all(c.exists() for c in configs):
            raise SystemExit(
                f"{folder} exists without {', '.join(COLLECTION_CONFIGS)}; it is left as it is"
            )
        return configs
    sys.path.insert(0, str(Path(__file__).parent.parent))
    from tests.collection import write_collection

    began = time.perf_counter()
    collection = write_collection(folder / "data", crops=200, classes=20)
    print(f"wrote the collection into {folder / 'data'} in {time.perf_counter() - began:.1f} s")
    for config, crops in zip(configs, ("crop[1-6]", "*"), strict=True):
        split = config.with_suffix(".csv")
        command = [
            sys.executable,
            "-m",
            "pipelines.datasplit",
            str(collection.root),
            *("--classes", *collection.classes),
            *("--voxel-size", *map(str, VOXEL_SIZE)),
            *("--crops", crops, "--out", str(split)),
        ]
        print("$", " ".join(command[1:4]), "...", "--crops", repr(crops), "--out", split.name)
        subprocess.run(command, check=True)
        values = {
            "channels": collection.classes,
            "scale_factor": 50.0,
            "data": {"voxel_size": list(VOXEL_SIZE), "datasplit": split.name},
            "model": {**MODEL, "output_shape": list(OUTPUT_SHAPE)},
            "training": {"cache_size": 8},
        }
        config.write_text(json.dumps(values, indent=2))
    return configs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", nargs="+", help="configs to measure (YAML or JSON)")
    parser.add_argument("--collection", help="folder for the 200-crop collection (see above)")
    parser.add_argument("--data", default="runs/bench_data/demo_data.zarr")
    parser.add_argument("--raw-shape", type=int, nargs=3, default=(192, 192, 192))
    parser.add_argument("--batches", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--startup-runs", type=int, default=3)
    parser.add_argument("--no-augment", action="store_true", help="demo only")
    parser.add_argument("--startup", help=argparse.SUPPRESS)  # the child of measure_startup
    args = parser.parse_args()
    if args.startup:
        startup(args.startup)
        return
    if args.config:
        configs = [Path(c) for c in args.config]
    elif args.collection:
        configs = collection_configs(Path(args.collection))
    else:
        configs = [demo_config(Path(args.data), args.raw_shape, not args.no_augment)]
    print(f"cpu count {os.cpu_count()}, load average {os.getloadavg()}")
    reference = None
    for path in configs:
        report = measure_startup(str(path), args.startup_runs)
        reference = reference or report["wall"]
        phases = ", ".join(f"{k} {v:.2f}" for k, v in report["phases"].items())
        print(
            f"{path}: {report['samples']} training samples, {report['eval']} evaluation crops; "
            f"start-up (process start to first batch, best of {args.startup_runs}) "
            f"{report['wall']:.2f} s = {report['wall'] / reference:.2f} x the first config's; "
            f"peak memory before training {report['peak_rss_mb']:.0f} MiB\n"
            f"  seconds since imports began: {phases}"
        )
    from pipelines.config import load_config

    config = load_config(configs[-1])
    print(
        f"{configs[-1]}: output {tuple(config.model.output_shape)} voxels, "
        f"{len(config.channels)} classes, batch size {config.training.batch_size}, augment "
        f"{config.training.augment}; {args.batches} batches after {args.warmup} warm-up"
    )
    for workers in args.workers:
        load = os.getloadavg()[0]
        rate, stats = throughput(config, workers, args.batches, args.warmup)
        print(f"PreCache workers {workers}: {rate:.2f} batches/s (load average before {load:.2f})")
        load = os.getloadavg()[0]
        loader = loader_throughput(config, workers, args.batches, args.warmup)
        print(
            f"DataLoader workers {workers}: {loader:.2f} batches/s, {loader / rate:.2f}x PreCache "
            f"(load average before {load:.2f})"
        )
        if workers == 0:
            lines, listed = node_times(stats, args.batches)
            print("time per batch of each node (workers 0, gunpowder's profiling):")
            print("\n".join(lines))
            print(
                f"  {'sources (the batch time minus the above)':<40} "
                f"{1000 / rate - listed:9.2f} ms/batch"
            )
    print(
        f"peak memory of this process {peak_rss_mb():.0f} MiB, of its workers "
        f"{peak_rss_mb(resource.RUSAGE_CHILDREN):.0f} MiB; load average now {os.getloadavg()}"
    )


if __name__ == "__main__":
    main()
