"""``python -m pipelines.blockwise segment``: the settings it takes from a
run, a config and its flags, and its three steps (fragments, merge,
relabel; :mod:`pipelines.blockwise.segment`)."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

from pipelines.blockwise.options import check_args, run_options
from pipelines.blockwise.run import run_job
from pipelines.config import ConfigError, load_config


def segment_settings(args: argparse.Namespace) -> tuple[list[str], float, dict]:
    """Channels, scale factor and per-class parameters of ``segment``: the
    run's (with its tuned parameters), else the config's, then the flags."""
    from gp_hotdistance.segment import SegmentParameters, default_parameters
    from pipelines.challenge import run_parameters

    channels, scale_factor, parameters = None, None, {}
    if args.run is not None:
        config = load_config(Path(args.run) / "config.json")
        channels, scale_factor = list(config.channels), config.scale_factor
        parameters = run_parameters(args.run, config)
    elif args.config is not None:
        config = load_config(args.config)
        channels, scale_factor = list(config.channels), config.scale_factor
    channels = list(args.channels) if args.channels is not None else channels
    scale_factor = args.scale_factor if args.scale_factor is not None else scale_factor
    if channels is None or scale_factor is None:
        raise ConfigError("segment needs --run, --config or --channels and --scale-factor")
    chosen = {}
    for channel in channels:
        base = parameters.get(channel, default_parameters(scale_factor)).to_dict()
        for key, value in (
            ("seed_level", args.seed_level),
            ("mask_threshold", args.mask_threshold),
            ("min_size", args.min_size),
        ):
            if value is not None:
                base[key] = value
        if args.mask == "distance":
            base["mask_threshold"] = None
        chosen[channel] = SegmentParameters(**base)
    return channels, float(scale_factor), chosen


def run_segment(args: argparse.Namespace) -> int:
    """``blockwise segment``: fragments, merge, relabel (pipelines.blockwise.segment)."""
    from gp_hotdistance.segment import DEFAULT_INSTANCE_CLASSES
    from pipelines.blockwise.segment import merge, plan_segment

    if args.input is None or args.sample is not None or args.roi_offset or args.roi_shape:
        raise ConfigError("segment reads --input with --prediction (no --sample, no ROI)")
    if args.block_shape is None:
        raise ConfigError("--block-shape is required for segment")
    check_args(args)
    channels, scale_factor, parameters = segment_settings(args)
    fragments, relabel = plan_segment(
        Path(args.input) / args.prediction,
        args.output,
        channels,
        scale_factor,
        parameters,
        args.block_shape,
        instance_classes=args.instance_classes or DEFAULT_INSTANCE_CLASSES,
        num_workers=args.workers,
        threads=args.threads_per_worker,
    )
    options = run_options(args)
    if relabel.markers.done().all():  # nothing to do: no workers started
        print(
            f"segment: nothing to do: all {relabel.markers.done().size} blocks were already "
            f"done in {args.output} (outputs unchanged)"
        )
        return 0
    first = run_job(fragments, **options)
    began = time.perf_counter()
    objects = merge(fragments, float(np.prod(fragments.voxel_size)))
    merged = time.perf_counter() - began
    second = run_job(relabel, **options)
    seconds = first.seconds + merged + second.seconds
    print(
        f"segment: {first.blocks} blocks ({first.skipped} already done), {first.voxels} voxels "
        f"in {seconds:.1f} s = {first.voxels / seconds:.3g} voxels/s (fragments "
        f"{first.seconds:.1f} s, merge {merged:.1f} s, relabel {second.seconds:.1f} s); "
        + ", ".join(f"{c}: {n} objects" for c, n in objects.items())
    )
    return 0
