"""Protocol conformance of every endpoint, input validation, auth, feedback, metrics — in process."""

from __future__ import annotations

import json

import numpy as np
import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient

from perftune.data import Locations, load_dataset
from perftune.data.split import holdout_split
from perftune.serve.app import create_app
from perftune.spec import DatasetSpec
from perftune.track.uri import mlflow_store

ROWS = [[6, 148, 72, 35, 0, 33.6, 0.627, 50], [1, 85, 66, 29, 0, 26.6, 0.351, 31]]
NAMES = [f"A{i}" for i in range(1, 9)]
AUTH = {"Authorization": "Bearer s3cret-token-for-tests-0123456789"}


def tensor(data, shape=None, datatype="FP64", name="input-0"):
    return {"inputs": [{"name": name, "shape": shape or [len(data), 8], "datatype": datatype, "data": data}]}


@pytest.fixture(scope="module")
def client(registered):
    with TestClient(create_app(registered.settings())) as c:
        yield c


@pytest.fixture(scope="module")
def secured(registered):
    with TestClient(create_app(registered.settings(token_file=str(registered.root / "token.txt")))) as c:
        yield c


@pytest.fixture(scope="module")
def reference_predictions(registered):
    """What the registered pipeline predicts in process, through MLflow — the server must agree."""
    import mlflow
    import pandas as pd

    with mlflow_store(registered.uri):  # not set for good: subprocesses of later tests inherit MLflow's env
        model = mlflow.pyfunc.load_model("models:/diabetes-clf/1")
    dataset = load_dataset(DatasetSpec(name="diabetes"), where=Locations.default(registered.root / "ws"))
    _, test = holdout_split(dataset, 0.3, 0)
    X = dataset.X[test][:50]
    return X, model.predict(pd.DataFrame(X, columns=dataset.feature_names))


def test_health_server_and_model_metadata(client):
    assert client.get("/v2/health/live").json() == {"live": True}
    assert client.get("/v2/health/ready").json() == {"ready": True}
    assert client.get("/ping").status_code == 200
    assert client.get("/v2").json()["name"] == "perftune"
    meta = client.get("/v2/models/diabetes-clf").json()
    assert meta["name"] == "diabetes-clf" and meta["versions"] == ["1"] and meta["platform"] == "sklearn"
    assert meta["inputs"] == [{"name": "input-0", "datatype": "FP64", "shape": [-1, 8]}]
    assert meta["outputs"] == [{"name": "predict", "datatype": "INT64", "shape": [-1]}]
    assert meta["parameters"]["feature_names"] == NAMES
    assert client.get("/v2/models/diabetes-clf/versions/1").json() == meta
    assert client.get("/v2/models/diabetes-clf/ready").json()["ready"] is True
    assert client.get("/v2/models/diabetes-clf/versions/1/ready").json()["ready"] is True
    assert client.get("/v2/models/other").status_code == 404
    assert "not loaded" in client.get("/v2/models/diabetes-clf/versions/2").json()["error"]
    assert "/v2/models/{name}/infer" in client.get("/openapi.json").json()["paths"]


def test_v2_infer_matches_the_registered_model_flat_nested_and_per_feature(client, reference_predictions):
    X, expected = reference_predictions
    nested = client.post("/v2/models/diabetes-clf/infer", json={**tensor(X.tolist()), "id": "req-1"})
    assert nested.status_code == 200
    body = nested.json()
    assert body["model_name"] == "diabetes-clf" and body["model_version"] == "1" and body["id"] == "req-1"
    (output,) = body["outputs"]
    assert output["shape"] == [50] and output["datatype"] == "INT64"
    assert output["data"] == expected.tolist()
    flat = client.post("/v2/models/diabetes-clf/versions/1/infer", json=tensor(X.ravel().tolist(), shape=[50, 8]))
    assert flat.json()["outputs"][0]["data"] == expected.tolist()
    columns = {
        "inputs": [
            {"name": n, "shape": [50], "datatype": "FP64", "data": X[:, i].tolist()} for i, n in enumerate(NAMES)
        ]
    }
    assert client.post("/v2/models/diabetes-clf/infer", json=columns).json()["outputs"][0]["data"] == expected.tolist()
    for datatype, data in (("FP32", ROWS), ("INT64", [[int(v) for v in r] for r in ROWS])):
        ok = client.post("/v2/models/diabetes-clf/infer", json=tensor(data, datatype=datatype))
        assert ok.status_code == 200, ok.text
    assert ok.headers["X-Model-Version"] == "1" and ok.headers["X-Request-Id"]


