"""Train a UNet on hot-distance targets, then evaluate it on the evaluation crops.

``python -m pipelines.train`` with no arguments generates the CellMap-style
demo (if missing) into ``runs/demo/demo_data.zarr``, trains on the CPU (CUDA
when present) and prints per-class Dice pooled over the evaluation crops
(``data.eval``; see :mod:`pipelines.evaluation`).

The loop is plain torch (see :mod:`pipelines.batches`)::

    HotDistanceDataset (samples -> augmentations -> TargetNode -> DistanceMaskNode)
      -> DataLoader (training.num_workers processes, training.batch_size)
      -> model -> BalancedWeights (moving class counts) -> HotDistanceLoss -> Adam

``torchrun --standalone --nproc_per_node N -m pipelines.train ...`` trains
with ``DistributedDataParallel`` on N processes (gloo on the CPU, nccl with
CUDA, one GPU per process): each rank draws its own data stream, gradients
are averaged, and ``BalancedWeights`` gathers every rank's class counts each
step, so all ranks hold the same model and counts. Rank 0 alone holds the run
directory, writes checkpoints, snapshots and the summary, and evaluates (see
:mod:`pipelines.distributed`). A run resumes with any number of processes.
SIGINT or SIGTERM stops it after the current iteration, with a checkpoint
(:mod:`pipelines.stops`).

Every ``training.snapshot_every`` iterations the first sample of the batch
(with weights and prediction) is written to ``snapshots/batch_<iteration>.zarr``
with the data layer's OME-NGFF writer, at the world offset where it was
sampled.

The output directory is a :class:`~pipelines.rundir.RunDirectory`: locked for
the whole run, its ``config.json`` compared with the config before anything
is written, checkpoints (model, optimizer, moving counts) written atomically,
resumed from the newest complete one, and ``summary.json`` never replaced by
a less informed one (see :meth:`~pipelines.rundir.RunDirectory.write_summary`);
the report printed at the end is :func:`pipelines.summary.print_summary`.
"""

from __future__ import annotations

import argparse
import logging
import math
import signal
import sys
import time
from collections import deque
from pathlib import Path
from typing import Any

import torch
from funlib.geometry import Coordinate
from tqdm import tqdm

from gp_hotdistance.torch import BalancedWeights, HotDistanceLoss
from gp_hotdistance.torch.inference import input_shape_for
from pipelines.batch_io import item_arrays, refuse_links, write_batch
from pipelines.batches import (
    Data,
    generate_demo_data,
    make_dataset,
    make_loader,
    open_data,
    resolve_data,
)
from pipelines.challenge import EvalCrop, eval_crop, tune_and_save
from pipelines.checkpoints import Checkpoint
from pipelines.common import (
    data_error,
    make_model,
    make_predictor,
    resolve_device,
)
from pipelines.config import Config, ConfigError, load_config
from pipelines.data_report import describe_data
from pipelines.distributed import Distributed, RankZeroFailed, on_rank_zero
from pipelines.evaluation import evaluate
from pipelines.rundir import RunDirectory
from pipelines.stops import StopSignals, TrainingStopped
from pipelines.summary import challenge_summary, loss_summary, print_summary

logger = logging.getLogger(__name__)


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

SNAPSHOTS = "snapshots"
"""The run directory's folder of snapshots, ``batch_<iteration>.zarr``."""


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
        """Record the loss of ``iteration`` (1-based, as checkpoints count)."""
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


def train(config: Config, out: Path, iterations: int | None = None, quiet: bool = False) -> dict:
    """Train in run directory ``out`` (resuming from its newest complete
    checkpoint) up to ``iterations`` and evaluate the trained model.

    With nothing left to train (the newest checkpoint is at or past
    ``iterations``), the restored model of that checkpoint is evaluated.
    Returns the summary (``summary_written``: whether it replaced
    ``summary.json``, see :meth:`RunDirectory.write_summary`). Under
    torchrun every rank trains; rank 0 returns the summary, the others
    ``{"rank": r}``.

    Raises:
        RunDirectoryError: ``out`` is in use, a file, or holds checkpoints
            made with a config whose meaning differs (nothing is written).
        ConfigError: bad data or datasets.
    """
    total = iterations if iterations is not None else config.training.iterations
    config = resolve_data(config, out)
    with Distributed(resolve_device(config.training.device)) as dist:
        if dist.rank != 0:
            resume = on_rank_zero(dist, lambda: None)
            checkpoint = None if resume is None else RunDirectory(out).load(*resume)
            _run(config, open_data(config), out, dist, None, checkpoint, total, quiet)
            return {"rank": dist.rank}
        with RunDirectory(out) as run:
            opened: dict[str, Any] = {}

            def begin() -> tuple[int, Path] | None:
                run.check_config(config)
                refuse_links(out, SNAPSHOTS)  # before training, not at the first snapshot
                generate_demo_data(config, out)
                data = opened["data"] = open_data(config)  # before anything is written
                if not quiet:
                    model = make_model(config, make_predictor(config))
                    input_shape = Coordinate(input_shape_for(model, config.model.output_shape))
                    print("\n".join(describe_data(config, data, input_shape)), flush=True)
                run.write_config(config)
                checkpoint = opened["checkpoint"] = run.newest_complete()
                return None if checkpoint is None else (checkpoint.iteration, checkpoint.path)

            on_rank_zero(dist, begin)
            return _run(config, opened["data"], out, dist, run, opened["checkpoint"], total, quiet)


