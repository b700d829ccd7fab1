"""gp_hotdistance.segment: instances from predicted distances, by hand and against blocks."""

import itertools

import numpy as np
import pytest
from scipy.ndimage import gaussian_filter

from gp_hotdistance import segment as S


def _row(values):
    """A 1 x N 2-D distance map, mask ``d > 0``."""
    d = np.asarray([values], dtype=np.float32)
    return d, d > 0


def test_two_seeds_split_a_row_at_the_lower_neighbour():
    # seeds (d > 2) at 3 (x=2) and 2.5 (x=5); x=4 (1.5) climbs to its higher neighbour 2.5
    d, m = _row([1, 2, 3, 2, 1.5, 2.5, 1])
    labels = S.instances(d, m, (4, 4), seed_level=2)
    np.testing.assert_array_equal(labels, [[1, 1, 1, 1, 2, 2, 2]])
    assert labels.dtype == np.uint64


def test_a_top_below_the_seed_level_joins_across_its_highest_pass():
    # one seed (x=0); x=3 is a top of 1.5 < 2.5: its basin {3, 4} meets {0, 1, 2} at min(1, 1.5)
    d, m = _row([3, 2, 1, 1.5, 1.2, 0, 2])
    labels = S.instances(d, m, (1, 1), seed_level=2.5)
    # x=6 is alone (background between): an object without a seed keeps its own id
    np.testing.assert_array_equal(labels, [[1, 1, 1, 1, 1, 0, 2]])


def test_objects_below_the_minimum_world_size_are_removed():
    d = np.zeros((4, 9), np.float32)
    d[1, 0:3] = 1  # 3 voxels of 2 x 3 = 18 world area
    d[1:3, 5:8] = 1  # 6 voxels = 36
    labels = S.instances(d, d > 0, (2, 3), seed_level=0.5, min_size=20)
    expected = np.zeros((4, 9), np.uint64)
    expected[1:3, 5:8] = 1
    np.testing.assert_array_equal(labels, expected)
    assert S.instances(d, d > 0, (2, 3), seed_level=0.5, min_size=18).max() == 2


def test_two_touching_spheres_with_exact_distances_are_two_instances():
    voxel_size = np.array([8.0, 4.0, 4.0])
    shape = (26, 50, 80)
    centres = np.array([[104.0, 100.0, 100.0], [104.0, 100.0, 172.0]])  # 72 apart, radius 40
    points = (np.indices(shape).T + 0.5) * voxel_size  # (x, y, z, 3) world centres
    inside = [40.0 - np.linalg.norm(points - c, axis=-1).T for c in centres]
    distance = np.maximum(*inside).astype(np.float32)
    labels = S.instances(distance, distance > 0, voxel_size, seed_level=10.0)
    assert labels.max() == 2
    # every voxel nearer one centre (off the middle plane) belongs to that sphere's instance
    nearer = [(distance > 0) & (inside[i] > inside[1 - i]) for i in (0, 1)]
    assert np.unique(labels[nearer[0]]).tolist() == [1]
    assert np.unique(labels[nearer[1]]).tolist() == [2]
    assert (labels[distance <= 0] == 0).all()
    # the neck is 40 - 36 = 4 high: a seed level below it makes one object
    assert S.instances(distance, distance > 0, voxel_size, seed_level=3.0).max() == 1


def _blockwise(distance, mask, voxel_size, seed_level, min_size, block):
    """The volume in blocks through block_fragments + merge_fragments."""
    shape, halo = distance.shape, S.HALO
    padded_d, padded_m = np.pad(distance, halo), np.pad(mask, halo)
    fragments = np.zeros(shape, np.uint64)
    blocks = []
    starts = [range(0, s, b) for s, b in zip(shape, block, strict=True)]
    for index, origin in enumerate(itertools.product(*starts)):
        inner = tuple(slice(o, min(o + b, s)) for o, b, s in zip(origin, block, shape, strict=True))
        read = tuple(slice(s.start, s.stop + 2 * halo) for s in inner)
        found = S.block_fragments(
            padded_d[read], padded_m[read], seed_level, origin, shape, index * int(np.prod(block))
        )
        fragments[inner] = found.labels
        blocks.append(found)
    table = S.merge_fragments(
        blocks, lambda g: fragments.ravel()[g], float(np.prod(voxel_size)), min_size
    )
    return S.relabel(fragments, table)


@pytest.mark.parametrize("dims", [2, 3])
@pytest.mark.parametrize("quantised", [False, True])
def test_blocks_give_the_whole_volume_result(dims, quantised):
    rng = np.random.default_rng(dims)
    shape = (24, 30, 34)[-dims:]
    voxel_size = (8, 4, 4)[-dims:]
    distance = gaussian_filter(rng.normal(size=shape), 2)
    distance = distance / distance.std() * 20
    if quantised:  # plateaus and ties everywhere
        distance = np.round(distance / 10) * 10
    distance = distance.astype(np.float32)
    mask = (distance > 0) & (rng.random(shape) > 0.05)
    counts = []
    for seed_level in (5.0, 25.0):
        whole = S.instances(distance, mask, voxel_size, seed_level, min_size=200)
        counts.append(whole.max())
        for block in ((5, 7, 6)[-dims:], (16, 16, 16)[-dims:]):
            blocked = _blockwise(distance, mask, voxel_size, seed_level, 200, block)
            np.testing.assert_array_equal(blocked, whole)
    assert max(counts) > 2  # several objects, some cut by the blocks


