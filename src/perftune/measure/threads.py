"""One thread setting for every runtime of a process: trial, registration and serving use the same one.

A model's latency depends on how many threads its kernels run on, and on a busy machine more than on a quiet
one: a kernel split over *n* threads waits at its barrier for the slowest, and when another process holds a
core that thread waits for the scheduler. A single-row predict measured on one thread and served on every core
is not the model that was measured. So every place that runs a model pins its threads here, with one number:

* BLAS and OpenMP pools already loaded (numpy's OpenBLAS, scikit-learn's OpenMP, torch's libgomp), through
  threadpoolctl;
* torch's intra-op pool (``torch.set_num_threads``), only when torch is already imported — importing it costs
  seconds, and a process that never loads a torch model never needs it;
* onnxruntime: a session made with :func:`session_options` (``intra_op_num_threads`` = n, one inter-op thread,
  and no spin-waiting, which burns a core that a busy machine does not have spare).

Libraries loaded *after* :func:`limit_threads` are not covered by threadpoolctl (it sees what is loaded); a
process that is yet to load them gets :func:`thread_env` in its environment (as ``perftune serve --workers``
does for its workers and ``perftune deploy`` in its manifests), and a caller that loads a model applies the
limit again once it is loaded.

The setting a version was measured with is recorded on it as the tag :data:`THREADS_TAG`.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any

__all__ = [
    "THREADS_TAG",
    "THREAD_ENV_VARS",
    "ThreadLimit",
    "default_threads",
    "limit_threads",
    "serving_threads",
    "session_options",
    "thread_env",
    "threads_text",
    "usable_cores",
]

THREADS_TAG = "perftune.threads"  # the version tag: threads its latency and throughput were measured with
# What OpenMP, OpenBLAS, MKL and Apple's Accelerate read when they start in a new process.
THREAD_ENV_VARS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "VECLIB_MAXIMUM_THREADS")


def usable_cores() -> int:
    """Cores this process may run on (its CPU affinity, e.g. a container's cpuset), at least 1."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # no sched_getaffinity (macOS, Windows)
        return max(1, os.cpu_count() or 1)


def default_threads(workers: int = 1) -> int:
    """Threads per process when ``workers`` processes share the usable cores: cores ÷ workers, at least 1."""
    return max(1, usable_cores() // max(1, workers))


def serving_threads(measured: int | None, workers: int = 1) -> int:
    """A server's default: the threads its version was measured with (1 when it records none — registration
    measures on ``cpus_per_trial`` threads, 1 by default), at most :func:`default_threads` of its ``workers``.

    Not cores ÷ workers: a single-row predict is too small to gain from a second thread and waits at every
    barrier for it (benchmarks/serve_threads.py: BBC's int8 MLP answered in 2–3 ms on 1 thread and 20–50 ms on
    2, quiet or busy, on 2 cores)."""
    return min(measured or 1, default_threads(workers))


def threads_text(threads: int) -> str:
    """``1 thread``, ``2 threads``: a thread count as messages say it."""
    return f"{threads} thread{'' if threads == 1 else 's'}"


def thread_env(threads: int) -> dict[str, str]:
    """The environment that gives a *new* process's BLAS and OpenMP pools ``threads`` threads when they load."""
    return dict.fromkeys(THREAD_ENV_VARS, str(threads))


def session_options(threads: int) -> Any:
    """onnxruntime ``SessionOptions`` for ``threads`` intra-op threads: one inter-op thread, sequential execution,
    and idle threads that sleep instead of spinning (a spinning pool takes CPU that other work on the machine
    needs, and on a busy machine waits for its own descheduled threads)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = max(1, threads)
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.add_session_config_entry("session.inter_op.allow_spinning", "0")
    return options


@dataclass
class ThreadLimit:
    """``threads`` applied to the runtimes of this process; :meth:`restore` (or leaving the ``with`` block) puts
    back what was there before. Applying it again (:meth:`apply`) covers libraries loaded since."""

    threads: int
    _pools: list[Any] = field(default_factory=list, repr=False)
    _torch_before: int | None = field(default=None, repr=False)

    def apply(self) -> ThreadLimit:
        """Pin the pools loaded now (threadpoolctl) and torch's intra-op pool if torch is imported."""
        from threadpoolctl import threadpool_limits

        torch = sys.modules.get("torch")
        torch = torch if hasattr(torch, "set_num_threads") else None  # None, or a torch still being imported
        if torch is not None and self._torch_before is None:
            self._torch_before = torch.get_num_threads()  # before threadpoolctl: torch reads OpenMP's setting
        self._pools.append(threadpool_limits(limits=self.threads))
        if torch is not None:
            torch.set_num_threads(self.threads)
        return self

    def restore(self) -> None:
        """Put back the limits found before the first :meth:`apply` (newest first)."""
        if self._torch_before is not None:  # first: torch.set_num_threads also sets the BLAS and OpenMP pools
            sys.modules["torch"].set_num_threads(self._torch_before)
            self._torch_before = None
        while self._pools:
            self._pools.pop().restore_original_limits()

    def __enter__(self) -> ThreadLimit:
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.restore()


def limit_threads(threads: int) -> ThreadLimit:
    """Run this process's BLAS, OpenMP and torch pools on ``threads`` threads, now.

    A server keeps the limit for its life; a measurement uses it as a context manager::

        with limit_threads(1):
            measure(...)

    Args:
        threads: threads per pool, at least 1.

    Raises:
        ValueError: ``threads`` is below 1.
    """
    if threads < 1:
        raise ValueError(f"threads must be at least 1, got {threads}")
    return ThreadLimit(threads).apply()
