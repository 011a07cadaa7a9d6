"""Property-based requests generated from the server's own OpenAPI schema (schemathesis, bounded):
no generated request makes the server answer 500, and every answer matches the schema."""

from __future__ import annotations

import pytest

pytest.importorskip("fastapi")
schemathesis = pytest.importorskip("schemathesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from schemathesis.checks import not_a_server_error  # noqa: E402

from modelfusion.serving.app import ServeSettings, create_app  # noqa: E402
from tests.serving.server import running_server  # noqa: E402


@pytest.fixture(scope="module")
def server(rows_bundle):
    with running_server(create_app(rows_bundle, ServeSettings(max_wait_ms=1))) as (url, _):
        yield url


def test_generated_requests_never_get_a_500(server):
    schema = schemathesis.openapi.from_url(f"{server}/openapi.json")
    failures, answers = [], []
    for result in schema.get_all_operations():
        operation = result.ok()

        @settings(
            max_examples=100,
            deadline=None,
            suppress_health_check=list(HealthCheck),
            database=None,
            derandomize=True,
        )
        @given(case=operation.as_strategy())
        def check(case):
            response = case.call(base_url=server)
            answers.append((case.operation.label, response.status_code))
            if response.status_code >= 500 and response.status_code != 503:
                failures.append((case.operation.label, response.status_code, response.text[:200]))
            case.validate_response(response, checks=[not_a_server_error])

        check()
    assert not failures
    predict = [status for label, status in answers if label == "POST /predict"]
    assert len(predict) >= 20 and {400, 415, 422} & set(predict)  # bodies were generated and judged
