"""Settings of the command line and the server: one object, read from options and ``PERFTUNE_*`` variables.

The study's own defaults live in the spec (:mod:`perftune.spec`); this object holds what is not part of a
study — where the workspace is, which MLflow store and scoring log to use, whether to show tracebacks — so the
CLI, the server and library callers derive those places one way. Every field can be set from the environment
(``PERFTUNE_WORKSPACE``, ``PERFTUNE_TRACKING_URI`` or ``MLFLOW_TRACKING_URI``, ``PERFTUNE_SCORING_URI``,
``PERFTUNE_DEBUG``); a command-line option wins over the environment.

A plain dataclass, not pydantic-settings: importing that costs half a second, and the CLI must answer a
usage error faster than that.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from perftune.errors import UsageError

DEFAULT_WORKSPACE = "perftune-workspace"
ENV_PREFIX = "PERFTUNE_"
_ALSO_FROM = {"tracking_uri": ("MLFLOW_TRACKING_URI",)}  # read when PERFTUNE_<FIELD> is not set
_TRUE = ("1", "true", "yes", "on")


@dataclass(frozen=True)
class Settings:
    """Where perftune keeps things, and how it reports errors.

    Attributes:
        workspace: the workspace folder (studies, MLflow store, artifacts, data store, scoring log).
        tracking_uri: the MLflow store; default ``sqlite:///<workspace>/mlflow.db``.
        scoring_uri: the scoring log database; default ``sqlite:///<workspace>/scoring.db``.
        debug: show tracebacks instead of one-line errors.
    """

    workspace: Path = Path(DEFAULT_WORKSPACE)
    tracking_uri: str | None = None
    scoring_uri: str | None = None
    debug: bool = False

    @classmethod
    def load(cls, **given: Any) -> Settings:
        """Settings from ``PERFTUNE_*`` variables, overridden by the options that were given (``None``: not given)."""
        values: dict[str, Any] = {}
        for f in fields(cls):
            names = (ENV_PREFIX + f.name.upper(), *_ALSO_FROM.get(f.name, ()))
            raw = next((os.environ[n] for n in names if os.environ.get(n)), None)
            if given.get(f.name) is not None:
                raw = given[f.name]
            if raw is None:
                continue
            if f.name == "workspace":
                values[f.name] = Path(raw)
            elif f.name == "debug":
                values[f.name] = raw if isinstance(raw, bool) else str(raw).lower() in _TRUE
            else:
                values[f.name] = str(raw)
        return cls(**values)

    def existing_tracking_uri(self) -> str:
        """The MLflow store to read: ``tracking_uri`` (normalized), else the workspace's, which must exist."""
        from perftune.track.uri import default_tracking_uri, normalize_tracking_uri

        if self.tracking_uri:
            return normalize_tracking_uri(self.tracking_uri)
        if not (self.workspace / "mlflow.db").is_file():
            raise UsageError(
                f"no tracking store at {self.workspace / 'mlflow.db'}; run a study first (make demo), or pass "
                "--workspace or --tracking-uri"
            )
        return default_tracking_uri(self.workspace)

    def scoring_uri_or_default(self) -> str:
        """The scoring log database: ``scoring_uri``, else an SQLite file in the workspace."""
        return self.scoring_uri or f"sqlite:///{self.workspace.resolve() / 'scoring.db'}"


def default_workspace() -> Path:
    """The workspace when nothing names one: ``$PERFTUNE_WORKSPACE``, else ``./perftune-workspace``."""
    return Settings.load().workspace
