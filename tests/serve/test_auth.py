"""The one auth dependency: which routes ask for the token, under which settings, and what a refusal says."""

from __future__ import annotations

import asyncio

import pytest
from fastapi import Request

from perftune.serve.app import ROUTES
from perftune.serve.auth import Access, BearerAuth
from perftune.serve.errors import RequestError, Unauthorized
from perftune.serve.settings import ServeSettings

TOKEN = "s3cret-token-for-tests-0123456789"

# who may call what: a change here is a change of the server's security, so it is spelled out
POLICY = {
    ("GET", "/v2/health/live"): Access.HEALTH,
    ("GET", "/v2/health/ready"): Access.HEALTH,
    ("GET", "/health"): Access.HEALTH,
    ("GET", "/ping"): Access.HEALTH,
    ("GET", "/v2"): Access.OPEN,
    ("GET", "/v2/models/{name}"): Access.CLIENT,
    ("GET", "/v2/models/{name}/versions/{version}"): Access.CLIENT,
    ("GET", "/v2/models/{name}/ready"): Access.CLIENT,
    ("GET", "/v2/models/{name}/versions/{version}/ready"): Access.CLIENT,
    ("POST", "/v2/models/{name}/infer"): Access.CLIENT,
    ("POST", "/v2/models/{name}/versions/{version}/infer"): Access.CLIENT,
    ("POST", "/invocations"): Access.CLIENT,
    ("POST", "/v2/models/{name}/explain"): Access.CLIENT,
    ("POST", "/v2/models/{name}/versions/{version}/explain"): Access.CLIENT,
    ("POST", "/v2/models/{name}/feedback"): Access.CLIENT,
    ("GET", "/metrics"): Access.METRICS,
    ("POST", "/v2/repository/index"): Access.MANAGEMENT,
    ("POST", "/v2/repository/models/{name}/load"): Access.MANAGEMENT,
    ("POST", "/v2/repository/models/{name}/unload"): Access.MANAGEMENT,
    ("POST", "/admin/reload"): Access.MANAGEMENT,
}


def auth(tmp_path, token: bool, **protect) -> BearerAuth:
    options = {}
    if token:
        (tmp_path / "token.txt").write_text(TOKEN + "\n")
        options["token_file"] = str(tmp_path / "token.txt")
    return BearerAuth(ServeSettings(reference="m/1", tracking_uri="sqlite:///x.db", **options, **protect))


def guard(bearer: BearerAuth, access: Access) -> str:
    """What guards a route of ``access``: nothing, the token check, or the management refusal."""
    dependencies = bearer.dependencies(access)
    return dependencies[0].dependency.__name__ if dependencies else "nothing"


def request(header: str | None) -> Request:
    headers = [] if header is None else [(b"authorization", header.encode())]
    return Request({"type": "http", "method": "GET", "path": "/", "headers": headers})


def test_every_route_of_the_table_keeps_the_access_it_had():
    assert {(route.method, route.path): route.access for route in ROUTES} == POLICY


@pytest.mark.parametrize(
    ("token", "protect", "expected"),
    [
        (False, {}, {"nothing": set(Access) - {Access.MANAGEMENT}, "refuse_management": {Access.MANAGEMENT}}),
        (
            False,
            {"protect_health": True, "protect_metrics": True},
            {"nothing": set(Access) - {Access.MANAGEMENT}, "refuse_management": {Access.MANAGEMENT}},
        ),
        (
            True,
            {},
            {
                "nothing": {Access.OPEN, Access.HEALTH, Access.METRICS},
                "require_token": {Access.CLIENT, Access.MANAGEMENT},
            },
        ),
        (
            True,
            {"protect_health": True, "protect_metrics": True},
            {"nothing": {Access.OPEN}, "require_token": set(Access) - {Access.OPEN}},
        ),
    ],
)
def test_the_token_is_asked_for_only_where_the_settings_say(tmp_path, token, protect, expected):
    bearer = auth(tmp_path, token, **protect)
    found: dict[str, set[Access]] = {}
    for access in Access:
        found.setdefault(guard(bearer, access), set()).add(access)
    assert found == expected


@pytest.mark.parametrize("header", [None, "", "Bearer nope", f"Basic {TOKEN}", TOKEN, f"Bearer {TOKEN}x"])
def test_a_request_without_the_token_is_a_401_that_asks_for_a_bearer_token(tmp_path, header):
    with pytest.raises(Unauthorized, match="missing or invalid bearer token") as refused:
        asyncio.run(auth(tmp_path, token=True).require_token(request(header)))
    assert refused.value.status == 401 and refused.value.headers == {"WWW-Authenticate": "Bearer"}


@pytest.mark.parametrize("header", [f"Bearer {TOKEN}", f"bearer {TOKEN}", f"BEARER  {TOKEN} "])
def test_the_token_passes_whatever_the_scheme_case_and_spacing(tmp_path, header):
    assert asyncio.run(auth(tmp_path, token=True).require_token(request(header))) is None


def test_management_on_a_server_without_a_token_is_refused_with_a_remedy(tmp_path):
    with pytest.raises(RequestError, match="start the server with --token-file") as refused:
        asyncio.run(auth(tmp_path, token=False).refuse_management())
    assert refused.value.status == 403
