"""A training run directory with one identity: a lock, the config its
checkpoints were made with, atomic checkpoints and an honest summary.

::

    run/
      .lock                 held (flock) by the training using the directory
      config.json           the config the checkpoints were made with
      model_checkpoint_<N>  one file per saved iteration N: model, optimizer,
                            moving counts (written to a temporary name, then renamed)
      summary.json          the evaluation of the newest trained model

Use::

    with RunDirectory(out) as run:
        run.check_config(config)   # before anything is written
        run.write_config(config)
        checkpoint = run.newest_complete()
        ...
        run.save(iteration, model.state_dict(), optimizer.state_dict(), counts)
        run.write_summary(summary)

The lock is ``fcntl.flock`` on ``.lock``: the kernel releases it when its
process ends, however it ends. A ``.lock`` file whose lock is free was left
by a process that died; it is taken over with a warning naming that process.
(On NFS, flock works across hosts only where the mount supports it.)

Processes forked while a lock is held (data-loading workers: gunpowder's
``PreCache``, a torch ``DataLoader``) close their copy of the lock at once,
so the lock lives exactly as long as the training process, and on Linux
they are killed when their parent dies (``PR_SET_PDEATHSIG``), so a killed
trainer leaves no worker behind.

Stopping cleanly (:class:`StopSignals`)::

    with StopSignals() as stop:             # before the workers are forked
        for iteration in ...:
            ...
            if stop.agreed():                # stop.agreed(mean) under torchrun
                path = run.save(iteration, ...)
                raise TrainingStopped(stop.requested, iteration, path)
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import fcntl
import fnmatch
import json
import logging
import os
import pickle
import re
import secrets
import signal
import socket
import sys
import threading
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any, BinaryIO

from pipelines.common import (
    CHECKPOINT_BASENAME,
    CHECKSUM_KEY,
    checkpoint_path,
    checksum_error,
    state_checksum,
)
from pipelines.config import Config, ConfigError, from_dict

logger = logging.getLogger(__name__)

LOCK_NAME = ".lock"
CONFIG_NAME = "config.json"
SUMMARY_NAME = "summary.json"

#: Config keys that may differ between the config a run directory's
#: checkpoints were made with and the one resuming them (``fnmatch``
#: patterns over dotted key paths): how long and how to train, how to log
#: and load data, and where the data lie. Every other key (``channels``,
#: ``scale_factor``, ``mask_distances``, ``data.class_ids``,
#: ``data.voxel_size``, ``model.*``) changes what the checkpoints mean or
#: whether they fit the network, and a difference is refused.
RESUMABLE_KEYS = (
    "training.*",
    "data.samples",
    "data.eval",
    "data.eval.*",
    "data.skip_unusable",
    "data.upsample",
)

_CHECKPOINT = re.compile(rf"^{CHECKPOINT_BASENAME}_checkpoint_(\d+)$")
# temporary files this module writes: ".<final name>.<random>.tmp"
_TEMPORARY = re.compile(
    rf"^\.({CHECKPOINT_BASENAME}_checkpoint_\d+|{re.escape(CONFIG_NAME)}|"
    rf"{re.escape(SUMMARY_NAME)})\..+\.tmp$"
)
# what torch.load raises for a truncated, corrupt or non-weights-only file
_LOAD_ERRORS = (
    RuntimeError,
    EOFError,
    OSError,
    ValueError,
    pickle.UnpicklingError,
    zipfile.BadZipFile,
)


# -- processes forked while a lock is held ---------------------------------------

_held_locks: set[int] = set()  # lock descriptors held by this process
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
    if _held_locks:
        for fd in _held_locks:
            with contextlib.suppress(OSError):
                os.close(fd)
        _held_locks.clear()
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


class RunDirectoryError(ConfigError):
    """A run directory that cannot be used: in use by another process, made
    with a different config, or not a directory."""


class RunDirectoryWriteError(RunDirectoryError):
    """A file of the run directory could not be written (disk full, a
    file-size limit, a read-only directory). Nothing was lost: the files
    already there are unchanged."""


@dataclasses.dataclass(frozen=True)
class Checkpoint:
    """A complete checkpoint: states to restore and the iteration it ends."""

    iteration: int
    path: Path
    model_state: dict[str, Any]
    optimizer_state: dict[str, Any]
    moving_counts: dict[str, Any]


def _flatten(values: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": 1}}`` -> ``{"a.b": 1}``; lists are values."""
    flat = {}
    for key, value in values.items():
        if isinstance(value, dict):
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def config_differences(old: Config, new: Config) -> tuple[list[str], list[str]]:
    """The dotted keys whose values differ, split into those that change
    the meaning of checkpoints (refused) and those that may change
    (:data:`RESUMABLE_KEYS`). A key present in only one config (the data
    section changed form) counts as differing."""
    before, after = _flatten(old.to_dict()), _flatten(new.to_dict())
    missing = object()
    changed = sorted(
        key
        for key in before.keys() | after.keys()
        if before.get(key, missing) != after.get(key, missing)
    )
    allowed = [k for k in changed if any(fnmatch.fnmatchcase(k, p) for p in RESUMABLE_KEYS)]
    return [k for k in changed if k not in allowed], allowed


