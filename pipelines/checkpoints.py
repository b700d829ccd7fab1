"""The checkpoint file: its name, its contents, its checksum and loading it.

A run directory (:mod:`pipelines.rundir`) holds one file per saved
iteration N, ``model_checkpoint_<N>`` (:func:`checkpoint_path`): one
``torch.save`` of ``{"model_state_dict", "optimizer_state_dict",
"moving_counts", "iteration", "checksum"}`` (:func:`checkpoint_state`), a
superset of what :func:`pipelines.common.load_model` and gunpowder's
``Train`` read. ``checksum`` is :func:`state_checksum` of every other key,
verified on load (:func:`checksum_error`; checkpoints of earlier versions
have none). :func:`load_checkpoint` loads one with ``weights_only=True``
into a :class:`Checkpoint`, or says why it cannot.
"""

from __future__ import annotations

import dataclasses
import hashlib
import pickle
import re
import zipfile
from pathlib import Path
from typing import Any

from pipelines.config import ConfigError

CHECKPOINT_BASENAME = "model"
CHECKSUM_KEY = "checksum"
"""The key of a checkpoint's :func:`state_checksum` (of every other key)."""

CHECKPOINT_NAME = re.compile(rf"^{CHECKPOINT_BASENAME}_checkpoint_(\d+)$")
"""A checkpoint's file name; group 1 is its iteration."""

# what torch.load raises for a truncated, corrupt or non-weights-only file
_LOAD_ERRORS = (
    RuntimeError,
    EOFError,
    OSError,
    ValueError,
    pickle.UnpicklingError,
    zipfile.BadZipFile,
)


class CheckpointError(ConfigError):
    """A checkpoint file that cannot be used: truncated, corrupt, damaged
    (its checksum differs) or incomplete (the message names it and says why)."""


@dataclasses.dataclass(frozen=True)
class Checkpoint:
    """A complete checkpoint: states to restore and the iteration it ends."""

    iteration: int
    path: Path
    model_state: dict[str, Any]
    optimizer_state: dict[str, Any]
    moving_counts: dict[str, Any]


def checkpoint_path(out: Path, iteration: int) -> Path:
    """Where the checkpoint of ``iteration`` lives in run directory ``out``."""
    return Path(out) / f"{CHECKPOINT_BASENAME}_checkpoint_{iteration}"


def state_checksum(state: Any) -> str:
    """``sha256:<hex>`` over everything in ``state`` (nested dicts, lists and
    tuples of tensors, numbers, strings): each tensor's dtype, shape and
    bytes, each other value's ``repr``, dict keys in sorted order. Equal for
    a state and the same state loaded back by ``torch.load``."""
    import torch

    digest = hashlib.sha256()

    def walk(value: Any) -> None:
        if isinstance(value, torch.Tensor):
            tensor = value.detach().cpu().contiguous()
            digest.update(f"T{tensor.dtype}{tuple(tensor.shape)}".encode())
            digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
        elif isinstance(value, dict):
            digest.update(f"D{len(value)}".encode())
            for key in sorted(value, key=repr):
                digest.update(f"K{key!r}".encode())
                walk(value[key])
        elif isinstance(value, (list, tuple)):
            digest.update(f"L{len(value)}".encode())
            for item in value:
                walk(item)
        else:
            digest.update(f"V{value!r}".encode())

    walk(state)
    return f"sha256:{digest.hexdigest()}"


def checksum_error(state: dict[str, Any]) -> str | None:
    """Why a loaded checkpoint ``state`` does not match the checksum saved
    in it (``None``: it matches, or it has none, as checkpoints of earlier
    versions)."""
    expected = state.get(CHECKSUM_KEY)
    if expected is None:
        return None
    actual = state_checksum({k: v for k, v in state.items() if k != CHECKSUM_KEY})
    if actual != expected:
        return (
            f"its contents do not match the checksum saved with them ({actual[:19]}... "
            f"instead of {str(expected)[:19]}...): the file was damaged or changed after it "
            "was written"
        )
    return None


def checkpoint_state(
    iteration: int,
    model_state: dict[str, Any],
    optimizer_state: dict[str, Any],
    moving_counts: dict[str, Any],
) -> dict[str, Any]:
    """What the checkpoint of ``iteration`` holds, its checksum included."""
    state = {
        "model_state_dict": model_state,
        "optimizer_state_dict": optimizer_state,
        "moving_counts": moving_counts,
        "iteration": iteration,
    }
    state[CHECKSUM_KEY] = state_checksum(state)
    return state


def load_checkpoint(iteration: int, path: Path) -> Checkpoint:
    """The checkpoint of ``iteration`` in ``path``, loaded with
    ``weights_only=True``, its checksum verified (checkpoints of earlier
    versions have none).

    Raises:
        CheckpointError: the file is truncated, corrupt, damaged (its
            checksum differs) or incomplete (the message names it and says
            why).
    """
    import torch

    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except _LOAD_ERRORS as error:
        size = path.stat().st_size if path.exists() else 0
        raise CheckpointError(f"{path} is truncated or corrupt ({size} bytes): {error}") from None
    if not isinstance(state, dict):
        raise CheckpointError(f"{path} holds a {type(state).__name__}, not a checkpoint")
    missing = [k for k in ("model_state_dict", "optimizer_state_dict") if k not in state]
    if missing:
        raise CheckpointError(f"{path} has no {missing}")
    mismatch = checksum_error(state)
    if mismatch:
        raise CheckpointError(f"{path}: {mismatch}")
    if state.get("iteration", iteration) != iteration:
        raise CheckpointError(f"{path} holds iteration {state['iteration']}")
    counts = state.get("moving_counts")
    if counts is None:
        raise CheckpointError(f"{path} holds no moving counts")
    if not isinstance(counts, dict) or not isinstance(counts.get("moving_counts"), list):
        raise CheckpointError(f"{path}: moving counts are not {{'moving_counts': [...]}}")
    return Checkpoint(
        iteration, path, state["model_state_dict"], state["optimizer_state_dict"], counts
    )
