"""Study results: trial states, trial records, best feasible trial, Pareto front, compute accounting.

This is also the ``summary.json`` schema (see the README): :meth:`StudyResult.to_summary`. It sits outside
``perftune.tuning`` so that tracking, analysis, reports and the registry read results without importing the
tuning engine (and ``tuning`` → ``track`` → ``results`` has no cycle).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any, Protocol

SUMMARY_SCHEMA_VERSION = 1


class TrialState(StrEnum):
    """How a trial ended (the ``status`` of summary.json; a ``StrEnum``, so it compares equal to and is written
    as its value, and records read back from JSON keep plain strings)."""

    COMPLETED = "completed"  # ran to its last step
    STOPPED_BUDGET = "stopped_budget"  # a budget policy or the watchdog ended it (see its stop reason)
    STOPPED_EARLY = "stopped_early"  # the scheduler (ASHA) ended it on its ML metric
    FAILED = "failed"  # raised, diverged, or its worker died

    @property
    def stopped(self) -> bool:
        return self in (TrialState.STOPPED_BUDGET, TrialState.STOPPED_EARLY)


@dataclass(frozen=True)
class Objective:
    """A resolved objective for one dataset: a metric name and a direction."""

    metric: str
    mode: str  # "min" | "max"

    def better(self, a: float, b: float) -> bool:
        return a < b if self.mode == "min" else a > b


@dataclass
class TrialRecord:
    """One finished trial as it appears in summary.json and MLflow."""

    trial_id: str
    dataset: str
    model: str
    params: dict[str, Any]
    status: str
    metrics: dict[str, float]
    stop_reason: dict[str, Any] | None = None
    error: str | None = None
    mlflow_run_id: str | None = None
    feasible: bool = False
    violations: list[str] = field(default_factory=list)
    worker: str | None = None  # the Ray worker process that ran it, "<node ip>:<pid>"

    @property
    def cpu_s(self) -> float:
        return float(self.metrics.get("cpu_s", 0.0))

    @property
    def trial_s(self) -> float:
        return float(self.metrics.get("train_time_s", 0.0))

    def compute(self) -> dict[str, float]:
        return {
            "cpu_s": self.cpu_s,
            "trial_s": self.trial_s,
            "saved_cpu_s": float(self.metrics.get("saved_cpu_s", 0.0)),
            "saved_trial_s": float(self.metrics.get("saved_train_time_s", 0.0)),
        }

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["compute"] = self.compute()
        return out


def best_trial(trials: list[TrialRecord], objectives: list[Objective]) -> TrialRecord | None:
    """The trial that is best by the first objective, then the second, … (lexicographic order).

    A trial missing the primary objective is never best; a missing later objective ranks last in that place.
    """

    def key(trial: TrialRecord) -> tuple[float, ...]:
        return tuple(
            (trial.metrics[o.metric] if o.mode == "min" else -trial.metrics[o.metric])
            if o.metric in trial.metrics
            else float("inf")
            for o in objectives
        )

    candidates = [t for t in trials if objectives[0].metric in t.metrics]
    return min(candidates, key=key) if candidates else None


def pareto_front(records: list[TrialRecord], objectives: list[Objective]) -> list[TrialRecord]:
    """Non-dominated trials over all objectives (records missing an objective value are ignored)."""
    candidates = [r for r in records if all(o.metric in r.metrics for o in objectives)]

    def dominates(a: TrialRecord, b: TrialRecord) -> bool:
        not_worse = all(not o.better(b.metrics[o.metric], a.metrics[o.metric]) for o in objectives)
        strictly = any(o.better(a.metrics[o.metric], b.metrics[o.metric]) for o in objectives)
        return not_worse and strictly

    return [r for r in candidates if not any(dominates(o, r) for o in candidates if o is not r)]


def compute_totals(records: list[TrialRecord]) -> dict[str, float]:
    """Compute spent, estimated compute saved by stopping, and the counterfactual full-search cost."""
    spent_cpu = sum(r.cpu_s for r in records)
    spent_trial = sum(r.trial_s for r in records)
    saved_cpu = sum(r.compute()["saved_cpu_s"] for r in records)
    saved_trial = sum(r.compute()["saved_trial_s"] for r in records)
    return {
        "cpu_s": spent_cpu,
        "trial_s": spent_trial,
        "saved_cpu_s_est": saved_cpu,
        "saved_trial_s_est": saved_trial,
        "counterfactual_cpu_s": spent_cpu + saved_cpu,
        "counterfactual_trial_s": spent_trial + saved_trial,
        "savings_factor_est": (spent_cpu + saved_cpu) / spent_cpu if spent_cpu > 0 else 1.0,
    }


def contention_totals(records: list[TrialRecord]) -> dict[str, float]:
    """What the trials received from the machine (see :mod:`perftune.measure.contention`): their wall time, the
    time they waited for a CPU other processes held (left out of ``train_time_s``), and the machine's load over
    them, weighted by each trial's wall time. Empty for trials measured by a perftune that did not record it."""
    measured = [r for r in records if "wall_time_s" in r.metrics]
    wall = sum(r.metrics["wall_time_s"] for r in measured)
    if not measured or wall <= 0:
        return {}
    out = {"trials": float(len(measured)), "wall_time_s": wall,
           "cpu_wait_s": sum(r.metrics.get("cpu_wait_s", 0.0) for r in measured)}  # fmt: skip
    out["cpu_wait_share"] = out["cpu_wait_s"] / wall
    for key in ("runnable_per_core", "other_cpu_share", "steal_share"):
        known = [r for r in measured if key in r.metrics]
        weight = sum(r.metrics["wall_time_s"] for r in known)
        if known and weight > 0:
            out[key] = sum(r.metrics[key] * r.metrics["wall_time_s"] for r in known) / weight
    return out


