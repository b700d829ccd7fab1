"""Running a block job on daisy."""

from __future__ import annotations

import dataclasses
import logging
import math
import os
import re
import time
from dataclasses import dataclass
from pathlib import Path

import daisy
import numpy as np
from funlib.geometry import Coordinate, Roi

from pipelines.blockwise.jobfile import new_secret, private_directory, take_notes, write_job
from pipelines.blockwise.jobs import BlockJob
from pipelines.blockwise.relay import Relay
from pipelines.blockwise.worker import NOTES, CommandLauncher, check_template

logger = logging.getLogger(__name__)


LOOPBACK = "127.0.0.1"  # where the daisy scheduler listens, whatever the workers


class BlockwiseError(RuntimeError):
    """A blockwise run that did not complete every block."""


@dataclass(frozen=True)
class Report:
    """What a blockwise run did. ``voxels`` counts the volume once;
    ``seconds`` is the wall time of ``run_blockwise``; the rate counts the
    blocks this run processed, not those a resumed run skipped."""

    task_id: str
    blocks: int
    completed: int
    skipped: int
    retried_error: str | None
    voxels: int
    seconds: float

    @property
    def processed_voxels(self) -> int:
        """The voxels of the blocks this run processed (the volume's share
        of the blocks not skipped)."""
        if self.blocks == 0:
            return 0
        return round(self.voxels * (self.blocks - self.skipped) / self.blocks)

    @property
    def voxels_per_second(self) -> float:
        return self.processed_voxels / self.seconds if self.seconds > 0 else math.inf


def default_threads(num_workers: int) -> int:
    """CPU threads per worker: the cores shared among the workers."""
    return max(1, (os.cpu_count() or 1) // max(1, num_workers))


def check_run_options(
    num_workers: int = 1,
    max_retries: int = 2,
    timeout: float | None = 600.0,
    max_worker_restarts: int | None = None,
    worker_start_timeout: float = 300.0,
    threads: int | None = None,
) -> None:
    """Raises ValueError, naming the command-line option, for a worker
    count or thread count below 1, negative retries or restarts, or a
    timeout that is not a positive finite number of seconds."""
    counts = {
        "--workers": (num_workers, 1),
        "--max-retries": (max_retries, 0),
        "--worker-restarts": (max_worker_restarts, 0),
        "--threads-per-worker": (threads, 1),
    }
    for option, (value, least) in counts.items():
        if value is not None and (isinstance(value, bool) or int(value) != value or value < least):
            raise ValueError(f"{option} must be at least {least}, got {value}")
    for option, seconds in (
        ("--block-timeout", timeout),
        ("--worker-start-timeout", worker_start_timeout),
    ):
        if seconds is not None and not (math.isfinite(seconds) and seconds > 0):
            raise ValueError(f"{option} must be a positive number of seconds, got {seconds}")


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
    worker_start_timeout: float = 300.0,
) -> Report:
    """Run ``job`` on daisy with ``num_workers`` worker processes.

    Blocks already marked done are skipped. Worker output and failure
    tracebacks go to ``log_dir`` (default ``<output>.logs``).
    ``multiprocessing=False`` runs every block in this process (daisy's
    serial mode: for debugging). ``worker_command`` starts each worker with
    a command template instead of as a local subprocess (see
    :mod:`pipelines.blockwise.worker`); ``max_worker_restarts`` bounds how
    often daisy restarts workers that exit with an error (default daisy's).
    The daisy scheduler listens on loopback only. Launched workers reach
    it through an authenticated relay on ``scheduler_host`` (default
    loopback: workers on this machine), proving the run's secret (see
    :mod:`pipelines.blockwise.relay`); a launched command that has not
    connected within ``worker_start_timeout`` seconds, or has not exited
    that long after its worker finished, is killed and reported.

    Raises:
        ValueError: an option out of range (:func:`check_run_options`).
        JobFileError: the task's log directory holds a link or another
            user's file, or is one (:func:`~pipelines.blockwise.jobfile.private_directory`).
        BlockwiseError: some block is not done after its retries, the
            workers kept failing, or the scheduler stopped.
    """
    check_run_options(num_workers, max_retries, timeout, max_worker_restarts, worker_start_timeout)
    from daisy import logging as daisy_logging

    logs = Path(log_dir) if log_dir is not None else Path(str(job.output).rstrip("/") + ".logs")
    logs = Path(os.path.abspath(logs))  # worker commands may start in another directory
    private_directory(logs / job.task_id)  # daisy's worker logs and our job files
    daisy_logging.set_log_basedir(str(logs))
    if not multiprocessing:
        job = dataclasses.replace(job, threads=0)  # leave this process's thread pools alone
    launcher = None
    job_files: tuple[Path, ...] = ()
    if worker_command is not None:
        check_template(worker_command)
        task_logs = logs / job.task_id
        job_files = (task_logs / "job.pickle", task_logs / "job.key")
        take_notes(task_logs / NOTES)  # an earlier run's
        secret = new_secret()
        try:  # an address this machine cannot listen on fails now, not in every worker slot
            Relay(secret, scheduler_host or LOOPBACK, (LOOPBACK, 0)).close()
        except OSError as error:
            raise ValueError(str(error)) from None
        write_job(*job_files, job, secret)
        launcher = CommandLauncher(
            worker_command,
            *map(str, job_files),
            str(task_logs),
            secret,
            scheduler_host or LOOPBACK,
            worker_start_timeout,
        )
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
            host=LOOPBACK,
        )
        state = states[job.task_id]
    except (KeyboardInterrupt, SystemExit):
        raise
    except BaseException as error:  # abandoned, a serial-mode error, a scheduler panic
        failure = error
        if type(error).__name__ == "PanicException":
            _stop_workers()  # daisy left them running
    finally:
        for path in job_files:
            path.unlink(missing_ok=True)
    for note in take_notes(logs / job.task_id / NOTES):
        logger.warning("%s: %s", job.task_id, note)
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
        written = _write_error(error)
        if written is not None:  # one line: what, where, and that resuming works
            raise BlockwiseError(
                f"{job.task_id}: {len(missing)} of {done.size} blocks not done: {written}"
            ) from failure
        raise BlockwiseError(
            f"{job.task_id}: {len(missing)} of {done.size} blocks not done after "
            f"{max_retries} retries ({counts}); missing write ROIs: {missing[:10]}"
            f"{' ...' if len(missing) > 10 else ''}; last error:\n{error}"
        ) from failure
    retried = state.first_worker_error
    if retried:
        logger.warning(
            "%s: some blocks or workers failed and were retried; first error:\n%s",
            job.task_id,
            retried,
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


def _stop_workers(grace: float = 10.0) -> None:
    """SIGTERM this process's daisy worker subprocesses (found in
    ``/proc``), SIGKILL those alive after ``grace`` seconds (launchers use
    some of it to stop their worker commands)."""
    import signal

    def workers() -> list[int]:
        found = []
        for stat in Path("/proc").glob("[0-9]*/stat"):
            try:
                state, parent = stat.read_text().rsplit(")", 1)[1].split()[:2]
                command = (stat.parent / "cmdline").read_bytes()
            except (OSError, ValueError):
                continue
            if (
                int(parent) == os.getpid()
                and state != "Z"
                and b"daisy._subprocess_worker" in command
            ):
                found.append(int(stat.parent.name))
        return found

    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 1.0)):
        pids = workers()
        for pid in pids:
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + wait
        while pids and time.monotonic() < deadline:
            time.sleep(0.05)
            pids = workers()
        if not pids:
            return


