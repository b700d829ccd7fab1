"""Train a UNet on hot-distance targets, then evaluate it on a held-out block.

``python -m pipelines.train`` with no arguments generates the demo dataset
(if missing) into ``runs/demo``, trains on the CPU (CUDA when present) and
prints per-class Dice on the held-out block.

The pipeline::

    zarr (raw, gt, mask) -> Normalize -> Pad(gt, mask) -> RandomLocation
      -> ElasticAugment -> SimpleAugment -> IntensityAugment
      -> TargetNode -> DistanceMaskNode -> PreCache -> WeightNode -> Unsqueeze -> Stack
      -> Train (checkpoints) -> Snapshot -> PrintProfilingStats

``PreCache`` sits before ``WeightNode`` so that the moving class counts live
in this process: they are saved beside every checkpoint and restored on
resume. The target and distance-mask work still runs in the workers.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import sys
import time
from collections import deque
from pathlib import Path

import gunpowder as gp
import gunpowder.torch as gp_torch
import numpy as np
import torch
from funlib.geometry import Coordinate
from tqdm import tqdm

from gp_hotdistance import WeightNode
from gp_hotdistance.torch import HotDistanceLoss
from gp_hotdistance.torch.inference import context_for, input_shape_for, predict_volume
from gp_hotdistance.torch.postprocess import segment
from pipelines.batches import Keys, build_data_pipeline, data_container
from pipelines.common import (
    CHECKPOINT_BASENAME,
    COUNTS_PATTERN,
    checkpoint_path,
    latest_checkpoint,
    make_model,
    make_predictor,
    normalize_raw,
    open_dataset,
    resolve_device,
)
from pipelines.config import Config, ConfigError, load_config

logger = logging.getLogger(__name__)


def build_pipeline(
    config: Config,
    container: Path,
    model: torch.nn.Module,
    keys: Keys,
    out: Path,
    device: str,
) -> tuple[gp.Pipeline, gp.BatchRequest, WeightNode, gp_torch.Train]:
    """The training pipeline, its request, its WeightNode (for the counts)
    and its Train node (for the learning rate and the final checkpoint)."""
    output_shape = Coordinate(config.model.output_shape)
    input_shape = Coordinate(input_shape_for(model, output_shape))
    pipeline, request, weight_node = build_data_pipeline(
        config, container, keys, input_shape, output_shape, config.training.num_workers
    )
    train_node = gp_torch.Train(
        model=model,
        loss=HotDistanceLoss(dims=output_shape.dims),
        optimizer=torch.optim.Adam(model.parameters(), lr=config.training.learning_rate),
        inputs={"x": keys.raw},
        outputs={0: keys.prediction},
        loss_inputs={0: keys.prediction, 1: keys.target, 2: keys.weights},
        checkpoint_basename=str(out / CHECKPOINT_BASENAME),
        save_every=config.training.save_every,
        device=device,
    )
    pipeline += train_node
    snapshot_names = {
        keys.raw: "raw",
        keys.gt: "gt",
        keys.target: "target",
        keys.weights: "weights",
        keys.prediction: "prediction",
    }
    if keys.mask is not None:
        snapshot_names[keys.mask] = "mask"
    if keys.distance_mask is not None:
        snapshot_names[keys.distance_mask] = "distance_mask"
    pipeline += IterationSnapshot(
        snapshot_names,
        output_dir=str(out / "snapshots"),
        output_filename="batch_{iteration}.zarr",
        iteration_every=config.training.snapshot_every,
    )
    pipeline += gp.PrintProfilingStats(every=config.training.profile_every)
    request.add(keys.prediction, request[keys.gt].roi.shape)
    return pipeline, request, weight_node, train_node


class IterationSnapshot(gp.Snapshot):
    """A :class:`gunpowder.Snapshot` written at the training iterations that
    are multiples of ``iteration_every``, so ``batch_500.zarr`` is the batch
    of iteration 500, the one checkpoint 500 is saved after.

    gunpowder's own ``every`` counts batches from 0 in each process and
    writes batches 1, ``every + 1``, ... (and restarts on resume); this node
    goes by ``batch.iteration``, which Train sets (1-based, resumed).
    """

    def __init__(self, dataset_names: dict, iteration_every: int, **kwargs):
        super().__init__(dataset_names, every=1, **kwargs)
        self.iteration_every = iteration_every

    def write_if(self, batch: gp.Batch) -> bool:
        return batch.iteration % self.iteration_every == 0


def learning_rate(config: Config, iteration: int, total: int) -> float:
    """The learning rate of step ``iteration`` (0-based) of ``total``: the
    configured rate, decayed along a half cosine to
    ``training.final_lr_fraction`` of it at the last step."""
    base = config.training.learning_rate
    final = base * config.training.final_lr_fraction
    progress = iteration / max(total - 1, 1)
    return final + (base - final) * 0.5 * (1 + math.cos(math.pi * progress))


LOSS_WINDOW = 100
"""The progress display shows the mean loss of the last this many iterations."""

PLAIN_LINES = 20
"""Without a terminal, progress is at most about this many plain lines per run."""


class Progress:
    """Training progress on stderr: the mean loss of the last
    :data:`LOSS_WINDOW` iterations.

    On a terminal, a tqdm bar; otherwise (a log file, a pipe) one plain line
    every ``ceil((total - start) / PLAIN_LINES)`` iterations and at the last,
    without the carriage returns of a bar. ``quiet`` shows nothing.
    """

    def __init__(self, start: int, total: int, quiet: bool):
        self.losses: deque[float] = deque(maxlen=LOSS_WINDOW)
        self.total = total
        self.terminal = not quiet and sys.stderr.isatty()
        self.plain = not quiet and not self.terminal
        self.every = max(1, math.ceil((total - start) / PLAIN_LINES))
        self.began = time.perf_counter()
        self.bar = tqdm(
            initial=start, total=total, desc="train", disable=not self.terminal, dynamic_ncols=True
        )

    @property
    def mean_loss(self) -> float:
        return sum(self.losses) / len(self.losses)

    def update(self, iteration: int, loss: float) -> None:
        """Record the loss of ``iteration`` (1-based, as Train numbers it)."""
        self.losses.append(loss)
        self.bar.update(1)
        self.bar.set_postfix_str(f"loss (mean of last {len(self.losses)}) {self.mean_loss:.4f}")
        if self.plain and (iteration % self.every == 0 or iteration == self.total):
            elapsed = time.perf_counter() - self.began
            print(
                f"iteration {iteration}/{self.total}: loss (mean of last {len(self.losses)}) "
                f"{self.mean_loss:.4f}, {elapsed:.0f} s",
                file=sys.stderr,
                flush=True,
            )

    def close(self) -> None:
        self.bar.close()


def save_checkpoint(out: Path, iteration: int, train_node: gp_torch.Train) -> None:
    """Save model and optimizer as gunpowder's Train does (it resumes from it)."""
    torch.save(
        {
            "model_state_dict": train_node.model.state_dict(),
            "optimizer_state_dict": train_node.optimizer.state_dict(),
        },
        checkpoint_path(out, iteration),
    )


