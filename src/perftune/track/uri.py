"""Tracking URIs: the default store, PostgreSQL's driver, and the database behind a store."""

from __future__ import annotations

import importlib.util
from pathlib import Path

from perftune.errors import UsageError

DATABASE_SCHEMES = ("sqlite", "postgresql", "mysql", "mssql")


def default_tracking_uri(workspace: Path) -> str:
    """The embedded default: an SQLite file in the workspace."""
    return f"sqlite:///{workspace.resolve() / 'mlflow.db'}"


def normalize_tracking_uri(uri: str) -> str:
    """``postgresql://…`` means psycopg (3), the driver perftune installs, unless psycopg2 is present.

    SQLAlchemy's bare ``postgresql`` dialect picks psycopg2, which perftune does not depend on; MLflow accepts
    either spelling, so the rewritten URI also works with ``mlflow ui --backend-store-uri``.
    """
    if uri.startswith("postgresql://") and importlib.util.find_spec("psycopg2") is None:
        return "postgresql+psycopg://" + uri[len("postgresql://") :]
    return uri


def database_url(
    uri: str, what: str = "tracking URI", needs: str = "the registry's audit log needs MLflow's database store"
) -> str:
    """The SQLAlchemy URL of a database (the tracking store keeps the audit log; the scoring log is one too)."""
    scheme = uri.split(":", 1)[0].split("+", 1)[0]
    if scheme not in DATABASE_SCHEMES:
        raise UsageError(
            f"{what} {uri!r} is not a database; {needs}: sqlite:///path/file.db or postgresql://user@host:5432/db"
        )
    return normalize_tracking_uri(uri)
