"""RQ2 arithmetic on hand-made runs whose answer is known."""

from __future__ import annotations

import pytest

from perftune.analysis.savings import compare_groups
from perftune.results import GroupResult, Objective, TrialRecord

OBJ = [Objective("accuracy", "max")]


def trial(i: int, batch: int, status: str, accuracy: float, cpu: float, feasible: bool) -> TrialRecord:
    return TrialRecord(
        f"t{i}",
        "d",
        "m",
        {"batch_size": batch},
        status,
        {"accuracy": accuracy, "cpu_s": cpu, "train_time_s": cpu * 1.1},
        feasible=feasible,
    )


def group(trials: list[TrialRecord], wall: float) -> GroupResult:
    return GroupResult("d", "m", "classification", OBJ, trials, wall_s=wall)


def full_run() -> GroupResult:
    return group(
        [
            trial(0, 2, "completed", 0.80, 10.0, feasible=False),  # too slow: breaks the budget
            trial(1, 8, "completed", 0.78, 4.0, feasible=True),  # within budget, but slow-ish
            trial(2, 32, "completed", 0.79, 1.0, feasible=True),  # the best feasible
            trial(3, 128, "completed", 0.70, 0.5, feasible=True),
        ],
        wall=9.0,
    )


def test_same_winner_means_zero_regret_and_spent_is_at_most_full():
    policy = group(
        [
            trial(10, 2, "stopped_budget", 0.60, 1.0, feasible=False),
            trial(11, 8, "completed", 0.78, 4.0, feasible=True),
            trial(12, 32, "completed", 0.79, 1.0, feasible=True),
            trial(13, 128, "completed", 0.70, 0.5, feasible=True),
        ],
        wall=4.0,
    )
    s = compare_groups(full_run(), policy)
    assert s.cpu_s_policy <= s.cpu_s_full
    assert s.savings_factor == pytest.approx(15.5 / 6.5)
    assert s.wall_savings_factor == pytest.approx(9.0 / 4.0)
    assert s.same_best and s.regret == 0 and s.regret_rel == 0
    assert s.stopped == 1 and s.false_stops == 0 and s.matched == 4


def test_a_false_stop_costs_regret_and_is_counted_against_the_full_run():
    policy = group(
        [
            trial(10, 2, "stopped_budget", 0.60, 1.0, feasible=False),
            trial(11, 8, "completed", 0.78, 4.0, feasible=True),
            trial(12, 32, "stopped_budget", 0.50, 0.2, feasible=False),  # would have met the budget: false stop
            trial(13, 128, "completed", 0.70, 0.5, feasible=True),
        ],
        wall=3.0,
    )
    s = compare_groups(full_run(), policy)
    assert s.false_stops == 1 and s.false_stop_trials == ["t12"]
    assert not s.same_best
    assert s.best_policy["params"] == {"batch_size": 8}
    assert s.regret == pytest.approx(0.01) and s.regret_rel == pytest.approx(0.01 / 0.79)
