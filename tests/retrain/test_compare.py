"""Champion vs challenger: noise does not promote, a broken budget does not promote, a real gain does."""

from __future__ import annotations

import numpy as np

from perftune.retrain.compare import compare, decide
from perftune.spec import ConstraintSpec

BUDGETS = [ConstraintSpec.model_validate("latency_ms_p95 <= 5"), ConstraintSpec.model_validate("memory_mb <= 300")]
FEASIBLE = {"latency_ms_p95": 1.2, "memory_mb": 180.0}


def labels_and_predictions(n: int, champion_right: int, flips: int, seed: int = 0):
    """``champion_right`` of ``n`` rows right; the challenger also gets ``flips`` of the champion's misses right."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    champion = y.copy()
    wrong = rng.choice(n, n - champion_right, replace=False)
    champion[wrong] = 1 - y[wrong]
    challenger = champion.copy()
    challenger[wrong[:flips]] = y[wrong[:flips]]
    return y, champion, challenger


def test_a_gain_above_the_margin_but_within_noise_is_not_promoted():
    y, a, b = labels_and_predictions(40, 30, 3)  # +7.5 points on 40 rows: McNemar p = 1/8
    comparison = compare(y, a, b, "classification", margin=0.05)
    assert comparison.better_by_margin and comparison.p_value == 0.125
    decision = decide([comparison], FEASIBLE, BUDGETS)
    assert not decision.promote and "not beyond noise" in decision.reasons[0]


def test_a_gain_below_the_margin_is_not_promoted_even_if_significant():
    y, a, b = labels_and_predictions(5000, 4000, 40)  # +0.8 points, p ≈ 1e-12
    comparison = compare(y, a, b, "classification", margin=0.01)
    assert comparison.beyond_noise and not comparison.better_by_margin
    assert not decide([comparison], FEASIBLE, BUDGETS).promote


def test_a_real_gain_within_budgets_is_promoted_and_one_that_breaks_a_budget_is_not():
    y, a, b = labels_and_predictions(1000, 800, 80)  # +8 points, every discordant row favours the challenger
    comparison = compare(y, a, b, "classification", margin=0.02)
    decision = decide([comparison], FEASIBLE, BUDGETS)
    assert decision.promote and "every constraint holds" in decision.reasons[0]
    slow = decide([comparison], {"latency_ms_p95": 7.5, "memory_mb": 180.0}, BUDGETS)
    assert not slow.promote and slow.reasons == ["challenger breaks latency_ms_p95 <= 5 broken (latency_ms_p95 = 7.5)"]
    hungry = decide([comparison], {"latency_ms_p95": 1.0, "memory_mb": 420.0}, BUDGETS)
    assert not hungry.promote and "memory_mb <= 300" in hungry.reasons[0]
    # both data slices must agree: better on recent data but worse on the original test split is not promoted
    y2, a2, b2 = labels_and_predictions(1000, 800, 0)
    b2[np.flatnonzero(a2 == y2)[:50]] ^= 1
    assert not decide([comparison, compare(y2, a2, b2, "classification", 0.02)], FEASIBLE, BUDGETS).promote


def test_regression_uses_a_paired_bootstrap_of_squared_errors():
    rng = np.random.default_rng(1)
    y = rng.normal(size=800)
    champion = y + rng.normal(0, 1.0, 800)
    same = y + rng.normal(0, 1.0, 800)  # as good, up to noise
    better = y + rng.normal(0, 0.6, 800)
    noise = compare(y, champion, same, "regression", margin=0.02)
    real = compare(y, champion, better, "regression", margin=0.02)
    assert not decide([noise], FEASIBLE, BUDGETS).promote
    assert real.p_value < 0.001 and real.improvement > real.required and decide([real], FEASIBLE, BUDGETS).promote


def test_the_importance_change_names_ranks_and_features_the_other_version_lacks():
    from perftune.explain.importance import FeatureImportance
    from perftune.retrain.evaluate import describe_importance, importance_change

    before = [FeatureImportance("glucose", 0.2, 0.01), FeatureImportance("age", 0.1, 0.01)]
    after = [FeatureImportance("age", 0.3, 0.01), FeatureImportance("bmi", 0.2, 0.01)]
    change = importance_change(before, after)
    assert change["champion_top"] == ["glucose", "age"] and change["challenger_top"] == ["age", "bmi"]
    text = describe_importance(change)
    assert "age #2→#1" in text and "bmi unranked→#2" in text and "glucose #1→unranked" in text
    assert describe_importance(importance_change(None, after)) == "importance: not stored for one of the versions"
