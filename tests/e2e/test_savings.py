"""RQ2 end to end: the full search and the policy run, compared; finished runs are reused.

The budget is on ``steps``, so which trials the policy stops is the same on a quiet and on a busy machine."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from perftune.analysis.savings import run_savings
from perftune.errors import UsageError
from perftune.spec import load_spec

STUDY = """
name: sav
datasets: [529_pollen]
models: [sgd_linear]
search:
  space:
    batch_size: [2, 16, 128]
    learning_rate: [0.001, 0.01]
    epochs: 10
objectives: [rmse]
constraints: ['steps <= 1000']
early_stopping: {policy: projected}
"""


def test_savings_runs_both_studies_then_reuses_them(ray_session, write_spec, tmp_path, monkeypatch):
    spec = load_spec(write_spec(STUDY))
    report = run_savings(spec, out=tmp_path / "runs" / "sav")
    (group,) = report.groups
    assert group.trials == 6 and group.matched == 6
    assert group.stopped == 4  # 2154 rows × 10 epochs: batch sizes 2 and 16 take 10 770 and 1 350 steps
    # the policy run trains ~1 100 steps where the full one trains ~24 600: far less CPU however busy the machine
    assert group.cpu_s_policy < group.cpu_s_full and group.savings_factor > 1
    assert group.same_best and group.regret == 0  # seeded training: the best (batch size 128) is the same trial
    assert group.false_stops == 0  # the stopped trials were over the budget in the full run too
    summary = json.loads((tmp_path / "runs" / "sav" / "summary.json").read_text())
    assert summary["savings"]["groups"][0]["savings_factor"] == pytest.approx(group.savings_factor)
    assert (tmp_path / "runs" / "sav-full" / "summary.json").is_file()
    # the full run records the spec it ran (policy none), not the policy run's
    assert "policy: none" in (tmp_path / "runs" / "sav-full" / "spec.yaml").read_text()
    assert "policy: projected" in (tmp_path / "runs" / "sav" / "spec.yaml").read_text()

    def must_not_run(*args, **kwargs):
        raise AssertionError("a matching finished run exists and must be reused")

    monkeypatch.setattr("perftune.tuning.engine.run_study", must_not_run)
    again = run_savings(spec, out=tmp_path / "runs" / "sav")
    assert again.groups[0].cpu_s_full == pytest.approx(group.cpu_s_full)
    # a changed spec never replaces the runs silently, and the error names savings' own option
    changed = load_spec(write_spec(STUDY.replace("batch_size: [2, 16, 128]", "batch_size: [2, 16, 64]")))
    with pytest.raises(UsageError, match="--rerun"):
        run_savings(changed, out=tmp_path / "runs" / "sav")

    # the CLI on the same runs: report and compare
    report_cli = subprocess.run(
        [sys.executable, "-m", "perftune", "report", str(tmp_path / "runs" / "sav")],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert report_cli.returncode == 0, report_cli.stderr
    page = (tmp_path / "runs" / "sav" / "report" / "index.html").read_text()
    assert "RQ2" in page and "false stops" in page and "No savings comparison" not in page
    compare = subprocess.run(
        [
            sys.executable,
            "-m",
            "perftune",
            "compare",
            str(tmp_path / "runs" / "sav"),
            str(tmp_path / "runs" / "sav-full"),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "COLUMNS": "200"},
    )
    assert compare.returncode == 0 and "529_pollen" in compare.stdout and "none" in compare.stdout


def test_savings_needs_a_policy_and_report_needs_a_study(write_spec, tmp_path):
    spec = write_spec(STUDY.replace("policy: projected", "policy: none"))
    proc = subprocess.run(
        [sys.executable, "-m", "perftune", "savings", str(spec)], capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 2 and "stops nothing" in proc.stderr
    proc = subprocess.run(
        [sys.executable, "-m", "perftune", "report", str(tmp_path)], capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 2 and "holds no finished study" in proc.stderr


def test_a_predictor_fitted_on_a_full_run_stops_trials_early(ray_session, write_spec, tmp_path):
    import perftune

    full = tmp_path / "full"
    grid = STUDY.replace("[2, 16, 128]", "{powers_of_two: {from: 3, until: n_samples}}").replace(
        "[0.001, 0.01]", "{powers_of_ten: {from: -4, to: -1}}"
    )
    perftune.tune(write_spec(grid.replace("policy: projected", "policy: none"), name="full"), out=full)
    predicted = grid.replace("policy: projected}", f"policy: predicted, predictor: {{train_on: {full}}}}}").replace(
        "'steps <= 1000'", "'rmse <= 1.6'"
    )
    result = perftune.tune(write_spec(predicted, name="predicted"), out=tmp_path / "predicted")
    group = result.groups[0]
    assert group.predictors["rmse"]["n_train"] >= 6 and group.predictors["rmse"]["cv_mae"] >= 0
    stopped = [t for t in group.trials if t.status == "stopped_budget"]
    assert stopped, "the predictor stopped no trial heading above rmse 1.6"
    assert all(t.stop_reason["policy"] in ("predicted", "projected", "violation") for t in stopped)
    assert any(t.stop_reason["policy"] == "predicted" and t.stop_reason["projected"] > 1.6 for t in stopped)
