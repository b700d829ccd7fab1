"""Speed and memory of the hot-distance kernels against the slow reference.

Times one DaCapo-style batch (target, distance mask, balanced weights) with

- ``fast``: ``HotDistancePredictor.create_target`` + ``create_weight`` on
  funlib.persistence Arrays (``create_weight`` calls
  ``create_distance_mask`` itself when ``mask_distances`` is on; the three
  stages are also timed one by one);
- ``reference``: :func:`tests.reference.reference_hot_distance`,
  the DaCapo way (scipy EDT on the doubled grid, ``np.unique`` balancing);

and prints median times, their ratio and the peak resident memory above the
inputs, each measured in a fresh process (numba and edt allocate outside
tracemalloc's view). Also reports the numba first-call cost (cache load and
cold compile) in a fresh process.

    PYTHONPATH=. python benchmarks/bench_kernels.py            # full sizes
    PYTHONPATH=. python benchmarks/bench_kernels.py --quick    # smaller sizes
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

CASES = {
    # name: (classes, shape, quick shape, voxel size, scale, mask_distances, target ratio)
    "3-D iso": (3, (132, 132, 132), (64, 64, 64), (8, 8, 8), 50.0, True, 25.0),
    "3-D aniso": (3, (24, 196, 196), (12, 96, 96), (40, 4, 4), 50.0, True, 10.0),
    "2-D": (3, (512, 512), (256, 256), (4, 4), 50.0, True, 10.0),
}
PEAK_TARGET_MB_3D = 300.0


# ---------------------------------------------------------------------------
# inputs
# ---------------------------------------------------------------------------


def make_inputs(classes, shape, seed=0, mask_form="spatial"):
    """Blobby objects (smoothed noise thresholded, per class, at different
    scales and densities) and a mask with an unannotated slab and holes."""
    from scipy.ndimage import gaussian_filter

    rng = np.random.default_rng(seed)
    gt = np.empty((classes,) + shape, dtype=np.uint8)
    for c in range(classes):
        noise = gaussian_filter(rng.standard_normal(shape, dtype=np.float32), 2.0 + c)
        gt[c] = noise > np.quantile(noise, 1 - (0.1 + 0.15 * c))
    holes = gaussian_filter(rng.standard_normal(shape, dtype=np.float32), 3.0)
    mask = (holes < np.quantile(holes, 0.95)).astype(np.uint8)
    mask[..., : shape[-1] // 4] = 0  # an unannotated region
    if mask_form == "channels":
        mask = np.ascontiguousarray(np.broadcast_to(mask, gt.shape))
    return gt, mask


# ---------------------------------------------------------------------------
# child processes
# ---------------------------------------------------------------------------


def _status_kb(field):
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


def _reset_peak():
    """Reset VmHWM to the current RSS; False where the kernel refuses."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def _peak_kb(resettable):
    if resettable:
        return _status_kb("VmHWM")
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def child_measure(spec):
    """Load the inputs, warm up, then time ``spec["impl"]`` and track the
    peak resident memory above the loaded inputs."""
    import gc

    from funlib.persistence import Array

    from gp_hotdistance import HotDistancePredictor
    from tests import reference as R

    data = np.load(spec["inputs"])
    gt, mask = data["gt"], data["mask"]
    vs = tuple(spec["voxel_size"])
    classes = gt.shape[0]
    axes = ["z", "y", "x"][-len(vs) :]
    p = HotDistancePredictor(
        channels=[f"class{i}" for i in range(classes)],
        scale_factor=spec["scale"],
        mask_distances=spec["mask_distances"],
    )

    def arrays(g, m):
        g_arr = Array(g, offset=(0,) * len(vs), voxel_size=vs, axis_names=["c^", *axes])
        m_axes = ["c^", *axes] if m.ndim == g.ndim else axes
        m_arr = Array(m, offset=(0,) * len(vs), voxel_size=vs, axis_names=m_axes)
        return g_arr, m_arr

    def fast(g, m):
        g_arr, m_arr = arrays(g, m)
        t0 = time.perf_counter()
        target = p.create_target(g_arr)
        t1 = time.perf_counter()
        weights, counts = p.create_weight(g_arr, target, m_arr, None)
        t2 = time.perf_counter()
        return {"target": t1 - t0, "weight (incl. distance mask)": t2 - t1, "total": t2 - t0}

    def fast_distance_mask(g, m):
        g_arr, _ = arrays(g, m)
        target = np.asarray(p.create_target(g_arr).data)
        t0 = time.perf_counter()
        p.create_distance_mask(target[classes:], m, vs)
        return {"distance mask": time.perf_counter() - t0}

    def reference(g, m):
        t0 = time.perf_counter()
        R.reference_hot_distance(g, m, vs, spec["scale"], spec["mask_distances"], None)
        return {"total": time.perf_counter() - t0}

    run = {"fast": fast, "reference": reference}[spec["impl"]]
    # warm-up on a small crop: numba cache load, thread pool, imports
    crop = (slice(None),) + tuple(slice(0, min(s, 8)) for s in gt.shape[1:])
    # (contiguous, like the real inputs, so numba's compiled layouts match)
    small_mask = mask[crop] if mask.ndim == gt.ndim else mask[crop[1:]]
    run(np.ascontiguousarray(gt[crop]), np.ascontiguousarray(small_mask))
    gc.collect()
    baseline_kb = _status_kb("VmRSS")
    resettable = _reset_peak()
    if not resettable:
        baseline_kb = _peak_kb(False)
    times = [run(gt, mask) for _ in range(spec["repeats"])]
    peak_mb = (_peak_kb(resettable) - baseline_kb) / 1024
    if spec["impl"] == "fast":
        for _ in range(spec["repeats"]):
            times.append(fast_distance_mask(gt, mask))
    stages = {}
    for t in times:
        for key, value in t.items():
            stages.setdefault(key, []).append(value)
    return {
        "median": {k: statistics.median(v) for k, v in stages.items()},
        "peak_mb": peak_mb,
        "peak_method": "VmHWM reset" if resettable else "ru_maxrss",
    }


