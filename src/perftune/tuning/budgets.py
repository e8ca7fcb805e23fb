"""Constraints, budget policies (a plug-in point) and projections.

A constraint is ``metric op bound``. Constraints on metrics that only grow during training
(``train_time_s``, ``cpu_s``, ``steps``: cumulative; ``memory_mb``: its peak only rises) with ``<=`` can
stop a trial early; every constraint decides feasibility on the trial's final metrics.

Policies decide, after each report window, whether the trial must stop:

* ``none`` — never stops a trial (the full search; the counterfactual for savings).
* ``violation`` — stops as soon as a growing metric has passed its bound.
* ``projected`` — stops when the metric *projected to the end of training* passes ``bound × (1 + slack)``,
  once ``min_observations`` windows have been seen. Cumulative metrics are projected at the rate observed
  between the first and the latest window (so one-off start-up costs do not inflate the rate); peaks are
  projected with the slope of their running peak over the second half of the windows (a flat level with
  noise projects flat; a leak projects its growth).

Policies run inside the trial's process, right after each window: the stop costs no round trip and the
reason travels with the trial's final result.

Between windows, the **watchdog** (:mod:`perftune.tuning.watchdog`) enforces the ``<=`` bounds on
``train_time_s``, ``cpu_s`` and ``memory_mb`` continuously: a thread in the trial's process reads them
(every 50 ms near a bound, up to 1 s apart far from it) and stops the trial the moment one is passed — by
interrupting the training thread, or, when a step is stuck in native code, by ending the trial's process
after a short grace period with the final result already handed to the driver. Its stop reasons carry
``enforced: "watchdog"`` (window checks: ``"window"``). It runs for every policy that stops trials, i.e. not
for ``none``.
"""

from __future__ import annotations

import itertools
from dataclasses import asdict, dataclass, field
from enum import Enum
from typing import Any, ClassVar

from perftune.measure.metrics import get_metric
from perftune.results import TrialRecord, TrialState


@dataclass(frozen=True)
class Constraint:
    """``metric op bound``, e.g. ``train_time_s <= 30``."""

    metric: str
    op: str
    bound: float

    def satisfied(self, value: float | None) -> bool:
        if value is None:
            return False
        return value <= self.bound if self.op == "<=" else value >= self.bound

    @property
    def can_stop_early(self) -> bool:
        metric = get_metric(self.metric)
        return self.op == "<=" and metric is not None and metric.can_stop_early

    def __str__(self) -> str:
        return f"{self.metric} {self.op} {self.bound:g}"


class Enforcement(str, Enum):
    """Which check stopped a trial: the policy after a window, or the watchdog between windows."""

    WINDOW = "window"
    WATCHDOG = "watchdog"


@dataclass(frozen=True)
class StopReason:
    """Why a trial was stopped: which constraint, what was seen, what was projected, and by which check."""

    policy: str
    constraint: str
    metric: str
    bound: float
    observed: float
    projected: float | None
    at_step: int
    total_steps: int
    enforced: str = Enforcement.WINDOW.value
    note: str = ""
    contention: dict[str, float] | None = None  # what the trial received (see perftune.measure.contention)

    def message(self) -> str:
        seen = f"{self.metric} = {self.observed:.4g}"
        if self.projected is not None and self.policy == "projected" and self.enforced == Enforcement.WINDOW:
            seen += f", projected {self.projected:.4g} at step {self.total_steps}"
        by = " by the watchdog" if self.enforced == Enforcement.WATCHDOG else ""
        text = f"{self.constraint} broken ({seen}; stopped{by} at step {self.at_step}/{self.total_steps})"
        parts = [text, self.note, contention_note(self.contention or {}, self.metric)]
        return "; ".join(p for p in parts if p)

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "message": self.message()}


Window = dict[str, float]

CONTENDED = 0.05  # a trial that waited for a CPU this share of its wall time or more says so in its stop reason


def contention_note(contention: dict[str, float], metric: str = "") -> str:
    """One clause naming the contention a trial met, when it waited for a CPU noticeably (else empty)."""
    share = contention.get("cpu_wait_share")
    if share is None or share < CONTENDED:
        return ""
    machine = ", ".join(
        f"{label} {contention[key]:{fmt}}"
        for key, label, fmt in (("runnable_per_core", "runnable per core", ".2g"),
                                ("other_cpu_share", "other processes' CPU share", ".0%"))
        if key in contention
    )  # fmt: skip
    excused = " (not counted in train_time_s)" if metric == "train_time_s" else ""
    return f"contention: waited {share:.0%} of its wall time for a CPU{excused}" + (f"; {machine}" if machine else "")


