"""Jensen–Shannon distance (categorical; Evidently's default above 1000 values; numeric on deciles)."""

from __future__ import annotations

from perftune.monitor.profile import CATEGORICAL, NUMERIC, ColumnProfile, ColumnSummary
from perftune.monitor.stattests.base import DISTANCE, DriftTest, proportions, register_test


@register_test
class JensenShannon(DriftTest):
    """``scipy.spatial.distance.jensenshannon`` of the reference and window proportions per category (numeric
    columns: per reference decile); natural log, as Evidently. Threshold 0.1."""

    name = "jensenshannon"
    kinds = frozenset({CATEGORICAL, NUMERIC})
    kind = DISTANCE
    threshold = 0.1
    description = "Jensen–Shannon distance"

    def score(self, reference: ColumnProfile, window: ColumnSummary) -> float:
        from scipy.spatial import distance

        if not reference.count or not window.count:
            return float("nan")
        return float(distance.jensenshannon(*proportions(reference, window)))
