from __future__ import annotations

import pytest

from perftune.tuning.budgets import Constraint, estimate_saved, make_policy, project, violations

TIME = Constraint("train_time_s", "<=", 10.0)
MEMORY = Constraint("memory_mb", "<=", 100.0)


def windows(per_step_s: float, steps: list[int], offset: float = 0.0, memory: list[float] | None = None):
    out = []
    for i, step in enumerate(steps):
        w = {"steps": float(step), "train_time_s": offset + per_step_s * step, "cpu_s": 0.9 * per_step_s * step}
        if memory:
            w["memory_mb"] = memory[i]
        out.append(w)
    return out


def test_projection_of_cumulative_metrics_uses_the_observed_rate_not_startup_cost():
    history = windows(0.01, [100, 200], offset=0.5)  # 0.5 s one-off start-up cost
    assert project("train_time_s", history, 1000) == pytest.approx(0.5 + 0.01 * 1000)
    assert project("steps", history, 1000) == 1000


def test_flat_memory_projects_flat_and_growth_projects_growth():
    flat = windows(0.01, [100, 200, 300, 400], memory=[50, 51, 50, 51])
    assert project("memory_mb", flat, 10_000) == pytest.approx(51)
    leak = windows(0.01, [100, 200, 300, 400], memory=[50, 60, 70, 80])
    assert project("memory_mb", leak, 1000) == pytest.approx(80 + 0.1 * 600)


def test_none_never_stops():
    assert make_policy("none", (TIME,)).check(windows(1.0, [100, 200]), 1000) is None


def test_violation_stops_only_once_the_bound_is_passed():
    policy = make_policy("violation", (TIME,))
    assert policy.check(windows(0.01, [100, 200]), 10_000) is None  # projected 100 s, but 2 s so far
    reason = policy.check(windows(0.01, [100, 1100]), 10_000)
    assert reason is not None and reason.policy == "violation"
    assert reason.observed == pytest.approx(11.0) and reason.bound == 10.0 and reason.at_step == 1100


def test_projected_stops_early_with_observed_and_projected_values():
    policy = make_policy("projected", (TIME,), min_observations=2)
    assert policy.check(windows(0.01, [100]), 10_000) is None  # too few observations
    reason = policy.check(windows(0.01, [100, 200]), 10_000)
    assert reason is not None
    assert reason.projected == pytest.approx(100.0) and reason.observed == pytest.approx(2.0)
    assert "train_time_s <= 10 broken" in reason.message() and "projected 100" in reason.message()
    # within budget: goes on
    assert policy.check(windows(0.0001, [100, 200]), 10_000) is None


def test_slack_tolerates_projections_just_over_the_bound():
    history = windows(0.0105, [100, 200])  # projects 10.5 s for a 10 s budget
    assert make_policy("projected", (TIME,)).check(history, 1000) is not None
    assert make_policy("projected", (TIME,), slack=0.1).check(history, 1000) is None


def test_only_growing_metrics_with_upper_bounds_stop_trials():
    assert TIME.can_stop_early and MEMORY.can_stop_early
    assert not Constraint("latency_ms_p95", "<=", 1).can_stop_early  # decided at the end
    assert not Constraint("steps", ">=", 100).can_stop_early  # can only become true


def test_saved_compute_is_projection_minus_spent():
    saved = estimate_saved(windows(0.01, [100, 200]), 1000)
    assert saved["saved_train_time_s"] == pytest.approx(10.0 - 2.0)
    assert saved["saved_cpu_s"] == pytest.approx(0.9 * (10.0 - 2.0))


def test_violations_report_value_and_missing_metrics():
    assert violations((TIME, Constraint("latency_ms_p95", "<=", 1)), {"train_time_s": 12.0}) == [
        "train_time_s <= 10 (got 12)",
        "latency_ms_p95 <= 1 (got missing)",
    ]


def test_best_feasible_breaks_ties_on_the_primary_objective_by_the_next_one():
    from perftune.results import GroupResult, Objective, TrialRecord, best_trial

    objectives = [Objective("accuracy", "max"), Objective("train_time_s", "min")]
    slow = TrialRecord("slow", "d", "m", {}, "completed", {"accuracy": 0.78, "train_time_s": 0.3}, feasible=True)
    fast = TrialRecord("fast", "d", "m", {}, "completed", {"accuracy": 0.78, "train_time_s": 0.03}, feasible=True)
    worse = TrialRecord("worse", "d", "m", {}, "completed", {"accuracy": 0.70, "train_time_s": 0.01}, feasible=True)
    assert best_trial([slow, fast, worse], objectives).trial_id == "fast"
    group = GroupResult("d", "m", "classification", objectives, [slow, worse, fast])
    assert group.best.trial_id == "fast" and "fast" in {t.trial_id for t in group.pareto}
