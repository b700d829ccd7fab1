"""HotDistanceDataset and BalancedWeights: the torch data path against the
gunpowder nodes and the data layer."""

from __future__ import annotations

import gunpowder as gp
import numpy as np
import pytest
import torch

from gp_hotdistance import HotDistancePredictor, WeightNode
from gp_hotdistance import functional as F
from gp_hotdistance.torch import BalancedWeights, HotDistanceDataset
from pipelines.batches import open_data
from pipelines.common import make_predictor
from pipelines.demo_data import make_cellmap_demo
from tests.helpers import ArraySource, make_array, random_mask, smooth_blobs, tiny_config

# -- BalancedWeights against WeightNode ----------------------------------------


def _samples(rng, count, classes, shape, mask_kind):
    """``count`` samples of ``classes`` binary channels: gt, target (hot =
    gt, distances random), mask and distance mask (``None`` for
    ``mask_kind=None``; uint8 or float32 with values in [0, 1])."""
    samples = []
    for _ in range(count):
        gt = np.stack(
            [smooth_blobs(rng, shape, 1.0, rng.uniform(0.05, 0.6)) for _ in range(classes)]
        )
        if rng.random() < 0.3:
            gt[0] = 0  # a channel without foreground: class 1 absent
        target = np.concatenate([gt, rng.uniform(-1, 1, gt.shape)]).astype(np.float32)
        if mask_kind is None:
            mask = distance_mask = None
        else:
            mask = np.stack([random_mask(rng, shape, 0.4) for _ in range(classes)])
            distance_mask = (rng.random(gt.shape) > 0.3).astype(np.uint8)
            if mask_kind == "float":
                mask = (mask * rng.choice([0.5, 1.0], gt.shape)).astype(np.float32)
                distance_mask = distance_mask.astype(np.float32)
        samples.append((gt, target, mask, distance_mask))
    return samples


def _weight_node_weights(samples, predictor, voxel_size, moving):
    """Each sample through a real pipeline ending in WeightNode, in order:
    the samples lie side by side along the first axis of one volume and
    sample ``i`` is requested at its slab."""
    shape = samples[0][0].shape[1:]
    voxel_size = gp.Coordinate(voxel_size)
    offset = gp.Coordinate((-3,) + (5,) * (len(shape) - 1)) * voxel_size
    keys = {n: gp.ArrayKey(f"BW_{n.upper()}") for n in ("gt", "target", "mask", "dmask", "w")}

    def joined(index):
        return np.concatenate([s[index] for s in samples], axis=1)

    sources = [
        ArraySource(keys["gt"], make_array(joined(0), offset, voxel_size)),
        ArraySource(keys["target"], make_array(joined(1), offset, voxel_size)),
    ]
    masked = samples[0][2] is not None
    if masked:
        sources.append(ArraySource(keys["mask"], make_array(joined(2), offset, voxel_size)))
        sources.append(ArraySource(keys["dmask"], make_array(joined(3), offset, voxel_size)))
    node = WeightNode(
        predictor,
        keys["gt"],
        keys["target"],
        keys["w"],
        mask=keys["mask"] if masked else None,
        distance_mask=keys["dmask"] if predictor.mask_distances else None,
        moving_counts=moving,
    )
    pipeline = tuple(sources) + gp.MergeProvider() + node
    weights = []
    with gp.build(pipeline):
        for i in range(len(samples)):
            begin = offset + gp.Coordinate((i * shape[0],) + (0,) * (len(shape) - 1)) * voxel_size
            roi = gp.Roi(begin, gp.Coordinate(shape) * voxel_size)
            batch = pipeline.request_batch(gp.BatchRequest({keys["w"]: gp.ArraySpec(roi=roi)}))
            weights.append(batch[keys["w"]].data)
    return np.stack(weights), node.moving_counts


