"""The study spec: YAML → pydantic models. The one place where defaults live.

This module checks *structure* (types, ranges, required fields). Checks that need the registries of
metrics, model families and datasets (``unknown metric``, ``unknown dataset``) are done when a study is
planned (:mod:`perftune.tuning.plan`), still before anything runs.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_serializer,
    field_validator,
    model_validator,
)

from perftune.errors import SpecError, did_you_mean, field_name
from perftune.settings import default_workspace
from perftune.track.uri import default_tracking_uri, normalize_tracking_uri

Task = Literal["classification", "regression"]
TASKS: tuple[str, ...] = ("classification", "regression")


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)


# --------------------------------------------------------------------------------------------------
# Search-space domains
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Values:
    """A finite list of values (grid-searchable)."""

    values: tuple[Any, ...]


@dataclass(frozen=True)
class PowersOfTwo:
    """2**start, 2**(start+1), … up to ``until`` (an int, or ``"n_samples"``: the training-fold size)."""

    start_exp: int
    until: int | Literal["n_samples"]


@dataclass(frozen=True)
class PowersOfTen:
    """10**start … 10**end (exponents inclusive)."""

    start_exp: int
    end_exp: int


@dataclass(frozen=True)
class Range:
    """A continuous (or integer) range for random / model-based search."""

    low: float
    high: float
    log: bool = False
    integer: bool = False


Domain = Values | PowersOfTwo | PowersOfTen | Range

_DOMAIN_FORMS = (
    "a constant, a list, {powers_of_two: {from: 1, until: n_samples}}, "
    "{powers_of_ten: {from: -4, to: -1}}, {uniform: [low, high]}, {loguniform: [low, high]} "
    "or {randint: [low, high]}"
)


def parse_domain(raw: Any) -> Domain:
    """Parse one search-space entry of the spec into a :data:`Domain`."""
    if isinstance(raw, list):
        if not raw:
            raise ValueError("empty list: give at least one value")
        return Values(tuple(raw))
    if not isinstance(raw, dict):
        return Values((raw,))
    if len(raw) != 1:
        raise ValueError(f"expected exactly one of the forms {_DOMAIN_FORMS}; got keys {sorted(raw)}")
    ((kind, arg),) = raw.items()
    if kind == "powers_of_two":
        if not isinstance(arg, dict) or "from" not in arg or "until" not in arg:
            raise ValueError("powers_of_two needs {from: <exponent>, until: <int or n_samples>}")
        until = arg["until"]
        if until != "n_samples" and not (isinstance(until, int) and until >= 1):
            raise ValueError(f"powers_of_two.until must be a positive int or 'n_samples', not {until!r}")
        start = _int(arg["from"], "powers_of_two.from")
        if start < 0:
            raise ValueError(f"powers_of_two.from is an exponent >= 0 (1 gives 2), not {start}")
        return PowersOfTwo(start, until)
    if kind == "powers_of_ten":
        if not isinstance(arg, dict) or "from" not in arg or "to" not in arg:
            raise ValueError("powers_of_ten needs {from: <exponent>, to: <exponent>}")
        start, end = _int(arg["from"], "powers_of_ten.from"), _int(arg["to"], "powers_of_ten.to")
        if end < start:
            raise ValueError(f"powers_of_ten: 'to' ({end}) must be >= 'from' ({start})")
        return PowersOfTen(start, end)
    if kind in ("uniform", "loguniform", "randint"):
        if not (isinstance(arg, list) and len(arg) == 2 and all(_is_number(v) for v in arg)):
            raise ValueError(f"{kind} needs [low, high], got {arg!r}")
        low, high = float(arg[0]), float(arg[1])
        if not low < high:
            raise ValueError(f"{kind}: low ({low:g}) must be below high ({high:g})")
        if kind == "loguniform" and low <= 0:
            raise ValueError(f"loguniform needs low > 0, got {low:g}")
        return Range(low, high, log=kind == "loguniform", integer=kind == "randint")
    raise ValueError(f"unknown form {kind!r}; use {_DOMAIN_FORMS}")


def domain_to_spec(domain: Domain) -> Any:
    """The spec syntax of a domain (the inverse of :func:`parse_domain`)."""
    if isinstance(domain, Values):
        return domain.values[0] if len(domain.values) == 1 else list(domain.values)
    if isinstance(domain, PowersOfTwo):
        return {"powers_of_two": {"from": domain.start_exp, "until": domain.until}}
    if isinstance(domain, PowersOfTen):
        return {"powers_of_ten": {"from": domain.start_exp, "to": domain.end_exp}}
    kind = "randint" if domain.integer else "loguniform" if domain.log else "uniform"
    return {kind: [domain.low, domain.high]}


def _int(value: Any, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{what} must be an integer, not {value!r}")
    return value


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


# --------------------------------------------------------------------------------------------------
# Spec sections
# --------------------------------------------------------------------------------------------------


class TransformSpec(_Model):
    """How text or image rows of the data store become features (cached; see :mod:`perftune.data.transforms`).

    ``tfidf`` / ``counts``: a bag of words (TF-IDF weights or word counts) over the training split's vocabulary:
    lower-cased words, English stop words dropped (``stop_words``), Porter-stemmed (``stem``), the
    ``max_features`` most frequent terms in at least ``min_df`` documents, n-grams up to ``ngram_max``.
    ``pixels``: each image's pixels scaled to 0…1, one feature per pixel (row-major).
    """

    kind: Literal["tfidf", "counts", "pixels"]
    max_features: int = Field(default=5000, ge=10)
    min_df: int = Field(default=2, ge=1)
    ngram_max: int = Field(default=1, ge=1, le=3)
    stem: bool = True
    stop_words: bool = True


class DatasetSpec(_Model):
    """One dataset. A plain string ``"diabetes"`` means ``{name: diabetes}`` (PMLB)."""

    name: str = Field(min_length=1)
    source: Literal["pmlb", "sklearn", "file", "store"] | None = None
    path: str | None = None
    target: str | None = None
    task: Task | None = None
    sample: int | None = Field(default=None, ge=10, description="random subsample of rows (seeded)")
    transform: TransformSpec | None = Field(default=None, description="text/image store datasets: their features")

    @model_validator(mode="before")
    @classmethod
    def _shorthand(cls, raw: Any) -> Any:
        if isinstance(raw, str):
            raw = {"name": raw}
        if isinstance(raw, dict):
            raw = dict(raw)
            name = raw.get("name")
            if isinstance(name, str) and ":" in name and raw.get("source") is None:
                prefix, rest = name.split(":", 1)
                raw["source"], raw["name"] = prefix, rest
            if raw.get("path") and not raw.get("name"):
                raw["name"] = Path(str(raw["path"])).stem
            if raw.get("path") and raw.get("source") is None:
                raw["source"] = "file"
        return raw

    @model_validator(mode="after")
    def _file_needs_path(self) -> DatasetSpec:
        if self.source == "file" and not self.path:
            raise ValueError(f"dataset {self.name!r}: source 'file' needs 'path' (a .csv or .parquet file)")
        return self


class ObjectiveSpec(_Model):
    """A metric to optimise. ``metric`` may depend on the task: ``{classification: accuracy, regression: rmse}``."""

    metric: str | dict[Task, str]
    mode: Literal["min", "max"] | None = Field(default=None, description="default: the metric's direction")

    @model_validator(mode="before")
    @classmethod
    def _shorthand(cls, raw: Any) -> Any:
        return {"metric": raw} if isinstance(raw, str) else raw

    def metric_for(self, task: str) -> str | None:
        if isinstance(self.metric, str):
            return self.metric
        return self.metric.get(task)  # type: ignore[call-overload]


_CONSTRAINT_RE = re.compile(r"^\s*([A-Za-z_][\w.]*)\s*(<=|>=)\s*(\S+)\s*$")


class ConstraintSpec(_Model):
    """``metric <= bound`` or ``metric >= bound``; written as a string or a mapping."""

    metric: str
    op: Literal["<=", ">="]
    bound: float
    task: Task | None = Field(default=None, description="apply only to datasets of this task")

    @model_validator(mode="before")
    @classmethod
    def _parse_string(cls, raw: Any) -> Any:
        if isinstance(raw, str):
            match = _CONSTRAINT_RE.match(raw)
            if not match:
                raise ValueError(f"cannot parse constraint {raw!r}; write it as 'metric <= bound' or 'metric >= bound'")
            metric, op, bound = match.groups()
            try:
                value = float(bound)
            except ValueError:
                raise ValueError(f"constraint {raw!r}: bound {bound!r} is not a number") from None
            return {"metric": metric, "op": op, "bound": value}
        return raw

    @field_validator("bound")
    @classmethod
    def _finite(cls, value: float) -> float:
        if not math.isfinite(value):
            raise ValueError("bound must be a finite number")
        return value

    def __str__(self) -> str:
        return f"{self.metric} {self.op} {self.bound:g}"

    def holds(self, value: float) -> bool:
        """Whether ``value`` of the metric is on the right side of the bound."""
        return value <= self.bound if self.op == "<=" else value >= self.bound


class PredictorSpec(_Model):
    """A learned predictor of final metric values, fitted on a finished study of the same search."""

    train_on: str = Field(description="output folder of a finished study (e.g. the full run of `perftune savings`)")
    observations: int = Field(default=2, ge=1, description="windows a trial must report before it is predicted")


class EarlyStoppingSpec(_Model):
    """Budget-driven early stopping (see DESIGN.md "Budgets and early stopping")."""

    policy: str = Field(
        default="projected", description="a registered budget policy: none, violation, projected, predicted, …"
    )
    min_observations: int = Field(default=2, ge=1, description="reports before `projected` may stop a trial")
    slack: float = Field(default=0.0, ge=0.0, description="`projected` stops when projection > bound × (1 + slack)")
    predictor: PredictorSpec | None = Field(default=None, description="needed by policy `predicted`")

    @model_validator(mode="after")
    def _predicted_needs_a_predictor(self) -> EarlyStoppingSpec:
        if self.policy == "predicted" and self.predictor is None:
            raise ValueError("policy 'predicted' needs predictor: {train_on: <folder of a finished study>}")
        return self


class SchedulerSpec(_Model):
    """An ML-metric scheduler from Ray Tune, combined with the budget stoppers."""

    type: Literal["asha"] = "asha"
    metric: str | dict[Task, str] = "val_loss"
    mode: Literal["min", "max"] | None = None
    grace_period: float = Field(default=1.0, gt=0, description="epochs before a trial can be stopped")
    reduction_factor: float = Field(default=3.0, gt=1)

    def metric_for(self, task: str) -> str | None:
        return self.metric if isinstance(self.metric, str) else self.metric.get(task)  # type: ignore[call-overload]


class SearchSpec(_Model):
    """How hyperparameters are searched."""

    algorithm: str = Field(default="grid", description="a registered search algorithm: grid, random, tpe, nsga2, …")
    num_samples: int = Field(default=1, ge=1, description="grid: repeats of the grid; others: number of trials")
    space: dict[str, Any]
    scheduler: SchedulerSpec | None = None
    points: list[dict[str, Any]] = Field(
        default_factory=list,
        description="configurations tried first (a warm start); with grid, the trials are exactly these points",
    )

    @field_validator("space")
    @classmethod
    def _parse_space(cls, raw: dict[str, Any]) -> dict[str, Domain]:
        if not raw:
            raise ValueError("the search space is empty; give at least one hyperparameter, e.g. batch_size: [32]")
        parsed: dict[str, Domain] = {}
        for name, value in raw.items():
            try:
                parsed[name] = (
                    value if isinstance(value, (Values, PowersOfTwo, PowersOfTen, Range)) else parse_domain(value)
                )
            except ValueError as exc:
                raise ValueError(f"{field_name(name)}: {exc}") from None
        return parsed

    @field_serializer("space")
    def _space_as_spec(self, space: dict[str, Domain]) -> dict[str, Any]:
        return {name: domain_to_spec(domain) for name, domain in space.items()}

    @model_validator(mode="after")
    def _points_name_the_space(self) -> SearchSpec:
        for i, point in enumerate(self.points):
            unknown = [field_name(k) for k in point if k not in self.space]
            if unknown:
                raise ValueError(
                    f"points[{i}] sets {', '.join(unknown)}, which the space does not have; "
                    f"its parameters are {', '.join(map(field_name, self.space))}"
                )
        return self

    @model_validator(mode="after")
    def _grid_is_discrete(self) -> SearchSpec:
        if self.algorithm == "grid":
            ranges = [name for name, dom in self.space.items() if isinstance(dom, Range)]
            if ranges:
                raise ValueError(
                    f"grid search needs discrete values but {', '.join(ranges)} is a range; give a list or "
                    "powers_of_two/powers_of_ten, or set search.algorithm to random, tpe or nsga2"
                )
        return self


class EvaluationSpec(_Model):
    """How trials are evaluated."""

    test_fraction: float = Field(default=0.3, gt=0, lt=1, description="held out; never seen during tuning")
    cv_folds: int = Field(default=1, ge=1, description="k-fold CV on the training part; 1 = one validation split")
    validation_fraction: float = Field(default=0.2, gt=0, lt=1, description="used when cv_folds is 1")
    eval_every: int = Field(default=100, ge=1, description="steps between metric reports")
    latency_rows: int = Field(default=200, ge=10, description="single-row predictions timed at trial end")
    throughput_batch: int = Field(default=1024, ge=1, description="rows per batch for throughput at trial end")


class ExecutionSpec(_Model):
    """Where and how trials run."""

    cpus_per_trial: float = Field(default=1.0, gt=0)
    max_concurrent: int | None = Field(default=None, ge=1, description="default: as many as the CPUs allow")
    address: str | None = Field(default=None, description="an existing Ray cluster, e.g. ray://head:10001")
    report_interval_s: float = Field(
        default=1.0, ge=0, description="least time between reports to Ray Tune (windows are batched)"
    )


class TrackingSpec(_Model):
    """MLflow tracking."""

    uri: str | None = Field(default=None, description="default: sqlite:///<workspace>/mlflow.db")
    experiment: str = "perftune"
    artifact_location: str | None = Field(
        default=None, description="for new experiments; default <workspace>/artifacts with a database store"
    )


class ColumnMonitorSpec(_Model):
    """How one column is tested for drift."""

    test: str | None = Field(default=None, description="a drift test by name (default: Evidently's choice)")
    threshold: float | None = Field(default=None, ge=0, allow_inf_nan=False, description="default: the test's")

    @field_validator("test")
    @classmethod
    def _known_test(cls, name: str | None) -> str | None:
        if name is not None:
            from perftune.monitor.stattests.base import get_test

            try:
                get_test(name)
            except SpecError as exc:
                raise ValueError(str(exc)) from None
        return name


class BaselineSpec(_Model):
    """Adaptive baselines: each monitored series against the rolling median ± k·MAD of its own history."""

    history: int = Field(default=30, ge=3, description="past checks the baseline is learned from")
    min_history: int = Field(default=8, ge=3, description="checks needed before a series can be flagged")
    k: float = Field(default=3.5, gt=0, allow_inf_nan=False, description="robust z-score beyond which a point is out")
    persistence: int = Field(default=3, ge=1, description="consecutive out points (same side) that flag a series")


class MonitorSpec(_Model):
    """``perftune monitor``: drift tests, thresholds and baselines (stored with each registered version)."""

    window: str = Field(default="10000", description="rows (10000) or a duration (30m, 1h, 2d) of scoring data")
    drift_share: float = Field(default=0.5, gt=0, le=1, description="share of drifted columns that is dataset drift")
    numeric_test: str | None = Field(default=None, description="test for every numeric column (default: by size)")
    categorical_test: str | None = Field(default=None, description="test for every categorical column")
    thresholds: dict[str, float] = Field(default_factory=dict, description="per test name: its threshold")
    columns: dict[str, ColumnMonitorSpec] = Field(default_factory=dict, description="per column: test, threshold")
    categorical: list[str] = Field(
        default_factory=list, description="columns to profile as categorical (default: ≤ 5 distinct values)"
    )
    numeric: list[str] = Field(default_factory=list, description="columns to profile as numeric whatever their values")
    max_missing_increase: float = Field(default=0.05, ge=0, le=1, description="missing rate above the reference's")
    max_out_of_range: float = Field(default=0.05, ge=0, le=1, description="share of values outside [min, max]")
    performance_margin: float = Field(
        default=0.05,
        ge=0,
        allow_inf_nan=False,
        description="drop of accuracy (rise of RMSE, relative) that is a finding",
    )
    min_rows: int = Field(default=100, ge=1, description="rows a window needs before drift is tested")
    baseline: BaselineSpec = Field(default_factory=BaselineSpec)

    @field_validator("numeric_test", "categorical_test")
    @classmethod
    def _known(cls, name: str | None) -> str | None:
        return ColumnMonitorSpec._known_test(name)

    @field_validator("thresholds")
    @classmethod
    def _known_thresholds(cls, thresholds: dict[str, float]) -> dict[str, float]:
        for name, value in thresholds.items():
            ColumnMonitorSpec._known_test(name)
            if not (isinstance(value, int | float) and math.isfinite(value) and value >= 0):
                raise ValueError(f"threshold of {name!r} must be a finite number ≥ 0, got {value!r}")
        return thresholds

    @field_validator("window")
    @classmethod
    def _window(cls, window: str) -> str:
        parse_window(window)
        return window


_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(s|m|h|d)\s*$")
_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_window(text: str | int) -> tuple[str, float]:
    """``("rows", n)`` or ``("seconds", s)`` from ``10000`` / ``"30m"`` / ``"1h"``; ValueError says the forms."""
    raw = str(text).strip()
    if raw.isdigit() and int(raw) > 0:
        return "rows", float(int(raw))
    match = _DURATION.match(raw)
    if match and float(match.group(1)) > 0:
        return "seconds", float(match.group(1)) * _SECONDS[match.group(2)]
    raise ValueError(f"window {text!r}: give a number of rows (10000) or a duration (90s, 30m, 1h, 2d)")


def _duration(value: str | None, what: str) -> str | None:
    """``value`` when it is a duration (90s, 30m, 1h, 7d); a ValueError saying so otherwise."""
    if value is None:
        return None
    try:
        kind = parse_window(value)[0]
    except ValueError:
        kind = "rows"
    if kind != "seconds":
        raise ValueError(f"{what} {value!r}: give a duration with a unit (90s, 30m, 1h, 7d)")
    return value


class RetrainTriggersSpec(_Model):
    """What starts a retraining (any of them; ``perftune retrain`` also runs on demand)."""

    dataset_drift: bool = Field(default=True, description="the monitor found dataset drift")
    performance_drop: float | None = Field(
        default=0.05, ge=0, allow_inf_nan=False,
        description="realized or estimated performance worse than the test split by this margin; null: never",
    )  # fmt: skip
    anomaly: bool = Field(default=False, description="a monitored series left its adaptive baseline")
    schedule: str | None = Field(default=None, description="also retrain this often (e.g. 7d); null: never")
    cooldown: str | None = Field(
        default="1h", description="least time between two retrainings of a model (a kept challenger is not "
        "retrained at every check); null: none"
    )  # fmt: skip

    @field_validator("schedule")
    @classmethod
    def _schedule(cls, value: str | None) -> str | None:
        return _duration(value, "schedule")

    @field_validator("cooldown")
    @classmethod
    def _cooldown(cls, value: str | None) -> str | None:
        return _duration(value, "cooldown")


class RetrainDataSpec(_Model):
    """The retraining data: the version's training data plus the labelled scoring data since it was deployed."""

    include_training: bool = Field(default=True, description="start from the version's training split")
    max_recent_rows: int = Field(default=100_000, ge=1, description="cap on labelled scoring rows (newest kept)")
    recency_half_life: str | None = Field(
        default="7d", description="weight of a scoring row halves with this age; null: equal weights"
    )
    holdout_fraction: float = Field(
        default=0.3, gt=0, lt=1, description="recent labelled rows held out for champion vs challenger"
    )

    @field_validator("recency_half_life")
    @classmethod
    def _half_life(cls, value: str | None) -> str | None:
        return _duration(value, "recency_half_life")


