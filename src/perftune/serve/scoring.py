"""The scoring log's storage ("scoring data"): tables, schema migration, idempotent inserts, replay.

Every answered request is one row of ``perftune_scoring_log`` under a **server key** (``request_id``, a uuid4
hex the server makes, returned as ``X-Request-Id``; unique). The client's own v2 ``"id"`` is kept as
``client_id`` (nullable, indexed, not unique: clients reuse ids and retries resend them). Because the server
key is unique, inserting a row is idempotent — :func:`insert_rows` skips keys already present — which is what
makes the dead-letter file and the durable log safe to replay any number of times.

Databases created before ``client_id`` existed are migrated in place when opened (the column and its index
are added; the feedback table gets its one-row-per-request unique index, keeping the latest of duplicates;
the ``(model, version, at)`` index that monitoring windows are read by is added; ``inputs_f64`` and
``cpu_wait_ms`` are added as NULL columns).

The writer (:mod:`perftune.serve.scoring_writer`) queues rows and writes them in batches; rows it cannot write
go to the dead-letter file (:mod:`perftune.serve.deadletter`); ``--scoring-durability local`` adds a local log
(:mod:`perftune.serve.durable`). :func:`replay` ships both back into the database.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import sqlalchemy as sa

from perftune.errors import PerftuneError
from perftune.serve.deadletter import DEADLETTER_NAME, DeadLetter, ship
from perftune.serve.durable import DURABLE_FOLDER, ship_orphans
from perftune.settings import default_workspace
from perftune.track.uri import database_url

log = logging.getLogger("perftune.serve")


CLIENT_ID_MAX = 128  # longest v2 "id" accepted and logged (printable ASCII)

metadata = sa.MetaData()

scoring_table = sa.Table(
    "perftune_scoring_log",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("request_id", sa.String(64), nullable=False, unique=True),  # the server key
    sa.Column("client_id", sa.String(CLIENT_ID_MAX), nullable=True, index=True),  # the client's v2 "id"
    sa.Column("at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("model", sa.String(256), nullable=False),
    sa.Column("version", sa.String(32), nullable=False),
    sa.Column("endpoint", sa.String(32), nullable=False),
    sa.Column("rows", sa.Integer, nullable=False),
    sa.Column("inputs", sa.Text, nullable=False),  # JSON: rows in the model's column order
    # the same rows as float64 bytes (C order), for monitoring to read without parsing JSON; NULL for rows that
    # came back through the dead-letter file or a durable log (the JSON column is the record of truth)
    sa.Column("inputs_f64", sa.LargeBinary, nullable=True),
    sa.Column("outputs", sa.Text, nullable=False),  # JSON: predictions
    sa.Column("latency_ms", sa.Float, nullable=False),
    # of latency_ms, the time the serving thread was runnable but waited for a CPU (other processes had it);
    # NULL where unknown (not Linux, or logged by an earlier perftune). See perftune.measure.contention.
    sa.Column("cpu_wait_ms", sa.Float, nullable=True),
    # a monitoring window is one version's rows in a time span (perftune.monitor.window)
    sa.Index("ix_perftune_scoring_log_window", "model", "version", "at"),
)

feedback_table = sa.Table(
    "perftune_feedback",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("request_id", sa.String(64), nullable=False, index=True, unique=True),  # one row per logged request
    sa.Column("model", sa.String(256), nullable=False),
    sa.Column("at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("labels", sa.Text, nullable=False),  # JSON: one label per row of the request
)

COLUMNS = tuple(c.name for c in scoring_table.columns if c.name != "id")

__all__ = [
    "CLIENT_ID_MAX",
    "ReplayResult",
    "feedback_table",
    "insert_rows",
    "outage",
    "replay",
    "replay_command",
    "scoring_engine",
    "scoring_table",
    "spool_dir",
]


def scoring_engine(uri: str) -> sa.Engine:
    """An engine on the scoring database, its tables created or migrated to the current schema."""
    uri = database_url(uri, "--scoring-uri", "the scoring log is a database table")
    sqlite = uri.startswith("sqlite:")
    if uri.startswith("sqlite:///"):
        Path(uri[len("sqlite:///") :]).parent.mkdir(parents=True, exist_ok=True)
    engine = sa.create_engine(uri, pool_pre_ping=True, **({"connect_args": {"timeout": 30}} if sqlite else {}))
    try:
        try:
            metadata.create_all(engine, checkfirst=True)
        except (sa.exc.IntegrityError, sa.exc.ProgrammingError):
            metadata.create_all(engine, checkfirst=True)  # another worker created it at the same moment
        _migrate(engine)
    except sa.exc.OperationalError as exc:
        raise PerftuneError(f"cannot open the scoring log {uri}: {' '.join(str(exc.orig).split())}") from exc
    return engine


def _add_column(engine: sa.Engine, name: str, kind: str, index: sa.Index | None = None) -> None:
    """Add a nullable column (and its index) that a scoring log made by an earlier perftune lacks."""
    if name in {c["name"] for c in sa.inspect(engine).get_columns(scoring_table.name)}:
        return
    log.warning("scoring log: adding column %s to %s (schema of an earlier perftune)", name, scoring_table.name)
    try:
        with engine.begin() as conn:
            conn.execute(sa.text(f"ALTER TABLE {scoring_table.name} ADD COLUMN {name} {kind}"))
            if index is not None:
                index.create(conn)
    except (sa.exc.OperationalError, sa.exc.ProgrammingError):
        if name not in {c["name"] for c in sa.inspect(engine).get_columns(scoring_table.name)}:
            raise  # not a concurrent migration by another worker: a real failure


def _migrate(engine: sa.Engine) -> None:
    """Bring a scoring database made by an earlier perftune to the current schema (idempotent)."""
    index = next(i for i in scoring_table.indexes if i.columns.keys() == ["client_id"])
    _add_column(engine, "client_id", f"VARCHAR({CLIENT_ID_MAX})", index)
    _add_column(engine, "inputs_f64", "BYTEA" if engine.dialect.name == "postgresql" else "BLOB")
    _add_column(engine, "cpu_wait_ms", "DOUBLE PRECISION" if engine.dialect.name == "postgresql" else "REAL")
    window_index = next(i for i in scoring_table.indexes if i.name == "ix_perftune_scoring_log_window")
    if window_index.name not in {i["name"] for i in sa.inspect(engine).get_indexes(scoring_table.name)}:
        log.warning("scoring log: adding the (model, version, at) index monitoring windows read by")
        try:
            with engine.begin() as conn:
                window_index.create(conn)
        except (sa.exc.OperationalError, sa.exc.ProgrammingError):
            existing = {i["name"] for i in sa.inspect(engine).get_indexes(scoring_table.name)}
            if window_index.name not in existing:  # not made by a concurrent migration: a real failure
                raise
    feedback_index = next(i for i in feedback_table.indexes if i.columns.keys() == ["request_id"])
    existing = {i["name"]: i for i in sa.inspect(engine).get_indexes(feedback_table.name)}
    if not existing.get(feedback_index.name, {}).get("unique"):
        log.warning("scoring log: making feedback one row per request (keeping the latest of duplicates)")
        with engine.begin() as conn:
            latest = sa.select(sa.func.max(feedback_table.c.id)).group_by(feedback_table.c.request_id)
            conn.execute(feedback_table.delete().where(feedback_table.c.id.not_in(latest.scalar_subquery())))
            if feedback_index.name in existing:
                conn.execute(sa.text(f"DROP INDEX {feedback_index.name}"))
            feedback_index.create(conn)


def inputs_f64(inputs: Any) -> bytes | None:
    """The float64 bytes of a request's input matrix (None when it is not one, e.g. already JSON)."""
    if isinstance(inputs, np.ndarray) and inputs.ndim == 2 and inputs.dtype == np.float64:
        return np.ascontiguousarray(inputs).tobytes()
    return None