def _fsync_directory(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class RunDirectory:
    """A locked training output directory (see the module docstring).

    Args:
        path: The directory; created (with parents) when the lock is taken.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.lock_path = self.path / LOCK_NAME
        self.skipped: list[tuple[Path, str]] = []
        self._lock_fd: int | None = None

    # -- the lock ---------------------------------------------------------

    def __enter__(self) -> RunDirectory:
        self.acquire()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.release()

    def acquire(self) -> None:
        """Take the lock, write who holds it, and remove temporary files a
        killed run left behind.

        Raises:
            RunDirectoryError: ``path`` is a file, or another process holds
                the lock (the message says which, if it wrote its name).
        """
        if self.path.exists() and not self.path.is_dir():
            raise RunDirectoryError(f"run directory {self.path} is a file, not a directory")
        try:
            self.path.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise RunDirectoryError(f"cannot create run directory {self.path}: {error}") from None
        while True:
            try:
                fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o644)
            except OSError as error:
                raise RunDirectoryWriteError(
                    f"cannot write in run directory {self.path} ({error.strerror}): nothing "
                    "was written; train into a directory you can write to"
                ) from None
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = self._read_holder(fd) or "another process (it has not said which yet)"
                ended = self._holder_ended(fd)
                os.close(fd)
                raise RunDirectoryError(
                    f"run directory {self.path} is in use by {holder}; wait for it to finish, "
                    f"or train into another directory"
                    + (
                        f". That process has ended, but a child that inherited the lock (a "
                        f"data-loading worker) still holds it: see `fuser {self.lock_path}`"
                        if ended
                        else ""
                    )
                ) from None
            # a releasing holder unlinks .lock before closing it: if we locked
            # that unlinked file, try again on the current one
            try:
                same = os.stat(self.lock_path).st_ino == os.fstat(fd).st_ino
            except FileNotFoundError:
                same = False
            if same:
                break
            os.close(fd)
        stale = self._read_holder(fd)
        if stale:
            logger.warning(
                "run directory %s: taking over the lock left by %s, which has ended",
                self.path,
                stale,
            )
        holder = {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "started": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        }
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(holder).encode(), 0)
        os.fsync(fd)
        self._lock_fd = fd
        _held_locks.add(fd)
        for leftover in sorted(self.path.iterdir()):
            if _TEMPORARY.match(leftover.name):
                logger.warning(
                    "run directory %s: removing %s (an unfinished write)", self.path, leftover.name
                )
                leftover.unlink()

    def release(self) -> None:
        """Remove ``.lock`` and release the lock (nothing if not held)."""
        if self._lock_fd is None:
            return
        with contextlib.suppress(FileNotFoundError):
            self.lock_path.unlink()
        _held_locks.discard(self._lock_fd)
        os.close(self._lock_fd)
        self._lock_fd = None

    @staticmethod
    def _read_holder(fd: int) -> str:
        """``pid P on host H since T`` from a lock file, or ``""``."""
        text = os.pread(fd, 4096, 0).decode(errors="replace").strip()
        if not text:
            return ""
        try:
            holder = json.loads(text)
            return f"pid {holder['pid']} on host {holder['host']} since {holder['started']}"
        except (ValueError, KeyError, TypeError):
            return repr(text)

    @staticmethod
    def _holder_ended(fd: int) -> bool:
        """Whether the lock file names a process of this host that has ended
        (its lock then lives on in a forked child)."""
        try:
            holder = json.loads(os.pread(fd, 4096, 0))
            if holder["host"] != socket.gethostname():
                return False
            os.kill(int(holder["pid"]), 0)
        except ProcessLookupError:
            return True
        except (ValueError, KeyError, TypeError, PermissionError):
            return False
        return False

    def _require_lock(self) -> None:
        if self._lock_fd is None:
            raise RuntimeError(f"run directory {self.path}: write without holding its lock")

    # -- the config -------------------------------------------------------

    def checkpoint_files(self) -> list[tuple[int, Path]]:
        """``(iteration, path)`` of every ``model_checkpoint_<N>`` file,
        newest first; other names (``model_checkpoint_30.bak``) are ignored."""
        found = []
        for path in self.path.iterdir():
            match = _CHECKPOINT.match(path.name)
            if match and path.is_file():
                found.append((int(match.group(1)), path))
        return sorted(found, reverse=True)

    def check_config(self, config: Config) -> list[str]:
        """Compare ``config`` with ``config.json``, the config the
        checkpoints were made with; writes nothing. Returns the keys that
        differ but may (:data:`RESUMABLE_KEYS`).

        Raises:
            RunDirectoryError: checkpoints exist and a key that changes their
                meaning differs (each is named with its old and new value),
                or checkpoints exist without a ``config.json``.
            ConfigError: ``config.json`` is not a valid config.
        """
        stored = self.path / CONFIG_NAME
        has_checkpoints = bool(self.checkpoint_files())
        if not stored.exists():
            if has_checkpoints:
                raise RunDirectoryError(
                    f"run directory {self.path} holds checkpoints but no {CONFIG_NAME}, so "
                    f"nothing says what they were trained for; train into another directory"
                )
            return []
        try:
            old = from_dict(json.loads(stored.read_text()), source=str(stored))
        except (ValueError, UnicodeDecodeError) as error:
            if isinstance(error, ConfigError):
                raise
            raise ConfigError(f"cannot read {stored}: {error}") from None
        refused, allowed = config_differences(old, config)
        if refused and has_checkpoints:
            before, after = _flatten(old.to_dict()), _flatten(config.to_dict())
            lines = [
                f"{k}: {before.get(k, '(absent)')!r} -> {after.get(k, '(absent)')!r}"
                for k in refused
            ]
            raise RunDirectoryError(
                f"run directory {self.path} holds checkpoints made with another config; these "
                f"keys change what they mean:\n  " + "\n  ".join(lines) + "\n"
                "restore them, or train into another directory"
            )
        if allowed:
            logger.info("run directory %s: config changes %s", self.path, allowed)
        return allowed

    def write_config(self, config: Config) -> None:
        """Write ``config.json`` atomically (after :meth:`check_config`)."""
        self._write_atomic(CONFIG_NAME, json.dumps(config.to_dict(), indent=2).encode())

    # -- checkpoints ------------------------------------------------------

    def save(
        self,
        iteration: int,
        model_state: dict[str, Any],
        optimizer_state: dict[str, Any],
        moving_counts: dict[str, Any],
    ) -> Path:
        """Write ``model_checkpoint_<iteration>`` atomically: one
        ``torch.save`` of ``{"model_state_dict", "optimizer_state_dict",
        "moving_counts", "iteration", "checksum"}`` (a superset of what
        :func:`pipelines.common.load_model` reads; ``checksum`` is
        :func:`pipelines.common.state_checksum` of the rest, verified on
        load) to a temporary file, fsync, rename. Returns the path.

        Raises:
            RunDirectoryWriteError: the file cannot be written (disk full, a
                file-size limit, a read-only directory); the temporary file
                is removed and the checkpoints already there are unchanged.
        """
        import torch

        path = checkpoint_path(self.path, iteration)
        payload = {
            "model_state_dict": model_state,
            "optimizer_state_dict": optimizer_state,
            "moving_counts": moving_counts,
            "iteration": iteration,
        }
        payload[CHECKSUM_KEY] = state_checksum(payload)
        self._write_atomic(path.name, lambda file: torch.save(payload, file))
        return path

    def load(self, iteration: int, path: Path) -> Checkpoint:
        """The checkpoint in ``path``, loaded with ``weights_only=True``, its
        checksum verified (checkpoints of earlier versions have none).

        Raises:
            RunDirectoryError: the file is truncated, corrupt, damaged (its
                checksum differs) or incomplete (the message names it and
                says why).
        """
        import torch

        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except _LOAD_ERRORS as error:
            size = path.stat().st_size if path.exists() else 0
            raise RunDirectoryError(
                f"{path} is truncated or corrupt ({size} bytes): {error}"
            ) from None
        if not isinstance(state, dict):
            raise RunDirectoryError(f"{path} holds a {type(state).__name__}, not a checkpoint")
        missing = [k for k in ("model_state_dict", "optimizer_state_dict") if k not in state]
        if missing:
            raise RunDirectoryError(f"{path} has no {missing}")
        mismatch = checksum_error(state)
        if mismatch:
            raise RunDirectoryError(f"{path}: {mismatch}")
        if state.get("iteration", iteration) != iteration:
            raise RunDirectoryError(f"{path} holds iteration {state['iteration']}")
        counts = state.get("moving_counts")
        if counts is None:
            raise RunDirectoryError(f"{path} holds no moving counts")
        if not isinstance(counts, dict) or not isinstance(counts.get("moving_counts"), list):
            raise RunDirectoryError(f"{path}: moving counts are not {{'moving_counts': [...]}}")
        return Checkpoint(
            iteration, path, state["model_state_dict"], state["optimizer_state_dict"], counts
        )

    def newest_complete(self) -> Checkpoint | None:
        """The newest checkpoint that loads completely, or ``None``. Each
        newer one that does not is skipped with a warning naming the file
        and why; the list is kept in :attr:`skipped`."""
        self.skipped = []
        for iteration, path in self.checkpoint_files():
            try:
                return self.load(iteration, path)
            except RunDirectoryError as error:
                logger.warning("skipping checkpoint %s: %s", path.name, error)
                self.skipped.append((path, str(error)))
        return None

    # -- the summary ------------------------------------------------------

    def read_summary(self) -> dict[str, Any] | None:
        """``summary.json``, or ``None`` if absent or unreadable."""
        path = self.path / SUMMARY_NAME
        try:
            summary = json.loads(path.read_text())
        except FileNotFoundError:
            return None
        except (ValueError, UnicodeDecodeError) as error:
            logger.warning("ignoring unreadable %s: %s", path, error)
            return None
        return summary if isinstance(summary, dict) else None

    def write_summary(self, summary: dict[str, Any]) -> bool:
        """Write ``summary`` atomically unless the stored one is better
        informed. ``summary["iterations"]`` is the iteration of the evaluated
        model and ``summary["trained"]`` how many iterations this run trained.

        The stored summary is kept when it is of a later iteration, or of the
        same iteration while this run trained nothing (a rerun that only
        re-evaluated). A run that trained up to the stored iteration again
        (after skipping a broken checkpoint) replaces it: its model is the one
        now saved. Returns whether ``summary`` was written.
        """
        stored = self.read_summary()
        old = stored.get("iterations") if stored else None
        new = summary["iterations"]
        if isinstance(old, int) and (old > new or (old == new and not summary["trained"])):
            logger.info("keeping %s of iteration %d (this one: %d)", SUMMARY_NAME, old, new)
            return False
        self._write_atomic(SUMMARY_NAME, json.dumps(summary, indent=2).encode())
        return True

    # -- writing ----------------------------------------------------------

    def _write_atomic(self, name: str, content: bytes | Callable[[BinaryIO], object]) -> None:
        """Write ``content`` (bytes, or a function writing to a binary file)
        to a temporary file beside ``name``, fsync it, rename it to ``name``
        and fsync the directory: a reader sees the old file or the new one."""
        self._require_lock()
        # not tempfile.mkstemp: its files are private (0600); these get the
        # permissions of any file the user creates (0666 less the umask)
        temporary = self.path / f".{name}.{os.getpid()}-{secrets.token_hex(4)}.tmp"
        try:
            fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o666)
            try:
                with os.fdopen(fd, "wb") as file:
                    if isinstance(content, bytes):
                        file.write(content)
                    else:
                        content(file)
                    file.flush()
                    os.fsync(file.fileno())
                os.replace(temporary, self.path / name)
            except BaseException:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(temporary)
                raise
            _fsync_directory(self.path)
        except OSError as error:
            raise RunDirectoryWriteError(self._write_failure(name, error)) from None
        except RuntimeError as error:  # torch.save wraps the OSError of its writer
            if not isinstance(error.__cause__ or error.__context__, OSError):
                raise
            raise RunDirectoryWriteError(self._write_failure(name, error)) from None

    def _write_failure(self, name: str, error: Exception) -> str:
        """One line: what could not be written where, and that nothing was lost."""
        reason = getattr(error, "strerror", None) or str(error).splitlines()[0]
        cause = error.__cause__ or error.__context__
        if not getattr(error, "strerror", None) and isinstance(cause, OSError) and cause.strerror:
            reason = cause.strerror
        match = _CHECKPOINT.match(name)
        if match:
            kept = [i for i, _ in self.checkpoint_files() if i != int(match.group(1))]
            newest = f"the newest is iteration {kept[0]}" if kept else "there are none yet"
            return (
                f"cannot write checkpoint {self.path / name} ({reason}): nothing was lost, "
                f"the partial file was removed and the checkpoints already in {self.path} "
                f"are unchanged ({newest}); make room and rerun to resume from there"
            )
        return (
            f"cannot write {self.path / name} ({reason}): nothing was lost, the partial file "
            f"was removed and the files already in {self.path} are unchanged"
        )
