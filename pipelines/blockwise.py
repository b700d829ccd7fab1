"""Hot-distance targets and prediction for whole zarr volumes, block by block on daisy.

Two commands (``python -m pipelines.blockwise --help``)::

    python -m pipelines.blockwise targets --input data.zarr --gt gt --mask mask \\
        --output out.zarr --block-shape 32 64 64 --workers 2 [--config run/config.json]
    python -m pipelines.blockwise predict --run runs/demo --input data.zarr --raw eval/raw \\
        --output out.zarr --block-shape 32 128 128 --workers 2

Block shapes are in **voxels**; contexts are in **world units**. Each command
builds one ``daisy.Task`` (daisy 2.0.0, the newest release that installs with
gunpowder 1.4 / funlib.persistence 0.6 / zarr 2; its workers are subprocesses
that receive the pickled job and run ``job(block)`` per block) and writes into
datasets prepared with funlib.persistence in ``--output``.

Geometry (one axis; ``W`` the volume, ``c`` the context)::

    volume W        |=================================================|
    total ROI   |<c>|=================================================|<c>|
    write ROIs      [ block 0  ][ block 1  ][ block 2  ][ blk 3 ]        (fit="shrink":
    read ROI 1             |<c>[ block 1  ]<c>|                          the last block
    targets reads          R = (write grown by c) ∩ W                    ends at W)
    predict reads          write grown by c, zeros outside W

Write ROIs tile ``W`` from its first voxel; blocks read their inputs
independently (``read_write_conflict=False``: inputs and outputs are
different datasets). Output chunks divide the block shape, so no two blocks
ever write the same chunk.

Targets: exactness condition
----------------------------
A block computes ``process`` on ``R``, the write ROI ``B`` grown by ``c``
(default: ``max_distance = scale_factor`` per axis, rounded *up* to whole
voxels) and clipped to ``W``, then crops to ``B``. Faces (between differently
labelled neighbours) seen by the block are the faces of ``W`` with both voxels
in ``R``; every other face of ``W`` lies on or beyond a side of ``R`` that is
not a side of ``W`` (an *open* side). Let ``m(v)`` be the world distance from
the centre of ``v`` to the nearest open side of ``R`` (infinite if ``R = W``).
Then, per channel, the blockwise target equals the whole-volume target at
``v`` **iff it is guaranteed by**::

    m(v) = inf                                  (the block sees the whole volume), or
    the channel has a face inside R  and  |d_R(v)| <= m(v)

because ``d_W(v) = min(|d_R(v)|, distance to unseen faces)`` and unseen faces
are at least ``m(v)`` away. Every voxel of ``B`` has ``m(v) >= c + vs/2``, so
all voxels with ``|d| <= c`` are exact; elsewhere both block and whole-volume
distances are ``>= m(v)`` (tanh ``>= tanh(m/scale_factor)``, about 0.76 for
``c = scale_factor``). A channel without a face in ``R`` falls back to
``±min(shape(R) * vs / 2)``, which is not the whole-volume value.
Hot channels are always equal. ``tests/test_blockwise.py`` checks equality on
exactly the voxels this condition marks.

Distance mask per block: ``create_distance_mask`` over ``R`` (crop edge =
edge of ``R``, as the gunpowder nodes do with their grown GT region), cropped
to ``B``. With ``b`` the distance to the nearest unknown voxel, ``b_R =
min(b_W, distance beyond an open side of R)`` and, where a face is seen,
``|t_R| >= |t_W|``; so the blockwise distance mask zeroes a superset of the
whole-volume one (``block <= whole``), and equals it wherever the target is
exact (above) and ``b_W(v) <= e(v)``, ``e(v)`` the distance from ``v`` to the
nearest voxel beyond an open side of ``R``.

Prediction equals ``predict_volume`` in one piece: blocks are multiples of
the model's output tile and start on the tile grid laid from the volume's
first voxel, raw is read with the model context and zeros outside ``W``
(the same padding ``predict_volume`` uses), and the shrunk last block
zero-extends its last tile exactly as ``predict_volume`` does.

Resuming and refusing
---------------------
Each block sets its cell of a small ``done/<command>`` zarr array (one chunk
per block) after all its outputs are written; the task's check function
skips blocks whose cell is set, so a killed run restarted with the same
arguments completes with identical output. Existing outputs are reused only
if shape, channel count, voxel size, offset, dtype and chunking match, and
the done array only if it was written with the same inputs, parameters and
block shape; anything else is refused with an :class:`OutputMismatchError`
naming the dataset and never overwritten.

Failures: a block that raises is retried (``max_retries``) in a fresh worker;
the traceback goes to the worker's log (``<output>.logs/<task>/worker_N.err``)
and the run summary. After the run every done cell is checked; missing blocks
raise :class:`BlockwiseError` naming their ROIs.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import math
import os
import sys
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import daisy
import numpy as np
import numpy.typing as npt
import zarr
from funlib.geometry import Coordinate, Roi
from funlib.persistence import Array, open_ds, prepare_ds

from gp_hotdistance.predictor import HotDistancePredictor
from pipelines.common import (
    checkpoint_path,
    latest_checkpoint,
    load_model,
    make_predictor,
    normalize_raw,
    resolve_device,
)
from pipelines.config import Config, ConfigError, from_dict, load_config

logger = logging.getLogger(__name__)

MAX_CHUNK = 64  # largest chunk edge (voxels) of the prepared outputs


class OutputMismatchError(ValueError):
    """An existing output that this run would have to overwrite."""


class BlockwiseError(RuntimeError):
    """A blockwise run that did not complete every block."""


@dataclass(frozen=True)
class Report:
    """What a blockwise run did. ``voxels`` counts the volume once;
    ``seconds`` is the wall time of ``run_blockwise``."""

    task_id: str
    blocks: int
    completed: int
    skipped: int
    retried_error: str | None
    voxels: int
    seconds: float

    @property
    def voxels_per_second(self) -> float:
        return self.voxels / self.seconds if self.seconds > 0 else math.inf


# ---------------------------------------------------------------------------
# outputs and done markers
# ---------------------------------------------------------------------------


@dataclass(frozen=True)
class OutputSpec:
    """A channels-first output dataset ``container/name`` over ``roi``."""

    name: str
    channels: int
    dtype: np.dtype
    roi: Roi
    voxel_size: Coordinate
    axis_names: tuple[str, ...]  # spatial
    units: tuple[str, ...]

    @property
    def shape(self) -> tuple[int, ...]:
        return (self.channels, *(self.roi.shape / self.voxel_size))


def chunk_shape_for(block_shape: Sequence[int]) -> tuple[int, ...]:
    """Per axis, the largest divisor of the block shape that is <= ``MAX_CHUNK``."""
    return tuple(max(d for d in range(1, min(b, MAX_CHUNK) + 1) if b % d == 0) for b in block_shape)


def prepare_output(container: Path, spec: OutputSpec, block_shape: Sequence[int]) -> None:
    """Create ``container/spec.name``, or check that the existing dataset is
    exactly what this run writes.

    Raises:
        OutputMismatchError: the existing dataset differs in shape, channel
            count, voxel size, offset, dtype or has chunks that straddle blocks.
    """
    path = container / spec.name
    if path.exists():
        try:
            existing = open_ds(str(path), mode="r")
        except Exception as error:
            raise OutputMismatchError(
                f"refusing to overwrite {path}: it exists but is not a readable array ({error})"
            ) from error
        problems = []
        shape = tuple(existing.shape)
        spatial = len(spec.voxel_size)
        if len(shape) != spatial + 1:
            problems.append(f"shape {shape}, expected (channels, *spatial) = {spec.shape}")
        else:
            if shape[0] != spec.channels:
                problems.append(f"{shape[0]} channels, expected {spec.channels}")
            if shape[1:] != spec.shape[1:]:
                problems.append(f"spatial shape {shape[1:]}, expected {spec.shape[1:]}")
        if Coordinate(existing.voxel_size) != spec.voxel_size:
            problems.append(f"voxel size {existing.voxel_size}, expected {spec.voxel_size}")
        if Coordinate(existing.offset) != spec.roi.offset:
            problems.append(f"offset {existing.offset}, expected {spec.roi.offset}")
        if np.dtype(existing.dtype) != spec.dtype:
            problems.append(f"dtype {existing.dtype}, expected {spec.dtype}")
        chunks = tuple(existing._source_data.chunks)[1:]
        if len(chunks) == len(block_shape) and any(
            b % c for b, c in zip(block_shape, chunks, strict=True)
        ):
            problems.append(
                f"chunks {chunks} do not divide the block shape {tuple(block_shape)} "
                "(concurrent blocks would write the same chunk)"
            )
        if problems:
            raise OutputMismatchError(
                f"refusing to overwrite existing dataset {path}: " + "; ".join(problems)
            )
        logger.info("reusing existing dataset %s", path)
        return
    prepare_ds(
        str(path),
        shape=spec.shape,
        offset=spec.roi.offset,
        voxel_size=spec.voxel_size,
        axis_names=["c^", *spec.axis_names],
        units=list(spec.units),
        chunk_shape=(spec.channels, *chunk_shape_for(block_shape)),
        dtype=spec.dtype,
        mode="w-",
    )


@dataclass(frozen=True)
class DoneMarkers:
    """One uint8 cell per block in a zarr array (one chunk per cell),
    set after the block's outputs are written."""

    path: str
    begin: Coordinate  # world offset of the first write ROI
    block_size: Coordinate  # world size of a write ROI
    grid_shape: tuple[int, ...]

    def prepare(self, signature: dict[str, Any]) -> None:
        """Create the array, or check that the existing one belongs to a run
        with the same ``signature`` (inputs, parameters, block shape)."""
        path = Path(self.path)
        if path.exists():
            try:
                existing = zarr.open_array(self.path, mode="r")
                stored = existing.attrs.asdict().get("signature")
            except Exception as error:
                raise OutputMismatchError(
                    f"refusing to overwrite {path}: it exists but is not a done-marker array"
                ) from error
            if stored != signature or tuple(existing.shape) != self.grid_shape:
                changed = sorted(
                    k
                    for k in set(signature) | set(stored or {})
                    if (stored or {}).get(k) != signature.get(k)
                )
                raise OutputMismatchError(
                    f"refusing to resume into {path}: it was written by a run with different "
                    f"{', '.join(changed) or 'block grid'} (stored "
                    f"{ {k: (stored or {}).get(k) for k in changed} }, this run "
                    f"{ {k: signature.get(k) for k in changed} }); remove it and the outputs, "
                    "or use another --output"
                )
            return
        array = zarr.open_array(
            self.path,
            mode="w-",
            shape=self.grid_shape,
            chunks=(1,) * len(self.grid_shape),
            dtype=np.uint8,
            fill_value=0,
        )
        array.attrs["signature"] = signature

    def index(self, write_roi: Roi) -> tuple[int, ...]:
        return tuple((write_roi.offset - self.begin) / self.block_size)

    def is_done(self, write_roi: Roi) -> bool:
        return bool(zarr.open_array(self.path, mode="r")[self.index(write_roi)])

    def mark(self, write_roi: Roi) -> None:
        zarr.open_array(self.path, mode="r+")[self.index(write_roi)] = 1

    def done(self) -> npt.NDArray[np.bool_]:
        """The done flag of every block, shaped like the block grid."""
        return zarr.open_array(self.path, mode="r")[...] != 0


