"""Block jobs: one block's work, pickled into daisy's worker processes.

A job reads and writes its datasets as volumes
(:class:`~gp_hotdistance.data.volume.Volume`: zarr alone, no
funlib.persistence, dask, gunpowder or torch on the targets path), so a
worker starts in about a second.
"""

from __future__ import annotations

import logging
import os
import sys
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import daisy
import numpy as np
import numpy.typing as npt
from funlib.geometry import Coordinate, Roi

from gp_hotdistance.data.ome import open_volume
from gp_hotdistance.data.volume import Volume, VolumeWriteError
from gp_hotdistance.geometry import relative_slices
from pipelines.blockwise.outputs import DoneMarkers, array_path, signature_value

if TYPE_CHECKING:
    from gp_hotdistance.data.sample import Sample
    from gp_hotdistance.predictor import HotDistancePredictor

logger = logging.getLogger(__name__)


class BlockWriteError(RuntimeError):
    """A block's output that cannot be written (disk full, read-only, ...)."""

    def __init__(self, error: VolumeWriteError) -> None:
        super().__init__(
            f"{error}; blocks finished before are kept: make room or fix the permissions "
            "and rerun the same command to resume"
        )


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

    def output_volume(self, name: str) -> Volume:
        """Output ``name``'s level array ``name/s0`` (over ``volume_roi``),
        opened once per process."""
        key = f"output {name}"
        if key not in self._cache:
            self._cache[key] = open_volume(array_path(self.output, name))
        return self._cache[key]

    def write_output(self, name: str, roi: Roi, data: npt.NDArray) -> None:
        """Write ``data`` (every channel) over ``roi`` of output ``name``.

        Raises:
            BlockWriteError: the file system refused.
        """
        try:
            self.output_volume(name).write(roi, data)
        except VolumeWriteError as error:
            raise BlockWriteError(error) from error

    def task(
        self,
        num_workers: int,
        max_retries: int,
        timeout: float | None,
        process_function: Any = None,
        max_worker_restarts: int | None = None,
    ) -> daisy.Task:
        """The daisy task: write ROIs tile ``volume_roi``, read ROIs add
        ``context``. ``process_function`` defaults to this job (run per block
        by daisy's own workers); a worker launcher replaces it."""
        total = self.volume_roi.grow(self.context, self.context)
        read = Roi(-self.context, self.block_size + self.context * 2)
        write = Roi((0,) * self.block_size.dims, self.block_size)
        restarts = (
            {} if max_worker_restarts is None else {"max_worker_restarts": max_worker_restarts}
        )
        with warnings.catch_warnings():
            # daisy warns that check functions are slower than its own done
            # markers; ours reads one byte per block and lives with the outputs
            warnings.filterwarnings("ignore", message=r"Task\(check_function", category=UserWarning)
            return daisy.Task(
                self.task_id,
                total_roi=total,
                read_roi=read,
                write_roi=write,
                process_function=self if process_function is None else process_function,
                check_function=self.check,
                read_write_conflict=False,
                fit="shrink",
                max_workers=num_workers,
                max_retries=max_retries,
                timeout=timeout,
                done_marker_path=False,
                **restarts,
            )

    def check_block(self, write_roi: Roi) -> None:
        """Raises ValueError unless ``write_roi`` is a block of this job's
        grid (border blocks shrink to the volume); a scheduler hands out
        nothing else."""
        begin = write_roi.offset - self.volume_roi.offset
        if (
            write_roi.empty
            or not self.volume_roi.contains(write_roi)
            or begin % self.block_size != Coordinate((0,) * self.block_size.dims)
            or any(s > b for s, b in zip(write_roi.shape, self.block_size, strict=True))
        ):
            raise ValueError(
                f"block {write_roi} is not a block of this job (blocks of {self.block_size} "
                f"tiling {self.volume_roi}); nothing was written"
            )

    def check(self, block: daisy.Block) -> bool:
        return self.markers.is_done(block.write_roi)

    def __call__(self, block: daisy.Block) -> None:
        started = time.perf_counter()
        self.check_block(block.write_roi)
        self._set_threads()
        seconds = self.process(block.write_roi.intersect(self.volume_roi))
        try:
            self.markers.mark(block.write_roi)
        except OSError as error:
            raise BlockWriteError(
                VolumeWriteError(self.markers.path, block.write_roi, error)
            ) from error
        logger.info(
            "block %s %s done in %.2f s (%s)",
            block.block_id,
            block.write_roi,
            time.perf_counter() - started,
            ", ".join(f"{k} {v:.2f} s" for k, v in seconds.items()),
        )

    def process(self, write_roi: Roi) -> dict[str, float]:  # pragma: no cover - abstract
        """Compute and write the outputs inside ``write_roi``; returns the
        seconds spent reading, computing and writing."""
        raise NotImplementedError

    def signature(self) -> dict[str, Any]:
        """Everything the outputs depend on, stored with the done markers."""
        return signature_value(
            {
                "task": self.task_id,
                "volume_roi": [list(self.volume_roi.offset), list(self.volume_roi.shape)],
                "voxel_size": list(self.voxel_size),
                "block_size": list(self.block_size),
                "context": list(self.context),
            }
        )

    def _set_threads(self) -> None:
        """Limit this worker's kernels (``GP_HOTDISTANCE_THREADS``, read by
        :func:`gp_hotdistance.kernels.kernel_threads` at every call),
        numba and an imported torch to ``threads``; 0 leaves them alone."""
        if self.threads < 1 or self._cache.get("threads_set"):
            return
        import numba

        from gp_hotdistance.kernels import THREADS_ENV

        os.environ[THREADS_ENV] = str(self.threads)
        numba.set_num_threads(min(self.threads, numba.config.NUMBA_NUM_THREADS))
        if "torch" in sys.modules:
            sys.modules["torch"].set_num_threads(self.threads)
        self._cache["threads_set"] = True


