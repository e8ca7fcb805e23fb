"""`perftune tune` killed with SIGKILL at several moments, then `--resume` with a relative `--out`.

Every test runs the console script as a real process in a temporary folder (so `--out runs/x` is relative, as
in the README), decides the moment to kill by polling the files the study writes (never by sleeping a fixed
time), and checks the resumed study against the grid an uninterrupted run tunes: every configuration once, none
missing, MLflow's child runs of the study's parent run and summary.json agreeing trial by trial. The Ray
processes the killed study started must be gone once the next study has started.
"""

from __future__ import annotations

import collections
import itertools
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import psutil
import pytest
from mlflow import MlflowClient

from perftune.tuning.ray_sessions import SessionRecord, index_dir

PERFTUNE = str(Path(sys.executable).with_name("perftune"))
MODELS = ("sgd_logistic", "sgd_svm")
BATCH_SIZES = (16, 32)
LEARNING_RATES = (0.01, 0.1)
SPEC = f"""
name: faults
datasets: [diabetes]
models: [{", ".join(MODELS)}]
search:
  space:
    batch_size: {list(BATCH_SIZES)}
    learning_rate: {list(LEARNING_RATES)}
    epochs: 25
objectives: [accuracy]
early_stopping: {{policy: none}}
"""
# An uninterrupted grid search runs every point of the grid once per model.
GRID = collections.Counter(itertools.product(MODELS, BATCH_SIZES, LEARNING_RATES))
OUT = "runs/x"
POLL_S = 0.05
LIMIT_S = 600  # a safety net against a hung study, not a timing assertion


def first_marker(cwd: Path) -> Path:
    return cwd / OUT / "groups" / f"diabetes__{MODELS[0]}.json"


def write_spec(folder: Path, text: str) -> None:
    (folder / "spec.yaml").write_text(text + f"workspace: {folder / 'ws'}\n")


@pytest.fixture
def study(tmp_path: Path) -> Path:
    write_spec(tmp_path, SPEC)
    return tmp_path


def start(cwd: Path, *args: str) -> subprocess.Popen[bytes]:
    """Start perftune in the background; its output goes to a log file (a pipe nobody reads could fill)."""
    path = cwd / f"perftune-{time.monotonic_ns()}.log"
    with path.open("wb") as log:
        proc = subprocess.Popen([PERFTUNE, *args], cwd=cwd, stdout=log, stderr=subprocess.STDOUT, env=os.environ.copy())
    proc.log_path = path  # type: ignore[attr-defined]
    return proc


def output(proc: subprocess.Popen[bytes]) -> str:
    return proc.log_path.read_text(errors="replace")  # type: ignore[attr-defined]


def run(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [PERFTUNE, *args], cwd=cwd, capture_output=True, text=True, timeout=LIMIT_S, env=os.environ.copy()
    )


def wait_until(condition: Callable[[], bool], proc: subprocess.Popen[bytes], what: str) -> None:
    deadline = time.monotonic() + LIMIT_S
    while not condition():
        assert proc.poll() is None, f"perftune exited ({proc.returncode}) before {what}:\n{output(proc)}"
        assert time.monotonic() < deadline, f"no {what} after {LIMIT_S} s"
        time.sleep(POLL_S)


def logged_trials(cwd: Path) -> int:
    """Trial runs in the study's MLflow store, read straight from its SQLite file."""
    db = cwd / "ws" / "mlflow.db"
    if not db.is_file():
        return 0
    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=1) as conn:
            row = conn.execute("SELECT count(*) FROM tags WHERE key = 'perftune.kind' AND value = 'trial'").fetchone()
            return int(row[0])
    except sqlite3.Error:  # not created yet, or being migrated
        return 0


def kill(proc: subprocess.Popen[bytes]) -> list[psutil.Process]:
    """SIGKILL the study; return the processes it had started (its Ray session), as they were."""
    children = psutil.Process(proc.pid).children(recursive=True)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    return children


def leftovers(children: list[psutil.Process]) -> list[str]:
    """The killed study's processes that still run (psutil checks the pid was not reused)."""
    left = []
    for child in children:
        try:
            if child.is_running() and child.status() != psutil.STATUS_ZOMBIE:
                left.append(f"{child.pid} {child.name()}")
        except psutil.NoSuchProcess:
            continue
    return left


def resume_and_check(cwd: Path, killed_children: list[psutil.Process]) -> dict:
    """Resume the study; while it starts, check the killed study's processes are gone; check the result."""
    proc = start(cwd, "tune", "spec.yaml", "--out", OUT, "--resume")

    def session_recorded() -> bool:
        for path in index_dir().glob("*.json"):
            try:
                if SessionRecord(**json.loads(path.read_text())).driver_pid == proc.pid:
                    return True
            except (OSError, ValueError, TypeError):
                continue
        return False

    wait_until(session_recorded, proc, "Ray session of the resumed study")
    assert leftovers(killed_children) == [], "the killed study's Ray processes survived into the next study"
    assert proc.wait(timeout=LIMIT_S) == 0, output(proc)

    summary = json.loads((cwd / OUT / "summary.json").read_text())
    trials = summary["trials"]
    configs = collections.Counter((t["model"], t["params"]["batch_size"], t["params"]["learning_rate"]) for t in trials)
    assert configs == GRID, "the resumed study ran other trials than an uninterrupted one"
    assert {t["status"] for t in trials} == {"completed"}
    assert len({t["trial_id"] for t in trials}) == len(trials)

    state = json.loads((cwd / OUT / "state.json").read_text())
    runs = MlflowClient(state["tracking_uri"]).search_runs(
        [summary["tracking"]["experiment_id"]],
        filter_string=f"tags.`mlflow.parentRunId` = '{state['parent_run_id']}'",
    )
    by_trial = collections.Counter(r.data.tags["perftune.trial_id"] for r in runs)
    assert max(by_trial.values()) == 1, f"trials logged twice in MLflow: {by_trial}"
    assert {r.data.tags["perftune.trial_id"]: r.info.run_id for r in runs} == {
        t["trial_id"]: t["mlflow_run_id"] for t in trials
    }
    for r in runs:
        assert r.info.status == "FINISHED"
        trial = next(t for t in trials if t["trial_id"] == r.data.tags["perftune.trial_id"])
        assert r.data.params["batch_size"] == str(trial["params"]["batch_size"])
        assert r.data.params["learning_rate"] == str(trial["params"]["learning_rate"])
    assert leftovers(killed_children) == []
    return summary


