"""Shared hooks and fixtures.

The notebook is a slow test too: nbmake collects it without a way to
decorate it, so it is marked here (``pytest -m "not slow"`` skips it).

The blockwise tests of test_blockwise_cluster.py and
test_blockwise_reliability.py share a tiny volume (``tiny_data``) and run
in their ``tmp_path`` with the repository importable by the workers they
start (``repo_importable_in_tmp``).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def pytest_configure(config: pytest.Config) -> None:
    """In a pytest-xdist worker (``-n N``), torch computes on one thread:
    N test processes share the cores, and N thread pools as large as the
    machine would oversubscribe them. The processes the tests start keep
    torch's default."""
    if os.environ.get("PYTEST_XDIST_WORKER"):
        import torch

        torch.set_num_threads(1)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if item.path.suffix == ".ipynb":
            item.add_marker(pytest.mark.slow)


@pytest.fixture
def repo_importable_in_tmp(tmp_path, monkeypatch):
    """Run in tmp_path (daisy's logs go there) with the repository
    importable by worker processes (they unpickle the jobs of
    tests/blockwise_jobs.py)."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("PYTHONPATH", str(ROOT))


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory):
    """raw, gt and mask of TINY_SHAPE voxels (tests.helpers), one per test module."""
    from tests.helpers import TINY_OFFSET, TINY_SHAPE, TINY_VOXEL_SIZE, write_volumes

    path = tmp_path_factory.mktemp("data") / "data.zarr"
    write_volumes(path, TINY_SHAPE, TINY_VOXEL_SIZE, TINY_OFFSET, seed=5)
    return path
