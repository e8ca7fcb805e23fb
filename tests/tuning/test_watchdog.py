"""The budget watchdog: trials that hang, spin or allocate inside one step are stopped between windows.

Each misbehaving model family below is SGD logistic regression whose step misbehaves once, at step
``AT_STEP``, for one batch size only (``VICTIM``); the other trials of a study are normal. Windows come
every 50 steps, so without the watchdog the budget would be noticed (if ever) only after the step returns.
"""

from __future__ import annotations

import json
import sys
import threading
import time

import numpy as np
import psutil
import pytest
import ray.cloudpickle
from mlflow import MlflowClient

import perftune
from perftune.data import load_dataset, prepare
from perftune.measure.probe import unique_memory_mb
from perftune.models.base import register_family
from perftune.models.sgd import SGDLogistic
from perftune.results import TrialState
from perftune.spec import DatasetSpec, EvaluationSpec
from perftune.tuning import watchdog as watchdog_module
from perftune.tuning.budgets import Constraint, make_policy
from perftune.tuning.trial import TrialSettings, run_trial
from perftune.tuning.watchdog import WatchdogSettings, watched_constraints

COMPLETED, FAILED, STOPPED_BUDGET = TrialState.COMPLETED, TrialState.FAILED, TrialState.STOPPED_BUDGET

AT_STEP = 120
VICTIM = 64
_MB = 1024 * 1024


class _Misbehaving(SGDLogistic):
    """Misbehaves once, at step ``AT_STEP``, when the batch size is ``VICTIM``."""

    def step(self, X, y):
        self._n = getattr(self, "_n", 0) + 1
        if self._n == AT_STEP + 1 and self.params.batch_size == VICTIM:
            self.misbehave()
        return super().step(X, y)

    def misbehave(self) -> None:
        raise NotImplementedError


@register_family
class HangingInPython(_Misbehaving):
    name = "hanging_in_python"

    def misbehave(self) -> None:
        while True:  # a Python-level hang: the interrupt is delivered at the next bytecode
            time.sleep(0.01)


@register_family
class StuckInNative(_Misbehaving):
    name = "stuck_in_native"
    seconds = 600.0

    def misbehave(self) -> None:
        time.sleep(self.seconds)  # one C call: an asynchronous exception waits until it returns


@register_family
class Spinning(_Misbehaving):
    name = "spinning"

    def misbehave(self) -> None:
        while True:
            sum(range(10_000))


@register_family
class Hungry(_Misbehaving):
    """Allocates ``allocate_mb`` (set per test) in one step, then works on for a while."""

    name = "hungry"
    allocate_mb = 0.0

    def misbehave(self) -> None:
        self.blob = np.ones(int(self.allocate_mb * _MB / 8))
        for _ in range(6000):  # 60 s at most; the watchdog stops it long before
            time.sleep(0.01)


CONFIG = {"batch_size": VICTIM, "learning_rate": 0.01, "epochs": 40}


@pytest.fixture(scope="module")
def diabetes():
    return prepare(load_dataset(DatasetSpec(name="diabetes")), EvaluationSpec(), seed=0)


def settings(family, *constraints: str, grace_s: float = 1.0) -> TrialSettings:
    parsed = tuple(Constraint(c.split()[0], "<=", float(c.split()[-1])) for c in constraints)
    return TrialSettings(
        family=family,
        eval_every=50,
        policy=make_policy("violation", parsed),
        report_interval_s=0.0,  # report every window: the watchdog must never fire inside a report
        watchdog=WatchdogSettings(grace_s=grace_s),
    )


def stop_reason(result: dict) -> dict:
    return json.loads(result["stop_reason"])


def no_watchdog_thread() -> bool:
    return not any(t.name == "perftune-watchdog" for t in threading.enumerate())


