"""The job file of a ``--worker-command`` run: the pickled job, sealed with
an HMAC-SHA256 keyed by a secret drawn for this run.

The scheduler writes two files into ``<log-dir>/<task>/``:

- ``job.key``: the secret (hex), mode 0600;
- ``job.pickle``: ``MAGIC``, the hex HMAC of the pickle, a newline, the pickle.

Both are created with ``O_EXCL | O_NOFOLLOW``: a symbolic link or another
user's file planted at either name is refused, never followed. A worker
reads the key only from a regular 0600 file of its own user (not a link),
and unpickles the job only after the HMAC matches: a job file replaced by
anyone who cannot read the key (e.g. another member of a group that may
write the log directory) is refused before any of it is unpickled.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import pickle
import secrets
import stat
from pathlib import Path
from typing import Any

MAGIC = b"gp_hotdistance blockwise job v1\n"
SECRET_BYTES = 32


class JobFileError(RuntimeError):
    """A job or key file that cannot be written or trusted."""


def new_secret() -> bytes:
    """A fresh per-run secret."""
    return secrets.token_bytes(SECRET_BYTES)


def private_directory(path: str | Path) -> Path:
    """Create the directory ``path`` (mode 0700), or make an existing one of
    this user 0700, so that no one else can plant names in it; returns it.

    Raises:
        JobFileError: ``path`` is a symbolic link or not a directory of this
            user, or holds a symbolic link or another user's file (planted
            where daisy or this run would write).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        path.mkdir(mode=0o700)
    except FileExistsError:
        pass
    info = os.lstat(path)
    if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.getuid():
        kind = "a symbolic link" if stat.S_ISLNK(info.st_mode) else "not a directory of this user"
        raise JobFileError(f"refusing to use the log directory {path}: it is {kind}")
    os.chmod(path, 0o700)
    for entry in os.scandir(path):
        entry_info = entry.stat(follow_symlinks=False)
        if entry.is_symlink() or entry_info.st_uid != os.getuid():
            kind = "a symbolic link" if entry.is_symlink() else f"owned by uid {entry_info.st_uid}"
            raise JobFileError(
                f"refusing to use the log directory {path}: {entry.name} is {kind}, which no "
                "run of this user wrote; remove it (nothing was written through it)"
            )
    return path


def write_private(path: str | Path, data: bytes) -> None:
    """Write ``data`` to a new file ``path`` (mode 0600) created with
    ``O_EXCL | O_NOFOLLOW``. A regular file of this user already there (left
    by an earlier run) is removed first; anything else is refused.

    Raises:
        JobFileError: ``path`` is a symbolic link, another user's file or
            not a regular file, or something was created there meanwhile.
    """
    path = Path(path)
    try:
        info = os.lstat(path)
    except FileNotFoundError:
        pass
    else:
        if not stat.S_ISREG(info.st_mode) or info.st_uid != os.getuid():
            kind = "a symbolic link" if stat.S_ISLNK(info.st_mode) else "not a file of this user"
            raise JobFileError(
                f"refusing to write {path}: it is {kind}, which this run did not create; "
                "remove it (nothing was written through it)"
            )
        path.unlink()
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
    try:
        fd = os.open(path, flags, 0o600)
    except FileExistsError:
        raise JobFileError(
            f"refusing to write {path}: something was created there while this run wrote it"
        ) from None
    with os.fdopen(fd, "wb") as f:
        f.write(data)


def add_note(path: str | Path, line: str) -> None:
    """Append ``line`` to the notes file ``path`` (created 0600, never
    through a link; appends of one line from several processes do not mix)."""
    flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC
    fd = os.open(path, flags, 0o600)
    try:
        os.write(fd, (line.replace("\n", " ") + "\n").encode())
    finally:
        os.close(fd)


def take_notes(path: str | Path) -> list[str]:
    """The lines of the notes file ``path`` (none if absent); removes it."""
    path = Path(path)
    if not os.path.lexists(path):
        return []
    try:
        lines = _read(path, private=True).decode(errors="replace").splitlines()
    except JobFileError as error:
        lines = [f"unreadable notes file: {error}"]
    path.unlink()
    return lines


def _read(path: Path, private: bool) -> bytes:
    """The bytes of ``path``, opened without following a link; ``private``:
    it must also be a regular file of this user that no one else may read."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError as error:
        raise JobFileError(f"cannot open {path}: {error.strerror}") from None
    with os.fdopen(fd, "rb") as f:
        info = os.fstat(f.fileno())
        if not stat.S_ISREG(info.st_mode):
            raise JobFileError(f"{path} is not a regular file")
        if private and (info.st_uid != os.getuid() or info.st_mode & 0o077):
            raise JobFileError(
                f"refusing the key file {path}: it must belong to this user (uid "
                f"{os.getuid()}, it has {info.st_uid}) with mode 0600 (it has "
                f"{stat.S_IMODE(info.st_mode):04o})"
            )
        return f.read()


def _digest(secret: bytes, payload: bytes) -> bytes:
    return hmac.new(secret, payload, hashlib.sha256).hexdigest().encode()


def write_job(job_file: str | Path, key_file: str | Path, job: Any, secret: bytes) -> None:
    """Write ``secret`` to ``key_file`` and ``job`` sealed with it to ``job_file``."""
    payload = pickle.dumps(job)
    write_private(key_file, secret.hex().encode())
    write_private(job_file, MAGIC + _digest(secret, payload) + b"\n" + payload)


def read_secret(key_file: str | Path) -> bytes:
    """The secret in ``key_file`` (see :func:`write_job`)."""
    text = _read(Path(key_file), private=True).strip()
    try:
        secret = bytes.fromhex(text.decode("ascii"))
    except (UnicodeDecodeError, ValueError):
        secret = b""
    if len(secret) != SECRET_BYTES:
        raise JobFileError(f"key file {key_file} does not hold a {SECRET_BYTES}-byte hex key")
    return secret


def read_job(job_file: str | Path, secret: bytes) -> Any:
    """The job in ``job_file``, unpickled only if its HMAC under ``secret`` matches.

    Raises:
        JobFileError: the file is not a sealed job, or its HMAC does not
            match (it was changed, or belongs to another run).
    """
    data = _read(Path(job_file), private=False)
    header, _, payload = data[len(MAGIC) :].partition(b"\n")
    if not data.startswith(MAGIC) or not hmac.compare_digest(header, _digest(secret, payload)):
        raise JobFileError(
            f"refusing the job file {job_file}: it does not match this run's key (it was "
            "changed after the run wrote it, or belongs to another run); nothing was loaded"
        )
    return pickle.loads(payload)
