"""Cluster workers: a worker process started by a user's command template
(``--worker-command``), connecting back to the daisy scheduler over TCP.

daisy 2.0 runs an arity-0 process function once per worker slot in its own
subprocess; :class:`CommandLauncher` is that function. It opens a
:class:`~pipelines.blockwise.relay.Relay` on ``--scheduler-host`` (daisy
itself listens on loopback only), fills the template with ``{command}``
(``env PYTHONPATH=ROOT python -m pipelines.blockwise worker --job JOB
--key KEY --scheduler-host HOST --scheduler-port PORT --daisy-context
CONTEXT``, ROOT the folder ``pipelines`` is imported from, so that a worker
started in another directory, e.g. by ``ssh HOST {command}``, finds it),
``{log}`` (a per-worker log path) and ``{worker}`` (the worker id), runs it
through ``/bin/sh`` in a process group of its own and supervises it:

- not connected (handshake done) within ``start_timeout`` seconds: the
  group is killed and the slot fails with :class:`WorkerCommandError`;
- still running ``start_timeout`` seconds after its worker's connection
  ended (``{command}; sleep 100000``): the same;
- the launcher stopped (SIGINT, SIGTERM, an error): the group is killed.

The launched worker reads the run's key (:mod:`~pipelines.blockwise.jobfile`),
unpickles the job only if its HMAC matches, proves the key to the relay and
then runs a ``daisy.Client`` through a loopback forwarder until the
scheduler has no blocks left.

This module imports neither torch nor gunpowder: the worker unpickles its
job, whose imports are what the block needs.
"""

from __future__ import annotations

import argparse
import logging
import os
import shlex
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pipelines.blockwise.jobfile import JobFileError, add_note, read_job, read_secret
from pipelines.blockwise.relay import Relay, forward_once, keepalive, prove_worker

logger = logging.getLogger(__name__)

STOP_SECONDS = 5.0  # from SIGTERM to SIGKILL of a worker command's process group
NOTES = "worker_commands.notes"  # launchers' reports, in the task's log directory
FIELDS = ("command", "log", "worker")  # the names a template may use


def worker_python_path() -> str:
    """``PYTHONPATH`` of a launched worker: the folder this ``pipelines``
    package is imported from, then this process's own ``PYTHONPATH``."""
    root = str(Path(__file__).resolve().parents[2])
    inherited = os.environ.get("PYTHONPATH")
    return os.pathsep.join([root, inherited] if inherited else [root])


class WorkerCommandError(RuntimeError):
    """A worker command that exited with an error."""


def check_template(template: str) -> None:
    """Raises ValueError unless ``template`` is a format string using only
    ``{command}`` (required), ``{log}`` and ``{worker}``."""
    import string

    try:
        names = {name for _, name, _, _ in string.Formatter().parse(template) if name is not None}
    except ValueError as error:
        raise ValueError(
            f"--worker-command {template!r} is not a valid template: {error}"
        ) from None
    unknown = names - set(FIELDS)
    if unknown or "command" not in names:
        raise ValueError(
            f"--worker-command {template!r} must contain {{command}} and may use "
            f"{{log}} and {{worker}} only"
            + (f" (unknown: {', '.join(sorted(unknown))})" if unknown else "")
        )


@dataclass(frozen=True)
class CommandLauncher:
    """daisy's worker function for ``--worker-command``: runs ``template``
    once per worker slot (see the module docs) and raises
    :class:`WorkerCommandError` (daisy counts that as a dirty worker exit)
    when it exits non-zero or does not connect within ``start_timeout``.
    A command killed because it did not exit ``start_timeout`` seconds after
    its worker finished did its work: that is only reported. Every kill is
    also appended to ``NOTES`` in ``log_dir``, which the run reports."""

    template: str
    job_file: str  # the sealed job, on a file system the workers share
    key_file: str  # the run's secret, beside it (mode 0600)
    log_dir: str
    secret: bytes = field(repr=False)
    scheduler_host: str = "127.0.0.1"
    start_timeout: float = 300.0
    python: str = sys.executable

    def command_line(self, context: Any, relay: tuple[str, int]) -> str:
        """The template filled in for the worker of ``context`` that
        connects to the relay at ``relay``."""
        worker = int(context["worker_id"])
        command = shlex.join(
            [
                "env",
                f"PYTHONPATH={worker_python_path()}",
                self.python,
                "-m",
                "pipelines.blockwise",
                "worker",
                "--job",
                self.job_file,
                "--key",
                self.key_file,
                "--scheduler-host",
                relay[0],
                "--scheduler-port",
                str(relay[1]),
                "--daisy-context",
                context.to_env(),
            ]
        )
        log = str(Path(self.log_dir) / f"worker_{worker}.command.log")
        return self.template.format(command=command, log=shlex.quote(log), worker=worker)

    def __call__(self, *, context: Any) -> None:
        Path(self.log_dir).mkdir(parents=True, exist_ok=True)
        worker = context["worker_id"]
        relay = Relay(self.secret, self.scheduler_host, (context["hostname"], int(context["port"])))
        line = self.command_line(context, relay.address)
        with _sigterm_exits():
            process = subprocess.Popen(line, shell=True, start_new_session=True)
            try:
                problem = self._supervise(process, relay)
            finally:
                _kill_group(process)
                relay.close()
        name = f"worker command {self.template!r} (worker {worker})"
        if problem is not None:
            message = f"{name} {problem}; its process group was killed: {line}"
            try:
                add_note(Path(self.log_dir) / NOTES, message)
            except OSError as error:
                print(f"cannot write {NOTES}: {error}", file=sys.stderr)
            if relay.finished.is_set():
                return  # its worker was done: this slot did its work
            raise WorkerCommandError(message)
        if process.returncode != 0:
            raise WorkerCommandError(f"{name} exited with status {process.returncode}: {line}")

    def _supervise(self, process: subprocess.Popen, relay: Relay) -> str | None:
        """Wait for the command; what went wrong, or None."""
        timeout = self.start_timeout
        if not _wait(relay.connected, process, timeout):
            if process.poll() is None:
                return (
                    f"did not connect to the scheduler within {timeout:g} s "
                    f"(--worker-start-timeout; listening on {relay.address[0]}:"
                    f"{relay.address[1]}: remote workers need --scheduler-host set to an "
                    "address of this machine that they can reach)"
                )
            if process.returncode == 0:  # e.g. a template that never ran {command}
                return "exited (status 0) without its worker connecting to the scheduler"
            return None  # its exit status says what went wrong
        _wait(relay.finished, process, None)
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            return (
                f"did not exit within {timeout:g} s after its worker had finished "
                "(--worker-start-timeout)"
            )
        return None


