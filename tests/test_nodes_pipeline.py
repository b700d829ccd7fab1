"""The three nodes in a full augmenting training pipeline with PreCache.

The pipeline runs in a freshly spawned interpreter, with a time limit, so
that workers that hang or die fail this test instead of blocking the session.
Before PreCache forks its workers, that process runs the kernels on a volume
large enough to start their thread pool: training scripts do the same
(validation, a first batch) and forked workers must still work.
"""

from __future__ import annotations

import multiprocessing
import queue
import traceback

import gunpowder as gp
import numpy as np
import pytest

from gp_hotdistance import HotDistancePredictor
from gp_hotdistance import functional as F
from tests.helpers import augmented_pipeline, blobs

BATCHES = 20
BATCH_SIZE = 2
OUTPUT_SHAPE = (6, 24, 24)  # voxels
VOXEL_SIZE = (8, 4, 4)
CLASS_IDS = (1, 2**40 + 3)  # a uint64 id beyond 2**32
TIMEOUT_S = 150


@pytest.mark.slow
def test_training_pipeline_with_precache():
    spawn = multiprocessing.get_context("spawn")
    results = spawn.Queue()
    child = spawn.Process(target=_report, args=(results,))
    child.start()
    try:
        outcome = results.get(timeout=TIMEOUT_S)
    except queue.Empty:
        outcome = f"no result within {TIMEOUT_S} s: PreCache workers hung or died"
    finally:
        child.join(timeout=10)
        if child.is_alive():
            child.kill()
            child.join()
    if isinstance(outcome, str):
        pytest.fail(outcome)
    assert outcome == BATCHES


def _report(results) -> None:
    try:
        results.put(run_training_pipeline())
    except BaseException:
        results.put(traceback.format_exc())


def run_training_pipeline() -> int:
    """Run the pipeline for BATCHES batches, checking each; returns the count.

    Meant for a fresh process: sets the start method back to fork (a spawned
    child inherits ``spawn``, which would re-import everything per worker).
    """
    multiprocessing.set_start_method("fork", force=True)
    warm_up = blobs(np.random.default_rng(0), (16, 128, 128), [1, 2])
    F.hot_distance_target(F.to_channels(warm_up, [1, 2]), VOXEL_SIZE, 16.0)
    p = HotDistancePredictor(["mito", "er"], 16.0, True, class_ids=CLASS_IDS)
    keys = {
        name: gp.ArrayKey(name.upper())
        for name in ("raw", "gt", "mask", "target", "distance_mask", "weights")
    }
    pipeline, weight_node = augmented_pipeline(p, keys, voxel_size=VOXEL_SIZE, seed=3)
    pipeline += gp.Stack(BATCH_SIZE)
    pipeline += gp.PreCache(cache_size=4, num_workers=2)
    size = gp.Coordinate(OUTPUT_SHAPE) * gp.Coordinate(VOXEL_SIZE)
    request = gp.BatchRequest()
    for key in keys.values():
        request.add(key, size)

    C = p.classes
    spatial = (BATCH_SIZE, *OUTPUT_SHAPE)
    seen_classes = np.zeros(C, dtype=int)
    checked = 0
    with gp.build(pipeline):
        for i in range(BATCHES):
            batch = pipeline.request_batch(request)
            target = batch[keys["target"]].data
            distance_mask = batch[keys["distance_mask"]].data
            weights = batch[keys["weights"]].data
            mask = batch[keys["mask"]].data
            gt = batch[keys["gt"]].data
            msg = f"batch {i}"

            assert target.shape == (BATCH_SIZE, 2 * C, *OUTPUT_SHAPE), msg
            assert distance_mask.shape == (BATCH_SIZE, C, *OUTPUT_SHAPE), msg
            assert weights.shape == (BATCH_SIZE, 2 * C, *OUTPUT_SHAPE), msg
            assert mask.shape == gt.shape == spatial, msg
            assert target.dtype == weights.dtype == np.float32, msg
            assert distance_mask.dtype == mask.dtype == np.uint8, msg
            assert gt.dtype == np.uint64, msg

            hot, dist = target[:, :C], target[:, C:]
            assert np.isin(hot, (0, 1)).all(), msg
            channels = np.stack([F.to_channels(sample, CLASS_IDS) for sample in gt])
            np.testing.assert_array_equal(hot, channels, err_msg=msg)
            assert (np.abs(dist) < 1).all(), msg
            np.testing.assert_array_equal(dist > 0, hot == 1, err_msg=f"{msg}: sign = inside")
            assert np.isin(distance_mask, (0, 1)).all(), msg
            assert (distance_mask <= mask[:, None]).all(), f"{msg}: unknown stays unknown"

            assert np.isfinite(weights).all() and (weights >= 0).all(), msg
            assert (weights.transpose(1, 0, 2, 3, 4)[:, mask == 0] == 0).all(), msg
            assert (weights[:, C:][distance_mask == 0] == 0).all(), msg
            assert (weights[:, :C][np.broadcast_to(mask[:, None] == 1, hot.shape)] > 0).all(), msg
            seen_classes += channels.any(axis=(0, 2, 3, 4))
            checked += 1

    assert (seen_classes > 0).all(), "every class should occur in some batch"
    # the counts were kept in the PreCache workers, not in this process
    assert weight_node.moving_counts == F.new_moving_counts(2 * C)
    return checked
