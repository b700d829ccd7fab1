"""Faults and bad inputs on the training side: nothing of the user's is
deleted, checkpoints are verified, values are checked where data enter,
and a stopped run leaves nothing behind."""

from __future__ import annotations

import errno
import json
import os
import re
import signal
import subprocess
import sys
import textwrap
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
import zarr
from funlib.geometry import Roi

from pipelines import common
from pipelines import demo_data as demo_module
from pipelines import preview as preview_module
from pipelines import train as train_module
from pipelines.batch_io import refuse_links
from pipelines.batches import generate_demo_data
from pipelines.checkpoints import state_checksum
from pipelines.config import ConfigError
from pipelines.demo_data import (
    CROPS_PATH,
    MARKER,
    DemoPathError,
    is_demo_container,
    make_cellmap_demo,
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


def test_demo_refuses_a_users_folder(users_container):
    before = tree(users_container.parent)
    with pytest.raises(DemoPathError, match=f"{users_container}.*a folder without the {MARKER}"):
        make_cellmap_demo(users_container)
    assert tree(users_container.parent) == before


def test_demo_cli_refuses_an_existing_out(users_container, capsys):
    before = tree(users_container.parent)
    assert demo_module.main(["--out", str(users_container)]) == 2
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


@pytest.mark.parametrize(
    "name", ["batch_0.png", "preview.zarr/notes.txt", "preview.zarr/batch_3/x"]
)
def test_preview_keeps_files_it_did_not_write(tmp_path, capsys, name):
    """Files in --out with the preview's names that no preview wrote (no
    record lists them) are refused, not replaced or removed."""
    out = tmp_path / "figures"
    (out / name).parent.mkdir(parents=True, exist_ok=True)
    (out / name).write_bytes(b"\x89PNG mine")
    config = write_config(demo_config(tmp_path / "demo_data.zarr"), tmp_path / "c.json")
    before = tree(out)
    assert preview_module.main(["--config", str(config), "--out", str(out)]) == 2
    first = name.split("/")[0] if "batch_3" not in name else "preview.zarr"
    assert capsys.readouterr().err == (
        f"error: {out / first} was not written by an earlier preview (it is not listed in "
        f"{out / preview_module.RECORD}): it is left as it is; choose another --out, or move "
        "it away\n"
    )
    assert tree(out) == before


@pytest.mark.parametrize("planted", ["preview.zarr", "preview.zarr/batch_0/raw"])
def test_a_preview_through_a_planted_link_is_refused(tmp_path, capsys, planted):
    """An earlier preview's record lists preview.zarr and its batch_0: a link
    planted there would have the next preview remove and write batches in
    the link's target. It is refused; the target is untouched."""
    target = tmp_path / "elsewhere"
    (target / "batch_0").mkdir(parents=True)
    (target / "batch_0" / "keep").write_bytes(b"precious")
    out = tmp_path / "figures"
    (out / planted).parent.mkdir(parents=True)
    (out / planted).symlink_to(target, target_is_directory=True)
    written = ["preview.zarr", "preview.zarr/batch_0", "batch_0.png"]
    (out / preview_module.RECORD).write_text(json.dumps({"written": written}))
    config = write_config(demo_config(tmp_path / "demo_data.zarr"), tmp_path / "c.json")
    assert preview_module.main(["--config", str(config), "--out", str(out)]) == 2
    assert capsys.readouterr().err.startswith(
        f"error: refusing to write {out / 'preview.zarr'}: {out / planted} is a symbolic link"
    )
    assert tree(target) == {"batch_0": None, "batch_0/keep": b"precious"}


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
    checksum = state_checksum(state)
    assert checksum.startswith("sha256:") and len(checksum) == 7 + 64
    tensor = next(iter(state["model_state_dict"].values()))
    tensor.view(-1)[0] += 1e-6
    assert state_checksum(state) != checksum
    tensor.view(-1)[0] -= 1e-6
    for changed in ({**state, "iteration": 4}, {**state, "moving_counts": {"moving_counts": []}}):
        assert state_checksum(changed) != state_checksum(state)


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


def test_a_lock_file_planted_as_a_link_is_not_followed(tmp_path):
    """``.lock`` is opened without following links: a link planted there
    cannot make the run write its holder record into another file."""
    target = tmp_path / "precious.txt"
    target.write_bytes(b"the user's notes")
    out = tmp_path / "run"
    out.mkdir()
    (out / ".lock").symlink_to(target)
    with pytest.raises(RunDirectoryWriteError, match=f"cannot write in run directory {out} "):
        RunDirectory(out).acquire()
    assert target.read_bytes() == b"the user's notes"


@pytest.mark.parametrize(
    "planted", ["snapshots", "snapshots/batch_1.zarr", "snapshots/batch_1.zarr/raw"]
)
def test_a_link_planted_among_the_snapshots_is_not_followed(tmp_path, capsys, planted):
    """zarr follows links: a link at ``snapshots/``, at a snapshot container
    or inside one would send the snapshots elsewhere. Training refuses it
    before its first step (before even generating the demo), and so does
    writing a snapshot; the link's target is untouched."""
    target = tmp_path / "elsewhere"
    target.mkdir()
    (target / "keep").write_bytes(b"precious")
    out = tmp_path / "run"
    link = out / planted
    link.parent.mkdir(parents=True)
    link.symlink_to(target, target_is_directory=True)
    small = {"num_fmaps": 2, "downsample_factors": [[2, 2]], "output_shape": [8, 8]}
    config = tmp_path / "demo.json"  # the demo's data, a tiny model, one iteration
    config.write_text(json.dumps({"model": small, "training": {"iterations": 1}}))
    assert train_module.main(["--config", str(config), "--out", str(out), "--quiet"]) == 2
    message = f"error: refusing to write {out / 'snapshots'}: {link} is a symbolic link"
    assert capsys.readouterr().err.startswith(message)
    assert not (out / "demo_data.zarr").exists() and not list(out.glob("model_checkpoint_*"))
    container = out / "snapshots" / "batch_1.zarr"
    with pytest.raises(ConfigError, match=f"refusing to write {container}: {link} is a symbolic"):
        train_module.write_snapshot(out, {}, None, None, None, 1)  # refused before reading
    assert tree(target) == {"keep": b"precious"}
    # the run directory itself may be a link: the user chose it
    (tmp_path / "runs").symlink_to(tmp_path / "elsewhere")
    assert refuse_links(tmp_path / "runs", "snapshots") == tmp_path / "runs" / "snapshots"


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
    settings = tiny_config(demo.data_section(), snapshot_every=100)
    config = write_config(settings, tmp_path / "c.json")
    out = tmp_path / "run"
    _, model, optimizer = model_and_optimizer()  # the tiny config's model
    with RunDirectory(out) as run:  # a run at iteration 2, as training leaves it
        run.write_config(settings)
        run.save(2, model.state_dict(), optimizer.state_dict(), COUNTS)
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
    assert after == before  # model_checkpoint_2 byte for byte, no .lock left


# -- values checked where data enter ---------------------------------------------


def write_sample(root: Path, raw=None, labels=None, mask=None):
    """A 2-D sample in ``root``: raw (32, 32) at 8 nm, per-class labels
    ``mito`` and ``er`` over its middle (16, 16) at 8 nm, optional mask there;
    returns the :class:`Sample` arguments as paths."""
    from gp_hotdistance.data import write_volume

    rng = np.random.default_rng(0)
    raw = rng.random((32, 32)).astype(np.float32) if raw is None else raw
    labels = (rng.random((16, 16)) > 0.5).astype(np.uint8) if labels is None else labels
    write_volume(root, "raw", raw, (8, 8), (0, 0))
    write_volume(root, "crop/mito", labels, (8, 8), (64, 64))
    write_volume(root, "crop/er", np.zeros((16, 16), np.uint8), (8, 8), (64, 64))
    if mask is not None:
        write_volume(root, "mask", mask, (8, 8), (64, 64))
    return {
        "raw": str(root / "raw"),
        "labels": {"mito": str(root / "crop/mito"), "er": str(root / "crop/er")},
        "mask": None if mask is None else str(root / "mask"),
    }


def open_sample(paths):
    from gp_hotdistance.data import Sample

    return Sample(paths["raw"], paths["labels"], ["mito", "er"], (8, 8), mask=paths["mask"])


CROP = Roi((64, 64), (128, 128))


def with_values(dtype, values, shape=(16, 16)):
    """An all-ones array of ``shape`` whose first voxels are ``values``."""
    data = np.ones(shape, dtype=dtype)
    data.flat[: len(values)] = values
    return data


@pytest.mark.parametrize(
    ("mask", "refused"),
    [
        (with_values(np.float32, [np.nan]), [np.nan]),
        (with_values(np.float32, [2.0, 2.0]), [2.0]),
        (with_values(np.float32, [-1.0]), [-1.0]),
        (with_values(np.float32, [0.5, 0.25, 0.0]), [0.25, 0.5]),  # no weights in sample masks
        (with_values(np.int16, [-1, 2]), [-1, 2]),
        (with_values(np.uint8, [255]), [255]),
        (with_values(np.float32, [0.0, 1.0]), None),
        (with_values(np.bool_, [False]), None),
    ],
)
def test_sample_mask_values(tmp_path, mask, refused):
    from gp_hotdistance.data import DataValueError

    sample = open_sample(write_sample(tmp_path, mask=mask))
    if refused is None:
        _, known = sample.read_labels(CROP)
        np.testing.assert_array_equal(known[0], mask.astype(np.uint8))
        return
    count = int(np.sum(~((mask == 0) | (mask == 1))))
    with pytest.raises(DataValueError) as raised:
        sample.read_labels(CROP)
    message = str(raised.value)
    assert message.startswith(f"{tmp_path}/mask/s0: {count} of 256 voxels read in ")
    assert "a sample mask holds 0 (unknown) and 1 (known) only" in message
    assert message.endswith(f"with values such as {refused}")


@pytest.mark.parametrize(
    ("labels", "refused"),
    [
        (with_values(np.float32, [np.nan, np.nan]), [np.nan]),
        (with_values(np.float32, [np.inf]), [np.inf]),
        (with_values(np.float32, [-1.0]), [-1.0]),
        (with_values(np.float64, [0.5]), [0.5]),
        (with_values(np.int8, [-3]), [-3]),
        (with_values(np.float32, [0.0, 2.0, 7.0]), None),  # whole numbers: ids
        (with_values(np.uint64, [2**63 + 5]), None),
    ],
)
def test_label_values(tmp_path, labels, refused):
    from gp_hotdistance.data import DataValueError

    sample = open_sample(write_sample(tmp_path, labels=labels))
    if refused is None:
        gt, _ = sample.read_labels(CROP)
        np.testing.assert_array_equal(gt[0], (labels != 0).astype(np.uint8))
        return
    count = int(np.sum(~(np.isfinite(labels) & (labels >= 0) & (labels == np.floor(labels)))))
    with pytest.raises(DataValueError) as raised:
        sample.read_labels(CROP)
    message = str(raised.value)
    assert message.startswith(f"{tmp_path}/crop/mito/s0: {count} of 256 voxels read in ")
    assert message.endswith(
        f"'labels are whole numbers >= 0{' (no NaN or inf)' * (labels.dtype.kind == 'f')}', with values such as {refused}"
    )


@pytest.mark.parametrize(
    ("values", "refused"),
    [([np.nan, np.nan, np.nan], [np.nan]), ([np.inf, -np.inf], [-np.inf, np.inf]), ([], None)],
)
def test_raw_values(tmp_path, values, refused):
    """Raw is checked where it is read (per batch), not by a scan at open."""
    from gp_hotdistance.data import DataValueError

    raw = with_values(np.float32, values, shape=(32, 32))
    sample = open_sample(write_sample(tmp_path, raw=raw))
    inside = Roi((0, 0), (64, 64))  # the bad values are in the first row
    if refused is None:
        np.testing.assert_array_equal(sample.read_raw(inside), raw[:8, :8])
        return
    np.testing.assert_array_equal(sample.read_raw(Roi((128, 0), (64, 64))), 1.0)  # elsewhere
    with pytest.raises(
        DataValueError,
        match=re.escape(
            f"{tmp_path}/raw/s0: {len(values)} of 64 voxels read in {inside} break the rule "
            f"'raw is finite (no NaN or inf)', with values such as {refused}"
        ),
    ):
        sample.read_raw(inside)


def _level(attrs):
    return attrs["multiscales"][0]["datasets"][0]


def _set(path, value):
    """An edit of parsed ``.zattrs``: set the value at key ``path``."""

    def edit(attrs):
        node = attrs
        for key in path[:-1]:
            node = node[key]
        node[path[-1]] = value

    return edit


SCALE = ("multiscales", 0, "datasets", 0, "coordinateTransformations", 0, "scale")
TRANSLATION = ("multiscales", 0, "datasets", 0, "coordinateTransformations", 1, "translation")


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (_set(SCALE, "48"), "g/s0: scale must be a non-empty list of numbers, got '48'"),
        (_set(SCALE, None), "g/s0: scale must be a non-empty list of numbers, got None"),
        (_set(SCALE, [float("inf"), 8]), "g/s0: scale must hold finite numbers, got [inf, 8]"),
        (_set(SCALE, [True, 8]), "g/s0: scale must hold finite numbers, got [True, 8]"),
        (_set(SCALE, [[8], 8]), "g/s0: scale must hold finite numbers, got [[8], 8]"),
        (
            _set(TRANSLATION, [0, 0, 0]),
            "g/s0: translation [0.0, 0.0, 0.0] has 3 entries, but the scale [8.0, 8.0] has 2",
        ),
        (
            _set(TRANSLATION, [float("nan"), 0]),
            "g/s0: translation must hold finite numbers, got [nan, 0]",
        ),
        (
            _set(SCALE[:-2], {"type": "scale"}),
            "g/s0: coordinateTransformations must be a list of objects",
        ),
        (_set(SCALE[:-3], None), "g: a multiscale dataset needs a 'path' inside the group"),
        (_set(("multiscales", 0, "datasets", 0, "path"), "../../x"), "needs a 'path' inside"),
        (_set(("multiscales", 0, "datasets"), None), "g: 'multiscales' lists no datasets"),
        (_set(("multiscales",), {"a": 1}), "g: 'multiscales' must be a non-empty list"),
        (_set(("multiscales", 0, "axes"), "yx"), "g: 'axes' must be a list of axis objects"),
        (
            _set(("multiscales", 0, "axes"), [{"name": "x", "type": "space"}]),
            "g/s0: axes [{'name': 'x', 'type': 'space'}] has 1 entries, but the scale",
        ),
    ],
)
def test_ome_metadata_is_validated(tmp_path, edit, message):
    from gp_hotdistance.data import open_volume, write_volume

    write_volume(tmp_path, "g", np.zeros((4, 4), np.uint8), (8, 8), (0, 0))
    zattrs = tmp_path / "g" / ".zattrs"
    attrs = json.loads(zattrs.read_text())
    edit(attrs)
    zattrs.write_text(json.dumps(attrs))  # inf and nan as JSON's Infinity and NaN
    with pytest.raises(ValueError) as raised:
        open_volume(tmp_path / "g", (8, 8))
    assert message in str(raised.value)
    assert str(raised.value).startswith(str(tmp_path / "g"))


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("voxel_size", "48", "voxel_size must be a non-empty list of numbers, got '48'"),
        ("resolution", [8, None], "resolution must hold finite numbers, got [8, None]"),
        ("offset", [float("-inf"), 0], "offset must hold finite numbers, got [-inf, 0]"),
        ("offset", [0, 0, 0], "offset [0.0, 0.0, 0.0] and voxel_size [8.0, 8.0] differ in length"),
    ],
)
def test_funlib_metadata_is_validated(tmp_path, key, value, message):
    from gp_hotdistance.data import open_volume

    array = zarr.open_array(str(tmp_path / "a.zarr"), mode="w", shape=(4, 4), dtype=np.uint8)
    array.attrs.update({"voxel_size": [8, 8], key: value})
    if key == "resolution":
        del array.attrs["voxel_size"]
    with pytest.raises(ValueError, match=re.escape(f"{tmp_path / 'a.zarr'}: {message}")):
        open_volume(tmp_path / "a.zarr", (8, 8))


