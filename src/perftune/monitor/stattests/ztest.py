"""Two-proportion z-test (binary categorical columns; Evidently's default for references of ≤ 1000 values)."""

from __future__ import annotations

from perftune.monitor.stattests.base import register_test
from perftune.monitor.stattests.chisquare import ChiSquare


@register_test
class TwoProportionZ(ChiSquare):
    """The pooled two-proportion z-test. Its two-sided p-value equals that of the chi-square test of the 2 × 2
    table without continuity correction (z² is that chi-square statistic), so it is computed as that test; a
    value the reference never had makes the table 2 × 3, and then it is the chi-square test."""

    name = "z"
    description = "two-proportion z-test p-value"
