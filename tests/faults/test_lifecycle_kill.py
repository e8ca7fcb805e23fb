"""`perftune register`, `promote`, `rollback` and `retrain` killed with SIGKILL at several points; the next command.

Each case copies one store (a study on diabetes, v1 and v2 registered, v2 champion after v1) and runs the real
console script with ``PERFTUNE_FAULT`` naming a checkpoint between two of the command's writes (see
``perftune._faults``): the process kills itself there, as ``kill -9`` would. One retraining is killed from outside
instead, at a moment found by polling the store (its study's run is RUNNING), never by sleeping.

Then ``perftune models`` must print exactly one ``recovered:`` line saying what it did, and leave the store settled:
every version that can be promoted has its gate, its register audit row and got its alias; the aliases agree with
the audit log; no run is RUNNING; the journal has nothing unsettled. A second command recovers nothing.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import signal
import sqlite3
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from mlflow import MlflowClient

from perftune.registry.audit import champion_stack
from perftune.registry.catalog import CHALLENGER, CHAMPION, INTERRUPTED, PENDING_TAG, STATUS_TAG, ModelRegistry
from perftune.tuning.ray_sessions import reap_orphaned_sessions


def _process_helpers():
    """``tests/faults/test_tune_kill.py``: start, run, wait_until, kill, output (tests are not a package)."""
    path = Path(__file__).with_name("test_tune_kill.py")
    spec = importlib.util.spec_from_file_location("perftune_tests_faults_tune_kill", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


procs = _process_helpers()
PERFTUNE = procs.PERFTUNE
SPEC = """
name: lifecycle
datasets: [diabetes]
models: [sgd_logistic]
search:
  space:
    batch_size: [16, 32]
    learning_rate: [0.01]
    epochs: 10
objectives: [accuracy]
early_stopping: {policy: none}
gate: ['accuracy >= 0.5']
retrain:
  search: {budget: 0.5}
