"""System metrics of one process, sampled cheaply (see DESIGN.md "Measurement").

A :class:`Probe` is created at the start of a trial, in its training thread. :meth:`Probe.sample` is called
once per report window and returns CPU seconds, CPU % over the window, ``memory_mb = (RSS − shared)`` (psutil,
one read of ``/proc/<pid>/statm``) and its peak, and what the trial received from the machine
(:mod:`perftune.measure.contention`): ``wall_time_s``, ``cpu_wait_s`` (time the training thread waited for a
CPU other processes held), ``train_time_s = wall_time_s − cpu_wait_s`` (what a wall-clock budget judges; the
time spent reporting to Ray's driver is left out too, see :meth:`Probe.outside`), and
the window's ``cpu_wait_share``, ``runnable_per_core``, ``other_cpu_share`` and ``steal_share``. CPU time
of the own process comes from ``time.process_time()``: the same user + system time psutil reports, with
nanosecond instead of 10 ms resolution and no file read. Step times are recorded by :class:`StepTimer` with
``time.perf_counter`` only. The probe's own cost is accumulated in :attr:`Probe.overhead_s`, for benchmarks to report.
"""

from __future__ import annotations

import contextlib
import os
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np
import psutil

from perftune.measure.contention import MachineCounters, ThreadWait, machine_contention

_MB = 1024.0 * 1024.0


@dataclass(frozen=True)
class ProbeSample:
    """One reading of the process."""

    wall_s: float
    cpu_s: float
    cpu_percent: float
    memory_mb: float
    memory_mb_peak: float
    gpu_memory_mb: float | None = None
    cpu_wait_s: float = 0.0  # since the probe started
    outside_s: float = 0.0  # time outside training since the probe started (reports to the driver)
    contention: dict[str, float] = field(default_factory=dict)  # the window's cpu_wait_share and machine figures

    @property
    def train_time_s(self) -> float:
        """Wall time since the probe started minus the time the thread waited for a CPU or spent outside training."""
        return max(self.wall_s - self.cpu_wait_s - self.outside_s, 0.0)

    def as_metrics(self) -> dict[str, float]:
        out = {
            "cpu_s": self.cpu_s,
            "cpu_percent": self.cpu_percent,
            "memory_mb": self.memory_mb,
            "memory_mb_peak": self.memory_mb_peak,
            "wall_time_s": self.wall_s,
            "cpu_wait_s": self.cpu_wait_s,
            "report_wait_s": self.outside_s,
            "train_time_s": self.train_time_s,
            **self.contention,
        }
        if self.gpu_memory_mb is not None:
            out["gpu_memory_mb"] = self.gpu_memory_mb
        return out


def unique_memory_mb(process: psutil.Process) -> float:
    """RSS − shared of ``process`` in MiB: memory the process holds that no other process shares."""
    info = process.memory_info()
    shared = getattr(info, "shared", 0)  # Linux; other platforms report RSS alone
    return (info.rss - shared) / _MB


class MemoryReader:
    """``memory_mb`` of the current process, for callers that read it many times a second (the watchdog).

    Same value as :func:`unique_memory_mb` (psutil reads the same file): one ``pread`` of an open
    ``/proc/self/statm`` costs ~5 µs where ``psutil.Process.memory_info`` costs ~50–100 µs. Where there is no
    ``/proc`` (not Linux) it falls back to psutil. Call :meth:`close` when done.
    """

    def __init__(self) -> None:
        self._page_mb = os.sysconf("SC_PAGE_SIZE") / _MB if hasattr(os, "sysconf") else 0.0
        try:
            self._fd: int | None = os.open("/proc/self/statm", os.O_RDONLY)
        except OSError:
            self._fd, self._process = None, psutil.Process()

    def read_mb(self) -> float:
        if self._fd is None:
            return unique_memory_mb(self._process)
        fields = os.pread(self._fd, 128, 0).split()
        return (int(fields[1]) - int(fields[2])) * self._page_mb  # resident − shared pages

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
            self._process = psutil.Process()


def _gpu_memory_mb() -> float | None:
    # Only when the trial already uses torch: importing it here would cost seconds and memory.
    torch = sys.modules.get("torch")
    if torch is None or not torch.cuda.is_available():
        return None
    return float(torch.cuda.max_memory_allocated()) / _MB


