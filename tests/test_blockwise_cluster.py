"""Blockwise workers started by a command template (``--worker-command``),
fast worker start, and the blockwise error messages (issues 10 and 11).

Volumes are tiny (8 x 32 x 48 voxels, 2 x 1 x 2 blocks) so the daisy runs
take seconds; the launched workers are plain local processes started
through ``/bin/sh``.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import zarr
from funlib.persistence import open_ds, prepare_ds

from pipelines import blockwise as bw
from pipelines.blockwise.outputs import chunk_shape_for
from tests.blockwise_jobs import SlowFirstBlock
from tests.helpers import (
    TINY_BLOCK,
    TINY_SCALE,
    TINY_VOXEL_SIZE,
    blockwise_targets_args,
    tiny_predictor,
)

BLOCK, SCALE = TINY_BLOCK, TINY_SCALE  # 2 x 1 x 2 blocks of the 8 x 32 x 48 voxels of tiny_data
pytestmark = pytest.mark.usefixtures("repo_importable_in_tmp")


def _args(data, output, *extra):
    return blockwise_targets_args(data, output, BLOCK, SCALE, *extra)


@pytest.fixture(scope="module")
def reference(tiny_data, tmp_path_factory):
    """The same targets computed in this process (daisy's serial mode)."""
    output = tmp_path_factory.mktemp("reference") / "out.zarr"
    job = bw.plan_targets(
        tiny_data / "gt", output, tiny_predictor(), BLOCK, mask=tiny_data / "mask"
    )
    bw.run_job(job, progress=False, multiprocessing=False)
    return output


def _chunk_files(output: Path) -> dict[str, bytes]:
    """Every chunk file of the two outputs, by relative path."""
    return {
        str(p.relative_to(output)): p.read_bytes()
        for name in ("target", "distance_mask")
        for p in sorted((output / name).rglob("*"))
        if p.is_file() and not p.name.startswith(".")
    }


@pytest.mark.slow
def test_command_template_output_is_byte_identical(tiny_data, reference, tmp_path, capsys):
    output = tmp_path / "out.zarr"
    assert bw.main(_args(tiny_data, output, "--workers", "2", "--worker-command", "{command}")) == 0
    files = _chunk_files(output)
    assert len(files) == 2 * 2 * 1 * 2  # two outputs, one chunk per block
    assert files == _chunk_files(reference)
    assert "4 blocks (0 already done)" in capsys.readouterr().out
    # a second run has nothing to do and says so
    assert bw.main(_args(tiny_data, output, "--workers", "2", "--worker-command", "{command}")) == 0
    assert "nothing to do: all 4 blocks were already done" in capsys.readouterr().out
    assert _chunk_files(output) == files


def test_workers_started_in_another_directory_find_relative_paths(
    tiny_data, reference, tmp_path, capsys, monkeypatch
):
    """Input, output and logs given relative to this directory; the
    template starts each worker in ``/`` (as ``ssh HOST {command}`` starts
    it in the home directory), without a PYTHONPATH naming the repository."""
    monkeypatch.delenv("PYTHONPATH")
    data = Path(os.path.relpath(tiny_data))
    assert not data.is_absolute() and Path.cwd() == tmp_path
    args = _args(data, Path("out.zarr"), "--worker-command", "cd / && {command}")
    assert bw.main(args) == 0, capsys.readouterr().err
    assert _chunk_files(tmp_path / "out.zarr") == _chunk_files(reference)
    assert (tmp_path / "out.zarr.logs").is_dir()


@pytest.mark.slow
def test_killed_worker_block_is_retried(tiny_data, reference, tmp_path):
    output = tmp_path / "out.zarr"
    job = bw.plan_targets(
        tiny_data / "gt", output, tiny_predictor(), BLOCK, mask=tiny_data / "mask"
    )
    slow = SlowFirstBlock(**{k: v for k, v in vars(job).items() if not k.startswith("_")})
    killed = []

    def kill_when_started():
        deadline = time.monotonic() + 180  # worker commands start slowly on a loaded machine
        while time.monotonic() < deadline:
            with contextlib.suppress(FileNotFoundError, ValueError):  # not (all) written yet
                pid = int((tmp_path / "pid").read_text())
                break
            time.sleep(0.05)
        else:
            return  # no block started: the test fails on ``killed``
        os.kill(pid, signal.SIGKILL)  # the block is in progress (it sleeps 300 s)
        killed.append(pid)

    killer = threading.Thread(target=kill_when_started)
    killer.start()
    report = bw.run_job(slow, num_workers=2, progress=False, worker_command="sh -c '{command}'")
    killer.join()
    assert killed and report.completed == report.blocks == 4
    assert job.markers.done().all()  # no block lost
    assert _chunk_files(output) == _chunk_files(reference)


def test_failing_template_is_a_clear_error(tiny_data, tmp_path, capsys):
    output = tmp_path / "out.zarr"
    started = time.monotonic()
    code = bw.main(
        _args(tiny_data, output, "--worker-command", "false {command}", "--worker-restarts", "1")
    )
    assert code == 1 and time.monotonic() - started < 300  # restarts end; not in a loop
    err = capsys.readouterr().err
    assert "the worker command 'false {command}' kept exiting with errors" in err
    assert "max_worker_restarts" not in err.split("error: ", 1)[1]


def test_template_must_hold_command(tiny_data, tmp_path, capsys):
    assert bw.main(_args(tiny_data, tmp_path / "out.zarr", "--worker-command", "srun {cmd}")) == 2
    assert "must contain {command}" in capsys.readouterr().err
    assert not (tmp_path / "out.zarr").exists()


@pytest.mark.slow
def test_worker_start_imports_neither_torch_nor_gunpowder(tiny_data, tmp_path):
    """A targets worker unpickles its job and processes a block (as the
    launched worker does) without importing torch or gunpowder."""
    output = tmp_path / "out.zarr"
    job = bw.plan_targets(
        tiny_data / "gt", output, tiny_predictor(), BLOCK, mask=tiny_data / "mask"
    )
    (tmp_path / "job.pickle").write_bytes(__import__("pickle").dumps(job))
    script = (
        "import pickle, sys\n"
        "from funlib.geometry import Roi\n"
        "job = pickle.load(open(sys.argv[1], 'rb'))\n"
        "job.process(Roi((0, 0, 0), job.block_size))\n"
        "print(sorted(m for m in ('torch', 'gunpowder', 'dask', 'funlib.persistence')"
        " if m in sys.modules))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script, str(tmp_path / "job.pickle")],
        capture_output=True,
        text=True,
        check=True,
    )
    assert result.stdout.strip() == "[]", result.stderr
    import_gp = subprocess.run(
        [sys.executable, "-c", "import sys, gp_hotdistance; print('gunpowder' in sys.modules)"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert import_gp.stdout.strip() == "False"


# ---------------------------------------------------------------------------
# issue 10: outputs tied to their names, chunk shapes, clear errors
# ---------------------------------------------------------------------------


def test_rerun_with_other_dataset_names_is_refused(tiny_data, tmp_path, capsys):
    output = tmp_path / "out.zarr"
    bw.plan_targets(tiny_data / "gt", output, tiny_predictor(), BLOCK, mask=tiny_data / "mask")
    with pytest.raises(bw.OutputMismatchError, match=r"done/targets.*outputs"):
        bw.plan_targets(
            tiny_data / "gt",
            output,
            tiny_predictor(),
            BLOCK,
            mask=tiny_data / "mask",
            target_dataset="target2",
        )
    assert not (output / "target2").exists()
    assert bw.main(_args(tiny_data, output, "--target", "target2")) == 2
    assert "outputs" in capsys.readouterr().err


def test_chunk_shapes():
    assert chunk_shape_for((128, 96, 50)) == (64, 48, 50)
    assert chunk_shape_for((1, 7, 64)) == (1, 7, 64)
    assert chunk_shape_for((80, 112, 65 * 4)) == (40, 56, 52)
    with pytest.raises(ValueError, match=r"axis 1 \(67 voxels\).*e\.g\. 64 or 80"):
        chunk_shape_for((16, 67, 32))


def test_prime_block_shape_is_refused_before_writing(tiny_data, tmp_path):
    with pytest.raises(ValueError, match="multiple of 16"):
        bw.plan_targets(tiny_data / "gt", tmp_path / "out.zarr", tiny_predictor(), (4, 32, 47 + 20))
    assert not (tmp_path / "out.zarr").exists()


def test_context_single_value(tiny_data, tmp_path):
    job = bw.plan_targets(
        tiny_data / "gt", tmp_path / "out.zarr", tiny_predictor(), BLOCK, context=[16.0]
    )
    assert tuple(job.context) == (16, 16, 16)  # 16 world units: 1 voxel in z, 2 in y, x
    job = bw.plan_targets(
        tiny_data / "gt", tmp_path / "out2.zarr", tiny_predictor(), BLOCK, context=[17.0, 8.0, 1.0]
    )
    assert tuple(job.context) == (32, 8, 8)  # rounded up to whole voxels


@pytest.mark.slow
def test_no_mask_means_no_mask(tiny_data, tmp_path):
    """Without --mask the default config's ``mask`` dataset is not used."""
    output = tmp_path / "out.zarr"
    args = [a for a in _args(tiny_data, output) if a not in ("--mask", "mask")]
    assert bw.main(args) == 0
    signature = zarr.open_array(str(output / "done" / "targets"), mode="r").attrs["signature"]
    assert signature["mask"] is None
    assert open_ds(str(output / "distance_mask" / "s0")).dtype == np.uint8  # no mask: all annotated


@pytest.mark.parametrize(
    "case, extra, message",
    [
        ("workers 0", ["--workers", "0"], "--workers must be at least 1, got 0"),
        ("missing gt", ["--gt", "nothing"], "gt dataset {data}/nothing does not exist"),
        ("missing mask", ["--mask", "nope"], "mask dataset {data}/nope does not exist"),
    ],
)
def test_clear_errors_before_writing(tiny_data, tmp_path, capsys, case, extra, message):
    output = tmp_path / "out.zarr"
    assert bw.main(_args(tiny_data, output) + extra) == 2, case
    assert message.format(data=tiny_data) in capsys.readouterr().err
    assert not output.exists()


def test_empty_input_is_refused(tmp_path, capsys):
    container = tmp_path / "empty.zarr"
    prepare_ds(str(container / "gt"), shape=(0, 8, 8), voxel_size=TINY_VOXEL_SIZE, dtype=np.uint8)
    output = tmp_path / "out.zarr"
    args = ["targets", "--input", str(container), "--gt", "gt", "--output", str(output)]
    assert bw.main([*args, "--block-shape", "4", "8", "8", "--no-progress"]) == 2
    assert f"gt dataset {container}/gt is empty (shape (0, 8, 8))" in capsys.readouterr().err
    assert not (tmp_path / "out.zarr").exists()


def test_output_that_is_a_file_is_refused(tiny_data, tmp_path, capsys):
    output = tmp_path / "out.zarr"
    output.write_text("results")
    assert bw.main(_args(tiny_data, output)) == 2
    assert f"output {output} is a file" in capsys.readouterr().err
    assert output.read_text() == "results"


def test_corrupt_input_chunk_names_the_file(tiny_data, tmp_path):
    import shutil

    container = tmp_path / "data.zarr"
    shutil.copytree(tiny_data, container)
    chunk = sorted(
        p for p in (container / "gt").rglob("*") if p.is_file() and not p.name.startswith(".")
    )[0]
    chunk.write_bytes(b"not a chunk")
    output = tmp_path / "out.zarr"
    job = bw.plan_targets(container / "gt", output, tiny_predictor(), BLOCK)
    with pytest.raises(bw.BlockwiseError, match=rf"(?s)chunk file {chunk}"):
        bw.run_job(job, max_retries=0, progress=False, multiprocessing=False)


def test_checkpoint_with_pickled_object_is_refused(tmp_path):
    import torch

    from pipelines.common import load_model
    from pipelines.config import ConfigError, from_dict

    config = from_dict({"model": {"num_fmaps": 2, "downsample_factors": [[2, 2]]}})
    torch.save({"model_state_dict": {}, "note": Path("a pickled object")}, tmp_path / "ckpt")
    with pytest.raises(ConfigError, match=rf"cannot load checkpoint {tmp_path / 'ckpt'}"):
        load_model(config, tmp_path / "ckpt")


def test_worker_sets_kernel_threads(tiny_data, tmp_path, monkeypatch):
    """A job limits its worker's kernels through GP_HOTDISTANCE_THREADS
    (read by kernels.kernel_threads at every call) and numba."""
    import numba

    from gp_hotdistance.kernels import THREADS_ENV, kernel_threads

    monkeypatch.delenv(THREADS_ENV, raising=False)
    before = numba.get_num_threads()
    job = bw.plan_targets(
        tiny_data / "gt", tmp_path / "out.zarr", tiny_predictor(), BLOCK, threads=1
    )
    try:
        job._set_threads()
        assert os.environ[THREADS_ENV] == "1" and kernel_threads() == 1
        assert numba.get_num_threads() == 1
    finally:
        numba.set_num_threads(before)