class RetrainSearchSpec(_Model):
    """The smaller search: the original constraints and early stopping, warm-started from the previous study."""

    budget: float = Field(default=0.3, gt=0, le=1, description="share of the original study's trials")
    warm_start: bool = Field(default=True, description="seed the search with the previous study's best trials")


class PromoteSpec(_Model):
    margin: float = Field(
        default=0.01, ge=0, allow_inf_nan=False,
        description="accuracy gain (absolute) or RMSE drop (relative) the challenger needs",
    )  # fmt: skip
    alpha: float = Field(default=0.05, gt=0, lt=1, description="level of the paired test (McNemar / bootstrap)")


class ProbationSpec(_Model):
    """After a promotion: roll back when the new champion degrades within the window."""

    window: str = Field(default="1h", description="how long a new champion is on probation")
    max_drop: float = Field(default=0.05, ge=0, allow_inf_nan=False, description="performance drop vs its test split")
    max_error_rate: float = Field(default=0.05, ge=0, le=1)
    max_latency_increase: float = Field(
        default=0.5, ge=0, allow_inf_nan=False, description="relative rise of served latency p95 over the previous"
    )

    @field_validator("window")
    @classmethod
    def _window(cls, value: str) -> str:
        return _duration(value, "probation window") or value


class RetrainSpec(_Model):
    """``perftune retrain`` and ``perftune monitor --retrain``: when and how a version is replaced."""

    triggers: RetrainTriggersSpec = Field(default_factory=RetrainTriggersSpec)
    data: RetrainDataSpec = Field(default_factory=RetrainDataSpec)
    search: RetrainSearchSpec = Field(default_factory=RetrainSearchSpec)
    promote: PromoteSpec = Field(default_factory=PromoteSpec)
    probation: ProbationSpec = Field(default_factory=ProbationSpec)


