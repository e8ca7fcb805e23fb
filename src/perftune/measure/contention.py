"""What a measurement received from the machine: the CPU its thread waited for, and the machine's contention.

On a shared machine (a laptop, a CI runner, a cluster node) other processes take CPU time from a trial or a
latency measurement. A wall-clock figure then measures the neighbours as much as the model. Linux knows exactly
how much: ``/proc/thread-self/schedstat`` holds, per thread, the nanoseconds it ran on a CPU and the nanoseconds
it was **runnable but waited in the run queue** while other tasks held the CPU ("run delay"). perftune reads it
(one ``pread`` of an open file, ~2 µs) and reports:

* ``cpu_wait_s`` — the run delay of the measuring (training) thread: time it was ready to run and did not;
* ``train_time_s = wall_time_s − cpu_wait_s`` — the time training took on its own: what a wall-clock budget
  judges, so that a trial is never stopped for CPU other processes took (``wall_time_s`` keeps the raw figure);
* a single-row latency is likewise the call's wall time minus the run delay inside it
  (:mod:`perftune.measure.inference`).

Beside it, the machine's state over the same interval, from ``/proc/stat`` and ``/proc/loadavg``:
``runnable_per_core`` (runnable tasks per usable core, this one included: 1 means a full machine, above 1
tasks queue), ``other_cpu_share`` (CPU time used by other processes, as a share of the machine's capacity) and
``steal_share`` (time a hypervisor gave the virtual CPUs to other guests). ``cpu_wait_share`` is
``cpu_wait_s`` over the wall time of the interval.

Where these files do not exist (not Linux, a restricted sandbox) the wait reads as 0 — ``train_time_s`` is then
the wall time, as before — and the machine figures are left out; :attr:`ThreadWait.available` says which.

Limits, by design: the run delay is the *measuring thread's*. A step that fans out to several threads (a torch
network with ``threads > 1``) also waits at its barriers for a worker thread that was preempted; that part of
the slowdown is not subtracted, so ``train_time_s`` may still grow somewhat under contention for multi-threaded
trials. Sleeping or blocking (I/O, locks) is counted as training time: only waiting for a CPU is excused.
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass

from perftune.measure.threads import usable_cores

__all__ = [
    "MachineCounters", "MachineReading", "ThreadWait", "machine_contention", "this_thread_wait_s", "usable_cores",
]  # fmt: skip

_NS = 1e-9


class ThreadWait:
    """Run-queue wait of the thread that created it (Linux schedstat); readable from any thread.

    The file is opened once (``/proc/thread-self`` resolves to the creating thread), so the watchdog thread
    can read the training thread's wait. Call :meth:`close` when done.
    """

    def __init__(self) -> None:
        try:
            self._fd: int | None = os.open("/proc/thread-self/schedstat", os.O_RDONLY)
            os.pread(self._fd, 96, 0).split()[1]
        except (OSError, IndexError):
            self._fd = None

    @property
    def available(self) -> bool:
        return self._fd is not None

    def wait_s(self) -> float:
        """Seconds the thread has waited for a CPU since it started (0 where unknown)."""
        if self._fd is None:
            return 0.0
        try:
            return int(os.pread(self._fd, 96, 0).split()[1]) * _NS
        except (OSError, IndexError, ValueError):  # closed under us: report no wait rather than fail a trial
            return 0.0

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def __del__(self) -> None:
        self.close()


_per_thread = threading.local()


def this_thread_wait_s() -> float:
    """Seconds the calling thread has waited for a CPU since it started (0 where unknown).

    Each thread keeps its own open :class:`ThreadWait` (closed with the thread), so a server reads it twice per
    request at the cost of two ``pread`` calls.
    """
    wait = getattr(_per_thread, "wait", None)
    if wait is None:
        wait = _per_thread.wait = ThreadWait()
    return wait.wait_s()


@dataclass(frozen=True)
class MachineReading:
    """Machine-wide CPU counters at one moment (seconds, summed over all CPUs)."""

    wall_s: float
    busy_s: float  # user + nice + system + irq + softirq + steal
    total_s: float  # busy + idle + iowait
    steal_s: float
    runnable: int  # tasks running or runnable now (this one included)


class MachineCounters:
    """Reads ``/proc/stat`` and ``/proc/loadavg``; :meth:`read` returns None where they do not exist."""

    def __init__(self) -> None:
        self._tick = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
        self.cores = usable_cores()

    def read(self, wall_s: float) -> MachineReading | None:
        try:
            with open("/proc/stat", "rb") as f:
                fields = [int(v) for v in f.readline().split()[1:9]]
            with open("/proc/loadavg", "rb") as f:
                runnable = int(f.read().split()[3].split(b"/")[0])
        except (OSError, ValueError, IndexError):
            return None
        user, nice, system, idle, iowait, irq, softirq, steal = (fields + [0] * 8)[:8]
        busy = user + nice + system + irq + softirq + steal
        return MachineReading(wall_s, busy / self._tick, (busy + idle + iowait) / self._tick, steal / self._tick,
                              runnable)  # fmt: skip


def machine_contention(
    before: MachineReading | None, after: MachineReading | None, own_cpu_s: float, cores: int
) -> dict[str, float]:
    """``runnable_per_core``, ``other_cpu_share`` and ``steal_share`` between two readings (empty when unknown).

    Args:
        before, after: two readings of :class:`MachineCounters`.
        own_cpu_s: CPU seconds the measured process used in between (left out of "other").
        cores: the usable cores the shares are relative to.
    """
    if before is None or after is None:
        return {}
    total = after.total_s - before.total_s
    out = {"runnable_per_core": after.runnable / cores}
    if total <= 0:  # the counters tick at 10 ms: an interval shorter than a tick tells nothing more
        return out
    other = max(after.busy_s - before.busy_s - own_cpu_s, 0.0)
    out["other_cpu_share"] = min(other / total, 1.0)
    out["steal_share"] = min(max(after.steal_s - before.steal_s, 0.0) / total, 1.0)
    return out
