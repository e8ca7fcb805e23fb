"""RQ1: how do hyperparameters affect system (and ML) metrics?

For each metric, the importance of each hyperparameter (Optuna's fANOVA or PED-ANOVA evaluator over the
finished trials) and its marginal effect: the metric's median and interquartile range at each value of the
hyperparameter, over all values of the others.

Which trials count: metrics that accumulate over a whole run (``train_time_s``, ``cpu_s``) and end-of-trial
metrics only come from completed trials (a stopped trial's value is partial); per-step rates and levels
(step time, CPU %, memory) come from every trial that measured them.
"""

from __future__ import annotations

import contextlib
import math
import os
import warnings
from concurrent.futures import Executor
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from perftune.errors import UsageError
from perftune.measure.metrics import get_metric
from perftune.parallel import InlineExecutor, local_pool
from perftune.results import TrialRecord, TrialState

SYSTEM_METRICS = (
    "step_time_ms_mean",
    "train_time_s",
    "cpu_s",
    "cpu_percent",
    "memory_mb_peak",
    "latency_ms_p95",
    "throughput_rps",
    "model_size_bytes",
)
ML_METRICS = ("val_loss", "accuracy", "rmse")
EVALUATORS = ("fanova", "ped_anova")


def check_evaluator(evaluator: str) -> None:
    """Raise a one-line :class:`UsageError` for an unknown importance evaluator."""
    if evaluator not in EVALUATORS:
        raise UsageError(f"--evaluator {evaluator!r} is unknown; use one of {', '.join(EVALUATORS)}")


MAX_VALUES = 12  # hyperparameters with more distinct values (random / TPE search) are binned
BINS = 6


@dataclass
class Effect:
    """The metric at each value (or bin) of one hyperparameter."""

    param: str
    values: list[Any]
    median: list[float]
    q25: list[float]
    q75: list[float]
    count: list[int]


@dataclass
class MetricEffects:
    """Importance of every hyperparameter for one metric, and its marginal effects."""

    metric: str
    n_trials: int
    importance: dict[str, float]
    effects: list[Effect] = field(default_factory=list)
    spread_rel: float = 0.0  # (max − min) / median of the metric: importance shares of a flat metric mean little

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> MetricEffects:
        """Read back ``dataclasses.asdict`` of a MetricEffects (``effects.json``, the report's cache)."""
        effects = [Effect(**e) for e in raw.get("effects", [])]
        return cls(raw["metric"], raw["n_trials"], raw["importance"], effects, raw.get("spread_rel", 0.0))

    @property
    def ranking(self) -> list[str]:
        return sorted(self.importance, key=self.importance.get, reverse=True)  # type: ignore[arg-type]


def trials_for(metric: str, trials: list[TrialRecord]) -> list[TrialRecord]:
    """The trials whose value of ``metric`` is a fair measurement (see the module docstring)."""
    info = get_metric(metric)
    partial_when_stopped = info is None or info.phase == "final" or info.growth == "cumulative"
    eligible = [t for t in trials if t.status != TrialState.FAILED and _finite(t.metrics.get(metric))]
    return [t for t in eligible if t.status == TrialState.COMPLETED] if partial_when_stopped else eligible


def varied_params(trials: list[TrialRecord]) -> list[str]:
    """Hyperparameters that take more than one value across the trials."""
    names = sorted({name for t in trials for name in t.params})
    return [n for n in names if len({repr(t.params.get(n)) for t in trials}) > 1]


def preload(evaluator: str = "fanova") -> None:
    """Import what :func:`importance` needs (Optuna's evaluators and scikit-learn's forests: a second and a half)
    ahead of forking workers that all need it."""
    check_evaluator(evaluator)
    import optuna.importance  # noqa: F401


def importance(
    trials: list[TrialRecord], metric: str, params: list[str], evaluator: str = "fanova", seed: int = 0
) -> dict[str, float]:
    """Optuna's importance of each hyperparameter for ``metric`` (sums to 1; empty when it cannot be told)."""
    import optuna
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution
    from optuna.importance import FanovaImportanceEvaluator, PedAnovaImportanceEvaluator

    if len(trials) < 3 or not params:
        return {}
    values = [float(t.metrics[metric]) for t in trials]
    if max(values) - min(values) <= 1e-12 * max(abs(v) for v in values):
        return dict.fromkeys(params, 0.0)  # the metric does not vary: no hyperparameter matters
    distributions: dict[str, Any] = {}
    for name in params:
        values = [t.params[name] for t in trials]
        numeric = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values)
        if numeric:
            low, high = min(values), max(values)
            log = low > 0 and high / low >= 100
            if all(isinstance(v, int) for v in values):
                distributions[name] = IntDistribution(int(low), int(high), log=log)
            else:
                distributions[name] = FloatDistribution(float(low), float(high), log=log)
        else:
            distributions[name] = CategoricalDistribution(sorted({repr(v) for v in values}))
    direction = (get_metric(metric).direction if get_metric(metric) else "min") + "imize"
    verbosity = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # no "new study created" line per metric
    try:
        study = optuna.create_study(direction=direction)
    finally:
        optuna.logging.set_verbosity(verbosity)
    for trial in trials:
        params_of = {
            n: (trial.params[n] if not isinstance(distributions[n], CategoricalDistribution) else repr(trial.params[n]))
            for n in params
        }
        study.add_trial(
            optuna.trial.create_trial(params=params_of, distributions=distributions, value=float(trial.metrics[metric]))
        )
    if evaluator == "fanova":
        chosen: Any = FanovaImportanceEvaluator(seed=seed)
    elif evaluator == "ped_anova":
        chosen = PedAnovaImportanceEvaluator()
    else:
        raise ValueError(f"unknown importance evaluator {evaluator!r}; use one of {EVALUATORS}")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # experimental-feature warnings from Optuna
        result = optuna.importance.get_param_importances(study, evaluator=chosen, normalize=True)
    return {name: float(value) for name, value in result.items()}