@dataclass
class TargetsJob(BlockJob):
    """Targets ``[hot x C, tanh(d / scale_factor) x C]`` (float32) and the
    distance mask (``C`` channels, the mask's dtype) of one block."""

    gt: Volume | None = None
    mask: Volume | None = None
    target_dataset: str = "target"
    distance_mask_dataset: str = "distance_mask"
    predictor: HotDistancePredictor | None = None
    sample: Sample | None = None  # instead of gt and mask: Sample.read_labels

    def process(self, write_roi: Roi) -> dict[str, float]:
        predictor, gt, sample = self.predictor, self.gt, self.sample
        if predictor is None or (gt is None) == (sample is None):
            raise ValueError("a TargetsJob needs a predictor and either a gt dataset or a sample")
        started = time.perf_counter()
        read_roi = write_roi.grow(self.context, self.context).intersect(self.volume_roi)
        if sample is not None:
            labels, mask = sample.read_labels(read_roi)
        else:
            labels = gt.read(read_roi)
            mask = None if self.mask is None else self.mask.read(read_roi)
        read = time.perf_counter()
        target = predictor.process(labels, self.voxel_size)
        distance_mask = predictor.create_distance_mask(
            target[predictor.classes :], mask, self.voxel_size
        )
        computed = time.perf_counter()
        crop = (slice(None), *relative_slices(write_roi, read_roi, self.voxel_size))
        for name, data in (
            (self.target_dataset, target),
            (self.distance_mask_dataset, distance_mask),
        ):
            self.write_output(name, write_roi, data[crop])
        written = time.perf_counter()
        return {"read": read - started, "compute": computed - read, "write": written - computed}

    def signature(self) -> dict[str, Any]:
        predictor, gt, sample = self.predictor, self.gt, self.sample
        if predictor is None or (gt is None) == (sample is None):
            raise ValueError("a TargetsJob needs a predictor and either a gt dataset or a sample")
        return {
            **super().signature(),
            **signature_value(
                {
                    "gt": str(Path(gt.path).resolve()) if gt is not None else None,
                    "sample": None if sample is None else sample_signature(sample),
                    "mask": None if self.mask is None else str(Path(self.mask.path).resolve()),
                    "outputs": [self.target_dataset, self.distance_mask_dataset],
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

    raw: Volume | None = None
    checkpoint: str = ""
    config: dict[str, Any] | None = None
    output_shape: tuple[int, ...] = ()
    device: str = "cpu"  # auto, cpu or cuda: resolved on the worker
    prediction_dataset: str = "prediction"
    segmentation_dataset: str = "segmentation"
    sample: Sample | None = None  # instead of raw: Sample.read_raw

    def model(self) -> Any:
        """The model of ``config`` with the checkpoint's weights (cached per worker)."""
        if "model" not in self._cache:
            from pipelines.common import load_model, resolve_device
            from pipelines.config import from_dict

            self._cache["model"] = load_model(from_dict(self.config or {}), self.checkpoint)
            self._cache["device"] = resolve_device(self.device)
        return self._cache["model"]

    def process(self, write_roi: Roi) -> dict[str, float]:
        from gp_hotdistance.data import normalize_raw
        from gp_hotdistance.torch.inference import predict_padded
        from gp_hotdistance.torch.postprocess import segment

        if (self.raw is None) == (self.sample is None):
            raise ValueError("a PredictJob needs either a raw dataset or a sample")
        model = self.model()
        self._set_torch_threads()
        started = time.perf_counter()
        read_roi = write_roi.grow(self.context, self.context)
        if self.sample is not None:
            padded = sample_raw_padded(self.sample, read_roi)
        else:
            padded = normalize_raw(self.raw.read_padded(read_roi), self.raw.dtype)
        read = time.perf_counter()
        prediction = predict_padded(model, padded, self.output_shape, self._cache["device"])
        segmentation = segment(prediction).astype(np.uint8)
        computed = time.perf_counter()
        for name, data in (
            (self.prediction_dataset, prediction),
            (self.segmentation_dataset, segmentation),
        ):
            self.write_output(name, write_roi, data)
        written = time.perf_counter()
        return {"read": read - started, "compute": computed - read, "write": written - computed}

    def _set_torch_threads(self) -> None:
        if self.threads > 0 and not self._cache.get("torch_threads"):
            import torch

            torch.set_num_threads(self.threads)
            self._cache["torch_threads"] = True

    def signature(self) -> dict[str, Any]:
        if (self.raw is None) == (self.sample is None):
            raise ValueError("a PredictJob needs either a raw dataset or a sample")
        return {
            **super().signature(),
            **signature_value(
                {
                    "raw": None if self.raw is None else str(Path(self.raw.path).resolve()),
                    "sample": None if self.sample is None else sample_signature(self.sample),
                    "outputs": [self.prediction_dataset, self.segmentation_dataset],
                    "checkpoint": str(Path(self.checkpoint).resolve()),
                    "checkpoint_mtime": os.path.getmtime(self.checkpoint),
                    "config": self.config,
                    "output_shape": list(self.output_shape),
                }
            ),
        }


def sample_signature(sample: Sample) -> dict[str, Any]:
    """The datasets a sample reads (resolved paths), for the done markers."""
    return {
        "raw": str(Path(sample.raw.path).resolve()),
        "labels": {c: str(Path(v.path).resolve()) for c, v in sample.labels.items()},
        "mask": None if sample.mask is None else str(Path(sample.mask.path).resolve()),
        "class_ids": sample.class_ids,
        "voxel_size": list(sample.voxel_size),
    }


def sample_raw_padded(sample: Sample, roi: Roi) -> npt.NDArray[np.float32]:
    """Normalised raw of ``roi`` at the sample's voxel size (see
    ``gp_hotdistance.data.normalize_raw``), zeros outside its raw ROI."""
    from gp_hotdistance.data import normalize_raw

    voxel_size = sample.voxel_size
    out = np.zeros(tuple(roi.shape / voxel_size), dtype=np.float32)
    inside = roi.intersect(sample.raw_roi)
    if not inside.empty:
        raw = sample.read_raw(inside)
        out[relative_slices(inside, roi, voxel_size)] = normalize_raw(raw, sample.raw.dtype)
    return out
