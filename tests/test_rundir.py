"""The run directory: lock, config check, atomic checkpoints, summary."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch

from pipelines import common
from pipelines.config import ConfigError, from_dict
from pipelines.rundir import (
    CONFIG_NAME,
    SUMMARY_NAME,
    RunDirectory,
    RunDirectoryError,
    config_differences,
)
from tests.helpers import tiny_config


def small_config(**changes):
    values = {
        "channels": ["mito", "er"],
        "scale_factor": 24.0,
        "model": {"num_fmaps": 2, "downsample_factors": [[2, 2]], "output_shape": [8, 8]},
        "training": {"iterations": 4, "num_workers": 0},
    }
    for key, value in changes.items():
        section, _, name = key.rpartition(".")
        (values.setdefault(section, {}) if section else values)[name] = value
    return from_dict(values)


def model_and_optimizer(config, seed=0):
    torch.manual_seed(seed)
    model = common.make_model(config, common.make_predictor(config))
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    # one step so that the optimizer has state to save
    model(torch.rand(1, 1, 28, 28)).sum().backward()
    optimizer.step()
    return model, optimizer


COUNTS = {"moving_counts": [{"0": [3.0, 4.0], "1": [1.0, 4.0]}] * 4}


# -- the lock ------------------------------------------------------------------

HOLDER = textwrap.dedent(
    """
    import sys
    from pipelines.rundir import RunDirectory
    with RunDirectory(sys.argv[1]):
        print("locked", flush=True)
        sys.stdin.readline()
    """
)


def run_script(script, path):
    """``python -c script path`` from the repository root, stdin and stdout piped."""
    return subprocess.Popen(
        [sys.executable, "-c", script, str(path)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        cwd=Path(__file__).parent.parent,
    )


def start_holder(path):
    process = run_script(HOLDER, path)
    assert process.stdout.readline() == "locked\n"
    return process


def test_a_second_process_is_refused_and_told_who_holds_the_lock(tmp_path):
    run = tmp_path / "run"
    holder = start_holder(run)
    try:
        expected = rf"run directory .*run is in use by pid {holder.pid} on host "
        expected += rf"{socket.gethostname()} since \d{{4}}-"
        with pytest.raises(RunDirectoryError, match=expected):
            RunDirectory(run).acquire()
    finally:
        holder.communicate("\n")
    assert holder.returncode == 0
    assert not (run / ".lock").exists()  # a clean exit removes the lock file
    with RunDirectory(run) as directory:
        assert json.loads((run / ".lock").read_text())["pid"] == os.getpid()
        assert directory.path == run


def test_a_stale_lock_after_a_kill_is_taken_over(tmp_path, caplog):
    run = tmp_path / "run"
    holder = start_holder(run)
    os.kill(holder.pid, signal.SIGKILL)
    holder.wait()
    assert json.loads((run / ".lock").read_text())["pid"] == holder.pid  # left behind
    with caplog.at_level(logging.WARNING), RunDirectory(run):
        assert json.loads((run / ".lock").read_text())["pid"] == os.getpid()
    assert f"taking over the lock left by pid {holder.pid} on host" in caplog.text


FORKING_HOLDER = textwrap.dedent(
    """
    import os, sys, time
    from pipelines.rundir import RunDirectory
    with RunDirectory(sys.argv[1]):
        started, ready = os.pipe()
        child = os.fork()  # as a PreCache worker does; it shares the lock
        if child == 0:  # past the fork hooks: says so by closing its end of the pipe
            os.close(ready)
            time.sleep(600)
            os._exit(0)
        os.close(ready)
        os.read(started, 1)  # end of file: the child runs (a worker, not one being forked)
        print(child, flush=True)
        sys.stdin.readline()
    """
)


def test_a_forked_child_of_a_killed_run_neither_keeps_the_lock_nor_outlives_it(tmp_path, caplog):
    """A process forked while the lock is held (as a PreCache or DataLoader
    worker is) closes its copy of the lock, and on Linux dies with its
    parent: after a kill -9 of the holder the lock is free at once."""
    run = tmp_path / "run"
    holder = run_script(FORKING_HOLDER, run)
    child = int(holder.stdout.readline())
    try:
        os.kill(holder.pid, signal.SIGKILL)
        holder.wait()
        with caplog.at_level(logging.WARNING), RunDirectory(run):
            pass
        assert f"taking over the lock left by pid {holder.pid}" in caplog.text
        if sys.platform.startswith("linux"):
            deadline = time.monotonic() + 60  # it sleeps 600 s unless killed with its parent
            while time.monotonic() < deadline:  # not our child: poll until it is gone
                with contextlib.suppress(FileNotFoundError, ProcessLookupError):
                    if " Z " not in Path(f"/proc/{child}/stat").read_text():
                        time.sleep(0.1)
                        continue
                break
            else:
                pytest.fail(f"forked child {child} outlived its parent")
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(child, signal.SIGKILL)


def test_the_same_process_cannot_lock_twice(tmp_path):
    with RunDirectory(tmp_path), pytest.raises(RunDirectoryError, match=f"pid {os.getpid()}"):
        RunDirectory(tmp_path).acquire()


def test_out_is_a_file(tmp_path):
    (tmp_path / "out").write_text("")
    with pytest.raises(RunDirectoryError, match=r"run directory .*out is a file, not a directory"):
        RunDirectory(tmp_path / "out").acquire()
    with pytest.raises(RunDirectoryError, match=r"cannot create run directory .*out/run: "):
        RunDirectory(tmp_path / "out" / "run").acquire()


def test_writing_needs_the_lock(tmp_path):
    with pytest.raises(RuntimeError, match="without holding its lock"):
        RunDirectory(tmp_path).write_summary({"iterations": 1})


# -- checkpoints ---------------------------------------------------------------


def test_save_writes_one_file_that_loads_back(tmp_path):
    config = small_config()
    model, optimizer = model_and_optimizer(config)
    with RunDirectory(tmp_path) as run:
        path = run.save(7, model.state_dict(), optimizer.state_dict(), COUNTS)
        assert path == tmp_path / "model_checkpoint_7"
        assert sorted(p.name for p in tmp_path.iterdir()) == [".lock", "model_checkpoint_7"]
        checkpoint = run.newest_complete()
    assert checkpoint.iteration == 7 and checkpoint.path == path and run.skipped == []
    assert checkpoint.moving_counts == COUNTS
    for name, value in model.state_dict().items():
        assert torch.equal(checkpoint.model_state[name], value)
    assert checkpoint.optimizer_state["state"][0]["step"] == 1
    # common.load_model reads the same file
    loaded = common.load_model(config, path)
    assert all(
        torch.equal(a, b) for a, b in zip(loaded.parameters(), model.parameters(), strict=True)
    )
    other = small_config(**{"model.num_fmaps": 3})
    with pytest.raises(
        ConfigError, match=r"model_checkpoint_7 does not fit the model of this conf"
    ):
        common.load_model(other, path)


def test_gunpowder_train_resumes_from_the_one_file_format(tmp_path):
    import gunpowder as gp
    import gunpowder.torch as gp_torch

    from gp_hotdistance.torch import HotDistanceLoss

    config = small_config()
    model, optimizer = model_and_optimizer(config, seed=1)
    with RunDirectory(tmp_path) as run:
        run.save(5, model.state_dict(), optimizer.state_dict(), COUNTS)
    fresh, fresh_optimizer = model_and_optimizer(config, seed=2)
    train = gp_torch.Train(
        model=fresh,
        loss=HotDistanceLoss(dims=2),
        optimizer=fresh_optimizer,
        inputs={"x": gp.ArrayKey("RAW")},
        outputs={0: gp.ArrayKey("PREDICTION")},
        loss_inputs={0: gp.ArrayKey("PREDICTION")},
        checkpoint_basename=str(tmp_path / "model"),
        device="cpu",
    )
    train.start()
    assert train.iteration == 5
    assert all(
        torch.equal(a, b) for a, b in zip(fresh.parameters(), model.parameters(), strict=True)
    )


def test_truncated_and_foreign_files_are_skipped(tmp_path, caplog):
    config = small_config()
    model, optimizer = model_and_optimizer(config)
    with RunDirectory(tmp_path) as run:
        run.save(10, model.state_dict(), optimizer.state_dict(), COUNTS)
        newest = run.save(30, model.state_dict(), optimizer.state_dict(), COUNTS)
        # a kill -9 during a plain (non-atomic) write leaves a truncated file
        content = newest.read_bytes()
        newest.write_bytes(content[: len(content) // 2])
        (tmp_path / "model_checkpoint_20").write_bytes(b"")
        (tmp_path / "model_checkpoint_40.bak").write_bytes(content)
        (tmp_path / "model_checkpoint_x").write_bytes(b"junk")
        (tmp_path / "model_checkpoint_50").mkdir()
        with caplog.at_level(logging.WARNING):
            checkpoint = run.newest_complete()
    assert checkpoint.iteration == 10
    assert [(path.name, reason.split(":")[0]) for path, reason in run.skipped] == [
        ("model_checkpoint_30", f"{newest} is truncated or corrupt ({len(content) // 2} bytes)"),
        (
            "model_checkpoint_20",
            f"{tmp_path}/model_checkpoint_20 is truncated or corrupt (0 bytes)",
        ),
    ]
    assert "skipping checkpoint model_checkpoint_30" in caplog.text
    assert "skipping checkpoint model_checkpoint_20" in caplog.text


def test_a_write_interrupted_in_process_leaves_the_old_file(tmp_path, monkeypatch):
    config = small_config()
    model, optimizer = model_and_optimizer(config)
    with RunDirectory(tmp_path) as run:
        run.save(10, model.state_dict(), optimizer.state_dict(), COUNTS)

        def interrupted(payload, file):
            file.write(b"PK\x03\x04 partial")
            raise KeyboardInterrupt

        monkeypatch.setattr(torch, "save", interrupted)
        with pytest.raises(KeyboardInterrupt):
            run.save(20, model.state_dict(), optimizer.state_dict(), COUNTS)
        monkeypatch.undo()
        assert sorted(p.name for p in tmp_path.iterdir()) == [".lock", "model_checkpoint_10"]
        assert run.newest_complete().iteration == 10


def test_temporaries_of_a_killed_write_are_removed_on_acquire(tmp_path, caplog):
    leftovers = [".model_checkpoint_20.123-ab12.tmp", ".summary.json.x.tmp", ".config.json.y.tmp"]
    kept = ["model_checkpoint_20.bak", ".other.tmp", "notes.txt"]
    for name in leftovers + kept:
        (tmp_path / name).write_bytes(b"partial")
    with caplog.at_level(logging.WARNING), RunDirectory(tmp_path) as run:
        assert sorted(p.name for p in tmp_path.iterdir()) == sorted(kept + [".lock"])
        assert run.newest_complete() is None
    assert "removing .model_checkpoint_20.123-ab12.tmp (an unfinished write)" in caplog.text


def test_a_checkpoint_without_moving_counts_is_skipped(tmp_path):
    config = small_config()
    model, optimizer = model_and_optimizer(config)
    with RunDirectory(tmp_path) as run:
        run.save(2, model.state_dict(), optimizer.state_dict(), COUNTS)
    state = {"model_state_dict": model.state_dict(), "optimizer_state_dict": optimizer.state_dict()}
    torch.save(state, tmp_path / "model_checkpoint_4")  # no counts inside
    with RunDirectory(tmp_path) as run:
        checkpoint = run.newest_complete()
    assert checkpoint.iteration == 2 and checkpoint.moving_counts == COUNTS
    assert [reason for _, reason in run.skipped] == [
        f"{tmp_path}/model_checkpoint_4 holds no moving counts"
    ]


def test_a_checkpoint_renamed_to_another_iteration_is_skipped(tmp_path):
    config = small_config()
    model, optimizer = model_and_optimizer(config)
    with RunDirectory(tmp_path) as run:
        run.save(3, model.state_dict(), optimizer.state_dict(), COUNTS)
        os.replace(tmp_path / "model_checkpoint_3", tmp_path / "model_checkpoint_9")
        assert run.newest_complete() is None
    assert run.skipped[0][1].endswith("model_checkpoint_9 holds iteration 3")


# -- the config ----------------------------------------------------------------


def test_config_differences():
    old = small_config()
    assert config_differences(old, old) == ([], [])
    new = small_config(
        **{"scale_factor": 30.0, "channels": ["er", "mito"], "model.num_fmaps": 4},
        **{"training.iterations": 9, "training.num_workers": 2},
    )
    refused, allowed = config_differences(old, new)
    assert refused == ["channels", "model.num_fmaps", "scale_factor"]
    assert allowed == ["training.iterations", "training.num_workers"]
    # where the data lie may change, the voxel size may not
    first = small_config(data={"voxel_size": [8, 8], "samples": [{"raw": "r", "labels": "l"}]})
    moved = small_config(
        data={
            "voxel_size": [4, 4],
            "samples": [{"raw": "elsewhere/r", "labels": "l"}],
            "eval": {"raw": "e", "labels": "l"},
        }
    )
    refused, allowed = config_differences(first, moved)
    assert refused == ["data.voxel_size"]
    assert allowed == ["data.eval", "data.samples"]
    moved_eval = small_config(
        data={**first.to_dict()["data"], "eval": {"raw": "e2", "labels": "l"}}
    )
    assert config_differences(moved, moved_eval) == (
        ["data.voxel_size"],
        ["data.eval", "data.samples"],
    )
    skipping = small_config(data={**first.to_dict()["data"], "skip_unusable": True})
    assert config_differences(first, skipping) == ([], ["data.skip_unusable"])
    refusing = small_config(data={**first.to_dict()["data"], "upsample": False})
    assert config_differences(first, refusing) == ([], ["data.upsample"])


def test_check_config_refuses_a_meaning_change_before_writing(tmp_path):
    config = small_config()
    model, optimizer = model_and_optimizer(config)
    with RunDirectory(tmp_path) as run:
        assert run.check_config(config) == []
        run.write_config(config)
        run.save(2, model.state_dict(), optimizer.state_dict(), COUNTS)
        stored = (tmp_path / CONFIG_NAME).read_text()
        assert run.check_config(small_config(**{"training.iterations": 8})) == [
            "training.iterations"
        ]
        changed = small_config(scale_factor=50.0, mask_distances=False)
        with pytest.raises(RunDirectoryError) as error:
            run.check_config(changed)
        assert (tmp_path / CONFIG_NAME).read_text() == stored
    message = str(error.value)
    assert "holds checkpoints made with another config" in message
    assert "mask_distances: True -> False" in message
    assert "scale_factor: 24.0 -> 50.0" in message


def test_check_config_without_checkpoints_accepts_any_config(tmp_path):
    with RunDirectory(tmp_path) as run:
        run.write_config(small_config())
        assert run.check_config(small_config(scale_factor=50.0)) == []


def test_check_config_needs_the_config_of_existing_checkpoints(tmp_path):
    (tmp_path / "model_checkpoint_5").write_bytes(b"")
    with (
        RunDirectory(tmp_path) as run,
        pytest.raises(RunDirectoryError, match=r"holds checkpoints but no config.json"),
    ):
        run.check_config(small_config())


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ('{"channels": ', r"cannot read .*config.json: Expecting value"),
        ('{"scale_factor": -1}', r"config.json: scale_factor: Input should be greater than 0"),
    ],
)
def test_check_config_with_a_broken_stored_config(tmp_path, content, message):
    (tmp_path / CONFIG_NAME).write_text(content)
    with RunDirectory(tmp_path) as run, pytest.raises(ConfigError, match=message):
        run.check_config(small_config())


# -- the summary ---------------------------------------------------------------


def test_a_summary_is_only_replaced_by_a_better_informed_one(tmp_path):
    first = {"iterations": 250, "trained": 250, "dice": {"mito": 0.858}}
    with RunDirectory(tmp_path) as run:
        assert run.read_summary() is None
        assert run.write_summary(first)
        # a rerun that only re-evaluated, or a summary of an earlier iteration
        assert not run.write_summary({"iterations": 250, "trained": 0, "dice": {"mito": 0.0}})
        assert not run.write_summary({"iterations": 100, "trained": 100, "dice": {"mito": 0.5}})
        assert run.read_summary() == first
        # retrained up to 250 again (from 200, after a broken checkpoint 250)
        again = {"iterations": 250, "trained": 50, "dice": {"mito": 0.85}}
        assert run.write_summary(again)
        assert run.read_summary() == again
        assert run.write_summary({"iterations": 300, "trained": 0, "dice": {"mito": 0.9}})
        assert run.read_summary()["dice"] == {"mito": 0.9}
        (tmp_path / SUMMARY_NAME).write_text('{"iterations": 3')  # truncated by hand
        assert run.write_summary({"iterations": 1, "trained": 0, "dice": {}})
        assert run.read_summary() == {"iterations": 1, "trained": 0, "dice": {}}


def test_written_files_get_the_permissions_of_the_umask(tmp_path):
    previous = os.umask(0o022)
    try:
        with RunDirectory(tmp_path) as run:
            run.write_summary({"iterations": 1, "trained": 1})
            run.write_config(small_config())
    finally:
        os.umask(previous)
    assert (tmp_path / SUMMARY_NAME).stat().st_mode & 0o777 == 0o644
    assert (tmp_path / CONFIG_NAME).stat().st_mode & 0o777 == 0o644


# -- training in a run directory -------------------------------------------------


def tiny_training_config(data_section, **training):
    """:func:`tests.helpers.tiny_config` saving a checkpoint every iteration
    and no snapshots."""
    return tiny_config(data_section, **{"save_every": 1, "snapshot_every": 100, **training})


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    from pipelines.demo_data import make_cellmap_demo

    path = tmp_path_factory.mktemp("demo") / "demo_data.zarr"
    return make_cellmap_demo(path, raw_shape=(96, 96))


def cli(config, out, *args):
    """``python -m pipelines.train`` with ``config`` written beside ``out``."""
    from pipelines import train as train_module

    path = out.parent / f"{out.name}.json"
    path.write_text(json.dumps(config.to_dict()))
    return train_module.main(["--config", str(path), "--out", str(out), "--quiet", *args])


def snapshot_of(folder):
    """Name -> bytes of every file in ``folder`` (not below it)."""
    return {p.name: p.read_bytes() for p in folder.iterdir() if p.is_file()}


def test_a_second_training_into_a_locked_directory_is_refused(demo, tmp_path, capsys):
    out = tmp_path / "run"
    with RunDirectory(out):
        assert cli(tiny_training_config(demo.data_section()), out) == 2
    assert f"is in use by pid {os.getpid()}" in capsys.readouterr().err
    assert sorted(p.name for p in out.iterdir()) == []  # nothing written, the lock removed


def test_changed_scale_factor_is_refused_before_config_json_is_touched(demo, tmp_path, capsys):
    from pipelines import train as train_module

    out = tmp_path / "run"
    config = tiny_training_config(demo.data_section())
    train_module.train(config, out, quiet=True)
    before = snapshot_of(out)
    mtime = (out / CONFIG_NAME).stat().st_mtime_ns
    assert cli(config.replace(scale_factor=50.0), out, "--iterations", "4") == 2
    assert "scale_factor: 24.0 -> 50.0" in capsys.readouterr().err
    assert snapshot_of(out) == before and (out / CONFIG_NAME).stat().st_mtime_ns == mtime


def test_more_iterations_resume_and_an_out_file_is_refused(demo, tmp_path, capsys):
    out = tmp_path / "run"
    config = tiny_training_config(demo.data_section())
    assert cli(config, out) == 0
    assert cli(config, out, "--iterations", "3") == 0
    text = capsys.readouterr().out
    assert "iterations: 3 (resumed from 2)" in text
    names = sorted(p.name for p in out.iterdir() if p.name.startswith("model_"))
    assert names == ["model_checkpoint_1", "model_checkpoint_2", "model_checkpoint_3"]
    assert json.loads((out / SUMMARY_NAME).read_text())["iterations"] == 3
    (tmp_path / "file").write_text("")
    assert cli(config, tmp_path / "file") == 2
    assert "file is a file, not a directory" in capsys.readouterr().err


def test_a_truncated_newest_checkpoint_resumes_from_the_previous(demo, tmp_path, caplog):
    from pipelines import train as train_module

    out = tmp_path / "run"
    config = tiny_training_config(demo.data_section())
    train_module.train(config, out, quiet=True)
    newest = out / "model_checkpoint_2"
    newest.write_bytes(newest.read_bytes()[:100])  # killed while written by an older version
    (out / "model_checkpoint_2.bak").write_bytes(b"kept by the user")
    with caplog.at_level(logging.WARNING):
        summary = train_module.train(config, out, quiet=True)
    assert "skipping checkpoint model_checkpoint_2" in caplog.text
    assert "is truncated or corrupt (100 bytes)" in caplog.text
    assert summary["resumed_from"] == 1 and summary["iterations"] == 2
    assert summary["summary_written"]  # it evaluates the checkpoint 2 now saved
    with RunDirectory(out) as run:
        assert run.newest_complete().iteration == 2 and run.skipped == []
    assert (out / "model_checkpoint_2.bak").read_bytes() == b"kept by the user"


def test_a_rerun_with_nothing_to_train_evaluates_the_restored_model(
    demo, tmp_path, capsys, monkeypatch
):
    from pipelines import train as train_module

    evaluated = []
    evaluate = train_module.evaluate

    def recording(config, container, model, device, **options):
        evaluated.append({k: v.detach().clone() for k, v in model.state_dict().items()})
        return evaluate(config, container, model, device, **options)

    monkeypatch.setattr(train_module, "evaluate", recording)
    out = tmp_path / "run"
    config = tiny_training_config(demo.data_section(), iterations=3)
    first = train_module.train(config, out, quiet=True)
    stored = (out / SUMMARY_NAME).read_bytes()
    for asked in ("3", "2"):
        assert cli(config, out, "--iterations", asked) == 0
        text = capsys.readouterr().out
        assert (
            f"nothing to train: the newest checkpoint is at iteration 3 (asked for {asked})" in text
        )
        assert f"kept {SUMMARY_NAME}, which already evaluates iteration 3 or later" in text
        for name, score in first["dice"].items():
            shown = "no foreground in the labels" if score is None else f"{score:.3f}"
            assert f"dice {name}: {shown}" in text
    rerun = train_module.train(config, out, quiet=True)
    assert rerun["dice"] == first["dice"] and rerun["iterations"] == 3
    assert rerun["resumed_from"] == 3 and rerun["trained"] == 0
    assert (out / SUMMARY_NAME).read_bytes() == stored
    # every run evaluated exactly the weights of checkpoint 3
    saved = torch.load(out / "model_checkpoint_3", weights_only=True)["model_state_dict"]
    assert len(evaluated) == 4
    for state in evaluated:
        assert all(torch.equal(state[k], saved[k]) for k in saved)


def test_a_resumed_run_equals_an_uninterrupted_one(demo, tmp_path):
    """With ``num_workers: 0`` the batch of each iteration depends only on
    ``training.seed`` and the iteration, so resuming after a kill (here:
    checkpoint 4 removed) reproduces the weights of the uninterrupted run."""
    from pipelines import train as train_module

    config = tiny_training_config(demo.data_section(), iterations=4, save_every=2)
    straight = train_module.train(config, tmp_path / "a", quiet=True)
    again = train_module.train(config, tmp_path / "b", quiet=True)
    assert again["first_50_loss"] == straight["first_50_loss"]
    expected = torch.load(tmp_path / "a" / "model_checkpoint_4", weights_only=True)
    (tmp_path / "b" / "model_checkpoint_4").unlink()
    resumed = train_module.train(config, tmp_path / "b", quiet=True)
    assert resumed["resumed_from"] == 2
    result = torch.load(tmp_path / "b" / "model_checkpoint_4", weights_only=True)
    assert result["moving_counts"] == expected["moving_counts"]
    for name, value in expected["model_state_dict"].items():
        assert torch.equal(result["model_state_dict"][name], value), name
