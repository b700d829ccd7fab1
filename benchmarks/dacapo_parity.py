"""Numerical parity of ``gp_hotdistance`` with DaCapo 0.3.5's HotDistancePredictor.

A standalone script, not a test: it needs ``dacapo-ml==0.3.5``, which the
project never depends on. Install DaCapo in a separate virtual environment
(torch pinned, see docs/SPEC.md) and run from the repository root::

    PYTHONPATH=$PWD /path/to/dacapo-venv/bin/python benchmarks/dacapo_parity.py

For every case (seeded random volumes, 2-D and 3-D, isotropic and
anisotropic voxels, 1 to 4 classes, full masks, per-channel masks with holes
and one spatial mask shared by all channels, ``mask_distances`` on and off,
several scale factors) it compares, batch by batch:

target
    DaCapo ``create_target(gt)`` and ``process`` against ours; max absolute
    difference, tolerance 1e-5 (tanh space).
distance mask
    DaCapo ``create_distance_mask(t, mask, voxel_size, "tanh", scale_factor)``
    against our ``create_distance_mask(t, mask, voxel_size)``, both fed
    DaCapo's tanh distances ``t``; number of differing voxels, tolerance 0.
weights and moving counts
    Three consecutive batches, each side carrying its own moving counts.
    ``mask_distances=True``: DaCapo ``create_weight`` against ours, both fed
    DaCapo's target. ``mask_distances=False``: DaCapo's ``create_weight`` is
    buggy there (SPEC, "Weights", deviation), so ours is compared with
    DaCapo's ``balance_weights`` applied as SPEC describes (hot and distance
    channels both over ``masks=[mask]``, one slab per channel). Maximum
    relative difference, tolerance 1e-5.

Exits non-zero if any tolerance is exceeded or any case raises.
"""

from __future__ import annotations

import argparse
import itertools
import sys
import time
import traceback
from dataclasses import dataclass

import numpy as np
from funlib.geometry import Coordinate
from funlib.persistence import Array
from scipy import ndimage

TARGET_TOL = 1e-5
WEIGHT_TOL = 1e-5
COUNT_TOL = 1e-5
N_BATCHES = 3

# spatial shape per voxel size; roughly the same world extent in every case
GEOMETRIES = {
    (8, 8, 8): (20, 22, 24),
    (40, 4, 4): (8, 40, 36),
    (4, 4): (64, 72),
    (4, 8): (80, 44),
}
CLASS_COUNTS = (1, 2, 3, 4)
MASK_KINDS = ("full", "holes", "shared")
MASK_DISTANCES = (True, False)
SCALE_FACTORS = (10.0, 50.0)
# channel content, cycled over channels, cases and batches
CHANNEL_KINDS = ("blobs", "noise", "blobs", "empty", "halfspace", "full", "blobs", "sparse")


@dataclass(frozen=True)
class Case:
    index: int
    voxel_size: tuple[int, ...]
    shape: tuple[int, ...]
    classes: int
    mask_kind: str
    mask_distances: bool
    scale_factor: float

    @property
    def label(self) -> str:
        vs = ",".join(str(v) for v in self.voxel_size)
        return (
            f"case {self.index:03d} {len(self.voxel_size)}d vs=({vs}) C={self.classes} "
            f"mask={self.mask_kind:<6} md={int(self.mask_distances)} sf={self.scale_factor:g}"
        )


@dataclass
class Result:
    target_diff: float = 0.0
    dmask_mismatch: int = 0
    dmask_voxels: int = 0
    weight_rel: float = 0.0
    count_rel: float = 0.0
    meta_errors: int = 0
    error: str | None = None

    @property
    def ok(self) -> bool:
        return (
            self.error is None
            and self.meta_errors == 0
            and self.target_diff <= TARGET_TOL
            and self.dmask_mismatch == 0
            and self.weight_rel <= WEIGHT_TOL
            and self.count_rel <= COUNT_TOL
        )


# ---------------------------------------------------------------------------
# random volumes
# ---------------------------------------------------------------------------


def smooth_field(rng: np.random.Generator, shape, voxel_size, sigma_world: float) -> np.ndarray:
    """Gaussian-smoothed white noise, correlation length ``sigma_world`` in
    world units (so objects are round in world space for any voxel size)."""
    sigma = [max(sigma_world / v, 0.3) for v in voxel_size]
    return ndimage.gaussian_filter(rng.standard_normal(shape), sigma, mode="reflect")