class Spec(_Model):
    """A whole study: what to tune, on which data, under which budgets."""

    name: str | None = Field(default=None, description="default: the spec file's name")
    seed: int = 0
    datasets: list[DatasetSpec] = Field(min_length=1)
    models: list[str] = Field(min_length=1)
    search: SearchSpec
    objectives: list[ObjectiveSpec] = Field(min_length=1)
    constraints: list[ConstraintSpec] = Field(default_factory=list)
    gate: list[ConstraintSpec] = Field(
        default_factory=list, description="thresholds a model must pass on held-out test data to be registered"
    )
    early_stopping: EarlyStoppingSpec = Field(default_factory=EarlyStoppingSpec)
    evaluation: EvaluationSpec = Field(default_factory=EvaluationSpec)
    execution: ExecutionSpec = Field(default_factory=ExecutionSpec)
    tracking: TrackingSpec = Field(default_factory=TrackingSpec)
    monitor: MonitorSpec = Field(default_factory=MonitorSpec)
    retrain: RetrainSpec = Field(default_factory=RetrainSpec)
    workspace: str | None = Field(default=None, description="default: $PERFTUNE_WORKSPACE or ./perftune-workspace")

    @field_validator("models")
    @classmethod
    def _unique_models(cls, models: list[str]) -> list[str]:
        if len(set(models)) != len(models):
            raise ValueError(f"models lists a family twice: {models}")
        return models

    # -- derived ----------------------------------------------------------------------------------
    def workspace_path(self) -> Path:
        return Path(self.workspace) if self.workspace else default_workspace()

    def tracking_uri(self) -> str:
        if self.tracking.uri:
            return normalize_tracking_uri(self.tracking.uri)
        return default_tracking_uri(self.workspace_path())

    def artifact_location(self) -> str | None:
        """Where a new experiment keeps artifacts: the workspace, unless a tracking server decides."""
        if self.tracking.artifact_location:
            return self.tracking.artifact_location
        if self.tracking_uri().startswith(("http://", "https://", "databricks")):
            return None  # the server's own default artifact store
        return (self.workspace_path().resolve() / "artifacts").as_uri()

    def fingerprint(self) -> str:
        """sha256 of everything that decides the study's results (not where it runs or is logged)."""
        payload = self.model_dump(
            mode="json", exclude={"name", "execution", "tracking", "workspace", "gate", "monitor", "retrain"}
        )
        if not payload["search"]["points"]:  # specs without points keep the fingerprint they had before points
            del payload["search"]["points"]
        for dataset in payload["datasets"]:  # … and datasets without a transform, the one they had before it
            if dataset.get("transform") is None:
                dataset.pop("transform", None)
        return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


