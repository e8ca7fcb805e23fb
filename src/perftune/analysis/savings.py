"""RQ2: how much compute does early stopping on system criteria save, and what does it cost in quality?

Two runs of the same search space are compared group by group (dataset × model): the *full* run (policy
``none``) and the *policy* run. Trials are matched by their hyperparameters, which is exact for grid search
(random and model-based searches sample different configurations, so only common ones can be matched).

* savings factor = CPU-seconds of the full run / CPU-seconds of the policy run (also for trial-seconds and
  the group's wall time);
* regret = how much worse the policy run's best feasible objective is than the full run's (0 when the same
  configuration wins), absolute and relative;
* false stops = trials the policy stopped although, in the full run, the same configuration completed and
  met every constraint.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from perftune.errors import UsageError
from perftune.results import GroupResult, StudyResult, TrialRecord, TrialState, add_to_summary, load_study
from perftune.spec import Spec


def config_key(trial: TrialRecord) -> str:
    return json.dumps(trial.params, sort_keys=True, default=str)


@dataclass
class GroupSavings:
    """RQ2 numbers for one dataset × model."""

    dataset: str
    model: str
    objective: str
    mode: str
    trials: int
    stopped: int
    cpu_s_full: float
    cpu_s_policy: float
    trial_s_full: float
    trial_s_policy: float
    wall_s_full: float
    wall_s_policy: float
    best_full: dict[str, Any] | None
    best_policy: dict[str, Any] | None
    same_best: bool
    regret: float | None
    regret_rel: float | None
    false_stops: int
    false_stop_trials: list[str] = field(default_factory=list)
    matched: int = 0

    @property
    def savings_factor(self) -> float:
        return self.cpu_s_full / self.cpu_s_policy if self.cpu_s_policy > 0 else float("inf")

    @property
    def wall_savings_factor(self) -> float:
        return self.wall_s_full / self.wall_s_policy if self.wall_s_policy > 0 else float("inf")

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "savings_factor": self.savings_factor, "wall_savings_factor": self.wall_savings_factor}

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> GroupSavings:
        return cls(**{f.name: raw[f.name] for f in fields(cls) if f.name in raw})

    def row(self) -> list[Any]:
        """This group's cells of the RQ2 table (:data:`COLUMNS`); "" where there is no value."""
        return [
            self.dataset,
            self.model,
            self.trials,
            self.stopped,
            self.cpu_s_full,
            self.cpu_s_policy,
            self.wall_s_full,
            self.wall_s_policy,
            self.savings_factor,
            self.wall_savings_factor,
            "yes" if self.same_best else "no",
            "" if self.regret is None else self.regret,
            "" if self.regret_rel is None else self.regret_rel,
            self.false_stops,
        ]


# The RQ2 table, one definition for the console, the report and the benchmark.
COLUMNS = (
    "dataset",
    "model",
    "trials",
    "stopped",
    "CPU-s full",
    "CPU-s policy",
    "wall-s full",
    "wall-s policy",
    "savings ×",
    "wall ×",
    "same best",
    "regret",
    "regret (rel.)",
    "false stops",
)


def _best(group: GroupResult) -> dict[str, Any] | None:
    best = group.best
    if best is None:
        return None
    metric = group.objectives[0].metric
    return {
        "trial_id": best.trial_id,
        "params": best.params,
        "value": best.metrics[metric],
        "mlflow_run_id": best.mlflow_run_id,
    }


def compare_groups(full: GroupResult, policy: GroupResult) -> GroupSavings:
    """RQ2 for one group: ``full`` ran with policy none, ``policy`` with early stopping."""
    objective = full.objectives[0]
    by_config = {config_key(t): t for t in full.trials}
    matched = [(t, by_config[config_key(t)]) for t in policy.trials if config_key(t) in by_config]
    false_stops = [p.trial_id for p, f in matched if TrialState(p.status).stopped and f.feasible]
    best_full, best_policy = _best(full), _best(policy)
    regret = regret_rel = None
    if best_full is not None and best_policy is not None:
        gap = best_policy["value"] - best_full["value"]
        worse_by = gap if objective.mode == "min" else -gap
        regret = worse_by if worse_by > 0 else 0.0  # not max(): max(-0.0, 0.0) is -0.0
        regret_rel = regret / abs(best_full["value"]) if best_full["value"] else None
    same = best_full is not None and best_policy is not None and best_full["params"] == best_policy["params"]
    return GroupSavings(
        dataset=full.dataset,
        model=full.model,
        objective=objective.metric,
        mode=objective.mode,
        trials=len(policy.trials),
        stopped=sum(TrialState(t.status).stopped for t in policy.trials),
        cpu_s_full=sum(t.cpu_s for t in full.trials),
        cpu_s_policy=sum(t.cpu_s for t in policy.trials),
        trial_s_full=sum(t.trial_s for t in full.trials),
        trial_s_policy=sum(t.trial_s for t in policy.trials),
        wall_s_full=full.wall_s,
        wall_s_policy=policy.wall_s,
        best_full=best_full,
        best_policy=best_policy,
        same_best=same,
        regret=regret,
        regret_rel=regret_rel,
        false_stops=len(false_stops),
        false_stop_trials=false_stops,
        matched=len(matched),
    )