def make_channel(rng: np.random.Generator, kind: str, shape, voxel_size) -> np.ndarray:
    if kind == "empty":
        return np.zeros(shape, dtype=np.uint8)
    if kind == "full":
        return np.ones(shape, dtype=np.uint8)
    if kind == "noise":
        return (rng.random(shape) < rng.uniform(0.2, 0.8)).astype(np.uint8)
    if kind == "halfspace":
        axis = int(rng.integers(len(shape)))
        cut = int(rng.integers(1, shape[axis]))
        index = np.arange(shape[axis]).reshape([-1 if a == axis else 1 for a in range(len(shape))])
        return np.broadcast_to(index < cut, shape).astype(np.uint8)
    if kind in ("blobs", "sparse"):
        sigma = rng.uniform(12.0, 40.0)
        field = smooth_field(rng, shape, voxel_size, sigma)
        fraction = rng.uniform(0.005, 0.05) if kind == "sparse" else rng.uniform(0.1, 0.7)
        out = (field > np.quantile(field, 1.0 - fraction)).astype(np.uint8)
        if not out.any():  # keep "sparse" non-empty
            out.flat[int(rng.integers(out.size))] = 1
        return out
    raise ValueError(f"unknown channel kind {kind!r}")


def make_mask(rng: np.random.Generator, shape, voxel_size) -> np.ndarray:
    """Ones with smooth holes plus one random box of unknown voxels."""
    field = smooth_field(rng, shape, voxel_size, rng.uniform(15.0, 40.0))
    mask = (field <= np.quantile(field, rng.uniform(0.7, 0.95))).astype(np.uint8)
    lo = [int(rng.integers(0, s)) for s in shape]
    hi = [int(rng.integers(lo_a, s + 1)) for lo_a, s in zip(lo, shape, strict=True)]
    mask[tuple(slice(a, b) for a, b in zip(lo, hi, strict=True))] = 0
    return mask


def make_batch(case: Case, batch: int, rng: np.random.Generator):
    """gt ``(C, *spatial)`` uint8, the mask as handed to DaCapo ``(C, *spatial)``,
    the mask as handed to ours (spatial only for ``shared``), and an offset."""
    shape, vs, c = case.shape, case.voxel_size, case.classes
    kinds = [CHANNEL_KINDS[(case.index + 3 * i + batch) % len(CHANNEL_KINDS)] for i in range(c)]
    gt = np.stack([make_channel(rng, k, shape, vs) for k in kinds])
    mask_dtype = np.float32 if case.index % 2 else np.uint8
    if case.mask_kind == "full":
        ours_mask = np.ones((c,) + shape, dtype=mask_dtype)
        dacapo_mask = ours_mask
    elif case.mask_kind == "holes":
        ours_mask = np.stack([make_mask(rng, shape, vs) for _ in range(c)]).astype(mask_dtype)
        if c == 4 and batch == 1:
            ours_mask[3] = 0  # a channel with nothing annotated
        dacapo_mask = ours_mask
    elif case.mask_kind == "shared":
        ours_mask = make_mask(rng, shape, vs).astype(mask_dtype)
        dacapo_mask = np.ascontiguousarray(np.broadcast_to(ours_mask, (c,) + shape))
    else:
        raise ValueError(case.mask_kind)
    offset = Coordinate(int(rng.integers(-5, 6)) * v for v in vs)
    return gt, dacapo_mask, ours_mask, offset, kinds


def as_array(data: np.ndarray, offset: Coordinate, voxel_size) -> Array:
    """An Array the way DaCapo builds them: channel axis "c^" when present."""
    dims = len(voxel_size)
    spatial = ["z", "y", "x"][-dims:]
    axis_names = (["c^"] if data.ndim == dims + 1 else []) + spatial
    return Array(data, offset=offset, voxel_size=Coordinate(voxel_size), axis_names=axis_names)


# ---------------------------------------------------------------------------
# comparisons
# ---------------------------------------------------------------------------


def counts_as_list(counts) -> list[dict[int, tuple[float, float]]]:
    return [
        {int(k): (float(n), float(d)) for k, (n, d) in dict(channel).items()} for channel in counts
    ]


