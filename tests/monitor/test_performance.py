"""CBPE and realized performance; the adaptive baseline on a step and on stationary noise."""

from __future__ import annotations

from datetime import datetime, timedelta

import numpy as np
import pytest
from sklearn.datasets import make_classification
from sklearn.linear_model import LogisticRegression

from perftune.monitor import baseline, performance
from perftune.spec import BaselineSpec


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_cbpe_estimates_a_held_out_samples_known_accuracy_within_its_own_interval(seed):
    X, y = make_classification(n_samples=9000, n_features=8, n_informative=4, n_classes=3, random_state=seed)
    train, test, held_out = slice(0, 3000), slice(3000, 5000), slice(5000, 9000)
    model = LogisticRegression(max_iter=500).fit(X[train], y[train])
    calibration = performance.fit_calibration(model.predict_proba(X[test]), y[test], model.classes_)

    predictions = model.predict(X[held_out])
    expected = performance.ExpectedAccuracy(calibration)
    for rows in np.array_split(np.arange(5000, 9000), 3):  # chunk by chunk, as a window is read
        expected.add(model.predict_proba(X[rows]), predictions[rows - 5000])
    estimate = expected.result(None)
    known = float(np.mean(predictions == y[held_out]))
    assert estimate.low <= known <= estimate.high
    assert estimate.high - estimate.low < 0.06  # an interval that says something (±3 points at 2000 calibration rows)
    # a model without probabilities is "not estimable", never guessed
    assert performance.not_estimable("classification", 0.9, "no predict_proba").value is None


def test_realized_accuracy_has_a_wilson_interval_and_rmse_a_bootstrap_one():
    accuracy = performance.realized("classification", np.array([1, 0, 1, 1] * 50), np.array([1, 1, 1, 1] * 50), 0.9)
    assert accuracy.value == pytest.approx(0.75) and accuracy.low < 0.75 < accuracy.high
    assert performance.judge(accuracy, 0.05).degraded  # 0.75 (≤ 0.81) is worse than 0.9 − 0.05
    rng = np.random.default_rng(0)
    labels = rng.normal(size=2000)
    rmse = performance.realized("regression", labels + rng.normal(0, 0.5, 2000), labels, 0.5)
    assert rmse.low < rmse.value < rmse.high and rmse.value == pytest.approx(0.5, abs=0.05)
    assert not performance.judge(rmse, 0.05).degraded


def run_series(values, settings=BaselineSpec()):
    """Feed a series through the baseline as checks would, storing each point's z; the verdicts."""
    start, past, verdicts = datetime(2026, 1, 1), [], []
    for i, value in enumerate(values):
        at = (start + timedelta(minutes=i)).isoformat()
        verdict = baseline.judge("latency_ms_p95", float(value), at, past, settings)
        past.append(baseline.Point(at, float(value), verdict.z))
        verdicts.append(verdict)
    return verdicts


def test_a_latency_series_stepping_up_30_percent_is_flagged_within_a_few_windows():
    rng = np.random.default_rng(3)
    series = np.concatenate([rng.normal(20, 1, 40), rng.normal(26, 1, 10)])  # 20 ms ± 5 %, then +30 %
    verdicts = run_series(series)
    assert not any(v.flagged for v in verdicts[:40])
    first = next(i for i, v in enumerate(verdicts) if v.flagged)
    assert 40 < first <= 44  # the third window after the step
    assert verdicts[first].since == (datetime(2026, 1, 1) + timedelta(minutes=40)).isoformat()
    assert verdicts[first].z > 3.5 and "departed from its normal since" in verdicts[first].describe()


def test_a_stationary_noisy_series_is_never_flagged():
    rng = np.random.default_rng(4)
    for series in (rng.normal(20, 2, 300), rng.lognormal(3, 0.3, 300), np.full(300, 5.0)):
        assert not any(v.flagged for v in run_series(series))
