"""Reading a running ``perftune serve``'s request counters (its Prometheus ``/metrics``) for the error rates.

Each answer counted in ``perftune_requests_total`` is the model's, a failure of the model or the server, or the
client's (:class:`perftune.serve.metrics.Outcome` decides, by status code). The model's **error rate** is its
server-side failures over the requests it had to answer (answered + failed), so neither refusals nor
abandoned requests move it, up or down; the **client error rate** is the clients' refusals and aborts, and every
request addressed to another model's URL, over all inference requests the server counted for the version. Only the
first judges the model (probation, retraining triggers, budgets); anyone who reaches the port moves the second.
"""

from __future__ import annotations

import urllib.error
import urllib.request
from dataclasses import dataclass

from perftune.errors import PerftuneError
from perftune.serve.metrics import OTHER_MODEL, Outcome

__all__ = ["INFERENCE_ENDPOINTS", "RequestCounts", "request_counts"]

INFERENCE_ENDPOINTS = frozenset({"v2", "invocations"})


@dataclass(frozen=True)
class RequestCounts:
    """Inference requests of one version by :class:`~perftune.serve.metrics.Outcome` (cumulative counters)."""

    answered: float = 0.0
    server_errors: float = 0.0
    client_errors: float = 0.0  # refused, abandoned, or addressed to another model

    def since(self, earlier: RequestCounts | None) -> RequestCounts:
        """The requests counted after ``earlier``; all of them when there is none or the server restarted."""
        if earlier is None or any(now < then for now, then in zip(self._values(), earlier._values(), strict=True)):
            return self
        return RequestCounts(*(now - then for now, then in zip(self._values(), earlier._values(), strict=True)))

    def _values(self) -> tuple[float, float, float]:
        return self.answered, self.server_errors, self.client_errors

    @property
    def error_rate(self) -> float | None:
        """Server-side failures over the requests the model had to answer (None: none)."""
        judged = self.answered + self.server_errors
        return self.server_errors / judged if judged else None

    @property
    def client_error_rate(self) -> float | None:
        """Client errors over every inference request counted (None: none)."""
        total = sum(self._values())
        return self.client_errors / total if total else None


def _scrape(server_url: str, timeout_s: float) -> str:
    url = server_url.rstrip("/") + "/metrics"
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as response:
            return response.read().decode()
    except (urllib.error.URLError, OSError, ValueError) as exc:
        raise PerftuneError(
            f"--server {server_url}: cannot read {url} ({exc}); is perftune serve running there?"
        ) from None


def request_counts(server_url: str, model: str, version: str, timeout_s: float = 5.0) -> RequestCounts:
    """The inference requests of ``model`` v``version`` since the server started, by outcome; requests the
    server counted under another model's name are the clients' errors."""
    from prometheus_client.parser import text_string_to_metric_families

    counts = dict.fromkeys(Outcome, 0.0)
    for family in text_string_to_metric_families(_scrape(server_url, timeout_s)):
        if family.name != "perftune_requests":
            continue
        for sample in family.samples:
            labels = sample.labels
            if not sample.name.endswith("_total") or labels.get("endpoint") not in INFERENCE_ENDPOINTS:
                continue
            if labels.get("model") == OTHER_MODEL:
                counts[Outcome.CLIENT_ERROR] += sample.value
            elif labels.get("model") == model and labels.get("version") == version:
                counts[Outcome.of(labels.get("code", "500"))] += sample.value
    return RequestCounts(counts[Outcome.ANSWERED], counts[Outcome.SERVER_ERROR], counts[Outcome.CLIENT_ERROR])