"""
STUDY = "runs/base"


def perftune(cwd: Path, *args: str, fault: str | None = None) -> subprocess.CompletedProcess[str]:
    """Run the console script to its end; ``fault``: the checkpoint where it kills itself."""
    env = {k: v for k, v in os.environ.items() if k != "PERFTUNE_FAULT"}
    if fault is not None:
        env["PERFTUNE_FAULT"] = fault
    return subprocess.run([PERFTUNE, *args], cwd=cwd, capture_output=True, text=True, timeout=procs.LIMIT_S, env=env)


def ok(proc: subprocess.CompletedProcess[str]) -> str:
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout


@pytest.fixture(scope="module")
def base(tmp_path_factory) -> Path:
    """A tuned study and its store: v1 and v2 registered, v1 promoted, then v2 (champion v2, previous v1)."""
    root = tmp_path_factory.mktemp("lifecycle")
    (root / "spec.yaml").write_text(SPEC + f"workspace: {root / 'ws'}\n")
    ok(perftune(root, "tune", "spec.yaml", "--out", STUDY))
    uri = f"sqlite:///{root / 'ws' / 'mlflow.db'}"
    ok(perftune(root, "register", STUDY, "--name", "clf"))
    ok(perftune(root, "promote", "clf", "1", "--tracking-uri", uri))
    trials = sorted(t["trial_id"] for t in json.loads((root / STUDY / "summary.json").read_text())["trials"])
    registered = ModelRegistry(uri).version("clf", "1").tags["perftune.trial_id"]
    ok(perftune(root, "register", STUDY, "--name", "clf", "--trial", next(t for t in trials if t != registered),
                "--tracking-uri", uri))  # fmt: skip
    ok(perftune(root, "promote", "clf", "2", "--tracking-uri", uri))
    return root


@pytest.fixture
def store(base: Path, tmp_path: Path) -> Iterator[str]:
    """A copy of the base store for one case; its URI."""
    shutil.copy(base / "ws" / "mlflow.db", tmp_path / "mlflow.db")
    yield f"sqlite:///{tmp_path / 'mlflow.db'}"


def killed(proc: subprocess.CompletedProcess[str]) -> None:
    assert proc.returncode == -signal.SIGKILL, f"not killed at its checkpoint:\n{proc.stdout}{proc.stderr}"


def recovered_lines(proc: subprocess.CompletedProcess[str]) -> list[str]:
    return [line for line in proc.stderr.splitlines() if line.startswith("recovered:")]


def next_command_settles(cwd: Path, uri: str, *expected: str) -> str:
    """``perftune models`` recovers in one line holding ``expected``; a second one recovers nothing."""
    first = perftune(cwd, "models", "--tracking-uri", uri)
    ok(first)
    lines = recovered_lines(first)
    assert len(lines) == 1, first.stderr
    for fragment in expected:
        assert fragment in lines[0], lines[0]
    assert "Traceback" not in first.stderr
    again = perftune(cwd, "models", "--tracking-uri", uri)
    ok(again)
    assert recovered_lines(again) == [], again.stderr
    assert_settled(uri)
    return lines[0]


def assert_settled(uri: str) -> None:
    """No version promotable without gate, alias and audit row; aliases as the audit log says; no RUNNING run."""
    registry = ModelRegistry(uri)
    try:
        entries = registry.history("clf")
        registered = {e.to_version for e in entries if e.action == "register"}
        for v in registry.client.search_model_versions("name = 'clf'"):
            assert PENDING_TAG not in v.tags, f"v{v.version} still pending"
            if v.tags.get(STATUS_TAG) == INTERRUPTED:
                continue
            assert v.tags["perftune.gate"] in ("passed", "failed"), f"v{v.version} has no gate verdict"
            assert str(v.version) in registered, f"v{v.version} is promotable without its register audit row"
        aliases = registry.aliases("clf")
        assert aliases[CHAMPION] == champion_stack(entries, CHAMPION)[-1]
        assert aliases[CHALLENGER] == [e.to_version for e in entries if e.alias == CHALLENGER][-1]
        client = MlflowClient(uri)
        experiments = [e.experiment_id for e in client.search_experiments()]
        running = client.search_runs(experiments, "attributes.status = 'RUNNING'")
        assert running == [], [r.info.run_name for r in running]
        assert registry.journal.unsettled() == []
    finally:
        registry.close()


def versions(uri: str) -> dict[str, str]:
    """``{version: status}`` of clf."""
    registry = ModelRegistry(uri)
    try:
        return {str(v.version): registry.show("clf", v.version).status
                for v in registry.client.search_model_versions("name = 'clf'")}  # fmt: skip
    finally:
        registry.close()


# ------------------------------------------------------------------------------------------------ register

REGISTER_CASES = {
    "register.after_create_run": (
        "killed after its run was created",
        "nothing had been registered",
        "its run ended KILLED",
    ),
    "register.after_log_model": ("killed after its run was created", "nothing had been registered"),
    "register.after_register_model": (
        "register clf v3",
        "killed after its version was registered",
        "v3 marked interrupted",
    ),
    "register.before_alias": ("killed after the move of challenger to v3 began", "v3 marked interrupted"),
}


@pytest.mark.parametrize("point", list(REGISTER_CASES))
def test_a_register_killed_before_its_alias_leaves_no_version_that_can_be_promoted(base, store, tmp_path, point):
    killed(perftune(base, "register", STUDY, "--name", "clf", "--tracking-uri", store, fault=point))
    next_command_settles(tmp_path, store, *REGISTER_CASES[point])
    made = versions(store)
    assert {v: s for v, s in made.items() if v in ("1", "2")} == {"1": "active", "2": "active"}
    if "3" in made:
        assert made["3"] == INTERRUPTED
        refused = perftune(tmp_path, "promote", "clf", "3", "--tracking-uri", store)
        assert refused.returncode == 2 and len(refused.stderr.strip().splitlines()) == 1, refused.stderr
        assert "interrupted" in refused.stderr and "register the trial again" in refused.stderr
        entries = ModelRegistry(store).history("clf")
        assert (entries[-1].action, entries[-1].to_version) == ("interrupted", "3")


def test_a_register_killed_after_moving_its_alias_is_finished_and_its_version_can_be_promoted(base, store, tmp_path):
    killed(perftune(base, "register", STUDY, "--name", "clf", "--tracking-uri", store, fault="register.after_alias"))
    next_command_settles(tmp_path, store, "register clf v3", "finished: challenger v2 → v3, audit row written")
    entries = ModelRegistry(store).history("clf")
    assert (entries[-1].action, entries[-1].from_version, entries[-1].to_version) == ("register", "2", "3")
    assert "finished by recovery" in entries[-1].reason
    assert "champion: v2 → v3" in ok(perftune(tmp_path, "promote", "clf", "3", "--tracking-uri", store))


def test_a_promote_of_a_version_whose_register_was_killed_recovers_first_and_refuses_it(base, store, tmp_path):
    fault = "register.after_register_model"
    killed(perftune(base, "register", STUDY, "--name", "clf", "--tracking-uri", store, fault=fault))
    refused = perftune(tmp_path, "promote", "clf", "3", "--tracking-uri", store)
    assert refused.returncode == 2
    lines = refused.stderr.strip().splitlines()
    assert len(lines) == 2 and lines[0].startswith("recovered: register clf v3 was interrupted"), lines
    assert lines[1].startswith("error: clf v3 was left by an interrupted `perftune register`"), lines
    assert_settled(store)


# ------------------------------------------------------------------------------------------------ alias moves

MOVE_CASES = {
    ("promote", "promote.before_alias"): ("2", "promote clf v1 was interrupted", "champion had not moved"),
    ("promote", "promote.after_alias"): ("1", "promote clf v1 was interrupted", "finished: champion v2 → v1"),
    ("rollback", "rollback.before_alias"): ("2", "rollback clf v1 was interrupted", "champion had not moved"),
    ("rollback", "rollback.after_alias"): ("1", "rollback clf v1 was interrupted", "finished: champion v2 → v1"),
}


@pytest.mark.parametrize(("command", "point"), list(MOVE_CASES))
def test_an_alias_move_killed_either_side_of_the_alias_is_finished_or_changed_nothing(store, tmp_path, command, point):
    args = ["promote", "clf", "1"] if command == "promote" else ["rollback", "clf"]
    killed(perftune(tmp_path, *args, "-m", "kill test", "--tracking-uri", store, fault=point))
    champion, *expected = MOVE_CASES[(command, point)]
    next_command_settles(tmp_path, store, *expected)
    registry = ModelRegistry(store)
    assert registry.aliases("clf")[CHAMPION] == champion
    last = registry.history("clf")[-1]
    if champion == "1":  # finished: the audit row the killed command did not write, with its reason
        assert (last.action, last.from_version, last.to_version) == (command, "2", "1")
        assert last.reason.startswith("kill test (finished by recovery")
    else:
        assert (last.action, last.to_version) == ("promote", "2")  # the log as it was
    registry.close()


def test_a_promote_run_again_after_it_was_killed_settles_the_dead_one_and_promotes(store, tmp_path):
    killed(perftune(tmp_path, "promote", "clf", "1", "--tracking-uri", store, fault="promote.before_alias"))
    again = perftune(tmp_path, "promote", "clf", "1", "--tracking-uri", store)
    assert "clf champion: v2 → v1" in ok(again)
    assert len(recovered_lines(again)) == 1 and "nothing changed" in recovered_lines(again)[0]
    assert_settled(store)


# ------------------------------------------------------------------------------------------------ retrain

RETRAIN_CASES = {
    "retrain.after_data": ("killed after its data was stored",),
    "retrain.after_record": ("killed after its retrain audit row was written",),
    "register.after_register_model": ("killed after its version was registered", "v3 marked interrupted"),
    "retrain.after_register": ("killed after its challenger v3 was registered",),
}


def retrain_args(tmp_path: Path, store: str) -> list[str]:
    return ["retrain", "clf", "--force", "--tracking-uri", store, "--workspace", str(tmp_path / "ws"),
            "--scoring-uri", f"sqlite:///{tmp_path / 'scoring.db'}"]  # fmt: skip


def retraining_closed(store: str) -> list:
    """The audit log ends with the retraining's ``interrupted`` row (on the champion, v2); returns the log."""
    entries = ModelRegistry(store).history("clf")
    assert (entries[-1].action, entries[-1].to_version) == ("interrupted", "2")
    assert entries[-1].reason.startswith("retraining interrupted (killed after ")
    return entries


