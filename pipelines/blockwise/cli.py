"""Command line of ``python -m pipelines.blockwise``."""

from __future__ import annotations

import argparse
import dataclasses
import logging
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from gp_hotdistance.predictor import HotDistancePredictor
from pipelines.blockwise.jobfile import JobFileError
from pipelines.blockwise.jobs import BlockJob
from pipelines.blockwise.options import add_run_options, args_roi, check_args, run_options
from pipelines.blockwise.plan import plan_predict, plan_targets
from pipelines.blockwise.run import BlockwiseError, run_job
from pipelines.blockwise.segment_cli import run_segment
from pipelines.common import make_predictor, resolve_device
from pipelines.config import Config, ConfigError, from_dict, load_config

if TYPE_CHECKING:
    from gp_hotdistance.data import Sample


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
    add_run_options(targets)
    targets.add_argument(
        "--gt", default=None, help="gt dataset inside --input (required with --input)"
    )
    targets.add_argument(
        "--mask",
        default=None,
        help="mask dataset in --input (default: no mask, every voxel annotated)",
    )
    targets.add_argument(
        "--config", help="JSON/YAML config (channels, scale_factor, class_ids, data.samples)"
    )
    targets.add_argument("--channels", nargs="+", help="channel names (override the config)")
    targets.add_argument("--scale-factor", type=float, help="tanh scale, world units (override)")
    targets.add_argument("--class-ids", type=int, nargs="+", help="class id of each channel")
    targets.add_argument(
        "--context",
        type=float,
        nargs="+",
        help="WORLD units of context per side (one value for all axes or one per axis); "
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
    add_run_options(predict)
    predict.add_argument("--run", required=True, help="training output directory (config.json)")
    predict.add_argument(
        "--config",
        help="with --sample: config whose data.samples to use (default: the run's config.json); "
        "raw is read at the run's data.voxel_size",
    )
    predict.add_argument("--iteration", type=int, help="checkpoint iteration (default: newest)")
    predict.add_argument(
        "--raw", default=None, help="raw dataset inside --input (required with --input)"
    )
    predict.add_argument("--device", default="cpu", choices=("auto", "cpu", "cuda"))
    predict.add_argument("--prediction", default="prediction", help="output dataset")
    predict.add_argument("--segmentation", default="segmentation", help="output dataset")

    segment = commands.add_parser(
        "segment",
        help="instances (uint64) and masks (uint8) per class from a prediction",
        description=(
            "Segment --prediction (2C channels: hot logits, tanh distances) of --input into "
            "one OME-NGFF group per class, OUT/<class>/s0: instance ids (uint64, unique in "
            "the volume) for instance classes, 0/1 masks for the others. The result equals "
            "gp_hotdistance.segment on the whole volume (docs/blockwise.md)."
        ),
    )
    add_run_options(segment)
    segment.add_argument(
        "--prediction",
        default="prediction",
        help="prediction dataset in --input (default prediction)",
    )
    segment.add_argument(
        "--run",
        help="training run: channels, scale factor and its chosen parameters (segmentation.json)",
    )
    segment.add_argument("--config", help="JSON/YAML config (channels, scale_factor)")
    segment.add_argument("--channels", nargs="+", help="class names (default: from the run/config)")
    segment.add_argument("--scale-factor", type=float, help="tanh scale, world units")
    segment.add_argument(
        "--instance-classes",
        nargs="+",
        help="classes segmented into instances (default: the challenge's nuc, vim, ves, endo, "
        "lyso, ld, perox, mito, np, mt, cell, instance)",
    )
    segment.add_argument("--seed-level", type=float, help="seed level, world units (all classes)")
    masks = segment.add_mutually_exclusive_group()
    masks.add_argument(
        "--mask-threshold",
        type=float,
        help="object mask sigmoid(hot) > this (all classes; default: the run's, else 0.5)",
    )
    masks.add_argument(
        "--mask",
        choices=["distance"],
        help="distance: object mask d > 0 (the predicted distance), not sigmoid(hot) > a "
        "threshold (all classes; SegmentParameters.mask_threshold None)",
    )
    segment.add_argument("--min-size", type=float, help="smallest object, world volume")
    return parser


def _targets_predictor(args: argparse.Namespace) -> tuple[HotDistancePredictor, Config]:
    config = load_config(args.config)
    if args.channels is not None:
        config = config.replace(channels=list(args.channels))
    if args.scale_factor is not None:
        config = config.replace(scale_factor=float(args.scale_factor))
    class_ids = None if args.class_ids is None else list(args.class_ids)
    if class_ids is not None and config.data is not None:
        config = config.replace(data=dataclasses.replace(config.data, class_ids=class_ids))
    config = from_dict(config.to_dict())
    return make_predictor(config, class_ids), config


def config_sample(config: Config, index: int, run_config: Config) -> Sample:
    """Sample ``index`` of ``config.data.samples``, read at the training voxel
    size ``run_config.data.voxel_size`` with ``config.channels``.

    Raises:
        ConfigError: the config has no samples form or no sample ``index``.
    """
    from pipelines.common import open_sample

    if config.data is None or run_config.data is None:
        raise ConfigError(
            "--sample needs a config whose data section lists samples (data.samples, "
            "data.voxel_size); this one has none (the demo): give a config with --config, "
            "or --input with --raw/--gt"
        )
    samples = config.data.samples
    if not 0 <= index < len(samples):
        raise ConfigError(
            f"--sample {index}: the config has {len(samples)} sample(s), 0..{len(samples) - 1}"
        )
    return open_sample(
        config, samples[index], f"data.samples[{index}]", voxel_size=run_config.data.voxel_size
    )


def _os_error(error: OSError) -> str:
    """One line for a file-system error while preparing a run."""
    where = f" at {error.filename}" if error.filename else ""
    return (
        f"file system error{where}: {error.strerror or error} (errno {error.errno}); no "
        "block was processed and existing outputs are unchanged"
    )


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        if args.command == "segment":
            return run_segment(args)
        if (args.input is None) == (args.sample is None):
            raise ConfigError("give either --input (with dataset names) or --sample N")
        container = Path(args.input or ".")
        check_args(args)
        roi = args_roi(args)
        dataset = "--gt" if args.command == "targets" else "--raw"
        if args.input is not None and not getattr(args, dataset[2:]):
            raise ConfigError(
                f"--input needs {dataset}, the dataset inside it to read (for example "
                f"--input {container} {dataset} {dataset[2:]}), or give --sample N instead"
            )
        if args.command == "targets":
            predictor, config = _targets_predictor(args)
            if args.block_shape is None:
                raise ConfigError("--block-shape is required for targets")
            if args.sample is not None:
                if args.gt or args.mask:
                    raise ConfigError("--sample reads the sample's labels: give no --gt/--mask")
                gt: Path | Sample = config_sample(config, args.sample, config)
                mask = None
            else:
                gt = container / args.gt
                mask = None if args.mask is None else container / args.mask
            job: BlockJob = plan_targets(
                gt,
                args.output,
                predictor,
                args.block_shape,
                mask=mask,
                roi=roi,
                context=args.context,
                target_dataset=args.target,
                distance_mask_dataset=args.distance_mask,
                num_workers=args.workers,
                threads=args.threads_per_worker,
            )
        else:
            if args.worker_command is None:
                resolve_device(args.device)  # launched workers resolve it on their nodes
            run_config = load_config(Path(args.run) / "config.json")
            if args.sample is not None:
                if args.raw:
                    raise ConfigError("--sample reads the sample's raw: give no --raw")
                source = run_config if args.config is None else load_config(args.config)
                raw: Path | Sample = config_sample(source, args.sample, run_config)
            else:
                raw = container / args.raw
            job = plan_predict(
                args.run,
                raw,
                args.output,
                args.block_shape,
                iteration=args.iteration,
                prediction_dataset=args.prediction,
                segmentation_dataset=args.segmentation,
                device=args.device,
                num_workers=args.workers,
                threads=args.threads_per_worker,
                roi=roi,
            )
        report = run_job(job, **run_options(args))
    except (ConfigError, ValueError, BlockwiseError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2 if not isinstance(error, BlockwiseError) else 1
    except JobFileError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(
            f"interrupted: finished blocks are kept in {args.output}; rerun the same command "
            "to resume",
            file=sys.stderr,
        )
        return 130
    except OSError as error:  # preparing outputs, logs or the job file: disk full, read-only
        print(f"error: {_os_error(error)}", file=sys.stderr)
        return 1
    if report.skipped == report.blocks:
        print(
            f"{report.task_id}: nothing to do: all {report.blocks} blocks were already done "
            f"in {args.output} (outputs unchanged)"
        )
        return 0
    print(
        f"{report.task_id}: {report.blocks} blocks ({report.skipped} already done), "
        f"{report.processed_voxels} of {report.voxels} voxels processed in {report.seconds:.1f} s"
        f" = {report.voxels_per_second:.3g} voxels/s"
        f"{'; some blocks were retried (see logs)' if report.retried_error else ''}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
