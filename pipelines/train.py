"""Train a UNet on hot-distance targets, then evaluate it on the evaluation crops.

``python -m pipelines.train`` with no arguments generates the CellMap-style
demo (if missing) into ``runs/demo/demo_data.zarr``, trains on the CPU (CUDA
when present) and prints per-class Dice pooled over the evaluation crops
(``data.eval``; see :mod:`pipelines.evaluation`).

The pipeline (see :mod:`pipelines.batches`)::

    samples (SampleSource -> RandomLabelledLocation) -> RandomProvider
      -> ElasticAugment -> SimpleAugment -> IntensityAugment
      -> TargetNode -> DistanceMaskNode -> PreCache -> WeightNode -> Unsqueeze -> Stack
      -> Train (checkpoints) -> PrintProfilingStats

Every ``training.snapshot_every`` iterations the batch (with the prediction)
is written to ``snapshots/batch_<iteration>.zarr`` with the data layer's
OME-NGFF writer, at the world offset where it was sampled.


``PreCache`` sits before ``WeightNode`` so that the moving class counts live
in this process: they are saved in every checkpoint and restored on resume.
The target and distance-mask work still runs in the workers.

The output directory is a :class:`~pipelines.rundir.RunDirectory`: locked for
the whole run, its ``config.json`` compared with the config before anything
is written, checkpoints written atomically, resumed from the newest complete
one, and ``summary.json`` never replaced by a less informed one (see
:meth:`~pipelines.rundir.RunDirectory.write_summary`).
"""

from __future__ import annotations

import argparse
import logging
import math
import random
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
from gp_hotdistance.torch.inference import input_shape_for
from pipelines.batches import (
    Data,
    Keys,
    batch_arrays,
    build_data_pipeline,
    describe_data,
    generate_demo_data,
    open_data,
    resolve_data,
    write_batch,
)
from pipelines.challenge import EvalCrop, eval_crop, format_scores, tune_and_save
from pipelines.common import (
    data_error,
    make_model,
    make_predictor,
    resolve_device,
)
from pipelines.config import Config, ConfigError, load_config
from pipelines.evaluation import ClassScore, evaluate
from pipelines.rundir import SUMMARY_NAME, Checkpoint, RunDirectory

logger = logging.getLogger(__name__)


def build_pipeline(
    config: Config,
    data: Data,
    model: torch.nn.Module,
    keys: Keys,
    out: Path,
    device: str,
) -> tuple[gp.Pipeline, gp.BatchRequest, WeightNode, gp_torch.Train]:
    """The training pipeline, its request, its WeightNode (for the counts)
    and its Train node (for the learning rate and the restored state)."""
    output_shape = Coordinate(config.model.output_shape)
    input_shape = Coordinate(input_shape_for(model, output_shape))
    pipeline, request, weight_node = build_data_pipeline(
        config, data, keys, input_shape, output_shape, config.training.num_workers
    )
    train_node = OwnCheckpointsTrain(
        model=model,
        loss=HotDistanceLoss(dims=output_shape.dims),
        optimizer=torch.optim.Adam(model.parameters(), lr=config.training.learning_rate),
        inputs={"x": keys.raw},
        outputs={0: keys.prediction},
        loss_inputs={0: keys.prediction, 1: keys.target, 2: keys.weights},
        # Train neither resumes nor saves: train() restores the newest complete
        # checkpoint after the build and saves through RunDirectory (atomic,
        # checksummed, moving counts included). OwnCheckpointsTrain never looks
        # for files of this basename, and no iteration is a multiple of sys.maxsize.
        checkpoint_basename=str(out / ".gunpowder_train"),
        save_every=sys.maxsize,
        device=device,
    )
    pipeline += train_node
    pipeline += gp.PrintProfilingStats(every=config.training.profile_every)
    request[keys.prediction] = gp.ArraySpec(roi=request[keys.gt].roi)
    return pipeline, request, weight_node, train_node


class OwnCheckpointsTrain(gp_torch.Train):
    """gunpowder's ``Train`` without its own resume: it never restores a
    ``<basename>_checkpoint_<N>`` file (those are not verified, and loaded
    without ``weights_only``); :func:`train` restores the run directory's
    checkpoints itself."""

    def _get_latest_checkpoint(self, basename: str) -> tuple[None, int]:
        return None, 0


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