def test_segment_prediction_gives_instances_and_masks():
    tanh = np.tanh(np.array([[-1.0, 2.0, 3.0, 0.5, -2.0, 1.0]]) / 2.0)
    hot = np.array([[-3.0, 1.0, 2.0, -0.1, -2.0, 0.4]])
    prediction = np.stack([hot, hot, tanh, tanh]).astype(np.float32)  # 2 classes, 1 x 6
    params = S.SegmentParameters(seed_level=1.5)  # seeds where d > 1.5: x = 1, 2
    out = S.segment_prediction(prediction, ["mito", "er"], 2.0, (4, 4), params)
    np.testing.assert_array_equal(out["mito"], [[0, 1, 1, 1, 0, 2]])
    assert out["mito"].dtype == np.uint64
    np.testing.assert_array_equal(out["er"], [[0, 1, 1, 1, 0, 1]])
    assert out["er"].dtype == np.uint8
    by_hot = S.segment_prediction(
        prediction, ["mito", "er"], 2.0, (4, 4), S.SegmentParameters(1.5, mask_threshold=0.65)
    )  # sigmoid(0.4) < 0.65 < sigmoid(1): x = 1, 2 only
    np.testing.assert_array_equal(by_hot["er"], [[0, 1, 1, 0, 0, 0]])
    np.testing.assert_array_equal(by_hot["mito"], [[0, 1, 1, 0, 0, 0]])
    with pytest.raises(ValueError, match="2 x 3 channels"):
        S.segment_prediction(prediction, ["a", "b", "c"], 2.0, (4, 4), params)


def test_predicted_distance_inverts_tanh_in_world_units():
    np.testing.assert_allclose(
        S.predicted_distance(np.tanh([0.5, -1.0]), 40.0), [20.0, -40.0], rtol=1e-5
    )
    assert np.isfinite(S.predicted_distance([1.0, -1.0], 40.0)).all()


@pytest.mark.parametrize(
    "kwargs",
    [
        {"seed_level": -1},
        {"seed_level": 1, "mask_threshold": 1.0},
        {"seed_level": 1, "min_size": np.nan},
    ],
)
def test_bad_parameters_are_refused(kwargs):
    with pytest.raises(ValueError):
        S.SegmentParameters(**kwargs)


def _reference(distance, mask, voxel_size, seed_level, min_size):
    """The module's definition voxel by voxel, with a plain union-find."""
    shape = distance.shape
    voxels = [v for v in np.ndindex(shape) if mask[v]]
    offsets = [o for o in itertools.product((-1, 0, 1), repeat=distance.ndim) if any(o)]

    def neighbours(v):
        for o in offsets:
            u = tuple(a + b for a, b in zip(v, o, strict=True))
            if all(0 <= c < s for c, s in zip(u, shape, strict=True)) and mask[u]:
                yield u

    parent = {v: v for v in voxels}

    def find(v):
        while parent[v] != v:
            v = parent[v]
        return v

    def union(a, b):
        parent[find(a)] = find(b)

    top = {}
    for v in voxels:
        higher = [u for u in neighbours(v) if distance[u] > distance[v]]
        best = max(higher, key=lambda u: distance[u], default=None)  # first of the highest
        top[v] = distance[v] > seed_level or best is None
        if not top[v]:
            union(v, best)
    for v in voxels:
        for u in neighbours(v):
            if top[v] and top[u]:
                union(v, u)
    basin = {v: find(v) for v in voxels}
    seeded = {basin[v] for v in voxels if distance[v] > seed_level}
    first = {}
    for v in voxels:  # C order: the first voxel of each basin
        first.setdefault(basin[v], v)
    passes = {}
    for v in voxels:
        for u in neighbours(v):
            if basin[u] != basin[v]:
                key = (basin[v], basin[u])
                passes[key] = max(passes.get(key, -np.inf), min(distance[u], distance[v]))
    joins = {}
    for (a, b), h in passes.items():
        if a not in seeded and (a not in joins or (h, [-c for c in first[b]]) > joins[a][0]):
            joins[a] = ((h, [-c for c in first[b]]), b)
    for a, (_, b) in joins.items():
        union(a, b)
    objects = {}
    for v in voxels:
        objects.setdefault(find(v), []).append(v)
    out = np.zeros(shape, np.uint64)
    kept = [o for o in objects.values() if len(o) * np.prod(voxel_size) >= min_size]
    for i, members in enumerate(sorted(kept, key=lambda m: m[0]), start=1):
        for v in members:
            out[v] = i
    return out


@pytest.mark.parametrize("dims", [2, 3])
def test_equals_a_voxel_by_voxel_reference(dims):
    rng = np.random.default_rng(10 + dims)
    shape = (7, 9, 10)[-dims:]
    distance = gaussian_filter(rng.normal(size=shape), 1.0)
    distance = np.round(distance / distance.std() * 4).astype(np.float32)  # ties and plateaus
    mask = (distance > -2) & (rng.random(shape) > 0.1)
    for seed_level, min_size in ((1.0, 0.0), (3.0, 12.0)):
        expected = _reference(distance, mask, (1, 2, 3)[-dims:], seed_level, min_size)
        found = S.instances(distance, mask, (1, 2, 3)[-dims:], seed_level, min_size)
        assert expected.max() > 1
        np.testing.assert_array_equal(found, expected)
