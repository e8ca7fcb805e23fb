"""The alias audit log: a table in the tracking database, and the lock that keeps alias moves consistent.

Every alias move (register → challenger, promote, rollback, archive) runs as: take the model's lock, read the
aliases, move them in MLflow, append the audit row, release. Two ``promote`` calls on the same model therefore
never interleave: each sees the other's result, so every audit row's ``from`` is the previous row's ``to`` and
the final alias is the last row's ``to``.

The lock is a row lock (``SELECT … FOR UPDATE`` on ``perftune_model_locks``) on PostgreSQL and MySQL. SQLite has
no row locks, and holding its database write lock would block MLflow's own write of the alias, so on SQLite
the lock is an advisory file lock next to the database file.
"""

from __future__ import annotations

import fcntl
import getpass
import json
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import IntegrityError, OperationalError, ProgrammingError

from perftune.errors import PerftuneError
from perftune.track.uri import database_url

metadata = sa.MetaData()

audit_table = sa.Table(
    "perftune_alias_audit",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("model", sa.String(256), nullable=False, index=True),
    # register | promote | rollback | archive; decisions that move no alias: retrain | keep | probation;
    # interrupted: what recovery marked of a command that was killed (perftune.registry.recovery)
    sa.Column("action", sa.String(32), nullable=False),
    sa.Column("alias", sa.String(64), nullable=True),  # None for archive
    sa.Column("from_version", sa.String(32), nullable=True),
    sa.Column("to_version", sa.String(32), nullable=True),
    sa.Column("user", sa.String(256), nullable=False),
    sa.Column("reason", sa.Text, nullable=False, default=""),
    sa.Column("details", sa.Text, nullable=True),  # JSON: a decision's numbers (retrain, compare, rollback)
)

lock_table = sa.Table(
    "perftune_model_locks",
    metadata,
    sa.Column("model", sa.String(256), primary_key=True),
)


@dataclass(frozen=True)
class AuditEntry:
    """One row of the audit log."""

    id: int
    at: datetime
    model: str
    action: str
    alias: str | None
    from_version: str | None
    to_version: str | None
    user: str
    reason: str
    details: dict[str, Any] | None = None

    def move(self) -> str:
        if self.action == "archive":
            return f"v{self.to_version} archived"
        if self.action == "interrupted":  # what recovery marked: a register's version, a retraining's champion
            return f"v{self.to_version} {(self.details or {}).get('op', '')} interrupted".replace("  ", " ")
        if self.alias is None:  # a decision that moved no alias
            return f"v{self.to_version} {DECISIONS.get(self.action, self.action)}"
        before = f"v{self.from_version}" if self.from_version else "—"
        after = f"v{self.to_version}" if self.to_version else "—"
        return f"{self.alias}: {before} → {after}"


DECISIONS = {"retrain": "retrained", "keep": "kept as challenger", "probation": "passed probation"}


def current_user() -> str:
    """Who moves an alias: $PERFTUNE_USER, else the login name."""
    try:
        return os.environ.get("PERFTUNE_USER") or getpass.getuser()
    except (KeyError, OSError):
        return f"uid-{os.getuid()}"


class AuditLog:
    """The audit table in the database behind a tracking URI."""

    def __init__(self, tracking_uri: str) -> None:
        self.url = database_url(tracking_uri)
        self.engine: Engine = sa.create_engine(self.url, pool_pre_ping=True)
        self._sqlite_file = self._sqlite_path()
        self._ensure_tables()

    def _sqlite_path(self) -> Path | None:
        if self.engine.dialect.name != "sqlite":
            return None
        database = self.engine.url.database
        return Path(database).resolve() if database and database != ":memory:" else None

    def _ensure_tables(self) -> None:
        # several processes may create the tables at once on a fresh database: the loser's error is harmless
        for attempt in range(5):
            try:
                metadata.create_all(self.engine, checkfirst=True)
                self._migrate()
                return
            except OperationalError as exc:
                if attempt == 4 or "does not exist" in str(exc) or "connect" in str(exc).lower():
                    reason = " ".join(str(exc.orig).split())
                    raise PerftuneError(
                        f"cannot open the tracking database {self.engine.url!r}: {reason}; "
                        "check the URI and that the server is running"
                    ) from exc
                time.sleep(0.2 * (attempt + 1))
            except (IntegrityError, ProgrammingError) as exc:
                if attempt == 4:
                    raise PerftuneError(f"cannot create the audit log tables in {self.engine.url!r}: {exc}") from exc
                time.sleep(0.2 * (attempt + 1))

    def _migrate(self) -> None:
        """Add the ``details`` column to an audit table made by an earlier perftune (rows keep NULL)."""
        columns = {c["name"] for c in sa.inspect(self.engine).get_columns(audit_table.name)}
        if "details" not in columns:
            with self.engine.begin() as conn:
                conn.execute(sa.text(f"ALTER TABLE {audit_table.name} ADD COLUMN details TEXT"))

    @contextmanager
    def locked(self, model: str) -> Iterator[Connection]:
        """Hold ``model``'s lock; yields the transaction the audit row must be written in."""
        if self._sqlite_file is not None:
            with open(self._sqlite_file.with_name(self._sqlite_file.name + ".perftune-lock"), "a") as handle:
                fcntl.flock(handle, fcntl.LOCK_EX)
                try:
                    with self.engine.begin() as conn:
                        yield conn
                finally:
                    fcntl.flock(handle, fcntl.LOCK_UN)
            return
        try:
            with self.engine.begin() as conn:
                conn.execute(lock_table.insert().values(model=model))
        except IntegrityError:
            pass  # the row exists already
        with self.engine.begin() as conn:
            conn.execute(sa.select(lock_table.c.model).where(lock_table.c.model == model).with_for_update())
            yield conn

    def append(
        self,
        conn: Connection,
        model: str,
        action: str,
        alias: str | None,
        from_version: str | None,
        to_version: str | None,
        reason: str = "",
        user: str | None = None,
        details: dict[str, Any] | None = None,
    ) -> AuditEntry:
        row = {
            "at": datetime.now(timezone.utc),
            "model": model,
            "action": action,
            "alias": alias,
            "from_version": from_version,
            "to_version": to_version,
            "user": user or current_user(),
            "reason": reason,
        }
        text = json.dumps(details, sort_keys=True, default=str) if details is not None else None
        new_id = conn.execute(audit_table.insert().values(**row, details=text)).inserted_primary_key[0]
        return AuditEntry(id=int(new_id), **row, details=details)

    def entries(self, model: str | None = None, conn: Connection | None = None) -> list[AuditEntry]:
        query = sa.select(audit_table).order_by(audit_table.c.id)
        if model is not None:
            query = query.where(audit_table.c.model == model)
        if conn is not None:
            rows = conn.execute(query).mappings().all()
        else:
            with self.engine.connect() as fresh:
                rows = fresh.execute(query).mappings().all()
        return [AuditEntry(**{**row, "details": _details(row["details"])}) for row in rows]

    def close(self) -> None:
        self.engine.dispose()


def _details(text: str | None) -> dict[str, Any] | None:
    if not text:
        return None
    try:
        return json.loads(text)
    except ValueError:
        return {"unreadable": text}


def champion_stack(entries: list[AuditEntry], alias: str) -> list[str]:
    """The alias's versions as a stack: a promote pushes, a rollback pops. The top is the current holder."""
    stack: list[str] = []
    for entry in entries:
        if entry.alias != alias:
            continue
        if entry.action == "rollback":
            if stack:
                stack.pop()
        elif entry.to_version is not None:
            stack.append(entry.to_version)
    return stack
