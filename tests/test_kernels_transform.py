"""The exact signed distance and the hot-distance target
(:mod:`gp_hotdistance.kernels.transform`): hand-checked rows, the face
distance definition by brute force, analytic shapes, the windowed minimum
against the envelope alone, and parity with the slow doubled-grid reference."""

from __future__ import annotations

import itertools
import math
import zlib

import numpy as np
import pytest

import gp_hotdistance.kernels as F
from gp_hotdistance.kernels import transform
from tests import reference as R
from tests.helpers import smooth_blobs


def brute_force_signed_distance(channel: np.ndarray, voxel_size) -> np.ndarray:
    """The definition: min over every face centre between differing
    neighbours of the world distance to each voxel centre, O(N * F)."""
    channel = np.asarray(channel) != 0
    vs = np.asarray(voxel_size, dtype=np.float64)
    # doubled integer coordinates: voxel i at 2i, the face between i, i+1 at 2i+1
    centres = 2 * np.indices(channel.shape).reshape(channel.ndim, -1).T
    faces = []
    for axis in range(channel.ndim):
        lo = [slice(None)] * channel.ndim
        hi = [slice(None)] * channel.ndim
        lo[axis] = slice(0, -1)
        hi[axis] = slice(1, None)
        where = np.argwhere(channel[tuple(lo)] != channel[tuple(hi)]) * 2
        where[:, axis] += 1
        faces.append(where)
    faces = np.concatenate(faces)
    if len(faces) == 0:
        extent = min(s * v / 2 for s, v in zip(channel.shape, vs, strict=True))
        return np.full(channel.shape, extent if channel.all() else -extent, dtype=np.float32)
    delta = (centres[:, None, :] - faces[None, :, :]) * (vs / 2)
    squared = (delta * delta).sum(axis=-1).min(axis=1)
    distance = np.sqrt(squared).astype(np.float32).reshape(channel.shape)
    distance[~channel] *= -1
    return distance


def test_row_distances_exact():
    # one face between x=1 and x=2; voxel 4 wide: centres at 2, 6, ... from it
    channel = np.array([[0, 0, 1, 1, 1]])
    expected = np.array([[-6, -2, 2, 6, 10]], dtype=np.float32)
    np.testing.assert_array_equal(F.signed_distance(channel, (1, 4)), expected)
    np.testing.assert_array_equal(R.reference_signed_distance(channel, (1, 4)), expected)


def test_single_voxel_anisotropic_2d():
    # a lone foreground voxel at (1, 1), voxel (2, 1): faces of that voxel at
    # (0.5, 1), (1.5, 1) (normal to y, 1 away in world) and (1, 0.5), (1, 1.5)
    # (normal to x, 0.5 away)
    channel = np.zeros((3, 3), dtype=np.uint8)
    channel[1, 1] = 1
    expected = np.array(
        [
            [-math.sqrt(2), -1, -math.sqrt(2)],  # corner: to (0.5, 1) is (1, 1) world
            [-0.5, 0.5, -0.5],  # x-neighbours touch an x-face; centre: nearest x-face
            [-math.sqrt(2), -1, -math.sqrt(2)],
        ],
        dtype=np.float32,
    )
    np.testing.assert_array_equal(F.signed_distance(channel, (2, 1)), expected)


def test_diagonal_corner_2d():
    # foreground quadrant y>=1, x>=1 of 3x3, voxel (1, 1): voxel (0, 0) is
    # sqrt(0.5^2 + 1^2) from the faces (0.5, 1) and (1, 0.5)
    channel = np.zeros((3, 3), dtype=np.uint8)
    channel[1:, 1:] = 1
    d = F.signed_distance(channel, (1, 1))
    assert d[0, 0] == np.float32(-math.sqrt(1.25))
    assert d[1, 1] == np.float32(0.5)  # touches two faces
    assert d[2, 2] == np.float32(1.5)  # 1.5 from the faces (2, 0.5) and (0.5, 2)
    assert d[0, 2] == np.float32(-0.5)


@pytest.mark.parametrize(
    "shape, voxel_size, extent",
    [
        ((3, 5), (4, 4), 6.0),  # min(3*4/2, 5*4/2)
        ((3, 5), (10, 1), 2.5),  # min(15, 2.5): anisotropy picks x
        ((4, 4, 4), (40, 4, 4), 8.0),
        ((1, 5), (1, 4), 0.5),  # a length-1 axis gives the smallest extent
    ],
)
@pytest.mark.parametrize("value, sign", [(1, 1.0), (0, -1.0)])
def test_no_boundary_rule(shape, voxel_size, extent, value, sign):
    channel = np.full(shape, value, dtype=np.uint8)
    expected = np.full(shape, sign * extent, dtype=np.float32)
    np.testing.assert_array_equal(F.signed_distance(channel, voxel_size), expected)
    np.testing.assert_array_equal(R.reference_signed_distance(channel, voxel_size), expected)


def test_target_layout_and_tanh():
    gt = np.array([[[0, 0, 1, 1, 1]], [[1, 1, 1, 1, 1]]], dtype=np.uint8)
    target = F.hot_distance_target(gt, (1, 4), 10.0)
    assert target.dtype == np.float32
    assert target.shape == (4, 1, 5)
    np.testing.assert_array_equal(target[:2], gt)
    d = np.array([-6, -2, 2, 6, 10], dtype=np.float32)
    np.testing.assert_array_equal(target[2, 0], np.tanh(d / 10.0))
    # all foreground: +min(1*1/2, 5*4/2) = 0.5
    np.testing.assert_array_equal(target[3], np.tanh(np.float32(0.5) / 10.0))


