"""Small JSON documents kept with a registered version (artifacts of its register run)."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any


def read_text_artifact(client: Any, run_id: str, path: str) -> str | None:
    """The text artifact ``path`` of run ``run_id`` (None when the run has no such artifact)."""
    from mlflow.exceptions import MlflowException

    with tempfile.TemporaryDirectory() as tmp:
        try:
            local = client.download_artifacts(run_id, path, tmp)
        except (MlflowException, OSError):
            return None
        return Path(local).read_text()


def read_json_artifact(client: Any, run_id: str, path: str) -> Any | None:
    """The JSON artifact ``path`` of run ``run_id`` (None when the run has no such artifact)."""
    text = read_text_artifact(client, run_id, path)
    return json.loads(text) if text is not None else None
