"""Whole studies on real Ray, real MLflow (SQLite) and real data.

Which trials a budget stops is decided by ``steps`` here, never by a wall-clock budget: a study's outcomes must be
the same on a quiet machine and beside other work (how ``train_time_s`` budgets judge a trial under contention is
tested with pinned processes in ``tests/measure/test_contention.py``, and their arithmetic in
``tests/tuning/test_budgets.py``)."""

from __future__ import annotations

import json
import sys

import pytest
import ray.cloudpickle
from mlflow import MlflowClient

import perftune
from perftune.models.base import register_family
from perftune.models.sgd import SGDLogistic

BUDGET_STUDY = """
name: budget
datasets: [diabetes]
models: [sgd_logistic]
search:
  space:
    batch_size: {powers_of_two: {from: 1, until: n_samples}}
    learning_rate: [0.01]
    epochs: 20
objectives: [accuracy, train_time_s]
constraints: ['steps <= 600', 'memory_mb <= 4096']
early_stopping: {policy: projected}
"""


def runs_by_trial(client: MlflowClient, result) -> dict[str, object]:
    runs = client.search_runs(
        [result.tracking["experiment_id"]],
        filter_string=f"tags.`mlflow.parentRunId` = '{result.tracking['parent_run_id']}'",
    )
    by_trial = {}
    for run in runs:
        trial_id = run.data.tags["perftune.trial_id"]
        assert trial_id not in by_trial, f"trial {trial_id} logged twice"
        by_trial[trial_id] = run
    return by_trial


def test_budget_study_stops_some_trials_and_tracks_everything(ray_session, write_spec, tmp_path):
    result = perftune.tune(write_spec(BUDGET_STUDY), out=tmp_path / "out")
    group = result.group("diabetes", "sgd_logistic")
    statuses = [t.status for t in group.trials]
    assert len(group.trials) == 8  # 2 … 256 rows per batch
    assert "stopped_budget" in statuses and "completed" in statuses

    # stop reasons say which constraint, what was observed and what was projected
    for trial in group.trials:
        if trial.status == "stopped_budget":
            reason = trial.stop_reason
            assert reason["constraint"] == "steps <= 600" and reason["policy"] == "projected"
            assert reason["projected"] == reason["total_steps"] > 600
            assert reason["at_step"] == 200  # after min_observations = 2 windows of 100 steps
            assert trial.compute()["saved_cpu_s"] > 0
    # small batches take more steps (429 rows × 20 epochs: 4 300 at batch size 2, 1 080 at 8, 540 at 16): the
    # stopped trials are exactly those over 600
    stopped = {t.params["batch_size"] for t in group.trials if t.status == "stopped_budget"}
    assert stopped == {2, 4, 8}

    # the best feasible trial satisfies every constraint
    best = group.best
    assert best is not None and best.feasible
    assert best.metrics["steps"] <= 600 and best.metrics["memory_mb"] <= 4096
    assert all(best.metrics["accuracy"] >= t.metrics["accuracy"] for t in group.feasible)
    assert {t.trial_id for t in group.pareto} <= {t.trial_id for t in group.feasible}

    # summary.json agrees with MLflow, trial by trial
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    client = MlflowClient(result.tracking["uri"])
    runs = runs_by_trial(client, result)
    assert set(runs) == {t["trial_id"] for t in summary["trials"]}
    for trial in summary["trials"]:
        run = runs[trial["trial_id"]]
        assert trial["mlflow_run_id"] == run.info.run_id
        assert run.data.tags["perftune.status"] == trial["status"]
        assert run.data.params["batch_size"] == str(trial["params"]["batch_size"])
        assert run.data.metrics["accuracy"] == pytest.approx(trial["metrics"]["accuracy"])
        assert run.data.metrics["train_time_s"] == pytest.approx(trial["metrics"]["train_time_s"])
        for tag in (
            "perftune.dataset.fingerprint",
            "perftune.spec_hash",
            "perftune.split_seed",
            "perftune.python",
            "perftune.pkg.ray",
            "perftune.hw.cpu_model",
            "perftune.hw.cores",
        ):
            assert run.data.tags.get(tag), tag
        assert run.inputs.dataset_inputs[0].dataset.name == "diabetes"
        if trial["status"] == "stopped_budget":
            assert "steps <= 600 broken" in run.data.tags["perftune.stop_reason"]
    # metric histories carry the step index: every eval_every, and the end (the longest trial: batch size 16)
    long_trial = max(group.trials, key=lambda t: t.metrics["steps"])
    assert (long_trial.params["batch_size"], long_trial.metrics["steps"]) == (16, 540)
    history = client.get_metric_history(long_trial.mlflow_run_id, "val_loss")
    assert [m.step for m in history] == [100, 200, 300, 400, 500, 540]
    assert summary["groups"][0]["best_feasible"]["trial_id"] == best.trial_id
    assert summary["compute"]["counterfactual_cpu_s"] > summary["compute"]["cpu_s"] > 0
    # artifacts live in the workspace, not in ./mlruns of wherever perftune ran
    experiment = client.get_experiment(result.tracking["experiment_id"])
    assert experiment.artifact_location == (tmp_path / "ws" / "artifacts").resolve().as_uri()
    artifacts = {a.path for a in client.list_artifacts(result.tracking["parent_run_id"])}
    assert {"spec.yaml", "summary.json"} <= artifacts
    assert list((tmp_path / "ws" / "artifacts").rglob("summary.json"))


