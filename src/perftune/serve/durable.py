"""The durable scoring log (``--scoring-durability local``): a per-process append-only file the database is fed from.

On the request path each answered request's row is appended with one ``os.write`` on an ``O_APPEND`` file
descriptor *before the response is sent*: the bytes are in the kernel's page cache when the client sees the
answer, so killing the process (SIGKILL, the OOM killer) loses nothing acknowledged. Only a power loss or a
kernel crash can lose what was not yet fsynced; the writer thread fsyncs every interval (0.2 s by default).

The writer thread ships rows to the database and records how far it got in ``<file>.offset`` (written to a
temporary file and renamed, so it is either the old or the new offset). A row shipped but not yet recorded is
shipped again after a restart; the database skips it because its server key is unique.

Files live in ``<spool>/scoring-durable/``, one per server process (``scoring-<pid>-<random>.jsonl``), each
held under an exclusive ``flock`` for the life of its process. The kernel drops the lock when the process dies,
however it dies, so a file whose lock can be taken belongs to a dead process: the next server start (any
worker) or ``perftune scoring replay`` ships the rest of it and removes it.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import uuid
from collections.abc import Callable, Iterator
from enum import Enum
from pathlib import Path
from typing import Any

import orjson

from perftune.serve.deadletter import read_rows

log = logging.getLogger("perftune.serve")

DURABLE_FOLDER = "scoring-durable"
ROTATE_BYTES = 64 * 2**20  # a fully shipped file is truncated once it is this large

__all__ = ["DURABLE_FOLDER", "Durability", "DurableLog", "ship_orphans"]


class Durability(str, Enum):
    """``--scoring-durability``: what an answered request's scoring row survives."""

    memory = "memory"  # queued in memory: SIGTERM drains it; SIGKILL / OOM loses the queue
    local = "local"  # written through to a local file before the response: SIGKILL loses nothing answered


def _read_offset(path: Path) -> int:
    try:
        return int(path.read_text().strip() or 0)
    except (FileNotFoundError, ValueError):
        return 0


def _write_offset(path: Path, offset: int) -> None:
    temporary = path.with_suffix(f".tmp{os.getpid()}")
    temporary.write_text(str(offset))
    os.replace(temporary, path)


class DurableLog:
    """This process's append-only scoring file (not thread-safe: the caller serializes appends)."""

    def __init__(self, folder: Path) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        self.path = folder / f"scoring-{os.getpid()}-{uuid.uuid4().hex[:8]}.jsonl"
        self.offset_path = self.path.with_suffix(".offset")
        # created under another name and locked before it appears, so no other process takes it for an orphan
        unlocked = self.path.with_name(self.path.name + ".new")
        self.fd = os.open(unlocked, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_EXCL, 0o644)
        fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # held until this process ends: "owner alive"
        os.rename(unlocked, self.path)
        self.size = self.synced = self.shipped_to = 0

    def append(self, row: dict[str, Any]) -> int:
        """Write one row through to the OS (no user-space buffer); returns the file's end offset after it."""
        data = orjson.dumps(row) + b"\n"
        view = memoryview(data)
        while view:
            view = view[os.write(self.fd, view) :]
        self.size += len(data)
        return self.size

    def sync(self) -> None:
        """fsync what was appended since the last call (the writer thread calls this every interval)."""
        if self.size > self.synced:
            size = self.size
            os.fsync(self.fd)
            self.synced = size

    def shipped(self, offset: int) -> None:
        """Record that every row up to ``offset`` is in the database (or the dead-letter file)."""
        if offset > self.shipped_to:
            _write_offset(self.offset_path, offset)
            self.shipped_to = offset

    def rotate_if_done(self) -> None:
        """Empty a large file once everything in it is shipped (the caller holds the append lock)."""
        if self.size >= ROTATE_BYTES and self.shipped_to == self.size:
            os.ftruncate(self.fd, 0)  # a kill right after this leaves offset > size: nothing to ship, correct
            _write_offset(self.offset_path, 0)
            self.size = self.synced = self.shipped_to = 0

    def close(self) -> None:
        """Remove the file if everything in it is shipped; otherwise keep it for the next start to ship."""
        os.fsync(self.fd)
        if self.shipped_to == self.size:
            self.path.unlink(missing_ok=True)
            self.offset_path.unlink(missing_ok=True)
        os.close(self.fd)


@contextlib.contextmanager
def _orphan(path: Path) -> Iterator[int | None]:
    """The file's descriptor if its owner is dead (its lock can be taken), else None."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        yield None
        return
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield None  # a live server process owns it
            return
        yield fd
    finally:
        os.close(fd)


def ship_orphans(folder: Path, handle: Callable[[list[dict[str, Any]]], None], skip: Path | None = None) -> int:
    """Hand the unshipped rows of files left by dead processes to ``handle``, then remove those files.

    Args:
        folder: the ``scoring-durable`` folder.
        handle: writes the rows to the database or, what it cannot, to the dead-letter file; if it raises, the
            file stays for the next try.
        skip: this process's own file.

    Returns:
        How many files were shipped and removed.
    """
    if not folder.is_dir():
        return 0
    files = 0
    for path in sorted(folder.glob("scoring-*.jsonl")):
        if path == skip:
            continue
        with _orphan(path) as fd:
            if fd is None:
                continue
            offset_path = path.with_suffix(".offset")
            offset = _read_offset(offset_path)
            size = os.fstat(fd).st_size
            rows = read_rows(os.pread(fd, size - offset, offset), str(path)) if size > offset else []
            if rows:
                handle(rows)
                log.warning("scoring log: shipped %d rows left by a stopped server in %s", len(rows), path.name)
            path.unlink(missing_ok=True)
            offset_path.unlink(missing_ok=True)
            files += 1
    return files
