"""Contention that is certain, not lucky: pin the test and busy processes to one core (see tests/measure)."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from collections.abc import Iterator

import pytest

from perftune.measure.contention import ThreadWait

linux_schedstat = pytest.mark.skipif(not ThreadWait().available, reason="needs Linux /proc/thread-self/schedstat")


@contextlib.contextmanager
def sharing_one_core(busy: int) -> Iterator[None]:
    """Run the body (and the threads it starts) on one core beside ``busy`` processes spinning on the same core
    (all ended by pid). Other load on the machine only adds to the contention."""
    cpu = min(os.sched_getaffinity(0))
    before = os.sched_getaffinity(0)
    procs = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(busy)]
    try:
        for p in procs:
            os.sched_setaffinity(p.pid, {cpu})
        os.sched_setaffinity(0, {cpu})
        yield
    finally:
        os.sched_setaffinity(0, before)
        for p in procs:
            p.kill()
            p.wait()