def count_rel_diff(ours, ref) -> float:
    ours, ref = counts_as_list(ours), counts_as_list(ref)
    if len(ours) != len(ref):
        return np.inf
    worst = 0.0
    for a, b in zip(ours, ref, strict=True):
        if set(a) != set(b):
            return np.inf
        for key in b:
            for x, y in zip(a[key], b[key], strict=True):
                scale = max(abs(x), abs(y))
                if scale > 0:
                    worst = max(worst, abs(x - y) / scale)
    return worst


def rel_diff(ours: np.ndarray, ref: np.ndarray) -> float:
    if ours.shape != ref.shape:
        return np.inf
    a = np.asarray(ours, dtype=np.float64)
    b = np.asarray(ref, dtype=np.float64)
    scale = np.maximum(np.abs(a), np.abs(b))
    nonzero = scale > 0
    if not nonzero.any():
        return 0.0
    return float(np.max(np.abs(a - b)[nonzero] / scale[nonzero]))


def abs_diff(ours: np.ndarray, ref: np.ndarray) -> float:
    if ours.shape != ref.shape:
        return np.inf
    return float(np.max(np.abs(np.asarray(ours, np.float64) - np.asarray(ref, np.float64))))


def dacapo_reference_weights(balance_weights, gt, mask, counts, classes):
    """DaCapo's intended weights for ``mask_distances=False``: its
    ``balance_weights`` over ``masks=[mask]`` for hot and distance channels,
    one slab per channel, hot and distance counts kept apart."""
    slab = (1,) + (-1,) * (gt.ndim - 1)
    hot_counts = None if counts is None else list(counts[:classes])
    dist_counts = None if counts is None else list(counts[classes:])
    hot, hot_counts = balance_weights(gt, 2, masks=[mask], slab=slab, moving_counts=hot_counts)
    dist, dist_counts = balance_weights(gt, 2, masks=[mask], slab=slab, moving_counts=dist_counts)
    return np.concatenate((hot, dist)), list(hot_counts) + list(dist_counts)


def run_case(case: Case, seed: int, dacapo, ours_cls, balance_weights, timings) -> Result:
    result = Result()
    rng = np.random.default_rng([seed, case.index])
    channels = [f"class{i}" for i in range(case.classes)]
    theirs = dacapo(channels, case.scale_factor, case.mask_distances, 1)
    ours = ours_cls(channels, case.scale_factor, case.mask_distances)
    vs = Coordinate(case.voxel_size)
    c = case.classes
    their_counts = None
    our_counts = None
    for batch in range(N_BATCHES):
        gt_np, dacapo_mask, ours_mask, offset, _ = make_batch(case, batch, rng)
        gt = as_array(gt_np, offset, vs)
        # DaCapo 0.3.5 cannot take boolean gt (its boundary finder subtracts
        # the labels); ours must, so it gets bool in every third case.
        gt_np_ours = gt_np.astype(bool) if case.index % 3 == 1 else gt_np.copy()
        gt_ours = as_array(gt_np_ours, offset, vs)

        # -- target ----------------------------------------------------------
        t0 = time.perf_counter()
        their_target = theirs.create_target(gt)
        t1 = time.perf_counter()
        our_target = ours.create_target(gt_ours)
        t2 = time.perf_counter()
        timings["dacapo_target"] += t1 - t0
        timings["ours_target"] += t2 - t1
        their_t = np.asarray(their_target[their_target.roi])
        our_t = np.asarray(our_target[our_target.roi])
        result.target_diff = max(result.target_diff, abs_diff(our_t, their_t))
        if our_target.roi != their_target.roi or our_target.voxel_size != their_target.voxel_size:
            result.meta_errors += 1
            print(
                f"  target ROI/voxel size: ours {our_target.roi} {our_target.voxel_size}, "
                f"DaCapo {their_target.roi} {their_target.voxel_size}"
            )
        if our_t.dtype != np.float32:
            result.meta_errors += 1
            print(f"  target dtype {our_t.dtype}, expected float32")
        their_p = theirs.process(gt_np, vs, "tanh", case.scale_factor)
        our_p = ours.process(gt_np_ours, vs)
        result.target_diff = max(result.target_diff, abs_diff(our_p, their_p))

        # -- distance mask (both fed DaCapo's tanh distances) ------------------
        distances = their_t[c:]
        their_dm = theirs.create_distance_mask(
            distances, dacapo_mask, vs, "tanh", case.scale_factor
        )
        our_dm = np.asarray(ours.create_distance_mask(distances, ours_mask, vs))
        if our_dm.shape != their_dm.shape:
            result.dmask_mismatch += their_dm.size
        else:
            result.dmask_mismatch += int(np.count_nonzero(our_dm != their_dm))
        result.dmask_voxels += their_dm.size
        if our_dm.dtype != their_dm.dtype:
            result.meta_errors += 1
            print(f"  distance mask dtype: ours {our_dm.dtype}, DaCapo {their_dm.dtype}")

        # -- weights and moving counts ------------------------------------------
        mask_ours = as_array(ours_mask, offset, vs)
        if case.mask_distances:
            mask_theirs = as_array(dacapo_mask, offset, vs)
            their_w, their_counts = theirs.create_weight(
                gt, their_target, mask_theirs, their_counts
            )
            their_w = np.asarray(their_w[their_w.roi])
        else:
            their_w, their_counts = dacapo_reference_weights(
                balance_weights, gt_np, dacapo_mask, their_counts, c
            )
        our_w, our_counts = ours.create_weight(gt_ours, their_target, mask_ours, our_counts)
        if our_w.roi != their_target.roi:
            result.meta_errors += 1
            print(f"  weight ROI: ours {our_w.roi}, target {their_target.roi}")
        our_w = np.asarray(our_w[our_w.roi])
        if our_w.dtype != np.float32:
            result.meta_errors += 1
            print(f"  weight dtype {our_w.dtype}, expected float32")
        result.weight_rel = max(result.weight_rel, rel_diff(our_w, their_w))
        result.count_rel = max(result.count_rel, count_rel_diff(our_counts, their_counts))
    return result


