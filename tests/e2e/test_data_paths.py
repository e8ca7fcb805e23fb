"""Data files named in a spec, as users name them: relative to the spec, with spaces and non-ASCII letters."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pandas as pd
from mlflow import MlflowClient

PERFTUNE = [sys.executable, "-m", "perftune"]


def cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(
        [*PERFTUNE, *args], cwd=cwd, capture_output=True, text=True, timeout=300, env=os.environ.copy()
    )
    assert "Traceback" not in proc.stderr, proc.stderr
    return proc


def write_table(path: Path) -> None:
    rng = np.random.default_rng(0)
    X = rng.normal(size=(300, 4))
    frame = pd.DataFrame(X, columns=["a", "b", "c", "d"])
    frame["y"] = (X[:, 0] + 0.5 * X[:, 1] > 0).astype(int)
    path.parent.mkdir(parents=True, exist_ok=True)
    frame.to_csv(path, index=False)


def spec_text(dataset_path: str, workspace: Path) -> str:
    return textwrap.dedent(f"""
        name: files
        datasets: [{{path: "{dataset_path}", target: y}}]
        models: [sgd_logistic]
        search:
          space: {{batch_size: [16, 64], learning_rate: 0.01, epochs: 3}}
        objectives: [accuracy]
        gate: [accuracy >= 0.5]
        workspace: {workspace}
    """)


def test_a_data_file_relative_to_the_spec_is_found_by_register_and_reproduce_from_elsewhere(tmp_path: Path):
    write_table(tmp_path / "project" / "data" / "table.csv")
    spec = tmp_path / "project" / "study.yaml"
    spec.write_text(spec_text("data/table.csv", tmp_path / "ws"))
    assert cli("tune", "project/study.yaml", "--out", "runs/files", cwd=tmp_path).returncode == 0
    # the study keeps the spec with the file's absolute path, so its copy works wherever it is read from
    kept = (tmp_path / "runs" / "files" / "spec.yaml").read_text()
    assert str(tmp_path / "project" / "data" / "table.csv") in kept
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    registered = cli("register", str(tmp_path / "runs" / "files"), "--name", "files", cwd=elsewhere)
    assert registered.returncode == 0, registered.stderr
    reproduced = cli("reproduce", "files", "1", "--workspace", str(tmp_path / "ws"), cwd=elsewhere)
    assert reproduced.returncode == 0, reproduced.stdout + reproduced.stderr
    assert "reproduced" in reproduced.stdout


def test_a_dataset_named_with_spaces_and_non_ascii_letters_runs_and_resumes(tmp_path: Path):
    name = "dätä file ✓"
    write_table(tmp_path / f"{name}.csv")
    spec = tmp_path / "study.yaml"
    spec.write_text(spec_text(f"{name}.csv", tmp_path / "ws"))
    first = cli("tune", "study.yaml", "--out", "runs/u", cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    summary = json.loads((tmp_path / "runs" / "u" / "summary.json").read_text())
    assert {t["dataset"] for t in summary["trials"]} == {name}  # the real name where people read it
    client = MlflowClient(f"sqlite:///{tmp_path / 'ws' / 'mlflow.db'}")
    parent = client.get_run(summary["tracking"]["parent_run_id"])
    keys = [k for k in parent.data.metrics if k.endswith(".best_accuracy")]
    assert len(keys) == 1 and keys[0].isascii()  # an MLflow key: ASCII only
    resumed = cli("tune", "study.yaml", "--out", "runs/u", "--resume", cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr
