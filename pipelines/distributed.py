"""Training on several processes under torchrun: this process's rank among
them (:class:`Distributed`), a value of rank 0 shared with every rank, a mean
over the ranks, and work done on rank 0 alone whose result (or error) every
rank sees (:func:`on_rank_zero`).

Without torchrun's environment (``RANK``, ``WORLD_SIZE``) a process is alone
and every call is local.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any, TypeVar

import torch

from pipelines.config import ConfigError


class Distributed:
    """This process's place among torchrun's processes: ``rank`` and
    ``world`` from the environment torchrun sets (``RANK``, ``WORLD_SIZE``,
    ``LOCAL_RANK``); one process alone without it. With more than one, a
    process group (gloo on the CPU, nccl with CUDA) lives while the context
    is entered."""

    def __init__(self, device: str) -> None:
        self.rank = int(os.environ.get("RANK", 0))
        self.world = int(os.environ.get("WORLD_SIZE", 1))
        self.device = device
        if device == "cuda" and self.world > 1:
            self.device = f"cuda:{int(os.environ.get('LOCAL_RANK', 0))}"

    def __enter__(self) -> Distributed:
        if self.world > 1:
            if self.device.startswith("cuda"):
                torch.cuda.set_device(self.device)
            backend = "nccl" if self.device.startswith("cuda") else "gloo"
            torch.distributed.init_process_group(backend)
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self.world > 1:
            torch.distributed.destroy_process_group()

    def share(self, value: Any) -> Any:
        """Rank 0's ``value`` on every rank."""
        if self.world == 1:
            return value
        shared = [value]
        torch.distributed.broadcast_object_list(shared, src=0)
        return shared[0]

    def mean(self, value: float) -> float:
        """The mean of ``value`` over the ranks."""
        if self.world == 1:
            return value
        tensor = torch.tensor([value], dtype=torch.float64, device=self.device)
        torch.distributed.all_reduce(tensor)
        return float(tensor) / self.world


class RankZeroFailed(ConfigError):
    """Rank 0 could not start the run (its own error says why)."""


T = TypeVar("T")


def on_rank_zero(dist: Distributed, work: Callable[[], T]) -> T:
    """``work()`` on rank 0, its result shared with every rank; an error on
    rank 0 stops every rank (:class:`RankZeroFailed` on the others)."""
    if dist.rank != 0:
        status, value = dist.share(None)
        if status == "error":
            raise RankZeroFailed(f"rank 0 stopped: {value}")
        return value
    try:
        result = work()
    except BaseException as error:
        dist.share(("error", str(error)))
        raise
    return dist.share(("ok", result))[1]