class Probe:
    """Samples the current process; CPU figures are relative to the probe's creation.

    Create it in the thread whose CPU wait counts (the training thread): :meth:`train_time_s` and the samples'
    ``cpu_wait_s`` are that thread's. Call :meth:`close` when done (it holds one open file).
    """

    def __init__(self) -> None:
        self._process = psutil.Process()
        self.overhead_s = 0.0
        start = time.perf_counter()
        self._wait = ThreadWait()
        self._machine = MachineCounters()
        self._wait0 = self._wait.wait_s()
        self._cpu0 = time.process_time()
        self.started_at = start  # time.perf_counter() at creation: wall_time_s counts from it
        self._first = self._last = self._machine.read(start)
        self._last_cpu, self._last_wall, self._last_wait = self._cpu0, start, self._wait0
        self._runnable: list[float] = []  # runnable_per_core of each sample: their mean is the trial's
        self.outside_s = 0.0  # time spent outside training (see outside()), left out of train_time_s
        self._outside_since: tuple[float, float] | None = None
        self._peak = unique_memory_mb(self._process)
        self.overhead_s += time.perf_counter() - start

    def elapsed_cpu_s(self) -> float:
        """CPU seconds of the process since the probe started; records nothing (safe from any thread)."""
        return time.process_time() - self._cpu0

    def cpu_wait_s(self) -> float:
        """Seconds the training thread waited for a CPU since the probe started (safe from any thread)."""
        return self._wait.wait_s() - self._wait0

    def train_time_s(self) -> float:
        """Wall time since the probe started minus :meth:`cpu_wait_s` and the time spent :meth:`outside` training
        (safe from any thread)."""
        now, wait = time.perf_counter(), self.cpu_wait_s()
        outside = self.outside_s
        if self._outside_since is not None:  # inside an excluded region now: the clock stands still
            outside += max((now - self._outside_since[0]) - (wait - self._outside_since[1]), 0.0)
        return max(now - self.started_at - wait - outside, 0.0)

    @contextlib.contextmanager
    def outside(self) -> Iterator[None]:
        """A region that is not training (a report to the driver, which waits for the driver's turn): its time,
        less the CPU wait inside it (already left out), is added to :attr:`outside_s`, not to ``train_time_s``."""
        self._outside_since = (time.perf_counter(), self.cpu_wait_s())
        try:
            yield
        finally:
            start, wait0 = self._outside_since
            self.outside_s += max((time.perf_counter() - start) - (self.cpu_wait_s() - wait0), 0.0)
            self._outside_since = None

    def sample(self) -> ProbeSample:
        """Read the process now; CPU %, CPU wait share and the machine's contention are over the time since the
        previous sample."""
        start = time.perf_counter()
        cpu = time.process_time()
        wait = self._wait.wait_s()
        memory = unique_memory_mb(self._process)
        machine = self._machine.read(start)
        wall_delta = start - self._last_wall
        cpu_percent = 100.0 * (cpu - self._last_cpu) / wall_delta if wall_delta > 0 else 0.0
        contention = machine_contention(self._last, machine, cpu - self._last_cpu, self._machine.cores)
        if wall_delta > 0 and self._wait.available:
            contention["cpu_wait_share"] = min(max(wait - self._last_wait, 0.0) / wall_delta, 1.0)
        self._last_cpu, self._last_wall, self._last_wait, self._last = cpu, start, wait, machine
        if "runnable_per_core" in contention:
            self._runnable.append(contention["runnable_per_core"])
        self._peak = max(self._peak, memory)
        sample = ProbeSample(
            wall_s=start - self.started_at,
            cpu_s=cpu - self._cpu0,
            cpu_percent=cpu_percent,
            memory_mb=memory,
            memory_mb_peak=self._peak,
            gpu_memory_mb=_gpu_memory_mb(),
            cpu_wait_s=wait - self._wait0,
            outside_s=self.outside_s,
            contention=contention,
        )
        self.overhead_s += time.perf_counter() - start
        return sample

    def contention(self) -> dict[str, float]:
        """What the process received since the probe started: ``cpu_wait_share`` (of its wall time) and the
        machine's ``runnable_per_core``, ``other_cpu_share`` and ``steal_share`` over the same time."""
        now = time.perf_counter()
        wall = now - self.started_at
        out = machine_contention(self._first, self._machine.read(now), self.elapsed_cpu_s(), self._machine.cores)
        if "runnable_per_core" in out:
            out["runnable_per_core"] = float(np.mean([*self._runnable, out["runnable_per_core"]]))
        if wall > 0 and self._wait.available:
            out["cpu_wait_share"] = min(self.cpu_wait_s() / wall, 1.0)
        return out

    def close(self) -> None:
        self._wait.close()


class StepTimer:
    """Collects wall times of training steps for one report window (milliseconds)."""

    def __init__(self, capacity: int) -> None:
        self._times = np.empty(max(capacity, 1), dtype=np.float64)
        self._n = 0

    def add(self, seconds: float) -> None:
        if self._n == len(self._times):
            self._times = np.resize(self._times, 2 * len(self._times))
        self._times[self._n] = seconds
        self._n += 1

    def __len__(self) -> int:
        return self._n

    def summary(self) -> dict[str, float]:
        """``step_time_ms_mean`` and ``step_time_ms_p95`` of the window; then the window restarts."""
        if self._n == 0:
            return {}
        window = self._times[: self._n] * 1000.0
        self._n = 0
        return {"step_time_ms_mean": float(window.mean()), "step_time_ms_p95": float(np.percentile(window, 95))}
