"""Training with torchrun: two gloo ranks on the CPU stay identical step by
step, and their checkpoint resumes in one process."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from pipelines import train as train_module
from pipelines.demo_data import make_cellmap_demo
from pipelines.distributed import Distributed, on_rank_zero
from tests.helpers import tiny_config

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_two_ranks_train_identically_and_resume_in_one_process(tmp_path):
    demo = make_cellmap_demo(tmp_path / "demo_data.zarr", raw_shape=(96, 96))
    config = tiny_config(demo.data_section(), iterations=3, save_every=3, snapshot_every=3)
    (tmp_path / "c.json").write_text(json.dumps(config.to_dict()))
    out = tmp_path / "run"
    done = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
        + [str(ROOT / "tests" / "ddp_probe.py"), "--config", str(tmp_path / "c.json")]
        + ["--out", str(out), "--quiet"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "device: cpu, 2 processes" in done.stdout
    ranks = [torch.load(out / f"probe_rank{r}.pt", weights_only=True) for r in (0, 1)]
    assert len(ranks[0]) == len(ranks[1]) == 3
    for step, (zero, one) in enumerate(zip(*ranks, strict=True)):
        assert torch.equal(zero["counts"], one["counts"]), step
        for a, b in zip(zero["params"], one["params"], strict=True):
            assert torch.equal(a, b), step
    # the counts grew every step by both ranks' samples: denominators only grow
    dens = [s["counts"][1] for s in ranks[0]]
    assert all((later > earlier).all() for earlier, later in zip(dens, dens[1:], strict=False))
    # one run directory's files, no other rank's leftovers
    names = sorted(p.name for p in out.iterdir() if not p.name.startswith("probe_rank"))
    assert names == [
        "config.json",
        "model_checkpoint_3",
        "segmentation.json",
        "snapshots",
        "summary.json",
    ]
    assert sorted(p.name for p in (out / "snapshots").iterdir()) == ["batch_3.zarr"]
    checkpoint = torch.load(out / "model_checkpoint_3", weights_only=True)
    params = list(checkpoint["model_state_dict"].values())
    assert all(torch.equal(a, b) for a, b in zip(params, ranks[0][-1]["params"], strict=True))
    num, den = ranks[0][-1]["counts"].tolist()
    saved = checkpoint["moving_counts"]["moving_counts"]
    assert saved == [{"0": [n[0], d[0]], "1": [n[1], d[1]]} for n, d in zip(num, den, strict=True)]
    # one process resumes where the two left off
    resumed = train_module.train(config, out, iterations=4, quiet=True)
    assert resumed["resumed_from"] == 3 and resumed["trained"] == 1
    assert resumed["processes"] == 1
    later = torch.load(out / "model_checkpoint_4", weights_only=True)["moving_counts"]
    for before, after in zip(saved, later["moving_counts"], strict=True):
        assert after["0"][1] > before["0"][1]


def _start_rank(rank, port, directory, fail):
    import os

    os.environ.update(RANK=str(rank), WORLD_SIZE="2", MASTER_ADDR="127.0.0.1", MASTER_PORT=port)

    def work():
        if fail:
            raise train_module.ConfigError("run directory X is in use by pid 1")
        return (3, "model_checkpoint_3")

    with Distributed("cpu") as dist:
        try:
            result = repr(on_rank_zero(dist, work))
        except train_module.ConfigError as error:
            result = f"{type(error).__name__}: {error}"
    (directory / f"rank{rank}.txt").write_text(result)


@pytest.mark.parametrize("fail", [False, True])
def test_rank_zero_shares_its_start_or_its_error(tmp_path, fail):
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = str(s.getsockname()[1])
    context = torch.multiprocessing.get_context("fork")
    processes = [
        context.Process(target=_start_rank, args=(r, port, tmp_path, fail)) for r in (0, 1)
    ]
    for p in processes:
        p.start()
    for p in processes:
        p.join(timeout=180)
    assert [p.exitcode for p in processes] == [0, 0]
    zero, one = ((tmp_path / f"rank{r}.txt").read_text() for r in (0, 1))
    if fail:
        assert zero == "ConfigError: run directory X is in use by pid 1"
        assert one == "RankZeroFailed: rank 0 stopped: run directory X is in use by pid 1"
    else:
        assert zero == one == "(3, 'model_checkpoint_3')"
