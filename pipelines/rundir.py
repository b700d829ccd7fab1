"""A training run directory with one identity: a lock, the config its
checkpoints were made with, atomic checkpoints and an honest summary.

::

    run/
      .lock                 held (flock) by the training using the directory
      config.json           the config the checkpoints were made with
      model_checkpoint_<N>  one file per saved iteration N: model, optimizer,
                            moving counts (written to a temporary name, then renamed;
                            the file's format: :mod:`pipelines.checkpoints`)
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

Processes forked while the lock is held close their copy of it at once and,
on Linux, die with their parent (see :mod:`pipelines.stops`, which also
stops a training cleanly on SIGINT and SIGTERM).
"""

from __future__ import annotations

import contextlib
import datetime
import fcntl
import fnmatch
import json
import logging
import os
import re
import secrets
import socket
from collections.abc import Callable
from pathlib import Path
from typing import Any, BinaryIO

from pipelines.checkpoints import (
    CHECKPOINT_BASENAME,
    CHECKPOINT_NAME,
    Checkpoint,
    CheckpointError,
    checkpoint_path,
    checkpoint_state,
    load_checkpoint,
)
from pipelines.config import Config, ConfigError, from_dict
from pipelines.stops import held_locks

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

# temporary files this module writes: ".<final name>.<random>.tmp"
_TEMPORARY = re.compile(
    rf"^\.({CHECKPOINT_BASENAME}_checkpoint_\d+|{re.escape(CONFIG_NAME)}|"
    rf"{re.escape(SUMMARY_NAME)})\..+\.tmp$"
)


class RunDirectoryError(ConfigError):
    """A run directory that cannot be used: in use by another process, made
    with a different config, or not a directory."""


class RunDirectoryWriteError(RunDirectoryError):
    """A file of the run directory could not be written (disk full, a
    file-size limit, a read-only directory). Nothing was lost: the files
    already there are unchanged."""


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
        held_locks.add(fd)
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
        held_locks.discard(self._lock_fd)
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
            match = CHECKPOINT_NAME.match(path.name)
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
        ``torch.save`` of :func:`pipelines.checkpoints.checkpoint_state` (the
        states and their checksum, verified on load) to a temporary file,
        fsync, rename. Returns the path.

        Raises:
            RunDirectoryWriteError: the file cannot be written (disk full, a
                file-size limit, a read-only directory); the temporary file
                is removed and the checkpoints already there are unchanged.
        """
        import torch

        path = checkpoint_path(self.path, iteration)
        state = checkpoint_state(iteration, model_state, optimizer_state, moving_counts)
        self._write_atomic(path.name, lambda file: torch.save(state, file))
        return path

    def load(self, iteration: int, path: Path) -> Checkpoint:
        """The checkpoint in ``path`` (see :func:`pipelines.checkpoints.load_checkpoint`).

        Raises:
            RunDirectoryError: the file is truncated, corrupt, damaged (its
                checksum differs) or incomplete (the message names it and
                says why).
        """
        try:
            return load_checkpoint(iteration, path)
        except CheckpointError as error:
            raise RunDirectoryError(str(error)) from None

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
        match = CHECKPOINT_NAME.match(name)
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
