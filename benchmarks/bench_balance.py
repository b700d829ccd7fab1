"""Time of ``BalancedWeights`` (torch) against the numba balancing kernels.

One random batch of ``--batch`` samples: ``--classes`` binary hot channels
(smoothed noise, 5 % to 60 % foreground) with random tanh distances, a mask
and a distance mask (uint8 by default, ``--mask float32`` or ``none``).
Each repeat times, on that batch and from the same starting moving counts:

- ``torch``: one ``BalancedWeights`` forward with the default number of
  intra-op threads (``--threads``, default ``torch.get_num_threads()``);
- ``torch 1 thread``: the same forward with ``torch.set_num_threads(1)``;
- ``numba``: ``functional.hot_distance_weights`` (the kernels of
  ``WeightNode`` and ``predictor.create_weight``) on each sample in turn,
  carrying the moving counts from sample to sample.

All three must agree (weights to rtol 2e-7, counts to 1e-12) before a
time is kept, so they do the same work. Prints the median and best
milliseconds per batch and the ratios against ``numba``, with the load
average before and after.

``--busy K`` keeps K other processes spinning on the CPU meanwhile (a
machine shared with busy jobs). With ``--step N``, also times N training steps on that batch as
``pipelines/train.py`` takes them (``BalancedWeights``, the config's default
UNet and head, ``HotDistanceLoss``, backward, Adam) with the default threads
and with 1 thread, interleaved, and the share of ``BalancedWeights`` in a
step.

    PYTHONPATH=. python benchmarks/bench_balance.py
    PYTHONPATH=. python benchmarks/bench_balance.py --classes 3 --batch 2 --shape 64 64 64 --threads 2
    PYTHONPATH=. python benchmarks/bench_balance.py --step 3   # and whole training steps
    PYTHONPATH=. python benchmarks/bench_balance.py --busy 1   # one core taken by another job
"""

from __future__ import annotations

import argparse
import contextlib
import multiprocessing
import os
import statistics
import time

import numpy as np
import torch

from gp_hotdistance import HotDistancePredictor
from gp_hotdistance import functional as F
from gp_hotdistance.torch import BalancedWeights, HotDistanceLoss, UNet
from gp_hotdistance.torch.inference import input_shape_for
from pipelines.config import ModelConfig
from tests.helpers import random_mask, smooth_blobs


def spin() -> None:  # pragma: no cover - runs in the busy processes
    while True:
        pass


@contextlib.contextmanager
def busy(processes: int):
    """``processes`` other processes spinning on the CPU inside the block."""
    context = multiprocessing.get_context("fork")  # spinning at once
    started = [context.Process(target=spin, daemon=True) for _ in range(processes)]
    for process in started:
        process.start()
    try:
        yield
    finally:
        for process in started:
            process.terminate()
            process.join()


def make_batch(rng, classes, batch, shape, mask_kind):
    """``target`` ``(B, 2C, *shape)`` float32, ``mask`` and
    ``distance_mask`` ``(B, C, *shape)`` (``None`` for ``mask_kind='none'``)."""
    gt = np.stack(
        [
            np.stack(
                [smooth_blobs(rng, shape, 2.0, rng.uniform(0.05, 0.6)) for _ in range(classes)]
            )
            for _ in range(batch)
        ]
    )
    target = np.concatenate([gt, rng.uniform(-1, 1, gt.shape)], axis=1).astype(np.float32)
    if mask_kind == "none":
        return torch.from_numpy(target), None, None
    mask = np.stack(
        [np.stack([random_mask(rng, shape) for _ in range(classes)]) for _ in range(batch)]
    )
    distance_mask = (rng.random(gt.shape) > 0.3).astype(np.uint8)
    if mask_kind == "float32":
        mask = (mask * rng.choice([0.5, 1.0], gt.shape)).astype(np.float32)
        distance_mask = distance_mask.astype(np.float32)
    return torch.from_numpy(target), torch.from_numpy(mask), torch.from_numpy(distance_mask)


def numba_weights(predictor, target, mask, distance_mask, counts):
    """The kernels' weights for each sample in turn and the final counts."""
    classes = predictor.classes
    weights = []
    for b in range(target.shape[0]):
        w, counts = F.hot_distance_weights(
            target[b, :classes].numpy(),
            None if mask is None else mask[b].numpy(),
            None if distance_mask is None else distance_mask[b].numpy(),
            counts,
            predictor.clipmin,
            predictor.clipmax,
        )
        weights.append(w)
    return np.stack(weights), counts


def check_same(name, weights, counts, expected, expected_counts):
    np.testing.assert_allclose(weights, expected, rtol=2e-7, atol=0, err_msg=name)
    for mine, theirs in zip(counts, expected_counts, strict=True):
        for c in (0, 1):
            np.testing.assert_allclose(mine[c], theirs[c], rtol=1e-12, atol=0, err_msg=name)


def timed(function, *args):
    began = time.perf_counter()
    result = function(*args)
    return time.perf_counter() - began, result


