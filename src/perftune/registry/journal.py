"""The journal of lifecycle operations: a write-ahead record of every ``register``, alias move and ``retrain``.

A lifecycle step writes to several places that share no transaction: MLflow runs, a model version and its tags,
an alias, the audit log. A ``kill -9`` between two of them used to leave, for example, a version with no alias and
no audit row that could still be promoted. So each step first writes a row here (``begin``), records what it
creates as it goes (``step``: the run's experiment, the version, the alias it is about to move), and settles the
row in the same database transaction as its last write, the audit row (``finish(conn=…)``). A row that is still
``running`` after its process died, or ``abandoned`` by a process that raised, is what
:mod:`perftune.registry.recovery` finds and settles: it finishes the step when its commit point (the alias move)
was passed, marks what it left ``interrupted`` otherwise, and ends its MLflow runs as KILLED.

Who runs an operation is recorded as host, pid and the process's start time (a reused pid is not the same
process). A process on another host cannot be looked at from here: its operation counts as gone once it has not
recorded a step for :data:`LEASE` (a lease rather than a guess).

The table lives beside the audit log (same database, created with it: SQLite or PostgreSQL), so the audit row
and the end of its operation commit together. Two recoveries never settle one operation twice: each first claims
it (an update conditional on the dead owner), and only one update matches.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from enum import StrEnum
from typing import Any

import psutil
import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from perftune.registry.audit import current_user, metadata

__all__ = ["LEASE", "OPERATION_TAG", "Journal", "Operation", "OperationState", "Owner"]

OPERATION_TAG = "perftune.operation"  # on an MLflow run: the id of the operation that created it
LEASE = timedelta(hours=12)  # an operation of another host that recorded no step for this long is gone

operations_table = sa.Table(
    "perftune_operations",
    metadata,  # the audit log's: created (and on a new database, migrated) with its tables
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("op", sa.String(32), nullable=False),  # register | promote | rollback | retrain
    sa.Column("model", sa.String(256), nullable=False, index=True),
    sa.Column("state", sa.String(16), nullable=False, index=True),
    sa.Column("step", sa.String(128), nullable=False),  # the last step it recorded
    sa.Column("host", sa.String(256), nullable=False),
    sa.Column("pid", sa.Integer, nullable=False),
    sa.Column("process_started", sa.Float(precision=53), nullable=False),
    sa.Column("user", sa.String(256), nullable=False),
    sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("details", sa.Text, nullable=False),  # JSON: what it created, as recorded step by step
    sa.Column("note", sa.Text, nullable=True),  # how it ended: an error, or what recovery did
)


class OperationState(StrEnum):
    RUNNING = "running"  # begun; settled by its own process, or by recovery once that process is gone
    ABANDONED = "abandoned"  # its process raised in the middle: left for recovery
    FINISHED = "finished"  # done by its own process
    FAILED = "failed"  # its own process undid what it had done: nothing left to recover
    COMPLETED = "completed"  # its process died after the commit point; recovery did the rest
    INTERRUPTED = "interrupted"  # its process died before the commit point; recovery marked what it left


UNSETTLED = (OperationState.RUNNING, OperationState.ABANDONED)


@dataclass(frozen=True)
class Owner:
    """The process that runs an operation."""

    host: str
    pid: int
    started: float  # the process's start time (seconds since the epoch, as psutil reports it)

    @classmethod
    def current(cls) -> Owner:
        return cls(socket.gethostname(), os.getpid(), psutil.Process().create_time())

    def on_this_host(self) -> bool:
        return self.host == socket.gethostname()

    def alive(self) -> bool:
        """Whether the process still runs here (a reused pid does not count); another host's: unknown, True."""
        if not self.on_this_host():
            return True
        try:
            return abs(psutil.Process(self.pid).create_time() - self.started) < 1.0
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            return False


@dataclass(frozen=True)
class Operation:
    """One row of the journal."""

    id: int
    op: str
    model: str
    state: OperationState
    step: str
    owner: Owner
    user: str
    started_at: datetime
    updated_at: datetime
    details: dict[str, Any]
    note: str | None

    @property
    def unsettled(self) -> bool:
        return self.state in UNSETTLED

    def gone(self, now: datetime | None = None) -> bool:
        """Unsettled, and nobody will settle it: its process raised, died, or (another host's) lost its lease."""
        if self.state == OperationState.ABANDONED:
            return True
        if self.state != OperationState.RUNNING:
            return False
        if self.owner.on_this_host():
            return not self.owner.alive()
        return (now or datetime.now(timezone.utc)) - self.updated_at > LEASE

    def who(self) -> str:
        return f"pid {self.owner.pid} on {self.owner.host} since {self.started_at:%Y-%m-%d %H:%M:%S} UTC"


def _utc(value: datetime) -> datetime:
    return value if value.tzinfo else value.replace(tzinfo=timezone.utc)  # SQLite hands back naive datetimes


