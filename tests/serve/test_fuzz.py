"""schemathesis against /openapi.json: generated requests for every operation, and no 5xx among them."""

from __future__ import annotations

import schemathesis
from hypothesis import HealthCheck, given, settings

from perftune.serve.app import create_app

EXAMPLES_PER_OPERATION = 40  # × 17 operations: several hundred cases


def test_no_generated_request_gets_a_server_error(registered):
    app = create_app(registered.settings())
    schema = schemathesis.openapi.from_asgi("/openapi.json", app)
    cases, failures, statuses = 0, [], set()
    for result in schema.get_all_operations():
        operation = result.ok()

        @given(case=operation.as_strategy())
        @settings(
            max_examples=EXAMPLES_PER_OPERATION,
            deadline=None,
            database=None,
            derandomize=True,
            suppress_health_check=list(HealthCheck),
        )
        def run(case) -> None:
            nonlocal cases
            cases += 1
            response = case.call()
            statuses.add(response.status_code)
            if response.status_code >= 500:
                failures.append((case.method, case.formatted_path, response.status_code, response.text[:300]))

        run()
    app.state.server.close()
    print(f"schemathesis: {cases} cases, statuses {sorted(statuses)}")
    assert cases >= 300
    assert not failures, failures[:5]
    assert 200 in statuses and 422 in statuses  # generated bodies both pass and fail validation
