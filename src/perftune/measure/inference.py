"""Inference-time metrics of a fitted model: single-row latency, batch throughput, serialized size."""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np


def measure_inference(
    predict: Callable[[np.ndarray], np.ndarray],
    serialize: Callable[[], bytes],
    X: np.ndarray,
    *,
    latency_rows: int = 200,
    throughput_batch: int = 1024,
    min_throughput_s: float = 0.02,
) -> dict[str, float]:
    """Measure ``latency_ms_p50/p95``, ``throughput_rps`` and ``model_size_bytes``.

    Args:
        predict: the model's predict function (takes a 2-D array).
        serialize: returns the model's bytes, as stored (the same bytes that are registered later).
        X: rows to predict (validation data); cycled when shorter than needed.
        latency_rows: how many single-row predictions are timed.
        throughput_batch: rows per batch for throughput.
        min_throughput_s: batches are repeated until at least this much time has passed.
    """
    if len(X) == 0:
        raise ValueError("measure_inference needs at least one row")
    predict(X[:1])  # warm-up: first call pays one-off costs (imports, allocations)
    latencies = np.empty(latency_rows)
    for i in range(latency_rows):
        row = X[i % len(X)][None, :]
        start = time.perf_counter()
        predict(row)
        latencies[i] = time.perf_counter() - start
    latencies *= 1000.0

    reps = max(1, -(-throughput_batch // len(X)))
    batch = np.concatenate([X] * reps)[:throughput_batch] if reps > 1 else X[:throughput_batch]
    rows, start = 0, time.perf_counter()
    while True:
        predict(batch)
        rows += len(batch)
        elapsed = time.perf_counter() - start
        if elapsed >= min_throughput_s:
            break
    return {
        "latency_ms_p50": float(np.percentile(latencies, 50)),
        "latency_ms_p95": float(np.percentile(latencies, 95)),
        "throughput_rps": rows / elapsed,
        "model_size_bytes": float(len(serialize())),
    }
