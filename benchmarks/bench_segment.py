"""Throughput of ``blockwise segment`` for 1 and 2 daisy workers, against
whole-volume references timed in the same run.

    PYTHONPATH=. python benchmarks/bench_segment.py                 # 128 x 256 x 256
    PYTHONPATH=. python benchmarks/bench_segment.py --shape 64 128 128

Writes a synthetic 2-class prediction (``mito``: touching blobs with exact
signed distances, an instance class; ``er``: a semantic class) into a
temporary zarr container, then times, on the same data:

- ``segment_prediction`` on the whole volume in this process (the
  definition the blockwise result equals; reference);
- seeded flooding with ``skimage.segmentation.watershed`` on the whole
  volume (markers: connected seeds, mask, ``-distance``), the usual
  whole-volume approach (mito only, plus the er mask);
- ``python -m pipelines.blockwise segment`` (fragments, merge, relabel) for
  each worker count, into a fresh output, worker start-up included; the
  result is checked to equal the reference.

It prints voxels per second, each blockwise run's ratio to the in-process
reference and the scaling between worker counts, with the load average.
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from pathlib import Path

import cc3d
import edt
import numpy as np
import zarr
from scipy import ndimage

from gp_hotdistance import segment as seg

SCALE = 40.0
VOXEL_SIZE = (8, 8, 8)


def make_prediction(path: Path, shape: tuple[int, ...], seed: int = 0) -> np.ndarray:
    """A ``(4, *shape)`` prediction written to ``path/prediction``; returns it."""
    rng = np.random.default_rng(seed)
    blobs = ndimage.gaussian_filter(rng.normal(size=shape).astype(np.float32), 4)
    mito = blobs > 1.2 * blobs.std()
    er_noise = ndimage.gaussian_filter(rng.normal(size=shape).astype(np.float32), 2)
    er = (er_noise > 1.5 * er_noise.std()) & ~mito
    distances = []
    for fg in (mito, er):
        inside = edt.edt(fg, anisotropy=VOXEL_SIZE)
        outside = edt.edt(~fg, anisotropy=VOXEL_SIZE)
        distances.append(np.where(fg, inside - 4.0, -(outside + 4.0)))  # face distance, +-v/2
    distance = np.stack(distances).astype(np.float32)
    prediction = np.concatenate([distance / 10.0, np.tanh(distance / SCALE)]).astype(np.float32)
    root = zarr.open_group(str(path), mode="w")
    array = root.create_dataset("prediction", data=prediction, chunks=(4, 64, 64, 64))
    array.attrs.update({"voxel_size": list(VOXEL_SIZE), "offset": [0, 0, 0]})
    return prediction


def flooding(prediction: np.ndarray, params: seg.SegmentParameters) -> None:
    """Seeded watershed (skimage) of mito and the er mask on the whole volume."""
    from skimage.segmentation import watershed

    mask = seg.class_masks(prediction[[0, 2]], params.mask_threshold)[0]
    distance = seg.predicted_distance(prediction[2], SCALE)
    markers = cc3d.connected_components(mask & (distance > params.seed_level))
    watershed(-distance, markers, mask=mask)
    seg.class_masks(prediction[[1, 3]], params.mask_threshold)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shape", type=int, nargs=3, default=[128, 256, 256], help="voxels")
    parser.add_argument("--block-shape", type=int, nargs=3, default=[64, 64, 64], help="voxels")
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--threads-per-worker", type=int, default=1)
    parser.add_argument("--dir", help="working directory (default: a temporary one, removed)")
    args = parser.parse_args()
    from pipelines.blockwise.cli import main as blockwise

    shape = tuple(args.shape)
    voxels = int(np.prod(shape))
    work = Path(args.dir or tempfile.mkdtemp(prefix="bench_segment_"))
    try:
        began = time.perf_counter()
        prediction = make_prediction(work / "in.zarr", shape)
        print(f"volume {shape} = {voxels} voxels, made in {time.perf_counter() - began:.1f} s")
        params = seg.SegmentParameters(seed_level=0.25 * SCALE, mask_threshold=0.5)
        began = time.perf_counter()
        whole = seg.segment_prediction(prediction, ["mito", "er"], SCALE, VOXEL_SIZE, params)
        reference = time.perf_counter() - began
        print(
            f"whole volume, gp_hotdistance.segment (reference): {reference:.2f} s = "
            f"{voxels / reference / 1e6:.2f} M voxels/s, {int(whole['mito'].max())} mito objects"
        )
        began = time.perf_counter()
        flooding(prediction, params)
        flood = time.perf_counter() - began
        print(
            f"whole volume, skimage watershed flooding: {flood:.2f} s = "
            f"{voxels / flood / 1e6:.2f} M voxels/s ({reference / flood:.2f}x the reference's speed)"
        )
        rates = {}
        for workers in args.workers:
            out = work / f"out_{workers}.zarr"
            began = time.perf_counter()
            code = blockwise(
                [
                    "segment", "--input", str(work / "in.zarr"), "--output", str(out),
                    "--channels", "mito", "er", "--scale-factor", str(SCALE),
                    "--seed-level", str(params.seed_level), "--mask-threshold", "0.5",
                    "--block-shape", *map(str, args.block_shape), "--workers", str(workers),
                    "--threads-per-worker", str(args.threads_per_worker), "--no-progress",
                ]
            )  # fmt: skip
            seconds = time.perf_counter() - began
            if code != 0:
                raise SystemExit(f"blockwise segment failed with {code}")
            result = zarr.open_array(str(out / "mito" / "s0"), mode="r")[...]
            equal = np.array_equal(result, whole["mito"])
            rates[workers] = voxels / seconds
            print(
                f"blockwise segment, {workers} worker(s), blocks {tuple(args.block_shape)}: "
                f"{seconds:.2f} s = {rates[workers] / 1e6:.2f} M voxels/s "
                f"({reference / seconds:.2f}x the reference's speed); equals the whole-volume "
                f"result: {equal}"
            )
        if len(rates) > 1:
            low, high = min(rates), max(rates)
            print(f"scaling {low} -> {high} workers: {rates[high] / rates[low]:.2f}x")
        print(f"load average {os.getloadavg()}")
    finally:
        if args.dir is None:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
