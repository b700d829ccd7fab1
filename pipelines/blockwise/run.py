"""Running a block job on daisy."""

from __future__ import annotations

import dataclasses
import logging
import math
import os
import pickle
import time
from dataclasses import dataclass
from pathlib import Path

import daisy
import numpy as np
from funlib.geometry import Coordinate, Roi

from pipelines.blockwise.jobs import BlockJob
from pipelines.blockwise.worker import CommandLauncher, check_template

logger = logging.getLogger(__name__)


class BlockwiseError(RuntimeError):
    """A blockwise run that did not complete every block."""


@dataclass(frozen=True)
class Report:
    """What a blockwise run did. ``voxels`` counts the volume once;
    ``seconds`` is the wall time of ``run_blockwise``."""

    task_id: str
    blocks: int
    completed: int
    skipped: int
    retried_error: str | None
    voxels: int
    seconds: float

    @property
    def voxels_per_second(self) -> float:
        return self.voxels / self.seconds if self.seconds > 0 else math.inf


def default_threads(num_workers: int) -> int:
    """CPU threads per worker: the cores shared among the workers."""
    return max(1, (os.cpu_count() or 1) // max(1, num_workers))


def run_job(
    job: BlockJob,
    num_workers: int = 1,
    max_retries: int = 2,
    timeout: float | None = 600.0,
    progress: bool = True,
    log_dir: str | Path | None = None,
    multiprocessing: bool = True,
    worker_command: str | None = None,
    max_worker_restarts: int | None = None,
    scheduler_host: str | None = None,
) -> Report:
    """Run ``job`` on daisy with ``num_workers`` worker processes.

    Blocks already marked done are skipped. Worker output and failure
    tracebacks go to ``log_dir`` (default ``<output>.logs``).
    ``multiprocessing=False`` runs every block in this process (daisy's
    serial mode: for debugging). ``worker_command`` starts each worker with
    a command template instead of as a local subprocess (see
    :mod:`pipelines.blockwise.worker`); ``max_worker_restarts`` bounds how
    often daisy restarts workers that exit with an error (default daisy's).
    ``scheduler_host`` is the address workers connect to (default: daisy
    detects this host's address; the scheduler listens on every interface).

    Raises:
        BlockwiseError: some block is not done after its retries, or the
            workers kept failing.
    """
    if num_workers < 1:
        raise ValueError(f"--workers must be at least 1, got {num_workers}")
    from daisy import logging as daisy_logging

    logs = Path(log_dir) if log_dir is not None else Path(str(job.output).rstrip("/") + ".logs")
    daisy_logging.set_log_basedir(str(logs))
    if not multiprocessing:
        job = dataclasses.replace(job, threads=0)  # leave this process's thread pools alone
    launcher = None
    if worker_command is not None:
        check_template(worker_command)
        job_file = logs / job.task_id / "job.pickle"
        job_file.parent.mkdir(parents=True, exist_ok=True)
        job_file.write_bytes(pickle.dumps(job))
        launcher = CommandLauncher(worker_command, str(job_file), str(logs / job.task_id))
    task = job.task(num_workers, max_retries, timeout, launcher, max_worker_restarts)
    started = time.perf_counter()
    state = None
    failure: BaseException | None = None
    try:
        states = daisy.run_blockwise(
            [task],
            multiprocessing=multiprocessing,
            return_states=True,
            progress=progress,
            summary=progress,
            host=scheduler_host,
        )
        state = states[job.task_id]
    except Exception as error:  # abandoned (workers keep crashing) or a serial-mode error
        failure = error
    seconds = time.perf_counter() - started
    done = job.markers.done()
    if failure is not None or state is None or not done.all():
        missing = [
            Roi(
                job.volume_roi.offset + job.block_size * Coordinate(index), job.block_size
            ).intersect(job.volume_roi)
            for index in zip(*np.nonzero(~done), strict=True)
        ]
        if failure is not None:
            error = _failure_message(failure, worker_command, logs / job.task_id)
            counts = "the run was stopped"
        else:
            assert state is not None
            error = state.last_worker_error or "(no error recorded)"
            counts = f"failed {state.failed_count}, orphaned {state.orphaned_count}"
        raise BlockwiseError(
            f"{job.task_id}: {len(missing)} of {done.size} blocks not done after "
            f"{max_retries} retries ({counts}); missing write ROIs: {missing[:10]}"
            f"{' ...' if len(missing) > 10 else ''}; last error:\n{error}"
        ) from failure
    retried = state.first_worker_error
    if retried:
        logger.warning(
            "%s: some blocks failed and were retried; first error:\n%s", job.task_id, retried
        )
    if int(state.skipped_count) == int(state.total_block_count):
        logger.info(
            "%s: nothing to do, all %d blocks were already done; outputs unchanged",
            job.task_id,
            int(state.skipped_count),
        )
    voxels = int(np.prod(job.volume_roi.shape / job.voxel_size))
    return Report(
        task_id=job.task_id,
        blocks=int(state.total_block_count),
        completed=int(state.completed_count),
        skipped=int(state.skipped_count),
        retried_error=retried,
        voxels=voxels,
        seconds=seconds,
    )


def _failure_message(failure: BaseException, worker_command: str | None, logs: Path) -> str:
    """What stopped a run, for the user: daisy's abandonment error names its
    own ``max_worker_restarts`` knob, which is no option of this command."""
    text = str(failure)
    if "max_worker_restarts" not in text and "abandoned" not in text:
        return f"{type(failure).__name__}: {failure}"
    started = f"the worker command {worker_command!r}" if worker_command else "the worker processes"
    last = text.split("last error:", 1)[1].strip() if "last error:" in text else ""
    return (
        f"{started} kept exiting with errors, so the run was abandoned (--worker-restarts "
        f"sets how often they are restarted); worker logs are in {logs}"
        + (f"; last worker error:\n{last}" if last else "")
    )
