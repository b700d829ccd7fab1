"""Faults and bad inputs on the training side: nothing of the user's is
deleted, checkpoints are verified, values are checked where data enter,
and a stopped run leaves nothing behind."""

from __future__ import annotations

import errno
import json
import os
import subprocess
import sys
import textwrap
import zipfile
from pathlib import Path

import pytest
import torch

from pipelines import common
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
from pipelines.rundir import RunDirectory, RunDirectoryWriteError
from tests.helpers import tiny_config

ROOT = Path(__file__).parent.parent


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


# -- checkpoints: verified, our own loader only, writes that fail cleanly --------

COUNTS = {"moving_counts": [{"0": [3.0, 4.0], "1": [1.0, 4.0]}] * 4}


def model_and_optimizer(seed=0):
    """The tiny config's model and an Adam optimizer with state."""
    config = tiny_config({"voxel_size": [8, 8], "samples": [{"raw": "r", "labels": "l/[mito,er]"}]})
    torch.manual_seed(seed)
    model = common.make_model(config, common.make_predictor(config))
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    model(torch.rand(1, 1, 28, 28)).sum().backward()
    optimizer.step()
    return config, model, optimizer


def flip_a_tensor_byte(path: Path) -> None:
    """Flip one byte in the middle of the largest tensor stored in the
    checkpoint ``path`` (torch's zip entries are stored uncompressed)."""
    with zipfile.ZipFile(path) as archive:
        entry = max(
            (i for i in archive.infolist() if "/data/" in i.filename), key=lambda i: i.file_size
        )
        assert entry.compress_type == zipfile.ZIP_STORED
    content = bytearray(path.read_bytes())
    name_length = int.from_bytes(
        content[entry.header_offset + 26 : entry.header_offset + 28], "little"
    )
    extra_length = int.from_bytes(
        content[entry.header_offset + 28 : entry.header_offset + 30], "little"
    )
    start = entry.header_offset + 30 + name_length + extra_length
    content[start + entry.file_size // 2] ^= 0x40
    path.write_bytes(bytes(content))


def test_a_checkpoint_with_one_flipped_byte_is_skipped(tmp_path, caplog):
    config, model, optimizer = model_and_optimizer()
    with RunDirectory(tmp_path) as run:
        run.save(2, model.state_dict(), optimizer.state_dict(), COUNTS)
        newest = run.save(4, model.state_dict(), optimizer.state_dict(), COUNTS)
        flip_a_tensor_byte(newest)
        torch.load(newest, weights_only=True)  # torch alone does not notice
        checkpoint = run.newest_complete()
    assert checkpoint.iteration == 2
    assert [(p.name, reason) for p, reason in run.skipped] == [
        ("model_checkpoint_4", run.skipped[0][1])
    ]
    assert "do not match the checksum saved with them" in run.skipped[0][1]
    assert "skipping checkpoint model_checkpoint_4" in caplog.text
    with pytest.raises(ConfigError, match="model_checkpoint_4: its contents do not match"):
        common.load_model(config, newest)
    assert common.load_model(config, tmp_path / "model_checkpoint_2") is not None


def test_the_checksum_covers_every_tensor_and_value():
    _, model, optimizer = model_and_optimizer()
    state = {"model_state_dict": model.state_dict(), "moving_counts": COUNTS, "iteration": 3}
    checksum = common.state_checksum(state)
    assert checksum.startswith("sha256:") and len(checksum) == 7 + 64
    tensor = next(iter(state["model_state_dict"].values()))
    tensor.view(-1)[0] += 1e-6
    assert common.state_checksum(state) != checksum
    tensor.view(-1)[0] -= 1e-6
    for changed in ({**state, "iteration": 4}, {**state, "moving_counts": {"moving_counts": []}}):
        assert common.state_checksum(changed) != common.state_checksum(state)


def test_gunpowder_checkpoint_names_are_never_restored(tmp_path):
    """A planted ``.gunpowder_train_checkpoint_N`` (gunpowder's own resume
    name) is neither restored by the Train node nor by the run."""
    _, planted_model, planted_optimizer = model_and_optimizer(seed=7)
    planted = tmp_path / ".gunpowder_train_checkpoint_5"
    with planted.open("wb") as file:
        torch.save(
            {
                "model_state_dict": planted_model.state_dict(),
                "optimizer_state_dict": planted_optimizer.state_dict(),
            },
            file,
        )
    content = planted.read_bytes()
    demo = make_cellmap_demo(tmp_path / "demo_data.zarr", raw_shape=(96, 96))
    config = tiny_config(demo.data_section(), snapshot_every=100)
    summary = train_module.train(config, tmp_path, quiet=True)
    assert (summary["resumed_from"], summary["trained"], summary["iterations"]) == (0, 2, 2)
    saved = torch.load(tmp_path / "model_checkpoint_2", weights_only=True)["model_state_dict"]
    assert any(
        not torch.equal(saved[name], value) for name, value in planted_model.state_dict().items()
    )
    assert not (tmp_path / "model_checkpoint_7").exists()
    assert planted.read_bytes() == content


@pytest.mark.parametrize(
    ("code", "reason"),
    [
        (errno.ENOSPC, "No space left on device"),
        (errno.EFBIG, "File too large"),
        (errno.EROFS, "Read-only file system"),
        (errno.EACCES, "Permission denied"),
    ],
)
@pytest.mark.parametrize("where", ["open", "write"])
def test_a_checkpoint_that_cannot_be_written_loses_nothing(
    tmp_path, monkeypatch, code, reason, where
):
    _, model, optimizer = model_and_optimizer()
    with RunDirectory(tmp_path) as run:
        run.save(2, model.state_dict(), optimizer.state_dict(), COUNTS)
        before = tree(tmp_path)
        if where == "open":  # the directory became read-only, or no inode is left
            real_open = os.open

            def failing_open(path, flags, *args):
                if str(path).endswith(".tmp"):
                    raise OSError(code, os.strerror(code), str(path))
                return real_open(path, flags, *args)

            monkeypatch.setattr(os, "open", failing_open)
        else:  # the disk fills up half-way through

            def failing_save(payload, file):
                file.write(b"PK\x03\x04 partial")
                file.flush()
                raise OSError(code, os.strerror(code))

            monkeypatch.setattr(torch, "save", failing_save)
        with pytest.raises(RunDirectoryWriteError) as raised:
            run.save(4, model.state_dict(), optimizer.state_dict(), COUNTS)
        monkeypatch.undo()
        assert tree(tmp_path) == before
    assert str(raised.value) == (
        f"cannot write checkpoint {tmp_path}/model_checkpoint_4 ({reason}): nothing was lost, "
        f"the partial file was removed and the checkpoints already in {tmp_path} are "
        "unchanged (the newest is iteration 2); make room and rerun to resume from there"
    )


def test_a_read_only_out_is_one_line(tmp_path, monkeypatch, capsys):
    real_open = os.open

    def read_only(path, flags, *args):
        if flags & os.O_CREAT:
            raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(path))
        return real_open(path, flags, *args)

    out = tmp_path / "run"
    out.mkdir()
    monkeypatch.setattr(os, "open", read_only)
    assert train_module.main(["--out", str(out), "--iterations", "1"]) == 2
    monkeypatch.undo()
    assert capsys.readouterr().err == (
        f"error: cannot write in run directory {out} (Read-only file system): nothing was "
        "written; train into a directory you can write to\n"
    )
    assert list(out.iterdir()) == []


