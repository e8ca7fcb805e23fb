"""RQ1 on synthetic studies where the answer is known."""

from __future__ import annotations

import itertools
import multiprocessing
import subprocess
import sys
from concurrent.futures import ProcessPoolExecutor

import numpy as np
import pytest

from perftune.analysis.effects import analyze, analyze_groups, importance, marginal, trials_for
from perftune.parallel import InlineExecutor
from perftune.results import TrialRecord


def synthetic(noise: float = 0.01, seed: int = 0) -> list[TrialRecord]:
    """Step time depends on batch size only; validation loss on the learning rate only."""
    rng = np.random.default_rng(seed)
    trials = []
    grid = itertools.product([2, 8, 32, 128, 512], [1e-4, 1e-3, 1e-2, 1e-1], [1e-4, 1e-3, 1e-2])
    for i, (batch, lr, alpha) in enumerate(grid):
        metrics = {
            "step_time_ms_mean": 0.2 + 0.004 * batch + rng.normal(0, noise),
            "val_loss": 1.0 + abs(np.log10(lr) + 2) + rng.normal(0, noise),
            "train_time_s": 500 / batch + rng.normal(0, noise),
        }
        trials.append(
            TrialRecord(
                f"t{i}", "d", "m", {"batch_size": batch, "learning_rate": lr, "alpha": alpha}, "completed", metrics
            )
        )
    return trials


@pytest.mark.parametrize("evaluator", ["fanova", "ped_anova"])
def test_the_hyperparameter_that_drives_a_metric_ranks_first(evaluator):
    trials = synthetic()
    params = ["alpha", "batch_size", "learning_rate"]
    step = importance(trials, "step_time_ms_mean", params, evaluator)
    assert max(step, key=step.get) == "batch_size"
    loss = importance(trials, "val_loss", params, evaluator)
    assert max(loss, key=loss.get) == "learning_rate"
    if evaluator == "fanova":  # normalized shares: the driver dominates
        assert step["batch_size"] > 0.8 and sum(step.values()) == pytest.approx(1.0)


def test_marginal_effect_follows_the_true_curve():
    effect = marginal(synthetic(), "step_time_ms_mean", "batch_size")
    assert effect.values == [2, 8, 32, 128, 512]  # grid values are kept, not binned
    assert effect.median == sorted(effect.median)  # grows with batch size
    assert effect.count == [12] * 5
    assert all(lo <= m <= hi for lo, m, hi in zip(effect.q25, effect.median, effect.q75, strict=True))


def test_partial_values_of_stopped_trials_are_left_out_of_cumulative_metrics():
    trials = synthetic()
    trials[0].status = "stopped_budget"
    assert trials[0] not in trials_for("train_time_s", trials)
    assert trials[0] in trials_for("step_time_ms_mean", trials)  # a rate is still a fair measurement


def test_analyze_covers_measured_metrics_only():
    results = {r.metric: r for r in analyze(synthetic())}
    assert set(results) == {"step_time_ms_mean", "val_loss", "train_time_s"}
    assert results["train_time_s"].ranking[0] == "batch_size"


def test_a_constant_metric_has_no_important_hyperparameter():
    trials = synthetic()
    for t in trials:
        t.metrics["model_size_bytes"] = 725.0
    assert set(importance(trials, "model_size_bytes", ["batch_size", "learning_rate"]).values()) == {0.0}


def test_groups_analysed_in_worker_processes_give_the_numbers_of_one_process():
    groups = {"a": synthetic(seed=0), "b": synthetic(noise=0.05, seed=1)}
    with ProcessPoolExecutor(2, mp_context=multiprocessing.get_context("spawn")) as pool:
        parallel = analyze_groups(groups, pool=pool)
    assert list(parallel) == ["a", "b"]
    for key, trials in groups.items():
        assert parallel[key] == analyze(trials)  # fANOVA is seeded: the same shares, effects and order


def test_a_failing_task_reaches_the_caller_from_either_pool():
    for pool in (InlineExecutor(), ProcessPoolExecutor(1)):
        with pool:
            future = pool.submit(int, "not a number")
            with pytest.raises(ValueError, match="not a number"):
                future.result()


def test_the_local_pool_forks_only_from_a_single_threaded_process():
    script = """
import threading, time
from concurrent.futures import ProcessPoolExecutor
from perftune.parallel import InlineExecutor, local_pool
with local_pool(2) as pool:
    assert isinstance(pool, ProcessPoolExecutor), pool
    assert pool.submit(sum, [1, 2]).result() == 3
threading.Thread(target=time.sleep, args=(2,), daemon=True).start()
with local_pool(2) as pool:  # a fork now could copy a lock another thread holds
    assert isinstance(pool, InlineExecutor), pool
    assert pool.submit(sum, [1, 2]).result() == 3
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
