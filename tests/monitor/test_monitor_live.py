"""End to end: a real ``perftune serve``, traffic with drift in two features, labels through feedback, then
``perftune monitor`` as a user runs it — exit codes, named columns, JSON, the HTML page in Chromium."""

from __future__ import annotations

import json
import subprocess
import sys

import httpx
import numpy as np
import orjson
import pytest
import sqlalchemy as sa

from perftune.data import load_dataset
from perftune.serve.scoring import scoring_table
from perftune.spec import DatasetSpec

SHIFTED = (1, 5)  # two of diabetes' eight features, shifted by one standard deviation
SECTIONS = ["summary", "drift", "performance", "service", "history"]


def monitor(registered, uri: str, *args: str) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "perftune.cli", "monitor", "diabetes-clf@champion", "--scoring-uri", uri]
    command += ["--tracking-uri", registered.uri, *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=300)


def send(url: str, X: np.ndarray, rows_per_request: int = 8) -> list[tuple[str, list]]:
    """Post X as /invocations requests; the server key and the predictions of each."""
    answered = []
    with httpx.Client(timeout=30) as client:
        for start in range(0, len(X), rows_per_request):
            rows = X[start : start + rows_per_request].tolist()
            response = client.post(f"{url}/invocations", json={"instances": rows})
            assert response.status_code == 200, response.text
            answered.append((response.headers["X-Request-Id"], response.json()["predictions"]))
    return answered


@pytest.fixture(scope="module")
def served(registered, live, tmp_path_factory):
    """Healthy traffic (the dataset's own rows) checked once, then drifted traffic with labels."""
    root = tmp_path_factory.mktemp("monitor")
    uri = f"sqlite:///{root / 'scoring.db'}"
    data = load_dataset(DatasetSpec(name="diabetes"))
    rng = np.random.default_rng(0)
    order = rng.permutation(len(data.y))
    with live.server(registered, "diabetes-clf@champion", "--scoring-uri", uri) as (_, url):
        send(url, data.X[order])
        healthy = monitor(registered, uri, "--window", "768")
        drifted_X = data.X[order].copy()
        for j in SHIFTED:
            drifted_X[:, j] += data.X[:, j].std()
        answered = send(url, drifted_X)
        labels = data.y[order]
        items = [
            {"request_id": key, "labels": labels[8 * i : 8 * i + len(predictions)].tolist()}
            for i, (key, predictions) in enumerate(answered)
        ]
        assert (
            httpx.post(f"{url}/v2/models/diabetes-clf/feedback", json={"items": items}, timeout=30).status_code == 200
        )
        assert httpx.post(f"{url}/invocations", json={"instances": [[1, 2]]}, timeout=30).status_code == 422
        page = root / "monitor.html"
        drifted = monitor(registered, uri, "--window", "768", "--json", "--html", str(page), "--server", url)
    return healthy, drifted, page, data.feature_names, uri


def test_the_server_stores_each_requests_inputs_as_json_and_as_float64_bytes(served):
    *_, uri = served
    engine = sa.create_engine(uri)
    with engine.connect() as conn:
        logged = conn.execute(sa.select(scoring_table.c.inputs, scoring_table.c.inputs_f64)).all()
    engine.dispose()
    assert len(logged) == 192
    for text, binary in logged:
        as_json = np.asarray(orjson.loads(text), dtype=np.float64)
        assert np.array_equal(np.frombuffer(binary, dtype=np.float64).reshape(as_json.shape), as_json)


def test_healthy_traffic_exits_0_and_says_so(served):
    healthy, *_ = served
    assert healthy.returncode == 0, healthy.stderr
    assert "healthy" in healthy.stdout and "dataset drift: no" in healthy.stdout


def test_drift_in_two_features_exits_1_and_names_exactly_them(served):
    _, drifted, _, names, _ = served
    assert drifted.returncode == 1, drifted.stderr
    check = json.loads(drifted.stdout)
    assert check["drift"]["drifted_columns"] == [names[j] for j in SHIFTED]
    by_column = {c["column"]: c for c in check["drift"]["columns"]}
    shifted = by_column[names[SHIFTED[0]]]
    assert (shifted["test"], shifted["statistic"], shifted["threshold"]) == ("ks", "p_value", 0.05)
    assert shifted["score"] < 0.05 and shifted["reference_rows"] > 0 and shifted["window_rows"] == 768
    assert not check["healthy"] and any(names[SHIFTED[0]] in f for f in check["findings"])


def test_performance_is_estimated_and_realized_side_by_side_with_the_test_split(served):
    _, drifted, *_ = served
    figures = {(p["kind"], p["metric"]): p for p in json.loads(drifted.stdout)["performance"]}
    estimated, realized = figures["estimated", "accuracy"], figures["realized", "accuracy"]
    assert estimated["metric"] == realized["metric"] == "accuracy"
    assert estimated["low"] <= estimated["value"] <= estimated["high"] and estimated["rows"] == 768
    assert realized["rows"] == 768 and realized["low"] <= realized["value"] <= realized["high"]
    assert estimated["test_value"] == realized["test_value"] is not None
    loss = figures["realized", "loss"]  # the family's training loss (val_loss) on the labelled rows
    assert loss["rows"] == 768 and loss["low"] <= loss["value"] <= loss["high"] and loss["test_value"] > 0


def test_service_metrics_come_from_the_scoring_log_and_the_servers_counters(served):
    _, drifted, page, *_ = served
    system = json.loads(drifted.stdout)["system"]
    assert system["requests"] == 96 and system["rows"] == 768
    assert 0 < system["latency_ms_p50"] <= system["latency_ms_p95"]
    # one 422 among the 193 inference requests since the server started: the client's error, not the model's
    assert system["error_rate"] == 0.0 and system["client_error_rate"] == pytest.approx(1 / 193)
    assert "<th>error rate (server-side failures)</th>" in page.read_text()
    assert "<th>client error rate (refused, aborted, other models; never judged)</th>" in page.read_text()


def test_the_page_renders_in_chromium_with_every_image_and_no_errors(served, render_page, tmp_path):
    _, _, page, names, _ = served
    seen = render_page(page, SECTIONS, texts=("#drift table", "#service table"))
    assert seen.present == SECTIONS
    assert len(seen.images) >= 2 and all(complete and width > 0 for _, complete, width in seen.images), seen.images
    assert seen.errors == []
    assert names[SHIFTED[0]] in seen.texts["#drift table"] and "drift" in seen.texts["#drift table"]
    assert "error rate (server-side failures)" in seen.texts["#service table"]
    assert "client error rate" in seen.texts["#service table"]
    html = page.read_text()
    assert "http://" not in html.replace("http://www.w3.org", "") and "https://" not in html
