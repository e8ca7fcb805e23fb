"""The gate: thresholds a model must pass on held-out test data (the spec's ``gate:`` section).

A measured system metric is a sample, not a number: latency comes with a 95 % interval
(``latency_ms_p95_low`` / ``_high``, see :mod:`perftune.measure.inference`). When a threshold's bound lies
inside the interval of the value it judges, one measurement cannot tell pass from fail, so the gate asks for
more rounds (``remeasure``, at most ``max_remeasures`` times; the samples pool and the interval narrows) and
then decides on the point estimate, saying so in the check's note. Metrics without an interval (accuracy on
the test split, sizes) decide at once.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from perftune.measure.metrics import get_metric
from perftune.spec import ConstraintSpec

MAX_REMEASURES = 2
ROUNDS = "latency_rounds"  # every interval comes from the inference meter, which counts its rounds here


@dataclass(frozen=True)
class GateCheck:
    """One threshold and how the model did against it."""

    threshold: str
    metric: str
    value: float | None
    passed: bool
    shortfall: float | None  # how far on the wrong side of the bound (None when passed or missing)
    applies: bool = True  # False: the metric does not exist for the model's task (accuracy on regression)
    low: float | None = None  # the value's 95 % interval, where the metric has one
    high: float | None = None
    note: str = ""  # e.g. the bound lay inside the interval and more rounds were measured

    def message(self) -> str:
        if not self.applies:
            return f"{self.threshold}: not applicable to this task"
        if self.value is None:
            return f"{self.threshold}: {self.metric} was not measured"
        shown = f"{self.metric} = {self.value:.4g}"
        if self.low is not None and self.high is not None:
            shown += f" [{self.low:.4g}, {self.high:.4g}]"
        text = f"passed ({shown})" if self.passed else f"failed by {self.shortfall:.4g} ({shown})"
        return f"{self.threshold}: {text}" + (f"; {self.note}" if self.note else "")


def interval(metrics: dict[str, Any], metric: str) -> tuple[float, float] | None:
    """The 95 % interval measured with ``metric``, if any."""
    low, high = metrics.get(f"{metric}_low"), metrics.get(f"{metric}_high")
    return (float(low), float(high)) if low is not None and high is not None else None


def _undecided(t: ConstraintSpec, metrics: dict[str, Any]) -> bool:
    span = interval(metrics, t.metric)
    return span is not None and metrics.get(t.metric) is not None and span[0] <= t.bound <= span[1]


def run_gate(
    thresholds: list[ConstraintSpec],
    metrics: dict[str, Any],
    task: str,
    remeasure: Callable[[], dict[str, Any]] | None = None,
    max_remeasures: int = MAX_REMEASURES,
) -> list[GateCheck]:
    """Check each threshold; one that names a metric of another task (a study may mix tasks) does not apply.

    Args:
        thresholds: the spec's gate.
        metrics: the model's test metrics; updated in place when more rounds are measured.
        task: classification or regression.
        remeasure: measures more rounds and returns the metrics from every round so far (None: decide at once).
        max_remeasures: how many times ``remeasure`` may be called.
    """
    applicable = [t for t in thresholds if _applies(t, task)]
    measured = 0
    while remeasure is not None and measured < max_remeasures and any(_undecided(t, metrics) for t in applicable):
        metrics.update(remeasure())
        measured += 1
    checks = []
    for t in thresholds:
        if not _applies(t, task):
            checks.append(GateCheck(str(t), t.metric, None, True, None, applies=False))
            continue
        value = metrics.get(t.metric)
        if value is None:
            checks.append(GateCheck(str(t), t.metric, None, False, None))
            continue
        passed = t.holds(value)
        shortfall = None if passed else abs(float(value) - t.bound)
        span = interval(metrics, t.metric)
        note = ""
        if span is not None and span[0] <= t.bound <= span[1]:
            rounds = metrics.get(ROUNDS)
            after = f" after {measured + 1} measurements ({rounds:g} rounds)" if rounds else ""
            note = f"the bound lies inside the 95 % interval{after}; decided on the point estimate"
        elif measured and span is not None:
            note = f"decided after {measured + 1} measurements"
        low, high = span if span is not None else (None, None)
        checks.append(GateCheck(str(t), t.metric, float(value), passed, shortfall, low=low, high=high, note=note))
    return checks


def _applies(t: ConstraintSpec, task: str) -> bool:
    known = get_metric(t.metric)
    return known is None or task in known.tasks
