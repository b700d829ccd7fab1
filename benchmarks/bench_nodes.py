"""Cost of the gunpowder nodes over the bare kernels, and pipeline throughput.

1. ``chain`` vs ``kernels``: one request for target, distance mask and
   weights at the same ROI ``R``, answered by ``source + TargetNode +
   DistanceMaskNode + WeightNode`` (in-memory source, ``moving_counts=False``)
   and by the bare kernels on the same numbers (GT and mask sliced at
   ``G = gt_region_for_roi(R)``, ``predictor.process`` and
   ``create_distance_mask`` over ``G`` cropped to ``R``,
   ``functional.hot_distance_weights`` over ``R``). Prints median times and
   the node overhead ``chain / kernels - 1`` (target: at most 10%), from the
   best of the interleaved repeats (robust to other load on the machine) and
   from the medians.
2. ``pipeline``: batches per second of the full training pipeline of the
   issue's point 5 without PreCache (in-memory source + Pad + RandomLocation
   + ElasticAugment + SimpleAugment + IntensityAugment + the three nodes +
   Stack), and the share of its time spent in the kernels.

    PYTHONPATH=. python benchmarks/bench_nodes.py            # default sizes
    PYTHONPATH=. python benchmarks/bench_nodes.py --quick    # smaller sizes
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import gunpowder as gp
import numpy as np

from gp_hotdistance import DistanceMaskNode, HotDistancePredictor, TargetNode, WeightNode
from gp_hotdistance import functional as F
from gp_hotdistance.geometry import roi_slices
from tests.helpers import ArraySource, augmented_pipeline, blobs, make_array, random_mask

CHANNELS = ["mito", "er", "nucleus"]
IDS = [1, 2, 3, 4]
CASES = {
    # name: (voxel size, output shape (voxels), quick output shape, scale factor)
    "3-D aniso": ((40, 4, 4), (16, 128, 128), (8, 64, 64), 50.0),
    "3-D iso": ((8, 8, 8), (64, 64, 64), (32, 32, 32), 50.0),
    "2-D": ((4, 4), (512, 512), (256, 256), 50.0),
}


def chain_vs_kernels(voxel_size, output_shape, scale, repeats):
    p = HotDistancePredictor(CHANNELS, scale, True)
    vs = gp.Coordinate(voxel_size)
    context = gp.Coordinate(
        (c // v) for c, v in zip(p.padding(vs), vs, strict=True)
    )  # voxels per side
    shape = tuple(o + 2 * c + 4 for o, c in zip(output_shape, context, strict=True))
    rng = np.random.default_rng(0)
    labels = blobs(rng, shape, IDS, n=60)
    mask = random_mask(rng, shape)
    offset = gp.Coordinate((0,) * vs.dims)
    source_roi = gp.Roi(offset, gp.Coordinate(shape) * vs)
    keys = {n: gp.ArrayKey(n.upper()) for n in ("gt", "mask", "target", "dm", "weights")}
    pipeline = (
        (
            ArraySource(keys["gt"], make_array(labels, offset, vs)),
            ArraySource(keys["mask"], make_array(mask, offset, vs)),
        )
        + gp.MergeProvider()
        + TargetNode(p, keys["gt"], keys["target"])
        + DistanceMaskNode(p, keys["target"], keys["mask"], keys["dm"])
        + WeightNode(
            p, keys["gt"], keys["target"], keys["weights"], keys["mask"], keys["dm"], False
        )
    )
    roi = gp.Roi((context + 2) * vs, gp.Coordinate(output_shape) * vs)
    request = gp.BatchRequest({keys[k]: gp.ArraySpec(roi=roi) for k in ("target", "dm", "weights")})
    grown = p.gt_region_for_roi(gp.ArraySpec(roi=roi, voxel_size=vs)).roi
    g_slices = roi_slices(grown, source_roi, vs)
    r_slices = (slice(None),) + roi_slices(roi, grown, vs)
    r_in_source = roi_slices(roi, source_roi, vs)

    def kernels():
        gt_g = labels[g_slices].copy()
        mask_g = mask[g_slices].copy()
        target = p.process(gt_g, vs)
        distance_mask = p.create_distance_mask(target[p.classes :], mask_g, vs)[r_slices]
        gt_r = F.to_channels(labels[r_in_source], p.class_ids)
        weights, _ = F.hot_distance_weights(
            gt_r, mask[r_in_source], distance_mask, None, p.clipmin, p.clipmax
        )
        return target[r_slices], distance_mask, weights

    times = {"chain": [], "kernels": []}
    with gp.build(pipeline):
        batch = pipeline.request_batch(request)  # warm up (numba cache, imports)
        expected = kernels()
        for got, want in zip(
            (batch[keys["target"]], batch[keys["dm"]], batch[keys["weights"]]),
            expected,
            strict=True,
        ):
            np.testing.assert_array_equal(got.data, want)
        for _ in range(repeats):  # interleaved, so load changes hit both
            t = time.perf_counter()
            pipeline.request_batch(request)
            times["chain"].append(time.perf_counter() - t)
            t = time.perf_counter()
            kernels()
            times["kernels"].append(time.perf_counter() - t)
    return {k: (min(v), statistics.median(v)) for k, v in times.items()}


def pipeline_throughput(batches, quick):
    p = HotDistancePredictor(["mito", "er"], 50.0, True)
    keys = {
        n: gp.ArrayKey(n.upper())
        for n in ("raw", "gt", "mask", "target", "distance_mask", "weights")
    }
    voxel_size = (8, 4, 4)
    shape = (40, 160, 160) if not quick else (24, 96, 96)
    output_shape = gp.Coordinate((12, 64, 64) if not quick else (6, 32, 32))
    pipeline, _ = augmented_pipeline(p, keys, shape=shape, voxel_size=voxel_size, seed=1)
    pipeline += gp.Stack(2)
    request = gp.BatchRequest()
    for key in keys.values():
        request.add(key, output_shape * gp.Coordinate(voxel_size))
    with gp.build(pipeline):
        pipeline.request_batch(request)
        t = time.perf_counter()
        for _ in range(batches):
            pipeline.request_batch(request)
        elapsed = time.perf_counter() - t
    return batches / elapsed, tuple(output_shape)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="smaller sizes")
    parser.add_argument("--repeats", type=int, default=None, help="timed repeats per case")
    parser.add_argument("--batches", type=int, default=None, help="pipeline batches")
    args = parser.parse_args()
    repeats = args.repeats or (5 if args.quick else 15)
    batches = args.batches or (5 if args.quick else 20)

    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    print(f"{os.cpu_count()} cores, load average {load} (other load makes medians noisy)")
    print(f"node chain vs bare kernels, same request, {len(CHANNELS)} classes, best / median")
    print(
        f"{'case':<10} {'output':>12} {'kernels':>17} {'chain':>17} {'overhead':>15}"
        f" {'chain - kernels':>16}"
    )
    worst = 0.0
    for name, (voxel_size, shape, quick_shape, scale) in CASES.items():
        output_shape = quick_shape if args.quick else shape
        t = chain_vs_kernels(voxel_size, output_shape, scale, repeats)
        best, median = (t["chain"][i] / t["kernels"][i] - 1 for i in (0, 1))
        worst = max(worst, best)
        print(
            f"{name:<10} {'x'.join(map(str, output_shape)):>12} "
            f"{t['kernels'][0] * 1e3:>7.1f} / {t['kernels'][1] * 1e3:>5.1f}ms "
            f"{t['chain'][0] * 1e3:>7.1f} / {t['chain'][1] * 1e3:>5.1f}ms "
            f"{best * 100:>5.1f}% / {median * 100:>5.1f}% "
            f"{(t['chain'][0] - t['kernels'][0]) * 1e3:>14.1f}ms"
        )
    print(f"worst node overhead (best of {repeats}): {worst * 100:.1f}% (target <= 10%)")

    rate, output_shape = pipeline_throughput(batches, args.quick)
    print(
        f"full pipeline without PreCache (Stack(2), output {'x'.join(map(str, output_shape))} "
        f"voxels at (8, 4, 4)): {rate:.2f} batches/s"
    )


if __name__ == "__main__":
    main()
