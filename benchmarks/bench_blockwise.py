"""Throughput of blockwise targets (``pipelines.blockwise``) for 1 and 2 daisy workers.

    PYTHONPATH=. python benchmarks/bench_blockwise.py                 # 256 x 512 x 512
    PYTHONPATH=. python benchmarks/bench_blockwise.py --shape 64 256 256

Writes a synthetic class-id volume (2 classes, blobs of ~10 voxels, a mask
with an unannotated box) into a temporary zarr container, then runs the
``targets`` job once per worker count into a fresh output and prints voxels
per second (volume voxels / wall time of the daisy run, worker start-up
included) and the scaling between the worker counts. Each worker gets
``cores // workers`` numba threads, as the command line does by default
(so 1 worker already uses every core); ``--threads-per-worker 1`` measures
scaling by processes alone.
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
from funlib.persistence import prepare_ds
from scipy import ndimage

from gp_hotdistance import HotDistancePredictor
from pipelines import blockwise as bw


def make_volume(path: Path, shape: tuple[int, ...], voxel_size: tuple[int, ...], seed: int = 0):
    """Class ids 0/1/2 from thresholded smooth noise, plus a mask; written slab by slab."""
    rng = np.random.default_rng(seed)
    gt = prepare_ds(
        str(path / "gt"),
        shape=shape,
        voxel_size=voxel_size,
        axis_names=["z", "y", "x"],
        chunk_shape=(64, 64, 64),
        dtype=np.uint8,
        mode="w",
    )
    mask = prepare_ds(
        str(path / "mask"),
        shape=shape,
        voxel_size=voxel_size,
        axis_names=["z", "y", "x"],
        chunk_shape=(64, 64, 64),
        dtype=np.uint8,
        mode="w",
    )
    slab = 64
    for z in range(0, shape[0], slab):
        depth = min(slab, shape[0] - z)
        noise = ndimage.gaussian_filter(rng.normal(size=(depth, *shape[1:])).astype(np.float32), 3)
        noise /= noise.std()
        labels = np.zeros(noise.shape, dtype=np.uint8)
        labels[noise > 1.0] = 1
        labels[noise < -1.3] = 2
        gt._source_data[z : z + depth] = labels
        box = np.ones(labels.shape, dtype=np.uint8)
        if z == 0:
            box[: depth // 2, : shape[1] // 4, : shape[2] // 4] = 0
        mask._source_data[z : z + depth] = box


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shape", type=int, nargs=3, default=[256, 512, 512], help="voxels")
    parser.add_argument("--block-shape", type=int, nargs=3, default=[64, 128, 128], help="voxels")
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument(
        "--threads-per-worker", type=int, help="numba threads per worker (default cores // workers)"
    )
    parser.add_argument("--scale-factor", type=float, default=40.0, help="world units")
    parser.add_argument("--dir", help="working directory (default: a temporary one, removed)")
    args = parser.parse_args()

    voxel_size = (8, 8, 8)
    work = Path(args.dir) if args.dir else Path(tempfile.mkdtemp(prefix="bench_blockwise_"))
    try:
        data = work / "data.zarr"
        make_volume(data, tuple(args.shape), voxel_size)
        predictor = HotDistancePredictor(["a", "b"], args.scale_factor, mask_distances=True)
        voxels = int(np.prod(args.shape))
        print(
            f"volume {tuple(args.shape)} ({voxels / 1e6:.1f} M voxels), blocks "
            f"{tuple(args.block_shape)}, context {args.scale_factor:g} world units, "
            f"{os.cpu_count()} cores"
        )
        rates = {}
        for workers in args.workers:
            output = work / f"out_{workers}.zarr"
            job = bw.plan_targets(
                data / "gt",
                output,
                predictor,
                args.block_shape,
                mask=data / "mask",
                num_workers=workers,
                threads=args.threads_per_worker,
            )
            report = bw.run_job(job, num_workers=workers, progress=False)
            rates[workers] = report.voxels_per_second
            print(
                f"workers {workers}: {report.blocks} blocks in {report.seconds:.1f} s, "
                f"{report.voxels_per_second / 1e6:.2f} M voxels/s "
                f"({job.threads} threads per worker)"
            )
            shutil.rmtree(output, ignore_errors=True)
        base = args.workers[0]
        for workers in args.workers[1:]:
            print(
                f"scaling {base} -> {workers} workers: {rates[workers] / rates[base]:.2f}x "
                f"(ideal {workers / base:.0f}x)"
            )
    finally:
        if not args.dir:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
