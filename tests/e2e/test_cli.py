"""The console script as a user runs it: exit codes, one-line errors, interrupt and resume."""

from __future__ import annotations

import collections
import contextlib
import json
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from mlflow import MlflowClient

PERFTUNE = [sys.executable, "-m", "perftune"]

GOOD = """
datasets: [diabetes]
models: [sgd_logistic]
search:
  space:
    batch_size: [32]
    learning_rate: [0.01]
objectives: [accuracy]
constraints: ['train_time_s <= 30']
"""


def run_cli(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*PERFTUNE, *args], capture_output=True, text=True, timeout=timeout, env=os.environ.copy())


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (("[diabetes]", "[diabetis]"), "datasets[0]: unknown PMLB dataset 'diabetis'. Did you mean diabetes?"),
        (
            ("train_time_s <= 30", "train_secs <= 30"),
            "constraints[0].metric: unknown metric 'train_secs' (did you mean 'train_time_s'?)",
        ),
        (
            ("    learning_rate: [0.01]", "    learning_rate: [0.01]\n    epoch: 5"),
            "search.space.epoch: sgd_logistic has no hyperparameter 'epoch' (did you mean 'epochs'?)",
        ),
        (("    batch_size: [32]\n", ""), "search.space: sgd_logistic needs hyperparameter 'batch_size'"),
        (("train_time_s <= 30", "train_time_s <= -5"), "constraints[0]: bound -5 is negative"),
        (
            ("  space:\n    batch_size: [32]\n    learning_rate: [0.01]", "  space: {}"),
            "search.space: the search space is empty",
        ),
        (("models: [sgd_logistic]", "models: [sgd_logistic\n  oops: ]"), "malformed YAML at line"),
        (
            ("objectives: [accuracy]", "objectives: [accuracy]\nmonitor: {columns: {A2: {test: kolmogorov}}}"),
            "monitor.columns.A2.test: unknown drift test 'kolmogorov'",
        ),
        (
            ("objectives: [accuracy]", "objectives: [accuracy]\nmonitor: {window: 5 hours}"),
            "monitor.window: window '5 hours': give a number of rows (10000) or a duration (90s, 30m, 1h, 2d)",
        ),
    ],
    ids=[
        "unknown-dataset",
        "unknown-metric",
        "unknown-hyperparameter",
        "missing-hyperparameter",
        "negative-budget",
        "empty-space",
        "malformed-yaml",
        "unknown-drift-test",
        "bad-monitor-window",
    ],
)
def test_bad_specs_give_one_line_and_exit_code_2(tmp_path: Path, change, message):
    spec = tmp_path / "bad.yaml"
    spec.write_text(GOOD.replace(*change))
    proc = run_cli("tune", str(spec))
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], proc.stderr
    assert "Traceback" not in proc.stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("tune", "/nonexistent.yaml"), "error: /nonexistent.yaml: no such spec file"),
        (("tune",), "error: Missing argument 'spec'."),
        (("tune", "x.yaml", "--resum"), "error: No such option: --resum"),
        (("no-such-command",), "error: No such command 'no-such-command'."),
        (("models", "--workspace", "/nonexistent"), "error: no tracking store at /nonexistent/mlflow.db"),
    ],
)
def test_usage_errors_are_one_line_with_exit_code_2(args, message):
    proc = run_cli(*args)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.strip().startswith(message) and len(proc.stderr.strip().splitlines()) == 1, proc.stderr


def test_debug_shows_the_traceback(tmp_path):
    for flag in (["--debug"], []):
        env = {**os.environ, "PERFTUNE_DEBUG": "0" if flag else "1"}
        proc = subprocess.run([*PERFTUNE, *flag, "tune", "/nonexistent.yaml"], capture_output=True, text=True, env=env)
        assert proc.returncode != 0 and "Traceback" in proc.stderr and "SpecError" in proc.stderr


def test_version_and_datasets():
    assert run_cli("--version").stdout.strip() == "perftune 0.1.0"
    listing = run_cli("datasets")
    assert listing.returncode == 0
    assert (
        "diabetes" in listing.stdout and "1191_BNG_pbc" in listing.stdout and "download on first use" in listing.stdout
    )


RESUME = """
name: resume
datasets: [529_pollen]
models: [sgd_linear]
search:
  space:
    batch_size: [4, 8, 16]
    learning_rate: {powers_of_ten: {from: -4, to: -1}}
    epochs: 20
objectives: [rmse]
early_stopping: {policy: none}
"""


