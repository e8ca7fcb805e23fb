"""Reading one window of the scoring log: only its rows, in chunks, on SQLite and PostgreSQL alike.

A window is the last N rows (``10000``) or the last duration (``1h``) of one model version's scoring data.
Its bounds are found on the ``(model, version, at)`` index reading two narrow columns; its rows are then
streamed in chunks of about :data:`CHUNK_ROWS` rows (a server-side cursor on PostgreSQL), each parsed into a
float matrix (the model's column order, as logged) and its predictions — so a check's memory is bounded by
the chunk, not the window.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

import numpy as np
import orjson
import sqlalchemy as sa

from perftune.errors import PerftuneError
from perftune.serve.scoring import feedback_table, scoring_table

CHUNK_ROWS = 50_000


@dataclass(frozen=True)
class Bounds:
    """The time span of a window (inclusive) and what it holds."""

    start: datetime | None
    end: datetime | None
    requests: int
    rows: int

    @property
    def seconds(self) -> float:
        if self.start is None or self.end is None:
            return 0.0
        return max((self.end - self.start).total_seconds(), 0.0)


@dataclass
class Chunk:
    X: np.ndarray  # rows × features
    predictions: np.ndarray  # one per row
    latency_ms: np.ndarray  # one per request
    at: list[datetime]  # one per request
    cpu_wait_ms: np.ndarray  # one per request: of its latency, the server's wait for a CPU (NaN: not recorded)


def _utc(value: datetime | None) -> datetime | None:
    if value is not None and value.tzinfo is None:  # SQLite gives naive datetimes back
        return value.replace(tzinfo=timezone.utc)
    return value


def _version_filter(model: str, version: str):
    return sa.and_(scoring_table.c.model == model, scoring_table.c.version == version)


def bounds(engine: sa.Engine, model: str, version: str, kind: str, size: float, now: datetime | None = None) -> Bounds:
    """The window of ``model`` v``version``: the last ``size`` rows (``kind="rows"``) or seconds."""
    if kind == "seconds":
        return since(engine, model, version, (now or datetime.now(timezone.utc)) - timedelta(seconds=size))
    t = scoring_table.c
    where = _version_filter(model, version)
    with engine.connect() as conn:
        newest_first = (
            sa.select(t.at, t.rows).where(where).order_by(t.at.desc(), t.id.desc()).execution_options(yield_per=10_000)
        )
        end = start = None
        requests = rows = 0
        for at, n in conn.execute(newest_first):
            end = end or at
            start = at
            requests += 1
            rows += n
            if rows >= size:
                break
    return Bounds(_utc(start), _utc(end), requests, rows)


def _in_window(window: Bounds, model: str, version: str):
    t = scoring_table.c
    return sa.and_(_version_filter(model, version), t.at >= window.start, t.at <= window.end)


def chunks(
    engine: sa.Engine, model: str, version: str, window: Bounds, chunk_rows: int = CHUNK_ROWS
) -> Iterator[Chunk]:
    """The window's requests, oldest first, as parsed chunks of about ``chunk_rows`` rows.

    Inputs are read from their float64 copy (``inputs_f64``) where the server stored one, else parsed from
    their JSON (rows that came back through a dead-letter file or a durable log); the JSON is only fetched then.
    """
    if not window.requests:
        return
    t = scoring_table.c
    json_if_needed = sa.case((t.inputs_f64.is_(None), t.inputs), else_=sa.null())
    query = sa.select(t.at, t.rows, t.inputs_f64, json_if_needed, t.outputs, t.latency_ms, t.cpu_wait_ms)
    query = query.where(_in_window(window, model, version)).order_by(t.at, t.id)
    query = query.execution_options(stream_results=True, yield_per=1000)
    inputs: list[np.ndarray] = []
    outputs: list[np.ndarray] = []
    latency: list[float] = []
    waits: list[float | None] = []
    at: list[datetime] = []
    rows = 0

    def flush() -> Chunk:
        widths = {x.shape[1] for x in inputs}
        if len(widths) > 1:
            raise PerftuneError(
                f"the scoring log holds requests of {sorted(widths)} columns for {model} v{version} in one window; "
                "was the version re-registered with other features?"
            )
        waited = np.asarray(waits, dtype=float)  # None → NaN
        return Chunk(np.concatenate(inputs), np.concatenate(outputs), np.asarray(latency), at, waited)

    with engine.connect() as conn:
        for when, n, raw_bin, raw_in, raw_out, ms, wait_ms in conn.execute(query):
            inputs.append(_matrix(raw_bin, raw_in, n))
            outputs.append(_values(_flat(orjson.loads(raw_out))).reshape(-1))  # class names stay strings
            latency.append(ms)
            waits.append(wait_ms)
            at.append(_utc(when))
            rows += n
            if rows >= chunk_rows:
                yield flush()
                inputs, outputs, latency, waits, at, rows = [], [], [], [], [], 0
    if inputs:
        yield flush()


def _flat(predictions):
    """One prediction per row (a request's outputs may be nested one level, e.g. ``[[0], [1]]``)."""
    return [p[0] if isinstance(p, list) else p for p in predictions]


@dataclass
class Labelled:
    """The requests of a window that got feedback, one entry per row, oldest first."""

    X: np.ndarray
    predictions: np.ndarray
    labels: np.ndarray
    at: np.ndarray  # the request's time (UTC seconds since the epoch) of each row

    def __len__(self) -> int:
        return len(self.labels)


def labelled(engine: sa.Engine, model: str, version: str, window: Bounds) -> Labelled:
    """Inputs, predictions, labels and times of the window's requests that got feedback."""
    if not window.requests:
        return Labelled(np.empty((0, 0)), np.array([]), np.array([]), np.array([]))
    s, f = scoring_table.c, feedback_table.c
    json_if_needed = sa.case((s.inputs_f64.is_(None), s.inputs), else_=sa.null())
    query = (
        sa.select(s.at, s.rows, s.inputs_f64, json_if_needed, s.outputs, f.labels)
        .join(feedback_table, f.request_id == s.request_id)
        .where(_in_window(window, model, version))
        .order_by(s.at, s.id)
        .execution_options(stream_results=True, yield_per=1000)
    )
    inputs: list[np.ndarray] = []
    predictions: list = []
    labels: list = []
    times: list[float] = []
    with engine.connect() as conn:
        for when, n, raw_bin, raw_in, raw_out, raw_labels in conn.execute(query):
            out, lab = _flat(orjson.loads(raw_out)), _flat(orjson.loads(raw_labels))
            if len(out) != len(lab) or len(out) != n:  # feedback checks the count; an old mismatch is skipped
                continue
            inputs.append(_matrix(raw_bin, raw_in, n))
            predictions.extend(out)
            labels.extend(lab)
            times.extend([_utc(when).timestamp()] * n)
    X = np.concatenate(inputs) if inputs else np.empty((0, 0))
    return Labelled(X, _values(predictions), _values(labels), np.asarray(times, dtype=np.float64))


def _values(values: list) -> np.ndarray:
    """Numbers as float64; class names (strings) as they are."""
    try:
        return np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError):
        return np.asarray(values, dtype=object)


def since(engine: sa.Engine, model: str, version: str, start: datetime | None) -> Bounds:
    """All of ``model`` v``version``'s requests logged at or after ``start`` (all of them when None)."""
    t = scoring_table.c
    where = _version_filter(model, version)
    if start is not None:
        where = sa.and_(where, t.at >= start)
    with engine.connect() as conn:
        first, last, requests, rows = conn.execute(
            sa.select(sa.func.min(t.at), sa.func.max(t.at), sa.func.count(), sa.func.sum(t.rows)).where(where)
        ).one()
    return Bounds(_utc(first), _utc(last), int(requests), int(rows or 0))


def _matrix(raw_bin: bytes | None, raw_json: str | None, rows: int) -> np.ndarray:
    """A request's inputs from their float64 copy, else from their JSON."""
    if raw_bin is not None:
        return np.frombuffer(raw_bin, dtype=np.float64).reshape(rows, -1)
    return _values(orjson.loads(raw_json)).reshape(rows, -1)  # texts stay strings