def observed(metric: str, history: list[Window]) -> float | None:
    """The value a budget compares: the latest for cumulative metrics, the running max for peaks."""
    values = [w[metric] for w in history if metric in w]
    if not values:
        return None
    info = get_metric(metric)
    return max(values) if info is not None and info.growth == "level" else values[-1]


def project(metric: str, history: list[Window], total_steps: int) -> float | None:
    """The metric's value at ``total_steps`` if training goes on as observed."""
    points = [(w["steps"], w[metric]) for w in history if metric in w]
    if not points:
        return None
    steps_now, value_now = points[-1]
    remaining = max(total_steps - steps_now, 0)
    info = get_metric(metric)
    if metric == "steps":
        return float(total_steps)
    if info is not None and info.growth == "level":
        # Project the running peak, not the raw values: noise around a flat level must project flat.
        peaks = list(itertools.accumulate((v for _, v in points), max))
        mid = len(points) // 2 if len(points) > 2 else 0
        steps0 = points[mid][0]
        slope = (peaks[-1] - peaks[mid]) / (steps_now - steps0) if steps_now > steps0 else 0.0
        return peaks[-1] + max(slope, 0.0) * remaining
    steps0, value0 = points[0]
    if steps_now > steps0:
        rate = (value_now - value0) / (steps_now - steps0)
    else:
        rate = value_now / steps_now if steps_now else 0.0
    return value_now + max(rate, 0.0) * remaining


@dataclass
class BudgetPolicy:
    """A budget policy (a plug-in point): decides, after each report window of a trial, whether to stop it.

    To add one, subclass, set ``name`` (the spec's ``early_stopping.policy``) and ``description``, implement
    :meth:`check`, and register the class with :func:`register_policy`; the spec, ``perftune tune`` and the
    watchdog then know it. A policy sees the study's constraints, ``min_observations`` (windows to wait before
    projecting), ``slack`` (relative tolerance on a bound) and, for learned policies, ``predictors`` (metric →
    fitted predictor, see :mod:`perftune.tuning.predictor`). ``stops_trials = False`` (policy ``none``) also
    switches the watchdog off.
    """

    name: ClassVar[str]
    description: ClassVar[str] = ""
    stops_trials: ClassVar[bool] = True  # False: never stops a trial, so the watchdog does not run either

    constraints: tuple[Constraint, ...] = ()
    min_observations: int = 2
    slack: float = 0.0
    predictors: dict[str, Any] = field(default_factory=dict)  # metric → fitted predictor (policy "predicted")

    def check(self, history: list[Window], total_steps: int, params: dict[str, Any] | None = None) -> StopReason | None:
        """Why the trial must stop now (``history``: its windows so far, of ``total_steps`` planned), or None."""
        raise NotImplementedError

    @property
    def stoppable(self) -> tuple[Constraint, ...]:
        return tuple(c for c in self.constraints if c.can_stop_early)

    def _stop(self, c: Constraint, history: list[Window], total_steps: int, expected: float | None) -> StopReason:
        """Why this policy stops the trial on ``c``: what was observed, what was projected or predicted."""
        value = observed(c.metric, history)
        return StopReason(
            self.name,  # type: ignore[attr-defined]
            str(c),
            c.metric,
            c.bound,
            float(value if value is not None else 0.0),
            expected,
            int(history[-1]["steps"]),
            total_steps,
        )

    def _violation(self, history: list[Window], total_steps: int) -> StopReason | None:
        for c in self.stoppable:
            value = observed(c.metric, history)
            if value is not None and not c.satisfied(value):
                return self._stop(c, history, total_steps, project(c.metric, history, total_steps))
        return None


_POLICIES: dict[str, type[BudgetPolicy]] = {}


def register_policy(cls: type[BudgetPolicy]) -> type[BudgetPolicy]:
    """Class decorator: make a budget policy available by its ``name``."""
    _POLICIES[cls.name] = cls
    return cls


