from __future__ import annotations

import os

import numpy as np
import pytest

from perftune.measure.inference import measure_inference
from perftune.measure.probe import Probe, StepTimer, unique_memory_mb

PAGE = os.sysconf("SC_PAGE_SIZE")


def statm_unique_mb() -> float:
    """RSS − shared straight from the kernel, independent of psutil."""
    with open("/proc/self/statm") as handle:
        _size, resident, shared, *_ = map(int, handle.read().split())
    return (resident - shared) * PAGE / 2**20


def test_memory_is_rss_minus_shared_and_tracks_allocations():
    probe = Probe()
    before = probe.sample()
    assert before.memory_mb == pytest.approx(statm_unique_mb(), abs=2.0)
    block = np.ones(64 * 2**20 // 8)  # 64 MiB, touched
    after = probe.sample()
    assert after.memory_mb - before.memory_mb == pytest.approx(64, abs=8)
    assert after.memory_mb_peak >= after.memory_mb
    del block
    assert probe.sample().memory_mb_peak == pytest.approx(after.memory_mb_peak)  # the peak never falls
    assert unique_memory_mb.__doc__


def test_cpu_seconds_grow_and_cpu_percent_reflects_busy_work():
    probe = Probe()
    first = probe.sample()
    x = 0.0
    for i in range(2_000_000):  # busy loop
        x += i * 0.5
    second = probe.sample()
    assert second.cpu_s > first.cpu_s > -1e-9
    assert 50 < second.cpu_percent <= 200
    assert probe.overhead_s > 0


def test_step_timer_windows():
    timer = StepTimer(capacity=2)
    for seconds in (0.001, 0.002, 0.003, 0.004):  # grows past its capacity
        timer.add(seconds)
    summary = timer.summary()
    assert summary["step_time_ms_mean"] == pytest.approx(2.5)
    assert 3.0 < summary["step_time_ms_p95"] <= 4.0
    assert len(timer) == 0 and timer.summary() == {}


def test_inference_metrics():
    weights = np.arange(4.0)
    out = measure_inference(
        lambda X: X @ weights, lambda: b"12345", np.ones((10, 4)), latency_rows=20, throughput_batch=64
    )
    assert 0 < out["latency_ms_p50"] <= out["latency_ms_p95"]
    assert out["throughput_rps"] > 0 and out["model_size_bytes"] == 5
