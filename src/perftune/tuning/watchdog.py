"""The budget watchdog: ``train_time_s``, ``cpu_s`` and ``memory_mb`` budgets enforced between report windows.

Budget policies look at a trial after each window of ``eval_every`` steps. A step that hangs, burns CPU or
allocates far past the memory budget inside one window would run on unchecked until it returns. The
watchdog is a daemon thread in the trial's process that reads the three growing metrics
(``time.perf_counter``, ``time.process_time`` and one ``pread`` of ``/proc/self/statm``: a few µs) and
compares them with the ``<=`` bounds of the constraints that can stop a trial early.

**When it reads.** A reading is cheap, but waking a Python thread is not while the training thread churns
the GIL (scikit-learn's SGD releases and retakes it on every ``partial_fit``): the woken thread can wait
hundreds of milliseconds for the GIL and burn milliseconds of CPU on futile wake-ups doing so (measured:
~10 ms of CPU per wake-up with 8-row batches, 4 % of a core at one reading per 50 ms). So the watchdog
reads only as often as a bound could possibly be reached: each metric grows at most so fast —
``train_time_s`` 1 s per second, ``cpu_s`` by the number of CPUs the process may use, ``memory_mb`` by
``memory_growth_mb_s`` (first touch of fresh pages; 4 GiB/s, several times what a single thread reaches
on the machines perftune was measured on) — and the next reading is due when the nearest bound could be
reached at that rate, clamped to ``[interval_s, max_interval_s]`` (50 ms – 1 s). A trial far from every
bound is read once a second; one near its bound every 50 ms, so a bound is passed by at most what the
metric can grow in 50 ms before the watchdog sees it. The CPU time of the thread is reported per trial
as ``watchdog_overhead_s`` (``benchmarks/overhead.py`` prints it as a share of trial time).

When a bound is passed, the stop is layered:

1. **Interrupt.** The watchdog raises :class:`WatchdogStop` in the training thread with
   ``PyThreadState_SetAsyncExc`` (the thread is whichever one called :func:`~perftune.tuning.trial.run_trial`;
   under Ray Tune 2.60 that is the function trainable's ``RunnerThread``, not the worker's main thread).
   Python code unwinds at its next bytecode; the trial ends through its normal path with status
   ``stopped_budget``, its history so far and a stop reason with ``enforced: "watchdog"``. The worker stays
   healthy and Ray reuses it.
2. **Escalate.** An asynchronous exception is only delivered when the thread runs Python again; a step
   stuck in native code (``time.sleep``, a blocking call, a long allocation) does not see it. If the
   thread has not unwound ``grace_s`` after the interrupt, the watchdog builds the final result itself
   (history so far + stop reason) and hands it to ``on_stuck``. Under Ray, ``on_stuck`` reports it through
   ``tune.report`` from the watchdog thread and then ends the worker process (SIGKILL): the driver's
   collector sees the final result, then the actor's death, and records the trial as ``stopped_budget``
   (see :func:`perftune.tuning.tune_run.make_record`). In-process callers pass no ``on_stuck``: the stop
   takes effect when the native call returns.

The interrupt is never delivered inside ``report`` (Ray's session code): the training loop wraps it in
:meth:`Watchdog.paused`; a bound passed meanwhile stops the trial right after the report returns. When the
training loop leaves :meth:`Watchdog.armed`, a pending interrupt is either taken synchronously or cleared,
so no stray exception can fire later in the worker.

Not covered, by design: a native call that holds the GIL (``bytearray(n)``, ``[0] * n``) also stops the
watchdog thread until it returns; most numeric code (numpy, BLAS, scikit-learn's Cython loops, torch)
releases the GIL. No address-space limit (``RLIMIT_AS``) is set: it limits *virtual* memory of the whole
process, a Ray worker maps ~10 GB of address space for ~200 MB resident, and an allocation refused to one
of Ray's two dozen C++ threads aborts the worker — the anonymous failure the watchdog exists to avoid. A
memory cgroup needs a writable, delegated cgroup v2 hierarchy and kills with the OOM killer when exceeded.

The watchdog runs only for policies that stop trials (not ``none``: the full search is the counterfactual
that savings are measured against, so it must run every trial to its end). If its thread dies, the
training loop notices at the next window and the trial fails with an error that says so.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import logging
import os
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from typing import Any

from perftune.measure.probe import MemoryReader, Probe
from perftune.results import TrialState
from perftune.tuning.budgets import Constraint, Enforcement, StopReason

log = logging.getLogger(__name__)

# Metrics the watchdog can read cheaply at any moment; other growing metrics (steps, epoch) only change
# when a step ends, so the window checks see them in time.
WATCHED_METRICS = frozenset({"train_time_s", "wall_time_s", "cpu_s", "memory_mb", "memory_mb_peak"})
_MEMORY_METRICS = frozenset({"memory_mb", "memory_mb_peak"})
# The fastest the time metrics can grow, per second of wall time: the CPUs this process may run on bound cpu_s.
_CPUS = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
_GROWTH_PER_S = {"train_time_s": 1.0, "wall_time_s": 1.0, "cpu_s": float(_CPUS)}


@dataclass(frozen=True)
class WatchdogSettings:
    """How often the watchdog looks and how long it waits before escalating.

    Attributes:
        interval_s: the shortest time between two readings of the process (near a bound).
        max_interval_s: the longest time between two readings (far from every bound).
        memory_growth_mb_s: the fastest ``memory_mb`` is assumed to grow, in MiB per second.
        grace_s: how long an interrupted training thread may take to unwind before the watchdog ends the
            trial itself (``on_stuck``).
        report_timeout_s: under Ray, how long the watchdog waits for the driver to take the final result
            before it ends the worker anyway.
    """

    interval_s: float = 0.05
    max_interval_s: float = 1.0
    memory_growth_mb_s: float = 4096.0
    grace_s: float = 1.0
    report_timeout_s: float = 30.0


class WatchdogStop(BaseException):
    """Raised in the training thread when the watchdog stops the trial.

    A ``BaseException`` (like ``KeyboardInterrupt``), so a model's ``except Exception`` does not swallow it.
    """


class WatchdogDied(RuntimeError):
    """The watchdog thread ended with an error; budgets were no longer enforced between windows."""


def watched_constraints(policy: Any) -> tuple[Constraint, ...]:
    """The constraints the watchdog enforces under ``policy`` (none when the policy never stops trials)."""
    if not getattr(policy, "stops_trials", False):
        return ()
    return tuple(c for c in policy.stoppable if c.metric in WATCHED_METRICS)


class Watchdog:
    """Enforces ``<=`` budgets on time, CPU and memory of the current process while a trial trains.

    Args:
        constraints: the budgets to enforce (see :func:`watched_constraints`); empty means no thread.
        policy: the policy's name, recorded in the stop reason.
        total_steps: the trial's planned steps, recorded in the stop reason.
        probe: the trial's probe (``cpu_s``, ``train_time_s`` and ``wall_time_s`` count from its start;
            ``train_time_s`` leaves out the training thread's wait for a CPU, see :mod:`perftune.measure.contention`).
        settings: interval and grace period.
        final_result: builds the trial's final result from a stop reason (used when escalating).
        on_stuck: receives that final result when the training thread does not unwind; None to wait.
    """

    def __init__(
        self,
        constraints: tuple[Constraint, ...],
        policy: str,
        total_steps: int,
        probe: Probe,
        settings: WatchdogSettings,
        final_result: Callable[[StopReason], dict[str, Any]],
        on_stuck: Callable[[dict[str, Any]], None] | None = None,
    ) -> None:
        self.constraints = constraints
        self.policy, self.total_steps = policy, total_steps
        self.probe, self.settings = probe, settings
        self.final_result, self.on_stuck = final_result, on_stuck
        self.at_step = 0  # set by the training loop after each step
        self.reason: StopReason | None = None
        self.failure: BaseException | None = None
        self.overhead_s = 0.0  # CPU time of the watchdog thread
        self.readings = 0
        self.memory_peak_mb = 0.0
        self._target = threading.get_ident()
        self._memory = MemoryReader()
        self._lock = threading.Lock()
        self._interruptible = False
        self._sent = False  # an interrupt was raised in the training thread and not yet taken
        self._escalated = False
        self._done = threading.Event()
        self._wake = threading.Lock()  # held until close(): the cheapest interruptible sleep (see _run)
        self._wake.acquire()
        self._unwound = threading.Event()
        self._escalation_done = threading.Event()  # never set under Ray: on_stuck ends the process
        self._thread: threading.Thread | None = None

    # -- the training thread's side ------------------------------------------------------------------

    def start(self) -> Watchdog:
        """Start watching (no thread when there is nothing to enforce)."""
        if self.constraints:
            self._thread = threading.Thread(target=self._run, name="perftune-watchdog", daemon=True)
            self._thread.start()
        return self

    def close(self) -> None:
        """Stop watching and wait for the thread (a watchdog that is escalating is left to finish)."""
        with self._lock:
            if self._done.is_set():
                return
            self._done.set()
            self._unwound.set()
            escalated = self._escalated
        self._wake.release()
        if self._thread is not None and not escalated:
            self._thread.join()
        self._memory.close()

    def check_alive(self) -> None:
        """Raise :class:`WatchdogDied` when the watchdog thread has died (called after each window)."""
        if self.failure is not None:
            raise WatchdogDied(
                f"the budget watchdog died ({type(self.failure).__name__}: {self.failure}); "
                "budgets were not enforced between windows; this is a perftune bug, please report it"
            ) from self.failure

    @contextlib.contextmanager
    def armed(self) -> Iterator[None]:
        """The region where the watchdog may interrupt the current thread (the training loop).

        On exit a pending interrupt is raised here, synchronously, or cleared when another exception is
        already on its way, so no interrupt can fire after the region.
        """
        self._set_interruptible(True)
        try:
            yield
            self._set_interruptible(False)  # a pending interrupt is raised here and handled below
        except WatchdogStop:
            with self._lock:
                self._interruptible = self._sent = False
                escalated = self._escalated
                self._unwound.set()
            if escalated:  # the watchdog owns the end of this trial: it reports and ends the process
                self._escalation_done.wait()
            raise
        except BaseException:
            with self._lock:
                self._interruptible = False
                self._clear_pending()
            raise

    @contextlib.contextmanager
    def paused(self) -> Iterator[None]:
        """A region inside :meth:`armed` that must not be interrupted (e.g. a report to Ray).

        An exception leaving the region (e.g. the ``SystemExit`` Ray raises in ``tune.report`` when a scheduler
        stops the trial) goes on unchanged and the region stays uninterruptible while it unwinds: turning it into
        a budget stop would let the trial go on and report again, and its worker would never take another trial.
        """
        self._set_interruptible(False)
        yield  # on an exception, armed() clears what is pending
        self._set_interruptible(True)

    def _set_interruptible(self, on: bool) -> None:
        with self._lock:
            self._interruptible = on
            tripped = self._sent or (on and self.reason is not None)
            self._clear_pending()
        if tripped:
            raise WatchdogStop

    def _clear_pending(self) -> None:
        # Called with the lock held. NULL clears the thread's pending asynchronous exception, if any.
        if self._sent:
            ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(self._target), ctypes.c_void_p(0))
            self._sent = False

    # -- the watchdog thread ---------------------------------------------------------------------------

    def _run(self) -> None:
        cpu0 = time.thread_time()
        try:
            delay = self.settings.interval_s
            # A lock acquired with a timeout wakes up at half the CPU cost of Event.wait (no Condition).
            while not self._wake.acquire(timeout=delay):
                values = self.read()
                broken = self._breach(values)
                if broken is not None:
                    self._trip(*broken)
                    return
                delay = self.next_delay(values)
        except BaseException as exc:  # recorded; the training loop raises it
            self.failure = exc
            log.exception("the budget watchdog died; budgets are checked after each window only")
        finally:
            self.overhead_s = time.thread_time() - cpu0

    def read(self) -> dict[str, float]:
        """The watched metrics now (only those a constraint needs)."""
        self.readings += 1
        probe = self.probe
        values = {
            "train_time_s": probe.train_time_s(),
            "wall_time_s": time.perf_counter() - probe.started_at,
            "cpu_s": probe.elapsed_cpu_s(),
        }
        if any(c.metric in _MEMORY_METRICS for c in self.constraints):
            memory = self._memory.read_mb()
            self.memory_peak_mb = max(self.memory_peak_mb, memory)
            values["memory_mb"] = values["memory_mb_peak"] = memory
        return values

    def next_delay(self, values: dict[str, float]) -> float:
        """Seconds until the next reading: when the nearest bound could be reached at the fastest growth."""
        settings = self.settings
        delay = settings.max_interval_s
        for c in self.constraints:
            rate = settings.memory_growth_mb_s if c.metric in _MEMORY_METRICS else _GROWTH_PER_S[c.metric]
            delay = min(delay, (c.bound - values[c.metric]) / rate)
        return max(settings.interval_s, delay)

    def _breach(self, values: dict[str, float]) -> tuple[Constraint, float] | None:
        for c in self.constraints:
            if not c.satisfied(values[c.metric]):
                return c, values[c.metric]
        return None

    def _trip(self, c: Constraint, value: float) -> None:
        """Interrupt the training thread; escalate when it does not unwind within the grace period."""
        reason = StopReason(
            self.policy, str(c), c.metric, c.bound, float(value), None, self.at_step, self.total_steps,
            enforced=Enforcement.WATCHDOG.value,
        )  # fmt: skip
        with self._lock:
            if self._done.is_set():
                return
            self.reason = reason
            if self._interruptible:
                ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(self._target), ctypes.py_object(WatchdogStop))
                self._sent = True
        waited = 0.0
        while not self._unwound.wait(self.settings.grace_s):
            waited += self.settings.grace_s
            with self._lock:
                stuck = self._sent and not self._done.is_set()
                self._escalated = stuck and self.on_stuck is not None
            if self._escalated:
                self._escalate(waited)
                return
            if stuck and waited == self.settings.grace_s:
                log.warning("trial stopped by the watchdog (%s) is stuck in native code; waiting", reason.message())

    def _escalate(self, waited: float) -> None:
        assert self.reason is not None and self.on_stuck is not None
        note = f"the step did not return within {waited:g} s of the interrupt (native code); its process was ended"
        self.reason = replace(self.reason, note=note)
        log.error("%s", self.reason.message())
        try:
            final = self.final_result(self.reason)
        except Exception:  # the trial must still end, with at least its stop reason
            log.exception("could not build the stopped trial's final result")
            final = {"trial_status": TrialState.STOPPED_BUDGET.value, "stop_reason": json.dumps(self.reason.to_dict())}
        try:
            self.on_stuck(final)
        finally:
            self._escalation_done.set()
