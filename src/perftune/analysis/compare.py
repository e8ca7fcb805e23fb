"""Two finished studies side by side: configuration, feasibility, compute and best results per group."""

from __future__ import annotations

from typing import Any

from perftune.results import GroupResult, StudyResult, TrialState


def _group_row(group: GroupResult | None) -> dict[str, Any]:
    if group is None:
        return {"trials": None, "feasible": None, "stopped": None, "cpu_s": None, "best": None, "best_params": None}
    counts = group.counts()
    best = group.best
    metric = group.objectives[0].metric
    return {
        "trials": len(group.trials),
        "feasible": counts["feasible"],
        "stopped": counts[TrialState.STOPPED_BUDGET] + counts[TrialState.STOPPED_EARLY],
        "cpu_s": sum(t.cpu_s for t in group.trials),
        "best": None if best is None else best.metrics[metric],
        "best_params": None if best is None else best.params,
        "metric": metric,
    }


def side_by_side(a: StudyResult, b: StudyResult) -> dict[str, Any]:
    """Study-level facts and one row per dataset × model present in either study."""
    keys = list(dict.fromkeys([(g.dataset, g.model) for g in a.groups] + [(g.dataset, g.model) for g in b.groups]))

    def find(study: StudyResult, key: tuple[str, str]) -> GroupResult | None:
        return next((g for g in study.groups if (g.dataset, g.model) == key), None)

    return {
        "studies": [
            {
                "name": s.name,
                "out": str(s.out_dir),
                "policy": s.policy,
                "constraints": s.constraints,
                "spec_fingerprint": s.spec_fingerprint[:12],
                "trials": len(s.trials),
                **s.compute(),
            }
            for s in (a, b)
        ],
        "groups": [
            {"dataset": key[0], "model": key[1], "a": _group_row(find(a, key)), "b": _group_row(find(b, key))}
            for key in keys
        ],
    }
