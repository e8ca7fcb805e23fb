"""Ground-truth label files for ``perftune feedback``: CSV or JSON lines with ``request_id`` and ``label``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from perftune.errors import UsageError


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