def _row(row: dict[str, Any]) -> dict[str, Any]:
    """A row read back from a JSON-lines file → column values (``at`` is an ISO timestamp there)."""
    values = {c: row.get(c) for c in COLUMNS}
    if isinstance(values["at"], str):
        values["at"] = datetime.fromisoformat(values["at"])
    return values


def insert_rows(engine: sa.Engine, rows: list[dict[str, Any]]) -> int:
    """Insert rows whose server key is not in the table yet (and the first of repeated keys); returns how many.

    Idempotent: replaying the same rows again inserts nothing.
    """
    fresh: dict[str, dict[str, Any]] = {}
    for row in rows:
        fresh.setdefault(row["request_id"], row)
    with engine.begin() as conn:
        present = conn.execute(
            sa.select(scoring_table.c.request_id).where(scoring_table.c.request_id.in_(list(fresh)))
        ).scalars()
        for key in present:
            fresh.pop(key, None)
        if fresh:
            conn.execute(scoring_table.insert(), [_row(r) for r in fresh.values()])
    return len(fresh)


def spool_dir(uri: str, workspace: Path | None = None) -> Path:
    """Where the dead-letter file and the durable logs of one scoring database live.

    ``<file>-spool/`` beside an SQLite file; for a server database, ``<workspace>/scoring-spool/<digest>/`` with
    a digest of the URL (credentials left out). One folder per database, so two servers logging to different
    databases from one workspace never replay each other's rows into the wrong one.
    """
    if uri.startswith("sqlite:///") and uri != "sqlite:///:memory:":
        path = Path(uri[len("sqlite:///") :]).resolve()
        return path.with_name(f"{path.name}-spool")
    url = sa.engine.make_url(database_url(uri, "--scoring-uri", "the scoring log is a database table"))
    where = f"{url.get_backend_name()}://{url.host or ''}:{url.port or ''}/{url.database or ''}"
    digest = hashlib.sha256(where.encode()).hexdigest()[:16]
    return (workspace or default_workspace()).resolve() / "scoring-spool" / digest