def _signature_value(value: Any) -> Any:
    """``value`` as plain JSON (tuples to lists), for comparing signatures."""
    return json.loads(json.dumps(value, default=list))


# ---------------------------------------------------------------------------
# jobs: one block's work, pickled into daisy's worker processes
# ---------------------------------------------------------------------------


@dataclass
class BlockJob:
    """Geometry and bookkeeping shared by the blockwise jobs.

    ``volume_roi``, ``block_size`` and ``context`` are world units;
    ``job(block)`` processes a block and then marks it done.
    """

    task_id: str
    output: str
    volume_roi: Roi
    voxel_size: Coordinate
    block_size: Coordinate
    context: Coordinate
    done_dataset: str
    threads: int

    def __post_init__(self) -> None:
        self._cache: dict[str, Any] = {}

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_cache"] = {}
        return state

    @property
    def markers(self) -> DoneMarkers:
        grid = tuple(
            -(-s // b) for s, b in zip(self.volume_roi.shape, self.block_size, strict=True)
        )
        return DoneMarkers(
            str(Path(self.output) / self.done_dataset),
            self.volume_roi.offset,
            self.block_size,
            grid,
        )

    def block_count(self) -> int:
        return int(np.prod(self.markers.grid_shape))

    def task(self, num_workers: int, max_retries: int, timeout: float | None) -> daisy.Task:
        """The daisy task: write ROIs tile ``volume_roi``, read ROIs add ``context``."""
        total = self.volume_roi.grow(self.context, self.context)
        read = Roi(-self.context, self.block_size + self.context * 2)
        write = Roi((0,) * self.block_size.dims, self.block_size)
        with warnings.catch_warnings():
            # daisy warns that check functions are slower than its own done
            # markers; ours reads one byte per block and lives with the outputs
            warnings.filterwarnings("ignore", message=r"Task\(check_function", category=UserWarning)
            return daisy.Task(
                self.task_id,
                total_roi=total,
                read_roi=read,
                write_roi=write,
                process_function=self,
                check_function=self.check,
                read_write_conflict=False,
                fit="shrink",
                max_workers=num_workers,
                max_retries=max_retries,
                timeout=timeout,
                done_marker_path=False,
            )

    def check(self, block: daisy.Block) -> bool:
        return self.markers.is_done(block.write_roi)

    def __call__(self, block: daisy.Block) -> None:
        started = time.perf_counter()
        self._set_threads()
        self.process(block.write_roi.intersect(self.volume_roi))
        self.markers.mark(block.write_roi)
        logger.info(
            "block %s %s done in %.2f s",
            block.block_id,
            block.write_roi,
            time.perf_counter() - started,
        )

    def process(self, write_roi: Roi) -> None:  # pragma: no cover - abstract
        raise NotImplementedError

    def signature(self) -> dict[str, Any]:
        """Everything the outputs depend on, stored with the done markers."""
        return _signature_value(
            {
                "task": self.task_id,
                "volume_roi": [list(self.volume_roi.offset), list(self.volume_roi.shape)],
                "voxel_size": list(self.voxel_size),
                "block_size": list(self.block_size),
                "context": list(self.context),
            }
        )

    def _set_threads(self) -> None:
        if self.threads < 1 or self._cache.get("threads_set"):
            return
        import numba

        numba.set_num_threads(min(self.threads, numba.config.NUMBA_NUM_THREADS))
        if "torch" in sys.modules:
            sys.modules["torch"].set_num_threads(self.threads)
        self._cache["threads_set"] = True

    def _open(self, key: str, path: str, mode: str = "r") -> Array:
        if key not in self._cache:
            self._cache[key] = open_ds(path, mode=mode)
        return self._cache[key]


@dataclass
class TargetsJob(BlockJob):
    """Targets ``[hot x C, tanh(d / scale_factor) x C]`` (float32) and the
    distance mask (``C`` channels, the mask's dtype) of one block."""

    gt: str = ""
    mask: str | None = None
    target_dataset: str = "target"
    distance_mask_dataset: str = "distance_mask"
    predictor: HotDistancePredictor | None = None

    def process(self, write_roi: Roi) -> None:
        predictor = self.predictor
        assert predictor is not None
        read_roi = write_roi.grow(self.context, self.context).intersect(self.volume_roi)
        gt = self._open("gt", self.gt)
        labels = np.asarray(gt[read_roi])
        target = predictor.process(labels, self.voxel_size)
        mask = None if self.mask is None else np.asarray(self._open("mask", self.mask)[read_roi])
        distance_mask = predictor.create_distance_mask(
            target[predictor.classes :], mask, self.voxel_size
        )
        crop = _crop(write_roi, read_roi, self.voxel_size)
        out = Path(self.output)
        self._open("target", str(out / self.target_dataset), "r+")[write_roi] = target[crop]
        self._open("distance_mask", str(out / self.distance_mask_dataset), "r+")[write_roi] = (
            distance_mask[crop]
        )

    def signature(self) -> dict[str, Any]:
        predictor = self.predictor
        assert predictor is not None
        return {
            **super().signature(),
            **_signature_value(
                {
                    "gt": str(Path(self.gt).resolve()),
                    "mask": None if self.mask is None else str(Path(self.mask).resolve()),
                    "channels": predictor.channels,
                    "class_ids": predictor.class_ids,
                    "scale_factor": predictor.scale_factor,
                    "epsilon": predictor.epsilon,
                    "threshold": predictor.threshold,
                }
            ),
        }


@dataclass
class PredictJob(BlockJob):
    """Raw prediction (``2C`` float32 channels) and segmentation (``C``
    uint8 channels, ``sigmoid(hot) > 0.5``) of one block."""

    raw: str = ""
    checkpoint: str = ""
    config: dict[str, Any] | None = None
    output_shape: tuple[int, ...] = ()
    device: str = "cpu"
    prediction_dataset: str = "prediction"
    segmentation_dataset: str = "segmentation"

    def model(self) -> Any:
        """The model of ``config`` with the checkpoint's weights (cached per worker)."""
        if "model" not in self._cache:
            self._cache["model"] = load_model(from_dict(self.config or {}), self.checkpoint)
        return self._cache["model"]

    def process(self, write_roi: Roi) -> None:
        from gp_hotdistance.torch.inference import predict_padded
        from gp_hotdistance.torch.postprocess import segment

        model = self.model()
        self._set_torch_threads()
        raw = self._open("raw", self.raw)
        read_roi = write_roi.grow(self.context, self.context)
        padded = normalize_raw(raw.to_ndarray(read_roi, fill_value=0), raw.dtype)
        prediction = predict_padded(model, padded, self.output_shape, self.device)
        out = Path(self.output)
        self._open("prediction", str(out / self.prediction_dataset), "r+")[write_roi] = prediction
        self._open("segmentation", str(out / self.segmentation_dataset), "r+")[write_roi] = segment(
            prediction
        ).astype(np.uint8)

    def _set_torch_threads(self) -> None:
        if self.threads > 0 and not self._cache.get("torch_threads"):
            import torch

            torch.set_num_threads(self.threads)
            self._cache["torch_threads"] = True

    def signature(self) -> dict[str, Any]:
        return {
            **super().signature(),
            **_signature_value(
                {
                    "raw": str(Path(self.raw).resolve()),
                    "checkpoint": str(Path(self.checkpoint).resolve()),
                    "checkpoint_mtime": os.path.getmtime(self.checkpoint),
                    "config": self.config,
                    "output_shape": list(self.output_shape),
                }
            ),
        }


def _crop(inner: Roi, outer: Roi, voxel_size: Coordinate) -> tuple[slice, ...]:
    """Channels-first slices of ``inner`` within an array covering ``outer``."""
    begin = (inner.offset - outer.offset) / voxel_size
    shape = inner.shape / voxel_size
    return (slice(None),) + tuple(slice(b, b + s) for b, s in zip(begin, shape, strict=True))


# ---------------------------------------------------------------------------
# running
# ---------------------------------------------------------------------------


def default_threads(num_workers: int) -> int:
    """CPU threads per worker: the cores shared among the workers."""
    return max(1, (os.cpu_count() or 1) // max(1, num_workers))


def run_job(
    job: BlockJob,
    num_workers: int = 1,
    max_retries: int = 2,
    timeout: float | None = 600.0,
    progress: bool = True,
    log_dir: str | Path | None = None,
    multiprocessing: bool = True,
) -> Report:
    """Run ``job`` on daisy with ``num_workers`` worker processes.

    Blocks already marked done are skipped. Worker output and failure
    tracebacks go to ``log_dir`` (default ``<output>.logs``).
    ``multiprocessing=False`` runs every block in this process (daisy's
    serial mode: for debugging).

    Raises:
        BlockwiseError: some block is not done after its retries.
    """
    if num_workers < 1:
        raise ValueError(f"num_workers must be >= 1, got {num_workers}")
    from daisy import logging as daisy_logging

    daisy_logging.set_log_basedir(
        str(log_dir) if log_dir is not None else str(job.output).rstrip("/") + ".logs"
    )
    if not multiprocessing:
        job = dataclasses.replace(job, threads=0)  # leave this process's thread pools alone
    task = job.task(num_workers, max_retries, timeout)
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
        )
        state = states[job.task_id]
    except Exception as error:  # abandoned (workers keep crashing) or a serial-mode error
        failure = error
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
            error = f"{type(failure).__name__}: {failure}"
            counts = "daisy stopped the run"
        else:
            assert state is not None
            error = state.last_worker_error or "(no error recorded)"
            counts = f"failed {state.failed_count}, orphaned {state.orphaned_count}"
        raise BlockwiseError(
            f"{job.task_id}: {len(missing)} of {done.size} blocks not done after "
            f"{max_retries} retries ({counts}); missing write ROIs: {missing[:10]}"
            f"{' ...' if len(missing) > 10 else ''}; last error:\n{error}"
        ) from failure
    retried = state.first_worker_error
    if retried:
        logger.warning(
            "%s: some blocks failed and were retried; first error:\n%s", job.task_id, retried
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


def _block_size(block_shape: Sequence[int], voxel_size: Coordinate) -> Coordinate:
    block_shape = tuple(int(b) for b in block_shape)
    if len(block_shape) != voxel_size.dims or any(b < 1 for b in block_shape):
        raise ValueError(
            f"block_shape must be {voxel_size.dims} positive voxel counts, got {block_shape}"
        )
    return Coordinate(block_shape) * voxel_size


def targets_context(predictor: HotDistancePredictor, voxel_size: Coordinate) -> Coordinate:
    """Default targets context: ``max_distance`` per axis, rounded up to whole voxels."""
    return Coordinate(
        math.ceil(p / v) * v for p, v in zip(predictor.padding(voxel_size), voxel_size, strict=True)
    )


def plan_targets(
    gt: str | Path,
    output: str | Path,
    predictor: HotDistancePredictor,
    block_shape: Sequence[int],
    mask: str | Path | None = None,
    context: Sequence[float] | float | None = None,
    target_dataset: str = "target",
    distance_mask_dataset: str = "distance_mask",
    num_workers: int = 1,
    threads: int | None = None,
) -> TargetsJob:
    """Check the inputs, prepare (or check) the outputs and return the job.

    Args:
        gt: Ground-truth dataset path (``container/name``): binary channels
            ``(C, *spatial)`` or a class-id volume (``predictor.class_ids``).
        output: Output zarr container.
        block_shape: Write block shape in voxels.
        mask: Optional mask dataset path, spatial or ``(C, *spatial)``;
            none = all known (uint8 ones).
        context: World context per side (one value or one per axis), rounded
            up to whole voxels; default ``max_distance`` (see module docs).

    Raises:
        ValueError: bad shapes or mismatched voxel sizes.
        OutputMismatchError: an existing output does not match.
    """
    gt_array = open_ds(str(gt))
    voxel_size = Coordinate(gt_array.voxel_size)
    volume = gt_array.roi
    spatial = voxel_size.dims
    if gt_array.channel_dims == 1 and gt_array.shape[0] != predictor.classes:
        raise ValueError(
            f"gt {gt} has {gt_array.shape[0]} channels, but channels={predictor.channels}"
        )
    if gt_array.channel_dims > 1:
        raise ValueError(f"gt {gt} has {gt_array.channel_dims} channel axes, expected 0 or 1")
    mask_dtype = np.dtype(np.uint8)
    if mask is not None:
        mask_array = open_ds(str(mask))
        if Coordinate(mask_array.voxel_size) != voxel_size:
            raise ValueError(
                f"mask {mask} voxel size {mask_array.voxel_size} differs from gt {voxel_size}"
            )
        if not mask_array.roi.contains(volume):
            raise ValueError(f"mask {mask} ROI {mask_array.roi} does not contain gt ROI {volume}")
        mask_dtype = np.dtype(mask_array.dtype)
    block_size = _block_size(block_shape, voxel_size)
    if context is None:
        context_world = targets_context(predictor, voxel_size)
    else:
        values = [float(context)] * spatial if np.isscalar(context) else [float(c) for c in context]
        if len(values) != spatial or any(c < 0 for c in values):
            raise ValueError(f"context must be one or {spatial} non-negative values, got {context}")
        context_world = Coordinate(
            math.ceil(c / v) * v for c, v in zip(values, voxel_size, strict=True)
        )
    job = TargetsJob(
        task_id="targets",
        output=str(output),
        volume_roi=volume,
        voxel_size=voxel_size,
        block_size=block_size,
        context=context_world,
        done_dataset="done/targets",
        threads=threads or default_threads(num_workers),
        gt=str(gt),
        mask=None if mask is None else str(mask),
        target_dataset=target_dataset,
        distance_mask_dataset=distance_mask_dataset,
        predictor=predictor,
    )
    axis_names = tuple(gt_array.axis_names[-spatial:])
    units = tuple(gt_array.units)
    specs = [
        OutputSpec(
            target_dataset,
            predictor.embedding_dims,
            np.dtype(np.float32),
            volume,
            voxel_size,
            axis_names,
            units,
        ),
        OutputSpec(
            distance_mask_dataset,
            predictor.classes,
            mask_dtype,
            volume,
            voxel_size,
            axis_names,
            units,
        ),
    ]
    _prepare(job, specs, block_shape)
    return job


def _prepare(job: BlockJob, specs: list[OutputSpec], block_shape: Sequence[int]) -> None:
    """Check every output before creating any, then create them."""
    container = Path(job.output)
    container.mkdir(parents=True, exist_ok=True)
    if not (container / ".zgroup").exists():
        zarr.open_group(str(container), mode="a")
    existing = [s for s in specs if (container / s.name).exists()]
    for spec in existing:
        prepare_output(container, spec, block_shape)
    markers = job.markers
    markers.prepare(job.signature())
    for spec in specs:
        if spec not in existing:
            prepare_output(container, spec, block_shape)


def plan_predict(
    run: str | Path,
    raw: str | Path,
    output: str | Path,
    block_shape: Sequence[int] | None = None,
    iteration: int | None = None,
    prediction_dataset: str = "prediction",
    segmentation_dataset: str = "segmentation",
    device: str = "cpu",
    num_workers: int = 1,
    threads: int | None = None,
) -> PredictJob:
    """Check the inputs, prepare (or check) the outputs and return the job.

    Args:
        run: A training output directory (``config.json`` plus
            ``model_checkpoint_<N>`` files).
        raw: Raw dataset path (``container/name``), spatial; integers are
            divided by their dtype's maximum, as in training.
        block_shape: Write block shape in voxels, a multiple of the model's
            ``output_shape``; default ``2 * output_shape``.
        iteration: Checkpoint iteration; default the newest.

    Raises:
        ConfigError: no config or checkpoint in ``run``.
        ValueError: a block shape that is not a multiple of the output tile.
        OutputMismatchError: an existing output does not match.
    """
    from gp_hotdistance.torch.inference import context_for

    run = Path(run)
    config = load_config(run / "config.json")
    iteration = iteration if iteration is not None else latest_checkpoint(run)
    checkpoint = checkpoint_path(run, iteration)
    if iteration < 1 or not checkpoint.is_file():
        raise ConfigError(f"no checkpoint {checkpoint.name} in {run}")
    raw_array = open_ds(str(raw))
    if raw_array.channel_dims != 0:
        raise ValueError(f"raw {raw} must be spatial (one channel), got shape {raw_array.shape}")
    voxel_size = Coordinate(raw_array.voxel_size)
    output_shape = tuple(config.model.output_shape)
    if voxel_size.dims != len(output_shape):
        raise ValueError(
            f"raw {raw} has {voxel_size.dims} spatial dims, the model {len(output_shape)}"
        )
    if block_shape is None:
        block_shape = tuple(2 * o for o in output_shape)
    block_shape = tuple(int(b) for b in block_shape)
    if len(block_shape) != len(output_shape) or any(
        b < 1 or b % o for b, o in zip(block_shape, output_shape, strict=True)
    ):
        raise ValueError(
            f"block_shape {block_shape} must be a positive multiple of the model's output "
            f"tile {output_shape} (voxels), so blocks fall on the tile grid"
        )
    model = load_model(config, checkpoint)
    context_voxels = Coordinate(context_for(model, output_shape))
    predictor_channels = list(config.channels)
    job = PredictJob(
        task_id="predict",
        output=str(output),
        volume_roi=raw_array.roi,
        voxel_size=voxel_size,
        block_size=_block_size(block_shape, voxel_size),
        context=context_voxels * voxel_size,
        done_dataset="done/predict",
        threads=threads or default_threads(num_workers),
        raw=str(raw),
        checkpoint=str(checkpoint),
        config=config.to_dict(),
        output_shape=output_shape,
        device=resolve_device(device),
        prediction_dataset=prediction_dataset,
        segmentation_dataset=segmentation_dataset,
    )
    axis_names = tuple(raw_array.axis_names[-voxel_size.dims :])
    units = tuple(raw_array.units)
    classes = len(predictor_channels)
    specs = [
        OutputSpec(
            prediction_dataset,
            2 * classes,
            np.dtype(np.float32),
            raw_array.roi,
            voxel_size,
            axis_names,
            units,
        ),
        OutputSpec(
            segmentation_dataset,
            classes,
            np.dtype(np.uint8),
            raw_array.roi,
            voxel_size,
            axis_names,
            units,
        ),
    ]
    _prepare(job, specs, block_shape)
    return job


# ---------------------------------------------------------------------------
# command line
# ---------------------------------------------------------------------------


def _add_run_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--input", required=True, help="input zarr container")
    parser.add_argument("--output", required=True, help="output zarr container (created if absent)")
    parser.add_argument(
        "--block-shape",
        type=int,
        nargs="+",
        metavar="N",
        help="write block shape in VOXELS, one value per spatial axis",
    )
    parser.add_argument("--workers", type=int, default=1, help="daisy worker processes (default 1)")
    parser.add_argument(
        "--threads-per-worker",
        type=int,
        help="CPU threads per worker (numba / torch); default: cores // workers",
    )
    parser.add_argument(
        "--max-retries", type=int, default=2, help="retries of a failed block (default 2)"
    )
    parser.add_argument(
        "--block-timeout",
        type=float,
        default=600.0,
        help="seconds before a stuck block's worker is killed and the block retried (default 600)",
    )
    parser.add_argument("--log-dir", help="daisy worker logs (default: <output>.logs)")
    parser.add_argument("--no-progress", action="store_true", help="no daisy progress bar/summary")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m pipelines.blockwise",
        description=(
            "Blockwise hot-distance targets and prediction for whole zarr volumes on daisy "
            "(resumable: rerun the same command to finish a killed run)."
        ),
    )
    commands = parser.add_subparsers(dest="command", required=True)
    targets = commands.add_parser(
        "targets",
        help="targets [hot x C, tanh(d/scale) x C] and distance masks",
        description=(
            "Write the float32 target (2C channels) and the distance mask (C channels, the "
            "mask's dtype) of --gt into --output. Each block reads its write ROI grown by "
            "--context; the target is exact wherever |d| <= context (see module docs)."
        ),
    )
    _add_run_options(targets)
    targets.add_argument(
        "--gt", default=None, help="gt dataset in --input (default: config data.gt)"
    )
    targets.add_argument(
        "--mask",
        default=None,
        help="mask dataset in --input (default: config data.mask; 'none' for an all-ones mask)",
    )
    targets.add_argument("--config", help="JSON/YAML config (channels, scale_factor, class_ids)")
    targets.add_argument("--channels", nargs="+", help="channel names (override the config)")
    targets.add_argument("--scale-factor", type=float, help="tanh scale, world units (override)")
    targets.add_argument("--class-ids", type=int, nargs="+", help="class id of each channel")
    targets.add_argument(
        "--context",
        type=float,
        nargs="+",
        help="WORLD units of context per side (one value or one per axis); "
        "default: scale_factor, rounded up to whole voxels",
    )
    targets.add_argument("--target", default="target", help="output dataset (default target)")
    targets.add_argument(
        "--distance-mask", default="distance_mask", help="output dataset (default distance_mask)"
    )

    predict = commands.add_parser(
        "predict",
        help="prediction (2C float32) and segmentation (C uint8) with a trained checkpoint",
        description=(
            "Predict --raw with a checkpoint of a training run (pipelines.train --out RUN). "
            "Blocks must be multiples of the model's output tile; the result equals "
            "prediction of the volume in one piece."
        ),
    )
    _add_run_options(predict)
    predict.add_argument("--run", required=True, help="training output directory (config.json)")
    predict.add_argument("--iteration", type=int, help="checkpoint iteration (default: newest)")
    predict.add_argument(
        "--raw", default=None, help="raw dataset in --input (default: config data.raw)"
    )
    predict.add_argument("--device", default="cpu", choices=("auto", "cpu", "cuda"))
    predict.add_argument("--prediction", default="prediction", help="output dataset")
    predict.add_argument("--segmentation", default="segmentation", help="output dataset")
    return parser


def _targets_predictor(args: argparse.Namespace) -> tuple[HotDistancePredictor, Config]:
    config = load_config(args.config)
    if args.channels is not None:
        config = config.replace(channels=list(args.channels))
    if args.scale_factor is not None:
        config = config.replace(scale_factor=float(args.scale_factor))
    if args.class_ids is not None:
        config = config.replace(
            data=dataclasses.replace(config.data, class_ids=list(args.class_ids))
        )
    config = from_dict(config.to_dict())
    return make_predictor(config), config


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    container = Path(args.input)
    try:
        if args.command == "targets":
            predictor, config = _targets_predictor(args)
            gt = args.gt or config.data.gt
            mask = args.mask if args.mask is not None else config.data.mask
            if mask is not None and mask.lower() == "none":
                mask = None
            if args.block_shape is None:
                raise ConfigError("--block-shape is required for targets")
            job: BlockJob = plan_targets(
                container / gt,
                args.output,
                predictor,
                args.block_shape,
                mask=None if mask is None else container / mask,
                context=args.context,
                target_dataset=args.target,
                distance_mask_dataset=args.distance_mask,
                num_workers=args.workers,
                threads=args.threads_per_worker,
            )
        else:
            raw = args.raw or load_config(Path(args.run) / "config.json").data.raw
            job = plan_predict(
                args.run,
                container / raw,
                args.output,
                args.block_shape,
                iteration=args.iteration,
                prediction_dataset=args.prediction,
                segmentation_dataset=args.segmentation,
                device=args.device,
                num_workers=args.workers,
                threads=args.threads_per_worker,
            )
        report = run_job(
            job,
            num_workers=args.workers,
            max_retries=args.max_retries,
            timeout=args.block_timeout,
            progress=not args.no_progress,
            log_dir=args.log_dir,
        )
    except (ConfigError, ValueError, BlockwiseError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2 if not isinstance(error, BlockwiseError) else 1
    print(
        f"{report.task_id}: {report.blocks} blocks ({report.skipped} already done), "
        f"{report.voxels} voxels in {report.seconds:.1f} s = {report.voxels_per_second:.3g} voxels/s"
        f"{'; some blocks were retried (see logs)' if report.retried_error else ''}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