def test_a_step_hanging_in_python_is_interrupted_and_keeps_its_partial_metrics(diabetes):
    reports: list[dict] = []
    result = run_trial(CONFIG, diabetes, settings(HangingInPython, "train_time_s <= 1"), reports.append)

    assert result["trial_status"] == STOPPED_BUDGET
    reason = stop_reason(result)
    assert reason["enforced"] == "watchdog" and reason["metric"] == "train_time_s"
    assert reason["constraint"] == "train_time_s <= 1" and reason["observed"] > 1.0
    assert reason["at_step"] == AT_STEP < reason["total_steps"]
    assert "stopped by the watchdog at step 120/" in reason["message"]
    # the partial history: windows at 50 and 100 were reported, the last partial one comes with the result
    reported = [w["steps"] for r in reports for w in r["windows"]]
    assert reported == [50, 100] and [w["steps"] for w in result["windows"]] == [AT_STEP]
    assert result["steps"] == AT_STEP and result["train_time_s"] > 1.0
    assert {"cpu_s", "memory_mb", "memory_mb_peak"} <= result.keys()
    assert "latency_ms_p50" not in result  # a stopped trial is not measured for inference
    assert no_watchdog_thread()

    # nothing is left pending in this thread: the next trial runs to its end
    normal = run_trial({**CONFIG, "batch_size": 32}, diabetes, settings(HangingInPython, "train_time_s <= 60"), list)
    assert normal["trial_status"] == COMPLETED and "stop_reason" not in normal


def test_a_scheduler_stop_inside_a_report_is_not_turned_into_a_budget_stop(diabetes, monkeypatch):
    """Ray raises SystemExit in tune.report when a scheduler (ASHA) stops the trial. When the budget breaks
    while that report waits, the trial must still end with the SystemExit: had the watchdog turned it into a
    budget stop, the trial would report again, its thread would never end and Ray would replace the worker.

    The budget is on memory (train_time_s stands still inside a report): the report allocates past it and
    returns only once the watchdog has seen the breach, so the order of events is the same however busy the
    machine is."""
    tripped = threading.Event()
    trip = watchdog_module.Watchdog._trip

    def noting_the_trip(self, *args):
        tripped.set()
        trip(self, *args)  # returns once the training thread has unwound

    monkeypatch.setattr(watchdog_module.Watchdog, "_trip", noting_the_trip)
    budget = round(unique_memory_mb(psutil.Process()) + 200)

    def report(result: dict) -> None:
        blob = np.ones(int(2 * budget * _MB / 8))  # the budget breaks while the report waits for the driver
        assert tripped.wait(60), "the watchdog did not see the broken memory budget in 60 s"
        del blob
        raise SystemExit(0)  # the driver's answer: a scheduler stopped the trial

    with pytest.raises(SystemExit):
        run_trial(CONFIG, diabetes, settings(SGDLogistic, f"memory_mb <= {budget}"), report)
    assert no_watchdog_thread()
    # nothing is left pending in this thread
    normal = run_trial({**CONFIG, "batch_size": 32}, diabetes, settings(SGDLogistic, "train_time_s <= 60"), list)
    assert normal["trial_status"] == COMPLETED


def test_a_step_spinning_on_the_cpu_is_stopped_by_its_cpu_budget(diabetes):
    result = run_trial(CONFIG, diabetes, settings(Spinning, "cpu_s <= 1", "train_time_s <= 600"), list)
    reason = stop_reason(result)
    assert result["trial_status"] == STOPPED_BUDGET
    assert (reason["enforced"], reason["metric"]) == ("watchdog", "cpu_s") and reason["observed"] > 1.0
    assert result["cpu_s"] > 1.0


