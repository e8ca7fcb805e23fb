"""register: refit the best feasible trial, test on held-out data, gate, MLflow model version with lineage."""

from __future__ import annotations

import mlflow
import numpy as np
import pytest
from mlflow import MlflowClient

import perftune
from perftune.data import Locations, load_dataset
from perftune.data.split import holdout_split
from perftune.registry.register import GateFailed, register
from perftune.spec import DatasetSpec
from perftune.track.uri import mlflow_store

STUDY = """
name: reg
datasets: [diabetes]
models: [sgd_linear, sgd_logistic, sgd_svm]
search:
  space:
    batch_size: [16, 64]
    learning_rate: [0.001, 0.01]
    epochs: 10
objectives: [accuracy, train_time_s]
constraints: ['train_time_s <= 30']
gate: ['accuracy >= 0.6', 'latency_ms_p95 <= 1000']
"""

LINEAGE = (
    "perftune.dataset",
    "perftune.dataset.source",
    "perftune.dataset.fingerprint",
    "perftune.dataset.location",
    "perftune.dataset.rows",
    "perftune.split_seed",
    "perftune.split.test_fraction",
    "perftune.split.validation_fraction",
    "perftune.split.cv_folds",
    "perftune.spec_file_sha256",
    "perftune.spec_hash",
    "perftune.params",
    "perftune.model_family",
    "perftune.study",
    "perftune.study_run_id",
    "perftune.trial_id",
    "perftune.trial_run_id",
    "perftune.gate",
    "perftune.gate.checks",
    "perftune.refit",
    "perftune.serialization",
    "perftune.code.commit",
    "perftune.code.dirty",
    "perftune.pkg.perftune",
    "perftune.python",
    "perftune.pkg.scikit-learn",
    "perftune.pkg.mlflow",
    "perftune.hw.cpu_model",
    "perftune.hw.cores",
    "perftune.hw.ram_gb",
)


@pytest.fixture(scope="module")
def study(ray_session, tmp_path_factory):
    root = tmp_path_factory.mktemp("reg")
    spec = root / "reg.yaml"
    spec.write_text(STUDY + f"workspace: {root / 'ws'}\n")
    perftune.tune(spec, out=root / "out")
    return root / "out", spec


def test_register_refits_tests_gates_and_versions_with_lineage(study):
    out, _ = study
    result = register(out, "diabetes-clf", dataset="diabetes")
    assert result.version == "1" and result.gate_passed
    summary = perftune.results.load_study(out)
    best = perftune.results.best_trial([t for g in summary.groups for t in g.feasible], summary.groups[0].objectives)
    assert result.trial.trial_id == best.trial_id

    client = MlflowClient(summary.tracking["uri"])
    version = client.get_model_version_by_alias("diabetes-clf", "challenger")
    assert str(version.version) == "1"
    for tag in LINEAGE:
        assert version.tags.get(tag), tag
    assert version.tags["perftune.trial_id"] == best.trial_id
    assert version.tags["test.accuracy"] and version.tags["test.latency_ms_p95"]

    # the registered model serves raw rows through MLflow's pyfunc, like `mlflow models serve` would
    with mlflow_store(summary.tracking["uri"]):  # not set for good: later tests' subprocesses inherit it
        model = mlflow.pyfunc.load_model("models:/diabetes-clf@challenger")
    dataset = load_dataset(DatasetSpec(name="diabetes"), where=Locations.default(out.parent / "ws"))
    _, test = holdout_split(dataset, 0.3, 0)
    import pandas as pd

    frame = pd.DataFrame(dataset.X[test], columns=dataset.feature_names)
    accuracy = float(np.mean(model.predict(frame) == dataset.y[test]))
    assert accuracy == pytest.approx(result.test_metrics["accuracy"])
    assert model.metadata.signature is not None


