"""The whole loop with a real ``perftune serve``, as a user runs it: concept drift with labels through
feedback → ``perftune monitor --retrain`` retrains under the spec's budgets, registers v2, compares on the same
rows and promotes it → the server answers with v2 → labels that make v2 fail → the next ``monitor --retrain``
rolls back within probation → the server answers with v1; every step in the audit log, and no request fails
while the server swaps versions twice."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time

import httpx
import numpy as np
import pytest

from perftune.data import load_dataset
from perftune.spec import DatasetSpec

JOURNEY = """
name: journey
datasets: [diabetes]
models: [sgd_logistic]
search:
  space:
    batch_size: [16, 32, 64]
    learning_rate: [0.001, 0.01]
    epochs: 5
objectives: [accuracy]
constraints:
  - latency_ms_p95 <= 100
gate:
  - accuracy >= 0.6
retrain:
  triggers: {cooldown: null}
  data: {include_training: false}
  search: {budget: 0.5}
  probation: {window: 1h, max_drop: 0.1}
"""


class SteadyLoad:
    """One client posting a row every 20 ms for the whole journey; keeps every status and served version."""

    def __init__(self, url: str) -> None:
        self.url, self.stop = url, threading.Event()
        self.seen: list[tuple[int, str | None]] = []
        self.thread = threading.Thread(target=self.run)

    def run(self) -> None:
        with httpx.Client(timeout=30) as client:
            while not self.stop.wait(0.02):
                r = client.post(f"{self.url}/invocations", json={"instances": [[6, 148, 72, 35, 0, 33.6, 0.627, 50]]})
                self.seen.append((r.status_code, r.headers.get("X-Model-Version")))

    def wait_until_answered_by(self, version: str, timeout: float = 60) -> None:
        """Until this client's latest answer came from ``version`` (however slow the machine is)."""
        deadline = time.monotonic() + timeout
        while not (self.seen and self.seen[-1][1] == version):
            assert time.monotonic() < deadline, f"the steady client got no answer from v{version} in {timeout:g} s"
            time.sleep(0.05)

    def __enter__(self) -> SteadyLoad:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop.set()
        self.thread.join()


def send_labelled(url: str, X: np.ndarray, y: np.ndarray) -> str:
    """Score X in requests of 8 rows, then send y as their labels; returns the version that answered."""
    items, versions = [], set()
    with httpx.Client(timeout=30) as client:
        for start in range(0, len(X), 8):
            r = client.post(f"{url}/invocations", json={"instances": X[start : start + 8].tolist()})
            assert r.status_code == 200, r.text
            versions.add(r.headers["X-Model-Version"])
            items.append({"request_id": r.headers["X-Request-Id"], "labels": y[start : start + 8].tolist()})
        assert client.post(f"{url}/v2/models/clf/feedback", json={"items": items}).status_code == 200
    assert len(versions) == 1, versions
    return versions.pop()


def cli(*args: str, uri: str, scoring: str | None = None) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "perftune.cli", *args, "--tracking-uri", uri]
    command += ["--scoring-uri", scoring] if scoring else []
    return subprocess.run(command, capture_output=True, text=True, timeout=600)


def wait_for_version(url: str, version: str) -> None:
    deadline = time.time() + 30
    while time.time() < deadline:
        r = httpx.post(f"{url}/invocations", json={"instances": [[1, 90, 60, 20, 0, 25.0, 0.3, 30]]}, timeout=10)
        if r.headers.get("X-Model-Version") == version:
            return
        time.sleep(0.2)
    raise AssertionError(f"the server did not switch to v{version}")