def test_a_step_allocating_twice_its_memory_budget_is_stopped_by_the_watchdog(diabetes, monkeypatch):
    budget = round(unique_memory_mb(psutil.Process()) + 200)
    monkeypatch.setattr(Hungry, "allocate_mb", 2.0 * budget)
    result = run_trial(CONFIG, diabetes, settings(Hungry, f"memory_mb <= {budget}"), list)

    reason = stop_reason(result)
    assert result["trial_status"] == STOPPED_BUDGET
    assert (reason["enforced"], reason["metric"], reason["bound"]) == ("watchdog", "memory_mb", budget)
    assert reason["observed"] > budget and reason["at_step"] == AT_STEP
    # the record keeps what the watchdog saw, though the array was freed while the trial unwound
    assert result["memory_mb"] >= reason["observed"] and result["memory_mb_peak"] >= reason["observed"]


def test_a_step_stuck_in_native_code_is_ended_through_on_stuck_with_its_final_result(diabetes, monkeypatch):
    monkeypatch.setattr(StuckInNative, "seconds", 4.0)
    handed: list[dict] = []
    result = run_trial(
        CONFIG, diabetes, settings(StuckInNative, "train_time_s <= 0.5", grace_s=0.2), list, on_stuck=handed.append
    )
    # on_stuck got the final result while the thread was still asleep (under Ray it then ends the process)
    assert len(handed) == 1
    final = handed[0]
    reason = stop_reason(final)
    assert final["trial_status"] == STOPPED_BUDGET
    assert (reason["enforced"], reason["metric"]) == ("watchdog", "train_time_s") and reason["observed"] > 0.5
    assert "native code" in reason["note"] and "native code" in reason["message"]
    assert final["steps"] == AT_STEP and [w["steps"] for w in final["windows"]] == [AT_STEP]
    # in-process (on_stuck returned) the stop also takes effect once the call returns
    assert result["trial_status"] == STOPPED_BUDGET and stop_reason(result)["metric"] == "train_time_s"


def test_the_watchdog_watches_only_growing_budgets_and_never_under_policy_none():
    constraints = (
        Constraint("train_time_s", "<=", 10),
        Constraint("cpu_s", "<=", 10),
        Constraint("memory_mb", "<=", 100),
        Constraint("steps", "<=", 1000),  # only changes when a step ends: the window check suffices
        Constraint("accuracy", ">=", 0.5),  # cannot stop early
        Constraint("latency_ms_p95", "<=", 1),  # measured at the end
    )
    assert [c.metric for c in watched_constraints(make_policy("projected", constraints))] == [
        "train_time_s",
        "cpu_s",
        "memory_mb",
    ]
    assert watched_constraints(make_policy("none", constraints)) == ()


def test_a_watchdog_that_dies_fails_the_trial_loudly(diabetes, monkeypatch):
    def broken_read(self):
        raise OSError("/proc is gone")

    monkeypatch.setattr(watchdog_module.Watchdog, "read", broken_read)

    class WaitsForTheWatchdog(SGDLogistic):
        name = "waits_for_the_watchdog"

        def step(self, X, y):
            while not no_watchdog_thread():  # the first step lasts until the watchdog thread has died
                time.sleep(0.01)
            return super().step(X, y)

    result = run_trial(CONFIG, diabetes, settings(WaitsForTheWatchdog, "train_time_s <= 60"), list)
    assert result["trial_status"] == FAILED
    assert "the budget watchdog died (OSError: /proc is gone)" in result["error"]
    assert result["steps"] > 0  # the history so far is kept


STUDY = """
name: watchdog
datasets: [diabetes]
models: [{model}]
search:
  space:
    batch_size: [32, {victim}]
    learning_rate: [0.01]
    epochs: 40
    max_steps: 200
objectives: [accuracy]
constraints: [{constraint!r}]
early_stopping: {{policy: violation}}
evaluation: {{eval_every: 50}}
execution: {{max_concurrent: 2}}
"""


def ray_study(write_spec, out, model: str, constraint: str):
    """A small study of ``model`` through Ray; returns its result and trials by batch size."""
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])  # workers cannot import test modules
    spec = write_spec(STUDY.format(model=model, victim=VICTIM, constraint=constraint), name=model)
    result = perftune.tune(spec, out=out)
    trials = {t.params["batch_size"]: t for t in result.trials}
    assert trials[32].status == COMPLETED  # the study goes on
    return result, trials


