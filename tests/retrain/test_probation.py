"""Probation judges only the model's failures, on a real ``perftune serve`` and the real ``perftune monitor
--retrain``: anyone who reaches the port — 30 requests with a wrong token, 20 uploads abandoned mid-body — moves
the client error rate, never the model's, and rolls nothing back; a model that really fails still is rolled back.

Each test promotes v2 of a small study over v1 (so v2 is on probation with v1 to go back to), starts its own
server (its counters start at zero), sends the dataset's rows as healthy traffic, then the attack, and runs the
monitor as a user would, reading the check and the steps it prints as JSON."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time

import httpx
import numpy as np
import pytest

from perftune.data import load_dataset
from perftune.spec import DatasetSpec

STUDY = """
name: probation
datasets: [diabetes]
models: [sgd_logistic]
search:
  space:
    batch_size: [32, 64]
    learning_rate: [0.01]
    epochs: 5
objectives: [accuracy]
gate:
  - accuracy >= 0.6
retrain:
  probation: {window: 1h, max_error_rate: 0.05}
"""
TOKEN = "probation-token-0123456789abcdef"
REQUESTS = 96  # the dataset's 768 rows in requests of 8


class Study:
    def __init__(self, root, uri: str) -> None:
        self.root, self.uri = root, uri


@pytest.fixture(scope="module")
def study(champion_from_study, tmp_path_factory) -> Study:
    from perftune.registry.register import register

    root = tmp_path_factory.mktemp("probation")
    uri = champion_from_study(root, STUDY, "clf")  # v1, the champion
    register(root / "out", "clf")  # v2: the same configuration refit, promoted by each test
    (root / "token.txt").write_text(TOKEN + "\n")
    return Study(root, uri)


@pytest.fixture
def on_probation(study):
    """v2 freshly promoted over v1; a scoring log of the test's own."""
    from perftune.registry.catalog import ModelRegistry

    registry = ModelRegistry(study.uri)
    try:
        if registry.aliases("clf").get("champion") != "2":
            registry.promote("clf", "2", reason="probation test")
        promoted = len(registry.history("clf"))
    finally:
        registry.close()
    return study, promoted


def healthy_traffic(url: str, headers: dict[str, str] | None = None) -> None:
    data = load_dataset(DatasetSpec(name="diabetes"))
    with httpx.Client(timeout=30, headers=headers) as client:
        for start in range(0, len(data.X), 8):
            response = client.post(f"{url}/invocations", json={"instances": data.X[start : start + 8].tolist()})
            assert response.status_code == 200, response.text


def aborted_upload(url: str) -> None:
    """A request that promises 1000 bytes of body, sends 5 and closes the connection."""
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=30) as conn:
        conn.sendall(
            b"POST /invocations HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            b"Content-Length: 1000\r\n\r\n" + b'{"ins'
        )


def counted(url: str) -> dict[str, float]:
    """``perftune_requests_total`` of /invocations by status code, as the server exposes it."""
    found: dict[str, float] = {}
    for line in httpx.get(f"{url}/metrics", timeout=30).text.splitlines():
        if line.startswith("perftune_requests_total{") and 'endpoint="invocations"' in line:
            code = line.split('code="')[1].split('"')[0]
            found[code] = found.get(code, 0.0) + float(line.split()[-1])
    return found


def wait_until_counted(url: str, requests: int) -> dict[str, float]:
    """The counts once the server has counted ``requests`` (an aborted upload is counted when its handler ends)."""
    deadline = time.monotonic() + 120
    while sum((counts := counted(url)).values()) < requests:
        assert time.monotonic() < deadline, f"the server counted {counts}, not {requests} requests"
        time.sleep(0.2)
    return counts


def monitor_retrain(study: Study, scoring: str, url: str) -> tuple[dict, list[dict]]:
    """``perftune monitor clf@champion --retrain --server URL --json``: the check and the steps it took."""
    command = [sys.executable, "-m", "perftune.cli", "monitor", "clf@champion", "--retrain", "--server", url,
               "--json", "--scoring-uri", scoring, "--tracking-uri", study.uri]  # fmt: skip
    run = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert run.returncode in (0, 1), run.stdout + run.stderr
    decoder, text, documents = json.JSONDecoder(), run.stdout.strip(), []
    while text:
        document, end = decoder.raw_decode(text)
        documents.append(document)
        text = text[end:].strip()
    return documents[0], documents[1:]