# --------------------------------------------------------------------------------------------------
# Loading
# --------------------------------------------------------------------------------------------------


def load_spec(path: str | Path) -> Spec:
    """Read a YAML spec file. Relative dataset paths are resolved against the file's folder."""
    path = Path(path)
    if not path.is_file():
        raise SpecError(f"{path}: no such spec file")
    spec = parse_spec(path.read_text(encoding="utf-8"), origin=str(path))
    if spec.name is None:
        spec.name = path.stem
    for dataset in spec.datasets:
        if dataset.path and not Path(dataset.path).is_absolute():
            dataset.path = str((path.parent / dataset.path).resolve())
    return spec


def parse_spec(text: str, origin: str = "<spec>") -> Spec:
    """Parse YAML text into a :class:`Spec`; every problem becomes one :class:`SpecError` line."""
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise SpecError(f"{origin}: malformed YAML{where}: {problem}") from None
    if not isinstance(raw, dict):
        raise SpecError(f"{origin}: a spec is a YAML mapping with datasets, models, search and objectives")
    try:
        spec = Spec.model_validate(raw)
    except ValidationError as exc:
        raise SpecError(f"{origin}: " + "; ".join(_describe(err) for err in exc.errors())) from None
    if spec.name is None and origin != "<spec>":
        spec.name = Path(origin).stem
    return spec


