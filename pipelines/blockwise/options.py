"""The run options every ``python -m pipelines.blockwise`` command shares:
their flags, their checks and the :func:`~pipelines.blockwise.run.run_job`
arguments they give."""

from __future__ import annotations

import argparse
from typing import Any

from funlib.geometry import Roi

from pipelines.blockwise.run import check_run_options
from pipelines.blockwise.worker import check_template
from pipelines.config import ConfigError


def add_run_options(parser: argparse.ArgumentParser) -> None:
    """Add the shared flags (inputs, output, blocks, workers, cluster) to ``parser``."""
    parser.add_argument("--input", help="input zarr container (required unless --sample)")
    parser.add_argument(
        "--sample",
        type=int,
        metavar="N",
        help="instead of --input: sample N of the config's data.samples (its raw and labels "
        "read through gp_hotdistance.data.Sample at data.voxel_size)",
    )
    parser.add_argument(
        "--roi-offset",
        type=int,
        nargs="+",
        metavar="W",
        help="with --sample: WORLD offset of the region to process (default: the sample's "
        "labelled ROI)",
    )
    parser.add_argument(
        "--roi-shape", type=int, nargs="+", metavar="W", help="with --sample: WORLD shape"
    )
    parser.add_argument("--output", required=True, help="output zarr container (created if absent)")
    parser.add_argument(
        "--block-shape",
        type=int,
        nargs="+",
        metavar="N",
        help="write block shape in VOXELS, one value per spatial axis",
    )
    parser.add_argument("--workers", type=int, default=1, help="daisy worker processes (default 1)")
    parser.add_argument(
        "--threads-per-worker",
        type=int,
        help="CPU threads per worker (numba / torch); default: cores // workers",
    )
    parser.add_argument(
        "--max-retries", type=int, default=2, help="retries of a failed block (default 2)"
    )
    parser.add_argument(
        "--block-timeout",
        type=float,
        default=600.0,
        help="seconds before a stuck block's worker is killed and the block retried (default 600)",
    )
    parser.add_argument(
        "--worker-command",
        metavar="TEMPLATE",
        help="start each worker with this shell command instead of as a local process, e.g. "
        "'bsub -K -n 2 -o {log} {command}', 'srun --gres=gpu:1 {command}', "
        "'ssh HOST {command}'; {command} is the worker (required), {log} a per-worker log "
        "path, {worker} the worker number. Workers connect back to this process over TCP "
        "(README: Running on a cluster)",
    )
    parser.add_argument(
        "--worker-restarts",
        type=int,
        help="how often workers that exit with an error are restarted before the run is "
        "abandoned (default: daisy's)",
    )
    parser.add_argument(
        "--scheduler-host",
        help="with --worker-command: the address of this machine that the workers connect "
        "to (default 127.0.0.1: workers on this machine); only this address is listened on, "
        "and only workers that prove the run's secret get through (README: Running on a "
        "cluster)",
    )
    parser.add_argument(
        "--worker-start-timeout",
        type=float,
        default=300.0,
        metavar="SECONDS",
        help="a worker command that has not connected within this many seconds (queue "
        "waits included), or has not exited this long after its worker finished, is killed "
        "and reported (default 300)",
    )
    parser.add_argument("--log-dir", help="daisy worker logs (default: <output>.logs)")
    parser.add_argument("--no-progress", action="store_true", help="no daisy progress bar/summary")


def args_roi(args: argparse.Namespace) -> Roi | None:
    """The world ROI of ``--roi-offset``/``--roi-shape`` (both or neither)."""
    if args.roi_offset is None and args.roi_shape is None:
        return None
    if args.sample is None:
        raise ConfigError("--roi-offset/--roi-shape select a region of a --sample")
    if args.roi_offset is None or args.roi_shape is None:
        raise ConfigError("give both --roi-offset and --roi-shape")
    if len(args.roi_offset) != len(args.roi_shape):
        raise ConfigError(
            f"--roi-offset {args.roi_offset} and --roi-shape {args.roi_shape} differ in length"
        )
    return Roi(args.roi_offset, args.roi_shape)


def check_args(args: argparse.Namespace) -> None:
    """:func:`~pipelines.blockwise.run.check_run_options` of the command
    line's run options, and its ``--worker-command`` template checked."""
    check_run_options(
        args.workers,
        args.max_retries,
        args.block_timeout,
        args.worker_restarts,
        args.worker_start_timeout,
        args.threads_per_worker,
    )
    if args.worker_command is not None:
        check_template(args.worker_command)


def run_options(args: argparse.Namespace) -> dict[str, Any]:
    """The keyword arguments of :func:`~pipelines.blockwise.run.run_job` given on the command line."""
    return {
        "num_workers": args.workers,
        "max_retries": args.max_retries,
        "timeout": args.block_timeout,
        "progress": not args.no_progress,
        "log_dir": args.log_dir,
        "worker_command": args.worker_command,
        "max_worker_restarts": args.worker_restarts,
        "scheduler_host": args.scheduler_host,
        "worker_start_timeout": args.worker_start_timeout,
    }
