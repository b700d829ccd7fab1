"""``python -m torch.distributed.run ... tests/ddp_probe.py --config C --out D``:
``python -m pipelines.train`` on this rank, recording after every step the
model's parameters and the moving counts (in ``D/probe_rank<R>.pt``), so a
test can compare the ranks step by step."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from gp_hotdistance.torch import BalancedWeights  # noqa: E402
from pipelines import train as train_module  # noqa: E402

steps: list[dict[str, list[torch.Tensor]]] = []
counts: list[torch.Tensor] = []


class RecordingAdam(torch.optim.Adam):
    def step(self, closure=None):  # noqa: ANN001, ANN201
        loss = super().step(closure)
        params = [p.detach().clone() for g in self.param_groups for p in g["params"]]
        steps.append({"params": params, "counts": counts[-1]})
        return loss


class RecordingBalancedWeights(BalancedWeights):
    def forward(self, *args, **kwargs):  # noqa: ANN002, ANN003, ANN201
        weights = super().forward(*args, **kwargs)
        counts.append(torch.stack([self.num, self.den]).clone())
        return weights


if __name__ == "__main__":
    torch.optim.Adam = RecordingAdam
    train_module.BalancedWeights = RecordingBalancedWeights
    code = train_module.main(sys.argv[1:])
    out = Path(sys.argv[sys.argv.index("--out") + 1])
    torch.save(steps, out / f"probe_rank{os.environ.get('RANK', 0)}.pt")
    sys.exit(code)