def save_counts(out: Path, iteration: int, weight_node: WeightNode) -> None:
    (out / COUNTS_PATTERN.format(iteration=iteration)).write_text(
        json.dumps(weight_node.state_dict())
    )


def load_counts(out: Path, iteration: int, weight_node: WeightNode) -> None:
    path = out / COUNTS_PATTERN.format(iteration=iteration)
    if not path.exists():
        raise ConfigError(
            f"checkpoint {iteration} in {out} has no moving counts ({path.name}); "
            f"cannot resume exactly"
        )
    weight_node.load_state_dict(json.loads(path.read_text()))


def dice(prediction: np.ndarray, truth: np.ndarray) -> float:
    """Dice coefficient of two boolean arrays (1.0 if both are empty)."""
    total = int(prediction.sum()) + int(truth.sum())
    if total == 0:
        return 1.0
    return 2.0 * int(np.logical_and(prediction, truth).sum()) / total


def evaluate(
    config: Config, container: Path, model: torch.nn.Module, device: str
) -> dict[str, float]:
    """Per-class Dice of the model's segmentation of the held-out block,
    over the voxels whose whole field of view lies inside the block (the
    band of ``context`` voxels along its border would read zero padding,
    which training never shows the network)."""
    if config.data.eval_raw is None or config.data.eval_gt is None:
        return {}
    raw = open_dataset(container, config.data.eval_raw)
    gt = open_dataset(container, config.data.eval_gt)
    predictor = make_predictor(config)
    raw_data = normalize_raw(raw[raw.roi], raw.dtype)
    truth = predictor.gt_channels(np.asarray(gt[gt.roi]), len(gt.voxel_size), name="eval_gt") != 0
    context = context_for(model, config.model.output_shape)
    if any(2 * c >= s for c, s in zip(context, raw_data.shape, strict=True)):
        raise ConfigError(
            f"the held-out block {config.data.eval_raw} of shape {raw_data.shape} has no voxel "
            f"whose field of view (context {context} per side) lies inside it"
        )
    prediction = predict_volume(model, raw_data, config.model.output_shape, device)
    inner = tuple(slice(c, s - c) for c, s in zip(context, raw_data.shape, strict=True))
    labels = segment(prediction)[(slice(None), *inner)]
    truth = truth[(slice(None), *inner)]
    return {name: dice(labels[i], truth[i]) for i, name in enumerate(config.channels)}


