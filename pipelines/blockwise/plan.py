"""Planning a blockwise run: check the inputs, prepare (or check) the
outputs and build the job."""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from funlib.geometry import Coordinate, Roi

from gp_hotdistance.data.ome import Volume, open_volume
from gp_hotdistance.data.sample import Sample
from gp_hotdistance.predictor import HotDistancePredictor, target_channel_names
from pipelines.blockwise.jobs import PredictJob, TargetsJob
from pipelines.blockwise.outputs import OutputSpec, prepare_outputs
from pipelines.blockwise.run import default_threads
from pipelines.checkpoints import checkpoint_path
from pipelines.common import load_model
from pipelines.config import ConfigError, load_config
from pipelines.rundir import RunDirectory


def open_input(path: str | Path, role: str, voxel_size: Sequence[int] | None = None) -> Volume:
    """The input at ``path`` (``container/name``), read as
    :func:`gp_hotdistance.data.open_volume` does: an OME-NGFF multiscale
    group (the level at ``voxel_size``, or the finest without it) or an array
    with funlib attributes (``voxel_size``/``resolution``, ``offset``),
    either with one leading channel axis. An array without voxel-size
    metadata is refused, never read at voxel size 1.

    Raises:
        ValueError: a missing, unreadable or empty dataset, one without
            voxel-size metadata, or one with no level at ``voxel_size``;
            named with ``role``.
    """
    name = str(path)
    if not Path(path).exists():
        raise ValueError(f"{role} dataset {name} does not exist")
    try:
        opened = open_volume(name, voxel_size)
        if voxel_size is not None and opened.voxel_size != Coordinate(voxel_size):
            raise ValueError(
                f"no level at voxel size {tuple(voxel_size)} (nearest: "
                f"{opened.path} at {tuple(opened.voxel_size)}); a sample (--sample) "
                "reads finer levels mean-pooled"
            )
        volume = opened
    except (ValueError, FileNotFoundError, KeyError) as error:
        raise ValueError(f"{role} dataset {name} cannot be read: {error}") from error
    if 0 in volume.shape:
        raise ValueError(f"{role} dataset {name} is empty (shape {volume.shape})")
    return volume


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


def sample_roi(sample: Sample, roi: Roi | None, default: str) -> Roi:
    """``roi`` checked to lie on the sample's voxel grid, or the sample's
    ``default`` ROI (``"labelled"``: :attr:`Sample.labelled_roi`, ``"raw"``:
    :attr:`Sample.raw_roi`).

    Raises:
        ValueError: ``roi`` is empty, has other dims or is off the grid.
    """
    voxel_size = sample.voxel_size
    if roi is None:
        return sample.labelled_roi if default == "labelled" else sample.raw_roi
    if roi.dims != voxel_size.dims or roi.empty or roi != roi.snap_to_grid(voxel_size):
        raise ValueError(
            f"ROI {roi} must be a non-empty {voxel_size.dims}-D ROI on the grid of the "
            f"sample's voxel size {tuple(voxel_size)}"
        )
    return roi


def plan_targets(
    gt: str | Path | Sample,
    output: str | Path,
    predictor: HotDistancePredictor,
    block_shape: Sequence[int],
    mask: str | Path | None = None,
    context: Sequence[float] | float | None = None,
    target_dataset: str = "target",
    distance_mask_dataset: str = "distance_mask",
    num_workers: int = 1,
    threads: int | None = None,
    roi: Roi | None = None,
) -> TargetsJob:
    """Check the inputs, prepare (or check) the outputs and return the job.

    Args:
        gt: Ground-truth dataset path (``container/name``): binary channels
            ``(C, *spatial)`` or a class-id volume (``predictor.class_ids``);
            or a :class:`~gp_hotdistance.data.Sample`, whose gt and
            per-channel known-mask each block reads with
            ``Sample.read_labels`` at the sample's voxel size (channels it
            does not annotate get mask 0).
        output: Output zarr container.
        block_shape: Write block shape in voxels.
        mask: Optional mask dataset path, spatial or ``(C, *spatial)``;
            none = all known (uint8 ones).
        context: World context per side (one value or one per axis), rounded
            up to whole voxels; default ``max_distance`` (see module docs).
        roi: With a sample, the world ROI to process (on the sample's voxel
            grid); default the sample's labelled ROI.

    Raises:
        ValueError: bad shapes or mismatched voxel sizes.
        OutputMismatchError: an existing output does not match.
    """
    check_workers(num_workers)
    sample = gt if isinstance(gt, Sample) else None
    gt_array = mask_array = None
    mask_dtype = np.dtype(np.uint8)
    if sample is not None:
        if mask is not None:
            raise ValueError("a sample brings its own known-mask; give no mask with it")
        if list(sample.channels) != list(predictor.channels):
            raise ValueError(
                f"sample channels {sample.channels} differ from the predictor's "
                f"{predictor.channels}"
            )
        voxel_size = sample.voxel_size
        volume = sample_roi(sample, roi, "labelled")
        units: tuple[str, ...] = ("nm",) * voxel_size.dims
    else:
        gt_array = open_input(gt, "gt")
        voxel_size = Coordinate(gt_array.voxel_size)
        volume = gt_array.roi
        units = gt_array.units or ("nm",) * voxel_size.dims
        if roi is not None:
            raise ValueError("roi is only for a sample; a gt dataset is processed whole")
        if gt_array.channels == 1 and gt_array.shape[0] != predictor.classes:
            raise ValueError(
                f"gt {gt} has {gt_array.shape[0]} channels, but channels={predictor.channels}"
            )
        if gt_array.channels > 1:
            raise ValueError(f"gt {gt} has {gt_array.channels} channel axes, expected 0 or 1")
        if mask is not None:
            mask_array = open_input(mask, "mask", voxel_size)
            if Coordinate(mask_array.voxel_size) != voxel_size:
                raise ValueError(
                    f"mask {mask} voxel size {mask_array.voxel_size} differs from gt {voxel_size}"
                )
            if not mask_array.roi.contains(volume):
                raise ValueError(
                    f"mask {mask} ROI {mask_array.roi} does not contain gt ROI {volume}"
                )
            if (Coordinate(mask_array.offset) - volume.offset) % voxel_size != Coordinate(
                (0,) * voxel_size.dims
            ):
                raise ValueError(
                    f"mask {mask} offset {mask_array.offset} is not on the gt's voxel grid"
                )
            mask_dtype = np.dtype(mask_array.dtype)
    spatial = voxel_size.dims
    block_size = block_size_world(block_shape, voxel_size)
    if context is None:
        context_world = predictor.whole_voxel_context(voxel_size)
    else:
        values = [float(context)] if np.isscalar(context) else [float(c) for c in context]
        if len(values) == 1:
            values = values * spatial
        if len(values) != spatial or not all(math.isfinite(c) and c >= 0 for c in values):
            raise ValueError(
                f"context must be one or {spatial} finite non-negative values, got {context}"
            )
        context_world = predictor.whole_voxel_context(voxel_size, values)
    job = TargetsJob(
        task_id="targets",
        output=os.path.abspath(output),  # workers may start in another directory
        volume_roi=volume,
        voxel_size=voxel_size,
        block_size=block_size,
        context=context_world,
        done_dataset="done/targets",
        threads=threads or default_threads(num_workers),
        gt=gt_array,
        mask=mask_array,
        sample=sample,
        target_dataset=target_dataset,
        distance_mask_dataset=distance_mask_dataset,
        predictor=predictor,
    )
    specs = [
        OutputSpec(
            target_dataset,
            target_channel_names(predictor.channels),
            np.dtype(np.float32),
            volume,
            voxel_size,
            units,
        ),
        OutputSpec(
            distance_mask_dataset,
            tuple(predictor.channels),
            mask_dtype,
            volume,
            voxel_size,
            units,
        ),
    ]
    prepare_outputs(Path(job.output), specs, block_shape, job.markers, job.signature())
    return job


