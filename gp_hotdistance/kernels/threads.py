"""Compilation and threading shared by the kernels.

:func:`jit` compiles a numba loop once and caches it on disk;
:func:`split` runs a loop ``kernel(*args, first, stop)`` over a range, cut
into one contiguous chunk per thread of :func:`kernel_threads` when the
array is large enough (the loops release the GIL).
"""

from __future__ import annotations

import inspect
import logging
import os
from concurrent.futures import ThreadPoolExecutor

import numba
import numpy as np

logger = logging.getLogger(__name__)

# Arrays of fewer voxels than this are processed on one thread: below it,
# handing work to threads costs more than it saves. Read at every call.
PARALLEL_MIN_VOXELS = 1 << 16

# Environment variable that sets the number of kernel threads.
THREADS_ENV = "GP_HOTDISTANCE_THREADS"

# names of the kernels compiled without the on-disk cache
uncached: list[str] = []

_executor: tuple[int, int, ThreadPoolExecutor] | None = None


def jit(**options):
    """``numba.njit(cache=True, **options)``: compiled on first use, then
    loaded from numba's on-disk cache. numba picks the first writable place:
    ``NUMBA_CACHE_DIR`` if set, ``__pycache__`` beside the kernel's file, else
    the user cache directory (``$XDG_CACHE_HOME/numba`` or ``~/.cache/numba``),
    so a read-only install (site-packages on a cluster, a container) still
    caches. Where none is writable, the kernels compile at every start, and a
    warning says so (numba itself would fail the import)."""

    def decorate(func):
        try:
            return numba.njit(cache=True, **options)(func)
        except RuntimeError as error:
            if "no locator available" not in str(error):
                raise
            if not uncached:
                logger.warning(
                    "no writable numba cache directory for %s (set NUMBA_CACHE_DIR): "
                    "its kernels are compiled at every start",
                    os.path.dirname(inspect.getfile(func)),
                )
            uncached.append(func.__name__)
            return numba.njit(**options)(func)

    return decorate


def kernel_threads() -> int:
    """Threads the kernels split large arrays over: ``GP_HOTDISTANCE_THREADS``
    if set, else the cores this process may run on (its CPU affinity, so a
    worker pinned to one core stays on one thread).

    Raises:
        ValueError: ``GP_HOTDISTANCE_THREADS`` is not a positive integer.
    """
    value = os.environ.get(THREADS_ENV)
    if value is not None:
        try:
            threads = int(value)
        except ValueError:
            threads = 0
        if threads < 1:
            raise ValueError(f"{THREADS_ENV} must be a positive integer, got {value!r}")
        return threads
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def threads_for(voxels: int) -> int:
    """:func:`kernel_threads` for an array of ``voxels`` voxels, 1 below
    :data:`PARALLEL_MIN_VOXELS` (the setting is checked either way)."""
    threads = kernel_threads()
    return threads if voxels >= PARALLEL_MIN_VOXELS else 1


def _pool(threads: int) -> ThreadPoolExecutor:
    """This process's thread pool of ``threads`` workers (a forked worker,
    or a changed thread count, makes a new one)."""
    global _executor
    if _executor is None or _executor[:2] != (os.getpid(), threads):
        _executor = (os.getpid(), threads, ThreadPoolExecutor(max_workers=threads))
    return _executor[2]


def split(kernel, items: int, voxels: int, *args) -> list:
    """Run ``kernel(*args, first, stop)`` over ``0 .. items - 1`` in
    contiguous chunks, one per thread of :func:`threads_for` ``(voxels)``
    (at most ``items``); return the chunks' results in order."""
    threads = min(threads_for(voxels), items)
    if threads <= 1:
        return [kernel(*args, 0, items)]
    edges = np.linspace(0, items, threads + 1).astype(int)
    futures = [
        _pool(threads).submit(kernel, *args, int(a), int(b))
        for a, b in zip(edges[:-1], edges[1:], strict=True)
    ]
    return [future.result() for future in futures]