def train(config: Config, out: Path, iterations: int | None = None, quiet: bool = False) -> dict:
    """Train (resuming from the newest checkpoint in ``out``) up to
    ``iterations`` and evaluate. Returns a summary dict."""
    out.mkdir(parents=True, exist_ok=True)
    total = iterations if iterations is not None else config.training.iterations
    device = resolve_device(config.training.device)
    torch.manual_seed(config.training.seed)
    np.random.seed(config.training.seed)
    container = data_container(config, out)
    (out / "config.json").write_text(json.dumps(config.to_dict(), indent=2))

    predictor = make_predictor(config)
    model = make_model(config, predictor)
    model.train()
    keys = Keys.create(config)
    pipeline, request, weight_node, train_node = build_pipeline(
        config, container, model, keys, out, device
    )
    start = latest_checkpoint(out)
    if start > 0:
        load_counts(out, start, weight_node)
        logger.info("resuming from iteration %d", start)
    losses: list[float] = []
    began = time.perf_counter()
    if start < total:
        with gp.build(pipeline):
            progress = Progress(start, total, quiet)
            for iteration in range(start, total):
                for group in train_node.optimizer.param_groups:
                    group["lr"] = learning_rate(config, iteration, total)
                batch = pipeline.request_batch(request)
                losses.append(float(batch.loss))
                progress.update(batch.iteration, float(batch.loss))
                if batch.iteration % config.training.save_every == 0:
                    save_counts(out, batch.iteration, weight_node)
            progress.close()
            if total % config.training.save_every != 0:
                save_checkpoint(out, total, train_node)
                save_counts(out, total, weight_node)
    wall = time.perf_counter() - began
    model.eval()
    scores = evaluate(config, container, model, device)
    summary = {
        "iterations": total,
        "resumed_from": start,
        "wall_seconds": wall,
        "first_50_loss": float(np.mean(losses[:50])) if losses else None,
        "last_50_loss": float(np.mean(losses[-50:])) if losses else None,
        "dice": scores,
        "device": device,
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    return summary


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m pipelines.train",
        description=(
            "Train a UNet on hot-distance targets (one-hot + tanh signed distances) and "
            "report per-class Dice on the held-out block. Without arguments: the "
            "embedded demo dataset, on the CPU (CUDA when present)."
        ),
    )
    parser.add_argument(
        "--config",
        help="JSON or YAML file: channels, scale_factor, mask_distances, data paths, "
        "model and training settings (see pipelines/config.py); default: the demo",
    )
    parser.add_argument(
        "--iterations", type=int, help="train up to this iteration (default: from config)"
    )
    parser.add_argument(
        "--out",
        default="runs/demo",
        help="output directory: checkpoints, moving counts, snapshots, demo data, summary "
        "(a run resumes from the newest checkpoint here; default: runs/demo)",
    )
    parser.add_argument(
        "--quiet",
        action="store_true",
        help="no progress (else a bar on a terminal, plain lines when stderr is a file)",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        config = load_config(args.config)
        if args.iterations is not None and args.iterations < 1:
            raise ConfigError(f"--iterations must be >= 1, got {args.iterations}")
        summary = train(config, Path(args.out), args.iterations, args.quiet)
    except ConfigError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(f"device: {summary['device']}")
    print(
        f"iterations: {summary['iterations']} (resumed from {summary['resumed_from']}), "
        f"wall time {summary['wall_seconds']:.1f} s"
    )
    if summary["first_50_loss"] is not None:
        print(
            f"mean loss: first 50 iterations {summary['first_50_loss']:.4f}, "
            f"last 50 iterations {summary['last_50_loss']:.4f}"
        )
    for name, score in summary["dice"].items():
        print(f"dice {name}: {score:.3f}")
    print(f"outputs in {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
