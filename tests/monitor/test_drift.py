"""Drift tests against scipy on raw samples, and the verdicts on synthetic shifts and on no shift at all."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from perftune.monitor.drift import check_drift
from perftune.monitor.profile import ColumnProfile, ColumnSummary, ReferenceProfile, WindowSummary
from perftune.monitor.stattests import default_test, get_test
from perftune.spec import MonitorSpec

N_NUMERIC, N_CATEGORICAL = 8, 2
SHIFTED_NUMERIC, SHIFTED_CATEGORICAL = (1, 5), 9  # columns 1 and 5 (+0.5 σ), column 9 (frequencies)


def frame(rng: np.random.Generator, rows: int, shift: bool = False) -> np.ndarray:
    """8 numeric columns of different shapes and 2 categorical ones (3 and 4 categories)."""
    numeric = [
        rng.normal(0, 1, rows),
        rng.normal(10, 2, rows),
        rng.exponential(1.0, rows),
        rng.uniform(-1, 1, rows),
        rng.lognormal(0, 0.5, rows),
        rng.normal(-3, 0.5, rows),
        rng.gamma(2.0, 2.0, rows),
        rng.standard_t(5, rows),
    ]
    if shift:
        numeric[1] = numeric[1] + 0.5 * 2
        numeric[5] = numeric[5] + 0.5 * 0.5
    categorical = [
        rng.choice([0.0, 1.0, 2.0], rows, p=[0.5, 0.3, 0.2]),
        rng.choice([1.0, 2.0, 3.0, 4.0], rows, p=[0.4, 0.3, 0.2, 0.1] if not shift else [0.2, 0.3, 0.2, 0.3]),
    ]
    return np.column_stack(numeric + categorical)


def profile_of(X: np.ndarray, predictions: np.ndarray | None = None) -> ReferenceProfile:
    columns = [ColumnProfile.build(f"f{j}", X[:, j]) for j in range(X.shape[1])]
    prediction = ColumnProfile.build("prediction", predictions if predictions is not None else np.zeros(len(X)))
    return ReferenceProfile(columns, prediction, "classification", len(X))


def summary(profile: ReferenceProfile, X: np.ndarray, chunk: int = 997) -> WindowSummary:
    window = WindowSummary(profile)
    for start in range(0, len(X), chunk):  # chunked, as a window is read
        window.add(X[start : start + chunk])
    return window


@pytest.mark.parametrize("reference_rows", [600, 5000])
def test_a_shift_on_two_numeric_and_one_categorical_column_is_found_on_exactly_those(reference_rows):
    rng = np.random.default_rng(1)
    profile = profile_of(frame(rng, reference_rows))
    report = check_drift(summary(profile, frame(rng, reference_rows, shift=True)))
    expected = [f"f{j}" for j in SHIFTED_NUMERIC] + [f"f{SHIFTED_CATEGORICAL}"]
    assert report.drifted_columns == expected
    # Evidently's defaults: p-value tests for a small reference, distances for a large one
    tests = {c.column: c.test for c in report.columns}
    if reference_rows <= 1000:
        assert tests["f0"] == "ks" and tests["f8"] == "chisquare"
    else:
        assert tests["f0"] == "wasserstein" and tests["f8"] == "jensenshannon"
    assert report.drifted_share == pytest.approx(3 / 10) and not report.dataset_drift  # below drift_share 0.5
    assert all(c.reference_rows and c.window_rows == reference_rows for c in report.columns)


def test_the_false_positive_rate_on_fresh_samples_of_the_reference_is_within_the_nominal_level():
    """50 draws of a reference and a window from the same distribution, p-value tests at 0.05 (nominal level
    5 %): 500 independent column tests, each a false alarm with probability 0.05 when the tests are calibrated,
    so the count is binomial(500, 0.05) (mean 25). We accept up to its 99.9 % quantile (41): the test fails
    when the tests are anti-conservative, not by bad luck. (With one *fixed* reference the rate over windows
    is conditional on that sample and varies around 5 % from reference to reference.) No draw may declare
    dataset drift."""
    rng = np.random.default_rng(7)
    alarms = 0
    for _ in range(50):
        report = check_drift(summary(profile_of(frame(rng, 800)), frame(rng, 800)))
        alarms += len(report.drifted_columns)
        assert not report.dataset_drift
    assert alarms <= stats.binom.ppf(0.999, 500, 0.05)


def test_distances_on_fresh_samples_of_a_large_reference_never_reach_their_thresholds():
    rng = np.random.default_rng(8)
    profile = profile_of(frame(rng, 20_000))
    for _ in range(50):
        assert check_drift(summary(profile, frame(rng, 5_000))).drifted_columns == []


def test_ks_is_exact_and_its_p_value_is_scipys_asymptotic_one():
    rng = np.random.default_rng(3)
    ref, cur = np.round(rng.normal(0, 1, 700), 2), np.round(rng.normal(0.1, 1, 4000), 2)  # ties on both sides
    reference = ColumnProfile.build("x", ref)
    window = ColumnSummary(reference)
    for part in np.array_split(cur, 7):
        window.add(part)
    expected = stats.ks_2samp(ref, cur, method="asymp").pvalue
    assert get_test("ks")().score(reference, window) == pytest.approx(expected, rel=1e-9)


def test_wasserstein_from_the_histogram_is_close_to_scipy_on_the_raw_samples():
    rng = np.random.default_rng(4)
    for scale_shift in (0.0, 0.2, 0.5):
        ref, cur = rng.gamma(2.0, 1.0, 50_000), rng.gamma(2.0, 1.0, 50_000) + scale_shift
        reference = ColumnProfile.build("x", ref)
        window = ColumnSummary(reference)
        window.add(cur)
        exact = stats.wasserstein_distance(ref, cur) / ref.std()
        assert get_test("wasserstein")().score(reference, window) == pytest.approx(exact, abs=0.01)


def test_categorical_values_the_reference_never_had_count_as_drift_and_as_out_of_range():
    rng = np.random.default_rng(5)
    reference = ColumnProfile.build("c", rng.choice([1.0, 2.0, 3.0], 500))
    window = ColumnSummary(reference)
    window.add(np.concatenate([rng.choice([1.0, 2.0, 3.0], 400), np.full(100, 7.0)]))
    assert default_test(reference) == "chisquare" and window.unseen == 100
    assert get_test("chisquare")().score(reference, window) < 1e-6
    assert window.out_of_range_rate == pytest.approx(0.2)


def test_spec_overrides_choose_the_test_and_threshold_per_column():
    rng = np.random.default_rng(6)
    profile = profile_of(frame(rng, 600))
    settings = MonitorSpec(
        numeric_test="psi", thresholds={"psi": 0.2}, columns={"f1": {"test": "wasserstein", "threshold": 0.3}}
    )
    report = check_drift(summary(profile, frame(rng, 600, shift=True)), settings)
    by_name = {c.column: c for c in report.columns}
    assert (by_name["f0"].test, by_name["f0"].threshold) == ("psi", 0.2)
    assert (by_name["f1"].test, by_name["f1"].threshold) == ("wasserstein", 0.3)
    assert by_name["f8"].test == "chisquare"  # a numeric-only override never lands on a categorical column


def test_a_window_too_small_to_test_says_so_instead_of_a_verdict():
    rng = np.random.default_rng(9)
    profile = profile_of(frame(rng, 600))
    report = check_drift(summary(profile, frame(rng, 20, shift=True)))
    assert not report.enough_rows and report.drifted_columns == [] and not report.dataset_drift


def test_the_spec_can_declare_a_column_categorical_or_numeric_whatever_its_values():
    import pandas as pd
    from sklearn.linear_model import LogisticRegression

    from perftune.errors import PerftuneError
    from perftune.monitor.reference import build_profile

    rng = np.random.default_rng(11)
    X = np.column_stack([rng.integers(0, 6, 400), rng.integers(0, 3, 400), rng.normal(size=400)]).astype(float)
    y = (X[:, 2] > 0).astype(int)
    names = ["region", "tier", "x"]
    model = LogisticRegression().fit(pd.DataFrame(X, columns=names), y)
    frame = pd.DataFrame(X[:100], columns=names)
    inferred = build_profile(model, X, names, frame, y[:100], "classification", {})
    assert [c.kind for c in inferred.columns] == ["numeric", "categorical", "numeric"]  # 6 values: numeric
    declared = build_profile(
        model, X, names, frame, y[:100], "classification", {}, MonitorSpec(categorical=["region"], numeric=["tier"])
    )
    assert [c.kind for c in declared.columns] == ["categorical", "numeric", "numeric"]
    assert declared.settings["categorical"] == ["region"]  # stored with the version
    with pytest.raises(PerftuneError, match=r"columns \['regoin'\] are not features"):
        build_profile(model, X, names, frame, y[:100], "classification", {}, MonitorSpec(categorical=["regoin"]))
