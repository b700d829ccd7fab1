"""Worker start-up: seconds from spawning a worker process to its first
small targets block done (interpreter start, imports, the job file's HMAC
check and unpickling, the block's read, compute and write, its done
marker), against the reference of spawning a bare ``python -c pass``.

    PYTHONPATH=. python benchmarks/bench_worker_start.py [--repeats 5]

The worker is what a blockwise run starts: a fresh ``python`` that reads
the run's key, checks and unpickles the sealed job file
(:mod:`pipelines.blockwise.jobfile`) and calls ``job(block)``. It also lists which of torch, gunpowder, dask and
funlib.persistence the worker imported. Numba's on-disk cache is warmed
by one block in this process first, as any earlier run on the machine does.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import daisy
from funlib.geometry import Roi

from gp_hotdistance.predictor import HotDistancePredictor
from pipelines import blockwise as bw
from pipelines.blockwise.jobfile import new_secret, write_job
from tests.helpers import write_volumes

WORKER = """
import sys, time
import daisy
from funlib.geometry import Roi
from pipelines.blockwise.jobfile import read_job, read_secret
job = read_job(sys.argv[1], read_secret(sys.argv[3]))
write = Roi(job.volume_roi.offset, job.block_size)
job(daisy.Block(job.volume_roi, write, write))
print(time.time() - float(sys.argv[2]))
print(" ".join(m for m in ("torch", "gunpowder", "dask", "funlib.persistence") if m in sys.modules))
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench_worker_start_") as work:
        work = Path(work)
        data = work / "data.zarr"
        write_volumes(data, (32, 64, 64), (8, 8, 8), (0, 0, 0), seed=0)
        predictor = HotDistancePredictor(["mito", "er"], 40.0, mask_distances=True)
        job = bw.plan_targets(data / "gt", work / "out.zarr", predictor, (16, 32, 32))
        write = Roi(job.volume_roi.offset, job.block_size)
        job(daisy.Block(job.volume_roi, write, write))  # warm numba's on-disk cache
        private = work / "private"
        private.mkdir(mode=0o700)
        job_file, key_file = private / "job.pickle", private / "job.key"
        write_job(job_file, key_file, job, new_secret())
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
        seconds, bare, imported = [], [], ""
        for _ in range(args.repeats):
            started = time.perf_counter()
            subprocess.run([sys.executable, "-c", "pass"], check=True, env=env)
            bare.append(time.perf_counter() - started)
            result = subprocess.run(
                [sys.executable, "-c", WORKER, str(job_file), repr(time.time()), str(key_file)],
                capture_output=True,
                text=True,
                check=True,
                env=env,
            )
            lines = result.stdout.splitlines()
            seconds.append(float(lines[0]))
            imported = lines[1] if len(lines) > 1 else ""
        worker, reference = statistics.median(seconds), statistics.median(bare)
        print(
            f"spawn to first block done: median {worker:.2f} s, "
            f"min {min(seconds):.2f} s over {args.repeats} workers; "
            f"bare interpreter (python -c pass): median {reference:.2f} s; "
            f"ratio {worker / reference:.1f}x; "
            f"imported: {imported or 'none of torch, gunpowder, dask, funlib.persistence'}; "
            f"load average {os.getloadavg()[0]:.2f}"
        )


if __name__ == "__main__":
    main()
