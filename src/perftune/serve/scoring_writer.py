"""The scoring log's writer: rows queued on the request path, written in batches by one thread that never dies.

Two durability modes (``--scoring-durability``):

* ``memory`` (default): :meth:`ScoringLog.log` appends the row to an in-memory deque — nothing else on the
  request path. SIGTERM drains the queue (uvicorn finishes in-flight requests, then the lifespan shutdown calls
  :meth:`ScoringLog.close`); SIGKILL or an OOM kill loses what was queued (at most ~``interval_s`` of traffic
  plus whatever a database outage held back).
* ``local``: the row is also written through to this process's durable file
  (:class:`~perftune.serve.durable.DurableLog`) before the response is sent, so a SIGKILL loses nothing that was
  acknowledged; a power loss loses at most the last fsync interval.

Every ``interval_s`` the thread writes what is queued. A failed batch — *any* exception, not only a database
that is briefly away — is retried with exponential backoff (``retries`` attempts); then its rows are tried one
by one so that one poison row cannot take its batch down, and the rows that still fail are appended to the
dead-letter file, counted (``on_failure``, the ``perftune_scoring_log_failures_total`` counter) and reported by
an error line naming the file. While the database refuses everything, later batches go straight to the
dead-letter file for ``cooldown_s`` instead of waiting through retries. After the next successful batch, on
start and on ``perftune scoring replay``, the dead-letter file is replayed (idempotently, by server key).

The loop catches every exception of a step, logs and counts it, and goes on: the thread ends only when
:meth:`close` asks it to. If even the dead-letter file cannot be written, the rows' server keys are logged at
CRITICAL level — no row disappears without a trace.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import orjson

from perftune.serve.deadletter import DEADLETTER_NAME, DeadLetter
from perftune.serve.durable import DURABLE_FOLDER, Durability, DurableLog
from perftune.serve.scoring import inputs_f64, insert_rows, outage, replay, scoring_engine

log = logging.getLogger("perftune.serve")

__all__ = ["ScoringLog"]


def _json(value: Any) -> str:
    return orjson.dumps(value, option=orjson.OPT_SERIALIZE_NUMPY, default=lambda v: v.tolist()).decode()


class ScoringLog:
    """Batched, off-request-path writer of scoring rows, with retries, a dead-letter file and an optional local log.

    Args:
        uri: the scoring database (SQLAlchemy URL; ``postgresql://`` means psycopg).
        spool: folder of the dead-letter file and the durable log (see :func:`perftune.serve.scoring.spool_dir`).
        durability: ``memory`` or ``local`` (see the module docstring).
        on_failure: called with the number of rows that went to the dead-letter file (or were lost).
        batch_size: rows per insert.
        interval_s: seconds between writes (and fsyncs of the durable log).
        retries: attempts per batch before its rows are isolated and dead-lettered.
        backoff_s: first pause between attempts; doubles each time.
        cooldown_s: after the database refused a whole batch, send batches straight to the dead-letter file
            for this long.
    """

    def __init__(
        self,
        uri: str,
        spool: Path,
        durability: Durability | str = Durability.memory,
        on_failure: Callable[[int], None] | None = None,
        batch_size: int = 500,
        interval_s: float = 0.2,
        retries: int = 4,
        backoff_s: float = 0.1,
        cooldown_s: float = 2.0,
    ) -> None:
        self.uri = uri
        self.engine = scoring_engine(uri)
        self.spool = spool
        self.deadletter = DeadLetter(spool / DEADLETTER_NAME)
        self.durable = DurableLog(spool / DURABLE_FOLDER) if Durability(durability) is Durability.local else None
        self.on_failure = on_failure or (lambda n: None)
        self.batch_size, self.interval_s = batch_size, interval_s
        self.retries, self.backoff_s, self.cooldown_s = retries, backoff_s, cooldown_s
        self._queue: deque[tuple[dict[str, Any], int]] = deque()  # (row, durable end offset after it)
        self._append = threading.Lock()  # orders durable appends and queue appends identically
        self._flushing = threading.Lock()  # one flush at a time (the thread, or feedback asking for one)
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._refusing_until = self._next_replay = 0.0
        self._replay_backoff_s = 0.5
        self.written = self.dead_lettered = self.lost = self.loop_errors = 0
        self._thread = threading.Thread(target=self._run, name="perftune-scoring-log", daemon=True)
        self._thread.start()

    # ------------------------------------------------------------------------------------- request path

    def depth(self) -> int:
        """Rows waiting to be written."""
        return len(self._queue)

    def log(
        self,
        request_id: str,
        client_id: str | None,
        model: str,
        version: str,
        endpoint: str,
        inputs: Any,
        outputs: Any,
        latency_ms: float,
        cpu_wait_ms: float | None = None,
    ) -> None:
        """Queue one answered request (in ``local`` mode: write it through to the durable file first).

        Raises:
            OSError: ``local`` mode only — the durable file cannot be written; the request must not be answered.
        """
        row = {
            "request_id": request_id,
            "client_id": client_id,
            "at": datetime.now(timezone.utc),
            "model": model,
            "version": version,
            "endpoint": endpoint,
            "rows": len(inputs),
            "inputs": inputs,
            "outputs": outputs,
            "latency_ms": latency_ms,
            "cpu_wait_ms": cpu_wait_ms,
        }
        if self.durable is None:
            self._queue.append((row, 0))
        else:
            row["inputs"], row["outputs"] = _json(inputs), _json(outputs)
            with self._append:
                offset = self.durable.append(row)
                row["inputs_f64"] = inputs_f64(inputs)  # the database's copy only (see scoring.py)
                self._queue.append((row, offset))
        if len(self._queue) >= self.batch_size:
            self._wake.set()

    # ------------------------------------------------------------------------------------- writer thread

    def _run(self) -> None:
        self._guarded(self._recover)
        while not self._stop.is_set():
            self._wake.wait(self.interval_s)
            self._wake.clear()
            self._guarded(self._tick)
        self._guarded(self.flush)

    def _guarded(self, step: Callable[[], None]) -> None:
        try:
            step()
        except Exception:  # the thread must outlive any error: count it, say it, go on
            self.loop_errors += 1
            log.exception("scoring log: unexpected error in the writer (it keeps running)")

    def _recover(self) -> None:
        """On start: ship what earlier runs left (durable logs of dead processes, the dead-letter file)."""
        result = replay(self.engine, self.spool, own_file=self.durable.path if self.durable else None)
        if result.durable_files or result.deadletter_rows:
            log.warning(
                "scoring log: replayed %d durable logs of stopped servers and %d dead-letter rows (%d rows new)",
                result.durable_files,
                result.deadletter_rows,
                result.inserted,
            )
        self._after_replay(result.kept)

    def _tick(self) -> None:
        if self.durable is not None:
            self.durable.sync()
        wrote = self.flush()
        if wrote is not False and time.monotonic() >= self._next_replay and self.deadletter.pending():
            self._replay_deadletter()
        if self.durable is not None:
            with self._append:
                if not self._queue:
                    self.durable.rotate_if_done()

    def _replay_deadletter(self) -> None:
        """Replay the dead-letter file: after a batch the database took, at start, and at shutdown."""
        rows, inserted, kept = self.deadletter.replay(lambda rows: insert_rows(self.engine, rows), outage)
        if rows > kept:
            log.warning("scoring log: replayed %d rows from %s (%d new)", rows - kept, self.deadletter.path, inserted)
        self._after_replay(kept)

    def _after_replay(self, kept: int) -> None:
        if kept:  # try again later, less and less often while the database keeps refusing them
            self._replay_backoff_s = min(self._replay_backoff_s * 2, 60.0)
            log.error(
                "scoring log: %d rows in %s are still refused by %s; retrying in %.0f s",
                kept,
                self.deadletter.path,
                self.uri,
                self._replay_backoff_s,
            )
        else:
            self._replay_backoff_s = 0.5
        self._next_replay = time.monotonic() + (self._replay_backoff_s if kept else 0)

    def flush(self) -> bool | None:
        """Write what is queued now; returns None if nothing was queued, else whether every batch was written.

        The writer thread calls this every ``interval_s``; the feedback endpoint calls it so that labels can
        follow right after the answer.
        """
        written: bool | None = None
        with self._flushing:
            while self._queue:
                batch: list[tuple[dict[str, Any], int]] = []
                while self._queue and len(batch) < self.batch_size:
                    batch.append(self._queue.popleft())
                rows = [row for row, _ in batch]
                try:
                    ok = self._write(rows)
                except Exception:  # never lose a popped batch, whatever went wrong above
                    log.exception("scoring log: unexpected error writing a batch")
                    self._dead_letter(rows, "unexpected error")
                    ok = False
                written = ok and written is not False
                if self.durable is not None:
                    self.durable.shipped(batch[-1][1])
        return written

    def _write(self, rows: list[dict[str, Any]]) -> bool:
        for row in rows:  # serialized here, not on the request path (memory mode)
            if not isinstance(row["inputs"], str):
                row["inputs_f64"] = inputs_f64(row["inputs"])
                row["inputs"], row["outputs"] = _json(row["inputs"]), _json(row["outputs"])
        if time.monotonic() < self._refusing_until:
            self._dead_letter(rows, "the database refused the previous batch")
            return False
        error: Exception | None = None
        for attempt in range(self.retries):
            try:
                self.written += insert_rows(self.engine, rows)
                return True
            except Exception as exc:
                error = exc
                log.warning("scoring log: writing %d rows failed (try %d): %s", len(rows), attempt + 1, _reason(exc))
                if attempt + 1 < self.retries:
                    time.sleep(self.backoff_s * 2**attempt)
        failed = self._isolate(rows)
        if failed:
            self._dead_letter(failed, _reason(error))
        return not failed

    def _isolate(self, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Try rows one by one: the good ones are written, the poison ones returned (all, if the database is away)."""
        if len(rows) == 1:
            failed = rows
        else:
            failed = []
            for i, row in enumerate(rows):
                try:
                    self.written += insert_rows(self.engine, [row])
                except Exception as exc:
                    if outage(exc):  # the database itself is unavailable: stop trying row by row
                        failed.extend(rows[i:])
                        break
                    failed.append(row)
        if len(failed) == len(rows):
            self._refusing_until = time.monotonic() + self.cooldown_s
        return failed

    def _dead_letter(self, rows: list[dict[str, Any]], reason: str) -> None:
        try:
            self.deadletter.append(rows)
        except Exception as exc:
            self.lost += len(rows)
            self.on_failure(len(rows))
            keys = ", ".join(row["request_id"] for row in rows[:50])
            log.critical(
                "scoring log: %d rows could not be written to %s (%s) NOR to the dead-letter file %s (%s);"
                " request ids: %s%s",
                len(rows),
                self.uri,
                reason,
                self.deadletter.path,
                exc,
                keys,
                " …" if len(rows) > 50 else "",
            )
            return
        self.dead_lettered += len(rows)
        self.on_failure(len(rows))
        log.error(
            "scoring log: %d rows could not be written to %s (%s); they are in %s and will be replayed"
            " (next start, or `perftune scoring replay`)",
            len(rows),
            self.uri,
            reason,
            self.deadletter.path,
        )

    # ------------------------------------------------------------------------------------------ shutdown

    def close(self) -> None:
        """Write everything queued, then stop (the server calls this on shutdown, SIGTERM included).

        Rows the database does not take by then are in the dead-letter file, and an error line says how many.
        """
        before = self.dead_lettered + self.lost
        # A last real try: the cooldown spares the request path during an outage, but at shutdown the rows
        # should reach the database if it is back (the final flush retries, then dead-letters what it refuses).
        self._refusing_until = 0.0
        self._stop.set()
        self._wake.set()
        self._thread.join()
        if self._queue:  # the thread ended without draining (it cannot, but never leave rows behind silently)
            self._guarded(self.flush)
        if self.deadletter.pending() and time.monotonic() >= self._refusing_until:
            self._guarded(self._replay_deadletter)  # the database is back: leave nothing waiting that it takes
        if self.durable is not None:
            self.durable.close()
        unwritten = self.dead_lettered + self.lost - before
        if unwritten:
            log.error(
                "scoring log: shutdown could not drain %d rows into %s; they are in %s",
                unwritten,
                self.uri,
                self.deadletter.path,
            )
        self.engine.dispose()


def _reason(exc: BaseException | None) -> str:
    """One line about a database error, without the SQL statement and its parameters (they hold request data)."""
    if exc is None:
        return "unknown error"
    orig = getattr(exc, "orig", None)
    text = str(orig if orig is not None else exc)
    return f"{type(orig if orig is not None else exc).__name__}: {' '.join(text.split())[:300]}"
