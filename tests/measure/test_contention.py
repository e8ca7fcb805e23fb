"""Measurements under contention that is certain, not lucky: the test pins itself and busy processes to one core.

Other load on the machine only adds CPU wait, which every assertion here allows for: each one holds however
busy the machine is, and fails when waits are counted as the trial's or the model's own time.
"""

from __future__ import annotations

import numpy as np
import pytest
from tests.busy import linux_schedstat, sharing_one_core

from perftune.data.split import Fold, PreparedData
from perftune.measure.inference import Candidate, InferenceMeter, compare, measure_inference
from perftune.measure.probe import Probe
from perftune.models.base import get_family
from perftune.results import TrialState
from perftune.tuning.budgets import Constraint, make_policy
from perftune.tuning.trial import TrialSettings, run_trial


def spin(n: int) -> float:
    x = 0.0
    for i in range(n):
        x += i * 0.5
    return x


@linux_schedstat
def test_train_time_leaves_out_the_cpu_wait_that_other_processes_caused():
    probe = Probe()
    with sharing_one_core(busy=2):
        spin(3_000_000)
        sample = probe.sample()
    probe.close()
    # two other processes on the same core: the loop waited for the CPU most of the time
    assert sample.contention["cpu_wait_share"] > 0.3
    assert sample.wall_s > 1.4 * sample.train_time_s
    # a busy loop never sleeps: its time on its own is its CPU time
    assert sample.train_time_s == pytest.approx(sample.cpu_s, rel=0.15)
    assert sample.as_metrics()["wall_time_s"] == sample.wall_s
    assert "runnable_per_core" in sample.contention and sample.contention["other_cpu_share"] > 0


def _data(rows: int = 3000) -> PreparedData:
    rng = np.random.default_rng(0)
    X = rng.normal(size=(rows, 8))
    y = (X[:, 0] > 0).astype(int)
    n = rows * 2 // 3
    fold = Fold(X[:n], y[:n], X[n:], y[n:], None)
    return PreparedData("synthetic", "classification", np.array([0, 1]), 8, [fold], np.arange(n), np.arange(n, rows))


CONFIG = {"batch_size": 2, "learning_rate": 0.01, "alpha": 1e-4, "epochs": 2}


@linux_schedstat
def test_a_wall_clock_budget_does_not_stop_a_trial_for_cpu_that_other_processes_took():
    family = get_family("sgd_logistic")
    with sharing_one_core(busy=3):
        free = run_trial(CONFIG, _data(), TrialSettings(family=family), report=lambda w: None)
        # twice the time the trial needs on its own, about half what the wall clock shows beside three spinners
        budget = 2.0 * free["train_time_s"]
        policy = make_policy("violation", (Constraint("train_time_s", "<=", budget),))
        judged = run_trial(CONFIG, _data(), TrialSettings(family=family, policy=policy), report=lambda w: None)
    assert free["wall_time_s"] > 2.5 * free["train_time_s"]
    assert judged["wall_time_s"] > budget  # judged on the wall clock, the trial would have been stopped
    assert judged["trial_status"] == TrialState.COMPLETED, judged.get("stop_reason")
    assert judged["cpu_wait_share"] > 0.5 and judged["train_time_s"] <= budget


@linux_schedstat
def test_a_stop_reason_names_the_contention_the_trial_met():
    family = get_family("sgd_logistic")
    policy = make_policy("violation", (Constraint("steps", "<=", 300),))
    with sharing_one_core(busy=2):
        result = run_trial({**CONFIG, "epochs": 1}, _data(), TrialSettings(family=family, policy=policy),
                           report=lambda w: None)  # fmt: skip
    assert result["trial_status"] == TrialState.STOPPED_BUDGET
    import json

    reason = json.loads(result["stop_reason"])
    assert reason["contention"]["cpu_wait_share"] > 0.3
    assert "contention: waited" in reason["message"] and "runnable per core" in reason["message"]


@linux_schedstat
def test_latency_leaves_out_cpu_waits_and_keeps_the_wall_figure_beside_it():
    def predict(X: np.ndarray) -> np.ndarray:
        spin(20_000)
        return X[:, 0]

    with sharing_one_core(busy=2):
        m = measure_inference(predict, lambda: b"x", np.ones((10, 3)), latency_rows=100, throughput_batch=16)
    assert m["latency_cpu_wait_share"] > 0.3
    assert m["latency_ms_p95_wall"] > m["latency_ms_p95"]
    assert m["latency_ms_p95_low"] <= m["latency_ms_p95"] <= m["latency_ms_p95_high"]
    assert m["latency_rounds"] == 5 and m["latency_samples"] == 100


def test_rounds_accumulate_and_alternate_the_candidates():
    calls: list[str] = []
    meter = InferenceMeter(
        {name: Candidate(lambda X: X, lambda: b"", prepare=lambda n=name: calls.append(n)) for name in ("a", "b")},
        np.ones((4, 2)),
        latency_rows=20,
        throughput_batch=4,
        min_throughput_s=0.0,
    )
    calls.clear()  # the warm-up prepared each once
    meter.run(rounds=4)
    assert calls == ["a", "b", "b", "a", "a", "b", "b", "a"]
    assert meter.metrics("a")["latency_samples"] == 20
    meter.run(rounds=2)
    # each run measures latency_rows more calls, however many rounds it splits them into
    assert meter.metrics("b")["latency_samples"] == 40 and meter.metrics("b")["latency_rounds"] == 6
    meter.close()


def _p95(value: float, low: float, high: float) -> dict[str, float]:
    return {"latency_ms_p95": value, "latency_ms_p95_low": low, "latency_ms_p95_high": high}


def test_a_comparison_names_a_winner_only_when_the_intervals_do_not_overlap():
    overlap = compare("onnx", _p95(1.0, 0.9, 1.2), "torch", _p95(1.1, 1.0, 1.3))
    assert overlap.faster is None and overlap.message().startswith("no measurable difference")
    clear = compare("onnx", _p95(0.5, 0.45, 0.55), "torch", _p95(1.1, 1.0, 1.3), margin=0.9)
    assert clear.faster == "onnx" and "onnx is faster" in clear.message()
    # a margin asks for more than disjoint intervals: 0.95 is not below 0.9 × 1.0
    assert compare("onnx", _p95(0.9, 0.85, 0.95), "torch", _p95(1.1, 1.0, 1.3), margin=0.9).faster is None


def test_time_spent_outside_training_is_left_out_of_train_time_and_the_clock_stands_still_inside():
    import time

    probe = Probe()
    with probe.outside():  # e.g. a report that waits for Ray's driver
        time.sleep(0.2)  # at least 0.2 s pass, however busy the machine
        inside = probe.train_time_s()
    sample = probe.sample()
    probe.close()
    assert sample.outside_s >= 0.2 and sample.as_metrics()["report_wait_s"] == sample.outside_s
    assert sample.train_time_s <= sample.wall_s - 0.2
    assert inside <= sample.train_time_s
