"""Ground truth for logged requests: label files for ``perftune feedback``, and joining labels to the scoring log.

**Which request an id names.** Every logged request has a server key (``X-Request-Id``, unique) and, for v2
requests that sent one, the client's ``"id"`` (not unique: clients reuse ids, retries resend them). An id given
with feedback is matched first against server keys; if none matches, it is taken as a client id and names the
**most recent** logged request of that model with that id (latest ``at``). The feedback response lists, per id,
the server key it was matched to, by which rule, and how many requests carried that client id — send the
server key to be unambiguous.

**One label per row, one feedback per request.** The labels of a request must be exactly as many as the rows
it scored (else a one-line error naming the request and both counts, and nothing is stored). Feedback is
stored once per logged request: sending it again replaces the earlier labels (an upsert), so re-sending a file
is idempotent.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import orjson
import sqlalchemy as sa

from perftune.errors import UsageError
from perftune.measure.ml import class_key
from perftune.serve.scoring import feedback_table, scoring_table

RULE = (
    "an id is matched first against server keys (X-Request-Id); otherwise, as a client id, it names the most"
    " recent logged request of this model with that id"
)

__all__ = ["RULE", "FeedbackResult", "LabelCountError", "attach_labels", "read_labels"]


class LabelCountError(UsageError):
    """Labels for a request do not match the number of rows it scored, or are not the model's classes."""


@dataclass
class FeedbackResult:
    """What :func:`attach_labels` did."""

    stored: int = 0
    replaced: int = 0
    unknown: list[str] = field(default_factory=list)
    matched: list[dict[str, Any]] = field(default_factory=list)  # {id, request_id, by, candidates}


def read_labels(path: Path) -> list[tuple[str, list[Any]]]:
    """Rows → ``[(request_id, [label, …])]``, a request's labels in file order (one per row it scored)."""
    import pandas as pd

    if not path.is_file():
        raise UsageError(f"{path}: no such file")
    try:
        if path.suffix in (".jsonl", ".json", ".ndjson"):
            frame = pd.read_json(path, lines=True, dtype={"request_id": str})
        else:
            frame = pd.read_csv(path, dtype={"request_id": str})
    except (ValueError, UnicodeDecodeError, pd.errors.ParserError) as exc:
        raise UsageError(f"{path}: cannot read it as CSV / JSON lines ({str(exc).splitlines()[0][:200]})") from None
    missing = [c for c in ("request_id", "label") if c not in frame.columns]
    if missing:
        raise UsageError(f"{path}: needs columns request_id and label; missing {', '.join(missing)}")
    if frame["request_id"].isna().any() or frame["label"].isna().any():
        raise UsageError(f"{path}: empty request_id or label in row {int(frame.isna().any(axis=1).argmax()) + 2}")
    grouped: dict[str, list[Any]] = {}
    for request_id, label in zip(frame["request_id"], frame["label"].tolist(), strict=True):
        grouped.setdefault(str(request_id), []).append(label)
    return list(grouped.items())


def _resolve(conn: sa.Connection, model: str | None, ids: list[str]) -> dict[str, dict[str, Any]]:
    """Given ids → {id: {request_id, rows, by, candidates}} by the rule in the module docstring."""
    c = scoring_table.c
    same_model = (c.model == model) if model is not None else sa.true()
    found: dict[str, dict[str, Any]] = {}
    keys = sa.select(c.request_id, c.model, c.rows).where(c.request_id.in_(ids), same_model)
    for row in conn.execute(keys):
        found[row.request_id] = {"request_id": row.request_id, "model": row.model, "rows": row.rows}
        found[row.request_id].update(by="request_id", candidates=1)
    rest = [i for i in ids if i not in found]
    if rest:
        by_client = (
            sa.select(c.client_id, c.request_id, c.model, c.rows)
            .where(c.client_id.in_(rest), same_model)
            .order_by(c.at.desc(), c.id.desc())
        )
        for row in conn.execute(by_client):
            if row.client_id in found:
                found[row.client_id]["candidates"] += 1
            else:
                found[row.client_id] = {"request_id": row.request_id, "model": row.model, "rows": row.rows}
                found[row.client_id].update(by="client_id", candidates=1)
    return found


def attach_labels(
    engine: sa.Engine, model: str | None, items: list[tuple[str, Any]], classes: list[str] | None = None
) -> FeedbackResult:
    """Store ground truth for logged requests of ``model`` (one feedback row per request; re-sending replaces).

    Args:
        engine: the scoring database.
        model: only requests of this model are matched (None: any model).
        items: ``(id, labels)`` pairs; an id is a server key or a client id (see the module docstring), labels
            one per row of that request (a single value means one label).
        classes: a classifier's classes by name (:func:`perftune.measure.ml.class_key`): every label must be one.

    Returns:
        How many requests got labels, how many of those replaced earlier labels, the unknown ids, and how each
        known id was matched.

    Raises:
        LabelCountError: a request's labels are not as many as its rows, or one is not among ``classes``
            (nothing is stored).
    """
    result = FeedbackResult()
    with engine.begin() as conn:
        found = _resolve(conn, model, list(dict.fromkeys(i for i, _ in items)))
        labelled: dict[str, tuple[str, list[Any]]] = {}
        mismatched = []
        for given, labels in items:
            labels = labels if isinstance(labels, list) else [labels]
            match = found.get(given)
            if match is None:
                result.unknown.append(given)
                continue
            if len(labels) != match["rows"]:
                mismatched.append(f"request {given[:64]!r}: {len(labels)} labels for {match['rows']} rows")
            labelled[match["request_id"]] = (match["model"], labels)
            result.matched.append({"id": given, **{k: v for k, v in match.items() if k not in ("rows", "model")}})
        if mismatched:
            more = f" (and {len(mismatched) - 1} more)" if len(mismatched) > 1 else ""
            raise LabelCountError(f"{mismatched[0]}{more}; send exactly one label per row of each request")
        if classes is not None:  # a label outside the classes would corrupt the realized accuracy
            known = set(classes)
            for given, labels in items:
                for label in labels if isinstance(labels, list) else [labels]:
                    if class_key(label) not in known:
                        raise LabelCountError(
                            f"request {given[:64]!r}: label {label!r} is not one of the model's classes "
                            f"({', '.join(classes[:20])}); nothing was stored"
                        )
        if labelled:
            now = datetime.now(timezone.utc)
            result.replaced = conn.execute(
                feedback_table.delete().where(feedback_table.c.request_id.in_(list(labelled)))
            ).rowcount
            conn.execute(
                feedback_table.insert(),
                [
                    {"request_id": key, "model": of_model, "at": now, "labels": orjson.dumps(labels).decode()}
                    for key, (of_model, labels) in labelled.items()
                ],
            )
        result.stored = len(labelled)
    return result
