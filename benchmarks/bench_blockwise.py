"""Throughput of blockwise targets (``pipelines.blockwise``) for 1 and 2 daisy workers.

    PYTHONPATH=. python benchmarks/bench_blockwise.py                 # 256 x 512 x 512
    PYTHONPATH=. python benchmarks/bench_blockwise.py --shape 64 256 256
    PYTHONPATH=. python benchmarks/bench_blockwise.py --threads-per-worker 1

Writes a synthetic class-id volume (2 classes, blobs of ~10 voxels, a mask
with an unannotated box) into a temporary zarr container, then runs the
``targets`` job once per worker count into a fresh output and prints voxels
per second (volume voxels / wall time of the daisy run, worker start-up
included) and the scaling between the worker counts. Each worker gets
``cores // workers`` numba threads, as the command line does by default
(so 1 worker already uses every core); ``--threads-per-worker 1`` measures
scaling by processes alone.

Then it splits the time of a few blocks into read, compute and write (in
this process, numba threads as one worker of the largest count), and
measures the compute kernel alone (``predictor.process`` plus
``create_distance_mask`` on an in-memory block, no I/O) in 1 and in 2
processes at once, each pinned to one core (``--kernel-only``: this part
alone): if two kernels in parallel are
not twice as fast as one, the machine (cores shared with other work,
memory bandwidth) bounds the scaling of the workers. Load averages are
printed beside the numbers.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from funlib.persistence import prepare_ds
from scipy import ndimage

from gp_hotdistance.predictor import HotDistancePredictor
from pipelines import blockwise as bw

KERNEL = """
import os, sys, time
import numpy as np
from scipy import ndimage
from gp_hotdistance.predictor import HotDistancePredictor
shape, repeats = tuple(int(s) for s in sys.argv[1:4]), int(sys.argv[4])
os.sched_setaffinity(0, {int(sys.argv[5])})  # one core: the kernels use the cores they may
rng = np.random.default_rng(0)
noise = ndimage.gaussian_filter(rng.normal(size=shape).astype(np.float32), 3)
labels = (noise > 1.0 * noise.std()).astype(np.uint8) + 2 * (noise < -1.3 * noise.std())
predictor = HotDistancePredictor(["a", "b"], 40.0, mask_distances=True)
mask = np.ones(shape, dtype=np.uint8)
def kernel():
    target = predictor.process(labels, (8, 8, 8))
    predictor.create_distance_mask(target[2:], mask, (8, 8, 8))
kernel()  # compile / load numba's cache
print("ready", flush=True)
sys.stdin.readline()
started = time.perf_counter()
for _ in range(repeats):
    kernel()
print(time.perf_counter() - started, flush=True)
"""


def kernel_throughput(processes: int, shape: tuple[int, ...], repeats: int) -> float:
    """Voxels per second of ``processes`` concurrent kernel processes, each
    computing ``repeats`` blocks of ``shape`` in memory on a core of its own
    (the kernels' thread count follows the process's CPU affinity)."""
    env = {**os.environ, "NUMBA_NUM_THREADS": "1", "PYTHONPATH": os.pathsep.join(sys.path)}
    cores = sorted(os.sched_getaffinity(0))
    args = [sys.executable, "-c", KERNEL, *map(str, shape), str(repeats)]
    procs = [
        subprocess.Popen(
            [*args, str(cores[i % len(cores)])],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env=env,
        )
        for i in range(processes)
    ]
    for proc in procs:  # all set up before any starts timing
        assert proc.stdout.readline().strip() == "ready"
    started = time.perf_counter()
    for proc in procs:
        proc.stdin.write("go\n")
        proc.stdin.flush()
    for proc in procs:
        proc.stdout.readline()
        proc.wait()
    seconds = time.perf_counter() - started
    return processes * repeats * int(np.prod(shape)) / seconds


def block_split(job: bw.TargetsJob, count: int) -> dict[str, float]:
    """Mean seconds per block spent reading, computing and writing, over the
    first ``count`` blocks of ``job`` (run in this process)."""
    from funlib.geometry import Coordinate, Roi

    totals = {"read": 0.0, "compute": 0.0, "write": 0.0}
    job._set_threads()
    for index in range(count):
        offset = job.volume_roi.offset + job.block_size * Coordinate(0, 0, index)
        write = Roi(offset, job.block_size).intersect(job.volume_roi)
        for key, seconds in job.process(write).items():
            totals[key] += seconds / count
    return totals


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
    parser.add_argument("--kernel-only", action="store_true", help="only the kernel part")
    parser.add_argument("--split-blocks", type=int, default=2, help="blocks timed per phase")
    parser.add_argument("--kernel-repeats", type=int, default=3, help="blocks per kernel process")
    args = parser.parse_args()

    voxel_size = (8, 8, 8)
    work = Path(args.dir) if args.dir else Path(tempfile.mkdtemp(prefix="bench_blockwise_"))
    try:
        data = work / "data.zarr"
        if args.kernel_only:
            args.workers = []
        else:
            make_volume(data, tuple(args.shape), voxel_size)
        predictor = HotDistancePredictor(["a", "b"], args.scale_factor, mask_distances=True)
        voxels = int(np.prod(args.shape))
        print(
            f"volume {tuple(args.shape)} ({voxels / 1e6:.1f} M voxels), blocks "
            f"{tuple(args.block_shape)}, context {args.scale_factor:g} world units, "
            f"{os.cpu_count()} cores, load average {os.getloadavg()[0]:.2f}"
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
                f"({job.threads} threads per worker, load average {os.getloadavg()[0]:.2f})"
            )
            if workers == args.workers[-1]:
                split = block_split(job, args.split_blocks)
                total = sum(split.values())
                print(
                    f"per block (mean of {args.split_blocks}, {job.threads} threads): "
                    + ", ".join(f"{k} {v:.2f} s ({100 * v / total:.0f}%)" for k, v in split.items())
                )
            shutil.rmtree(output, ignore_errors=True)
        for workers in args.workers[1:]:
            base = args.workers[0]
            print(
                f"scaling {base} -> {workers} workers: {rates[workers] / rates[base]:.2f}x "
                f"(ideal {workers / base:.0f}x)"
            )
        kernel_shape = tuple(b + 2 * 5 for b in args.block_shape)  # block plus its context
        rates = {n: kernel_throughput(n, kernel_shape, args.kernel_repeats) for n in (1, 2)}
        print(
            f"kernel alone, no I/O, block {kernel_shape} with context: "
            f"1 process {rates[1] / 1e6:.2f} M voxels/s, 2 processes {rates[2] / 1e6:.2f} M "
            f"voxels/s, scaling {rates[2] / rates[1]:.2f}x "
            f"(load average {os.getloadavg()[0]:.2f})"
        )
    finally:
        if not args.dir:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
