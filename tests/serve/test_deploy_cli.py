"""perftune deploy (manifests valid against the Kubernetes schema, sized from measurements) and CLI errors."""

from __future__ import annotations

import json
import math

import kubernetes_validate
import pytest
import yaml
from typer.testing import CliRunner

from perftune.cli import app
from perftune.registry.catalog import ModelRegistry
from perftune.serve.deploy import SERVER_BASELINE_MB, SERVER_OVERHEAD_MS

K8S_VERSION = "1.30.0"


def cli(*args: str):
    return CliRunner().invoke(app, list(args), env={"COLUMNS": "200"})


def test_deploy_writes_valid_manifests_sized_from_the_versions_measurements(registered, tmp_path):
    out = tmp_path / "deploy"
    result = cli(
        "deploy",
        "diabetes-clf@champion",
        "--out",
        str(out),
        "--target-rps",
        "2000",
        "--tracking-uri",
        registered.uri,
        "--token-secret",
        "serve-token",
    )
    assert result.exit_code == 0, result.output
    docs = {p.name: yaml.safe_load(p.read_text()) for p in out.glob("*.yaml")}
    assert set(docs) == {"deployment.yaml", "service.yaml", "hpa.yaml"}
    for doc in docs.values():
        kubernetes_validate.validate(doc, K8S_VERSION, strict=True)  # raises on any schema violation

    registry = ModelRegistry(registered.uri)
    tags = registry.resolve("diabetes-clf@champion").tags
    registry.close()
    latency, memory = float(tags["test.latency_ms_p50"]), float(tags["test.predict_memory_mb"])
    per_replica = 1000 / (latency + SERVER_OVERHEAD_MS) * 0.6
    replicas = max(2, math.ceil(2000 / per_replica))
    deployment, hpa = docs["deployment.yaml"], docs["hpa.yaml"]
    assert deployment["spec"]["replicas"] == replicas
    assert hpa["spec"]["minReplicas"] == replicas and hpa["spec"]["maxReplicas"] == replicas * 3
    resources = deployment["spec"]["template"]["spec"]["containers"][0]["resources"]
    size_mb = float(tags["test.model_size_bytes"]) / 2**20
    request_mi = math.ceil(max(memory, SERVER_BASELINE_MB + size_mb) * 1.25)
    assert resources["requests"]["memory"] == f"{request_mi}Mi"
    assert resources["limits"]["memory"] == f"{math.ceil(request_mi * 1.5)}Mi"
    header = (out / "deployment.yaml").read_text().split("apiVersion")[0]
    assert f"= {replicas}" in header and "latency_ms_p50" in header  # the arithmetic, in a comment
    assert json.loads((out / "sizing.json").read_text())["replicas"] == replicas
    assert "FROM python:3.11-slim" in (out / "Dockerfile").read_text()
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    assert "--token-file" in container["args"] and container["readinessProbe"]["httpGet"]["path"] == "/v2/health/ready"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["serve", "nope@champion"], "no registered model 'nope'"),
        (["serve", "diabetes-clf@canary"], "has no alias 'canary'"),
        (["serve", "diabetes-clf"], "names no version"),
        (["serve", "diabetes-clf/9"], "has no version '9'"),
        (["deploy", "diabetes-clf@champion", "--target", "nomad"], "not supported"),
        (["deploy", "diabetes-clf@champion", "--target-rps", "0"], "must be positive"),
    ],
)
def test_bad_references_and_options_are_one_line_errors(registered, args, message):
    result = cli(*args, "--tracking-uri", registered.uri)
    assert result.exit_code != 0 and message in result.output and "Traceback" not in result.output


def test_a_short_token_file_and_an_archived_version_are_refused(registered, tmp_path):
    short = tmp_path / "t.txt"
    short.write_text("abc")
    result = cli("serve", "diabetes-clf/1", "--token-file", str(short), "--tracking-uri", registered.uri)
    assert result.exit_code == 2 and "at least 16 characters" in result.output
    from perftune.registry.register import register

    extra = register(registered.root / "out", "diabetes-clf", trial_id=registered.trials[0])
    registry = ModelRegistry(registered.uri)
    registry.archive("diabetes-clf", extra.version, reason="test")
    registry.close()
    result = cli("serve", f"diabetes-clf/{extra.version}", "--tracking-uri", registered.uri)
    assert result.exit_code == 2 and "archived and cannot be served" in result.output


def test_feedback_cli_attaches_labels_and_reports_unknown_ids(registered, tmp_path):
    from fastapi.testclient import TestClient

    from perftune.serve.app import create_app

    scoring = tmp_path / "scoring.db"
    with TestClient(create_app(registered.settings(scoring_uri=f"sqlite:///{scoring}"))) as client:
        body = {"id": "cli-1", "inputs": [{"name": "input-0", "shape": [1, 8], "datatype": "FP64", "data": [1] * 8}]}
        assert client.post("/v2/models/diabetes-clf/infer", json=body).status_code == 200
    labels = tmp_path / "labels.csv"
    labels.write_text("request_id,label\ncli-1,2\n")
    result = cli("feedback", str(labels), "--model", "diabetes-clf", "--scoring-uri", f"sqlite:///{scoring}")
    assert result.exit_code == 0 and "labels stored for 1 requests" in result.output
    labels.write_text("request_id,label\nghost,1\n")
    result = cli("feedback", str(labels), "--model", "diabetes-clf", "--scoring-uri", f"sqlite:///{scoring}")
    assert result.exit_code == 1 and "ghost" in result.output
    labels.write_text("id,y\n1,2\n")
    result = cli("feedback", str(labels), "--model", "diabetes-clf", "--scoring-uri", f"sqlite:///{scoring}")
    assert result.exit_code == 2 and "needs columns request_id and label" in result.output