def test_resume_after_interrupt_does_not_repeat_finished_trials(tmp_path: Path):
    spec = tmp_path / "resume.yaml"
    spec.write_text(textwrap.dedent(RESUME) + f"workspace: {tmp_path / 'ws'}\n")
    out = tmp_path / "out"
    uri = f"sqlite:///{tmp_path / 'ws' / 'mlflow.db'}"
    proc = subprocess.Popen(
        [*PERFTUNE, "tune", str(spec), "--out", str(out)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )

    def logged_trials() -> dict[str, str]:
        # Read the store read-only with sqlite3: an MlflowClient here would create or migrate the schema
        # while the study is creating it, and that race made the study itself fail.
        db = tmp_path / "ws" / "mlflow.db"
        if not db.exists():
            return {}
        try:
            with contextlib.closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5)) as conn:
                rows = conn.execute(
                    "SELECT t.value, t.run_uuid FROM tags t JOIN tags k ON k.run_uuid = t.run_uuid"
                    " WHERE t.key = 'perftune.trial_id' AND k.key = 'perftune.kind' AND k.value = 'trial'"
                ).fetchall()
        except sqlite3.Error:  # the study is still creating the schema
            return {}
        return dict(rows)

    deadline = time.time() + 240
    while len(logged_trials()) < 2 and time.time() < deadline and proc.poll() is None:
        time.sleep(0.3)
    before = logged_trials()
    if proc.poll() is not None:
        _, stderr = proc.communicate()
        raise AssertionError(f"the study ended (exit {proc.returncode}) before it could be interrupted:\n{stderr}")
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 130, stderr
    assert "--resume" in stderr
    before = logged_trials()  # trials that finished while stopping count too
    assert 2 <= len(before) < 12

    resumed = run_cli("tune", str(spec), "--out", str(out), "--resume", timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    summary = json.loads((out / "summary.json").read_text())
    assert len(summary["trials"]) == 12 and {t["status"] for t in summary["trials"]} == {"completed"}
    runs = MlflowClient(uri).search_runs(["1"], filter_string="tags.`perftune.kind` = 'trial'")
    counts = collections.Counter(r.data.tags["perftune.trial_id"] for r in runs)
    assert len(counts) == 12 and max(counts.values()) == 1  # nothing ran (or was logged) twice
    after = {r.data.tags["perftune.trial_id"]: r.info.run_id for r in runs}
    assert all(after[trial] == run_id for trial, run_id in before.items())
    assert {t["trial_id"]: t["mlflow_run_id"] for t in summary["trials"]} == after


def test_resume_refuses_a_changed_spec(tmp_path: Path):
    spec = tmp_path / "s.yaml"
    spec.write_text(GOOD + f"workspace: {tmp_path / 'ws'}\n")
    out = tmp_path / "out"
    assert run_cli("tune", str(spec), "--out", str(out), timeout=300).returncode == 0
    spec.write_text(GOOD.replace("[0.01]", "[0.1]") + f"workspace: {tmp_path / 'ws'}\n")
    proc = run_cli("tune", str(spec), "--out", str(out), "--resume")
    assert proc.returncode == 2 and "the spec changed" in proc.stderr


def test_ingest_commands_report_each_file_and_refuse_bad_input_in_one_line(tmp_path):
    from perftune.data.sources import data_dir

    ws = ["--workspace", str(tmp_path / "ws")]
    text = run_cli("data", "ingest-text", str(data_dir() / "bbc" / "bbc-fulltext.zip"), "--name", "bbc", *ws)
    assert text.returncode == 0, text.stderr
    assert "stored: store:bbc@" in text.stdout and "2127 texts" in text.stdout
    assert "repaired: bbc/sport/199.txt: invalid UTF-8 byte 0xA3" in text.stdout
    assert "… and 89 more" in text.stdout  # 98 duplicates and the repaired file: the first 10 are listed
    images = run_cli("data", "ingest-images", str(data_dir() / "fashion-mnist"), "--name", "f", "--classes", "10", *ws)
    assert images.returncode == 0 and "70000 images" in images.stdout, images.stderr
    for args, message in [
        (("ingest-text", str(tmp_path), "--name", "x", "--invalid-utf8", "nope"), "--invalid-utf8: Input should be"),
        (("ingest-text", str(tmp_path / "none.zip"), "--name", "x"), "no such file or folder"),
        (("ingest-images", str(tmp_path), "--name", "x"), "holds no idx files"),
        (("ingest-labels", str(tmp_path / "none.json"), "--name", "bbc"), "is not a Label Studio JSON export"),
    ]:
        bad = run_cli("data", *args, *ws)
        assert bad.returncode == 2 and "Traceback" not in bad.stderr, (args, bad.stderr)
        lines = [line for line in bad.stderr.splitlines() if line.strip()]
        assert len(lines) == 1 and message in lines[0], (args, bad.stderr)