@pytest.mark.parametrize("name", ["g/.zattrs", "g/.zgroup", "g/s0/.zarray", "g/s0/.zattrs"])
def test_bad_json_names_the_file(tmp_path, name):
    from gp_hotdistance.data import open_volume, write_volume

    write_volume(tmp_path, "g", np.zeros((4, 4), np.uint8), (8, 8), (0, 0))
    (tmp_path / name).write_text('{"multiscales": [')
    path = "g" if name.count("/") == 1 else "g/s0"
    with pytest.raises(ValueError, match=re.escape(f"{tmp_path / name} is not valid JSON: ")):
        open_volume(tmp_path / path, (8, 8))


@pytest.mark.parametrize("name", [".", "..", "a/b", "a\\b", ".zattrs", "-x", "mito mem", ""])
def test_channel_names_must_be_safe_as_paths(name):
    from gp_hotdistance import HotDistancePredictor

    with pytest.raises(ValueError, match="channel|channels must be non-empty"):
        HotDistancePredictor([name, "er"], 40.0, True)
    with pytest.raises(ConfigError, match="channel"):
        tiny_config({"voxel_size": [8, 8], "samples": [{"raw": "r", "labels": "l"}]}).replace(
            channels=[name, "er"]
        )
    assert HotDistancePredictor(["mito_mem", "er.2", "nuc+", "a-b"], 40.0, True).channels == [
        "mito_mem",
        "er.2",
        "nuc+",
        "a-b",
    ]