def contention_line(totals: dict[str, float]) -> str:
    """How contended the machine was while the trials ran, and what train_time_s left out (empty if unknown)."""
    if not totals:
        return ""
    machine = f", {totals['runnable_per_core']:.2g} runnable tasks per core" if "runnable_per_core" in totals else ""
    return (
        f"contention: trials waited {totals['cpu_wait_share']:.0%} of their {totals['wall_time_s']:.1f} s wall time "
        f"for a CPU held by other processes{machine}; train_time_s leaves that wait out"
    )


@dataclass
class GroupResult:
    """All trials of one dataset × model family."""

    dataset: str
    model: str
    task: str
    objectives: list[Objective]
    trials: list[TrialRecord]
    dataset_card: dict[str, Any] = field(default_factory=dict)
    wall_s: float = 0.0
    predictors: dict[str, dict[str, float]] = field(default_factory=dict)  # metric → cross-validated error

    @property
    def feasible(self) -> list[TrialRecord]:
        return [t for t in self.trials if t.feasible]

    @property
    def best(self) -> TrialRecord | None:
        """Best feasible trial by the primary objective (ties broken by the next objectives)."""
        return best_trial(self.feasible, self.objectives)

    @property
    def pareto(self) -> list[TrialRecord]:
        return pareto_front(self.feasible, self.objectives)

    def counts(self) -> dict[str, int]:
        counts = {state.value: 0 for state in TrialState}
        for trial in self.trials:
            counts[trial.status] = counts.get(trial.status, 0) + 1
        counts["feasible"] = len(self.feasible)
        return counts

    def to_dict(self) -> dict[str, Any]:
        best = self.best
        return {
            "dataset": self.dataset,
            "model": self.model,
            "task": self.task,
            "objectives": [asdict(o) for o in self.objectives],
            "n_trials": len(self.trials),
            "counts": self.counts(),
            "best_feasible": best.to_dict() if best else None,
            "pareto_front": [t.trial_id for t in self.pareto],
            "compute": compute_totals(self.trials),
            "dataset_card": self.dataset_card,
            "wall_s": self.wall_s,
            "predictors": self.predictors,
        }

    @classmethod
    def from_dict(cls, raw: dict[str, Any], trials: list[TrialRecord]) -> GroupResult:
        return cls(
            raw["dataset"],
            raw["model"],
            raw["task"],
            [Objective(**o) for o in raw["objectives"]],
            trials,
            raw.get("dataset_card", {}),
            raw.get("wall_s", 0.0),
            raw.get("predictors", {}),
        )


