"""Errors carry their status; one handler renders them; a bug is a 500 with an id; inference answers are counted."""

from __future__ import annotations

import logging

import pytest
from fastapi.testclient import TestClient

from perftune.serve.app import create_app
from perftune.serve.dataplane import DataPlane
from perftune.serve.errors import InternalError, RequestError

ROWS = [[6, 148, 72, 35, 0, 33.6, 0.627, 50]]
AUTH = {"Authorization": "Bearer s3cret-token-for-tests-0123456789"}


def test_a_request_error_stays_one_line_and_carries_its_status_and_headers():
    error = RequestError(422, "tensor 'a\r\nX-Injected: 1' appears twice", {"X-Reason": "test"})
    assert error.status == 422 and error.headers == {"X-Reason": "test"}
    assert error.message == "tensor 'a\\r\\nX-Injected: 1' appears twice" == str(error)


def test_an_internal_error_logs_the_traceback_under_the_id_it_names(caplog):
    try:
        raise KeyError("the cause")
    except KeyError:
        error = InternalError.logged("internal server error", "server error %s answering %s", "GET /x")
    assert error.status == 500
    assert error.message == f"internal server error; error id {error.error_id} is in the server log"
    (record,) = [r for r in caplog.records if error.error_id in r.getMessage()]
    assert record.levelno == logging.ERROR and "the cause" in record.exc_text


@pytest.fixture(scope="module")
def secured(registered):
    with TestClient(create_app(registered.settings(token_file=str(registered.root / "token.txt")))) as c:
        yield c


def test_a_bug_in_any_endpoint_is_a_json_500_with_an_id_not_a_traceback(secured, monkeypatch, caplog):
    def broken(self):
        raise RuntimeError("a bug with a secret in it")

    monkeypatch.setattr(DataPlane, "server_metadata", broken)
    response = secured.get("/v2")
    assert response.status_code == 500 and "secret" not in response.text
    error_id = response.json()["error"].split("error id ")[1].split()[0]
    assert any(error_id in r.getMessage() and "GET /v2" in r.getMessage() for r in caplog.records)


def test_framework_refusals_are_rendered_like_ours(secured):
    assert secured.get("/nowhere").json() == {"error": "Not Found"}
    wrong_method = secured.delete("/invocations")
    assert wrong_method.status_code == 405 and wrong_method.json() == {"error": "Method Not Allowed"}
    refused = secured.post("/invocations", json={"instances": ROWS})
    assert refused.status_code == 401 and refused.headers["WWW-Authenticate"] == "Bearer"
    assert refused.json() == {"error": "missing or invalid bearer token"}


def test_every_inference_answer_is_counted_by_its_status_the_auth_refusal_and_a_bug_included(secured, monkeypatch):
    def counts() -> dict[str, float]:
        found = {}
        for line in secured.get("/metrics").text.splitlines():
            if line.startswith('perftune_requests_total{code="') and 'endpoint="invocations"' in line:
                found[line.split('"')[1]] = float(line.split()[-1])
        return found

    before = counts()
    secured.post("/invocations", json={"instances": ROWS})  # no token: 401
    secured.post("/invocations", json={"instances": ROWS}, headers=AUTH)  # 200

    def bug(*args):
        raise RuntimeError("bug")

    monkeypatch.setattr("perftune.serve.dataplane.encode", bug)
    assert secured.post("/invocations", json={"instances": ROWS}, headers=AUTH).status_code == 500
    after = counts()
    assert {code: after[code] - before.get(code, 0) for code in after} == {"401": 1, "200": 1, "500": 1}
