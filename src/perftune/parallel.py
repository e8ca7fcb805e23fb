"""Spreading independent CPU-bound pieces of one command (importance fits, figures) over the cores.

:func:`local_pool` gives a pool of *forked* worker processes: a fork inherits every module the command has
imported, so a worker starts in milliseconds where a fresh interpreter would spend seconds importing
scikit-learn, Optuna and matplotlib again. Forking is only safe from a process with a single thread (a lock
held by another thread at the fork stays locked in the child forever), so where fork is unavailable or other
threads run, or one worker would do, the pool runs each task at once in the calling process instead. Either
way the caller sees the same :class:`concurrent.futures.Executor`: results, and exceptions, through futures.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import Executor, Future, ProcessPoolExecutor
from typing import Any

__all__ = ["InlineExecutor", "local_pool"]


class InlineExecutor(Executor):
    """Runs each submitted call at once, in the caller's thread; its future is already done."""

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future[Any]:
        future: Future[Any] = Future()
        try:
            future.set_result(fn(*args, **kwargs))
        except BaseException as exc:  # handed to the caller through the future, as a pool would
            future.set_exception(exc)
        return future


@contextlib.contextmanager
def local_pool(workers: int | None = None) -> Iterator[Executor]:
    """An executor with ``workers`` forked processes (default: one per core), or an :class:`InlineExecutor`
    where forking is unavailable or unsafe (see the module docstring). Waits for its tasks on exit."""
    workers = workers or os.cpu_count() or 1
    forkable = "fork" in multiprocessing.get_all_start_methods() and threading.active_count() == 1
    pool: Executor = (
        ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("fork"))
        if workers > 1 and forkable
        else InlineExecutor()
    )
    pool.submit(int)  # start the processes now, while this process has one thread
    try:
        yield pool
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