def challenge_summary(tuned: dict | None) -> dict:
    """The summary entries of :func:`pipelines.challenge.tune_run`'s result:
    the challenge's scores with the parameters chosen on the held-out crops
    (saved in ``segmentation.json``) and with the untuned defaults."""
    if tuned is None:
        return {}
    return {
        "challenge_scores": tuned["scores"],
        "challenge_default_scores": tuned["default_scores"],
        "segmentation_parameters": {c: p.to_dict() for c, p in tuned["parameters"].items()},
    }


def train(config: Config, out: Path, iterations: int | None = None, quiet: bool = False) -> dict:
    """Train in run directory ``out`` (resuming from its newest complete
    checkpoint) up to ``iterations`` and evaluate the trained model.

    With nothing left to train (the newest checkpoint is at or past
    ``iterations``), the restored model of that checkpoint is evaluated.
    Returns the summary (``summary_written``: whether it replaced
    ``summary.json``, see :meth:`RunDirectory.write_summary`).

    Raises:
        RunDirectoryError: ``out`` is in use, a file, or holds checkpoints
            made with a config whose meaning differs (nothing is written).
        ConfigError: bad data or datasets.
    """
    total = iterations if iterations is not None else config.training.iterations
    with RunDirectory(out) as run:
        config = resolve_data(config, out)
        run.check_config(config)
        device = resolve_device(config.training.device)
        generate_demo_data(config, out)
        data = open_data(config)
        torch.manual_seed(config.training.seed)
        np.random.seed(config.training.seed)
        random.seed(config.training.seed)  # gunpowder draws each request's seed from it

        predictor = make_predictor(config)
        model = make_model(config, predictor)
        if not quiet:
            input_shape = Coordinate(input_shape_for(model, config.model.output_shape))
            print("\n".join(describe_data(config, data, input_shape)), flush=True)
        run.write_config(config)
        checkpoint = run.newest_complete()
        start = checkpoint.iteration if checkpoint is not None else 0
        losses: list[float] = []
        began = time.perf_counter()
        if start < total:
            losses = _train_steps(config, data, model, out, device, run, checkpoint, total, quiet)
        elif checkpoint is not None:
            logger.info("nothing to train: at iteration %d, asked for %d", start, total)
            model.load_state_dict(checkpoint.model_state)
        wall = time.perf_counter() - began
        model.eval()
        crops: list[EvalCrop] = []
        scores = evaluate(config, data, model, device, on_crop=lambda c: crops.append(eval_crop(c)))
        tuned = tune_and_save(out, config, crops, max(start, total))
        summary = {
            "iterations": max(start, total),
            "resumed_from": start,
            "trained": max(total - start, 0),
            "wall_seconds": wall,
            "first_50_loss": float(np.mean(losses[:50])) if losses else None,
            "last_50_loss": float(np.mean(losses[-50:])) if losses else None,
            "dice": {c: s.dice for c, s in scores.items()},
            "evaluation": {c: s.to_dict() for c, s in scores.items()},
            "evaluation_crops": len(data.eval),
            "device": device,
            **challenge_summary(tuned),
        }
        written = run.write_summary(summary)
    return {**summary, "summary_written": written}


def _train_steps(
    config: Config,
    data: Data,
    model: torch.nn.Module,
    out: Path,
    device: str,
    run: RunDirectory,
    checkpoint: Checkpoint | None,
    total: int,
    quiet: bool,
) -> list[float]:
    """Train ``model`` from ``checkpoint`` (or from scratch) to iteration
    ``total``, saving every ``save_every`` iterations and at ``total``.
    Returns the losses."""
    model.train()
    keys = Keys.create(config)
    pipeline, request, weight_node, train_node = build_pipeline(
        config, data, model, keys, out, device
    )
    start = 0
    if checkpoint is not None:
        start = checkpoint.iteration
        try:
            weight_node.load_state_dict(checkpoint.moving_counts)
        except ValueError as error:
            raise ConfigError(f"{checkpoint.path}: {error}") from None
        logger.info("resuming from iteration %d (%s)", start, checkpoint.path.name)
    losses = []
    with gp.build(pipeline):
        if checkpoint is not None:
            # after the build: Train has moved the model to its device, and the
            # optimizer state follows the parameters' device
            train_node.model.load_state_dict(checkpoint.model_state)
            train_node.optimizer.load_state_dict(checkpoint.optimizer_state)
            train_node.iteration = start
        progress = Progress(start, total, quiet)
        for iteration in range(start, total):
            for group in train_node.optimizer.param_groups:
                group["lr"] = learning_rate(config, iteration, total)
            if config.training.num_workers == 0:
                batch = pipeline.request_batch(seeded_request(request, config, iteration))
            else:
                batch = pipeline.request_batch(request)
            losses.append(float(batch.loss))
            progress.update(batch.iteration, float(batch.loss))
            if batch.iteration % config.training.snapshot_every == 0:
                write_snapshot(out, batch, keys, config)
            if batch.iteration % config.training.save_every == 0 or batch.iteration == total:
                run.save(
                    batch.iteration,
                    train_node.model.state_dict(),
                    train_node.optimizer.state_dict(),
                    weight_node.state_dict(),
                )
        progress.close()
    return losses