@pytest.mark.parametrize(
    ("command", "workers", "augment"),
    [("train", 0, False), ("train", 1, True), ("preview", 0, True)],
)
def test_nan_raw_stops_with_one_line(tmp_path, capsys, command, workers, augment):
    """NaN raw stops the run at the first batch that reads it, with the
    dataset named, however the data pipeline ran (in this process or in a
    data worker, with or without augmentation)."""
    raw = np.full((32, 32), 0.5, dtype=np.float32)
    raw[8:24, 8:24] = np.nan  # everywhere a batch around the crop reads
    paths = write_sample(tmp_path / "d.zarr", raw=raw)
    labels = f"{tmp_path}/d.zarr/crop/[mito,er]"
    config = tiny_config(
        {"voxel_size": [8, 8], "samples": [{"raw": paths["raw"], "labels": labels}]},
        num_workers=workers,
        augment=augment,
    )
    path = write_config(config, tmp_path / "c.json")
    out = tmp_path / "run"
    module = train_module if command == "train" else preview_module
    assert module.main(["--config", str(path), "--out", str(out)]) == 2
    error = capsys.readouterr().err.splitlines()[-1]
    assert re.fullmatch(
        rf"error: {tmp_path}/d.zarr/raw/s0: \d+ of \d+ voxels read in .* break the rule 'raw is "
        r"finite \(no NaN or inf\)', with values such as \[nan\]",
        error,
    )
    assert not list(out.glob("model_checkpoint_*"))