def get_policy(name: str) -> type[BudgetPolicy]:
    try:
        return _POLICIES[name]
    except KeyError:
        from perftune.errors import SpecError, did_you_mean

        raise SpecError(
            f"early_stopping.policy: unknown policy {name!r}{did_you_mean(name, _POLICIES)}; "
            f"known: {', '.join(policy_names())}"
        ) from None


def policy_names() -> list[str]:
    return sorted(_POLICIES)


@register_policy
class NoPolicy(BudgetPolicy):
    """Never stops a trial (the baseline every saving is measured against)."""

    name: ClassVar[str] = "none"
    description: ClassVar[str] = "never stop a trial (the full search)"
    stops_trials: ClassVar[bool] = False

    def check(self, history: list[Window], total_steps: int, params: dict[str, Any] | None = None) -> StopReason | None:
        return None


@register_policy
class ViolationPolicy(BudgetPolicy):
    """Stops a trial once an observed metric has broken its constraint."""

    name: ClassVar[str] = "violation"
    description: ClassVar[str] = "stop once a constraint is broken"

    def check(self, history: list[Window], total_steps: int, params: dict[str, Any] | None = None) -> StopReason | None:
        return self._violation(history, total_steps)


@register_policy
class ProjectedPolicy(BudgetPolicy):
    """Also stops a trial whose metric, projected linearly to its last step, would break the constraint."""

    name: ClassVar[str] = "projected"
    description: ClassVar[str] = "stop once a constraint is broken or projected to break"

    def check(self, history: list[Window], total_steps: int, params: dict[str, Any] | None = None) -> StopReason | None:
        reason = self._violation(history, total_steps)
        if reason is not None or len(history) < self.min_observations:
            return reason
        for c in self.stoppable:
            projected = project(c.metric, history, total_steps)
            if projected is not None and projected > c.bound * (1.0 + self.slack):
                return self._stop(c, history, total_steps, projected)
        return None


@register_policy
class PredictedPolicy(ProjectedPolicy):
    """``projected`` plus learned predictors: a trial whose *predicted* final value of a constrained metric
    breaks the constraint is stopped (this also covers ML constraints such as ``accuracy >= 0.7``)."""

    name: ClassVar[str] = "predicted"
    description: ClassVar[str] = "projected, plus learned predictors of the final value"

    def check(self, history: list[Window], total_steps: int, params: dict[str, Any] | None = None) -> StopReason | None:
        reason = super().check(history, total_steps, params)
        if reason is not None:
            return reason
        for c in self.constraints:
            predictor = self.predictors.get(c.metric)
            if predictor is None:
                continue
            predicted = predictor.predict(params or {}, history, total_steps)
            if predicted is None:
                continue
            margin = abs(c.bound) * self.slack
            broken = predicted > c.bound + margin if c.op == "<=" else predicted < c.bound - margin
            if broken:
                return self._stop(c, history, total_steps, predicted)
        return None


def make_policy(
    name: str,
    constraints: tuple[Constraint, ...],
    min_observations: int = 2,
    slack: float = 0.0,
    predictors: dict[str, Any] | None = None,
) -> BudgetPolicy:
    return get_policy(name)(constraints, min_observations, slack, predictors or {})


def estimate_saved(history: list[Window], total_steps: int) -> dict[str, float]:
    """Compute a stopped trial did not spend: projected totals minus what was spent."""
    saved = {}
    for metric in ("cpu_s", "train_time_s"):
        spent, full = observed(metric, history), project(metric, history, total_steps)
        if spent is not None and full is not None:
            saved[f"saved_{metric}"] = max(full - spent, 0.0)
    return saved


def violations(constraints: tuple[Constraint, ...], metrics: dict[str, Any]) -> list[str]:
    """Constraints the final metrics break (a missing metric counts as broken)."""
    out = []
    for c in constraints:
        value = metrics.get(c.metric)
        if not c.satisfied(value):
            shown = "missing" if value is None else f"{value:.4g}"
            out.append(f"{c} (got {shown})")
    return out


def judge(record: TrialRecord, constraints: tuple[Constraint, ...]) -> None:
    """Set feasibility: a completed trial whose final metrics meet every constraint."""
    record.violations = violations(constraints, record.metrics) if record.status == TrialState.COMPLETED else []
    record.feasible = record.status == TrialState.COMPLETED and not record.violations