def write_snapshot(out: Path, batch: gp.Batch, keys: Keys, config: Config) -> Path:
    """Write the first sample of a training batch, with the prediction, to
    ``out/snapshots/batch_<iteration>.zarr`` (OME-NGFF groups, see
    :func:`pipelines.batches.write_batch`)."""
    names = [f"hot_{c}" for c in config.channels] + [f"dist_{c}" for c in config.channels]
    arrays = batch_arrays(batch, keys, config, extra={keys.prediction: ("prediction", names)})
    path = out / "snapshots" / f"batch_{batch.iteration}.zarr"
    write_batch(path, "", arrays)
    return path


def seeded_request(request: gp.BatchRequest, config: Config, iteration: int) -> gp.BatchRequest:
    """A copy of ``request`` whose random seed depends only on
    ``training.seed`` and ``iteration`` (0-based).

    gunpowder reseeds ``random`` and numpy's global generator from the
    request's seed in every node, and a request without one is seeded from
    the clock; with this seed the batch of an iteration is the same in every
    run, resumed or not. Only without ``PreCache``: its workers all copy one
    request, so a seeded one would give the same batch over and over.
    """
    state = np.random.SeedSequence([config.training.seed, iteration]).generate_state(1)
    seeded = gp.BatchRequest(random_seed=int(state[0]))
    for key, spec in request.items():
        seeded[key] = spec.copy()
    return seeded


def print_scores(evaluation: dict[str, dict], crops: int) -> None:
    """The report of :func:`pipelines.evaluation.evaluate` (as saved in the
    summary): one line per class."""
    if not evaluation:
        return
    print(f"Dice per class, pooled over {crops} evaluation crop{'s' if crops != 1 else ''}:")
    for name, values in evaluation.items():
        score = ClassScore(
            values["known_voxels"],
            values["truth_voxels"],
            values["predicted_voxels"],
            values["overlap_voxels"],
            values["crops"],
        )
        print(f"dice {name}: {score.describe()}")


def print_challenge_scores(summary: dict) -> None:
    """The challenge's scores of the evaluation crops (see :func:`challenge_summary`)."""
    if "challenge_scores" not in summary:
        return
    print("challenge scores of the evaluation crops (segmentation parameters chosen on them):")
    for line in format_scores(summary["challenge_scores"]):
        print(f"  {line}")
    for name, parameters in summary["segmentation_parameters"].items():
        print(f"  {name}: {parameters}")
    default = summary["challenge_default_scores"]["overall_score"]
    print(f"  (untuned default parameters: overall_score {default:.3f})")


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
    except ConfigError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
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
    print(f"device: {summary['device']}")
    if summary["trained"]:
        print(
            f"iterations: {summary['iterations']} (resumed from {summary['resumed_from']}), "
            f"wall time {summary['wall_seconds']:.1f} s"
        )
    else:
        asked = args.iterations if args.iterations is not None else config.training.iterations
        print(
            f"nothing to train: the newest checkpoint is at iteration {summary['iterations']} "
            f"(asked for {asked}); evaluated it"
        )
    if summary["first_50_loss"] is not None:
        print(
            f"mean loss: first 50 iterations {summary['first_50_loss']:.4f}, "
            f"last 50 iterations {summary['last_50_loss']:.4f}"
        )
    print_scores(summary["evaluation"], summary["evaluation_crops"])
    print_challenge_scores(summary)
    if not summary["summary_written"]:
        print(
            f"kept {SUMMARY_NAME}, which already evaluates iteration {summary['iterations']} or later"
        )
    print(f"outputs in {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
