"""Stopping a training cleanly, and the processes it forks.

A training stops on SIGINT (Ctrl-C) or SIGTERM (a batch system) after the
current iteration, with a checkpoint (:class:`StopSignals`,
:class:`TrainingStopped`)::

    with StopSignals() as stop:             # before the workers are forked
        for iteration in ...:
            ...
            if stop.agreed():                # stop.agreed(mean) under torchrun
                path = run.save(iteration, ...)
                raise TrainingStopped(stop.requested, iteration, path)

Processes forked while a run directory's lock is held (data-loading workers:
gunpowder's ``PreCache``, a torch ``DataLoader``) close their copy of the
lock at once (:data:`held_locks`), so the lock lives exactly as long as the
training process, and on Linux they are killed when their parent dies
(``PR_SET_PDEATHSIG``), so a killed trainer leaves no worker behind. Workers
forked inside :class:`StopSignals` ignore both signals: the trainer stops
them itself.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

held_locks: set[int] = set()
"""Lock descriptors held by this process (:class:`pipelines.rundir.RunDirectory`
adds and discards them); a forked child closes its copies at once."""
_forking_pid = 0  # the process that is forking (set just before each fork)
_die_with_parent = False  # set in children forked while a lock was held, and theirs
_stop_signals_active = False  # inside StopSignals (inherited by forked workers)
PR_SET_PDEATHSIG = 1  # from <linux/prctl.h>


def _before_fork() -> None:
    global _forking_pid
    _forking_pid = os.getpid()


def _after_fork_in_child() -> None:
    """In a child forked while a lock is held: close the inherited lock
    descriptors (the lock must end with the trainer) and, on Linux, ask for
    SIGKILL when the parent dies (exit now if it already has)."""
    global _die_with_parent
    if held_locks:
        for fd in held_locks:
            with contextlib.suppress(OSError):
                os.close(fd)
        held_locks.clear()
        _die_with_parent = True
    if _die_with_parent and sys.platform.startswith("linux"):
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        if os.getppid() != _forking_pid:  # the parent died before prctl
            os._exit(1)


os.register_at_fork(before=_before_fork, after_in_child=_after_fork_in_child)


class TrainingStopped(Exception):
    """Training stopped on a signal after saving the checkpoint of the
    iteration it had reached. ``str()`` says where it is and how to resume."""

    def __init__(self, signum: int, iteration: int, path: Path):
        self.signum, self.iteration, self.path = signum, iteration, path
        super().__init__(
            f"stopped by {signal.Signals(signum).name} at iteration {iteration}: saved "
            f"{path}\nto resume, run the same command again (it resumes from the newest "
            f"checkpoint in {path.parent})"
        )


class StopSignals:
    """SIGINT (Ctrl-C) and SIGTERM as a request to stop: the first one sets
    :attr:`requested` (the signal number) and says on stderr that the run
    stops after the current iteration; a second one raises
    ``KeyboardInterrupt`` at once. Processes forked inside the context (data
    workers, which inherit the handlers) ignore both: a Ctrl-C or a batch
    system's SIGTERM reaches the whole process group, and the trainer shuts
    its workers down itself (they die with it on Linux, see the module
    docs). Installed only in the main thread (elsewhere it does nothing);
    the previous handlers come back on exit."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self) -> None:
        self.requested: int | None = None
        self._pid = os.getpid()
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> StopSignals:
        global _stop_signals_active
        if threading.current_thread() is threading.main_thread():
            for signum in self.SIGNALS:
                self._previous[signum] = signal.signal(signum, self._handle)
            _stop_signals_active = True
        return self

    def __exit__(self, *exc_info: object) -> None:
        global _stop_signals_active
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        if self._previous:
            _stop_signals_active = False
        self._previous = {}

    def agreed(self, mean: Callable[[float], float] | None = None) -> bool:
        """Whether to stop now: a signal arrived in this process, or, with
        ``mean`` (the mean of a value over the processes of one run, a
        collective call every process makes), in any of them."""
        stopping = float(self.requested is not None)
        return (mean(stopping) if mean is not None else stopping) > 0

    def _handle(self, signum: int, frame: object) -> None:
        if os.getpid() != self._pid:  # a forked worker: the trainer stops it
            return
        name = signal.Signals(signum).name
        if self.requested is not None:
            raise KeyboardInterrupt(f"{name} while stopping")
        self.requested = signum
        os.write(
            2,
            f"\n{name}: stopping after the current iteration, with a checkpoint "
            f"({name} again stops at once, without one)\n".encode(),
        )


def worker_keeps_stop_signals(worker_id: int = 0) -> None:
    """A ``DataLoader`` ``worker_init_fn``: a worker forked inside
    :class:`StopSignals` ignores SIGINT and SIGTERM like every other forked
    worker (torch gives its workers a SIGTERM handler of its own, which would
    let a process group's SIGTERM kill them under the trainer); elsewhere it
    does nothing."""
    if _stop_signals_active:
        for signum in StopSignals.SIGNALS:
            signal.signal(signum, signal.SIG_IGN)
