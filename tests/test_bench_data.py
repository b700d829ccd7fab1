"""benchmarks/bench_data.py never deletes or overwrites what it finds."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

ROOT = Path(__file__).parent.parent


def bench():
    spec = importlib.util.spec_from_file_location("bench_data", ROOT / "benchmarks/bench_data.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_existing_data_and_collection_folders_are_left_alone(tmp_path):
    module = bench()
    data = tmp_path / "mine.zarr"
    data.mkdir()
    (data / "precious.txt").write_text("keep")
    with pytest.raises(SystemExit, match="is not a complete demo; it is left as it is"):
        module.demo_config(data, (32, 32, 32), augment=True)
    folder = tmp_path / "collection"
    folder.mkdir()
    (folder / "notes.txt").write_text("keep")
    with pytest.raises(SystemExit, match="exists without config_6.yaml, config_200.yaml"):
        module.collection_configs(folder)
    assert (data / "precious.txt").read_text() == "keep"
    assert (folder / "notes.txt").read_text() == "keep"
    assert sorted(p.name for p in tmp_path.rglob("*")) == [
        "collection",
        "mine.zarr",
        "notes.txt",
        "precious.txt",
    ]
