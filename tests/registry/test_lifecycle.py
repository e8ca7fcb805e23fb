"""Registry lifecycle on both backends: register → promote → rollback → history → archive, concurrent promotes."""

from __future__ import annotations

import itertools
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

import pytest
from typer.testing import CliRunner

import perftune
from perftune.cli import app
from perftune.registry.audit import champion_stack
from perftune.registry.catalog import CHALLENGER, CHAMPION, ModelRegistry
from perftune.results import load_study
from perftune.track.uri import mlflow_store

STUDY = """
name: lifecycle
datasets: [diabetes]
models: [sgd_svm]
search:
  space:
    batch_size: [16, 64]
    learning_rate: [0.001, 0.01]
    epochs: 5
objectives: [accuracy, train_time_s]
constraints: ['train_time_s <= 30']
gate: ['accuracy >= 0.5']
"""


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def backend(request, ray_session, tmp_path_factory):
    """A finished study tracked in SQLite (the default) or PostgreSQL; returns (run folder, tracking URI)."""
    root = tmp_path_factory.mktemp(f"life-{request.param}")
    spec = root / "life.yaml"
    spec.write_text(STUDY + f"workspace: {root / 'ws'}\n")
    uri = request.getfixturevalue("postgres_uri") if request.param == "postgresql" else None
    if uri:
        spec.write_text(spec.read_text() + f"tracking: {{uri: '{uri}'}}\n")
    result = perftune.tune(spec, out=root / "out")
    assert result.tracking["uri"].startswith("postgresql+psycopg://" if uri else "sqlite:///")
    return root / "out", result.tracking["uri"]


def cli(*args: str) -> str:
    result = CliRunner().invoke(app, list(args), env={"COLUMNS": "250"})
    assert result.exit_code == 0, result.output
    return result.output


def cli_error(*args: str) -> str:
    result = CliRunner().invoke(app, list(args), env={"COLUMNS": "250"})
    assert result.exit_code != 0, result.output
    assert "Traceback" not in result.output
    return result.output


def test_register_promote_rollback_history_archive(backend):
    out, uri = backend
    study = load_study(out)
    trials = sorted((t for g in study.groups for t in g.feasible), key=lambda t: t.trial_id)
    cli("register", str(out), "--name", "clf", "--tracking-uri", uri)
    cli("register", str(out), "--name", "clf", "--trial", trials[0].trial_id, "--tracking-uri", uri)
    registry = ModelRegistry(uri)
    assert registry.aliases("clf") == {CHALLENGER: "2"}

    assert "champion: — → v1" in cli("promote", "clf", "1", "-m", "first release", "--tracking-uri", uri)
    assert "champion: v1 → v2" in cli("promote", "clf", "2", "--tracking-uri", uri)
    listing = cli("models", "--tracking-uri", uri)
    row = next(line for line in listing.splitlines() if line.strip("│ ").startswith("clf"))
    assert [cell.strip() for cell in row.split("│")[3:7]] == ["v2", "v2", "v1", "v2"]  # champion challenger prev latest

    assert "champion: v2 → v1" in cli("rollback", "clf", "-m", "latency regression", "--tracking-uri", uri)
    assert registry.aliases("clf")[CHAMPION] == "1"
    assert "first champion" in cli_error("rollback", "clf", "--tracking-uri", uri)

    entries = registry.history("clf")
    assert [(e.action, e.alias, e.from_version, e.to_version) for e in entries] == [
        ("register", CHALLENGER, None, "1"),
        ("register", CHALLENGER, "1", "2"),
        ("promote", CHAMPION, None, "1"),
        ("promote", CHAMPION, "1", "2"),
        ("rollback", CHAMPION, "2", "1"),
    ]
    assert entries[2].reason == "first release" and entries[4].reason == "latency regression"
    assert all(e.user for e in entries)
    shown = cli("history", "clf", "--tracking-uri", uri)
    assert "latency regression" in shown and "v2 → v1" in shown

    # archive: kept, loses its aliases, cannot be promoted; the champion cannot be archived
    assert "is the champion" in cli_error("archive", "clf", "1", "--tracking-uri", uri)
    assert "v2 archived" in cli("archive", "clf", "2", "-m", "superseded", "--tracking-uri", uri)
    assert registry.aliases("clf") == {CHAMPION: "1"}
    assert "archived" in cli_error("promote", "clf", "2", "--tracking-uri", uri)
    assert registry.show("clf", "2").status == "archived"
    assert registry.history("clf")[-1].action == "archive"

    detail = cli("models", "show", "clf", "1", "--tracking-uri", uri)
    for needle in ("perftune.dataset.fingerprint", "perftune.trial_run_id", "latency_ms_p95", "accuracy >= 0.5"):
        assert needle in detail
    registry.close()