@pytest.mark.parametrize("point", list(RETRAIN_CASES))
def test_a_retraining_killed_at_a_checkpoint_gets_an_interrupted_outcome(store, tmp_path, point):
    killed(perftune(tmp_path, *retrain_args(tmp_path, store), fault=point))
    closed = ("retrain clf (champion v2) was interrupted", "retraining of v2 marked interrupted in the audit log")
    line = next_command_settles(tmp_path, store, *closed, *RETRAIN_CASES[point])
    entries = retraining_closed(store)
    made = versions(store)
    if point == "retrain.after_register":  # the challenger was registered whole: it stays, and can be promoted
        assert made["3"] == "active" and ModelRegistry(store).aliases("clf")[CHALLENGER] == "3"
    elif "3" in made:
        assert made["3"] == INTERRUPTED and "v3 marked interrupted" in line
    if point != "retrain.after_data":
        assert [e.action for e in entries].count("retrain") == 1


def test_a_retraining_killed_from_outside_during_its_study_ends_the_study_run_killed(store, tmp_path):
    """A real SIGKILL from outside, once the retraining's study has its MLflow run (polled in the store)."""
    db = Path(store.removeprefix("sqlite:///"))

    def study_running() -> bool:
        try:
            with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=1) as conn:
                row = conn.execute(
                    "SELECT count(*) FROM runs r JOIN tags t ON t.run_uuid = r.run_uuid "
                    "WHERE r.status = 'RUNNING' AND t.key = 'perftune.kind' AND t.value = 'study'"
                ).fetchone()
                return int(row[0]) > 0
        except sqlite3.Error:
            return False

    proc = procs.start(tmp_path, *retrain_args(tmp_path, store))
    try:
        procs.wait_until(study_running, proc, "the retraining study's run")
        procs.kill(proc)
        line = "retrain clf (champion v2) was interrupted (killed after its study began)"
        next_command_settles(tmp_path, store, line, "retraining of v2 marked interrupted", "its run ended KILLED")
        retraining_closed(store)
        assert set(versions(store)) == {"1", "2"}
        client = MlflowClient(store)
        studies = client.search_runs([e.experiment_id for e in client.search_experiments()],
                                     "tags.`perftune.kind` = 'study'")  # fmt: skip
        assert sorted(r.info.status for r in studies) == ["FINISHED", "KILLED"]  # the original study's, this one's
    finally:
        if proc.poll() is None:
            proc.kill()
        reap_orphaned_sessions()  # the killed study's Ray processes
