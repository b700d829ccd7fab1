"""Speed and memory of the hot-distance kernels against DaCapo's algorithm
and against the approximate native-grid approach.

For each case, one fresh process times one batch (target, distance mask and
class-balanced weights) three ways, all on the same inputs, best of the
repeats (the machine is shared; ratios are what count):

- ``ours``: ``HotDistancePredictor.create_target`` + ``create_weight`` on
  funlib.persistence Arrays (``create_weight`` computes the distance mask
  itself when ``mask_distances`` is on);
- ``DaCapo``: :func:`tests.reference.reference_hot_distance`,
  DaCapo's algorithm (scipy EDT on the doubled grid, ``np.unique``
  balancing);
- ``approx.``: what dacapo-toolbox 1.0.0 ships, per channel, on the native
  grid with seung-lab ``edt``: the signed distance ``edt(x) - edt(x == 0)``
  (tanh in torch), its boundary mask ``edt(x) + edt(x == 0) <
  edt(ones, black_border=True)`` (a module of its own, so its edts are its
  own), and weights balanced with ``torch.unique`` counts (hot channels over
  the mask, distance channels over mask x boundary mask). Not face-exact.

Also per case: the target of one class against one native ``edt.edt`` pass
over that channel (the per-class goal: at most 2.5 passes; ``edt.edt``
transforms the foreground only, so its pass over the background is printed
beside it), its signed distance alone, the stages of
ours, and the peak resident memory of ours above the inputs. Class-id inputs
(the 14-class case) are converted to channels inside every timed call.
Finally the numba first call in a fresh process, cached and cold.

    PYTHONPATH=. python benchmarks/bench_kernels.py            # full sizes
    PYTHONPATH=. python benchmarks/bench_kernels.py --quick    # smaller sizes
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

CASES = {
    # name: (classes, class-id input, shape, quick shape, voxel size, scale,
    #        goal vs DaCapo, goal vs approx.)
    "3-D": (3, False, (132, 132, 132), (64, 64, 64), (8, 8, 8), 50.0, 25.0, 3.0),
    "2-D": (3, False, (512, 512), (256, 256), (4, 4), 50.0, 10.0, 3.0),
    "3-D 14 ids": (14, True, (96, 96, 96), (48, 48, 48), (8, 8, 8), 50.0, None, 3.0),
}
PEAK_GOAL_MB_3D = 300.0
PER_CLASS_GOAL_PASSES = 2.5
ONE_CLASS_REPEATS = 20  # at least this many runs of the one-class timings


# ---------------------------------------------------------------------------
# inputs
# ---------------------------------------------------------------------------


def make_inputs(classes, shape, class_ids=False, seed=0):
    """Blobby objects (smoothed noise thresholded per class at different
    scales and densities), as binary channels or, for ``class_ids``, as one
    volume of ids ``1..classes`` (mutually exclusive, 0 background); and a
    spatial mask with holes and an unannotated slab."""
    from scipy.ndimage import gaussian_filter

    rng = np.random.default_rng(seed)
    fields = []
    for c in range(classes):
        noise = gaussian_filter(rng.standard_normal(shape, dtype=np.float32), 2.0 + c % 4)
        fraction = 0.1 + 0.15 * c if not class_ids else 0.6 / classes
        fields.append(noise > np.quantile(noise, 1 - fraction))
    if class_ids:
        gt = np.zeros(shape, dtype=np.uint16)
        for c, field in enumerate(fields):
            gt[field & (gt == 0)] = c + 1
    else:
        gt = np.stack(fields).astype(np.uint8)
    holes = gaussian_filter(rng.standard_normal(shape, dtype=np.float32), 3.0)
    mask = (holes < np.quantile(holes, 0.95)).astype(np.uint8)
    mask[..., : shape[-1] // 4] = 0  # an unannotated region
    return gt, mask


# ---------------------------------------------------------------------------
# the three implementations
# ---------------------------------------------------------------------------


def approx_batch(channels, mask, voxel_size, scale, threads):
    """dacapo-toolbox 1.0.0's approach, per channel: ``edt`` signed distance
    and boundary mask on the native grid, ``torch.unique`` balancing."""
    import edt
    import torch

    aniso = tuple(float(v) for v in voxel_size)

    def sdt(x):  # its SignedDistanceTransform
        d = edt.edt(x, anisotropy=aniso, parallel=threads) - edt.edt(
            x == 0, anisotropy=aniso, parallel=threads
        )
        return torch.tanh(torch.from_numpy(d) / scale)

    def boundary_mask(x):  # its SDTBoundaryMask
        inner = edt.edt(x, anisotropy=aniso, parallel=threads) + edt.edt(
            x == 0, anisotropy=aniso, parallel=threads
        )
        ones = edt.edt(np.ones_like(x), anisotropy=aniso, black_border=True, parallel=threads)
        return torch.from_numpy(inner < ones)

    def balance(labels, scale_mask):
        classes, counts = torch.unique(labels[scale_mask != 0], return_counts=True)
        fracs = torch.clamp(counts / counts.sum(), 0.05, 0.95)
        w = torch.zeros(2)
        w[classes.long()] = 1.0 / (2.0 * fracs)
        return scale_mask * w[labels.long()]

    m = torch.from_numpy(mask.astype(np.float32))
    target, weights = [], []
    for x in channels:
        target.append(sdt(x))
        t = torch.from_numpy(x)
        hot = balance(t, m)
        dist = balance(t, m * boundary_mask(x))
        weights.append((hot, dist))
    return target, weights


def as_channels(gt, classes, class_ids):
    return np.stack([gt == i for i in range(1, classes + 1)]).astype(np.uint8) if class_ids else gt


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


def _best(fn, repeats):
    """Best wall time of ``repeats`` calls of ``fn``."""
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def _best_alternating(fn_a, fn_b, repeats):
    """Best wall times of ``repeats`` calls each of ``fn_a`` and ``fn_b``,
    called in turn, so that both see the same moments of a shared machine."""
    times_a, times_b = [], []
    for _ in range(repeats):
        for fn, times in ((fn_a, times_a), (fn_b, times_b)):
            t0 = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t0)
    return min(times_a), min(times_b)


def child_measure(spec):
    """Time the three implementations on the loaded inputs (after a warm-up
    on a small crop), ours' stages, one class against ``edt.edt``, and the
    peak memory of ours above the inputs."""
    import gc

    import edt
    from funlib.persistence import Array

    from gp_hotdistance import HotDistancePredictor
    from gp_hotdistance import functional as F
    from tests import reference as R

    data = np.load(spec["inputs"])
    gt, mask = data["gt"], data["mask"]
    vs = tuple(spec["voxel_size"])
    classes, class_ids, scale = spec["classes"], spec["class_ids"], spec["scale"]
    threads = F.kernel_threads()
    dims = len(vs)
    axes = ["z", "y", "x"][-dims:]
    p = HotDistancePredictor(
        channels=[f"class{i}" for i in range(classes)], scale_factor=scale, mask_distances=True
    )

    def ours(g, m):
        g_axes = axes if g.ndim == dims else ["c^", *axes]
        g_arr = Array(g, offset=(0,) * dims, voxel_size=vs, axis_names=g_axes)
        m_arr = Array(m, offset=(0,) * dims, voxel_size=vs, axis_names=axes)
        target = p.create_target(g_arr)
        return p.create_weight(g_arr, target, m_arr, None)

    def dacapo(g, m):
        return R.reference_hot_distance(as_channels(g, classes, class_ids), m, vs, scale, True)

    def approx(g, m):
        return approx_batch(as_channels(g, classes, class_ids), m, vs, scale, threads)

    impls = {"ours": ours, "approx": approx, "dacapo": dacapo}
    crop = tuple(slice(0, min(s, 12)) for s in mask.shape)
    small_gt = np.ascontiguousarray(gt[crop] if class_ids else gt[(slice(None),) + crop])
    for fn in impls.values():  # warm-up: numba cache load, thread pool, imports
        fn(small_gt, np.ascontiguousarray(mask[crop]))
    gc.collect()

    result = {"best": {}, "stages": {}}
    baseline_kb = _status_kb("VmRSS")
    resettable = _reset_peak()
    ours(gt, mask)
    peak_kb = _status_kb("VmHWM") if resettable else None
    result["peak_mb"] = None if peak_kb is None else (peak_kb - baseline_kb) / 1024
    for name, fn in impls.items():
        if name == "dacapo" and spec["dacapo_repeats"] == 0:
            continue
        repeats = spec["dacapo_repeats"] if name == "dacapo" else spec["repeats"]
        result["best"][name] = _best(lambda fn=fn: fn(gt, mask), repeats)

    # ours by stage (functional level, channels already binary)
    channels = as_channels(gt, classes, class_ids)
    target = F.hot_distance_target(channels, vs, scale)
    dmask = p.create_distance_mask(target[classes:], mask, vs)
    stages = {
        "to channels": lambda: as_channels(gt, classes, class_ids),
        "target": lambda: F.hot_distance_target(channels, vs, scale),
        "distance mask": lambda: p.create_distance_mask(target[classes:], mask, vs),
        "weights": lambda: F.hot_distance_weights(channels, mask, dmask),
    }
    if not class_ids:
        del stages["to channels"]
    result["stages"] = {k: _best(fn, spec["repeats"]) for k, fn in stages.items()}

    # one class: our target against one native edt.edt pass over that channel
    # (each takes milliseconds: best of 20+ runs, the two taken in turn)
    one = np.ascontiguousarray(channels[:1])
    one_repeats = max(spec["repeats"], ONE_CLASS_REPEATS)
    result["one_class"], result["edt_pass"] = _best_alternating(
        lambda: F.hot_distance_target(one, vs, scale),
        lambda: edt.edt(one[0], anisotropy=vs, parallel=threads),
        one_repeats,
    )
    # edt.edt transforms the foreground only; the background's pass, for scale
    background = np.ascontiguousarray(one[0] == 0)
    result["edt_background"] = _best(
        lambda: edt.edt(background, anisotropy=vs, parallel=threads), one_repeats
    )
    result["foreground"] = float(one[0].mean())
    result["signed_distance"] = _best(lambda: F.signed_distance(one[0], vs), one_repeats)
    result["threads"] = threads
    return result


def child_first_call(_spec):
    """Import and first call of the numba kernels in a fresh process."""
    t0 = time.perf_counter()
    from gp_hotdistance import functional as F

    t1 = time.perf_counter()
    rng = np.random.default_rng(0)
    gt3 = (rng.random((1, 6, 7, 8)) < 0.5).astype(np.uint8)
    gt2 = (rng.random((1, 7, 8)) < 0.5).astype(np.uint8)

    def batch():
        for gt, vs in ((gt3, (8, 8, 8)), (gt2, (4, 4))):
            target = F.hot_distance_target(gt, vs, 50.0)
            dmask = F.distance_mask(target[1:], gt[0], vs, 50.0, 0.05, 0.8)
            F.hot_distance_weights(gt, gt[0], dmask)

    batch()
    t2 = time.perf_counter()
    batch()
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


def _verdict(value, goal, higher_is_better=True):
    if goal is None:
        return "no goal"
    ok = value >= goal if higher_is_better else value <= goal
    return f"goal {'>=' if higher_is_better else '<='} {goal:g}: {'ok' if ok else 'MISSED'}"


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="smaller volumes")
    parser.add_argument("--repeats", type=int, default=5, help="timed runs of ours and approx.")
    parser.add_argument(
        "--dacapo-repeats", type=int, default=2, help="timed runs of DaCapo's (0: skip it)"
    )
    parser.add_argument("--cases", nargs="*", default=list(CASES), help="cases to run")
    args = parser.parse_args()

    print(f"python {sys.version.split()[0]}, numpy {np.__version__}, {os.cpu_count()} cores")
    load = " ".join(f"{x:.1f}" for x in os.getloadavg())
    print(f"load average at start (other jobs share the cores): {load}")
    print(f"best of {args.repeats} (ours, approx.) and {args.dacapo_repeats} (DaCapo) runs\n")

    first = spawn("first_call", {})
    with tempfile.TemporaryDirectory() as cache:
        cold = spawn("first_call", {}, env={"NUMBA_CACHE_DIR": cache})
    print("numba first call in a fresh process (target, distance mask, weights; 3-D + 2-D):")
    print(
        f"  cached: import {first['import']:.2f} s, first call {first['first']:.2f} s, "
        f"second call {first['second'] * 1e3:.1f} ms"
    )
    print(
        f"  cold (empty NUMBA_CACHE_DIR): import {cold['import']:.2f} s, first call "
        f"{cold['first']:.2f} s\n"
    )

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.cases:
            classes, class_ids, shape, quick, vs, scale, goal_dacapo, goal_approx = CASES[name]
            shape = quick if args.quick else shape
            gt, mask = make_inputs(classes, shape, class_ids)
            path = Path(tmp) / "inputs.npz"
            np.savez(path, gt=gt, mask=mask)
            spec = {
                "inputs": str(path),
                "voxel_size": vs,
                "scale": scale,
                "classes": classes,
                "class_ids": class_ids,
                "repeats": args.repeats,
                "dacapo_repeats": args.dacapo_repeats,
            }
            r = spawn("measure", spec)
            best = r["best"]
            form = "class ids" if class_ids else "channels"
            print(
                f"{name}: {classes}x{'x'.join(map(str, shape))} ({form}) voxel {vs} "
                f"scale {scale:g}, mask_distances on, {r['threads']} threads"
            )
            for impl in ("dacapo", "approx", "ours"):
                if impl in best:
                    print(f"  {impl:8s} {best[impl]:8.3f} s")
            stages = ", ".join(f"{k} {v:.3f} s" for k, v in r["stages"].items())
            print(f"  ours by stage: {stages}")
            vs_dacapo = best["dacapo"] / best["ours"] if "dacapo" in best else None
            vs_approx = best["approx"] / best["ours"]
            if vs_dacapo is not None:
                print(f"  ours vs DaCapo  {vs_dacapo:6.1f}x  ({_verdict(vs_dacapo, goal_dacapo)})")
            print(f"  ours vs approx. {vs_approx:6.1f}x  ({_verdict(vs_approx, goal_approx)})")
            passes = r["one_class"] / r["edt_pass"]
            print(
                f"  one class: target {r['one_class'] * 1e3:.1f} ms = {passes:.2f} native "
                f"edt.edt passes of {r['edt_pass'] * 1e3:.1f} ms "
                f"({_verdict(passes, PER_CLASS_GOAL_PASSES, higher_is_better=False)}); "
                f"{r['one_class'] / np.prod(shape) * 1e9:.0f} ns per voxel"
            )
            print(
                f"  (that channel is {r['foreground']:.0%} foreground; edt.edt of its "
                f"background takes {r['edt_background'] * 1e3:.1f} ms)"
            )
            sd = r["signed_distance"]
            print(
                f"  its signed distance alone (no tanh, no hot channel): {sd * 1e3:.1f} ms "
                f"({sd / r['edt_pass']:.2f} edt passes)"
            )
            mem_goal = PEAK_GOAL_MB_3D if len(shape) == 3 and not class_ids else None
            if r["peak_mb"] is None:
                print("  peak RSS: not measurable here (/proc/self/clear_refs refused)")
            else:
                print(
                    f"  peak RSS of ours above the inputs: {r['peak_mb']:.0f} MB"
                    + ("" if mem_goal is None else f" ({_verdict(r['peak_mb'], mem_goal, False)})")
                )
            print()
            rows.append(
                (name, vs_dacapo, goal_dacapo, vs_approx, goal_approx, passes, r["peak_mb"])
            )

    print("load average at end: " + " ".join(f"{x:.1f}" for x in os.getloadavg()))
    print("summary (ratios: other's time / ours):")
    for name, vs_dacapo, goal_dacapo, vs_approx, goal_approx, passes, peak in rows:
        dacapo = "   -  " if vs_dacapo is None else f"{vs_dacapo:5.1f}x"
        goal_d = "" if goal_dacapo is None else f" (>= {goal_dacapo:g})"
        peak_s = "" if peak is None else f", peak {peak:.0f} MB"
        print(
            f"  {name:11s} vs DaCapo {dacapo}{goal_d:8s} vs approx. {vs_approx:4.1f}x "
            f"(>= {goal_approx:g}), one class = {passes:.2f} edt passes "
            f"(<= {PER_CLASS_GOAL_PASSES:g}){peak_s}"
        )


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "--child":
        result = {"measure": child_measure, "first_call": child_first_call}[sys.argv[2]](
            json.loads(sys.argv[3])
        )
        print(json.dumps(result))
    else:
        main()
