"""One monitoring check of a served version: read its window, judge it, store the result.

``run_check`` is what ``perftune monitor`` calls (once, or every ``--watch`` interval):

1. resolve the version and its reference profile (stored at registration; built from the refit recipe on
   first use for versions registered earlier) and the monitor settings stored with it (``--spec`` overrides);
2. find the window in the scoring log and stream it chunk by chunk into a :class:`WindowSummary`; when the
   version's profile has a CBPE calibration, the model's probabilities are computed chunk by chunk too;
3. drift (:mod:`~perftune.monitor.drift`), performance with labels from feedback and estimated
   (:mod:`~perftune.monitor.performance`), system metrics of the service (latency p50/p95 and request rate
   from the scoring log, with the share of the served time the server waited for a CPU and the p95 without that
   wait, which budgets, baselines and probation judge; from the server's ``/metrics`` when ``server_url`` is
   given, the model's error rate — server-side failures only — and, apart, the client error rate: see
   :mod:`~perftune.monitor.scrape`);
4. every series against its adaptive baseline (:mod:`~perftune.monitor.baseline`);
5. the check and its series points are stored beside the scoring log (:mod:`~perftune.monitor.store`).

A check is **healthy** when it has no finding; findings are dataset drift, drifted columns, prediction drift,
data-quality issues, degraded performance, a broken budget (e.g. ``latency_ms_p95 <= 50`` in the spec) and
series that departed from their baseline. The client error rate is reported and stored with the check but is
neither a budget nor a baselined series: what clients do (a wrong token, an aborted upload) never makes a finding,
a retraining trigger or a rollback.
"""

from __future__ import annotations

import math
import uuid
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from typing import Any

import numpy as np

from perftune.errors import PerftuneError, UsageError
from perftune.monitor import baseline, performance
from perftune.monitor.drift import DriftReport, check_drift
from perftune.monitor.profile import ReferenceProfile, WindowSummary
from perftune.monitor.scrape import RequestCounts
from perftune.spec import MonitorSpec, parse_window
from perftune.track.uri import mlflow_store


@dataclass
class SystemMetrics:
    requests: int
    rows: int
    seconds: float
    latency_ms_p50: float | None
    latency_ms_p95: float | None
    requests_per_s: float | None
    rows_per_s: float | None
    error_rate: float | None  # the model's: server-side failures (5xx) of the requests it answered; None: no server
    registered_latency_ms_p95: float | None  # the model alone, measured at registration
    budgets: dict[str, float] = field(default_factory=dict)
    broken: list[str] = field(default_factory=list)
    # the clients' refusals (4xx), aborts (499) and requests for other models; None: no server (or an older check)
    client_error_rate: float | None = None
    # what the server received: of the served time, the share its thread waited for a CPU other processes held,
    # and the latency p95 without that wait (the model's own); None where the log does not record the wait
    cpu_wait_share: float | None = None
    latency_ms_p95_own: float | None = None

    @property
    def judged_latency_ms_p95(self) -> float | None:
        """The p95 that budgets, baselines and probation judge: the model's own where recorded, else the wall."""
        return self.latency_ms_p95_own if self.latency_ms_p95_own is not None else self.latency_ms_p95


@dataclass
class CheckResult:
    check_id: str
    at: str
    model: str
    version: str
    window: dict[str, Any]
    drift: DriftReport
    performance: list[performance.Performance]
    system: SystemMetrics
    baselines: list[baseline.BaselineVerdict]
    findings: list[str]
    reference: str = "training split"  # what the drift tests compare with (texts and images: the held-out split)

    @property
    def healthy(self) -> bool:
        return not self.findings

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["drift"] = self.drift.to_dict()
        out["healthy"] = self.healthy
        return _finite(out)