@pytest.mark.parametrize(
    ("shape", "voxel_size", "mask_kind", "mask_distances", "moving"),
    [
        ((6, 7), (4, 6), None, False, True),
        ((6, 7), (4, 6), "uint8", True, True),
        ((6, 7), (4, 6), "uint8", True, False),
        ((4, 5, 6), (40, 4, 4), "float", True, True),
        ((4, 5, 6), (40, 4, 4), "uint8", False, True),
        ((4, 5, 6), (40, 4, 4), None, False, False),
    ],
)
def test_balanced_weights_equal_weight_node_sample_by_sample(
    shape, voxel_size, mask_kind, mask_distances, moving
):
    """Batches of 3 then 2 give WeightNode's weights for the same five
    samples in order, and the same counts (moving); masks are applied as
    WeightNode applies them (distance channels: mask * distance_mask)."""
    rng = np.random.default_rng(len(shape) * 10 + moving)
    predictor = HotDistancePredictor(["a", "b"], 24.0, mask_distances, clipmin=0.1, clipmax=0.9)
    samples = _samples(rng, 5, 2, shape, mask_kind)
    expected, counts = _weight_node_weights(samples, predictor, voxel_size, moving)

    balanced = BalancedWeights(predictor, moving_counts=moving)
    got = []
    for part in (samples[:3], samples[3:]):
        target = torch.from_numpy(np.stack([s[1] for s in part]))
        mask = dmask = None
        if mask_kind is not None:
            mask = torch.from_numpy(np.stack([s[2] for s in part]))
            if mask_distances:
                dmask = torch.from_numpy(np.stack([s[3] for s in part]))
        got.append(balanced(target, mask, dmask).numpy())
    got = np.concatenate(got)
    assert got.dtype == np.float32 and got.shape == expected.shape
    np.testing.assert_allclose(got, expected, rtol=2e-7, atol=0)
    assert (got > 1).any()  # a rare class somewhere
    assert (got == 0).any() == (mask_kind is not None)  # exactly the masked-out voxels
    if moving:
        for mine, theirs in zip(balanced.counts(), counts, strict=True):
            for c in (0, 1):
                assert mine[c] == pytest.approx(theirs[c], rel=1e-12)
    else:
        assert balanced.counts() == [{0: (0.0, 1.0), 1: (0.0, 1.0)}] * 4


@pytest.mark.parametrize("kind", ["bool", "float64", "distance mask alone"])
def test_balanced_weights_other_mask_dtypes_equal_the_kernels(kind):
    """bool masks, float64 masks (taken as float32, the dtype the weights
    are computed in) and a distance mask without a mask give the kernels'
    weights and counts for the same three samples in order."""
    rng = np.random.default_rng(11)
    predictor = HotDistancePredictor(["a", "b"], 24.0, True, clipmin=0.1, clipmax=0.9)
    samples = _samples(rng, 3, 2, (4, 5, 6), "uint8")
    target = torch.from_numpy(np.stack([s[1] for s in samples]))
    mask = np.stack([s[2] for s in samples])
    dmask = np.stack([s[3] for s in samples])
    if kind == "float64":  # values that float32 rounds
        mask = mask * rng.uniform(0.1, 1.0, mask.shape)
        dmask = dmask * rng.uniform(0.1, 1.0, dmask.shape)
        assert (mask.astype(np.float32) != mask).any()
    elif kind == "bool":
        mask, dmask = mask.astype(bool), dmask.astype(bool)
    balanced = BalancedWeights(predictor)
    got = balanced(
        target,
        None if kind == "distance mask alone" else torch.from_numpy(mask),
        torch.from_numpy(dmask),
    ).numpy()
    counts = None
    for i, sample in enumerate(samples):
        expected, counts = F.hot_distance_weights(
            sample[0],
            None if kind == "distance mask alone" else mask[i].astype(np.float32),
            dmask[i].astype(np.float32),
            counts,
            clipmin=0.1,
            clipmax=0.9,
        )
        np.testing.assert_allclose(got[i], expected, rtol=2e-7, atol=0)
    assert (got == 0).any() and (got > 1).any()
    for mine, theirs in zip(balanced.counts(), counts, strict=True):
        for c in (0, 1):
            assert mine[c] == pytest.approx(theirs[c], rel=1e-12)


