"""Block jobs: one block's work, pickled into daisy's worker processes."""

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
from funlib.geometry import Coordinate, Roi
from funlib.persistence import Array, open_ds

from pipelines.blockwise.outputs import DoneMarkers, signature_value

if TYPE_CHECKING:
    from gp_hotdistance.predictor import HotDistancePredictor

logger = logging.getLogger(__name__)


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
        crop = crop_slices(write_roi, read_roi, self.voxel_size)
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
            **signature_value(
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
            from pipelines.common import load_model
            from pipelines.config import from_dict

            self._cache["model"] = load_model(from_dict(self.config or {}), self.checkpoint)
        return self._cache["model"]

    def process(self, write_roi: Roi) -> None:
        from gp_hotdistance.torch.inference import predict_padded
        from gp_hotdistance.torch.postprocess import segment
        from pipelines.common import normalize_raw

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
            **signature_value(
                {
                    "raw": str(Path(self.raw).resolve()),
                    "checkpoint": str(Path(self.checkpoint).resolve()),
                    "checkpoint_mtime": os.path.getmtime(self.checkpoint),
                    "config": self.config,
                    "output_shape": list(self.output_shape),
                }
            ),
        }


def crop_slices(inner: Roi, outer: Roi, voxel_size: Coordinate) -> tuple[slice, ...]:
    """Channels-first slices of ``inner`` within an array covering ``outer``."""
    begin = (inner.offset - outer.offset) / voxel_size
    shape = inner.shape / voxel_size
    return (slice(None),) + tuple(slice(b, b + s) for b, s in zip(begin, shape, strict=True))
