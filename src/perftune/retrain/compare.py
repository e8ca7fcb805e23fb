"""Champion vs challenger on the same rows: better by the margin, beyond noise, and within every budget.

Both versions predict the same labelled rows (a held-out slice of recent scoring data, and the original test
split), only rows neither of them trained on (:meth:`perftune.retrain.data.RetrainData.comparison_sets`). The
challenger is promoted only when all of these hold:

* **better by the margin** on the primary objective: accuracy higher by at least ``margin`` (absolute), or
  RMSE lower by at least ``margin`` × the champion's (relative);
* **beyond noise**, by a paired test on the same rows at level ``alpha``: for accuracy the exact McNemar test
  (``scipy.stats.binomtest`` on the rows exactly one of the two gets right: under "no difference" each such row
  favours the challenger with probability ½), one-sided; for RMSE a paired bootstrap of the per-row difference
  of squared errors (``scipy.stats.bootstrap``), the one-sided ``1 − alpha`` lower bound of the improvement
  above zero;
* **feasible on every constraint** of the spec that the challenger's measured metrics can answer
  (``latency_ms_p95 <= …``, ``memory_mb <= …``, ``model_size_bytes <= …`` …): more accurate never excuses a
  broken budget.

Every decision lists its numbers and reasons, for the audit log.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from perftune.spec import ConstraintSpec


@dataclass
class Comparison:
    """The primary objective of both versions on the same rows, and the paired test."""

    metric: str  # accuracy | rmse
    rows: int
    champion: float
    challenger: float
    improvement: (
        float  # in the metric's better direction (accuracy: challenger − champion; rmse: champion − challenger)
    )
    required: float  # the margin, in the same units
    test: str
    p_value: float
    alpha: float
    left_out: int = 0  # rows of the set left out because a version trained on them (see RetrainData)

    @property
    def better_by_margin(self) -> bool:
        return self.improvement >= self.required

    @property
    def beyond_noise(self) -> bool:
        return self.p_value < self.alpha


@dataclass
class Decision:
    promote: bool
    reasons: list[str]
    comparisons: list[Comparison]
    broken: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["comparisons"] = [asdict(c) for c in self.comparisons]
        return out


def compare(
    y: np.ndarray,
    champion: np.ndarray,
    challenger: np.ndarray,
    task: str,
    margin: float,
    alpha: float = 0.05,
    seed: int = 0,
    left_out: int = 0,
) -> Comparison:
    """Compare the two versions' predictions of the same labelled rows ``y`` (rows neither trained on; ``left_out``
    says how many of the set were left out for that, and is kept with the comparison)."""
    from scipy import stats

    y, champion, challenger = (np.asarray(a) for a in (y, champion, challenger))
    n = len(y)
    if task == "classification":
        right_a, right_b = champion == y, challenger == y
        only_b = int(np.sum(right_b & ~right_a))  # rows only the challenger gets right
        only_a = int(np.sum(right_a & ~right_b))
        discordant = only_a + only_b
        p = stats.binomtest(only_b, discordant, 0.5, alternative="greater").pvalue if discordant else 1.0
        acc_a, acc_b = float(right_a.mean()), float(right_b.mean())
        return Comparison(
            "accuracy", n, acc_a, acc_b, acc_b - acc_a, margin, "McNemar exact (one-sided)", float(p), alpha, left_out
        )
    err_a = (champion.astype(float) - y) ** 2
    err_b = (challenger.astype(float) - y) ** 2
    rmse_a, rmse_b = float(np.sqrt(err_a.mean())), float(np.sqrt(err_b.mean()))
    gain = err_a - err_b  # per row: how much smaller the challenger's squared error is
    rng = np.random.default_rng(seed)
    resampled = stats.bootstrap((gain,), np.mean, n_resamples=2000, method="percentile", random_state=rng,
                                vectorized=True, batch=200).bootstrap_distribution  # fmt: skip
    p = float((np.sum(resampled <= 0) + 1) / (resampled.size + 1))  # one-sided: P(no improvement)
    return Comparison("rmse", n, rmse_a, rmse_b, rmse_a - rmse_b, margin * rmse_a, "paired bootstrap (one-sided)",
                      p, alpha, left_out)  # fmt: skip


def broken_constraints(metrics: dict[str, float], constraints: Iterable[ConstraintSpec]) -> list[str]:
    """The constraints the challenger's measured metrics break (a metric it has no value for is not judged)."""
    broken = []
    for c in constraints:
        value = metrics.get(c.metric)
        if value is None:
            continue
        if not c.holds(value):
            broken.append(f"{c.metric} {c.op} {c.bound:g} broken ({c.metric} = {value:.4g})")
    return broken


def decide(
    comparisons: list[Comparison], challenger_metrics: dict[str, float], constraints: Iterable[ConstraintSpec]
) -> Decision:
    """Promote only when every comparison is better by the margin and beyond noise, and no budget is broken."""
    reasons: list[str] = []
    for c in comparisons:
        where = f"{c.metric} on {c.rows} rows: champion {c.champion:.4g}, challenger {c.challenger:.4g}"
        if not c.better_by_margin:
            reasons.append(f"{where}: improvement {c.improvement:+.4g} is below the margin {c.required:.4g}")
        elif not c.beyond_noise:
            reasons.append(f"{where}: {c.test} p = {c.p_value:.3g} ≥ {c.alpha:g}, not beyond noise")
    broken = broken_constraints(challenger_metrics, constraints)
    reasons += [f"challenger breaks {b}" for b in broken]
    if not reasons:
        reasons = [
            f"{c.metric} on {c.rows} rows: {c.champion:.4g} → {c.challenger:.4g} (≥ margin {c.required:.4g}; "
            f"{c.test} p = {c.p_value:.3g}); every constraint holds"
            for c in comparisons
        ]
        return Decision(True, reasons, comparisons, broken)
    return Decision(False, reasons, comparisons, broken)
