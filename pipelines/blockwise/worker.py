"""Cluster workers: a worker process started by a user's command template
(``--worker-command``), connecting back to the daisy scheduler over TCP.

daisy 2.0 runs an arity-0 process function once per worker slot in its own
subprocess; :class:`CommandLauncher` is that function. It fills the template
with ``{command}`` (``python -m pipelines.blockwise worker --job JOB
--daisy-context CONTEXT``, the context carrying the scheduler's host, port
and the worker id), ``{log}`` (a per-worker log path) and ``{worker}`` (the
worker id), runs it through ``/bin/sh`` and waits for it to end. The
launched worker opens a ``daisy.Client`` with that context and processes
blocks until the scheduler has none left.

This module imports neither torch nor gunpowder: the worker unpickles its
job, whose imports are what the block needs.
"""

from __future__ import annotations

import argparse
import os
import pickle
import shlex
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

FIELDS = ("command", "log", "worker")  # the names a template may use


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
    once per worker slot and raises :class:`WorkerCommandError` when it
    exits non-zero (daisy counts that as a dirty worker exit)."""

    template: str
    job_file: str  # the pickled job, on a file system the workers share
    log_dir: str
    python: str = sys.executable

    def command_line(self, context: Any) -> str:
        """The template filled in for the worker of ``context``."""
        worker = int(context["worker_id"])
        command = shlex.join(
            [
                self.python,
                "-m",
                "pipelines.blockwise",
                "worker",
                "--job",
                self.job_file,
                "--daisy-context",
                context.to_env(),
            ]
        )
        log = str(Path(self.log_dir) / f"worker_{worker}.command.log")
        return self.template.format(command=command, log=shlex.quote(log), worker=worker)

    def __call__(self, *, context: Any) -> None:
        Path(self.log_dir).mkdir(parents=True, exist_ok=True)
        line = self.command_line(context)
        returncode = subprocess.run(line, shell=True).returncode
        if returncode != 0:
            raise WorkerCommandError(
                f"worker command {self.template!r} (worker {context['worker_id']}) exited "
                f"with status {returncode}: {line}"
            )


def run_worker(job_file: str | Path, daisy_context: str) -> int:
    """Process blocks of the job in ``job_file`` until the scheduler of
    ``daisy_context`` has none left; returns the number of blocks done."""
    import daisy

    with open(job_file, "rb") as f:
        job = pickle.load(f)
    os.environ[daisy.Context.ENV_VARIABLE] = daisy_context
    client = daisy.Client()
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
    parser.add_argument("--job", required=True, help="pickled job written by the scheduler")
    parser.add_argument("--daisy-context", required=True, help="daisy worker context")
    args = parser.parse_args(argv)
    run_worker(args.job, args.daisy_context)
    return 0