def test_balanced_weights_hand_checked_and_state_dict():
    """One 2x2 sample of one class, all known: background 3 of 4 voxels,
    frac (3 / 5, 1 / 5) after den = 1 + 4, weights 1 / (2 frac)."""
    predictor = HotDistancePredictor(["a"], 10.0, False)
    balanced = BalancedWeights(predictor)
    target = torch.tensor([[[[0.0, 0.0], [0.0, 1.0]], [[0.0] * 2] * 2]])
    weights = balanced(target)
    w0, w1 = 1 / (2 * 3 / 5), 1 / (2 * 1 / 5)
    expected = torch.tensor([[[w0, w0], [w0, w1]]] * 2, dtype=torch.float32)[None]
    torch.testing.assert_close(weights, expected, rtol=0, atol=0)
    assert balanced.counts() == [{0: (3.0, 5.0), 1: (1.0, 5.0)}] * 2
    restored = BalancedWeights(predictor)
    restored.load_state_dict(balanced.state_dict())
    assert restored.counts() == balanced.counts()
    restored.load_counts([{0: [1, 2], 1: [0, 2]}] * 2)
    assert restored.counts() == [{0: (1.0, 2.0), 1: (0.0, 2.0)}] * 2
    with pytest.raises(ValueError, match="holds 1 channels, expected 2"):
        restored.load_counts([{0: (1, 2), 1: (0, 2)}])
    with pytest.raises(ValueError, match=r"mask must have shape \(1, 1, 2, 2\)"):
        balanced(target, torch.ones(1, 2, 2, 2))
    with pytest.raises(ValueError, match=r"target must have shape \(B, 2, \*spatial\)"):
        balanced(target[:, :1])


def _distributed_rank(rank, world, directory, batches):
    torch.distributed.init_process_group(
        "gloo", init_method=f"file://{directory}/store", rank=rank, world_size=world
    )
    try:
        predictor = HotDistancePredictor(["a", "b"], 24.0, True)
        balanced = BalancedWeights(predictor)
        results = []
        for target, mask, dmask in batches:
            part = slice(rank * 2, rank * 2 + 2)
            weights = balanced(target[part], mask[part], dmask[part])
            results.append((weights, balanced.num.clone(), balanced.den.clone()))
        torch.save(results, directory / f"rank{rank}.pt")
    finally:
        torch.distributed.destroy_process_group()


def test_balanced_weights_under_torch_distributed_equal_one_process(tmp_path):
    """Two gloo ranks with 2 samples each per step: each rank's weights are
    its half of one process's weights for the 4 samples, and after every
    step both ranks hold that process's counts."""
    rng = np.random.default_rng(7)
    batches = []
    for _ in range(2):
        samples = _samples(rng, 4, 2, (6, 7), "uint8")
        batches.append(
            tuple(torch.from_numpy(np.stack([s[i] for s in samples])) for i in (1, 2, 3))
        )
    context = torch.multiprocessing.get_context("fork")
    processes = [
        context.Process(target=_distributed_rank, args=(r, 2, tmp_path, batches)) for r in range(2)
    ]
    for p in processes:
        p.start()
    for p in processes:
        p.join(timeout=180)
    assert [p.exitcode for p in processes] == [0, 0]
    results = [torch.load(tmp_path / f"rank{r}.pt") for r in range(2)]
    single = BalancedWeights(HotDistancePredictor(["a", "b"], 24.0, True))
    for step, (target, mask, dmask) in enumerate(batches):
        expected = single(target, mask, dmask)
        for rank in (0, 1):
            weights, num, den = results[rank][step]
            torch.testing.assert_close(weights, expected[rank * 2 : rank * 2 + 2], rtol=0, atol=0)
            torch.testing.assert_close(num, single.num, rtol=0, atol=0)
            torch.testing.assert_close(den, single.den, rtol=0, atol=0)


# -- HotDistanceDataset ---------------------------------------------------------


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    demo = make_cellmap_demo(tmp_path_factory.mktemp("demo") / "demo_data.zarr", raw_shape=(96, 96))
    config = tiny_config(demo.data_section())
    return config, open_data(config)


def _dataset(demo, **kwargs):
    config, data = demo
    settings = {"seed": 5, "augment": True}
    settings.update(kwargs)
    predictor = settings.pop("predictor", make_predictor(config))
    return HotDistanceDataset(
        data.samples, predictor, data.voxel_size, (20, 20), (8, 8), **settings
    )


def _take(iterable, count):
    iterator = iter(iterable)
    return [next(iterator) for _ in range(count)]


