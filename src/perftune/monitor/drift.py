"""Drift verdicts of a window against a reference profile: per column, dataset, prediction, data quality.

Each column is tested with the test the spec names for it (``monitor.columns.<name>.test``), else the spec's
``numeric_test`` / ``categorical_test``, else Evidently's documented default for its kind and the reference
size (:func:`~perftune.monitor.stattests.base.default_test`); the threshold likewise comes from the column, the
spec's ``thresholds`` per test, or the test's default. **Dataset drift** is declared when the share of drifted
feature columns reaches ``drift_share`` (default 0.5). The prediction column is tested the same way
(**prediction drift**). Data quality: a column whose missing rate rose by more than ``max_missing_increase``
over the reference's, or whose share of values outside the reference's [min, max] exceeds ``max_out_of_range``,
is a finding too.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

from perftune.monitor.profile import ColumnProfile, ColumnSummary, WindowSummary
from perftune.monitor.stattests.base import default_test, get_test
from perftune.spec import MonitorSpec


@dataclass
class ColumnDrift:
    """The verdict on one column, with everything needed to judge it."""

    column: str
    kind: str  # numeric | categorical
    test: str
    statistic: str  # p_value | distance
    score: float
    threshold: float
    drifted: bool
    reference_rows: int
    window_rows: int
    missing_rate: float
    reference_missing_rate: float
    out_of_range_rate: float
    reference_mean: float
    window_mean: float
    quality_issues: list[str] = field(default_factory=list)

    def describe(self) -> str:
        relation = "<" if self.statistic == "p_value" else "≥"
        verdict = f"{relation} {self.threshold:g}" if self.drifted else f"not {relation} {self.threshold:g}"
        sizes = f"n={self.reference_rows}/{self.window_rows}"
        return f"{self.column}: {self.test} {self.statistic} {self.score:.4g} {verdict} ({sizes})"


@dataclass
class DriftReport:
    columns: list[ColumnDrift]
    prediction: ColumnDrift | None
    drift_share: float  # the configured share
    drifted_share: float  # the observed share
    dataset_drift: bool
    window_rows: int
    enough_rows: bool

    @property
    def drifted_columns(self) -> list[str]:
        return [c.column for c in self.columns if c.drifted]

    @property
    def quality_issues(self) -> list[str]:
        return [issue for c in self.columns for issue in c.quality_issues]

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["drifted_columns"] = self.drifted_columns
        return out


def _choose(reference: ColumnProfile, settings: MonitorSpec) -> tuple[str, float]:
    column = settings.columns.get(reference.name)
    name = (column.test if column else None) or (
        settings.numeric_test if reference.kind == "numeric" else settings.categorical_test
    )
    if name is None or reference.kind not in get_test(name).kinds:
        name = default_test(reference)  # a numeric-only test is never forced on a categorical column
    threshold = column.threshold if column and column.threshold is not None else None
    if threshold is None:
        threshold = settings.thresholds.get(name, get_test(name).threshold)
    return name, float(threshold)


def column_drift(reference: ColumnProfile, window: ColumnSummary, settings: MonitorSpec) -> ColumnDrift:
    """The drift verdict on one column (its test chosen as the module docstring says)."""
    name, threshold = _choose(reference, settings)
    test = get_test(name)
    enough = window.count >= settings.min_rows
    score = test().score(reference, window) if enough else math.nan
    issues = []
    if window.missing_rate - reference.missing_rate > settings.max_missing_increase:
        issues.append(
            f"{reference.name}: missing rate {window.missing_rate:.1%} (reference {reference.missing_rate:.1%})"
        )
    if window.out_of_range_rate > settings.max_out_of_range:
        issues.append(
            f"{reference.name}: {window.out_of_range_rate:.1%} of values outside the reference's range "
            f"[{reference.min:g}, {reference.max:g}]"
        )
    return ColumnDrift(
        reference.name,
        reference.kind,
        name,
        test.kind,
        score,
        threshold,
        enough and test.drifted(score, threshold),
        reference.count,
        window.count,
        window.missing_rate,
        reference.missing_rate,
        window.out_of_range_rate,
        reference.mean,
        window.mean,
        issues,
    )


def check_drift(window: WindowSummary, settings: MonitorSpec | None = None) -> DriftReport:
    """Test every feature column and the predictions of ``window`` against its profile."""
    settings = settings or MonitorSpec()
    profile = window.profile
    columns = [column_drift(ref, cur, settings) for ref, cur in zip(profile.columns, window.columns, strict=True)]
    prediction = column_drift(profile.prediction, window.prediction, settings) if window.prediction.count else None
    share = sum(c.drifted for c in columns) / len(columns) if columns else 0.0
    enough = window.rows >= settings.min_rows
    return DriftReport(
        columns, prediction, settings.drift_share, share, enough and share >= settings.drift_share, window.rows, enough
    )
