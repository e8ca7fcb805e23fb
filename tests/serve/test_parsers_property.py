"""Property-based tests of the request parsers: any input is a value or a one-line 4xx ``{"error"}``.

Generated JSON values (and JSON-shaped near misses of each protocol), raw bytes, and CSV text go to
``protocol.v2_request``, ``invocations_request`` and ``csv_request`` directly, then through the app: never a
traceback, never a 5xx, never a multi-line message.
"""

from __future__ import annotations

import os

import numpy as np
import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from perftune.serve import protocol
from perftune.serve.app import create_app
from perftune.serve.model import InputSchema

NAMES = [f"A{i}" for i in range(1, 9)]
SCHEMA = InputSchema(names=NAMES, types=["double"] * 8)
EXAMPLES = settings(
    max_examples=int(os.environ.get("HYPOTHESIS_EXAMPLES", 300)),
    deadline=None,
    database=None,
    suppress_health_check=list(HealthCheck),
)

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=8),
)
json_values = st.recursive(
    scalars,
    lambda kids: st.one_of(st.lists(kids, max_size=6), st.dictionaries(st.text(max_size=6), kids, max_size=4)),
    max_leaves=40,
)
numbers = st.one_of(st.integers(-1000, 1000), st.floats(-1e6, 1e6), st.sampled_from([None, "x", True]))
rows = st.lists(st.lists(numbers, min_size=0, max_size=9), max_size=4)
tensors = st.fixed_dictionaries(
    {
        "name": st.one_of(st.sampled_from(["input-0", *NAMES]), st.text(max_size=5)),
        "shape": st.one_of(st.lists(st.integers(-1, 9), max_size=3), json_values),
        "datatype": st.one_of(st.sampled_from(sorted(protocol.V2_NUMPY)), st.text(max_size=5)),
        "data": st.one_of(rows, st.lists(numbers, max_size=17), json_values),
    }
)
v2_bodies = st.one_of(
    json_values,
    st.fixed_dictionaries(
        {"inputs": st.one_of(st.lists(tensors, max_size=9), json_values)},
        optional={"id": st.one_of(st.text(max_size=140), json_values)},
    ),
)
columns = st.one_of(st.permutations(NAMES), json_values)
invocation_bodies = st.one_of(
    json_values,
    st.fixed_dictionaries({"dataframe_split": st.fixed_dictionaries({"data": rows}, optional={"columns": columns})}),
    st.fixed_dictionaries({"dataframe_records": st.lists(st.dictionaries(st.sampled_from(NAMES), numbers))}),
    st.fixed_dictionaries({"instances": st.one_of(rows, json_values)}),
    st.fixed_dictionaries({"inputs": st.one_of(st.dictionaries(st.sampled_from(NAMES), st.lists(numbers)), rows)}),
)
cells = st.one_of(st.sampled_from(NAMES), st.text(max_size=4), numbers.map(str))
csv_bodies = st.one_of(
    st.binary(max_size=200),
    st.lists(st.lists(cells, max_size=9), max_size=4).map(lambda lines: "\n".join(map(",".join, lines)).encode()),
)


def refused_properly(call) -> np.ndarray | None:
    try:
        result = call()
    except protocol.RequestError as exc:
        assert 400 <= exc.status < 500 and exc.message and "\n" not in exc.message
        return None
    assert isinstance(result, np.ndarray) and result.ndim == 2 and result.shape[1] == 8
    return result


@EXAMPLES
@given(body=v2_bodies)
def test_v2_request_gives_rows_or_a_one_line_4xx(body):
    refused_properly(lambda: protocol.v2_request(body, SCHEMA)[0])


@EXAMPLES
@given(body=invocation_bodies)
def test_invocations_request_gives_rows_or_a_one_line_4xx(body):
    refused_properly(lambda: protocol.invocations_request(body, SCHEMA))


@EXAMPLES
@given(body=csv_bodies)
def test_csv_request_gives_rows_or_a_one_line_4xx(body):
    refused_properly(lambda: protocol.csv_request(body, SCHEMA))


@pytest.fixture(scope="module")
def client(registered):
    with TestClient(create_app(registered.settings()), raise_server_exceptions=True) as c:
        yield c


def answered_properly(response) -> None:
    assert response.status_code < 500, response.text
    if response.status_code != 200:
        body = response.json()
        assert list(body) == ["error"] and "\n" not in body["error"]


@settings(max_examples=100, deadline=None, database=None, suppress_health_check=list(HealthCheck))
@given(body=st.one_of(v2_bodies, invocation_bodies), raw=st.binary(max_size=60), csv=csv_bodies)
def test_the_app_answers_any_body_with_a_value_or_a_one_line_4xx(client, body, raw, csv):
    answered_properly(client.post("/v2/models/diabetes-clf/infer", json=body))
    answered_properly(client.post("/invocations", json=body))
    answered_properly(client.post("/v2/models/diabetes-clf/infer", content=raw))
    answered_properly(client.post("/invocations", content=csv, headers={"Content-Type": "text/csv"}))
