"""The README's plain-loop example is examples/plain_loop.py, and it trains."""

from __future__ import annotations

import math
import re
import runpy
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]


def test_the_readme_shows_the_plain_loop_example_verbatim():
    readme = (ROOT / "README.md").read_text()
    example = (ROOT / "examples" / "plain_loop.py").read_text()
    blocks = re.findall(r"```python\n(.*?)```", readme, re.S)
    assert example in blocks
    assert len(example.splitlines()) < 40


@pytest.mark.slow
def test_the_plain_loop_example_trains(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(sys, "argv", ["plain_loop.py", str(tmp_path), "3"])
    runpy.run_path(str(ROOT / "examples" / "plain_loop.py"), run_name="__main__")
    line = capsys.readouterr().out.strip().splitlines()[-1]
    assert line.startswith("step 3: loss ")
    assert math.isfinite(float(line.split()[-1]))
    saved = torch.load(tmp_path / "model.pt", weights_only=True)
    assert saved["model"]["head.weight"].shape[0] == 4  # 2C channels
    # the counts moved: each class's denominator grew by the known voxels of 12 samples
    assert (saved["balanced"]["den"] > 12 * 32 * 32 * 0.01).all()