FILE_SIZE_LIMIT = textwrap.dedent(
    """
    import resource, sys
    resource.setrlimit(resource.RLIMIT_FSIZE, (8000, 8000))  # a checkpoint is ~25 kB
    from pipelines.train import main
    sys.exit(main(sys.argv[1:]))
    """
)


@pytest.mark.slow
def test_a_file_size_limit_during_a_checkpoint_is_one_line(tmp_path):
    demo = make_cellmap_demo(tmp_path / "demo_data.zarr", raw_shape=(96, 96))
    config = write_config(tiny_config(demo.data_section(), snapshot_every=100), tmp_path / "c.json")
    out = tmp_path / "run"
    assert train_module.main(["--config", str(config), "--out", str(out), "--quiet"]) == 0
    before = tree(out)
    result = subprocess.run(
        [sys.executable, "-c", FILE_SIZE_LIMIT, "--config", str(config), "--out", str(out)]
        + ["--iterations", "4", "--quiet"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=300,
    )
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    assert result.stderr.splitlines()[-1] == (
        f"error: cannot write checkpoint {out}/model_checkpoint_4 (File too large): nothing was "
        f"lost, the partial file was removed and the checkpoints already in {out} are unchanged "
        "(the newest is iteration 2); make room and rerun to resume from there"
    )
    after = tree(out)
    assert after.pop("config.json") and before.pop("config.json")  # rewritten, same meaning
    assert after == before  # model_checkpoint_2 and summary.json byte for byte, no .lock left
