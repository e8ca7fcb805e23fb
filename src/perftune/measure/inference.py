"""Inference-time metrics of fitted models: single-row latency, batch throughput, serialized size — with their
spread, measured so that a decision resting on them does not flip when another process runs.

**Interleaved rounds.** :class:`InferenceMeter` measures one or more candidates (a model, its compressed
twin, torch vs onnxruntime, champion vs challenger) in rounds: each round times ``latency_rows ÷ rounds``
single-row calls and a few throughput batches of every candidate, in alternating order (A B, B A, …), so a
slow moment of the machine falls on all of them alike. Samples accumulate: :meth:`InferenceMeter.run` again
adds rounds and narrows the interval (the gate does that when its bound lies inside it).

**What a latency is.** Each call's wall time minus the time the calling thread waited for a CPU that other
processes held during it (Linux schedstat run delay, :mod:`perftune.measure.contention`): the model's own
latency on this machine, not the neighbours'. The raw figure is kept as ``latency_ms_p95_wall`` and the share
of the calls' time spent waiting as ``latency_cpu_wait_share``.

**Spread.** ``latency_ms_p95_low`` / ``_high`` are a distribution-free 95 % confidence interval of the p95 from
the order statistics of the pooled samples (``scipy.stats.quantile_test``); ``latency_rounds`` and
``latency_samples`` say how much was measured. :func:`compare` names a faster candidate only when the two
intervals do not overlap; otherwise it reports no measurable difference.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from perftune.measure.contention import ThreadWait

__all__ = ["ROUNDS", "Comparison", "InferenceMeter", "compare", "measure_inference", "p95_interval"]

ROUNDS = 5  # rounds per measurement; each candidate gets latency_rows ÷ ROUNDS single-row calls per round
CONFIDENCE = 0.95

Predict = Callable[[np.ndarray], object]


def p95_interval(samples: np.ndarray, confidence: float = CONFIDENCE) -> tuple[float, float]:
    """A distribution-free confidence interval of the 95th percentile (order statistics)."""
    from scipy.stats import quantile_test

    if len(samples) < 2:
        value = float(samples[0]) if len(samples) else float("nan")
        return value, value
    ci = quantile_test(samples, q=float(np.median(samples)), p=0.95).confidence_interval(confidence)
    top = float(np.max(samples))  # too few samples for an upper order statistic: the largest one bounds it
    low, high = float(ci.low), float(ci.high)
    return (low if np.isfinite(low) else float(np.min(samples))), (high if np.isfinite(high) else top)


@dataclass
class _Samples:
    own_ms: list[np.ndarray] = field(default_factory=list)  # wall − run-queue wait, per call
    wall_ms: list[np.ndarray] = field(default_factory=list)
    round_p95: list[float] = field(default_factory=list)
    rows: int = 0  # throughput rows and their own seconds
    own_s: float = 0.0


@dataclass
class Candidate:
    """One thing to measure: its predict, its serialized bytes and what to do before each of its blocks
    (e.g. switch a network's runtime)."""

    predict: Predict
    serialize: Callable[[], bytes]
    prepare: Callable[[], None] | None = None


class InferenceMeter:
    """Measures candidates side by side in interleaved rounds (see the module docstring).

    Args:
        candidates: name → :class:`Candidate`.
        X: rows to predict (validation or test data); cycled when shorter than needed.
        latency_rows: single-row calls per candidate and measurement (split over the rounds).
        throughput_batch: rows per throughput batch.
        min_throughput_s: own time of throughput batches per candidate and measurement.
    """

    def __init__(self, candidates: dict[str, Candidate], X: np.ndarray, *, latency_rows: int = 200,
                 throughput_batch: int = 1024, min_throughput_s: float = 0.02) -> None:  # fmt: skip
        if len(X) == 0:
            raise ValueError("measuring inference needs at least one row")
        self.candidates, self.X = candidates, X
        self.latency_rows, self.min_throughput_s = max(int(latency_rows), 1), min_throughput_s
        reps = max(1, -(-throughput_batch // len(X)))
        self.batch = np.concatenate([X] * reps)[:throughput_batch] if reps > 1 else X[:throughput_batch]
        self.rounds = 0
        self._samples = {name: _Samples() for name in candidates}
        self._wait = ThreadWait()
        self._next_row = 0
        for c in candidates.values():  # warm-up: the first call pays one-off costs (imports, allocations)
            if c.prepare is not None:
                c.prepare()
            c.predict(X[:1])

    def keep(self, name: str, candidate: Candidate) -> InferenceMeter:
        """Measure only ``name`` from now on (its samples so far stay), as ``candidate`` (e.g. no longer swapping
        runtimes before each round)."""
        self.candidates = {name: candidate}
        return self

    def run(self, rounds: int = ROUNDS) -> InferenceMeter:
        """Measure ``rounds`` more rounds of every candidate, alternating their order."""
        names = list(self.candidates)
        per_round = max(1, -(-self.latency_rows // rounds))
        for _ in range(rounds):
            order = names if self.rounds % 2 == 0 else names[::-1]
            start_row = self._next_row
            for name in order:
                candidate, samples = self.candidates[name], self._samples[name]
                if candidate.prepare is not None:
                    candidate.prepare()
                own, wall = self._latencies(candidate.predict, start_row, per_round)
                samples.own_ms.append(own)
                samples.wall_ms.append(wall)
                samples.round_p95.append(float(np.percentile(own, 95)))
                rows, own_s = self._throughput(candidate.predict, self.min_throughput_s / rounds)
                samples.rows += rows
                samples.own_s += own_s
            self._next_row = start_row + per_round  # the same rows for every candidate in a round
            self.rounds += 1
        return self

    def _latencies(self, predict: Predict, first: int, n: int) -> tuple[np.ndarray, np.ndarray]:
        X, wait = self.X, self._wait
        own, wall = np.empty(n), np.empty(n)
        for i in range(n):
            row = X[(first + i) % len(X)][None, :]
            waited = wait.wait_s()
            start = time.perf_counter()
            predict(row)
            end = time.perf_counter()
            wall[i] = end - start
            own[i] = max(wall[i] - (wait.wait_s() - waited), 0.0)
        return own * 1000.0, wall * 1000.0

    def _throughput(self, predict: Predict, min_s: float) -> tuple[int, float]:
        rows, own_s, wait = 0, 0.0, self._wait
        while True:
            waited = wait.wait_s()
            start = time.perf_counter()
            predict(self.batch)
            own_s += max(time.perf_counter() - start - (wait.wait_s() - waited), 0.0)
            rows += len(self.batch)
            if own_s >= min_s:
                return rows, own_s

    def metrics(self, name: str) -> dict[str, float]:
        """``latency_ms_p50/p95`` (+ interval, wall p95, rounds, samples, wait share), ``throughput_rps`` and
        ``model_size_bytes`` of one candidate, from every round measured so far."""
        if self.rounds == 0:
            self.run()
        s = self._samples[name]
        own, wall = np.concatenate(s.own_ms), np.concatenate(s.wall_ms)
        low, high = p95_interval(own)
        wall_total = float(wall.sum())
        return {
            "latency_ms_p50": float(np.percentile(own, 50)),
            "latency_ms_p95": float(np.percentile(own, 95)),
            "latency_ms_p95_low": low,
            "latency_ms_p95_high": high,
            "latency_ms_p95_wall": float(np.percentile(wall, 95)),
            "latency_cpu_wait_share": (wall_total - float(own.sum())) / wall_total if wall_total > 0 else 0.0,
            "latency_rounds": float(self.rounds),
            "latency_samples": float(len(own)),
            "throughput_rps": s.rows / s.own_s if s.own_s > 0 else float("nan"),
            "model_size_bytes": float(len(self.candidates[name].serialize())),
        }

    def close(self) -> None:
        self._wait.close()


@dataclass(frozen=True)
class Comparison:
    """Which of two candidates has the lower latency p95, or None when their intervals overlap."""

    a: str
    b: str
    faster: str | None
    a_p95: tuple[float, float, float]  # (p95, low, high)
    b_p95: tuple[float, float, float]

    def message(self) -> str:
        def shown(name: str, v: tuple[float, float, float]) -> str:
            return f"{name} p95 {v[0]:.3g} ms [{v[1]:.3g}, {v[2]:.3g}]"

        both = f"{shown(self.a, self.a_p95)} vs {shown(self.b, self.b_p95)}"
        if self.faster is None:
            return f"no measurable difference ({both}: the 95 % intervals overlap)"
        return f"{self.faster} is faster ({both})"


def compare(
    a: str, metrics_a: dict[str, float], b: str, metrics_b: dict[str, float], margin: float = 1.0
) -> Comparison:
    """Name the candidate whose p95 interval lies wholly below the other's (× ``margin``: 0.9 asks for 10 %)."""
    va = (metrics_a["latency_ms_p95"], metrics_a["latency_ms_p95_low"], metrics_a["latency_ms_p95_high"])
    vb = (metrics_b["latency_ms_p95"], metrics_b["latency_ms_p95_low"], metrics_b["latency_ms_p95_high"])
    faster = a if va[2] < margin * vb[1] else b if vb[2] < margin * va[1] else None
    return Comparison(a, b, faster, va, vb)


def measure_inference(
    predict: Predict,
    serialize: Callable[[], bytes],
    X: np.ndarray,
    *,
    latency_rows: int = 200,
    throughput_batch: int = 1024,
    min_throughput_s: float = 0.02,
    rounds: int = ROUNDS,
) -> dict[str, float]:
    """Measure one model: see :meth:`InferenceMeter.metrics` for what it returns.

    Args:
        predict: the model's predict function (takes a 2-D array).
        serialize: returns the model's bytes, as stored (the same bytes that are registered later).
        X: rows to predict (validation data); cycled when shorter than needed.
        latency_rows: how many single-row predictions are timed.
        throughput_batch: rows per batch for throughput.
        min_throughput_s: batches are repeated until at least this much of the process's own time has passed.
        rounds: how many rounds the calls are split into.
    """
    meter = InferenceMeter({"model": Candidate(predict, serialize)}, X, latency_rows=latency_rows,
                           throughput_batch=throughput_batch, min_throughput_s=min_throughput_s)  # fmt: skip
    try:
        return meter.run(rounds).metrics("model")
    finally:
        meter.close()