def marginal(trials: list[TrialRecord], metric: str, param: str) -> Effect:
    """Median and interquartile range of ``metric`` at each value of ``param`` (quantile bins if many)."""
    pairs = [(t.params[param], float(t.metrics[metric])) for t in trials if param in t.params]
    distinct = sorted({v for v, _ in pairs}, key=_sort_key)
    if len(distinct) > MAX_VALUES and all(isinstance(v, (int, float)) for v in distinct):
        edges = np.quantile([v for v, _ in pairs], np.linspace(0, 1, BINS + 1))
        labels = [
            float(math.sqrt(edges[i] * edges[i + 1])) if edges[i] > 0 else float((edges[i] + edges[i + 1]) / 2)
            for i in range(BINS)
        ]
        groups: list[list[float]] = [[] for _ in range(BINS)]
        for value, y in pairs:
            index = min(int(np.searchsorted(edges, value, side="right")) - 1, BINS - 1)
            groups[max(index, 0)].append(y)
        keys: list[Any] = labels
    else:
        keys = distinct
        groups = [[y for v, y in pairs if v == key] for key in distinct]
    kept = [(k, g) for k, g in zip(keys, groups, strict=True) if g]
    return Effect(
        param=param,
        values=[k for k, _ in kept],
        median=[float(np.median(g)) for _, g in kept],
        q25=[float(np.percentile(g, 25)) for _, g in kept],
        q75=[float(np.percentile(g, 75)) for _, g in kept],
        count=[len(g) for _, g in kept],
    )


def analyze(
    trials: list[TrialRecord], metrics: tuple[str, ...] | None = None, evaluator: str = "fanova", seed: int = 0
) -> list[MetricEffects]:
    """Importance and marginal effects for every metric the trials measured."""
    return analyze_groups({"": trials}, metrics, evaluator, seed, pool=InlineExecutor())[""]


def analyze_groups(
    groups: dict[str, list[TrialRecord]],
    metrics: tuple[str, ...] | None = None,
    evaluator: str = "fanova",
    seed: int = 0,
    pool: Executor | None = None,
) -> dict[str, list[MetricEffects]]:
    """:func:`analyze` of several groups of trials (by key), with the same numbers.

    The importance fits take nearly all the time (fANOVA fits a random forest per metric), so they run in
    ``pool`` (default: :func:`perftune.parallel.local_pool`, one forked process per core).
    """
    metrics = metrics or SYSTEM_METRICS + ML_METRICS
    fits: dict[tuple[str, str], tuple[list[TrialRecord], list[str]]] = {}
    for key, trials in groups.items():
        for metric in metrics:
            used = trials_for(metric, trials)
            params = varied_params(used)
            if len(used) >= 3 and params:
                fits[(key, metric)] = (used, params)
    with (
        contextlib.nullcontext(pool)
        if pool is not None
        else local_pool(max(1, min(os.cpu_count() or 1, len(fits)))) as run
    ):
        rankings = {
            fit: run.submit(importance, used, fit[1], params, evaluator, seed) for fit, (used, params) in fits.items()
        }
        out: dict[str, list[MetricEffects]] = {key: [] for key in groups}
        for (key, metric), (used, params) in fits.items():
            values = np.array([float(t.metrics[metric]) for t in used])
            median = float(np.median(np.abs(values)))
            spread = float(values.max() - values.min()) / median if median > 0 else 0.0
            effects = [marginal(used, metric, p) for p in params]
            out[key].append(MetricEffects(metric, len(used), rankings[(key, metric)].result(), effects, spread))
        return out


def effects_digest(trials: list[TrialRecord], evaluator: str = "fanova", seed: int = 0) -> str:
    """What :func:`analyze` depends on, hashed: the same digest means the same effects (the report's cache)."""
    import hashlib
    import json

    payload = {
        "analysis": 1,  # bump when analyze() changes what it computes
        "evaluator": evaluator,
        "seed": seed,
        "trials": sorted([t.trial_id, t.status, t.params, t.metrics] for t in trials),
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value)


def _sort_key(value: Any) -> tuple[int, Any]:
    return (0, value) if isinstance(value, (int, float)) else (1, repr(value))