def _run(
    config: Config,
    data: Data,
    out: Path,
    dist: Distributed,
    run: RunDirectory | None,
    checkpoint: Checkpoint | None,
    total: int,
    quiet: bool,
) -> dict:
    """Train from ``checkpoint`` (or from scratch) up to ``total`` and, on
    rank 0 (which holds ``run``), evaluate and write the summary."""
    device = dist.device
    torch.manual_seed(config.training.seed)
    predictor = make_predictor(config)
    model = make_model(config, predictor)
    balanced = BalancedWeights(predictor)
    start = checkpoint.iteration if checkpoint is not None else 0
    losses: list[float] = []
    began = time.perf_counter()
    if start < total:
        losses = _train_steps(
            config, data, model, balanced, out, dist, run, checkpoint, total, quiet
        )
    elif checkpoint is not None:
        logger.info("nothing to train: at iteration %d, asked for %d", start, total)
        model.load_state_dict(checkpoint.model_state)
    wall = time.perf_counter() - began
    if run is None:
        return {}
    model.eval()
    crops: list[EvalCrop] = []
    scores = evaluate(config, data, model, device, on_crop=lambda c: crops.append(eval_crop(c)))
    tuned = tune_and_save(out, config, crops, max(start, total))
    summary = {
        "iterations": max(start, total),
        "resumed_from": start,
        "trained": max(total - start, 0),
        "wall_seconds": wall,
        **loss_summary(losses),
        "dice": {c: s.dice for c, s in scores.items()},
        "evaluation": {c: s.to_dict() for c, s in scores.items()},
        "evaluation_crops": len(data.eval),
        "device": device,
        "processes": dist.world,
        **challenge_summary(tuned),
    }
    written = run.write_summary(summary)
    return {**summary, "summary_written": written}


def counts_state(balanced: BalancedWeights) -> dict[str, Any]:
    """The moving counts in the checkpoint's (and ``WeightNode.state_dict``'s)
    JSON form: ``{"moving_counts": [{"0": [num, den], "1": [num, den]}, ...]}``."""
    return {
        "moving_counts": [
            {str(c): [num, den] for c, (num, den) in channel.items()}
            for channel in balanced.counts()
        ]
    }


def load_counts_state(balanced: BalancedWeights, state: dict[str, Any]) -> None:
    """Restore counts saved by :func:`counts_state`.

    Raises:
        TypeError, ValueError: malformed counts (the message says which).
    """
    counts = state["moving_counts"]
    if isinstance(counts, list):
        counts = [
            {int(k) if k in ("0", "1") else k: v for k, v in channel.items()}
            if isinstance(channel, dict)
            else channel
            for channel in counts
        ]
    balanced.load_counts(counts)


