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


@pytest.mark.parametrize(
    ("code", "outcome"),
    [(200, "answered"), (401, "client_error"), (403, "client_error"), (404, "client_error"), (413, "client_error"),
     (422, "client_error"), (499, "client_error"), ("500", "server_error"), (503, "server_error")],
)  # fmt: skip
def test_each_status_is_the_models_answer_a_server_side_failure_or_the_clients_error(code, outcome):
    from perftune.serve.metrics import Outcome

    assert Outcome.of(code).value == outcome


def test_an_upload_the_client_abandons_is_counted_as_499_and_logged_in_one_info_line(registered, caplog):
    """An ASGI exchange as uvicorn drives it: 5 of the 1000 bytes the request declares, then the disconnect."""
    messages = [
        {"type": "http.request", "body": b'{"ins', "more_body": True},
        {"type": "http.disconnect"},
    ]
    sent: list[dict] = []

    async def receive() -> dict:
        return messages.pop(0)

    async def send(message: dict) -> None:
        sent.append(message)

    scope = {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST", "scheme": "http",
        "path": "/invocations", "raw_path": b"/invocations", "query_string": b"", "root_path": "",
        "headers": [(b"host", b"127.0.0.1"), (b"content-type", b"application/json"), (b"content-length", b"1000")],
        "client": ("127.0.0.1", 50000), "server": ("127.0.0.1", 8080),
    }  # fmt: skip
    with TestClient(create_app(registered.settings())) as client:
        before = client.get("/metrics").text
        caplog.clear()
        with caplog.at_level(logging.INFO, logger="perftune.serve"):
            client.portal.call(client.app, scope, receive, send)
        after = client.get("/metrics").text
    aborted = 'perftune_requests_total{code="499",endpoint="invocations",model="diabetes-clf",version="1"} 1.0'
    assert aborted not in before and aborted in after
    assert 'code="500"' not in after
    (record,) = [r for r in caplog.records if r.name == "perftune.serve"]
    assert record.levelno == logging.INFO and record.exc_info is None and "\n" not in record.getMessage()
    assert record.getMessage() == (
        "the client closed the connection after 5 of 1000 bytes of its body; not answered, counted as 499"
    )
