"""Planning a blockwise run: check the inputs, prepare (or check) the
outputs and build the job."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from funlib.geometry import Coordinate
from funlib.persistence import Array, open_ds

from gp_hotdistance.predictor import HotDistancePredictor
from pipelines.blockwise.jobs import Dataset, PredictJob, TargetsJob
from pipelines.blockwise.outputs import OutputSpec, prepare_outputs
from pipelines.blockwise.run import default_threads
from pipelines.common import checkpoint_path, latest_checkpoint, load_model
from pipelines.config import ConfigError, load_config


def open_input(path: str | Path, role: str) -> Array:
    """The funlib dataset at ``path`` (``container/name``), checked to exist
    and to hold at least one voxel.

    Raises:
        ValueError: a missing, unreadable or empty dataset, named with ``role``.
    """
    if not Path(path).exists():
        raise ValueError(f"{role} dataset {path} does not exist")
    try:
        array = open_ds(str(path))
    except Exception as error:
        raise ValueError(f"{role} dataset {path} cannot be opened: {error}") from error
    if 0 in tuple(array.shape):
        raise ValueError(f"{role} dataset {path} is empty (shape {tuple(array.shape)})")
    return array


def dataset(path: str | Path, array: Array) -> Dataset:
    """The job's handle on ``array`` (stored at ``path``)."""
    return Dataset(str(path), Coordinate(array.offset), Coordinate(array.voxel_size))


def check_workers(num_workers: int) -> None:
    """Raises ValueError unless ``num_workers >= 1``."""
    if num_workers < 1:
        raise ValueError(f"--workers must be at least 1, got {num_workers}")


def block_size_world(block_shape: Sequence[int], voxel_size: Coordinate) -> Coordinate:
    block_shape = tuple(int(b) for b in block_shape)
    if len(block_shape) != voxel_size.dims or any(b < 1 for b in block_shape):
        raise ValueError(
            f"block_shape must be {voxel_size.dims} positive voxel counts, got {block_shape}"
        )
    return Coordinate(block_shape) * voxel_size


def targets_context(predictor: HotDistancePredictor, voxel_size: Coordinate) -> Coordinate:
    """Default targets context: ``max_distance`` per axis, rounded up to whole voxels."""
    # HotDistancePredictor.snapped_context(voxel_size) is to compute this;
    # use it here once the predictor has it.
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
    check_workers(num_workers)
    gt_array = open_input(gt, "gt")
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
        mask_array = open_input(mask, "mask")
        if Coordinate(mask_array.voxel_size) != voxel_size:
            raise ValueError(
                f"mask {mask} voxel size {mask_array.voxel_size} differs from gt {voxel_size}"
            )
        if not mask_array.roi.contains(volume):
            raise ValueError(f"mask {mask} ROI {mask_array.roi} does not contain gt ROI {volume}")
        if (Coordinate(mask_array.offset) - volume.offset) % voxel_size != Coordinate(
            (0,) * spatial
        ):
            raise ValueError(
                f"mask {mask} offset {mask_array.offset} is not on the gt's voxel grid"
            )
        mask_dtype = np.dtype(mask_array.dtype)
    block_size = block_size_world(block_shape, voxel_size)
    if context is None:
        context_world = targets_context(predictor, voxel_size)
    else:
        values = [float(context)] if np.isscalar(context) else [float(c) for c in context]
        if len(values) == 1:
            values = values * spatial
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
        gt=dataset(gt, gt_array),
        mask=None if mask is None else dataset(mask, mask_array),
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
    prepare_outputs(Path(job.output), specs, block_shape, job.markers, job.signature())
    return job


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
    check_workers(num_workers)
    raw_array = open_input(raw, "raw")
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
        block_size=block_size_world(block_shape, voxel_size),
        context=context_voxels * voxel_size,
        done_dataset="done/predict",
        threads=threads or default_threads(num_workers),
        raw=dataset(raw, raw_array),
        checkpoint=str(checkpoint),
        config=config.to_dict(),
        output_shape=output_shape,
        device=device,
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
    prepare_outputs(Path(job.output), specs, block_shape, job.markers, job.signature())
    return job