# -- clean stops -------------------------------------------------------------------


def descendants(pid: int) -> list[int]:
    """Every live descendant of ``pid`` (from ``/proc/*/stat``)."""
    parents = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except (FileNotFoundError, ProcessLookupError, IndexError):
                continue
            parents[int(entry.name)] = int(fields[1])
    found, frontier = [], [pid]
    while frontier:
        children = [p for p, parent in parents.items() if parent in frontier]
        found += children
        frontier = children
    return found


def alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie does not)."""
    try:
        return (Path("/proc") / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (FileNotFoundError, ProcessLookupError):
        return False


def wait_for(condition, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.1)
    return condition()


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads /proc")
@pytest.mark.parametrize(
    "signum", [signal.SIGINT, signal.SIGTERM, signal.SIGKILL], ids=lambda s: s.name
)
def test_a_stopped_trainer_saves_and_leaves_no_worker(tmp_path, signum):
    """SIGINT and SIGTERM to the whole process group (as Ctrl-C, `timeout`
    and batch systems send them): a checkpoint of the iteration reached, two
    lines saying where and how to resume, the lock released, the data
    workers gone. SIGKILL of the trainer: the workers die within seconds,
    and the lock is free at once."""
    demo = make_cellmap_demo(tmp_path / "demo_data.zarr", raw_shape=(96, 96))
    config = tiny_config(
        demo.data_section(), num_workers=1, iterations=10**6, save_every=10**6, snapshot_every=1
    )
    path, out = write_config(config, tmp_path / "c.json"), tmp_path / "run"
    with (tmp_path / "stderr").open("w") as stderr:
        trainer = subprocess.Popen(
            [sys.executable, "-m", "pipelines.train", "--config", str(path), "--out", str(out)]
            + ["--quiet"],
            stderr=stderr,
            cwd=ROOT,
            start_new_session=True,
        )
    try:
        started = wait_for(lambda: (out / "snapshots" / "batch_1.zarr").exists(), 300)
        assert started, (tmp_path / "stderr").read_text()
        workers = descendants(trainer.pid)
        assert workers  # the DataLoader's worker
        # Ctrl-C, a batch system or `timeout` signal the whole process group
        os.killpg(trainer.pid, signum) if signum != signal.SIGKILL else trainer.kill()
        code = trainer.wait(timeout=180)
    finally:
        if trainer.poll() is None:
            trainer.kill()
    assert wait_for(lambda: not any(alive(w) for w in workers), 30), "a worker outlived its run"
    with RunDirectory(out) as run:  # the lock is free
        checkpoint = run.newest_complete()
    if signum == signal.SIGKILL:
        assert code == -signal.SIGKILL
        return
    lines = (tmp_path / "stderr").read_text().splitlines()
    name = signal.Signals(signum).name
    assert code == 128 + signum and "Traceback" not in "\n".join(lines)
    assert lines[-2] == (
        f"stopped by {name} at iteration {checkpoint.iteration}: saved {checkpoint.path}"
    )
    assert lines[-1] == (
        f"to resume, run the same command again (it resumes from the newest checkpoint in {out})"
    )
    assert checkpoint.iteration >= 1