def child_first_call(_spec):
    """Import and first call of the numba kernels in a fresh process."""
    t0 = time.perf_counter()
    from gp_hotdistance import functional as F

    t1 = time.perf_counter()
    rng = np.random.default_rng(0)
    gt3 = (rng.random((1, 6, 7, 8)) < 0.5).astype(np.uint8)
    gt2 = (rng.random((1, 7, 8)) < 0.5).astype(np.uint8)
    F.hot_distance_target(gt3, (8, 8, 8), 50.0)
    F.hot_distance_target(gt2, (4, 4), 50.0)
    t2 = time.perf_counter()
    F.hot_distance_target(gt3, (8, 8, 8), 50.0)
    F.hot_distance_target(gt2, (4, 4), 50.0)
    t3 = time.perf_counter()
    return {"import": t1 - t0, "first": t2 - t1, "second": t3 - t2}


def spawn(kind, spec, env=None):
    """Run ``child_<kind>(spec)`` in a fresh interpreter; return its result."""
    cmd = [sys.executable, __file__, "--child", kind, json.dumps(spec)]
    out = subprocess.run(
        cmd, capture_output=True, text=True, env={**os.environ, **(env or {})}, check=False
    )
    if out.returncode != 0:
        raise RuntimeError(f"child {kind} failed:\n{out.stderr}")
    return json.loads(out.stdout.strip().splitlines()[-1])