def moves_since(study: Study, promoted: int) -> tuple[str | None, list[str]]:
    """The champion now, and the audit actions taken after v2's promotion."""
    from perftune.registry.catalog import ModelRegistry

    registry = ModelRegistry(study.uri)
    try:
        return registry.aliases("clf").get("champion"), [e.action for e in registry.history("clf")[promoted:]]
    finally:
        registry.close()


def test_thirty_wrong_tokens_are_client_errors_and_roll_nothing_back(on_probation, live, tmp_path):
    study, promoted = on_probation
    scoring = f"sqlite:///{tmp_path / 'scoring.db'}"
    token = str(study.root / "token.txt")
    with live.server(study, "clf@champion", "--scoring-uri", scoring, "--token-file", token) as (_, url):
        healthy_traffic(url, {"Authorization": f"Bearer {TOKEN}"})
        for _ in range(30):
            refused = httpx.post(f"{url}/invocations", json={"instances": [[1] * 8]},
                                 headers={"Authorization": "Bearer wrong"}, timeout=30)  # fmt: skip
            assert refused.status_code == 401
        assert wait_until_counted(url, REQUESTS + 30) == {"200": REQUESTS, "401": 30}
        check, steps = monitor_retrain(study, scoring, url)
    assert moves_since(study, promoted) == ("2", [])  # no rollback, no retraining
    assert [s["step"] for s in steps] == ["skip"] and "no trigger fired" in steps[0]["message"]
    assert check["system"]["error_rate"] == 0.0
    assert check["system"]["client_error_rate"] == pytest.approx(30 / (REQUESTS + 30))


def test_twenty_aborted_uploads_are_counted_as_499_and_roll_nothing_back(on_probation, live, tmp_path):
    study, promoted = on_probation
    scoring = f"sqlite:///{tmp_path / 'scoring.db'}"
    log = tmp_path / "server.log"
    with live.server(study, "clf@champion", "--scoring-uri", scoring, log_file=log) as (_, url):
        healthy_traffic(url)
        for _ in range(20):
            aborted_upload(url)
        counts = wait_until_counted(url, REQUESTS + 20)
        check, steps = monitor_retrain(study, scoring, url)
    assert moves_since(study, promoted) == ("2", [])
    assert [s["step"] for s in steps] == ["skip"] and "no trigger fired" in steps[0]["message"]
    assert counts == {"200": REQUESTS, "499": 20}  # never a 500
    assert check["system"]["error_rate"] == 0.0
    assert check["system"]["client_error_rate"] == pytest.approx(20 / (REQUESTS + 20))
    said = log.read_text()
    assert "Traceback" not in said and "ERROR" not in said


def test_a_model_that_fails_on_its_inputs_is_still_rolled_back(on_probation, live, tmp_path):
    """A real failed predict: 1e308 is a finite number the server accepts, but scaled by the pipeline's
    StandardScaler it overflows to infinity, which the classifier refuses — a 500, the model's own failure."""
    study, promoted = on_probation
    scoring = f"sqlite:///{tmp_path / 'scoring.db'}"
    overflow = np.full((1, 8), 1e308).tolist()
    with live.server(study, "clf@champion", "--scoring-uri", scoring) as (_, url):
        healthy_traffic(url)
        for _ in range(12):
            failed = httpx.post(f"{url}/invocations", json={"instances": overflow}, timeout=30)
            assert failed.status_code == 500, failed.text
        for _ in range(5):  # malformed bodies: the clients' errors, which neither add to nor dilute the model's
            assert httpx.post(f"{url}/invocations", content=b"{not json", timeout=30).status_code == 400
        check, steps = monitor_retrain(study, scoring, url)
    assert check["system"]["error_rate"] == pytest.approx(12 / (REQUESTS + 12))
    assert check["system"]["client_error_rate"] == pytest.approx(5 / (REQUESTS + 12 + 5))
    assert [s["step"] for s in steps] == ["rollback"]
    assert "error rate 11.11% (server-side failures) is above max_error_rate 5.00%" in steps[0]["message"]
    assert moves_since(study, promoted) == ("1", ["rollback"])