@dataclass
class ReplayResult:
    """What :func:`replay` did."""

    durable_files: int = 0  # durable logs of stopped servers shipped and removed
    deadletter_rows: int = 0  # rows read from the dead-letter file
    inserted: int = 0  # rows new in the database
    kept: int = 0  # rows the database still refuses, in the dead-letter file


def outage(exc: Exception) -> bool:
    """Whether a write failed because the database is unavailable (rather than refusing these rows)."""
    return isinstance(exc, (sa.exc.OperationalError, sa.exc.InterfaceError))


def replay(engine: sa.Engine, spool: Path, own_file: Path | None = None) -> ReplayResult:
    """Ship the durable logs of stopped servers and the dead-letter file into the database (idempotent).

    Rows of a durable log the database does not take move to the dead-letter file; dead-letter rows it does
    not take stay there. Nothing is removed before it is in the database or in the dead-letter file.

    Args:
        engine: the scoring database.
        spool: the folder of ``scoring-deadletter.jsonl`` and ``scoring-durable/`` (see :func:`spool_dir`).
        own_file: the caller's own durable log, which is not an orphan.

    Raises:
        OSError: the dead-letter file cannot be written; the durable log stays for the next try.
    """
    result = ReplayResult()
    deadletter = DeadLetter(spool / DEADLETTER_NAME)

    def write(rows: list[dict[str, Any]]) -> int:
        return insert_rows(engine, rows)

    def handle(rows: list[dict[str, Any]]) -> None:
        inserted, kept = ship(rows, write, outage)
        result.inserted += inserted
        if kept:
            deadletter.append(kept)

    result.durable_files = ship_orphans(spool / DURABLE_FOLDER, handle, skip=own_file)
    result.deadletter_rows, inserted, result.kept = deadletter.replay(write, outage)
    result.inserted += inserted
    return result


def replay_command(uri: str, workspace: Path) -> str:
    """``perftune scoring replay``: replay into ``uri``'s database and say what was done, in one line.

    Raises:
        PerftuneError: the database refused the rows (they stay in their files).
    """
    spool = spool_dir(uri, workspace)
    durable = any((spool / DURABLE_FOLDER).glob("scoring-*.jsonl"))
    if not durable and not DeadLetter(spool / DEADLETTER_NAME).pending():  # never create a database for nothing
        return f"nothing to replay: {spool} holds no dead-letter file and no durable log of a stopped server"
    engine = scoring_engine(uri)
    try:
        result = replay(engine, spool)
    except OSError as exc:
        raise PerftuneError(f"cannot write the dead-letter file in {spool}: {exc.strerror}; nothing removed") from exc
    finally:
        engine.dispose()
    message = (
        f"replayed {result.durable_files} durable logs of stopped servers and {result.deadletter_rows} dead-letter"
        f" rows from {spool}: {result.inserted} rows new in the scoring log"
    )
    if result.kept:
        raise PerftuneError(
            f"{message}; {result.kept} rows refused by {uri} stay in {spool / DEADLETTER_NAME}: run again once the"
            " database takes writes"
        )
    return message
