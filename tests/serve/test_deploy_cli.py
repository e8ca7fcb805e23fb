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
    # one worker on one CPU runs its model on one thread, and libraries loaded later start with one too
    assert container["args"][container["args"].index("--threads") + 1] == "1"
    assert {"name": "OMP_NUM_THREADS", "value": "1"} in container["env"] and "--threads 1" in header


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["serve", "nope@champion"], "no registered model 'nope'"),
        (["serve", "diabetes-clf@canary"], "has no alias 'canary'"),
        (["serve", "diabetes-clf"], "names no version"),
        (["serve", "diabetes-clf/9"], "has no version '9'"),
        (["deploy", "diabetes-clf@champion", "--target", "nomad"], "not supported"),
        (["deploy", "diabetes-clf@champion", "--target-rps", "0"], "--target-rps 0: give a positive, finite number"),
        (["deploy", "diabetes-clf@champion", "--target-rps", "nan"], "--target-rps nan: give a positive, finite"),
        (["deploy", "diabetes-clf@champion", "--target-rps", "inf"], "--target-rps inf: give a positive, finite"),
        (["deploy", "diabetes-clf@champion", "--target-rps", "1e12"], "more than 1000; check the number"),
        (["deploy", "diabetes-clf@champion", "--port", "0"], "--port 0: a port is 1–65535"),
        (["serve", "diabetes-clf@champion", "--port", "99999"], "--port 99999: input should be less than or equal"),
        (["serve", "diabetes-clf@champion", "--port", "0"], "--port 0: input should be greater than or equal to 1"),
        (["serve", "diabetes-clf@champion", "--max-body-mb", "-1"], "--max-body-mb -1: input should be greater than 0"),
        (["serve", "diabetes-clf@champion", "--max-body-mb", "nan"], "--max-body-mb nan: input should be a finite"),
        (["serve", "diabetes-clf@champion", "--workers", "0"], "--workers 0: input should be greater than or equal"),
        (["serve", "diabetes-clf@champion", "--poll-interval", "-2"], "--poll-interval -2.0: input should be greater"),
        (["serve", "diabetes-clf@champion", "--log-level", "loud"], "--log-level loud: input should be 'critical'"),
        (["serve", "diabetes-clf@champion", "--port", "http"], "Invalid value for '--port'"),
    ],
)
def test_bad_references_and_options_are_one_line_errors(registered, args, message):
    result = cli(*args, "--tracking-uri", registered.uri)
    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and message in lines[0] and lines[0].startswith("error: ")
    assert "serving" not in result.output


def test_a_busy_port_is_a_one_line_error_before_the_server_says_it_serves(registered):
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = cli("serve", "diabetes-clf@champion", "--port", str(port), "--tracking-uri", registered.uri)
    assert result.exit_code == 2, result.output
    assert (
        result.output.strip()
        == f"error: --port {port}: 127.0.0.1:{port} is in use; stop what listens there or pick another port"
    )


def test_deploy_refuses_an_out_that_is_a_file(registered, tmp_path):
    target = tmp_path / "manifests.yaml"
    target.write_text("keep me\n")
    result = cli("deploy", "diabetes-clf@champion", "--out", str(target), "--tracking-uri", registered.uri)
    assert result.exit_code == 2 and "is a file; name a folder" in result.output
    assert target.read_text() == "keep me\n"


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
    out = tmp_path / "deploy"
    result = cli("deploy", f"diabetes-clf/{extra.version}", "--out", str(out), "--tracking-uri", registered.uri)
    assert result.exit_code == 2 and "archived and cannot be served or deployed" in result.output
    assert not out.exists()  # no manifests that `serve` would then refuse


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


def test_monitor_every_adds_a_valid_cronjob_and_a_shared_scoring_database(registered, tmp_path):
    out = tmp_path / "deploy"
    args = ["deploy", "diabetes-clf@champion", "--out", str(out), "--tracking-uri", registered.uri]
    result = cli(*args, "--monitor-every", "5m")
    assert result.exit_code == 0, result.output
    cronjob = yaml.safe_load((out / "monitor-cronjob.yaml").read_text())
    kubernetes_validate.validate(cronjob, K8S_VERSION, strict=True)
    assert cronjob["kind"] == "CronJob" and cronjob["spec"]["schedule"] == "*/5 * * * *"
    job = cronjob["spec"]["jobTemplate"]["spec"]
    container = job["template"]["spec"]["containers"][0]
    assert container["args"][:2] == ["monitor", "diabetes-clf@champion"] and job["backoffLimit"] == 0
    assert "$(PERFTUNE_SCORING_URI)" in container["args"]
    server = yaml.safe_load((out / "deployment.yaml").read_text())["spec"]["template"]["spec"]["containers"][0]
    assert server["args"][server["args"].index("--scoring-uri") + 1] == "$(PERFTUNE_SCORING_URI)"
    for every, schedule in (("1h", "0 * * * *"), ("6h", "0 */6 * * *"), ("1d", "0 0 * * *")):
        assert cli(*args, "--monitor-every", every).exit_code == 0
        assert yaml.safe_load((out / "monitor-cronjob.yaml").read_text())["spec"]["schedule"] == schedule
    bad = cli(*args, "--out", str(tmp_path / "bad"), "--monitor-every", "7m")
    assert bad.exit_code == 2 and "--monitor-every 7m: give minutes that divide an hour" in bad.output
    assert not (tmp_path / "bad").exists()