@pytest.fixture(scope="module")
def journey(champion_from_study, live, tmp_path_factory):
    root = tmp_path_factory.mktemp("journey")
    uri = champion_from_study(root, JOURNEY, "clf")

    class Registered:  # what live.server needs
        pass

    registered = Registered()
    registered.uri = uri
    scoring = f"sqlite:///{root / 'scoring.db'}"
    data = load_dataset(DatasetSpec(name="diabetes"))
    order = np.random.default_rng(0).permutation(len(data.y))
    X, y = data.X[order], data.y[order]
    flipped = np.where(y == data.classes[0], data.classes[1], data.classes[0])  # the concept changed
    steps = {}
    with (
        live.server(registered, "clf@champion", "--scoring-uri", scoring, "--poll-interval", "0.5") as (_, url),
        SteadyLoad(url) as load,
    ):
        steps["v1 served"] = send_labelled(url, X, flipped)
        steps["retrain"] = cli("monitor", "clf@champion", "--retrain", uri=uri, scoring=scoring)
        wait_for_version(url, "2")
        steps["v2 served"] = send_labelled(url, X, y)  # the old concept again: v2 now fails
        steps["rollback"] = cli("monitor", "clf@champion", "--retrain", uri=uri, scoring=scoring)
        wait_for_version(url, "1")
        load.wait_until_answered_by("1")
    steps["history"] = cli("history", "clf", "--json", uri=uri)
    steps["show"] = cli("models", "show", "clf", "2", uri=uri)
    return steps, load.seen


def test_monitor_retrain_detects_the_change_retrains_compares_and_promotes(journey):
    steps, _ = journey
    assert steps["v1 served"] == "1"
    run = steps["retrain"]
    assert run.returncode == 0, run.stdout + run.stderr
    out = " ".join(run.stdout.split())  # the console wraps long lines
    assert "trigger: " in out and "realized accuracy" in out.split("trigger: ")[1]
    assert "data: 0 training rows of the champion + 768 labelled scoring rows" in out
    assert "dropped 162 served rows that are in the test split" in out  # 231 test rows served, 69 held out
    assert "search: grid search of 3 trials (50% of the original 6) over sgd_logistic, warm-started" in out
    assert "register: clf v2 registered as challenger" in out
    assert "compare: v1 vs v2 on the same rows — recent: accuracy" in out
    assert "v2 promoted to champion" in out
    assert steps["v2 served"] == "2"


def test_a_champion_that_fails_on_probation_is_rolled_back_and_served_no_more(journey):
    steps, _ = journey
    run = steps["rollback"]
    assert run.returncode == 0, run.stdout + run.stderr
    assert "rollback: champion rolled back v2 → v1: realized accuracy" in " ".join(run.stdout.split())


def test_every_step_is_in_the_audit_log_with_its_numbers(journey):
    steps, _ = journey
    entries = [json.loads(line) for line in steps["history"].stdout.splitlines()]
    moves = [(e["action"], e["from_version"], e["to_version"]) for e in entries]
    assert moves == [
        ("register", None, "1"),
        ("promote", None, "1"),
        ("retrain", None, "1"),
        ("register", "1", "2"),
        ("promote", "1", "2"),
        ("rollback", "2", "1"),
    ]
    retrain, promote, rollback = entries[2], entries[4], entries[5]
    assert retrain["details"]["trigger"]["check_id"] and retrain["details"]["store"].startswith("clf-retrain@")
    recent = promote["details"]["comparisons"]["recent"]
    assert recent["challenger"] - recent["champion"] >= 0.01 and recent["p_value"] < 0.05
    assert set(promote["details"]["system"]["challenger"]) >= {"latency_ms_p95", "model_size_bytes"}
    assert rollback["details"]["degradations"] and "probation" in rollback["reason"]


def test_models_show_tells_why_the_version_exists(journey):
    steps, _ = journey
    shown = " ".join(steps["show"].stdout.split())
    for text in ("retraining (why this version exists)", "retrained from", "trigger", "warm start",
                 "compared on recent", "compared on test split", "system, side by side", "decision"):  # fmt: skip
        assert text in shown


def test_no_request_failed_while_the_server_swapped_twice(journey):
    _, seen = journey
    assert len(seen) > 100
    assert {status for status, _ in seen} == {200}
    served = [version for _, version in seen]
    first_v2 = served.index("2")
    assert "1" in served[:first_v2] and "1" in served[first_v2:]  # v1, then v2, then v1 again