def _finite(value: Any) -> Any:
    """NaN and infinities → None, so the JSON is valid for every reader."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    return value


class Monitor:
    """The registry, scoring database and version a check needs, opened once (``--watch`` reuses them)."""

    def __init__(self, reference: str, tracking_uri: str, scoring_uri: str, settings: MonitorSpec | None = None,
                 server_url: str | None = None) -> None:  # fmt: skip
        from perftune.monitor import store  # noqa: F401  (its tables must exist before the engine creates them)
        from perftune.registry.catalog import ModelRegistry
        from perftune.serve.scoring import scoring_engine

        self.registry = ModelRegistry(tracking_uri)
        self.reference, self.given_settings = reference, settings
        self.engine = scoring_engine(scoring_uri)
        self.server_url = server_url
        self._open(self.registry.resolve(reference))

    def _open(self, version: Any) -> None:
        from perftune.monitor.reference import load_profile, profile_from_recipe

        client = self.registry.client  # everything read first: a failure leaves the monitor as it was
        profile = load_profile(client, version) or profile_from_recipe(client, version)
        settings = self.given_settings or MonitorSpec.model_validate(profile.settings or {})
        self.version, self.name, self.number = version, version.name, str(version.version)
        self.profile: ReferenceProfile = profile
        self.settings = settings
        self._model: Any = None
        self.last_summary: WindowSummary | None = None  # the last check's window, for the HTML page
        self._last_counts: RequestCounts | None = None

    def follow(self) -> bool:
        """For ``NAME@ALIAS``: watch the version the alias points at now; True when that changed it."""
        if "@" not in self.reference:
            return False
        version = self.registry.resolve(self.reference)
        if str(version.version) == self.number:
            return False
        self._open(version)
        return True

    def close(self) -> None:
        self.engine.dispose()
        self.registry.close()

    def _load_model(self) -> None:
        import mlflow

        if self._model is None:
            with mlflow_store(self.registry.tracking_uri):
                self._model = mlflow.sklearn.load_model(f"models:/{self.name}/{self.number}")

    def _derived(self, chunk: Any) -> Any:
        """A chunk of a text or image model with what its features step derives per row, and class indices."""
        from dataclasses import replace

        from perftune.monitor.reference import class_index

        self._load_model()
        derived = self._model.steps[0][1].monitor_features(chunk.X)
        predictions = chunk.predictions
        if self.profile.class_names is not None:
            predictions = class_index(predictions, self.profile.class_names)
        return replace(chunk, X=derived, predictions=predictions)

    def _probabilities(self, X: np.ndarray) -> np.ndarray:
        import pandas as pd

        self._load_model()
        if self.profile.inputs != "table":  # the features step reads the logged rows (texts, pixels) itself
            return self._model.predict_proba(X)
        return self._model.predict_proba(pd.DataFrame(X, columns=self.profile.feature_names))

    # ----------------------------------------------------------------------------------------- a check

    def check(self, window: str | None = None, now: datetime | None = None, save: bool = True) -> CheckResult:
        """One check of the window; ``save=False`` leaves the stored history (and so the baselines) untouched."""
        from perftune.monitor import store
        from perftune.monitor import window as windows

        now = now or datetime.now(timezone.utc)
        try:
            kind, size = parse_window(window or self.settings.window)
        except ValueError as exc:
            raise UsageError(f"--window: {exc}") from None
        bounds = windows.bounds(self.engine, self.name, self.number, kind, size, now)
        summary = WindowSummary(self.profile)
        latencies: list[np.ndarray] = []
        waits: list[np.ndarray] = []
        calibration = self.profile.calibration
        expected = performance.ExpectedAccuracy(calibration) if calibration is not None else None
        for raw in windows.chunks(self.engine, self.name, self.number, bounds):
            # texts, images: the columns are derived per row, the probabilities come from the raw inputs
            chunk = self._derived(raw) if self.profile.inputs != "table" else raw
            if chunk.X.ndim != 2 or chunk.X.shape[1] != len(self.profile.columns):
                raise PerftuneError(
                    f"the scoring log holds rows of {chunk.X.shape[-1]} columns for {self.name} v{self.number}, "
                    f"whose profile has {len(self.profile.columns)}; was it served by another version?"
                )
            summary.add(chunk.X, chunk.predictions)
            latencies.append(chunk.latency_ms)
            waits.append(chunk.cpu_wait_ms)
            if expected is not None:
                expected.add(self._probabilities(raw.X), chunk.predictions)
        self.last_summary = summary
        drift = check_drift(summary, self.settings)
        perf = self._performance(bounds, expected)
        system = self._system(bounds, *(np.concatenate(x) if x else np.array([]) for x in (latencies, waits)))
        series = self._series(drift, perf, system)
        check_id = uuid.uuid4().hex
        past = store.history(self.engine, self.name, self.number, series, self.settings.baseline.history)
        verdicts = [baseline.judge(s, v, now.isoformat(), past.get(s, []), self.settings.baseline)
                    for s, v in series.items()]  # fmt: skip
        findings = _findings(drift, perf, system, verdicts)
        window_info = {
            "kind": kind, "size": size, "start": bounds.start.isoformat() if bounds.start else None,
            "end": bounds.end.isoformat() if bounds.end else None, "requests": bounds.requests, "rows": bounds.rows,
        }  # fmt: skip
        reference = "training split" if self.profile.inputs == "table" else "held-out split"
        result = CheckResult(check_id, now.isoformat(), self.name, self.number, window_info, drift, perf, system,
                             verdicts, findings, reference)  # fmt: skip
        points = {v.series: (v.value, v.z) for v in verdicts if math.isfinite(v.value)}
        if save:
            store.save(self.engine, check_id, now, self.name, self.number, (bounds.start, bounds.end, bounds.rows),
                       findings, result.to_dict(), points)  # fmt: skip
        return result

    def _performance(self, bounds, expected: performance.ExpectedAccuracy | None) -> list[performance.Performance]:
        from perftune.monitor import window as windows

        task, margin = self.profile.task, self.settings.performance_margin
        metric = "accuracy" if task == "classification" else "rmse"
        test_value = self.profile.test_metrics.get(metric)
        if expected is not None:
            estimated = expected.result(test_value)
        else:
            why = "the model gives no probabilities" if task == "classification" else "regression has no confidence"
            estimated = performance.not_estimable(task, test_value, why)
        got = windows.labelled(self.engine, self.name, self.number, bounds)
        realized = performance.realized(task, got.predictions, got.labels, test_value)
        figures = [performance.judge(estimated, margin), performance.judge(realized, margin)]
        loss = self._realized_loss(got.X, got.labels)
        return figures + ([performance.judge(loss, margin)] if loss is not None else [])

    def _realized_loss(self, X: np.ndarray, labels: np.ndarray) -> performance.Performance | None:
        """The family's training loss on the labelled rows (``val_loss``), when the family can say it."""
        from perftune.models.base import get_family

        name = self.version.tags.get("perftune.model_family")
        row_losses = getattr(get_family(name), "row_losses", None) if name else None
        if row_losses is None:
            return None
        test_value = self.profile.test_metrics.get("test_loss")
        if not len(labels):
            return performance.realized_loss(np.array([]), test_value)
        import pandas as pd

        self._load_model()
        frame = pd.DataFrame(X, columns=self.profile.feature_names)
        return performance.realized_loss(row_losses(self._model, frame, labels, self.profile.task), test_value)

    def _system(self, bounds, latency_ms: np.ndarray, cpu_wait_ms: np.ndarray) -> SystemMetrics:
        """The service's figures over the window. Budgets are judged on the latency the model itself took (the
        wall latency less the server's wait for a CPU, where the log records it): a budget must not break because
        other processes on the machine took the CPU; the wall p95 is reported beside it, with the wait's share."""
        seconds = bounds.seconds
        p50, p95 = (float(np.percentile(latency_ms, q)) for q in (50, 95)) if latency_ms.size else (None, None)
        known = ~np.isnan(cpu_wait_ms)
        wait_share = own_p95 = None
        if known.any():
            wait_share = float(cpu_wait_ms[known].sum() / max(latency_ms[known].sum(), 1e-9))
            own = np.where(known, latency_ms - np.nan_to_num(cpu_wait_ms), latency_ms)
            own_p95 = float(np.percentile(own, 95))
        counts = self._request_counts() if self.server_url else RequestCounts()
        error_rate = counts.error_rate
        budgets = dict(self.profile.budgets)
        observed = {"latency_ms_p50": p50, "latency_ms_p95": own_p95 if own_p95 is not None else p95,
                    "error_rate": error_rate}  # fmt: skip
        broken = [
            f"served {metric} {observed[metric]:.4g} breaks its budget {metric} <= {bound:g}"
            for metric, bound in budgets.items()
            if observed.get(metric) is not None and observed[metric] > bound
        ]
        return SystemMetrics(
            bounds.requests, bounds.rows, seconds, p50, p95,
            bounds.requests / seconds if seconds > 0 else None, bounds.rows / seconds if seconds > 0 else None,
            error_rate, self.profile.latency_ms_p95, budgets, broken, counts.client_error_rate, wait_share, own_p95,
        )  # fmt: skip

    def _request_counts(self) -> RequestCounts:
        """This version's inference requests by outcome since the previous check (the server's
        ``perftune_requests_total``; cumulative since the server started on the first check)."""
        from perftune.monitor.scrape import request_counts

        counts = request_counts(self.server_url, self.name, self.number)  # type: ignore[arg-type]
        previous, self._last_counts = self._last_counts, counts
        return counts.since(previous)

    def _series(self, drift: DriftReport, perf, system: SystemMetrics) -> dict[str, float]:
        series: dict[str, float] = {}
        for column in drift.columns:
            if math.isfinite(column.score):
                series[f"drift.{column.test}.{column.column}"] = column.score
        series["drift.share"] = drift.drifted_share
        for figure in perf:
            if figure.value is not None:
                series[f"{figure.kind}.{figure.metric}"] = figure.value
        # the baselined latency is the model's own, so that busy neighbours never flag an anomaly
        values = {"latency_ms_p95": system.judged_latency_ms_p95, "error_rate": system.error_rate,
                  "requests_per_s": system.requests_per_s}  # fmt: skip
        series.update({name: float(value) for name, value in values.items() if value is not None})
        return series


def _findings(drift: DriftReport, perf, system: SystemMetrics, verdicts) -> list[str]:
    findings: list[str] = []
    if drift.dataset_drift:
        findings.append(
            f"dataset drift: {len(drift.drifted_columns)} of {len(drift.columns)} columns drifted "
            f"({drift.drifted_share:.0%} ≥ drift_share {drift.drift_share:g}): {', '.join(drift.drifted_columns)}"
        )
    findings += [f"drift: {c.describe()}" for c in drift.columns if c.drifted]
    if drift.prediction is not None and drift.prediction.drifted:
        findings.append(f"prediction drift: {drift.prediction.describe()}")
    findings += [f"data quality: {issue}" for issue in drift.quality_issues]
    for figure in perf:
        if figure.degraded:
            findings.append(
                f"{figure.kind} {figure.metric} {figure.value:.4g} [{figure.low:.4g}, {figure.high:.4g}] is worse than "
                f"the test split's {figure.test_value:.4g} by more than the margin"
            )
    findings += [f"budget: {message}" for message in system.broken]
    findings += [f"anomaly: {v.describe()}" for v in verdicts if v.flagged]
    return findings