def _same(a, b):
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_dataset_items_are_the_data_layer_s_arrays(demo):
    """Without augmentation an item is what the sample holds at its offset:
    raw (uint8 / 255) over the input, gt and mask over the output, and the
    target is ``process`` of the gt (no distance mask, so no context)."""
    config, data = demo
    predictor = HotDistancePredictor(["mito", "er"], 24.0, False)
    items = _take(_dataset(demo, augment=False, predictor=predictor), 4)
    seen = set()
    for item in items:
        assert item["raw"].shape == (1, 20, 20) and item["raw"].dtype == torch.float32
        assert item["target"].shape == (4, 8, 8) and item["gt"].dtype == torch.uint8
        sample = data.samples[int(item["sample"])]
        offset = gp.Coordinate(item["offset"].tolist())
        output = gp.Roi(offset, gp.Coordinate(8, 8) * data.voxel_size)
        raw = sample.read_raw_padded(output.grow(data.voxel_size * 6, data.voxel_size * 6)) / 255
        np.testing.assert_array_equal(item["raw"][0].numpy(), raw.astype(np.float32))
        gt, mask = sample.read_labels(output)
        np.testing.assert_array_equal(item["gt"].numpy(), gt)
        np.testing.assert_array_equal(item["mask"].numpy(), mask)
        np.testing.assert_array_equal(
            item["target"].numpy(), predictor.process(gt, tuple(data.voxel_size))
        )
        assert torch.equal(item["distance_mask"], torch.ones_like(item["mask"]))
        seen.add((int(item["sample"]), tuple(offset)))
    assert len(seen) == 4


def test_dataset_streams_repeat_per_seed_and_differ_per_rank_and_seed(demo):
    first = _take(_dataset(demo), 3)
    again = _take(_dataset(demo), 3)
    assert all(_same(a, b) for a, b in zip(first, again, strict=True))
    for other in (_dataset(demo, rank=1), _dataset(demo, seed=6)):
        items = _take(other, 3)
        assert not any(_same(a, b) for a in first for b in items)
    assert not _same(first[0], first[1])


def _loader(dataset, workers, context="fork", **kwargs):
    if workers:
        kwargs["multiprocessing_context"] = context
    return torch.utils.data.DataLoader(dataset, batch_size=2, num_workers=workers, **kwargs)


def test_dataloader_workers_are_deterministic_distinct_and_resumable(demo):
    """With 2 workers, batch j comes from worker j % 2: batch 0 is the
    first two items of worker 0's stream (the stream without workers),
    batch 1 differs; two loaders agree; a resumed dataset continues."""
    alone = _take(_dataset(demo), 2)
    batches = _take(_loader(_dataset(demo), 2, persistent_workers=True, pin_memory=True), 5)
    again = _take(_loader(_dataset(demo), 2), 5)
    for a, b in zip(batches, again, strict=True):
        assert _same(a, b)
    assert torch.equal(batches[0]["raw"], torch.stack([i["raw"] for i in alone]))
    assert batches[0]["sample"].shape == (2,) and batches[0]["offset"].shape == (2, 2)
    offsets = {tuple(o) for b in batches for o in b["offset"].tolist()}
    assert len(offsets) == 10  # no repeats across workers
    resumed = _dataset(demo)
    resumed.resume(3, 2)
    for a, b in zip(_take(_loader(resumed, 2), 2), batches[3:], strict=True):
        assert _same(a, b)
    alone_resumed = _dataset(demo)
    alone_resumed.resume(1, 2)
    assert _same(next(iter(_loader(alone_resumed, 0))), next(_skip(_loader(_dataset(demo), 0), 1)))


def _skip(iterable, count):
    iterator = iter(iterable)
    for _ in range(count):
        next(iterator)
    return iterator


@pytest.mark.slow
def test_a_spawned_persistent_worker_gives_the_stream_of_the_main_process(demo):
    alone = _take(_loader(_dataset(demo), 0), 2)
    spawned = _take(_loader(_dataset(demo), 1, "spawn", persistent_workers=True), 2)
    assert all(_same(a, b) for a, b in zip(alone, spawned, strict=True))


def test_dataset_errors_name_the_problem(demo):
    config, data = demo
    predictor = make_predictor(config)
    with pytest.raises(ValueError, match="no samples"):
        HotDistanceDataset([], predictor, data.voxel_size, (20, 20), (8, 8))
    with pytest.raises(ValueError, match=r"is at voxel size \(8, 8\), not \(4, 4\)"):
        HotDistanceDataset(data.samples, predictor, (4, 4), (20, 20), (8, 8))
    with pytest.raises(ValueError, match=r"output_shape \(24, 8\) is larger than input_shape"):
        HotDistanceDataset(data.samples, predictor, data.voxel_size, (20, 20), (24, 8))
    with pytest.raises(ValueError, match="input_shape must be 2 positive ints"):
        HotDistanceDataset(data.samples, predictor, data.voxel_size, (20, 0), (8, 8))
