"""Chi-square test of homogeneity (categorical; Evidently's default for references of ≤ 1000 values)."""

from __future__ import annotations

from perftune.monitor.profile import CATEGORICAL, ColumnProfile, ColumnSummary
from perftune.monitor.stattests.base import P_VALUE, DriftTest, contingency, register_test


@register_test
class ChiSquare(DriftTest):
    """``scipy.stats.chi2_contingency`` on the 2 × k table of reference and window counts per category (values
    the reference never had form one more category)."""

    name = "chisquare"
    kinds = frozenset({CATEGORICAL})
    kind = P_VALUE
    threshold = 0.05
    description = "chi-square test p-value"

    def score(self, reference: ColumnProfile, window: ColumnSummary) -> float:
        from scipy import stats

        table = contingency(reference, window)
        if table.shape[1] < 2 or not reference.count or not window.count:
            return 1.0 if reference.count and window.count else float("nan")  # one category on both sides
        return float(stats.chi2_contingency(table, correction=False).pvalue)
