"""Check a spec against the registries (metrics, model families, datasets) before anything runs.

Structural checks live in :mod:`perftune.spec`; here are the ones that need to know what exists. Every
error is a :class:`SpecError` naming the spec field and the fix.
"""

from __future__ import annotations

from dataclasses import dataclass

from perftune.data.sources import DEFAULT_SOURCE, Locations, get_source
from perftune.errors import DatasetError, SpecError, did_you_mean, field_name
from perftune.measure.metrics import get_metric, metric_names
from perftune.models.base import Trainer, get_family, validate_params
from perftune.results import Objective
from perftune.spec import DatasetSpec, Spec, Values
from perftune.tuning.budgets import Constraint
from perftune.tuning.space import resolve_space

# Used to check powers_of_two ... until n_samples before the data is loaded.
_PLACEHOLDER_ROWS = 2**20


@dataclass(frozen=True)
class StudyPlan:
    """A checked spec: the families to run and the constraints as objects."""

    spec: Spec
    families: dict[str, type[Trainer]]

    def constraints_for(self, task: str) -> tuple[Constraint, ...]:
        return tuple(Constraint(c.metric, c.op, c.bound) for c in self.spec.constraints if c.task in (None, task))

    def objectives_for(self, task: str) -> list[Objective]:
        out = []
        for objective in self.spec.objectives:
            name = objective.metric_for(task)
            assert name is not None  # checked by check_task
            metric = get_metric(name)
            out.append(Objective(name, objective.mode or (metric.direction if metric else "min")))
        return out


def _unknown_metric(name: str, where: str) -> SpecError:
    hint = did_you_mean(name, metric_names())
    return SpecError(f"{where}: unknown metric {name!r}{hint}; known: {', '.join(metric_names())}")


def check_metrics(spec: Spec) -> None:
    for i, objective in enumerate(spec.objectives):
        names = [objective.metric] if isinstance(objective.metric, str) else list(objective.metric.values())
        for name in names:
            if get_metric(name) is None:
                raise _unknown_metric(name, f"objectives[{i}].metric")
    for i, constraint in enumerate(spec.constraints):
        metric = get_metric(constraint.metric)
        if metric is None:
            raise _unknown_metric(constraint.metric, f"constraints[{i}].metric")
        if constraint.bound < 0:
            raise SpecError(
                f"constraints[{i}]: bound {constraint.bound:g} is negative, but {constraint.metric} "
                f"({metric.description}) is never negative; give a bound >= 0"
            )
        if constraint.task is not None and constraint.task not in metric.tasks:
            raise SpecError(f"constraints[{i}]: {constraint.metric} does not exist for {constraint.task}")
    scheduler = spec.search.scheduler
    if scheduler is not None:
        names = [scheduler.metric] if isinstance(scheduler.metric, str) else list(scheduler.metric.values())
        for name in names:
            if get_metric(name) is None:
                raise _unknown_metric(name, "search.scheduler.metric")


def check_algorithms(spec: Spec) -> None:
    """The search algorithm and the budget policy must be registered ones (both are plug-in points)."""
    from perftune.tuning.budgets import get_policy
    from perftune.tuning.search import get_searcher

    get_searcher(spec.search.algorithm)
    get_policy(spec.early_stopping.policy)


def check_task(spec: Spec, task: str, dataset: str) -> None:
    """Every objective and constraint must make sense for a dataset of this task."""
    for i, objective in enumerate(spec.objectives):
        name = objective.metric_for(task)
        if name is None:
            raise SpecError(
                f"objectives[{i}].metric has no entry for {task} (dataset {dataset!r}); add '{task}: <metric>'"
            )
        metric = get_metric(name)
        if metric is not None and task not in metric.tasks:
            other = "rmse" if task == "regression" else "accuracy"
            raise SpecError(
                f"objectives[{i}]: {name} does not exist for {task} dataset {dataset!r}; use a "
                f"task-independent metric (val_loss) or {{{name_task(metric.tasks)}: {name}, {task}: {other}}}"
            )
    for i, constraint in enumerate(spec.constraints):
        metric = get_metric(constraint.metric)
        if constraint.task is None and metric is not None and task not in metric.tasks:
            raise SpecError(
                f"constraints[{i}]: {constraint.metric} does not exist for {task} dataset {dataset!r}; "
                f"add 'task: {name_task(metric.tasks)}' to the constraint to apply it to those datasets only"
            )
    scheduler = spec.search.scheduler
    if scheduler is not None:
        name = scheduler.metric_for(task)
        metric = get_metric(name) if name else None
        if metric is None or task not in metric.tasks:
            raise SpecError(
                f"search.scheduler.metric: no metric for {task} dataset {dataset!r}; "
                "use val_loss or a {classification: …, regression: …} mapping"
            )


def name_task(tasks: frozenset[str]) -> str:
    return next(iter(sorted(tasks)))


def check_space(spec: Spec, families: dict[str, type[Trainer]]) -> None:
    """Every value of every hyperparameter must be valid for every family."""
    try:
        space = resolve_space(spec.search.space, _PLACEHOLDER_ROWS)
    except ValueError as exc:
        raise SpecError(f"search.space: {exc}") from None
    base = {name: (d.values[0] if isinstance(d, Values) else d.low) for name, d in space.items()}
    for family in families.values():
        allowed = family.Params.model_fields
        for name in space:
            if name not in allowed:
                raise SpecError(
                    f"search.space.{field_name(name)}: {family.name} has no hyperparameter {name!r}"
                    f"{did_you_mean(name, allowed)}; it takes {', '.join(allowed)}"
                )
        missing = [name for name, info in allowed.items() if info.is_required() and name not in space]
        if missing:
            raise SpecError(f"search.space: {family.name} needs hyperparameter {missing[0]!r}; add it to the space")
    for family in families.values():
        for name, domain in space.items():
            candidates = domain.values if isinstance(domain, Values) else (domain.low, domain.high)
            for value in candidates:
                try:
                    validate_params(family, {**base, name: value})
                except SpecError as exc:
                    raise SpecError(f"search.space.{field_name(name)}: {exc}") from None


def check_dataset(spec: DatasetSpec, index: int, where: Locations) -> str | None:
    """Fail early on an unknown dataset name or a missing file; return the task when known."""
    try:
        return get_source(spec.source or DEFAULT_SOURCE).check(spec, where)
    except DatasetError as exc:
        raise DatasetError(f"datasets[{index}]: {exc}") from None


def make_plan(spec: Spec) -> StudyPlan:
    """Check the spec; return the plan or raise a one-line :class:`SpecError`."""
    families = {}
    for i, name in enumerate(spec.models):
        try:
            families[name] = get_family(name)
        except SpecError as exc:
            raise SpecError(f"models[{i}]: {exc}") from None
    check_metrics(spec)
    check_algorithms(spec)
    check_space(spec, families)
    for i, dataset in enumerate(spec.datasets):
        task = check_dataset(dataset, i, Locations.default(spec.workspace_path()))
        if task is not None:
            check_task(spec, task, dataset.name)
    return StudyPlan(spec=spec, families=families)
