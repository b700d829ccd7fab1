"""Score a prediction the way the CellMap segmentation challenge does, or
choose a run's segmentation parameters on its held-out crops.

::

    python -m pipelines.evaluate PRED.zarr TRUTH.zarr --out scores.json
    python -m pipelines.evaluate --tune --run runs/demo

Both containers are in the challenge's layout ``cropN/<label>`` (see
:mod:`pipelines.challenge`); every label of TRUTH is scored, a label missing
from PRED counts as entirely missed. ``scores.json`` holds ``label_scores``,
the three overall scores and each crop's counts (``crops``); an existing
file is never replaced. ``--tune`` segments the run's held-out crops with
every candidate of :func:`pipelines.challenge.parameter_grid`, keeps the best
per class in ``RUN/segmentation.json`` (used by ``blockwise segment`` and
``submit``) and prints the scores with the chosen and the default parameters.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from gp_hotdistance.segment import DEFAULT_INSTANCE_CLASSES
from pipelines.challenge import (
    SEGMENTATION_NAME,
    evaluate_containers,
    format_scores,
    open_run,
    predict_eval_crops,
    tune_and_save,
)
from pipelines.config import ConfigError
from pipelines.summary import parameter_lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m pipelines.evaluate",
        description="The CellMap challenge's scores of PRED against TRUTH (cropN/<label> "
        "containers), or --tune --run R: choose R's segmentation parameters on its held-out crops.",
    )
    parser.add_argument("prediction", nargs="?", help="prediction container (cropN/<label>)")
    parser.add_argument("truth", nargs="?", help="truth container (cropN/<label>[_mask])")
    parser.add_argument("--out", help="write the scores to this JSON file (refused if it exists)")
    parser.add_argument(
        "--instance-classes",
        nargs="+",
        default=list(DEFAULT_INSTANCE_CLASSES),
        help="labels scored as instances (default: the challenge's)",
    )
    parser.add_argument(
        "--tune", action="store_true", help="choose --run's segmentation parameters"
    )
    parser.add_argument("--run", help="with --tune: the training run directory")
    parser.add_argument("--device", default="cpu", choices=("auto", "cpu", "cuda"))
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        if args.tune:
            if args.run is None or args.prediction or args.truth:
                raise ConfigError("--tune takes --run R and no PRED/TRUTH")
            return _tune(args)
        if args.prediction is None or args.truth is None:
            raise ConfigError("give PRED and TRUTH (or --tune --run R)")
        if args.out is not None and Path(args.out).exists():
            raise ConfigError(f"{args.out} exists; not replacing it (choose another --out)")
        result = evaluate_containers(args.prediction, args.truth, args.instance_classes)
    except ConfigError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    for line in format_scores(result):
        print(line)
    if args.out is not None:
        with open(args.out, "x") as file:
            json.dump(result, file, indent=2)
        print(f"scores in {args.out}")
    return 0


def _tune(args: argparse.Namespace) -> int:
    from pipelines.common import resolve_device
    from pipelines.rundir import RunDirectory

    device = resolve_device(args.device)
    with RunDirectory(args.run):  # not while the run trains
        config, data, model, iteration = open_run(args.run, device)
        crops = predict_eval_crops(config, data, model, device)
        tuned = tune_and_save(args.run, config, crops, iteration, args.instance_classes)
    if tuned is None:
        raise ConfigError(f"{args.run}: its config has no held-out crop (data.eval) to tune on")
    print(f"iteration {iteration}: chosen on the held-out crop(s):")
    instance = set(args.instance_classes)
    used = {c: p.used(c in instance) for c, p in tuned["parameters"].items()}
    for line in parameter_lines(used):
        print(f"  {line}")
    print("challenge scores, chosen parameters:")
    for line in format_scores(tuned["scores"]):
        print("  " + line)
    print("challenge scores, default parameters:")
    for line in format_scores(tuned["default_scores"]):
        print("  " + line)
    print(f"saved in {Path(args.run) / SEGMENTATION_NAME}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
