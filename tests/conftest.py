"""Shared fixtures: the offline datasets, a Ray session shared by the study tests, spec builders."""

from __future__ import annotations

import os
import textwrap
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = (REPO / ".." / "shared" / "datasets").resolve()


def pytest_configure(config: pytest.Config) -> None:
    # Tests read the offline copies only; the environment may point elsewhere (e.g. the Makefile's default).
    os.environ.setdefault("PERFTUNE_DATA_DIR", str(SHARED_DATA))
    os.environ.setdefault("RAY_DEDUP_LOGS", "0")


@pytest.fixture(scope="session")
def ray_session():
    """One local Ray for all in-process study tests (perftune joins a running Ray instead of starting one)."""
    import ray

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


@pytest.fixture
def write_spec(tmp_path: Path):
    """Write a spec YAML into a temporary workspace and return its path."""

    def write(body: str, name: str = "study") -> Path:
        path = tmp_path / f"{name}.yaml"
        text = textwrap.dedent(body)
        if "workspace:" not in text:
            text += f"\nworkspace: {tmp_path / 'ws'}\n"
        path.write_text(text)
        return path

    return write


POSTGRES = os.environ.get("PERFTUNE_TEST_POSTGRES", "postgresql://127.0.0.1:5432/test")


@pytest.fixture(scope="session")
def postgres_uri():
    """A fresh PostgreSQL database for this test run, dropped afterwards.

    The server is part of the test environment (`.ci/run` starts it): when it is unreachable the tests that
    need it fail, they do not skip.
    """
    import uuid

    import psycopg

    try:
        admin = psycopg.connect(POSTGRES, autocommit=True, connect_timeout=5)
    except psycopg.OperationalError as exc:
        pytest.fail(
            f"PostgreSQL at {POSTGRES} is unreachable ({exc}); start it with "
            "`pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start` or set PERFTUNE_TEST_POSTGRES"
        )
    database = f"perftune_test_{uuid.uuid4().hex[:12]}"
    admin.execute(f'CREATE DATABASE "{database}"')
    base = POSTGRES.rsplit("/", 1)[0]
    try:
        yield f"{base}/{database}"
    finally:
        admin.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
        admin.close()