def training_steps(predictor, balanced, target, mask, distance_mask, threads, steps):
    """Median seconds of ``steps`` training steps with ``threads`` and with
    1 intra-op thread, interleaved: ``{threads: median, 1: median}``."""
    defaults = ModelConfig()
    dims = target.dim() - 2
    backbone = UNet(
        in_channels=1,
        num_fmaps=defaults.num_fmaps,
        fmap_inc_factor=defaults.fmap_inc_factor,
        downsample_factors=[(2,) * dims] * len(defaults.downsample_factors),
        num_convs=defaults.num_convs,
    )
    model = predictor.create_model(backbone)
    raw = torch.rand(target.shape[0], 1, *input_shape_for(model, target.shape[2:]))
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-4)
    loss_fn = HotDistanceLoss(dims=dims)

    def step():
        weights = balanced(target, mask, distance_mask)
        loss = loss_fn(model(raw), target, weights)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    print(f"training steps: input {'x'.join(map(str, raw.shape[2:]))}, {steps} repeats")
    times: dict[int, list[float]] = {threads: [], 1: []}
    for repeat in range(steps + 1):  # the first is warm-up
        for count in times:
            torch.set_num_threads(count)
            t, _ = timed(step)
            if repeat:
                times[count].append(t)
    return {count: statistics.median(values) for count, values in times.items()}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--classes", type=int, default=3)
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--shape", type=int, nargs="+", default=[64, 64, 64])
    parser.add_argument(
        "--threads",
        type=int,
        default=torch.get_num_threads(),
        help="torch intra-op threads of the default run (default: torch's, here %(default)s)",
    )
    parser.add_argument("--mask", choices=["uint8", "float32", "none"], default="uint8")
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument(
        "--busy", type=int, default=0, metavar="K", help="K processes spinning meanwhile"
    )
    parser.add_argument(
        "--step", type=int, default=0, metavar="N", help="also time N training steps"
    )
    args = parser.parse_args(argv)
    initial_threads = torch.get_num_threads()

    rng = np.random.default_rng(0)
    names = [f"c{i}" for i in range(args.classes)]
    predictor = HotDistancePredictor(names, 50.0, args.mask != "none", clipmin=0.05, clipmax=0.95)
    target, mask, distance_mask = make_batch(rng, args.classes, args.batch, args.shape, args.mask)
    balanced = BalancedWeights(predictor)
    # earlier batches' counts, so that the clip range and moving counts matter
    start = [
        {0: (1000.0 + 10.0 * i, 5000.0), 1: (200.0 + 10.0 * i, 5000.0)}
        for i in range(predictor.embedding_dims)
    ]
    print(
        f"{args.batch} x {args.classes} classes of {'x'.join(map(str, args.shape))}, "
        f"mask {args.mask}, torch threads {args.threads} and 1 "
        f"(cores usable: {len(os.sched_getaffinity(0))}), {args.repeats} repeats, "
        f"{args.busy} other processes spinning, OMP_WAIT_POLICY "
        f"{os.environ.get('OMP_WAIT_POLICY', 'unset')}"
    )
    print(f"load average before: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    # warm-up: numba compilation (or its cache), torch's first calls
    expected, expected_counts = numba_weights(predictor, target, mask, distance_mask, start)
    for threads in (args.threads, 1):
        torch.set_num_threads(threads)
        balanced.load_counts(start)
        balanced(target, mask, distance_mask)

    with busy(args.busy):
        times: dict[str, list[float]] = {"numba": [], "torch": [], "torch 1 thread": []}
        for _ in range(args.repeats):
            t, (w, counts) = timed(numba_weights, predictor, target, mask, distance_mask, start)
            check_same("numba", w, counts, expected, expected_counts)
            times["numba"].append(t)
            for name, threads in (("torch", args.threads), ("torch 1 thread", 1)):
                torch.set_num_threads(threads)
                balanced.load_counts(start)
                t, w = timed(balanced, target, mask, distance_mask)
                check_same(name, w.numpy(), balanced.counts(), expected, expected_counts)
                times[name].append(t)
        steps = {}
        if args.step:
            steps = training_steps(
                predictor, balanced, target, mask, distance_mask, args.threads, args.step
            )
    torch.set_num_threads(initial_threads)
    print(f"load average after:  {' '.join(f'{x:.2f}' for x in os.getloadavg())}")

    reference = statistics.median(times["numba"])
    best_reference = min(times["numba"])
    print(f"{'':16} {'median ms':>10} {'best ms':>9} {'/ numba (median)':>17} {'(best)':>7}")
    for name, values in times.items():
        median, best = statistics.median(values), min(values)
        print(
            f"{name:16} {1e3 * median:10.2f} {1e3 * best:9.2f} "
            f"{median / reference:17.2f} {best / best_reference:7.2f}"
        )
    one = statistics.median(times["torch 1 thread"])
    print(
        f"torch {args.threads} threads / 1 thread (median): "
        f"{statistics.median(times['torch']) / one:.2f}"
    )
    for count, name in ((args.threads, "torch"), (1, "torch 1 thread")):
        if steps:
            share = statistics.median(times[name]) / steps[count]
            print(
                f"training step, {count} thread(s): {1e3 * steps[count]:.0f} ms median, "
                f"BalancedWeights {100 * share:.1f} % of it"
            )
    if steps:
        print(
            f"training step, {args.threads} threads / 1 thread (median): {steps[args.threads] / steps[1]:.2f}"
        )


if __name__ == "__main__":
    main()