def test_a_ray_trial_asleep_in_native_code_is_ended_and_recorded_as_stopped(ray_session, write_spec, tmp_path):
    """The step sleeps in one C call far past ``train_time_s``: the interrupt cannot land, so the watchdog
    reports the final result and ends the worker; the driver records a budget stop, not a failure."""
    result, trials = ray_study(write_spec, tmp_path / "out", "stuck_in_native", "train_time_s <= 15")
    stuck = trials[VICTIM]
    assert stuck.status == STOPPED_BUDGET and stuck.error is None
    assert stuck.stop_reason["enforced"] == "watchdog" and stuck.stop_reason["metric"] == "train_time_s"
    assert stuck.stop_reason["observed"] > 15 and "process was ended" in stuck.stop_reason["note"]
    assert stuck.metrics["steps"] == AT_STEP and stuck.metrics["memory_mb"] > 0  # partial metrics kept
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert next(t for t in summary["trials"] if t["trial_id"] == stuck.trial_id)["stop_reason"] == stuck.stop_reason

    # the windows before the stop reached the driver and MLflow; MLflow shows who stopped the trial
    histories = json.loads(next((tmp_path / "out" / "groups").glob("*.history.json")).read_text())
    assert [w["steps"] for w in histories[stuck.trial_id]] == [50, 100, AT_STEP]
    client = MlflowClient(result.tracking["uri"])
    run = client.get_run(stuck.mlflow_run_id)
    assert run.data.tags["perftune.status"] == STOPPED_BUDGET and "perftune.error" not in run.data.tags
    assert "stopped by the watchdog at step 120/" in run.data.tags["perftune.stop_reason"]
    assert [m.step for m in client.get_metric_history(stuck.mlflow_run_id, "train_time_s")] == [50, 100, AT_STEP]


def test_a_ray_trial_allocating_twice_its_memory_budget_is_stopped_not_killed_by_the_os(
    ray_session, write_spec, tmp_path, monkeypatch
):
    budget = 600  # a Ray worker with the data holds ~200 MB
    monkeypatch.setattr(Hungry, "allocate_mb", 2.0 * budget)
    _, trials = ray_study(write_spec, tmp_path / "out", "hungry", f"memory_mb <= {budget}")
    hungry = trials[VICTIM]
    assert hungry.status == STOPPED_BUDGET and hungry.error is None
    assert hungry.stop_reason["enforced"] == "watchdog" and hungry.stop_reason["metric"] == "memory_mb"
    assert hungry.metrics["memory_mb_peak"] > budget and hungry.metrics["steps"] == AT_STEP


def test_the_watchdog_reads_as_often_as_a_bound_could_be_reached():
    constraints = (Constraint("train_time_s", "<=", 10), Constraint("memory_mb", "<=", 8000))
    dog = watchdog_module.Watchdog(
        constraints,
        "violation",
        100,
        None,
        WatchdogSettings(),
        lambda reason: {},  # type: ignore[arg-type]
    )
    try:
        # far from every bound: once per max_interval_s
        assert dog.next_delay({"train_time_s": 1.0, "memory_mb": 200.0}) == 1.0
        # 0.3 s of wall time left: the next reading comes when the bound could first be reached
        assert dog.next_delay({"train_time_s": 9.7, "memory_mb": 200.0}) == pytest.approx(0.3)
        # 400 MiB of headroom at 4 GiB/s: ~0.1 s
        assert dog.next_delay({"train_time_s": 1.0, "memory_mb": 7600.0}) == pytest.approx(400 / 4096)
        # at the bound: never less than interval_s
        assert dog.next_delay({"train_time_s": 9.999, "memory_mb": 7999.0}) == 0.05
    finally:
        dog.close()