def test_refitting_the_same_trial_gives_identical_test_metrics(study):
    out, _ = study
    first = register(out, "twice", dataset="diabetes", model="sgd_svm")
    second = register(out, "twice", dataset="diabetes", model="sgd_svm")
    assert second.version == "2" and first.trial.trial_id == second.trial.trial_id
    assert second.test_metrics["accuracy"] == first.test_metrics["accuracy"]
    assert second.test_metrics["test_loss"] == first.test_metrics["test_loss"]


def test_the_gate_refuses_a_model_below_threshold(study):
    out, _ = study
    spec_file = out / "spec.yaml"
    original = spec_file.read_text()
    spec_file.write_text(original.replace("accuracy >= 0.6", "accuracy >= 0.99"))
    try:
        with pytest.raises(GateFailed, match=r"accuracy >= 0.99: failed by 0\.\d+ \(accuracy = 0\.\d+\)"):
            register(out, "strict", dataset="diabetes")
        client = MlflowClient(perftune.results.load_study(out).tracking["uri"])
        assert client.search_registered_models(filter_string="name = 'strict'") == []
        forced = register(out, "strict", dataset="diabetes", force=True)
        assert not forced.gate_passed
        assert client.get_model_version("strict", forced.version).tags["perftune.gate"] == "failed"
    finally:
        spec_file.write_text(original)


def test_unknown_trials_and_ambiguous_choices_are_clear_errors(study, tmp_path):
    from perftune.errors import UsageError
    from perftune.registry.register import choose_trial
    from perftune.results import GroupResult, StudyResult, load_study

    out, _ = study
    with pytest.raises(UsageError, match="no trial 'nope'"):
        register(out, "x", trial_id="nope")
    loaded = load_study(out)
    other = GroupResult("529_pollen", "sgd_svm", "regression", loaded.groups[0].objectives, [])
    two = StudyResult("two", "f", [*loaded.groups, other], [], "projected", out)
    with pytest.raises(UsageError, match=r"tuned 2 datasets .*choose one with --dataset"):
        choose_trial(two, None, None, None)


@pytest.mark.parametrize("family", ["sgd_linear", "sgd_logistic", "sgd_svm"])
def test_reproduce_refits_from_lineage_alone_with_identical_metrics(study, family, tmp_path):
    from perftune.registry.catalog import ModelRegistry
    from perftune.registry.reproduce import DETERMINISTIC, reproduce

    out, _ = study
    registered = register(out, f"repro-{family}", dataset="diabetes", model=family)
    # the study folder is gone: reproduce needs nothing but the registry
    moved = tmp_path / "elsewhere"
    out.rename(moved)
    try:
        registry = ModelRegistry(perftune.results.load_study(moved).tracking["uri"])
        rep = reproduce(registry, f"repro-{family}", registered.version)
        registry.close()
    finally:
        moved.rename(out)
    assert rep.data_matches and rep.matches
    judged = {d.metric: d for d in rep.diffs if d.deterministic}
    assert {"accuracy", "test_loss", "model_size_bytes"} <= set(judged) <= set(DETERMINISTIC)
    assert all(d.registered == d.reproduced for d in judged.values())


def test_reproduce_reports_a_difference_and_exits_1(study):
    """A version whose lineage no longer gives its metrics (here: the recorded learning rate was altered)."""
    import json

    from typer.testing import CliRunner

    from perftune.cli import app

    out, _ = study
    registered = register(out, "drift", dataset="diabetes", model="sgd_logistic")
    uri = perftune.results.load_study(out).tracking["uri"]
    client = MlflowClient(uri)
    plan = json.loads(client.get_model_version("drift", registered.version).tags["perftune.refit"])
    plan["params"]["learning_rate"] = plan["params"]["learning_rate"] * 10
    client.set_model_version_tag("drift", registered.version, "perftune.refit", json.dumps(plan))
    result = CliRunner().invoke(
        app, ["reproduce", "drift", registered.version, "--tracking-uri", uri], env={"COLUMNS": "200"}
    )
    assert result.exit_code == 1, result.output
    assert "differs" in result.output and "not reproduced" in result.output