def _row(row: Any) -> Operation:
    return Operation(
        id=int(row["id"]),
        op=row["op"],
        model=row["model"],
        state=OperationState(row["state"]),
        step=row["step"],
        owner=Owner(row["host"], int(row["pid"]), float(row["process_started"])),
        user=row["user"],
        started_at=_utc(row["started_at"]),
        updated_at=_utc(row["updated_at"]),
        details=json.loads(row["details"] or "{}"),
        note=row["note"],
    )


def _one_line(text: str, limit: int = 500) -> str:
    return " ".join(text.split())[:limit]


class Journal:
    """The operations table in the tracking database behind ``engine`` (the audit log's engine)."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def begin(self, op: str, model: str, details: dict[str, Any] | None = None, step: str = "it began") -> int:
        """Record that this process starts ``op`` on ``model``; returns the operation's id. Steps are named as
        what has happened ("its version was registered"): recovery says it was killed after the last one."""
        owner, now = Owner.current(), datetime.now(timezone.utc)
        row = {
            "op": op, "model": model, "state": OperationState.RUNNING.value, "step": step,
            "host": owner.host, "pid": owner.pid, "process_started": owner.started, "user": current_user(),
            "started_at": now, "updated_at": now, "details": json.dumps(details or {}, default=str),
        }  # fmt: skip
        with self.engine.begin() as conn:
            return int(conn.execute(operations_table.insert().values(**row)).inserted_primary_key[0])

    def step(self, op_id: int, step: str, **details: Any) -> None:
        """Record the step ``op_id`` reached and what it created; a list extends the recorded list of its key."""
        with self.engine.begin() as conn:
            current = conn.execute(
                sa.select(operations_table.c.details).where(operations_table.c.id == op_id)
            ).scalar_one()
            merged = json.loads(current or "{}")
            for key, value in details.items():
                merged[key] = [*merged.get(key, []), *value] if isinstance(value, list) else value
            conn.execute(
                operations_table.update()
                .where(operations_table.c.id == op_id)
                .values(step=step, details=json.dumps(merged, default=str), updated_at=datetime.now(timezone.utc))
            )

    def finish(
        self, op_id: int, state: OperationState = OperationState.FINISHED, note: str | None = None,
        conn: Connection | None = None,
    ) -> bool:  # fmt: skip
        """Settle an unsettled operation (in ``conn``'s transaction when given: with the audit row it wrote);
        returns False when it was settled already."""
        update = (
            operations_table.update()
            .where(operations_table.c.id == op_id, operations_table.c.state.in_([s.value for s in UNSETTLED]))
            .values(state=state.value, note=note, updated_at=datetime.now(timezone.utc))
        )
        if conn is not None:
            return conn.execute(update).rowcount == 1
        with self.engine.begin() as fresh:
            return fresh.execute(update).rowcount == 1

    def claim(self, operation: Operation) -> bool:
        """Take over a gone operation for recovery; False when another process took it first."""
        me, old = Owner.current(), operation.owner
        with self.engine.begin() as conn:
            claimed = conn.execute(
                operations_table.update()
                .where(
                    operations_table.c.id == operation.id,
                    operations_table.c.state == operation.state.value,
                    operations_table.c.host == old.host,
                    operations_table.c.pid == old.pid,
                    operations_table.c.process_started == old.started,
                )
                .values(host=me.host, pid=me.pid, process_started=me.started, updated_at=datetime.now(timezone.utc))
            )
            return claimed.rowcount == 1

    def get(self, op_id: int) -> Operation | None:
        with self.engine.connect() as conn:
            row = conn.execute(sa.select(operations_table).where(operations_table.c.id == op_id)).mappings().first()
        return _row(row) if row is not None else None

    def unsettled(self, model: str | None = None) -> list[Operation]:
        """Operations begun and not settled (running somewhere, or left behind), oldest first."""
        query = sa.select(operations_table).where(operations_table.c.state.in_([s.value for s in UNSETTLED]))
        if model is not None:
            query = query.where(operations_table.c.model == model)
        with self.engine.connect() as conn:
            rows = conn.execute(query.order_by(operations_table.c.id)).mappings().all()
        return [_row(row) for row in rows]

    def gone(self, model: str | None = None) -> list[Operation]:
        """The unsettled operations nobody will settle: what recovery is for."""
        now = datetime.now(timezone.utc)
        return [operation for operation in self.unsettled(model) if operation.gone(now)]

    @contextlib.contextmanager
    def operation(self, op: str, model: str, details: dict[str, Any] | None = None) -> Iterator[int]:
        """``begin`` … ``finish``; an exception leaves the operation ``abandoned`` for recovery (what it created
        may be half made) and propagates."""
        op_id = self.begin(op, model, details)
        try:
            yield op_id
        except BaseException as exc:
            with contextlib.suppress(Exception):  # the error that matters is the one propagating
                self.finish(op_id, OperationState.ABANDONED, _one_line(f"{type(exc).__name__}: {exc}"))
            raise
        self.finish(op_id)
