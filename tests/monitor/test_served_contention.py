"""A monitor check knows what the server received: the CPU its thread waited for while other processes ran.

Budgets, baselines and probation judge the model's own served latency (the wall latency less that wait), so a
machine busy with other work breaks no budget, flags no anomaly and rolls no champion back; the wall figures stay
in the check beside it. The contention here is certain (the server shares one core with two spinning processes).
"""

from __future__ import annotations

import uuid
from dataclasses import replace
from datetime import datetime, timedelta, timezone
from types import SimpleNamespace

import numpy as np
import orjson
import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient
from tests.busy import linux_schedstat, sharing_one_core

from perftune.monitor.check import Monitor, SystemMetrics
from perftune.retrain.probation import degradations
from perftune.serve.app import create_app
from perftune.serve.scoring import insert_rows, scoring_engine, scoring_table
from perftune.spec import ProbationSpec

ROW = [1.0, 85.0, 66.0, 29.0, 0.0, 26.6, 0.351, 31.0]  # one diabetes row


@linux_schedstat
def test_the_server_logs_of_each_latency_the_time_it_waited_for_a_cpu(registered, tmp_path):
    uri = f"sqlite:///{tmp_path / 'scoring.db'}"
    app = create_app(registered.settings(scoring_uri=uri))
    with sharing_one_core(busy=2), TestClient(app) as client:  # the server's threads start inside: on the core too
        for _ in range(40):
            assert client.post("/invocations", json={"instances": [ROW]}).status_code == 200
    engine = sa.create_engine(uri)
    with engine.connect() as conn:
        logged = conn.execute(sa.select(scoring_table.c.latency_ms, scoring_table.c.cpu_wait_ms)).all()
    engine.dispose()
    latency, waited = np.array(logged).T
    assert len(logged) == 40 and np.all((waited >= 0) & (waited <= latency))
    assert waited.sum() > 0  # two spinning processes on the server's core took some of every request's time


def served_rows(version: str, latency_ms: float, cpu_wait_ms: float | None, n: int = 60) -> list[dict]:
    now = datetime.now(timezone.utc)
    row = {"client_id": None, "model": "diabetes-clf", "version": version, "endpoint": "invocations", "rows": 1,
           "inputs": orjson.dumps([ROW]).decode(), "outputs": "[1]", "latency_ms": latency_ms,
           "cpu_wait_ms": cpu_wait_ms}  # fmt: skip
    return [{**row, "request_id": uuid.uuid4().hex, "at": now - timedelta(seconds=n - i)} for i in range(n)]


@pytest.mark.parametrize(
    ("cpu_wait_ms", "broken"),
    [(16.0, False), (None, True), (2.0, True)],
    ids=["the-wait-was-the-machines", "no-wait-recorded", "the-model-was-slow"],
)
def test_a_latency_budget_is_judged_on_the_models_own_latency(registered, tmp_path, cpu_wait_ms, broken):
    uri = f"sqlite:///{tmp_path / 'scoring.db'}"
    monitor = Monitor("diabetes-clf@champion", registered.uri, uri)
    monitor.profile = replace(monitor.profile, budgets={"latency_ms_p95": 10.0})
    insert_rows(scoring_engine(uri), served_rows(monitor.number, 20.0, cpu_wait_ms))
    check = monitor.check(window="60", save=False)
    monitor.close()
    system = check.system
    assert system.latency_ms_p95 == pytest.approx(20.0)  # what clients got stays in the check
    assert any("breaks its budget latency_ms_p95" in f for f in check.findings) is broken
    if cpu_wait_ms is None:
        assert system.cpu_wait_share is None and system.latency_ms_p95_own is None
    else:
        assert system.cpu_wait_share == pytest.approx(cpu_wait_ms / 20.0)
        assert system.latency_ms_p95_own == pytest.approx(20.0 - cpu_wait_ms)
        assert check.to_dict()["system"]["cpu_wait_share"] == pytest.approx(cpu_wait_ms / 20.0)


@pytest.mark.parametrize(("own_p95", "rolled_back"), [(4.0, False), (None, True), (9.0, True)])
def test_probation_compares_the_new_champions_own_latency_with_the_previous_ones(own_p95, rolled_back):
    # the previous champion served at 5 ms; the new one at 12 ms wall, of which the machine took 8 ms (own 4)
    system = SystemMetrics(60, 60, 60.0, 10.0, 12.0, 1.0, 1.0, 0.0, 3.0, latency_ms_p95_own=own_p95,
                           cpu_wait_share=None if own_p95 is None else 0.6)  # fmt: skip
    found = degradations(SimpleNamespace(performance=[], system=system), ProbationSpec(), previous_latency_p95=5.0)
    assert bool(found) is rolled_back