def test_invocations_formats_agree(client, reference_predictions):
    X, expected = reference_predictions
    rows = X.tolist()
    want = {"predictions": expected.tolist()}
    split = {"dataframe_split": {"columns": NAMES, "data": rows}}
    assert client.post("/invocations", json=split).json() == want
    reordered = {"dataframe_split": {"columns": NAMES[::-1], "data": [r[::-1] for r in rows]}}
    assert client.post("/invocations", json=reordered).json() == want
    records = {"dataframe_records": [dict(zip(NAMES, r, strict=True)) for r in rows]}
    assert client.post("/invocations", json=records).json() == want
    assert client.post("/invocations", json={"instances": rows}).json() == want
    assert (
        client.post("/invocations", json={"inputs": {n: X[:, i].tolist() for i, n in enumerate(NAMES)}}).json() == want
    )
    csv = ",".join(NAMES) + "\n" + "\n".join(",".join(repr(v) for v in r) for r in rows)
    response = client.post("/invocations", content=csv, headers={"Content-Type": "text/csv"})
    assert response.json() == want


SECRET = 123.456789


@pytest.mark.parametrize(
    ("body", "status", "message"),
    [
        (tensor([[SECRET] * 7], shape=[1, 7]), 422, "takes 8 features"),
        (tensor([[SECRET] * 8], shape=[2, 8]), 422, "holds 16 values, 'data' has 8"),
        (tensor([["x"] * 8], datatype="BYTES"), 422, "BYTES, but the model takes numbers"),
        (tensor([[SECRET] * 7 + ["7"]]), 422, "non-numeric"),
        (tensor([[SECRET] * 7 + [None]]), 422, "missing values"),
        (tensor([[SECRET] * 7 + [True]]), 422, "booleans"),
        (tensor([[SECRET] * 7 + [1.5]], datatype="INT32"), 422, "fractions"),
        (tensor([], shape=[0, 8]), 422, "empty input"),
        (tensor([[SECRET] * 8], datatype="COMPLEX"), 422, "is not one of"),
        ({"inputs": []}, 422, "non-empty list"),
        ({"instances": [[SECRET] * 8]}, 422, "'inputs' must be"),
        ([SECRET], 422, "JSON object"),
    ],
)
def test_bad_v2_requests_say_what_is_wrong_without_echoing_data(client, body, status, message):
    response = client.post("/v2/models/diabetes-clf/infer", json=body)
    assert response.status_code == status, response.text
    assert message in response.json()["error"]
    assert "123.45" not in response.text


def test_nan_infinity_malformed_json_and_oversize_payloads(client, registered):
    nan = '{"inputs":[{"name":"input-0","shape":[1,8],"datatype":"FP64","data":[1,2,3,4,5,6,7,NaN]}]}'
    assert client.post("/v2/models/diabetes-clf/infer", content=nan).status_code == 400  # NaN is not JSON
    infinite = client.post("/invocations", content='{"instances": [[1e999, 2, 3, 4, 5, 6, 7, 8]]}')
    assert infinite.status_code == 400 and "infinity" in infinite.json()["error"]
    # a finite number the model's float64 matrix cannot hold is refused the same way
    too_big = client.post("/invocations", json={"instances": [[10**400, 2, 3, 4, 5, 6, 7, 8]]})
    assert too_big.status_code in (400, 422), too_big.text
    broken = client.post("/invocations", content=b'{"instances": [[1, 2')
    assert broken.status_code == 400 and "malformed JSON" in broken.json()["error"]
    assert client.post("/invocations", content=b"").status_code == 400
    both = client.post("/invocations", json={"instances": ROWS, "inputs": ROWS})
    assert both.status_code == 422 and "exactly one" in both.json()["error"]
    with TestClient(create_app(registered.settings(max_body_bytes=1000))) as small:
        huge = small.post("/invocations", json={"instances": ROWS * 50})
        assert huge.status_code == 413 and "limit" in huge.json()["error"]
        assert small.post("/invocations", json={"instances": ROWS}).status_code == 200


def test_a_model_error_is_a_500_with_an_id_in_the_log_and_the_server_stays_up(client, caplog):
    server = client.app.state.server
    model = server.model
    original = model._predict

    def broken(X):
        raise RuntimeError("boom")

    model._predict = broken
    try:
        response = client.post("/invocations", json={"instances": ROWS})
    finally:
        model._predict = original
    assert response.status_code == 500
    error_id = response.json()["error"].split("error id ")[1].split()[0]
    assert any(error_id in record.getMessage() for record in caplog.records)
    assert client.post("/invocations", json={"instances": ROWS}).status_code == 200


