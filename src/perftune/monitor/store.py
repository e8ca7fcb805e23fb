"""Where monitoring results live: two tables next to the scoring log, in the same database.

``perftune_monitor_checks`` keeps one row per check (its window, verdict, findings and the whole result as
JSON), so ``perftune monitor --html`` can draw history and the retraining loop can cite a check by id.
``perftune_monitor_series`` keeps one row per monitored value per check (series name, value, robust z-score
against its baseline at the time), indexed by model, version, series and time: the adaptive baselines read
their history from it.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Any

import orjson
import sqlalchemy as sa

from perftune.monitor.baseline import Point
from perftune.serve.scoring import metadata

checks_table = sa.Table(
    "perftune_monitor_checks",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("check_id", sa.String(64), nullable=False, unique=True),
    sa.Column("at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("model", sa.String(256), nullable=False),
    sa.Column("version", sa.String(32), nullable=False),
    sa.Column("window_start", sa.DateTime(timezone=True), nullable=True),
    sa.Column("window_end", sa.DateTime(timezone=True), nullable=True),
    sa.Column("rows", sa.Integer, nullable=False),
    sa.Column("healthy", sa.Boolean, nullable=False),
    sa.Column("findings", sa.Text, nullable=False),  # JSON list of one-line findings
    sa.Column("result", sa.Text, nullable=False),  # JSON: the whole check
    sa.Index("ix_perftune_monitor_checks_version_at", "model", "version", "at"),
)

series_table = sa.Table(
    "perftune_monitor_series",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("check_id", sa.String(64), nullable=False),
    sa.Column("at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("model", sa.String(256), nullable=False),
    sa.Column("version", sa.String(32), nullable=False),
    sa.Column("series", sa.String(300), nullable=False),
    sa.Column("value", sa.Float, nullable=True),
    sa.Column("z", sa.Float, nullable=True),
    sa.Index("ix_perftune_monitor_series_lookup", "model", "version", "series", "at"),
)


def history(engine: sa.Engine, model: str, version: str, names: Iterable[str], limit: int) -> dict[str, list[Point]]:
    """The last ``limit`` stored points of each series (oldest first)."""
    t = series_table.c
    out: dict[str, list[Point]] = {}
    with engine.connect() as conn:
        for name in names:
            query = (
                sa.select(t.at, t.value, t.z)
                .where(t.model == model, t.version == version, t.series == name)
                .order_by(t.at.desc(), t.id.desc())
                .limit(limit)
            )
            rows = conn.execute(query).all()
            out[name] = [Point(at.isoformat(), value, z) for at, value, z in reversed(rows) if value is not None]
    return out


def save(
    engine: sa.Engine,
    check_id: str,
    at: datetime,
    model: str,
    version: str,
    window: tuple[datetime | None, datetime | None, int],
    findings: list[str],
    result: dict[str, Any],
    points: dict[str, tuple[float, float | None]],
) -> None:
    """Store one check and its series points in one transaction."""
    start, end, rows = window
    with engine.begin() as conn:
        conn.execute(
            checks_table.insert().values(
                check_id=check_id, at=at, model=model, version=version, window_start=start, window_end=end,
                rows=rows, healthy=not findings, findings=orjson.dumps(findings).decode(),
                result=orjson.dumps(result, option=orjson.OPT_SERIALIZE_NUMPY).decode(),
            )
        )  # fmt: skip
        if points:
            conn.execute(
                series_table.insert(),
                [
                    {"check_id": check_id, "at": at, "model": model, "version": version, "series": name,
                     "value": value, "z": z}
                    for name, (value, z) in points.items()
                ],
            )  # fmt: skip


def recent_checks(engine: sa.Engine, model: str, version: str, limit: int = 200) -> list[dict[str, Any]]:
    """The last ``limit`` checks' results (oldest first), for the HTML page's history."""
    t = checks_table.c
    query = sa.select(t.result).where(t.model == model, t.version == version).order_by(t.at.desc()).limit(limit)
    with engine.connect() as conn:
        return [orjson.loads(raw) for (raw,) in reversed(conn.execute(query).all())]
