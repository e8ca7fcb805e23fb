from __future__ import annotations

import numpy as np
import pytest

from perftune.results import TrialRecord
from perftune.tuning.budgets import Constraint, make_policy
from perftune.tuning.predictor import fit_predictor


def curve(final: float, windows: int = 6) -> list[dict[str, float]]:
    """Accuracy that rises towards ``final``: early windows already tell where it ends."""
    return [{"steps": 100.0 * (i + 1), "accuracy": final * (1 - 0.5 ** (i + 1))} for i in range(windows)]


def study(n: int = 30, seed: int = 0):
    rng = np.random.default_rng(seed)
    trials, histories = [], {}
    for i in range(n):
        lr = float(10 ** rng.uniform(-4, -1))
        final = 0.5 + 0.1 * (np.log10(lr) + 4) + rng.normal(0, 0.005)
        trial_id = f"t{i}"
        trials.append(
            TrialRecord(
                trial_id,
                "d",
                "m",
                {"learning_rate": lr, "batch_size": 32},
                "completed",
                {"accuracy": final, "total_steps": 600.0},
            )
        )
        histories[trial_id] = curve(final)
    return trials, histories


def test_predictor_learns_final_values_from_early_windows():
    trials, histories = study()
    predictor = fit_predictor(trials, histories, "accuracy", observations=2)
    assert predictor.n_train == 30 and predictor.cv_mae < 0.03
    assert predictor.predict({"learning_rate": 1e-2, "batch_size": 32}, curve(0.7)[:2], 600) == pytest.approx(
        0.7, abs=0.05
    )
    assert predictor.predict({"learning_rate": 1e-2}, curve(0.7)[:1], 600) is None  # too few windows yet


def test_too_few_trials_is_a_clear_error():
    trials, histories = study(n=4)
    with pytest.raises(ValueError, match="needs at least 6"):
        fit_predictor(trials, histories, "accuracy")


def test_predicted_policy_stops_a_trial_heading_below_an_ml_constraint():
    trials, histories = study()
    policy = make_policy(
        "predicted",
        (Constraint("accuracy", ">=", 0.75),),
        min_observations=2,
        predictors={"accuracy": fit_predictor(trials, histories, "accuracy")},
    )
    weak = policy.check(curve(0.55)[:2], 600, {"learning_rate": 1e-4, "batch_size": 32})
    assert weak is not None and weak.policy == "predicted" and weak.projected < 0.75
    assert policy.check(curve(0.85)[:2], 600, {"learning_rate": 1e-1, "batch_size": 32}) is None