def _wait(event: threading.Event, process: subprocess.Popen, timeout: float | None) -> bool:
    """Wait until ``event`` is set (True), ``process`` exits or ``timeout`` passes."""
    deadline = None if timeout is None else time.monotonic() + timeout
    while not event.wait(0.05):
        if process.poll() is not None or (deadline is not None and time.monotonic() > deadline):
            return event.is_set()
    return True


def _kill_group(process: subprocess.Popen) -> None:
    """SIGTERM the process group of ``process`` (so ``bsub -K`` or ``srun``
    can cancel their job), SIGKILL what is left after ``STOP_SECONDS``."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(process.pid, sig)
        except ProcessLookupError:
            break
        deadline = time.monotonic() + STOP_SECONDS
        while time.monotonic() < deadline and _group_alive(process):
            time.sleep(0.05)
        if not _group_alive(process):
            break
    process.wait()


def _group_alive(process: subprocess.Popen) -> bool:
    process.poll()  # reap the shell, so that an exited group reads as gone
    try:
        os.killpg(process.pid, 0)
    except ProcessLookupError:
        return False
    return True


@contextmanager
def _sigterm_exits() -> Iterator[None]:
    """Within: SIGTERM raises SystemExit, so the launcher kills its
    command's process group on the way out (main thread only)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def stop(signum: int, frame: Any) -> None:
        raise SystemExit(128 + signum)

    previous = signal.signal(signal.SIGTERM, stop)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def run_worker(
    job_file: str | Path,
    key_file: str | Path,
    scheduler: tuple[str, int],
    daisy_context: str,
) -> int:
    """Process blocks of the job in ``job_file`` (sealed with the key in
    ``key_file``) from the scheduler relay at ``scheduler`` until it has
    none left; returns the number of blocks done."""
    import daisy

    secret = read_secret(key_file)
    job = read_job(job_file, secret)
    try:
        upstream = socket.create_connection(scheduler, timeout=60)
        prove_worker(upstream, secret)
    except OSError as error:
        raise ConnectionError(
            f"cannot join the scheduler at {scheduler[0]}:{scheduler[1]}: {error}"
        ) from None
    keepalive(upstream)
    os.environ[daisy.Context.ENV_VARIABLE] = daisy_context
    context = daisy.Context.from_env()
    context["hostname"] = "127.0.0.1"
    context["port"] = forward_once(upstream)
    client = daisy.Client(context)
    count = 0
    while True:
        with client.acquire_block() as block:
            if block is None:
                return count
            job(block)
            count += 1


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m pipelines.blockwise worker",
        description="A blockwise worker (started by --worker-command; not run by hand).",
    )
    parser.add_argument("--job", required=True, help="sealed job written by the scheduler")
    parser.add_argument("--key", required=True, help="the run's key file (mode 0600)")
    parser.add_argument("--scheduler-host", required=True, help="the scheduler relay's address")
    parser.add_argument("--scheduler-port", type=int, required=True, help="its port")
    parser.add_argument("--daisy-context", required=True, help="daisy worker context")
    args = parser.parse_args(argv)
    try:
        run_worker(
            args.job, args.key, (args.scheduler_host, args.scheduler_port), args.daisy_context
        )
    except (JobFileError, ConnectionError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    return 0
