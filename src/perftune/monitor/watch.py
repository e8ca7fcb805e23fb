"""``perftune monitor --watch 60s``: a check every interval, its verdicts as Prometheus gauges.

Gauges (labels ``model``, ``version``): ``perftune_drift_share``, ``perftune_dataset_drift`` (0/1),
``perftune_drift_score{column}`` and ``perftune_column_drifted{column}``, ``perftune_performance{kind,metric}``
(estimated / realized accuracy or RMSE), ``perftune_anomaly{series}`` (0/1), ``perftune_error_rate`` (the
model's server-side failures) and ``perftune_client_error_rate`` (refusals, aborts, other models' requests) when
the check has a ``--server``, ``perftune_monitor_healthy`` (0/1), ``perftune_monitor_last_check_timestamp_seconds``;
counters ``perftune_monitor_checks_total`` and ``perftune_monitor_check_errors_total``. A check that fails (the
database is down, say), or whose output cannot be written, is counted, logged with its reason and retried at the
next interval: the loop never dies.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, start_http_server

from perftune.errors import PerftuneError
from perftune.monitor.check import CheckResult, Monitor
from perftune.monitor.render import as_gauges

log = logging.getLogger("perftune.monitor")


class Gauges:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r, base = self.registry, ["model", "version"]
        self.drift_share = Gauge("perftune_drift_share", "Share of feature columns that drifted.", base, registry=r)
        self.dataset_drift = Gauge("perftune_dataset_drift", "1 when the share reached drift_share.", base, registry=r)
        self.score = Gauge("perftune_drift_score", "Drift test score per column.", [*base, "column"], registry=r)
        self.drifted = Gauge("perftune_column_drifted", "1 when the column drifted.", [*base, "column"], registry=r)
        self.performance = Gauge(
            "perftune_performance", "Estimated or realized performance.", [*base, "kind", "metric"], registry=r
        )
        self.anomaly = Gauge("perftune_anomaly", "1 when a series left its baseline.", [*base, "series"], registry=r)
        self.error_rate = Gauge(
            "perftune_error_rate", "The model's server-side failures (5xx) over the requests it answered.", base,
            registry=r,
        )  # fmt: skip
        self.client_error_rate = Gauge(
            "perftune_client_error_rate", "Client errors (4xx, 499 aborts, other models' URLs) over all requests; "
            "never judged against the model.", base, registry=r,
        )  # fmt: skip
        self.healthy = Gauge("perftune_monitor_healthy", "1 when the last check found nothing.", base, registry=r)
        self.last = Gauge("perftune_monitor_last_check_timestamp_seconds", "Time of the last check.", base, registry=r)
        self.checks = Counter("perftune_monitor_checks", "Checks run.", base, registry=r)
        self.errors = Counter("perftune_monitor_check_errors", "Checks that failed.", base, registry=r)

    def update(self, result: CheckResult) -> None:
        values, labels = as_gauges(result), (result.model, result.version)
        self.drift_share.labels(*labels).set(values["drift_share"])
        self.dataset_drift.labels(*labels).set(values["dataset_drift"])
        for column, (score, drifted) in values["columns"].items():
            self.score.labels(*labels, column).set(score)
            self.drifted.labels(*labels, column).set(drifted)
        for (kind, metric), value in values["performance"].items():
            self.performance.labels(*labels, kind, metric).set(value)
        for series, flagged in values["anomalies"].items():
            self.anomaly.labels(*labels, series).set(flagged)
        for gauge, rate in ((self.error_rate, values["error_rates"]["model"]),
                            (self.client_error_rate, values["error_rates"]["client"])):  # fmt: skip
            if rate is not None:
                gauge.labels(*labels).set(rate)
        self.healthy.labels(*labels).set(values["healthy"])
        self.last.labels(*labels).set(time.time())
        self.checks.labels(*labels).inc()


def watch(
    monitor: Monitor,
    every_s: float,
    window: str | None,
    on_result: Callable[[CheckResult], None],
    metrics_port: int | None = None,
    gauges: Gauges | None = None,
    stop: Callable[[], bool] = lambda: False,
) -> None:
    """Check every ``every_s`` seconds until ``stop()`` (or Ctrl-C); gauges on ``metrics_port`` if given."""
    gauges = gauges or Gauges()
    if metrics_port is not None:
        try:
            start_http_server(metrics_port, registry=gauges.registry)
        except OSError as exc:
            raise PerftuneError(f"--metrics-port {metrics_port}: {exc.strerror}; choose another port") from None
        log.warning("monitor gauges on http://0.0.0.0:%d/metrics", metrics_port)
    while not stop():
        started = time.monotonic()
        labels = (monitor.name, monitor.number)
        try:
            if monitor.follow():  # NAME@ALIAS: the alias moved (a promotion or a rollback)
                labels = (monitor.name, monitor.number)
                log.warning("%s now points at v%s; watching it", monitor.reference, monitor.number)
            result = monitor.check(window)
            gauges.update(result)
            on_result(result)  # printing, the HTML page: a failure there must not end the watch either
        except Exception as exc:  # counted and said; the next interval tries again
            gauges.errors.labels(*labels).inc()
            log.error("monitor check of %s v%s failed: %s: %s", *labels, type(exc).__name__, exc)
        time.sleep(max(0.0, every_s - (time.monotonic() - started)))
