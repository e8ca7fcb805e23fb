"""Two-sample Kolmogorov–Smirnov test (numeric columns; Evidently's default for references of ≤ 1000 values)."""

from __future__ import annotations

import numpy as np

from perftune.monitor.profile import NUMERIC, ColumnProfile, ColumnSummary
from perftune.monitor.stattests.base import P_VALUE, DriftTest, register_test


@register_test
class KolmogorovSmirnov(DriftTest):
    """The statistic is exact: the window is counted against every distinct reference value (both ECDFs are
    step functions, so their largest gap is at a reference value or just below one). The p-value is scipy's
    asymptotic one (``scipy.stats.kstwo`` at ``n·m/(n+m)``, as ``ks_2samp(method="asymp")``). A reference too
    large to keep whole (> 1000 values) is compared at its 99 percentiles: a lower bound of the statistic."""

    name = "ks"
    kinds = frozenset({NUMERIC})
    kind = P_VALUE
    threshold = 0.05
    description = "two-sample Kolmogorov–Smirnov p-value"

    def score(self, reference: ColumnProfile, window: ColumnSummary) -> float:
        from scipy import stats

        n, m = reference.count, window.count
        if not n or not m:
            return float("nan")
        if reference.values is not None:
            values, below, at = window.ecdf_on_reference_values()
            ref_sorted = np.sort(np.asarray(reference.values))
            ref_at = np.searchsorted(ref_sorted, values, side="right") / n
            ref_below = np.searchsorted(ref_sorted, values, side="left") / n
            d = max(np.max(np.abs(at - ref_at)), np.max(np.abs(below - ref_below)))
        else:
            d = float(np.max(np.abs(np.cumsum(reference.counts)[:-1] / n - np.cumsum(window.counts)[:-1] / m)))
        return float(stats.kstwo.sf(d, np.round(n * m / (n + m))))
