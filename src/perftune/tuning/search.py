"""Search algorithms (a plug-in point): grid and random natively, TPE and NSGA-II from Optuna through Ray
Tune's OptunaSearch, and ASHA from Ray Tune as an optional ML-metric scheduler."""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from perftune.errors import SpecError
from perftune.results import Objective, TrialState
from perftune.spec import SearchSpec, Values
from perftune.tuning.space import Resolved, grid_points, to_ray

log = logging.getLogger(__name__)


@dataclass
class SearchSetup:
    """How one dataset × model family is searched: a Ray Tune ``Searcher`` that suggests the varying
    parameters, the ``constants`` added to each suggestion, how many trials to ask it for, and an optional
    trial scheduler (ASHA). The study's run asks every group's searcher in turn (see
    :mod:`perftune.tuning.study_search`)."""

    searcher: Any
    num_samples: int
    expected_trials: int
    constants: dict[str, Any]
    scheduler: Any = None


def _optuna_search(sampler_factory: Callable[[int], Any]) -> Callable[..., Any]:
    def build(space: dict[str, Resolved], objectives: list[Objective], seed: int, points: list[dict]) -> Any:
        from ray.tune.search.optuna import OptunaSearch

        class _Search(OptunaSearch):
            """Trials without every objective (failed, stopped by a budget) count as failed for Optuna."""

            def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
                if (
                    result is None
                    or result.get("trial_status") != TrialState.COMPLETED
                    or any(o.metric not in result for o in objectives)
                ):
                    super().on_trial_complete(trial_id, None, error=True)
                else:
                    super().on_trial_complete(trial_id, result, error)

        metrics = [o.metric for o in objectives]
        modes = [o.mode for o in objectives]
        single = len(objectives) == 1
        return _Search(
            metric=metrics[0] if single else metrics,
            mode=modes[0] if single else modes,
            sampler=sampler_factory(seed),
            points_to_evaluate=points or None,  # evaluated first, then the sampler goes on from what they scored
        )

    return build


def _tpe(seed: int) -> Any:
    from perftune.tuning.samplers import TPESampler

    return TPESampler(seed=seed)


def _nsga2(seed: int) -> Any:
    from perftune.tuning.samplers import NSGAIISampler  # Optuna's holds a lock that cannot be pickled

    return NSGAIISampler(seed=seed)


def _random(space: dict[str, Resolved], objectives: list[Objective], seed: int, points: list[dict]) -> Any:
    from perftune.tuning.study_search import SampleSearch

    return SampleSearch(to_ray(space, "random"), seed, points)


# The search algorithms (a plug-in point): name → builder(space, objectives, seed, points) of a Ray Tune
# searcher; None for the grid, whose configurations are listed in advance. Add one with register_searcher.
_SEARCHERS: dict[str, Callable[..., Any] | None] = {"grid": None}


def register_searcher(name: str, build: Callable[..., Any]) -> None:
    """Make a search algorithm available as ``search.algorithm: NAME``: ``build(space, objectives, seed, points)``
    returns a Ray Tune ``Searcher`` that tries ``points`` first (see :func:`_optuna_search` for an example).
    The study gives it its Ray Tune search space through ``set_search_properties`` (unless it already has one)
    and asks it for ``search.num_samples`` trials; the parameters with one value are added to what it suggests."""
    _SEARCHERS[name] = build


def get_searcher(name: str) -> Callable[..., Any] | None:
    if name not in _SEARCHERS:
        from perftune.errors import did_you_mean

        raise SpecError(
            f"search.algorithm: unknown algorithm {name!r}{did_you_mean(name, _SEARCHERS)}; "
            f"known: {', '.join(searcher_names())}"
        )
    return _SEARCHERS[name]


def searcher_names() -> list[str]:
    return sorted(_SEARCHERS)


register_searcher("random", _random)
register_searcher("tpe", _optuna_search(_tpe))
register_searcher("nsga2", _optuna_search(_nsga2))


def _asha(search: SearchSpec, space: dict[str, Resolved], task: str) -> Any:
    from ray.tune.schedulers import ASHAScheduler

    from perftune.measure.metrics import get_metric

    scheduler = search.scheduler
    assert scheduler is not None
    metric = scheduler.metric_for(task)
    info = get_metric(metric or "")
    epochs = space.get("epochs")
    max_epochs = max(epochs.values) if isinstance(epochs, Values) else (epochs.high if epochs else 5)
    return ASHAScheduler(
        time_attr="epoch",
        metric=metric,
        mode=scheduler.mode or (info.direction if info else "min"),
        max_t=max(math.ceil(max_epochs), 1),
        grace_period=scheduler.grace_period,
        reduction_factor=scheduler.reduction_factor,
    )


def fitting_points(points: list[dict[str, Any]], space: dict[str, Resolved]) -> list[dict[str, Any]]:
    """The points as the searchers need them: without the parameters that have a single value (Ray makes them
    constants, which Optuna's warm start refuses), and only the points whose values lie in the space as resolved
    for this dataset (e.g. a batch size above its rows is dropped, with a warning)."""
    out = []
    for point in points:
        kept = {k: v for k, v in point.items() if not (isinstance(space[k], Values) and len(space[k].values) == 1)}
        outside = [k for k, v in kept.items() if not _inside(v, space[k])]
        if outside:
            log.warning("search.points: %s lies outside the space (%s); skipped", point, ", ".join(outside))
            continue
        if kept not in out:
            out.append(kept)
    return out


def _inside(value: Any, domain: Resolved) -> bool:
    if isinstance(domain, Values):
        return value in domain.values
    try:
        return domain.low <= float(value) <= domain.high
    except (TypeError, ValueError):
        return False


def build_search(
    search: SearchSpec, space: dict[str, Resolved], objectives: list[Objective], task: str, seed: int
) -> SearchSetup:
    """The search of one group. ``search.points`` are tried first (a warm start); a grid with points is exactly
    those points (a narrowed grid), so each must set every parameter with more than one value."""
    from perftune.tuning.study_search import ListSearch

    algorithm, points = search.algorithm, fitting_points(search.points, space)
    if search.points and not points:
        raise SpecError("search.points: none of the points lies in the search space; fix or remove them")
    constants = {k: d.values[0] for k, d in space.items() if isinstance(d, Values) and len(d.values) == 1}
    scheduler = _asha(search, space, task) if search.scheduler else None
    if algorithm == "grid":
        varying = [name for name in space if name not in constants]
        for i, point in enumerate(points):
            missing = [name for name in varying if name not in point]
            if missing:
                raise SpecError(f"search.points[{i}] does not set {', '.join(missing)}; a grid of points needs them")
        configs = (points or grid_points(space)) * search.num_samples
        return SearchSetup(ListSearch(configs), len(configs), len(configs), constants, scheduler)
    factory = get_searcher(algorithm)
    assert factory is not None
    samples = max(search.num_samples, len(points))
    searcher = factory(space, objectives, seed, points)
    searcher.set_search_properties(None, None, to_ray(space, algorithm))
    return SearchSetup(searcher, samples, samples, constants, scheduler)