def test_killed_before_the_first_trial_a_resume_runs_the_whole_grid(study: Path):
    proc = start(study, "tune", "spec.yaml", "--out", OUT)
    tuner = study / OUT / "ray" / "study" / "tuner.pkl"  # one Ray Tune run holds every group
    wait_until(tuner.is_file, proc, "Ray experiment folder")
    children = kill(proc)
    assert logged_trials(study) == 0 and not first_marker(study).exists()

    # without --resume the unfinished study is refused, not silently wiped
    refused = run(study, "tune", "spec.yaml", "--out", OUT)
    assert refused.returncode == 2, refused.stderr
    assert len(refused.stderr.strip().splitlines()) == 1 and "unfinished study" in refused.stderr
    assert (study / OUT / "state.json").is_file()

    resume_and_check(study, children)


def test_killed_mid_group_a_resume_runs_the_rest_once(study: Path):
    proc = start(study, "tune", "spec.yaml", "--out", OUT)
    wait_until(lambda: logged_trials(study) >= 1, proc, "first logged trial")
    children = kill(proc)
    assert not (study / OUT / "summary.json").exists(), "the study finished before the kill; make trials longer"
    resume_and_check(study, children)


def test_killed_in_the_second_group_a_resume_runs_the_rest_once(study: Path):
    """Both groups run in one Ray Tune run: killed once the first group's trials are all logged and the second
    group's have begun, the resumed study still tunes each group's grid exactly once."""
    first_group = len(BATCH_SIZES) * len(LEARNING_RATES)
    proc = start(study, "tune", "spec.yaml", "--out", OUT)
    wait_until(lambda: logged_trials(study) >= first_group + 1, proc, f"{first_group + 1} logged trials")
    children = kill(proc)
    assert not (study / OUT / "summary.json").exists(), "the study finished before the kill; make trials longer"
    resume_and_check(study, children)


TINY = """
name: tiny
datasets: [diabetes]
models: [sgd_logistic]
search:
  space:
    batch_size: [64, 128]
    learning_rate: [0.1]
    epochs: 2
objectives: [accuracy]
early_stopping: {policy: none}
"""


def test_a_finished_study_is_refused_and_overwrite_removes_what_derived_from_it(tmp_path: Path):
    write_spec(tmp_path, TINY)
    out = tmp_path / OUT
    assert run(tmp_path, "tune", "spec.yaml", "--out", OUT).returncode == 0
    assert run(tmp_path, "report", OUT).returncode == 0
    (out / "savings.json").write_text("{}")  # as `perftune savings` leaves it
    derived = ["report/index.html", "effects.json", "savings.json"]
    assert all((out / name).exists() for name in derived)
    before = json.loads((out / "summary.json").read_text())

    refused = run(tmp_path, "tune", "spec.yaml", "--out", OUT)
    assert refused.returncode == 2
    message = refused.stderr.strip()
    assert len(message.splitlines()) == 1 and "Traceback" not in message, message
    assert "finished study" in message and "--resume" in message and "--overwrite" in message
    assert "new --out" in message
    assert json.loads((out / "summary.json").read_text()) == before

    replaced = run(tmp_path, "tune", "spec.yaml", "--out", OUT, "--overwrite")
    assert replaced.returncode == 0, replaced.stderr
    assert not any((out / name).exists() for name in derived)
    after = json.loads((out / "summary.json").read_text())
    assert not {t["trial_id"] for t in after["trials"]} & {t["trial_id"] for t in before["trials"]}
    assert sorted(p.name for p in (out / "groups").iterdir()) == [
        "diabetes__sgd_logistic.history.json",
        "diabetes__sgd_logistic.json",
    ]
    # the old study's MLflow runs stay: a registered version's lineage may name them
    old_parent = MlflowClient(before["tracking"]["uri"]).get_run(before["tracking"]["parent_run_id"])
    assert old_parent.info.lifecycle_stage == "active"
    assert old_parent.data.tags["perftune.overwritten_by"] == after["tracking"]["parent_run_id"]


def test_out_naming_a_file_is_a_one_line_error(tmp_path: Path):
    write_spec(tmp_path, TINY)
    (tmp_path / "taken").write_text("not a folder")
    proc = run(tmp_path, "tune", "spec.yaml", "--out", "taken")
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        f"error: --out {tmp_path / 'taken'} is a file, not a folder; choose a folder for the study's output"
    ]
