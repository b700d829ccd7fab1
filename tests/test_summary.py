"""The training run's report: mean losses over the iterations it trained."""

from __future__ import annotations

import pytest

from pipelines.summary import REPORT_LOSS_WINDOW, loss_summary, print_summary


def _report(losses, capsys, resumed_from=0):
    summary = {
        "device": "cpu",
        "processes": 1,
        "trained": len(losses),
        "iterations": resumed_from + len(losses),
        "resumed_from": resumed_from,
        "wall_seconds": 1.0,
        **loss_summary(losses),
        "evaluation": {},
        "evaluation_crops": 0,
        "summary_written": True,
    }
    print_summary(summary, resumed_from + len(losses), "runs/x")
    return summary, [line for line in capsys.readouterr().out.splitlines() if "loss" in line]


def test_a_short_run_reports_the_halves_it_trained(capsys):
    """20 iterations with losses 0..19: the first 10 average 4.5, the last 10
    average 14.5 (not the first and last 50, which would both be all 20)."""
    summary, lines = _report([float(i) for i in range(20)], capsys, resumed_from=30)
    assert summary["loss_window"] == 10
    assert summary["first_50_loss"] == pytest.approx(4.5)
    assert summary["last_50_loss"] == pytest.approx(14.5)
    assert lines == [
        "mean loss: first 10 iterations 4.5000, last 10 iterations 14.5000 (of 20 trained)"
    ]


@pytest.mark.parametrize(
    ("count", "window", "first", "last"),
    [
        (1, 1, 0.0, 0.0),  # one iteration is both its first and its last
        (3, 1, 0.0, 2.0),  # 3 // 2: iterations 0 and 2, the middle one left out
        (101, 50, 24.5, 75.5),  # 0..49 and 51..100
        (300, 50, 24.5, 274.5),  # 0..49 and 250..299
    ],
)
def test_the_loss_window_is_at_most_fifty_and_halves_never_overlap(count, window, first, last):
    assert REPORT_LOSS_WINDOW == 50
    summary = loss_summary([float(i) for i in range(count)])
    assert summary == {
        "first_50_loss": pytest.approx(first),
        "last_50_loss": pytest.approx(last),
        "loss_window": window,
    }


def test_one_iteration_says_iteration_and_nothing_trained_says_no_loss(capsys):
    assert _report([0.25], capsys)[1] == [
        "mean loss: first 1 iteration 0.2500, last 1 iteration 0.2500 (of 1 trained)"
    ]
    summary, lines = _report([], capsys)
    assert summary["first_50_loss"] is None and summary["loss_window"] == 0 and lines == []