def _describe(err: Any) -> str:
    loc = _loc(err["loc"])
    if err["type"] == "extra_forbidden":
        allowed = _fields_at(err["loc"][:-1])
        return f"{loc}: unknown field{did_you_mean(str(err['loc'][-1]), allowed)}; allowed: {', '.join(allowed)}"
    if err["type"] == "missing":
        return f"{loc}: required field is missing"
    msg = err["msg"].removeprefix("Value error, ").removeprefix("Assertion failed, ")
    return f"{loc}: {msg}" if loc else msg


def _loc(parts: tuple[Any, ...]) -> str:
    out = ""
    for part in parts:
        if isinstance(part, int):
            out += f"[{part}]"
        elif str(part).startswith("function-"):  # pydantic's validator wrappers are not spec fields
            continue
        else:
            text = field_name(part)
            out += f".{text}" if out else text
    return out


def _fields_at(loc: tuple[Any, ...]) -> list[str]:
    """Field names allowed at a location of the spec, for 'did you mean' hints."""
    model: type[BaseModel] = Spec
    for part in loc:
        if isinstance(part, int) or str(part).startswith("function-"):
            continue
        info = model.model_fields.get(str(part))
        if info is None:
            return []
        candidates = [info.annotation, *getattr(info.annotation, "__args__", ())]
        nested = [c for c in candidates if isinstance(c, type) and issubclass(c, BaseModel)]
        for c in candidates:
            nested += [a for a in getattr(c, "__args__", ()) if isinstance(a, type) and issubclass(a, BaseModel)]
        if not nested:
            return []
        model = nested[0]
    return list(model.model_fields)
