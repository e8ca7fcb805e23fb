"""A check reads only its window, in chunks, and gives the same verdicts on SQLite and PostgreSQL; checks and
their series are stored, so baselines learn from history; old versions get their profile from the recipe."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta, timezone

import numpy as np
import orjson
import pytest
from mlflow import MlflowClient

from perftune.data import load_dataset
from perftune.monitor import window as windows
from perftune.monitor.check import Monitor
from perftune.monitor.reference import load_profile, profile_from_recipe
from perftune.serve.scoring import inputs_f64, insert_rows, scoring_engine
from perftune.spec import DatasetSpec

START = datetime(2026, 3, 1, tzinfo=timezone.utc)


def fill(uri: str, X: np.ndarray, predictions: np.ndarray, version: str = "1", per_request: int = 7) -> list[str]:
    """Requests of ``per_request`` rows, one second apart from START; plus rows of another version (never read).
    Two requests in three carry the binary copy of their inputs, the third only JSON: a window mixes both."""
    rows = []
    for i, start in enumerate(range(0, len(X), per_request)):
        for v in (version, "other"):
            rows.append(
                {"request_id": uuid.uuid4().hex, "client_id": None, "at": START + timedelta(seconds=i),
                 "model": "diabetes-clf", "version": v, "endpoint": "invocations",
                 "rows": len(X[start : start + per_request]),
                 "inputs": orjson.dumps(X[start : start + per_request].tolist()).decode(),
                 # as the server stores it, except every third request (as if replayed from a dead-letter file)
                 "inputs_f64": inputs_f64(X[start : start + per_request]) if i % 3 else None,
                 "outputs": orjson.dumps(predictions[start : start + per_request].tolist()).decode(),
                 "latency_ms": 1.0 + i % 5}
            )  # fmt: skip
    engine = scoring_engine(uri)
    insert_rows(engine, rows)
    engine.dispose()
    return [r["request_id"] for r in rows if r["version"] == version]


@pytest.fixture(scope="module")
def traffic():
    data = load_dataset(DatasetSpec(name="diabetes"))
    X = data.X.copy()
    X[:, 2] += 2 * X[:, 2].std()  # one shifted column
    return X, data.y.astype(float)


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_a_check_reads_its_window_in_chunks_with_the_same_verdicts_on_both_databases(
    backend, registered, traffic, tmp_path, request
):
    uri = (
        f"sqlite:///{tmp_path / 'scoring.db'}" if backend == "sqlite" else request.getfixturevalue("fresh_postgres_uri")
    )
    X, predictions = traffic
    fill(uri, X, predictions)
    engine = scoring_engine(uri)
    # the last 300 rows: whole requests, newest first, never the other version's rows
    bounds = windows.bounds(engine, "diabetes-clf", "1", "rows", 300)
    assert bounds.rows >= 300 and bounds.rows - 300 < 7 and bounds.requests == -(-bounds.rows // 7)
    small = list(windows.chunks(engine, "diabetes-clf", "1", bounds, chunk_rows=50))
    whole = list(windows.chunks(engine, "diabetes-clf", "1", bounds))
    assert len(small) > 5 and len(whole) == 1
    assert np.array_equal(np.concatenate([c.X for c in small]), whole[0].X)
    assert np.array_equal(whole[0].X, X[len(X) - bounds.rows :])
    # a duration window: the last 20 seconds of traffic
    end = START + timedelta(seconds=len(range(0, len(X), 7)) - 1)
    by_time = windows.bounds(engine, "diabetes-clf", "1", "seconds", 20, now=end)
    assert by_time.requests == 21 and by_time.start == end - timedelta(seconds=20)
    engine.dispose()

    checker = Monitor("diabetes-clf/1", registered.uri, uri)
    try:
        result = checker.check("300", now=end)
    finally:
        checker.close()
    names = checker.profile.feature_names
    assert result.drift.drifted_columns == [names[2]]
    assert result.window["rows"] == bounds.rows and result.system.requests == bounds.requests


def test_checks_are_stored_and_baselines_learn_from_their_history(registered, traffic, tmp_path):
    uri = f"sqlite:///{tmp_path / 'scoring.db'}"
    X, predictions = traffic
    fill(uri, X, predictions)
    checker = Monitor("diabetes-clf/1", registered.uri, uri)
    try:
        results = [checker.check("200", now=START + timedelta(hours=1, minutes=i)) for i in range(9)]
    finally:
        checker.close()
    first, last = results[0], results[-1]
    assert all(v.z is None for v in first.baselines)  # learning
    latency = next(v for v in last.baselines if v.series == "latency_ms_p95")
    assert latency.history == 8 and latency.z is not None and not latency.flagged  # same window: no anomaly
    from perftune.monitor.store import recent_checks

    engine = scoring_engine(uri)
    stored = recent_checks(engine, "diabetes-clf", "1")
    engine.dispose()
    assert [r["check_id"] for r in stored] == [r.check_id for r in results]
    assert stored[-1]["drift"]["drifted_columns"] == last.drift.drifted_columns


def test_a_version_without_a_profile_gets_it_from_its_refit_recipe(registered):
    client = MlflowClient(registered.uri, registered.uri)
    version = client.get_model_version("diabetes-clf", "1")
    stored = load_profile(client, version)  # written by perftune register
    assert stored is not None and stored.calibration is not None and stored.task == "classification"
    rebuilt = profile_from_recipe(client, version)  # what an old version gets on first use
    assert rebuilt.feature_names == stored.feature_names and rebuilt.rows == stored.rows
    for a, b in zip(rebuilt.columns, stored.columns, strict=True):
        assert (a.kind, a.count, a.counts) == (b.kind, b.count, b.counts)
        assert a.mean == pytest.approx(b.mean)
    assert rebuilt.calibration["x"] == pytest.approx(stored.calibration["x"])


def test_labels_from_feedback_give_realized_accuracy_and_the_familys_loss(registered, tmp_path):
    """The realized loss is the family's training loss on the labelled rows: for logistic regression the log
    loss, which scikit-learn computes independently from the served model's probabilities."""
    import mlflow.sklearn
    import pandas as pd
    from sklearn.metrics import log_loss

    from perftune.serve.feedback import attach_labels
    from perftune.track.uri import mlflow_store

    uri = f"sqlite:///{tmp_path / 'scoring.db'}"
    data = load_dataset(DatasetSpec(name="diabetes"))
    with mlflow_store(registered.uri):
        served = mlflow.sklearn.load_model("models:/diabetes-clf/1")
    frame = pd.DataFrame(data.X, columns=data.feature_names)
    keys = fill(uri, data.X, served.predict(frame).astype(float))
    engine = scoring_engine(uri)
    attach_labels(engine, "diabetes-clf", [(key, data.y[7 * i : 7 * i + 7].tolist()) for i, key in enumerate(keys)])
    engine.dispose()
    checker = Monitor("diabetes-clf/1", registered.uri, uri)
    try:
        result = checker.check("768", now=START + timedelta(hours=1))
    finally:
        checker.close()
    figures = {(p.kind, p.metric): p for p in result.performance}
    accuracy, loss = figures["realized", "accuracy"], figures["realized", "loss"]
    assert accuracy.rows == loss.rows == 768
    assert accuracy.value == pytest.approx(float(np.mean(served.predict(frame) == data.y)))
    assert loss.value == pytest.approx(log_loss(data.y, served.predict_proba(frame)), rel=1e-9)
    assert loss.low <= loss.value <= loss.high and loss.test_value == checker.profile.test_metrics["test_loss"]


