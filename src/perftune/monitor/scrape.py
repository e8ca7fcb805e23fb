"""Reading a running ``perftune serve``'s request counters (its Prometheus ``/metrics``) for the error rate."""

from __future__ import annotations

import urllib.error
import urllib.request

from perftune.errors import PerftuneError

INFERENCE_ENDPOINTS = frozenset({"v2", "invocations"})


def request_counts(server_url: str, model: str, version: str, timeout_s: float = 5.0) -> tuple[float, float]:
    """(inference requests, of which not 2xx) of ``model`` v``version`` since the server started."""
    from prometheus_client.parser import text_string_to_metric_families

    url = server_url.rstrip("/") + "/metrics"
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as response:
            text = response.read().decode()
    except (urllib.error.URLError, OSError, ValueError) as exc:
        raise PerftuneError(
            f"--server {server_url}: cannot read {url} ({exc}); is perftune serve running there?"
        ) from None
    total = errors = 0.0
    for family in text_string_to_metric_families(text):
        if family.name != "perftune_requests":
            continue
        for sample in family.samples:
            labels = sample.labels
            if not sample.name.endswith("_total") or labels.get("model") != model:
                continue
            if labels.get("version") != version or labels.get("endpoint") not in INFERENCE_ENDPOINTS:
                continue
            total += sample.value
            if not labels.get("code", "").startswith("2"):
                errors += sample.value
    return total, errors
