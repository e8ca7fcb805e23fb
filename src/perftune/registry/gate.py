"""The gate: thresholds a model must pass on held-out test data (the spec's ``gate:`` section)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from perftune.spec import ConstraintSpec


@dataclass(frozen=True)
class GateCheck:
    """One threshold and how the model did against it."""

    threshold: str
    metric: str
    value: float | None
    passed: bool
    shortfall: float | None  # how far on the wrong side of the bound (None when passed or missing)

    def message(self) -> str:
        if self.value is None:
            return f"{self.threshold}: {self.metric} was not measured"
        if self.passed:
            return f"{self.threshold}: passed ({self.metric} = {self.value:.4g})"
        return f"{self.threshold}: failed by {self.shortfall:.4g} ({self.metric} = {self.value:.4g})"


def run_gate(thresholds: list[ConstraintSpec], metrics: dict[str, Any]) -> list[GateCheck]:
    checks = []
    for t in thresholds:
        value = metrics.get(t.metric)
        if value is None:
            checks.append(GateCheck(str(t), t.metric, None, False, None))
            continue
        passed = value <= t.bound if t.op == "<=" else value >= t.bound
        shortfall = None if passed else abs(float(value) - t.bound)
        checks.append(GateCheck(str(t), t.metric, float(value), passed, shortfall))
    return checks
