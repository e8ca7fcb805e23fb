"""Search algorithms and schedulers on real Ray: Optuna TPE / NSGA-II, random search, ASHA, CV folds."""

from __future__ import annotations

from perftune import tune

SPACE = """
datasets: [diabetes]
models: [sgd_logistic]
search:
  algorithm: {algorithm}
  num_samples: {samples}
  space:
    batch_size: [8, 16, 32, 64]
    learning_rate: {{loguniform: [0.0001, 0.1]}}
    alpha: {{loguniform: [0.00001, 0.01]}}
    epochs: 4
objectives: {objectives}
constraints: ['memory_mb <= 8192']
evaluation: {{cv_folds: 3}}
"""


def test_tpe_single_objective_with_cv(ray_session, write_spec, tmp_path):
    result = tune(write_spec(SPACE.format(algorithm="tpe", samples=6, objectives="[val_loss]")), out=tmp_path / "o")
    group = result.groups[0]
    assert len(group.trials) == 6 and all(t.status == "completed" for t in group.trials)
    # sampled, not a grid: learning rates differ and stay in range
    rates = {t.params["learning_rate"] for t in group.trials}
    assert len(rates) == 6 and all(1e-4 <= r <= 0.1 for r in rates)
    assert group.best is not None and group.best.metrics["val_loss"] == min(t.metrics["val_loss"] for t in group.trials)


def test_nsga2_multi_objective_pareto_front(ray_session, write_spec, tmp_path):
    spec = SPACE.format(algorithm="nsga2", samples=6, objectives="[accuracy, train_time_s]")
    group = tune(write_spec(spec), out=tmp_path / "o").groups[0]
    assert len(group.trials) == 6
    front = group.pareto
    assert front
    for a in front:  # nobody on the front is dominated by another feasible trial
        for b in group.feasible:
            assert not (
                b.metrics["accuracy"] >= a.metrics["accuracy"]
                and b.metrics["train_time_s"] <= a.metrics["train_time_s"]
                and (b.metrics["accuracy"], b.metrics["train_time_s"])
                != (a.metrics["accuracy"], a.metrics["train_time_s"])
            )


def test_random_search_is_seeded(ray_session, write_spec, tmp_path):
    spec = SPACE.format(algorithm="random", samples=4, objectives="[accuracy]")
    first = tune(write_spec(spec, name="a"), out=tmp_path / "a").groups[0]
    second = tune(write_spec(spec, name="b"), out=tmp_path / "b").groups[0]
    key = sorted((t.params["batch_size"], round(t.params["learning_rate"], 12)) for t in first.trials)
    assert key == sorted((t.params["batch_size"], round(t.params["learning_rate"], 12)) for t in second.trials)


def test_asha_stops_trials_on_the_ml_metric(ray_session, write_spec, tmp_path):
    spec = """
    datasets: [529_pollen]
    models: [sgd_linear]
    search:
      algorithm: grid
      space:
        batch_size: [8]
        learning_rate: [0.1, 0.01, 0.001, 0.0001, 0.00001]  # the best first: ASHA can only stop a trial that
        alpha: [0.0001, 0.01]                                # reaches a rung behind better ones
        epochs: 9
      scheduler: {type: asha, metric: val_loss, grace_period: 1, reduction_factor: 3}
    objectives: [rmse]
    execution: {report_interval_s: 0}
    early_stopping: {policy: none}
    """
    group = tune(write_spec(spec), out=tmp_path / "o").groups[0]
    statuses = [t.status for t in group.trials]
    assert "stopped_early" in statuses and "completed" in statuses
    for trial in group.trials:
        if trial.status == "stopped_early":
            assert trial.metrics["epoch"] < 9 and not trial.feasible
            assert trial.compute()["saved_cpu_s"] > 0