@dataclass
class SavingsReport:
    """RQ2 for a whole study: per group, and the totals."""

    full_run: str
    policy_run: str
    policy: str
    groups: list[GroupSavings]

    def totals(self) -> dict[str, float]:
        cpu_full = sum(g.cpu_s_full for g in self.groups)
        cpu_policy = sum(g.cpu_s_policy for g in self.groups)
        return {
            "cpu_s_full": cpu_full,
            "cpu_s_policy": cpu_policy,
            "savings_factor": cpu_full / cpu_policy if cpu_policy else float("inf"),
            "zero_regret_groups": sum(g.regret == 0 for g in self.groups),
            "false_stops": sum(g.false_stops for g in self.groups),
        }

    def headline(self) -> str:
        totals = self.totals()
        return (
            f"{totals['savings_factor']:.2f}× less CPU overall; zero regret in {totals['zero_regret_groups']} "
            f"of {len(self.groups)} groups; {totals['false_stops']} false stops"
        )

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> SavingsReport:
        """Read back :meth:`to_dict` (``savings.json``)."""
        return cls(
            raw["full_run"], raw["policy_run"], raw["policy"], [GroupSavings.from_dict(g) for g in raw["groups"]]
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "full_run": self.full_run,
            "policy_run": self.policy_run,
            "policy": self.policy,
            "groups": [g.to_dict() for g in self.groups],
            "totals": self.totals(),
        }


def compare_studies(full: StudyResult, policy: StudyResult) -> SavingsReport:
    """Match groups by dataset × model and compare each."""
    groups = []
    for group in policy.groups:
        counterpart = next((g for g in full.groups if (g.dataset, g.model) == (group.dataset, group.model)), None)
        if counterpart is not None:
            groups.append(compare_groups(counterpart, group))
    return SavingsReport(str(full.out_dir), str(policy.out_dir), policy.policy, groups)


def full_search_spec(spec: Spec) -> Spec:
    """The same study without any early stopping: the counterfactual full search."""
    full = spec.model_copy(deep=True)
    full.early_stopping.policy = "none"
    full.search.scheduler = None
    full.name = f"{spec.name}-full"
    return full


def find_study(folders: list[Path], fingerprint: str) -> Path | None:
    """A finished study with this spec fingerprint: one of ``folders`` itself or a study inside it (newest
    first)."""
    candidates = [f / "summary.json" for f in folders]
    for folder in folders:
        candidates += sorted(folder.glob("*/summary.json"), key=lambda p: p.stat().st_mtime, reverse=True)
    for summary in candidates:
        try:
            if summary.is_file() and json.loads(summary.read_text()).get("spec_fingerprint") == fingerprint:
                return summary.parent
        except (OSError, ValueError):
            continue
    return None


def run_savings(
    spec: Spec, *, out: Path | None = None, spec_path: str | None = None, progress: Any = None, rerun: bool = False
) -> SavingsReport:
    """Run (or reuse) the full search and the policy run of ``spec``; compare them; record the answer.

    The answer goes to ``<policy run>/savings.json``, into its ``summary.json`` and to its MLflow parent run.
    """
    from perftune.tuning.engine import STUDY_FILES, run_study

    if spec.early_stopping.policy == "none" and spec.search.scheduler is None:
        raise UsageError(
            "savings compares early stopping with a full search, but this spec stops nothing "
            "(early_stopping.policy: none and no scheduler); set policy: violation or projected"
        )
    workspace = spec.workspace_path()
    policy_out = Path(out) if out else workspace / "runs" / (spec.name or "study")
    runs: list[StudyResult] = []
    for variant, target in (
        (full_search_spec(spec), policy_out.with_name(f"{policy_out.name}-full")),
        (spec, policy_out),
    ):
        found = None if rerun else find_study([target, workspace / "runs"], variant.fingerprint())
        if found is not None:
            runs.append(load_study(found))
        elif not rerun and any((target / name).exists() for name in STUDY_FILES):
            raise UsageError(
                f"{target} holds a study that does not match this spec (or did not finish); "
                "run both studies again with --rerun (replacing it), or choose another --out"
            )
        else:
            runs.append(run_study(variant, out=target, spec_path=spec_path, progress=progress, overwrite=rerun))
    report = compare_studies(runs[0], runs[1])
    record_savings(runs[1], report)
    return report


def record_savings(study: StudyResult, report: SavingsReport) -> None:
    """savings.json next to the summary, a ``savings`` section in summary.json, metrics in MLflow."""
    from perftune.track.mlflow_tracker import log_study_analysis

    payload = report.to_dict()
    (study.out_dir / "savings.json").write_text(json.dumps(payload, indent=2, default=str))
    add_to_summary(study.out_dir, "savings", payload)
    metrics = {f"rq2.{k}": float(v) for k, v in report.totals().items()}
    for g in report.groups:
        prefix = f"rq2.{g.dataset}.{g.model}"
        metrics[f"{prefix}.savings_factor"] = g.savings_factor
        metrics[f"{prefix}.false_stops"] = float(g.false_stops)
        if g.regret is not None:
            metrics[f"{prefix}.regret"] = g.regret
    log_study_analysis(study.tracking, metrics, {"savings.json": payload})