def _write_error(error: str) -> str | None:
    """The message of a :class:`~pipelines.blockwise.jobs.BlockWriteError`
    in a worker's error text (a traceback), or None."""
    found = re.findall(r"BlockWriteError: (.*)", error)
    return found[-1].strip() if found else None


def _failure_message(failure: BaseException, worker_command: str | None, logs: Path) -> str:
    """What stopped a run, for the user: daisy's abandonment error names its
    own ``max_worker_restarts`` knob, which is no option of this command."""
    text = str(failure)
    if type(failure).__name__ == "PanicException":  # raised by daisy's Rust scheduler
        return (
            f"the daisy scheduler stopped on an internal error ({text}); a client that is not "
            "one of this run's workers may have connected to it (e.g. released a block it "
            "did not process). Finished blocks are kept: rerun the same command to resume"
        )
    if "max_worker_restarts" not in text and "abandoned" not in text:
        return f"{type(failure).__name__}: {failure}"
    started = f"the worker command {worker_command!r}" if worker_command else "the worker processes"
    found = re.search(
        r"(?is)last (?:worker )?error:\s*(.*?)\s*(?:\nFix the worker error.*)?$", text
    )
    last = found.group(1) if found else ""
    separator = "\n"
    launcher = re.findall(r"WorkerCommandError: (.*)", last)
    if launcher:  # the launcher's own one-line reason (timeouts, exit status)
        last, separator = launcher[-1], " "
    return (
        f"{started} kept exiting with errors, so the run was abandoned (--worker-restarts "
        f"sets how often they are restarted); worker logs are in {logs}"
        + (f"; last worker error:{separator}{last}" if last else "")
    )