class FlakyLogistic(SGDLogistic):
    """Raises in the middle of training for one batch size (an injected fault)."""

    name = "flaky_logistic"

    def step(self, X, y):
        if self.params.batch_size == 64 and getattr(self, "_n", 0) > 3:
            raise RuntimeError("injected failure")
        self._n = getattr(self, "_n", 0) + 1
        return super().step(X, y)


def test_a_failing_trial_is_recorded_and_the_study_goes_on(ray_session, write_spec, tmp_path):
    register_family(FlakyLogistic)
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])  # workers cannot import test modules
    spec = write_spec(
        BUDGET_STUDY.replace("[sgd_logistic]", "[flaky_logistic]").replace(
            "{powers_of_two: {from: 1, until: n_samples}}", "[32, 64, 128]"
        )
    )
    result = perftune.tune(spec, out=tmp_path / "out")
    trials = {t.params["batch_size"]: t for t in result.trials}
    assert trials[64].status == "failed" and "injected failure" in trials[64].error
    assert trials[32].status == trials[128].status == "completed"
    run = MlflowClient(result.tracking["uri"]).get_run(trials[64].mlflow_run_id)
    assert run.info.status == "FAILED" and "injected failure" in run.data.tags["perftune.error"]


def test_resuming_a_finished_study_reuses_its_groups_without_loading_data(
    ray_session, write_spec, tmp_path, monkeypatch
):
    spec = write_spec(
        BUDGET_STUDY.replace("[sgd_logistic]", "[sgd_logistic, sgd_svm]").replace(
            "{powers_of_two: {from: 1, until: n_samples}}", "[64, 128]"
        )
    )
    first = perftune.tune(spec, out=tmp_path / "out")

    def no_loading(*args, **kwargs):
        raise AssertionError("a finished dataset was loaded again")

    monkeypatch.setattr("perftune.tuning.engine.load_dataset", no_loading)
    again = perftune.tune(spec, out=tmp_path / "out", resume=True)
    assert [(t.trial_id, t.status, t.mlflow_run_id) for t in again.trials] == [
        (t.trial_id, t.status, t.mlflow_run_id) for t in first.trials
    ]
    assert again.tracking["parent_run_id"] == first.tracking["parent_run_id"]


def test_a_study_on_a_versioned_store_dataset(ray_session, write_spec, tmp_path):
    import numpy as np
    import pandas as pd

    from perftune.data.store import DataStore

    rng = np.random.default_rng(1)
    frame = pd.DataFrame({"x1": rng.normal(size=300), "x2": rng.normal(size=300)})
    frame["y"] = (frame.x1 + 0.3 * rng.normal(size=300) > 0).astype(int)
    frame.to_csv(tmp_path / "claims.csv", index=False)
    stored = DataStore(tmp_path / "ws").ingest(tmp_path / "claims.csv", "claims", "y")
    spec = write_spec(
        BUDGET_STUDY.replace("[diabetes]", "['store:claims']").replace(
            "{powers_of_two: {from: 1, until: n_samples}}", "[16, 64]"
        )
    )
    result = perftune.tune(spec, out=tmp_path / "out")
    group = result.groups[0]
    assert group.dataset_card["fingerprint"] == stored.fingerprint and group.dataset_card["rows"] == 300
    assert group.best is not None and group.best.metrics["accuracy"] > 0.8


GROUPS_STUDY = """
name: groups
datasets: [diabetes, iris]
models: {models}
search:
  space:
    batch_size: [8, 32, 128]
    learning_rate: [0.01, 0.1]
    epochs: 3
objectives: [accuracy]
constraints: ['steps <= 120']
early_stopping: {{policy: violation, min_observations: 1}}
"""


