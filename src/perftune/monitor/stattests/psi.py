"""Population stability index (numeric on reference deciles, or categorical)."""

from __future__ import annotations

import numpy as np

from perftune.monitor.profile import CATEGORICAL, NUMERIC, ColumnProfile, ColumnSummary
from perftune.monitor.stattests.base import DISTANCE, DriftTest, proportions, register_test


@register_test
class PopulationStabilityIndex(DriftTest):
    """PSI = Σ (c − r)·ln(c / r) over the reference's deciles (or categories), which is the symmetric
    Kullback–Leibler divergence KL(c‖r) + KL(r‖c) (``scipy.special.rel_entr``); empty buckets count as
    0.0001, as Evidently does. Threshold 0.1 (Evidently's; 0.1–0.25 is the usual "moderate shift")."""

    name = "psi"
    kinds = frozenset({NUMERIC, CATEGORICAL})
    kind = DISTANCE
    threshold = 0.1
    description = "population stability index"

    def score(self, reference: ColumnProfile, window: ColumnSummary) -> float:
        from scipy import special

        if not reference.count or not window.count:
            return float("nan")
        ref, cur = (np.clip(p, 0.0001, None) for p in proportions(reference, window))
        return float(np.sum(special.rel_entr(cur, ref) + special.rel_entr(ref, cur)))