def test_bad_references_are_clear_errors(backend):
    out, uri = backend
    assert "no registered model 'nope'" in cli_error("promote", "nope", "1", "--tracking-uri", uri)
    cli("register", str(out), "--name", "refs", "--tracking-uri", uri)
    assert "has no version '9'; versions: 1" in cli_error("promote", "refs", "9", "--tracking-uri", uri)
    assert "no champion to roll back" in cli_error("rollback", "refs", "--tracking-uri", uri)
    registry = ModelRegistry(uri)
    assert str(registry.resolve("refs@challenger").version) == "1"
    assert str(registry.resolve("refs/1").version) == "1"
    registry.close()


def test_concurrent_promotes_keep_aliases_and_audit_consistent(backend):
    """8 processes promote 8 versions of one model at once: no lost audit row, the alias ends on the last one."""
    out, uri = backend
    cli("register", str(out), "--name", "race", "--tracking-uri", uri)
    registry = ModelRegistry(uri)
    first = registry.version("race", "1")
    with mlflow_store(uri):  # MLflow resolves the logged model of `source` through its process-wide store
        for _ in range(7):  # 7 more versions of the same artifact: promote only cares that they exist
            registry.client.create_model_version("race", first.source, run_id=first.run_id, tags=first.tags)
    env = {**os.environ, "COLUMNS": "200"}
    command = [sys.executable, "-m", "perftune.cli", "promote", "race"]

    def promote(version: int) -> subprocess.CompletedProcess:
        extra = ["-m", f"race {version}", "--tracking-uri", uri]
        return subprocess.run([*command, str(version), *extra], capture_output=True, text=True, env=env, timeout=300)

    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(promote, range(1, 9)))
    assert [r.returncode for r in results] == [0] * 8, [r.stderr for r in results]

    promotes = [e for e in registry.history("race") if e.action == "promote"]
    assert len(promotes) == 8
    assert sorted(int(e.to_version) for e in promotes) == list(range(1, 9))
    assert promotes[0].from_version is None
    for before, after in itertools.pairwise(promotes):  # serialized: each move starts where the last one ended
        assert after.from_version == before.to_version
    assert registry.aliases("race")[CHAMPION] == promotes[-1].to_version
    assert champion_stack(registry.history("race"), CHAMPION)[-1] == promotes[-1].to_version
    registry.close()


def test_a_version_still_being_registered_is_refused_and_one_left_by_a_failed_register_is_settled(backend):
    """A register that is still running (this process) holds its version back; once it raised and left it
    (abandoned), the next registry command marks the version interrupted, in one line, and promote refuses it."""
    from perftune.registry.catalog import PENDING_TAG
    from perftune.registry.journal import OperationState

    out, uri = backend
    cli("register", str(out), "--name", "pend", "--tracking-uri", uri)
    registry = ModelRegistry(uri)
    first = registry.version("pend", "1")
    op = registry.journal.begin("register", "pend", {})
    with mlflow_store(uri):
        registry.client.create_model_version("pend", first.source, run_id=first.run_id,
                                             tags={**first.tags, PENDING_TAG: str(op)})  # fmt: skip
    assert "is in a `perftune register` that is still running (pid" in cli_error("promote", "pend", "2",
                                                                                 "--tracking-uri", uri)  # fmt: skip
    assert registry.show("pend", "2").status == "pending"

    registry.journal.finish(op, OperationState.ABANDONED, "OSError: disk full")
    listing = cli("models", "--tracking-uri", uri)
    assert "recovered: register pend was interrupted (failed after it began: OSError: disk full); v2 marked " in listing
    assert "recovered:" not in cli("models", "--tracking-uri", uri)
    assert "was left by an interrupted `perftune register`" in cli_error("promote", "pend", "2", "--tracking-uri", uri)
    assert registry.show("pend", "2").status == "interrupted"
    last = registry.history("pend")[-1]
    assert (last.action, last.to_version, last.move()) == ("interrupted", "2", "v2 register interrupted")
    assert registry.journal.get(op).state == OperationState.INTERRUPTED
    registry.close()
