"""Running a block job on daisy."""

from __future__ import annotations

import dataclasses
import logging
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path

import daisy
import numpy as np
from funlib.geometry import Coordinate, Roi

from pipelines.blockwise.jobs import BlockJob

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
) -> Report:
    """Run ``job`` on daisy with ``num_workers`` worker processes.

    Blocks already marked done are skipped. Worker output and failure
    tracebacks go to ``log_dir`` (default ``<output>.logs``).
    ``multiprocessing=False`` runs every block in this process (daisy's
    serial mode: for debugging).

    Raises:
        BlockwiseError: some block is not done after its retries.
    """
    if num_workers < 1:
        raise ValueError(f"num_workers must be >= 1, got {num_workers}")
    from daisy import logging as daisy_logging

    daisy_logging.set_log_basedir(
        str(log_dir) if log_dir is not None else str(job.output).rstrip("/") + ".logs"
    )
    if not multiprocessing:
        job = dataclasses.replace(job, threads=0)  # leave this process's thread pools alone
    task = job.task(num_workers, max_retries, timeout)
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
            error = f"{type(failure).__name__}: {failure}"
            counts = "daisy stopped the run"
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