def test_a_check_stored_before_the_client_error_rate_existed_still_loads_and_draws(registered, traffic, tmp_path):
    from perftune.monitor.html import write_page
    from perftune.monitor.store import checks_table, recent_checks

    uri = f"sqlite:///{tmp_path / 'scoring.db'}"
    X, predictions = traffic
    fill(uri, X, predictions)
    checker = Monitor("diabetes-clf/1", registered.uri, uri)
    engine = scoring_engine(uri)
    try:
        old = checker.check("200", now=START + timedelta(hours=1))
        document = old.to_dict()
        del document["system"]["client_error_rate"]  # as the check was stored before the field existed
        with engine.begin() as conn:
            conn.execute(
                checks_table.update()
                .where(checks_table.c.check_id == old.check_id)
                .values(result=orjson.dumps(document).decode())
            )
        new = checker.check("200", now=START + timedelta(hours=1, minutes=1))
        page = write_page(checker, new, tmp_path / "monitor.html")
        stored = recent_checks(engine, "diabetes-clf", "1")
    finally:
        engine.dispose()
        checker.close()
    assert [r["check_id"] for r in stored] == [old.check_id, new.check_id]
    assert "client_error_rate" not in stored[0]["system"] and stored[1]["system"]["client_error_rate"] is None
    assert "client error rate" in page.read_text()