def test_auth_guards_inference_feedback_and_management(secured, client):
    assert secured.post("/invocations", json={"instances": ROWS}).status_code == 401
    assert (
        secured.post("/invocations", json={"instances": ROWS}, headers={"Authorization": "Bearer nope"}).status_code
        == 401
    )
    assert secured.post("/invocations", json={"instances": ROWS}, headers=AUTH).status_code == 200
    assert secured.post("/v2/models/diabetes-clf/infer", json=tensor(ROWS)).status_code == 401
    assert secured.post("/v2/models/diabetes-clf/infer", json=tensor(ROWS), headers=AUTH).status_code == 200
    assert secured.post("/v2/models/diabetes-clf/feedback", json={"items": []}).status_code == 401
    assert secured.get("/v2/health/ready").status_code == 200  # open by default
    assert secured.get("/metrics").status_code == 200
    # management: always needs the token; refused outright on a server without one
    assert secured.post("/v2/repository/models/diabetes-clf/unload").status_code == 401
    assert client.post("/v2/repository/models/diabetes-clf/unload").status_code == 403
    assert secured.post("/v2/repository/models/diabetes-clf/unload", headers=AUTH).json()["state"] == "UNAVAILABLE"
    assert secured.get("/v2/health/ready").status_code == 503
    assert secured.post("/invocations", json={"instances": ROWS}, headers=AUTH).status_code == 503
    loaded = secured.post("/v2/repository/models/diabetes-clf/load", json={"reference": "diabetes-clf/2"}, headers=AUTH)
    assert loaded.json() == {"name": "diabetes-clf", "version": "2", "state": "READY"}
    assert secured.post("/invocations", json={"instances": ROWS}, headers=AUTH).headers["X-Model-Version"] == "2"
    assert secured.post("/admin/reload", headers=AUTH).json() == {
        "name": "diabetes-clf",
        "version": "1",
        "swapped": True,
    }


def test_scoring_log_and_feedback_join_by_request_id(client, registered):
    response = client.post("/v2/models/diabetes-clf/infer", json={**tensor(ROWS), "id": "fb-1"})
    assert response.status_code == 200
    key = response.headers["X-Request-Id"]
    assert response.json()["id"] == "fb-1" and key != "fb-1"  # the body echoes the client's id; the key is ours
    stored = client.post(
        "/v2/models/diabetes-clf/feedback", json={"items": [{"request_id": "fb-1", "labels": [2, 1]}]}
    ).json()
    assert stored["stored"] == 1 and stored["unknown_request_ids"] == []
    assert stored["matched"] == [{"id": "fb-1", "request_id": key, "by": "client_id", "candidates": 1}]
    unknown = client.post("/v2/models/diabetes-clf/feedback", json={"items": [{"request_id": "nope", "labels": 1}]})
    assert unknown.status_code == 404 and unknown.json()["unknown_request_ids"] == ["nope"]
    engine = sa.create_engine(f"sqlite:///{registered.root / 'scoring.db'}")
    with engine.connect() as conn:
        row = conn.execute(sa.text(f"select * from perftune_scoring_log where request_id = '{key}'")).mappings().one()
        labels = conn.execute(sa.text(f"select labels from perftune_feedback where request_id = '{key}'")).scalar_one()
    assert row["client_id"] == "fb-1"
    assert row["model"] == "diabetes-clf" and row["version"] == "1" and row["rows"] == 2 and row["latency_ms"] > 0
    assert np.allclose(json.loads(row["inputs"]), ROWS)
    assert json.loads(row["outputs"]) == response.json()["outputs"][0]["data"]
    assert json.loads(labels) == [2, 1]


def test_prometheus_metrics(client):
    client.post("/invocations", json={"instances": ROWS})
    client.post("/invocations", json={"instances": [[1, 2]]})
    assert client.post("/v2/models/nope/infer", json={"inputs": []}).status_code == 404
    text = client.get("/metrics").text
    # a wrong model name in the URL is not an error of the served model (its error rate stays clean)
    assert 'perftune_requests_total{code="404",endpoint="v2",model="(other)",version="-"}' in text
    assert 'code="404",endpoint="v2",model="diabetes-clf"' not in text
    assert 'perftune_requests_total{code="200",endpoint="invocations",model="diabetes-clf",version="1"}' in text
    assert 'perftune_requests_total{code="422",endpoint="invocations",model="diabetes-clf",version="1"}' in text
    assert 'perftune_request_duration_seconds_bucket{endpoint="invocations",le="0.00025",model="diabetes-clf"}' in text
    assert "perftune_requests_in_flight" in text and "perftune_payload_rows_bucket" in text
    assert 'perftune_model_load_seconds{model="diabetes-clf",version="1"}' in text
    assert "perftune_scoring_queue_depth" in text


def test_scoring_log_on_postgresql(registered, postgres_uri):
    with TestClient(create_app(registered.settings(scoring_uri=postgres_uri))) as pg:
        ids = [pg.post("/invocations", json={"instances": ROWS}).headers["X-Request-Id"] for _ in range(5)]
        labels = {"items": [{"request_id": ids[0], "labels": [1, 2]}]}
        assert pg.post("/v2/models/diabetes-clf/feedback", json=labels).json()["stored"] == 1
    # leaving the block ran the server's shutdown: everything queued is in the database
    engine = sa.create_engine(postgres_uri.replace("postgresql://", "postgresql+psycopg://"))
    with engine.connect() as conn:
        logged = conn.execute(sa.text("select request_id from perftune_scoring_log")).scalars().all()
        joined = conn.execute(sa.text("select count(*) from perftune_feedback")).scalar_one()
    engine.dispose()
    assert sorted(logged) == sorted(ids) and joined == 1