def make_cases() -> list[Case]:
    cases = []
    product = itertools.product(
        GEOMETRIES.items(), CLASS_COUNTS, MASK_KINDS, MASK_DISTANCES, SCALE_FACTORS
    )
    for index, ((vs, shape), classes, mask_kind, md, sf) in enumerate(product):
        cases.append(Case(index, vs, shape, classes, mask_kind, md, sf))
    return cases


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seed", type=int, default=20240531)
    parser.add_argument("--case", type=int, action="append", help="run only these case indices")
    args = parser.parse_args(argv)

    import dacapo
    from dacapo.experiments.tasks.predictors.hot_distance_predictor import (
        HotDistancePredictor as DaCapoPredictor,
    )
    from dacapo.utils.balance_weights import balance_weights

    from gp_hotdistance import HotDistancePredictor

    version = getattr(dacapo, "__version__", None)
    if version is None:
        from importlib.metadata import version as dist_version

        version = dist_version("dacapo-ml")
    print(f"dacapo-ml {version}, numpy {np.__version__}, seed {args.seed}")

    cases = make_cases()
    if args.case:
        cases = [c for c in cases if c.index in set(args.case)]
    timings = {"dacapo_target": 0.0, "ours_target": 0.0}
    total = Result()
    failed = 0
    for case in cases:
        try:
            r = run_case(
                case, args.seed, DaCapoPredictor, HotDistancePredictor, balance_weights, timings
            )
        except Exception as exc:  # report and go on: one broken case must not hide the rest
            r = Result(error=f"{type(exc).__name__}: {exc}")
            traceback.print_exc()
        status = "ok" if r.ok else "FAIL"
        failed += not r.ok
        if r.error:
            print(f"{case.label}: ERROR {r.error}")
        else:
            print(
                f"{case.label}: target {r.target_diff:.2e} dmask {r.dmask_mismatch}/"
                f"{r.dmask_voxels} weight {r.weight_rel:.2e} count {r.count_rel:.2e} {status}"
            )
        total.target_diff = max(total.target_diff, r.target_diff)
        total.dmask_mismatch += r.dmask_mismatch
        total.weight_rel = max(total.weight_rel, r.weight_rel)
        total.count_rel = max(total.count_rel, r.count_rel)

    print(
        f"create_target time: DaCapo {timings['dacapo_target']:.2f} s, "
        f"ours {timings['ours_target']:.2f} s"
    )
    print(
        f"{len(cases)} cases, max target diff {total.target_diff:.3g}, "
        f"distance-mask mismatches {total.dmask_mismatch}, "
        f"max weight rel diff {total.weight_rel:.3g}, max count rel diff {total.count_rel:.3g}"
    )
    if failed:
        print(f"{failed} case(s) FAILED")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
