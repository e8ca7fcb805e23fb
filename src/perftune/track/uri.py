"""Tracking URIs: the default store, PostgreSQL's driver, and the database behind a store."""

from __future__ import annotations

import contextlib
import importlib.util
import threading
from collections.abc import Iterator
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


_MLFLOW_STORE_LOCK = threading.RLock()


@contextlib.contextmanager
def mlflow_store(uri: str) -> Iterator[None]:
    """MLflow's process-wide tracking *and* registry URIs set to ``uri`` inside, restored afterwards.

    MLflow's fluent API (``log_model``, ``register_model``, ``models:/`` URIs) reads process globals (and
    ``set_tracking_uri`` writes ``MLFLOW_TRACKING_URI`` into the environment, which subprocesses inherit); setting
    them for good would send a later call in the same process (another workspace's ``register``) to this store.
    Held under one process-wide lock, so two threads (a server's alias follower and its start-up load) can neither
    see each other's store nor restore each other's value.
    """
    import mlflow
    from mlflow.tracking import _model_registry, _tracking_service

    # the values as set (None = never set, so MLflow's own default applies again); public getters otherwise
    with _MLFLOW_STORE_LOCK:
        previous_tracking = getattr(_tracking_service.utils, "_tracking_uri", mlflow.get_tracking_uri())
        previous_registry = getattr(_model_registry.utils, "_registry_uri", mlflow.get_registry_uri())
        mlflow.set_tracking_uri(uri)
        mlflow.set_registry_uri(uri)
        try:
            yield
        finally:
            mlflow.set_tracking_uri(previous_tracking)  # type: ignore[arg-type]
            mlflow.set_registry_uri(previous_registry)  # type: ignore[arg-type]