def _train_steps(
    config: Config,
    data: Data,
    model: torch.nn.Module,
    balanced: BalancedWeights,
    out: Path,
    dist: Distributed,
    run: RunDirectory | None,
    checkpoint: Checkpoint | None,
    total: int,
    quiet: bool,
) -> list[float]:
    """Train ``model`` from ``checkpoint`` (or from scratch) to iteration
    ``total``; rank 0 (``run``) saves every ``save_every`` iterations and at
    ``total`` and writes the snapshots. Returns the losses (means over the
    ranks)."""
    device = torch.device(dist.device)
    output_shape = Coordinate(config.model.output_shape)
    input_shape = Coordinate(input_shape_for(model, output_shape))
    model.to(device).train()
    balanced.to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=config.training.learning_rate)
    start = 0
    if checkpoint is not None:
        start = checkpoint.iteration
        model.load_state_dict(checkpoint.model_state)
        optimizer.load_state_dict(checkpoint.optimizer_state)
        try:
            load_counts_state(balanced, checkpoint.moving_counts)
        except (TypeError, ValueError) as error:
            raise ConfigError(f"{checkpoint.path}: {error}") from None
        logger.info("resuming from iteration %d (%s)", start, checkpoint.path.name)
    network = model
    if dist.world > 1:
        network = torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None
        )
    loss_fn = HotDistanceLoss(dims=output_shape.dims)
    dataset = make_dataset(config, data, input_shape, output_shape, rank=dist.rank)
    dataset.resume(start, config.training.batch_size)
    context = (input_shape - output_shape) / 2
    losses = []
    progress = Progress(start, total, quiet or run is None)
    waited = stepped = 0.0
    # the signal handlers first: the loader's workers, forked below, inherit them
    with StopSignals() as stop:
        loader = iter(make_loader(config, dataset, pin_memory=device.type == "cuda"))
        for iteration in range(start + 1, total + 1):  # 1-based, as checkpoints count
            for group in optimizer.param_groups:
                group["lr"] = learning_rate(config, iteration - 1, total)
            tick = time.perf_counter()
            batch = next(loader)
            tock = time.perf_counter()
            raw, target, mask, distance_mask = (
                batch[k].to(device, non_blocking=True)
                for k in ("raw", "target", "mask", "distance_mask")
            )
            weights = balanced(target, mask, distance_mask)
            prediction = network(raw)
            loss = loss_fn(prediction, target, weights)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            value = dist.mean(float(loss.detach()))
            waited += tock - tick
            stepped += time.perf_counter() - tock
            losses.append(value)
            progress.update(iteration, value)
            if iteration % config.training.profile_every == 0:
                logger.info(
                    "iterations to %d: %.3f s waiting for data, %.3f s per step",
                    iteration,
                    waited / config.training.profile_every,
                    stepped / config.training.profile_every,
                )
                waited = stepped = 0.0
            stopping = stop.agreed(dist.mean if dist.world > 1 else None)
            if run is None:
                if stopping:
                    break
                continue
            if iteration % config.training.snapshot_every == 0:
                batch = {**batch, "weights": weights, "prediction": prediction.detach()}
                write_snapshot(out, batch, config, data.voxel_size, context, iteration)
            if iteration % config.training.save_every == 0 or iteration == total or stopping:
                path = run.save(
                    iteration, model.state_dict(), optimizer.state_dict(), counts_state(balanced)
                )
            if stopping:
                progress.close()
                raise TrainingStopped(stop.requested or signal.SIGTERM, iteration, path)
    progress.close()
    return losses


def write_snapshot(
    out: Path,
    batch: dict[str, torch.Tensor],
    config: Config,
    voxel_size: Coordinate,
    context: Coordinate,
    iteration: int,
) -> Path:
    """Write the first sample of a training batch (with its weights and
    prediction) to ``out/snapshots/batch_<iteration>.zarr`` (OME-NGFF groups,
    see :func:`pipelines.batch_io.write_batch`). A symbolic link at
    ``snapshots``, at the container or inside it is refused (:func:`refuse_links`)."""
    path = refuse_links(out, SNAPSHOTS, f"batch_{iteration}.zarr")
    write_batch(path, "", item_arrays(config, batch, voxel_size, context))
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m pipelines.train",
        description=(
            "Train a UNet on hot-distance targets (one-hot + tanh signed distances) and "
            "report per-class Dice pooled over the evaluation crops. Without arguments: the "
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
    except RankZeroFailed:
        return 2  # rank 0 has said why
    except ConfigError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except TrainingStopped as stopped:
        print(stopped, file=sys.stderr)
        return 128 + stopped.signum
    except KeyboardInterrupt:
        print(
            f"interrupted: the checkpoints in {args.out} are as they were (rerun the same "
            "command to resume from the newest)",
            file=sys.stderr,
        )
        return 128 + signal.SIGINT
    except OSError as error:  # a write outside the run directory's own files
        where = f" {error.filename}" if error.filename else ""
        print(f"error: cannot write{where}: {error.strerror or error}", file=sys.stderr)
        return 1
    except Exception as error:  # a refused value, raised inside the data pipeline
        message = data_error(error)
        if message is None:
            raise
        print(f"error: {message}", file=sys.stderr)
        return 2
    if "rank" in summary:
        return 0  # rank 0 reports
    asked = args.iterations if args.iterations is not None else config.training.iterations
    print_summary(summary, asked, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
