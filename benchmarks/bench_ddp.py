"""Time of a training step with 1 and with 2 torchrun processes on the CPU.

Runs ``python -m pipelines.train`` under ``torch.distributed.run
--standalone --nproc_per_node N`` (gloo, DistributedDataParallel) for N = 1
and 2 on the 2-D CellMap-style demo with the default model (12 feature maps,
two levels, 64^2 output), ``--batch-size`` samples per process and
``--workers`` DataLoader workers per process, and reads rank 0's profile
lines (``training.profile_every``): seconds per iteration waiting for data
and stepping (forward, backward, gradient all-reduce, class-count gather,
Adam). The first profile window is warm-up and left out. Every process
runs ``--threads`` intra-op threads (``OMP_NUM_THREADS``, default 1, what
torchrun sets for N > 1), so both runs compute alike and the 2-process run
may use two cores.

    PYTHONPATH=. python benchmarks/bench_ddp.py
    PYTHONPATH=. python benchmarks/bench_ddp.py --iterations 20 --window 5   # quick
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

PROFILE = re.compile(r"iterations to (\d+): ([\d.]+) s waiting for data, ([\d.]+) s per step")


def rank_main(argv: list[str]) -> int:
    """One torchrun process: ``pipelines.train.main`` with its profile lines
    (INFO) on stderr."""
    import torch

    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from pipelines import train as train_module

    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("pipelines.train").setLevel(logging.INFO)
    if os.environ.get("RANK", "0") == "0":
        print(f"threads per process: {torch.get_num_threads()}", file=sys.stderr, flush=True)
    return train_module.main(argv)


def run(
    processes: int, config: Path, out: Path, threads: int
) -> tuple[list[tuple[float, float]], str]:
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone"]
    command += ["--nproc_per_node", str(processes), __file__, "--rank-main"]
    command += ["--config", str(config), "--out", str(out), "--quiet"]
    root = Path(__file__).resolve().parents[1]
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    done = subprocess.run(command, cwd=root, env=env, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"{processes} processes failed:\n{done.stderr[-3000:]}")
    windows = [(float(w), float(s)) for _, w, s in PROFILE.findall(done.stderr)]
    threads = re.search(r"threads per process: (\d+)", done.stderr)
    return windows, threads.group(1) if threads else "?"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iterations", type=int, default=60)
    parser.add_argument("--window", type=int, default=20, help="iterations per profile line")
    parser.add_argument("--batch-size", type=int, default=2, help="samples per process")
    parser.add_argument("--workers", type=int, default=1, help="DataLoader workers per process")
    parser.add_argument("--processes", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--threads", type=int, default=1, help="intra-op threads per process")
    args = parser.parse_args()
    from pipelines.demo_data import make_cellmap_demo

    with tempfile.TemporaryDirectory() as tmp:
        demo = make_cellmap_demo(Path(tmp) / "demo_data.zarr")
        config = {
            "data": demo.data_section(),
            "training": {
                "iterations": args.iterations,
                "batch_size": args.batch_size,
                "num_workers": args.workers,
                "profile_every": args.window,
                "save_every": args.iterations,
                "snapshot_every": args.iterations,
            },
        }
        path = Path(tmp) / "config.json"
        path.write_text(json.dumps(config))
        print(
            f"2-D demo, default model, {args.batch_size} samples and {args.workers} DataLoader "
            f"worker(s) per process, {args.iterations} iterations, profile every {args.window}"
        )
        per_step = {}
        for processes in args.processes:
            load = os.getloadavg()[0]
            began = time.perf_counter()
            windows, threads = run(processes, path, Path(tmp) / f"run{processes}", args.threads)
            measured = windows[1:] or windows
            wait = sum(w for w, _ in measured) / len(measured)
            step = sum(s for _, s in measured) / len(measured)
            per_step[processes] = wait + step
            samples = processes * args.batch_size / (wait + step)
            print(
                f"{processes} process(es), {threads} thread(s) each: {wait + step:.3f} s per "
                f"iteration ({wait:.3f} waiting for data, {step:.3f} stepping), "
                f"{samples:.2f} samples/s; whole run {time.perf_counter() - began:.0f} s "
                f"(load average before: {load:.2f})"
            )
        if 1 in per_step:
            for processes, seconds in per_step.items():
                if processes != 1:
                    print(
                        f"ratio: a {processes}-process step takes {seconds / per_step[1]:.2f}x "
                        f"a 1-process step and trains {processes}x the samples"
                    )
    print(f"cpu count {os.cpu_count()}, load average now {os.getloadavg()}")


if __name__ == "__main__":
    if "--rank-main" in sys.argv:
        sys.argv.remove("--rank-main")
        sys.exit(rank_main(sys.argv[1:]))
    main()
