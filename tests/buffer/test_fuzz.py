"""Property-based fuzzing of the buffer's OpenAPI schema with schemathesis, on both stores:
no 5xx, and every response (errors included) conforms to the schema and its declared status codes."""

from __future__ import annotations

from pathlib import Path

import schemathesis
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    negative_data_rejection,
    response_schema_conformance,
    status_code_conformance,
)

from services.buffer.app import create_app
from tests.common.hostile import check_hostile_variants, check_unparsable_bodies

from .conftest import experience_json, make_settings, task_json


def run_fuzz(app: object, max_examples: int) -> list[str]:
    """Fuzz every operation; return the names of the operations that were exercised."""
    schema = schemathesis.openapi.from_asgi("/openapi.json", app)
    done = []
    for result in schema.get_all_operations():
        operation = result.ok()

        @given(case=operation.as_strategy())
        @settings(
            max_examples=max_examples,
            deadline=None,
            derandomize=True,
            database=None,
            suppress_health_check=list(HealthCheck),
        )
        def check(case: schemathesis.Case) -> None:
            case.call_and_validate(checks=CHECKS)
            check_hostile_variants(case, nul_refused=True)  # issue 14: booleans, NUL strings and paths

        check()
        done.append(operation.label)
    assert check_unparsable_bodies(app, schema) >= 3
    return done


CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
    negative_data_rejection,
]


def test_openapi_fuzz(db_url: str, tmp_path: Path) -> None:
    app = create_app(make_settings(db_url, tmp_path, max_sample_n=256, max_program_bytes=4096, max_items_per_request=200))
    with TestClient(app) as client:
        client.post("/v1/tasks", json={"tasks": [task_json("HumanEval/0"), task_json("a", dataset="d", split="train")]})
        r = client.post("/v1/experiences", json={"items": [experience_json("a", f"p{i}", pass_rate=i / 4) for i in range(5)]})
        assert r.status_code == 200
        done = run_fuzz(app, max_examples=30)
    assert any("/v1/sample" in name for name in done) and len(done) >= 9