# ---------------------------------------------------------------------------
# main
# ---------------------------------------------------------------------------


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="smaller volumes")
    parser.add_argument("--repeats", type=int, default=None, help="timed runs per measurement")
    parser.add_argument(
        "--mask",
        choices=["spatial", "channels"],
        default="spatial",
        help="mask form: one (*spatial) mask shared by the classes, or (C, *spatial)",
    )
    args = parser.parse_args()
    fast_repeats = args.repeats or 5
    ref_repeats = args.repeats or (3 if args.quick else 2)

    print(f"python {sys.version.split()[0]}, numpy {np.__version__}, {os.cpu_count()} cores")
    load = " ".join(f"{x:.1f}" for x in os.getloadavg())
    print(f"load average at start (other jobs share the cores): {load}")
    print(f"mask form: {args.mask}; repeats: fast {fast_repeats}, reference {ref_repeats}")
    print("fast = HotDistancePredictor.create_target + create_weight (the latter computes")
    print("the distance mask); reference = tests.reference.reference_hot_distance\n")

    first = spawn("first_call", {})
    with tempfile.TemporaryDirectory() as cache:
        cold = spawn("first_call", {}, env={"NUMBA_CACHE_DIR": cache})
    print("numba first call in a fresh process (3-D + 2-D target of a tiny volume):")
    print(
        f"  with the on-disk cache: import {first['import']:.2f} s, first call "
        f"{first['first']:.2f} s, second call {first['second'] * 1e3:.1f} ms"
    )
    print(
        f"  cold (empty NUMBA_CACHE_DIR, JIT compile): import {cold['import']:.2f} s, "
        f"first call {cold['first']:.2f} s\n"
    )

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name, (classes, shape, quick, vs, scale, mask_distances, goal) in CASES.items():
            shape = quick if args.quick else shape
            gt, mask = make_inputs(classes, shape, mask_form=args.mask)
            path = Path(tmp) / "inputs.npz"
            np.savez(path, gt=gt, mask=mask)
            input_mb = (gt.nbytes + mask.nbytes) / 2**20
            del gt, mask
            spec = {
                "inputs": str(path),
                "voxel_size": vs,
                "scale": scale,
                "mask_distances": mask_distances,
            }
            fast = spawn("measure", {**spec, "impl": "fast", "repeats": fast_repeats})
            ref = spawn("measure", {**spec, "impl": "reference", "repeats": ref_repeats})
            label = f"{name}: {classes}x{'x'.join(map(str, shape))} voxel {vs} scale {scale:g}"
            label += f" mask_distances={'on' if mask_distances else 'off'}"
            print(label)
            print(f"  inputs {input_mb:.1f} MB")
            stages = ", ".join(f"{k} {v:.3f} s" for k, v in fast["median"].items() if k != "total")
            print(f"  fast      {fast['median']['total']:8.3f} s  ({stages})")
            print(f"  reference {ref['median']['total']:8.3f} s")
            ratio = ref["median"]["total"] / fast["median"]["total"]
            ok = "ok" if ratio >= goal else "BELOW TARGET"
            print(f"  speed-up  {ratio:8.1f}x  (target >= {goal:g}x: {ok})")
            mem_goal = PEAK_TARGET_MB_3D if len(shape) == 3 else None
            mem_ok = (
                ""
                if mem_goal is None
                else (
                    f"  (target <= {mem_goal:g} MB: {'ok' if fast['peak_mb'] <= mem_goal else 'ABOVE'})"
                )
            )
            print(
                f"  peak RSS above inputs: fast {fast['peak_mb']:.0f} MB{mem_ok}, "
                f"reference {ref['peak_mb']:.0f} MB  [{fast['peak_method']}]\n"
            )
            rows.append((name, ratio, goal, fast["peak_mb"], mem_goal))

    print("load average at end: " + " ".join(f"{x:.1f}" for x in os.getloadavg()))
    print("summary:")
    for name, ratio, goal, peak, mem_goal in rows:
        mem = "" if mem_goal is None else f", peak {peak:.0f} MB (<= {mem_goal:g})"
        print(f"  {name:10s} {ratio:6.1f}x (>= {goal:g}){mem}")


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "--child":
        result = {"measure": child_measure, "first_call": child_first_call}[sys.argv[2]](
            json.loads(sys.argv[3])
        )
        print(json.dumps(result))
    else:
        main()