@pytest.mark.parametrize(
    "shape, voxel_size",
    [
        ((9, 11), (1, 1)),
        ((8, 12), (4, 8)),
        ((7, 9), (1.5, 2.5)),
        ((6, 7, 8), (1, 1, 1)),
        ((6, 7, 8), (40, 4, 4)),
        ((1, 9, 9), (8, 8, 8)),  # length-1 axis
        ((9, 1, 9), (40, 4, 4)),
        ((2, 2, 2), (8, 8, 8)),  # length-2 axes
        ((2, 5), (3, 1)),
        ((1, 7), (1, 4)),
        ((7, 1), (1, 4)),
    ],
)
def test_signed_distance_equals_brute_force(shape, voxel_size):
    rng = np.random.default_rng(zlib.crc32(repr((shape, voxel_size)).encode()))
    for fraction in (0.05, 0.3, 0.5, 0.9):
        channel = (rng.random(shape) < fraction).astype(np.uint8)
        expected = brute_force_signed_distance(channel, voxel_size)
        got = F.signed_distance(channel, voxel_size)
        assert got.dtype == np.float32
        np.testing.assert_array_equal(got, expected, err_msg=f"{shape} {voxel_size}")


@pytest.mark.parametrize("voxel_size", [(1, 1, 1), (2, 1, 1), (1, 3, 2)])
def test_sphere(voxel_size):
    vs = np.asarray(voxel_size, dtype=np.float64)
    radius = 6.3  # world units; the crop holds the whole sphere plus a margin
    shape = tuple(int(2 * radius / v) + 5 for v in vs)
    centre = (np.asarray(shape) - 1) / 2 * vs + 0.3 * vs
    pos = np.moveaxis(np.indices(shape), 0, -1) * vs
    r = np.linalg.norm(pos - centre, axis=-1)
    channel = (r <= radius).astype(np.uint8)
    d = F.signed_distance(channel, voxel_size)
    # exact: the definition over all face centres
    np.testing.assert_array_equal(d, brute_force_signed_distance(channel, voxel_size))
    # approximate: the voxelised surface is within a voxel diagonal of the sphere
    assert np.all(np.abs(d - (radius - r)) <= np.linalg.norm(vs))
    assert np.all((d > 0) == (channel == 1))


@pytest.mark.parametrize(
    "shape, voxel_size, axis, i0",
    [
        ((10, 12), (4, 8), 0, 3),
        ((10, 12), (4, 8), 1, 11),  # face next to the far edge
        ((6, 8, 9), (40, 4, 4), 0, 1),
        ((6, 8, 9), (40, 4, 4), 2, 5),
    ],
)
def test_half_space(shape, voxel_size, axis, i0):
    index = np.indices(shape)[axis]
    channel = (index >= i0).astype(np.uint8)
    expected = ((index - i0 + 0.5) * voxel_size[axis]).astype(np.float32)
    np.testing.assert_array_equal(F.signed_distance(channel, voxel_size), expected)


def test_tiny_shapes_match_reference():
    # every 3-D shape with axes of length 1, 2 or 3, several random fills each
    rng = np.random.default_rng(7)
    for shape in itertools.product((1, 2, 3), repeat=3):
        gt = (rng.random((4,) + shape) < 0.5).astype(np.uint8)
        np.testing.assert_array_equal(
            F.hot_distance_target(gt, (40, 4, 4), 50.0),
            R.reference_target(gt, (40, 4, 4), 50.0),
            err_msg=f"{shape}",
        )


def window_cases():
    """Channels where the windowed minimum settles every lane, some lanes, or
    none: blobs, one voxel in a corner, an object in one corner of a large
    empty region, stripes, no face at all, lines of 1 and 2 voxels."""
    rng = np.random.default_rng(11)
    corner = np.zeros((70, 90), dtype=np.uint8)
    corner[:6, :9] = 1
    dot = np.zeros((9, 70, 66), dtype=np.uint8)
    dot[0, 0, 0] = 1
    stripes = np.zeros((40, 130), dtype=np.uint8)
    stripes[:, ::9] = 1  # lanes far from any face only across axis 0
    stripes[17:19] = 1
    return [
        ("blobs 2-D", smooth_blobs(rng, (75, 140), 2.0, 0.3), (4, 4)),
        ("blobs 3-D anisotropic", smooth_blobs(rng, (11, 50, 70), 1.5, 0.2), (40, 4, 8)),
        ("corner 2-D", corner, (3, 5)),
        ("one voxel 3-D", dot, (8, 8, 8)),
        ("stripes", stripes, (6, 2)),
        ("no face", np.ones((6, 70), dtype=np.uint8), (4, 4)),
        ("thin", smooth_blobs(rng, (2, 1, 80), 1.0, 0.5), (8, 8, 8)),
        ("single slice", smooth_blobs(rng, (1, 30, 70), 1.0, 0.5), (8, 4, 4)),
    ]


@pytest.mark.parametrize("name, channel, voxel_size", window_cases(), ids=lambda c: str(c))
def test_windowed_minimum_equals_envelope(monkeypatch, name, channel, voxel_size):
    """Every window radius gives the envelope's result (radius 0: every lane
    through the envelope) bit for bit, and the doubled-grid reference's."""
    monkeypatch.setattr(transform, "WINDOW_RADIUS", 0)
    envelope = F.signed_distance(channel, voxel_size)
    np.testing.assert_array_equal(envelope, R.reference_signed_distance(channel, voxel_size))
    for radius in (1, 2, 5, 200):
        monkeypatch.setattr(transform, "WINDOW_RADIUS", radius)
        np.testing.assert_array_equal(
            F.signed_distance(channel, voxel_size), envelope, err_msg=f"{name}, radius {radius}"
        )
