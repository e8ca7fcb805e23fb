"""The dead-letter file: scoring rows the database would not take, kept on disk until it takes them.

When a batch still fails after its retries (and the rows that fail on their own are isolated), the scoring
log appends those rows here as JSON lines — one serialized row per line, exactly what the database would have
stored — instead of dropping them. The file lives next to the SQLite scoring database (or in the workspace):
``scoring-deadletter.jsonl``. It is replayed into the database when the writer next succeeds, on the next
server start, and by ``perftune scoring replay``; replay is idempotent because rows are inserted by their
server key (``request_id``), which is unique, and rows already present are skipped.

Several server processes (``--workers``) share one file: every append and every replay holds an exclusive
``flock`` on it, so a replay never truncates a row another process appended meanwhile.
"""

from __future__ import annotations

import fcntl
import logging
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import orjson

log = logging.getLogger("perftune.serve")

DEADLETTER_NAME = "scoring-deadletter.jsonl"

__all__ = ["DEADLETTER_NAME", "DeadLetter", "read_rows", "ship"]


def read_rows(data: bytes, where: str) -> list[dict[str, Any]]:
    """JSON lines → rows; a torn or unreadable line is reported and skipped (it was never acknowledged)."""
    rows, torn = [], 0
    for line in data.split(b"\n"):
        if not line.strip():
            continue
        try:
            row = orjson.loads(line)
        except orjson.JSONDecodeError:
            torn += 1
            continue
        if isinstance(row, dict) and isinstance(row.get("request_id"), str):
            rows.append(row)
        else:
            torn += 1
    if torn:
        log.warning("%s: skipped %d unreadable lines (cut off by a kill while being written)", where, torn)
    return rows


def file_row(row: dict[str, Any]) -> dict[str, Any]:
    """A row as the JSON-lines files keep it: without the binary copy of the inputs (its JSON keeps them)."""
    return {k: v for k, v in row.items() if k != "inputs_f64"}


class DeadLetter:
    """An append-only JSON-lines file of rows waiting for the database, shared by processes through ``flock``."""

    def __init__(self, path: Path) -> None:
        self.path = path

    @contextmanager
    def _locked(self, flags: int) -> Iterator[int]:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, flags | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield fd
        finally:
            os.close(fd)  # closing releases the lock

    def append(self, rows: list[dict[str, Any]]) -> None:
        """Write ``rows`` to the end of the file and fsync it (raises OSError when the disk refuses)."""
        data = b"".join(orjson.dumps(file_row(row)) + b"\n" for row in rows)
        with self._locked(os.O_WRONLY | os.O_APPEND) as fd:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            os.fsync(fd)

    def rows(self) -> list[dict[str, Any]]:
        """The rows waiting in the file, read under its lock (never half-way through a replay's rewrite)."""
        if not self.path.exists():
            return []
        with self._locked(os.O_RDONLY) as fd:
            size = os.fstat(fd).st_size
            return read_rows(os.pread(fd, size, 0) if size else b"", str(self.path))

    def pending(self) -> bool:
        """Whether rows are waiting (a cheap stat; the writer thread asks after every successful batch)."""
        try:
            return self.path.stat().st_size > 0
        except FileNotFoundError:
            return False

    def replay(
        self, write: Callable[[list[dict[str, Any]]], int], outage: Callable[[Exception], bool]
    ) -> tuple[int, int, int]:
        """Hand every waiting row to ``write`` (an idempotent insert); keep in the file only what it refused.

        Returns:
            (rows read, rows newly inserted, rows kept in the file) — see :func:`ship`.
        """
        if not self.pending():
            return 0, 0, 0
        with self._locked(os.O_RDWR) as fd:
            size = os.fstat(fd).st_size
            rows = read_rows(os.pread(fd, size, 0) if size else b"", str(self.path))
            inserted, kept = ship(rows, write, outage)
            os.ftruncate(fd, 0)
            if kept:
                os.pwrite(fd, b"".join(orjson.dumps(file_row(row)) + b"\n" for row in kept), 0)
            os.fsync(fd)
        return len(rows), inserted, len(kept)


def ship(
    rows: list[dict[str, Any]],
    write: Callable[[list[dict[str, Any]]], int],
    outage: Callable[[Exception], bool],
    batch_size: int = 500,
) -> tuple[int, list[dict[str, Any]]]:
    """Write rows in batches; returns (rows newly inserted, rows not written).

    A batch ``write`` refuses is retried row by row, so a row the database will never take does not hold the
    others back; when a refusal is an ``outage`` (the database is away), the rest is returned untried.
    """
    inserted, kept = 0, []
    for start in range(0, len(rows), batch_size):
        batch = rows[start : start + batch_size]
        try:
            inserted += write(batch)
            continue
        except Exception as exc:
            if outage(exc):
                return inserted, kept + rows[start:]
        for offset, row in enumerate(batch):
            try:
                inserted += write([row])
            except Exception as exc:
                if outage(exc):
                    return inserted, kept + rows[start + offset :]
                kept.append(row)
    return inserted, kept
