"""The probe: memory as RSS − shared, CPU seconds and CPU %, step timers, inference metrics.

No assertion here rests on how much CPU the machine had to spare: CPU % is checked against the CPU and wall time
the same samples recorded, and against the time the thread waited for a CPU."""

from __future__ import annotations

import os

import numpy as np
import pytest

from perftune.measure.contention import ThreadWait
from perftune.measure.inference import measure_inference
from perftune.measure.probe import Probe, StepTimer, unique_memory_mb

PAGE = os.sysconf("SC_PAGE_SIZE")
linux_schedstat = pytest.mark.skipif(not ThreadWait().available, reason="needs Linux /proc/thread-self/schedstat")


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


def busy_window(probe: Probe) -> tuple:
    """Two samples around a busy loop (no sleeping, no I/O: the thread runs or waits for a CPU)."""
    first = probe.sample()
    x = 0.0
    for i in range(2_000_000):
        x += i * 0.5
    return first, probe.sample()


def test_cpu_seconds_grow_and_cpu_percent_is_the_cpu_time_of_the_window_over_its_wall_time():
    probe = Probe()
    first, second = busy_window(probe)
    probe.close()
    assert second.cpu_s > first.cpu_s > -1e-9
    # the share this process got, whatever other processes took: no fixed figure, which a busy machine would miss
    window = second.wall_s - first.wall_s
    assert second.cpu_percent == pytest.approx(100 * (second.cpu_s - first.cpu_s) / window, rel=1e-6)
    assert 0 < second.cpu_percent <= 100 * len(os.sched_getaffinity(0))
    assert probe.overhead_s > 0


@linux_schedstat
def test_a_busy_thread_was_on_a_cpu_whenever_it_did_not_wait_for_one():
    """CPU % plus the window's CPU wait share is the whole window for a busy thread, on a quiet or a busy machine
    (on a quiet one CPU % is ~100 and the wait ~0; beside two busy processes on two cores, e.g. ~67 and ~0.33)."""
    probe = Probe()
    _, second = busy_window(probe)
    probe.close()
    assert second.cpu_percent / 100 + second.contention["cpu_wait_share"] >= 0.9


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