@dataclass
class StudyResult:
    """Everything a study produced; ``perftune.tune(spec)`` returns one."""

    name: str
    spec_fingerprint: str
    groups: list[GroupResult]
    constraints: list[str]
    policy: str
    out_dir: Path
    tracking: dict[str, Any] = field(default_factory=dict)
    skipped: list[dict[str, str]] = field(default_factory=list)
    wall_time_s: float = 0.0
    started_at: str = ""
    data_dir: str | None = None  # where the datasets were read from (refits read the same copies)

    @property
    def trials(self) -> list[TrialRecord]:
        return [t for g in self.groups for t in g.trials]

    def group(self, dataset: str, model: str) -> GroupResult:
        return next(g for g in self.groups if g.dataset == dataset and g.model == model)

    def compute(self) -> dict[str, float]:
        return {**compute_totals(self.trials), "wall_s": self.wall_time_s}

    def to_summary(self) -> dict[str, Any]:
        from perftune import __version__

        return {
            "schema_version": SUMMARY_SCHEMA_VERSION,
            "perftune_version": __version__,
            "study": self.name,
            "spec_fingerprint": self.spec_fingerprint,
            "started_at": self.started_at,
            "data_dir": self.data_dir,
            "wall_time_s": self.wall_time_s,
            "policy": self.policy,
            "constraints": self.constraints,
            "tracking": self.tracking,
            "compute": self.compute(),
            "contention": contention_totals(self.trials),
            "groups": [g.to_dict() for g in self.groups],
            "skipped": self.skipped,
            "trials": [t.to_dict() | {"dataset": t.dataset, "model": t.model} for t in self.trials],
        }

    def write_summary(self, path: Path | None = None) -> Path:
        path = path or self.out_dir / "summary.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        _write_json_atomic(path, self.to_summary())
        return path


def _write_json_atomic(path: Path, payload: Any) -> None:
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(payload, indent=2, default=str))
    tmp.replace(path)  # atomic: a reader never sees half a file


def add_to_summary(out: Path, section: str, payload: Any) -> None:
    """Add (or replace) one section of a finished study's summary.json, e.g. ``effects`` or ``savings``."""
    path = Path(out) / "summary.json"
    summary = json.loads(path.read_text())
    summary[section] = payload
    _write_json_atomic(path, summary)


_RECORD_FIELDS = (
    "trial_id",
    "dataset",
    "model",
    "params",
    "status",
    "metrics",
    "stop_reason",
    "error",
    "mlflow_run_id",
    "feasible",
    "violations",
    "worker",
)


def load_study(out: Path | str) -> StudyResult:
    """Read a finished study back from its output folder (its ``summary.json``)."""
    from perftune.errors import StudyStateError

    out = Path(out)
    path = out / "summary.json"
    if not path.is_file():
        raise StudyStateError(f"{out} holds no finished study (no summary.json); run `perftune tune SPEC --out {out}`")
    try:
        raw = json.loads(path.read_text())
        records = [TrialRecord(**{k: t.get(k) for k in _RECORD_FIELDS}) for t in raw["trials"]]
        groups = [
            GroupResult.from_dict(g, [r for r in records if (r.dataset, r.model) == (g["dataset"], g["model"])])
            for g in raw["groups"]
        ]
        return StudyResult(
            name=raw["study"],
            spec_fingerprint=raw["spec_fingerprint"],
            groups=groups,
            constraints=raw["constraints"],
            policy=raw["policy"],
            out_dir=out,
            tracking=raw.get("tracking", {}),
            skipped=raw.get("skipped", []),
            wall_time_s=raw.get("wall_time_s", 0.0),
            started_at=raw.get("started_at", ""),
            data_dir=raw.get("data_dir"),
        )
    except (ValueError, KeyError, TypeError) as exc:
        raise StudyStateError(f"{path} is not a perftune summary ({type(exc).__name__}: {exc})") from None


def load_histories(out: Path | str) -> dict[str, list[dict[str, float]]]:
    """trial id → its report windows, from a study folder (empty for trials whose windows were not kept)."""
    histories: dict[str, list[dict[str, float]]] = {}
    for path in sorted((Path(out) / "groups").glob("*.history.json")):
        histories.update(json.loads(path.read_text()))
    return histories


class Progress(Protocol):
    """What the CLI's live display (or any observer) is told while a study runs."""

    def group_started(self, dataset: str, model: str, planned: int) -> None: ...

    def trial_update(self, snapshot: dict[str, Any]) -> None: ...

    def group_finished(self, group: GroupResult) -> None: ...


class NoProgress:
    """The observer of a study nobody watches."""

    def group_started(self, dataset: str, model: str, planned: int) -> None:
        pass

    def trial_update(self, snapshot: dict[str, Any]) -> None:
        pass

    def group_finished(self, group: GroupResult) -> None:
        pass
