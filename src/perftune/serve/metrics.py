"""Prometheus metrics of the server (``perftune_`` prefix), also across ``--workers`` processes.

``perftune_requests_total`` counts every inference answer by its status ``code``. Whose failure a code is —
the model's and the server's, or the client's — is decided once, by :class:`Outcome`: monitoring's error rate
(and so probation's rollback and the retraining triggers) counts only :attr:`Outcome.SERVER_ERROR`, the 5xx
answers; the 4xx refusals and :data:`CLIENT_ABORT` are the clients' and are reported apart. A client that closes
the connection before its body is complete gets no answer at all; it is counted under the code ``"499"``, as nginx
logs it, never as a 500.
"""

from __future__ import annotations

import os
from enum import Enum

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, disable_created_metrics, generate_latest
from prometheus_client.multiprocess import MultiProcessCollector

disable_created_metrics()  # no *_created series: they double the scrape for nothing a dashboard uses

# sub-millisecond resolution where a linear model answers, up to the seconds of a slow batch
LATENCY_BUCKETS = (
    0.0001,
    0.00025,
    0.0005,
    0.00075,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1,
    2.5,
    10,
)
ROW_BUCKETS = (1, 2, 5, 10, 50, 100, 500, 1000, 5000, 10000, 100000)
OTHER_MODEL = "(other)"  # the model label of requests addressed to a model this server does not serve
CLIENT_ABORT = 499  # nginx's "client closed request": the body never completed, no response was sent


class Outcome(Enum):
    """Whose answer a status code is: the model's, the model's or the server's failure, or the client's."""

    ANSWERED = "answered"  # 2xx: the model answered
    SERVER_ERROR = "server_error"  # 5xx: the model failed (a failed predict) or the server did (unloaded, log down)
    CLIENT_ERROR = "client_error"  # 4xx and 499: refused (token, body, size, URL) or abandoned by the client

    @classmethod
    def of(cls, code: int | str) -> Outcome:
        """The outcome of an HTTP status code (as ``perftune_requests_total`` labels it)."""
        status = int(code)
        if 200 <= status < 300:
            return cls.ANSWERED
        return cls.SERVER_ERROR if status >= 500 else cls.CLIENT_ERROR


class ServerMetrics:
    def __init__(self) -> None:
        # with several worker processes, values live in PROMETHEUS_MULTIPROC_DIR and every scrape sums them
        self.multiprocess = bool(os.environ.get("PROMETHEUS_MULTIPROC_DIR"))
        self.registry = CollectorRegistry()
        owner = None if self.multiprocess else self.registry
        if self.multiprocess:
            MultiProcessCollector(self.registry)
        self.requests = Counter(
            "perftune_requests",
            "Inference requests by model, version, endpoint and HTTP status code; code 499: the client closed the"
            " connection before its body was complete (no response sent; a client error, not a 500); model"
            ' "(other)": requests addressed to a model this server does not serve.',
            ["model", "version", "endpoint", "code"],
            registry=owner,
        )
        self.latency = Histogram(
            "perftune_request_duration_seconds",
            "Time from request received to response ready, by model and endpoint.",
            ["model", "endpoint"],
            buckets=LATENCY_BUCKETS,
            registry=owner,
        )
        self.in_flight = Gauge(
            "perftune_requests_in_flight", "Requests being handled.", registry=owner, multiprocess_mode="livesum"
        )
        self.rows = Histogram(
            "perftune_payload_rows", "Rows per inference request.", ["model"], buckets=ROW_BUCKETS, registry=owner
        )
        self.load_seconds = Gauge(
            "perftune_model_load_seconds",
            "Time to load the model version, by model and version.",
            ["model", "version"],
            registry=owner,
            multiprocess_mode="max",
        )
        self.loaded = Gauge(
            "perftune_model_loaded",
            "1 for the version a worker serves now.",
            ["model", "version"],
            registry=owner,
            multiprocess_mode="livemax",
        )
        self.swaps = Counter("perftune_model_swaps", "Versions swapped in while serving.", ["model"], registry=owner)
        self.queue_depth = Gauge(
            "perftune_scoring_queue_depth",
            "Scoring-log rows waiting to be written.",
            registry=owner,
            multiprocess_mode="livesum",
        )
        self.scoring_failures = Counter(
            "perftune_scoring_log_failures",
            "Scoring-log rows the database did not take after retries: written to the dead-letter file (replayed"
            " later), or lost if even that file could not be written (logged at CRITICAL level with their ids).",
            registry=owner,
        )

    def exposition(self) -> bytes:
        return generate_latest(self.registry)
