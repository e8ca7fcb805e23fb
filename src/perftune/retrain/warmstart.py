"""The retraining study: the original spec's constraints, objectives, early stopping and gate, on the
retraining data, with a smaller search warm-started from the previous study's best region.

* **Budget**: ``retrain.search.budget`` × the trials the original study ran for the champion's dataset (at least
  one per family), spread evenly over the spec's families.
* **Warm start**: the previous study's best configurations on that dataset, all families ranked together
  (feasible first, then by the objectives, as ``perftune register`` ranks them), are tried first by every
  family. A grid becomes the grid of exactly those points (a narrowed grid); random, TPE and NSGA-II spend half
  the budget on the best points and then sample on (Optuna's TPE seeded with how they score on the new data).
  Without a warm start the same budget is spent by the original algorithm (a grid becomes a random search of
  that many points).
* Every family of the spec is searched again: on the new data another family may win (a robust loss that fit
  the old majority can lose to a squared loss that follows the new rows).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from perftune.results import TrialRecord, best_trial
from perftune.spec import DatasetSpec, Spec


@dataclass
class SearchPlan:
    spec: Spec
    trials: int
    original_trials: int
    points: list[dict[str, Any]]
    source: dict[str, Any] = field(default_factory=dict)  # the warm start's study and trials

    def describe(self) -> str:
        start = (
            f"warm-started from {len(self.points)} best trials of {self.source.get('study')}"
            if self.points
            else "no warm start"
        )
        return (
            f"{self.spec.search.algorithm} search of {self.trials} trials ({self.trials / self.original_trials:.0%} "
            f"of the original {self.original_trials}) over {', '.join(self.spec.models)}, {start}; the original "
            f"constraints ({', '.join(map(str, self.spec.constraints)) or 'none'}) and early stopping "
            f"({self.spec.early_stopping.policy})"
        )


def ranked(trials: list[TrialRecord], objectives: list[Any]) -> list[TrialRecord]:
    """Feasible trials best first (by :func:`best_trial`'s order), then the other completed ones."""
    out: list[TrialRecord] = []
    for pool in ([t for t in trials if t.feasible], [t for t in trials if not t.feasible]):
        pool = list(pool)
        while pool:
            best = best_trial(pool, objectives)
            if best is None:
                break
            out.append(best)
            pool.remove(best)
    return out


def plan_search(
    spec: Spec,
    original: list[TrialRecord],
    previous: list[TrialRecord],
    source: dict[str, Any],
    data_reference: str,
    target: str,
    task: str,
    name: str,
    tracking_uri: str,
    budget: float,
    warm_start: bool,
    check: bool = True,
    transform: Any = None,
) -> SearchPlan:
    """The retraining spec (``name``) for the spec's families on ``data_reference`` (a store: dataset).

    ``original``: the original study's trials of the champion's dataset (they set the budget);
    ``previous``: the champion's own study's trials of its dataset (they seed the search), from ``source``.
    ``check``: check the spec against the data store (off for a dry run, which stores nothing).
    ``transform``: the champion's features step for text or image data (its dataset entry's ``transform``).
    """
    from perftune.models.base import get_family
    from perftune.tuning.plan import make_plan
    from perftune.tuning.space import grid_size, resolve_space

    models = [m for m in spec.models if task in get_family(m).tasks]
    if original:
        original_trials = len(original)
    else:
        per_group = (
            grid_size(resolve_space(spec.search.space, 2**20)) * spec.search.num_samples
            if spec.search.algorithm == "grid" else spec.search.num_samples
        )  # fmt: skip
        original_trials = per_group * len(models)
    per_family = max(1, math.ceil(budget * original_trials / len(models)))
    points: list[dict[str, Any]] = []
    search = spec.search.model_copy(deep=True)
    if warm_start and previous:
        best = ranked(previous, make_plan_objectives(spec, task))
        seen: list[dict[str, Any]] = []
        chosen: list[str] = []
        for trial in best:
            point = {k: v for k, v in trial.params.items() if k in search.space}
            if point not in seen:
                seen.append(point)
                chosen.append(trial.trial_id)
        take = per_family if search.algorithm == "grid" else max(1, math.ceil(per_family / 2))  # others sample on
        points = seen[:take]
        source = {**source, "trials": chosen[: len(points)]}
    else:
        source = {}
    if search.algorithm == "grid":
        if points:
            search = search.model_copy(update={"points": points, "num_samples": 1})
            per_family = len(points)
        else:
            search = search.model_copy(update={"algorithm": "random", "num_samples": per_family, "points": []})
    else:
        search = search.model_copy(update={"points": points, "num_samples": max(per_family, len(points))})
    entry = DatasetSpec(name=data_reference, source="store", target=target, task=task, transform=transform)
    tracking = spec.tracking.model_copy(update={"uri": tracking_uri})
    retrain_spec = spec.model_copy(
        update={"name": name, "datasets": [entry], "models": models, "search": search, "tracking": tracking},
        deep=True,
    )
    retrain_spec = Spec.model_validate(retrain_spec.model_dump(mode="json"))  # validated like a user's spec
    if check:
        make_plan(retrain_spec)
    return SearchPlan(retrain_spec, per_family * len(models), original_trials, points, source)


def make_plan_objectives(spec: Spec, task: str) -> list[Any]:
    from perftune.tuning.plan import StudyPlan

    return StudyPlan(spec, {}).objectives_for(task)
