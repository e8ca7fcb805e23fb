"""Adaptive baselines: each monitored series against what is normal *for it*, learned from its own history.

Static thresholds miss a metric that drifts slowly or steps to a new level that is still "within budget".
Every series a check produces (per-feature drift score, estimated and realized performance, latency p95,
error rate, request rate) is therefore also compared with a **rolling median ± k·MAD** of its last
``history`` values (30 by default): its robust z-score is ``(value − median) / (1.4826 · MAD)``
(``scipy.stats.median_abs_deviation(scale="normal")``, a std for normal noise, unaffected by the outliers it
is meant to find). The scale is floored at 1 % of the median's magnitude, so a series that was constant needs
a real change, not a rounding difference, to count.

Chosen over EWMA control limits because the median and MAD of a window are not dragged by the very outliers
they must flag (an EWMA's mean and variance are, until they adapt) and need no smoothing constant.

A point is *out* when ``|z| > k`` (3.5); a series is **flagged** when the last ``persistence`` points (3) are
out on the same side — one or two stray windows are noise (latency is skewed), three in a row a change. The
verdict says how far (z and the ratio to the median) and since when (the first point of the current run).
Nothing is flagged before ``min_history`` (8) points exist.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from perftune.spec import BaselineSpec


@dataclass
class Point:
    """One past value of a series, as stored with its check."""

    at: str  # ISO time of the check
    value: float
    z: float | None  # its robust z-score against the baseline of its time (None: too little history)


@dataclass
class BaselineVerdict:
    series: str
    value: float
    median: float | None
    scale: float | None
    z: float | None
    flagged: bool
    since: str | None
    history: int

    def describe(self) -> str:
        if self.z is None or self.median is None:
            return f"{self.series}: {self.value:.4g} (learning its baseline, {self.history} points)"
        ratio = f" ({self.value / self.median:.2f}× its median {self.median:.4g})" if self.median else ""
        state = f"departed from its normal since {self.since}" if self.flagged else "normal"
        return f"{self.series}: {self.value:.4g}, robust z {self.z:+.1f}{ratio}; {state}"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def robust_z(value: float, past: Sequence[float]) -> tuple[float, float, float]:
    """(z, median, scale) of ``value`` against ``past``."""
    from scipy import stats

    values = np.asarray(past, dtype=float)
    median = float(np.median(values))
    scale = max(float(stats.median_abs_deviation(values, scale="normal")), 0.01 * abs(median), 1e-12)
    return (value - median) / scale, median, scale


def judge(series: str, value: float, at: str, past: Sequence[Point], settings: BaselineSpec) -> BaselineVerdict:
    """The verdict on the newest ``value`` of ``series`` given its stored ``past`` (oldest first)."""
    finite = [p for p in past if p.value is not None and math.isfinite(p.value)]
    recent = finite[-settings.history :]
    if len(recent) < settings.min_history or not math.isfinite(value):
        return BaselineVerdict(series, value, None, None, None, False, None, len(recent))
    z, median, scale = robust_z(value, [p.value for p in recent])
    side = math.copysign(1.0, z)
    run = [at] if abs(z) > settings.k else []
    if run:
        for point in reversed(finite):
            if point.z is None or abs(point.z) <= settings.k or math.copysign(1.0, point.z) != side:
                break
            run.append(point.at)
    flagged = len(run) >= settings.persistence
    return BaselineVerdict(series, value, median, scale, z, flagged, run[-1] if flagged else None, len(recent))