def _outcomes(result) -> dict[tuple, tuple]:
    """(dataset, model, params) → what the trial did; every field but time is deterministic here."""
    out = {}
    for t in result.trials:
        key = (t.dataset, t.model, t.params["batch_size"], t.params["learning_rate"])
        assert key not in out, f"configuration {key} ran twice"
        reason = t.stop_reason or {}
        out[key] = (
            t.status,
            t.metrics["accuracy"],
            t.metrics["steps"],
            reason.get("constraint"),
            reason.get("at_step"),
        )
    return out


def test_groups_in_one_run_give_the_trials_of_separate_runs(ray_session, write_spec, tmp_path):
    """Four groups share one Ray Tune run; each gets exactly its own grid, with the statuses, stop reasons,
    metrics and MLflow runs it gets when it runs alone (training is seeded; `steps` makes stops exact)."""
    together = perftune.tune(write_spec(GROUPS_STUDY.format(models="[sgd_logistic, sgd_svm]")), out=tmp_path / "all")
    assert [(g.dataset, g.model) for g in together.groups] == [
        ("diabetes", "sgd_logistic"),
        ("diabetes", "sgd_svm"),
        ("iris", "sgd_logistic"),
        ("iris", "sgd_svm"),
    ]
    alone = {}
    for model in ("sgd_logistic", "sgd_svm"):
        spec = write_spec(GROUPS_STUDY.format(models=f"[{model}]"), name=model)
        alone.update(_outcomes(perftune.tune(spec, out=tmp_path / model)))
    outcomes = _outcomes(together)
    assert outcomes == alone
    assert {status for status, *_ in outcomes.values()} == {"completed", "stopped_budget"}
    assert all(c == "steps <= 120" for status, _, _, c, _ in outcomes.values() if status == "stopped_budget")
    assert all(len(g.trials) == 6 for g in together.groups)

    # one MLflow run per trial, tagged with its own group, with its hyperparameters only
    runs = runs_by_trial(MlflowClient(together.tracking["uri"]), together)
    assert set(runs) == {t.trial_id for t in together.trials}
    for trial in together.trials:
        run = runs[trial.trial_id]
        assert (run.data.tags["perftune.dataset"], run.data.tags["perftune.model"]) == (trial.dataset, trial.model)
        assert set(run.data.params) == {"batch_size", "learning_rate", "epochs"}
        assert "_group" not in trial.params


BUDGETS_AND_ASHA_STUDY = """
name: budgets-asha
datasets: [diabetes]
models: [sgd_logistic]
search:
  space:
    batch_size: [4, 16, 64]
    learning_rate: [0.1, 0.01, 0.001, 0.0001]
    epochs: 6
  scheduler: {type: asha, metric: accuracy, mode: max, grace_period: 1, reduction_factor: 2}
objectives: [accuracy]
constraints: ['steps <= 200', 'memory_mb <= 4096']   # memory: the watchdog runs in every trial
early_stopping: {policy: violation, min_observations: 1}
evaluation: {eval_every: 20}
execution: {report_interval_s: 0}   # every window reaches ASHA
"""


def test_trials_stopped_by_a_budget_under_asha_leave_their_worker_to_the_next_trial(ray_session, write_spec, tmp_path):
    """Budgets and ASHA stop trials in different ways (the trial returns; Ray ends it inside tune.report); either
    way the worker takes the next trial: a worker replaced after a stop pays a process start and its imports, and
    a core waits meanwhile."""
    result = perftune.tune(write_spec(BUDGETS_AND_ASHA_STUDY), out=tmp_path / "out")
    trials = result.trials
    stopped = [t for t in trials if t.status == "stopped_budget"]
    assert len(trials) == 12 and "failed" not in {t.status for t in trials}
    assert {t.params["batch_size"] for t in stopped} == {4}  # 645 planned steps; 16 plans 162, 64 plans 42
    assert all(t.stop_reason["constraint"] == "steps <= 200" for t in stopped)
    for trial in trials:  # the whole trial's wall time holds its training's (a trial ASHA ended has no final result)
        assert trial.status == "stopped_early" or trial.metrics["trial_wall_s"] >= trial.metrics["wall_time_s"] > 0
    workers = {t.worker for t in trials}
    assert None not in workers
    assert len(workers) <= ray.cluster_resources()["CPU"]  # one worker per CPU, trial after trial
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert {t["worker"] for t in summary["trials"]} == workers
