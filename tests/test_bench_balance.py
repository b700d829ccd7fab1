"""benchmarks/bench_balance.py compares equal work: it times only weights
and counts that equal the kernels'."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest
import torch

ROOT = Path(__file__).parent.parent


def bench():
    path = ROOT / "benchmarks/bench_balance.py"
    spec = importlib.util.spec_from_file_location("bench_balance", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("mask", ["uint8", "float32", "none"])
def test_bench_balance_runs_and_restores_torch_threads(mask, capsys):
    threads = torch.get_num_threads()
    args = ["--classes", "2", "--batch", "3", "--shape", "5", "6", "7", "--repeats", "1"]
    bench().main([*args, "--mask", mask, "--threads", "1"])
    out = capsys.readouterr().out
    assert torch.get_num_threads() == threads
    assert out.startswith(f"3 x 2 classes of 5x6x7, mask {mask}, torch threads 1 and 1")
    rows = {line.split()[0] for line in out.splitlines()}
    assert {"numba", "torch"} <= rows
    assert "torch 1 thread " in out and "torch 1 threads / 1 thread (median): " in out


def test_bench_balance_check_rejects_other_weights_and_counts():
    check = bench().check_same
    weights = np.full((1, 4, 2, 3), 1.5, dtype=np.float32)
    counts = [{0: (1.0, 2.0), 1: (0.5, 2.0)}] * 4
    check("same", weights, counts, weights.copy(), [dict(c) for c in counts])
    with pytest.raises(AssertionError, match="weights"):
        check("weights", weights * np.float32(1 + 5e-7), counts, weights, counts)
    with pytest.raises(AssertionError, match="counts"):
        check("counts", weights, [{0: (1.0, 2.0), 1: (0.5, 2.000001)}] * 4, weights, counts)


def test_bench_balance_times_training_steps_beside_a_busy_process(capsys):
    args = ["--classes", "2", "--batch", "1", "--shape", "16", "16", "--repeats", "1"]
    bench().main([*args, "--step", "1", "--threads", "1", "--busy", "1"])
    out = capsys.readouterr().out
    assert "1 repeats, 1 other processes spinning, OMP_WAIT_POLICY " in out
    assert "training steps: input 56x56, 1 repeats" in out
    assert "training step, 1 thread(s): " in out and "% of it" in out
    assert "training step, 1 threads / 1 thread (median): 1.00" in out