def plan_predict(
    run: str | Path,
    raw: str | Path | Sample,
    output: str | Path,
    block_shape: Sequence[int] | None = None,
    iteration: int | None = None,
    prediction_dataset: str = "prediction",
    segmentation_dataset: str = "segmentation",
    device: str = "cpu",
    num_workers: int = 1,
    threads: int | None = None,
    roi: Roi | None = None,
) -> PredictJob:
    """Check the inputs, prepare (or check) the outputs and return the job.

    Args:
        run: A training output directory (``config.json`` plus
            ``model_checkpoint_<N>`` files).
        raw: Raw dataset path (``container/name``), spatial; integers are
            divided by their dtype's maximum, as in training. Or a
            :class:`~gp_hotdistance.data.Sample`: raw is read with
            ``Sample.read_raw`` at the sample's voxel size (mean-pooled from a
            finer level if needed), context beyond its raw ROI is zeros.
        roi: With a sample, the world ROI to predict (on its voxel grid);
            default the sample's labelled ROI.
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
    if iteration is None:
        # the newest checkpoint that loads completely; newer truncated ones
        # (a training killed while saving) are skipped with a warning
        newest = RunDirectory(run).newest_complete()
        if newest is None:
            raise ConfigError(f"no complete checkpoint in {run}")
        checkpoint = newest.path
    else:
        checkpoint = checkpoint_path(run, iteration)
        if iteration < 1 or not checkpoint.is_file():
            raise ConfigError(f"no checkpoint {checkpoint.name} in {run}")
    check_workers(num_workers)
    sample = raw if isinstance(raw, Sample) else None
    raw_array = None
    if sample is not None:
        voxel_size = sample.voxel_size
        volume = sample_roi(sample, roi, "labelled")
        units: tuple[str, ...] = ("nm",) * voxel_size.dims
    else:
        if roi is not None:
            raise ValueError("roi is only for a sample; a raw dataset is predicted whole")
        # a multiscale raw is read at the training voxel size of a samples-form config
        raw_array = open_input(raw, "raw", getattr(config.data, "voxel_size", None))
        if raw_array.channels != 0:
            raise ValueError(
                f"raw {raw} must be spatial (one channel), got shape {raw_array.shape}"
            )
        voxel_size = Coordinate(raw_array.voxel_size)
        volume = raw_array.roi
        units = raw_array.units or ("nm",) * voxel_size.dims
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
        output=os.path.abspath(output),  # workers may start in another directory
        volume_roi=volume,
        voxel_size=voxel_size,
        block_size=block_size_world(block_shape, voxel_size),
        context=context_voxels * voxel_size,
        done_dataset="done/predict",
        threads=threads or default_threads(num_workers),
        raw=raw_array,
        sample=sample,
        checkpoint=os.path.abspath(checkpoint),
        config=config.to_dict(),
        output_shape=output_shape,
        device=device,
        prediction_dataset=prediction_dataset,
        segmentation_dataset=segmentation_dataset,
    )
    specs = [
        OutputSpec(
            prediction_dataset,
            target_channel_names(predictor_channels),
            np.dtype(np.float32),
            volume,
            voxel_size,
            units,
        ),
        OutputSpec(
            segmentation_dataset,
            tuple(predictor_channels),
            np.dtype(np.uint8),
            volume,
            voxel_size,
            units,
        ),
    ]
    prepare_outputs(Path(job.output), specs, block_shape, job.markers, job.signature())
    return job
