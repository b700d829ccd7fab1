"""Faults and bad inputs on the training side: nothing of the user's is
deleted, checkpoints are verified, values are checked where data enter,
and a stopped run leaves nothing behind."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from pipelines import demo_data as demo_module
from pipelines import preview as preview_module
from pipelines import train as train_module
from pipelines.batches import generate_demo_data
from pipelines.config import ConfigError
from pipelines.demo_data import (
    CROPS_PATH,
    MARKER,
    DemoPathError,
    is_demo_container,
    make_cellmap_demo,
    make_demo_data,
)
from tests.helpers import tiny_config


def tree(root: Path) -> dict[str, bytes | None]:
    """Every entry under ``root`` (relative name -> bytes, ``None`` for a
    folder, the target for a link): what must survive byte for byte."""
    entries: dict[str, bytes | None] = {}
    for path in sorted(root.rglob("*")):
        name = str(path.relative_to(root))
        if path.is_symlink():
            entries[name] = os.readlink(path).encode()
        elif path.is_file():
            entries[name] = path.read_bytes()
        else:
            entries[name] = None
    return entries


# -- the demo never replaces what it did not create ----------------------------


@pytest.fixture
def users_container(tmp_path) -> Path:
    """A user's own folder named ``demo_data.zarr``, holding one file."""
    container = tmp_path / "mine" / "demo_data.zarr"
    container.mkdir(parents=True)
    (container / "annotations.csv").write_bytes(b"id,class\n1,mito\n\x00\xff")
    return container


def demo_config(container: Path, **training):
    """A tiny config whose samples name the demo layout in ``container``."""
    crops = f"{container}/{CROPS_PATH}"
    raw = f"{container}/recon-1/em/fibsem-uint8"
    return tiny_config(
        {
            "voxel_size": [8, 8],
            "samples": [{"raw": raw, "labels": f"{crops}/crop1/[mito,er]"}],
            "eval": {"raw": raw, "labels": f"{crops}/crop3/[mito,er]"},
        },
        **training,
    )


def write_config(config, path: Path) -> Path:
    path.write_text(json.dumps(config.to_dict()))
    return path


@pytest.mark.parametrize("writer", [make_cellmap_demo, make_demo_data])
def test_demo_refuses_a_users_folder(users_container, writer):
    before = tree(users_container.parent)
    with pytest.raises(DemoPathError, match=f"{users_container}.*a folder without the {MARKER}"):
        writer(users_container)
    assert tree(users_container.parent) == before


@pytest.mark.parametrize("single", [[], ["--single"]])
def test_demo_cli_refuses_an_existing_out(users_container, capsys, single):
    before = tree(users_container.parent)
    assert demo_module.main(["--out", str(users_container), *single]) == 2
    error = capsys.readouterr().err
    assert error.startswith(f"error: {users_container} already exists (a folder without the ")
    assert error.count("\n") == 1
    assert tree(users_container.parent) == before


@pytest.mark.parametrize("kind", ["link", "file", "marker link"])
def test_demo_refuses_planted_names(tmp_path, kind):
    """A link at the container's path (or at its marker's) is never written
    through; a file there is not replaced."""
    target = tmp_path / "elsewhere"
    target.mkdir()
    (target / "keep").write_bytes(b"precious")
    path = tmp_path / "demo_data.zarr"
    if kind == "link":
        path.symlink_to(target)
    elif kind == "file":
        path.write_bytes(b"not a container")
    else:
        path.mkdir()
        (path / MARKER).symlink_to(target / "keep")
    before = tree(tmp_path)
    with pytest.raises(DemoPathError, match=f"a {kind.split()[-1]}|a folder"):
        make_cellmap_demo(path, raw_shape=(48, 48))
    assert tree(tmp_path) == before
    assert not is_demo_container(path)


def test_demo_rewrites_only_its_own_container(tmp_path, capsys):
    """A container the demo created (it holds the marker) may be written
    again; the second run replaces the demo's datasets."""
    out = tmp_path / "d.zarr"
    assert demo_module.main(["--out", str(out), "--shape", "48", "48"]) == 0
    assert is_demo_container(out)
    marker = (out / MARKER).read_bytes()
    assert demo_module.main(["--out", str(out), "--shape", "64", "64", "--seed", "1"]) == 0
    assert "shape (64, 64)" in capsys.readouterr().out
    assert (out / MARKER).read_bytes() == marker
    assert json.loads((out / "recon-1/em/fibsem-uint8/s0/.zarray").read_text())["shape"] == [64, 64]


def test_generate_demo_data_refuses_an_incomplete_users_container(users_container):
    before = tree(users_container.parent)
    with pytest.raises(ConfigError, match=f"{users_container} is named by .*no {MARKER}"):
        generate_demo_data(demo_config(users_container))
    assert tree(users_container.parent) == before


def test_generate_demo_data_creates_and_completes_its_own(tmp_path):
    container = tmp_path / "new" / "demo_data.zarr"
    config = demo_config(container)
    assert generate_demo_data(config) == [container]
    assert is_demo_container(container)
    assert generate_demo_data(config) == []  # complete: nothing to do
    last = container / CROPS_PATH / "crop3" / "er"
    for path in sorted(last.rglob("*"), reverse=True):
        path.unlink() if path.is_file() else path.rmdir()
    last.rmdir()
    assert generate_demo_data(config) == [container]  # incomplete and the demo's own
    assert (last / "s0" / ".zarray").is_file()


def test_generate_demo_data_reads_a_complete_users_container(tmp_path):
    """A complete container without the marker (an older run's demo, or the
    user's data in that layout) is read as it is: nothing is written."""
    container = tmp_path / "demo_data.zarr"
    make_cellmap_demo(container, raw_shape=(48, 48))
    (container / MARKER).unlink()
    before = tree(container)
    assert generate_demo_data(demo_config(container)) == []
    assert tree(container) == before


@pytest.mark.parametrize("command", ["train", "preview"])
def test_train_and_preview_keep_a_users_container(users_container, tmp_path, capsys, command):
    config = write_config(demo_config(users_container), tmp_path / "config.json")
    before = tree(users_container.parent)
    module = train_module if command == "train" else preview_module
    assert module.main(["--config", str(config), "--out", str(tmp_path / "run")]) == 2
    error = capsys.readouterr().err
    assert f"error: {users_container} is named by the config's data paths" in error
    assert "it is left as it is" in error
    assert tree(users_container.parent) == before
