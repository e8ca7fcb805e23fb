"""The scoring log ("scoring data"): every answered request's inputs, outputs, latency, model and version.

Rows are queued on the request path (a deque append) and written in batches by one background thread, to
SQLite (default) or PostgreSQL through SQLAlchemy. ``close()`` — called on SIGTERM via the server's shutdown —
drains the queue, so every acknowledged request is logged: the row count equals the successful responses.
Ground-truth labels join later by request id (:func:`attach_labels`).
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import orjson
import sqlalchemy as sa

from perftune.errors import PerftuneError
from perftune.track.uri import database_url

log = logging.getLogger("perftune.serve")

metadata = sa.MetaData()

scoring_table = sa.Table(
    "perftune_scoring_log",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("request_id", sa.String(64), nullable=False, unique=True),
    sa.Column("at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("model", sa.String(256), nullable=False),
    sa.Column("version", sa.String(32), nullable=False),
    sa.Column("endpoint", sa.String(32), nullable=False),
    sa.Column("rows", sa.Integer, nullable=False),
    sa.Column("inputs", sa.Text, nullable=False),  # JSON: rows in the model's column order
    sa.Column("outputs", sa.Text, nullable=False),  # JSON: predictions
    sa.Column("latency_ms", sa.Float, nullable=False),
)

feedback_table = sa.Table(
    "perftune_feedback",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("request_id", sa.String(64), nullable=False, index=True),
    sa.Column("model", sa.String(256), nullable=False),
    sa.Column("at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("labels", sa.Text, nullable=False),  # JSON: one label per row of the request
)


def _json(value: Any) -> str:
    return orjson.dumps(value, option=orjson.OPT_SERIALIZE_NUMPY, default=lambda v: v.tolist()).decode()


def scoring_engine(uri: str) -> sa.Engine:
    uri = database_url(uri, "--scoring-uri", "the scoring log is a database table")
    sqlite = uri.startswith("sqlite:")
    if uri.startswith("sqlite:///"):
        Path(uri[len("sqlite:///") :]).parent.mkdir(parents=True, exist_ok=True)
    engine = sa.create_engine(uri, pool_pre_ping=True, **({"connect_args": {"timeout": 30}} if sqlite else {}))
    try:
        metadata.create_all(engine, checkfirst=True)
    except sa.exc.OperationalError as exc:
        raise PerftuneError(f"cannot open the scoring log {uri}: {' '.join(str(exc.orig).split())}") from exc
    except (sa.exc.IntegrityError, sa.exc.ProgrammingError):
        metadata.create_all(engine, checkfirst=True)  # another worker created it at the same moment
    return engine


class ScoringLog:
    """Batched, off-request-path writer of scoring rows."""

    def __init__(self, uri: str, batch_size: int = 500, interval_s: float = 0.2) -> None:
        self.uri = uri
        self.engine = scoring_engine(uri)
        self.batch_size, self.interval_s = batch_size, interval_s
        self._queue: deque[dict[str, Any]] = deque()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self.written = 0
        self._thread = threading.Thread(target=self._run, name="perftune-scoring-log", daemon=True)
        self._thread.start()

    def depth(self) -> int:
        return len(self._queue)

    def log(
        self,
        request_id: str,
        model: str,
        version: str,
        endpoint: str,
        inputs: Any,
        outputs: Any,
        latency_ms: float,
    ) -> None:
        self._queue.append(
            {
                "request_id": request_id,
                "at": datetime.now(timezone.utc),
                "model": model,
                "version": version,
                "endpoint": endpoint,
                "rows": len(inputs),
                "inputs": inputs,
                "outputs": outputs,
                "latency_ms": latency_ms,
            }
        )
        if len(self._queue) >= self.batch_size:
            self._wake.set()

    def _run(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(self.interval_s)
            self._wake.clear()
            self.flush()
        self.flush()

    def flush(self) -> None:
        """Write what is queued now (the writer thread does this every ``interval_s``)."""
        while self._queue:
            batch = []
            while self._queue and len(batch) < self.batch_size:
                batch.append(self._queue.popleft())
            for row in batch:  # serialized here, not on the request path
                row["inputs"] = _json(row["inputs"])
                row["outputs"] = _json(row["outputs"])
            for attempt in range(10):
                try:
                    with self.engine.begin() as conn:
                        conn.execute(scoring_table.insert(), batch)
                    self.written += len(batch)
                    break
                except sa.exc.OperationalError as exc:  # database busy or briefly away: retry, never drop
                    log.warning("scoring log write failed (attempt %d): %s", attempt + 1, exc.orig)
                    time.sleep(min(0.1 * 2**attempt, 5))
            else:
                log.error("scoring log: %d rows could not be written to %s", len(batch), self.uri)

    def close(self) -> None:
        """Write everything queued, then stop (the server calls this on shutdown, SIGTERM included)."""
        self._stop.set()
        self._wake.set()
        self._thread.join()
        self.engine.dispose()


def attach_labels(engine: sa.Engine, model: str | None, items: list[tuple[str, Any]]) -> tuple[int, list[str]]:
    """Store ground truth for logged requests of ``model``; returns (stored, unknown request ids)."""
    ids = [request_id for request_id, _ in items]
    with engine.begin() as conn:
        query = sa.select(scoring_table.c.request_id, scoring_table.c.model, scoring_table.c.rows).where(
            scoring_table.c.request_id.in_(ids)
        )
        known = {row.request_id: row for row in conn.execute(query)}
        unknown = [i for i in ids if i not in known or (model is not None and known[i].model != model)]
        rows = [
            {
                "request_id": request_id,
                "model": known[request_id].model,
                "at": datetime.now(timezone.utc),
                "labels": orjson.dumps(labels if isinstance(labels, list) else [labels]).decode(),
            }
            for request_id, labels in items
            if request_id not in unknown
        ]
        if rows:
            conn.execute(feedback_table.insert(), rows)
    return len(rows), unknown
