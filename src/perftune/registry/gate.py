"""The gate: thresholds a model must pass on held-out test data (the spec's ``gate:`` section)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from perftune.measure.metrics import get_metric
from perftune.spec import ConstraintSpec


@dataclass(frozen=True)
class GateCheck:
    """One threshold and how the model did against it."""

    threshold: str
    metric: str
    value: float | None
    passed: bool
    shortfall: float | None  # how far on the wrong side of the bound (None when passed or missing)
    applies: bool = True  # False: the metric does not exist for the model's task (accuracy on regression)

    def message(self) -> str:
        if not self.applies:
            return f"{self.threshold}: not applicable to this task"
        if self.value is None:
            return f"{self.threshold}: {self.metric} was not measured"
        if self.passed:
            return f"{self.threshold}: passed ({self.metric} = {self.value:.4g})"
        return f"{self.threshold}: failed by {self.shortfall:.4g} ({self.metric} = {self.value:.4g})"


def run_gate(thresholds: list[ConstraintSpec], metrics: dict[str, Any], task: str) -> list[GateCheck]:
    """Check each threshold; one that names a metric of another task (a study may mix tasks) does not apply."""
    checks = []
    for t in thresholds:
        known = get_metric(t.metric)
        if known is not None and task not in known.tasks:
            checks.append(GateCheck(str(t), t.metric, None, True, None, applies=False))
            continue
        value = metrics.get(t.metric)
        if value is None:
            checks.append(GateCheck(str(t), t.metric, None, False, None))
            continue
        passed = t.holds(value)
        shortfall = None if passed else abs(float(value) - t.bound)
        checks.append(GateCheck(str(t), t.metric, float(value), passed, shortfall))
    return checks
