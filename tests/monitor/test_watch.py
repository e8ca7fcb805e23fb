"""``--watch``: a check per interval, gauges that follow it, and a failing check that is counted, not fatal."""

from __future__ import annotations

import io
import uuid
from datetime import datetime, timezone

import numpy as np
import orjson
from prometheus_client import generate_latest
from rich.console import Console

from perftune.data import load_dataset
from perftune.monitor.check import Monitor
from perftune.monitor.render import print_check, summary_line
from perftune.monitor.watch import Gauges, watch
from perftune.serve.scoring import insert_rows, scoring_engine
from perftune.spec import DatasetSpec


def test_watch_checks_every_interval_updates_gauges_and_survives_a_failing_check(registered, tmp_path):
    uri = f"sqlite:///{tmp_path / 'scoring.db'}"
    data = load_dataset(DatasetSpec(name="diabetes"))
    X = data.X.copy()
    X[:, 3] += 3 * X[:, 3].std()  # one drifted column
    engine = scoring_engine(uri)
    now = datetime.now(timezone.utc)
    rows = [
        {"request_id": uuid.uuid4().hex, "client_id": None, "at": now, "model": "diabetes-clf", "version": "1",
         "endpoint": "invocations", "rows": 8, "inputs": orjson.dumps(X[i : i + 8].tolist()).decode(),
         "outputs": orjson.dumps(np.zeros(8).tolist()).decode(), "latency_ms": 1.0}
        for i in range(0, 760, 8)
    ]  # fmt: skip
    insert_rows(engine, rows)
    engine.dispose()

    checker = Monitor("diabetes-clf/1", registered.uri, uri)
    real_check, calls, seen = checker.check, [], []

    def flaky_check(window=None):
        calls.append(window)
        if len(calls) == 2:
            raise OSError("the database went away")
        return real_check(window)

    checker.check = flaky_check
    gauges = Gauges()
    try:
        watch(checker, 0.0, "500", seen.append, gauges=gauges, stop=lambda: len(calls) >= 3)
    finally:
        checker.close()
    assert len(seen) == 2 and calls == ["500"] * 3  # the failing check did not end the loop
    text = generate_latest(gauges.registry).decode()
    column = checker.profile.feature_names[3]
    labels = 'model="diabetes-clf",version="1"'
    assert f"perftune_monitor_check_errors_total{{{labels}}} 1.0" in text
    assert f"perftune_monitor_checks_total{{{labels}}} 2.0" in text
    assert f'perftune_column_drifted{{column="{column}",{labels}}} 1.0' in text
    assert f"perftune_monitor_healthy{{{labels}}} 0.0" in text
    assert f"perftune_drift_share{{{labels}}} 0.125" in text


def test_a_failing_output_does_not_end_the_watch_and_a_busy_metrics_port_is_one_line():
    import socket
    from types import SimpleNamespace

    import pytest

    from perftune.errors import PerftuneError

    checks = []
    result = SimpleNamespace(model="m", version="1")

    def check(window=None):
        checks.append(window)
        return result

    fake = SimpleNamespace(name="m", number="1", check=check, follow=lambda: False)
    outputs = []

    def show(shown):
        outputs.append(shown)
        if len(outputs) == 1:
            raise OSError("the page's folder is gone")

    gauges = Gauges()
    gauges.update = lambda shown: None  # the fake result has no verdicts to show
    watch(fake, 0.0, None, show, gauges=gauges, stop=lambda: len(checks) >= 2)
    assert len(outputs) == 2  # the second interval still ran after the first output failed
    assert 'perftune_monitor_check_errors_total{model="m",version="1"} 1.0' in generate_latest(gauges.registry).decode()

    with socket.socket() as busy:
        busy.bind(("0.0.0.0", 0))
        busy.listen()
        port = busy.getsockname()[1]
        with pytest.raises(PerftuneError, match=rf"--metrics-port {port}: .*; choose another port"):
            watch(fake, 0.0, None, show, metrics_port=port, stop=lambda: True)


def test_the_gauges_carry_the_models_error_rate_and_the_client_error_rate_of_a_real_server(registered, live, tmp_path):
    import httpx

    row = [[6, 148, 72, 35, 0, 33.6, 0.627, 50]]
    with live.server(registered, "diabetes-clf/1", "--no-scoring-log") as (_, url):
        for _ in range(8):
            assert httpx.post(f"{url}/invocations", json={"instances": row}, timeout=30).status_code == 200
        assert httpx.post(f"{url}/invocations", content=b"{not json", timeout=30).status_code == 400
        other = httpx.post(f"{url}/v2/models/someone-else/infer", json={"inputs": []}, timeout=30)
        assert other.status_code == 404
        checker = Monitor("diabetes-clf/1", registered.uri, f"sqlite:///{tmp_path / 'scoring.db'}", server_url=url)
        try:
            result = checker.check("500", save=False)
        finally:
            checker.close()
    gauges = Gauges()
    gauges.update(result)
    text = generate_latest(gauges.registry).decode()
    labels = 'model="diabetes-clf",version="1"'
    assert result.system.error_rate == 0.0 and result.system.client_error_rate == 0.2  # 2 of 10: refused, misdirected
    assert f"perftune_error_rate{{{labels}}} 0.0" in text and f"perftune_client_error_rate{{{labels}}} 0.2" in text
    console = Console(file=io.StringIO(), width=300)
    print_check(console, result)
    said = console.file.getvalue()
    assert "error rate 0.00% (server-side failures) · client error rate 20.00%" in said
    assert "client error rate 20.00%" in summary_line(result)
