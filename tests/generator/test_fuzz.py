"""Property-based fuzzing of the generator's OpenAPI schema with schemathesis (tiny model): no 5xx, and
every response (errors included) conforms to the schema and its declared status codes."""

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

from services.generator.app import create_app
from tests.common.hostile import check_hostile_variants, check_unparsable_bodies

from .conftest import persistent_cache, tiny_settings

CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
    negative_data_rejection,
]


def test_openapi_fuzz(tiny_dir: Path, tmp_path: Path) -> None:
    # Small work limits keep every accepted request fast; everything over them must be a clean 422.
    # Known model names may come up (schemathesis reuses strings from responses): the persistent cache
    # makes such a swap a load, not a conversion.
    app = create_app(tiny_settings(tiny_dir, tmp_path, max_work_tokens=96, max_prompt_tokens=48, max_queue=8,
                                   model_cache_dir=persistent_cache()))
    schema = schemathesis.openapi.from_asgi("/openapi.json", app)
    done = []
    with TestClient(app):
        for result in schema.get_all_operations():
            operation = result.ok()

            @given(case=operation.as_strategy())
            @settings(max_examples=30, deadline=None, derandomize=True, database=None,
                      suppress_health_check=list(HealthCheck))
            def check(case: schemathesis.Case) -> None:
                case.call_and_validate(checks=CHECKS, timeout=120)
                check_hostile_variants(case, nul_refused=False)  # issue 14: booleans are not counts

            check()
            done.append(operation.label)
        assert check_unparsable_bodies(app, schema) == 4  # generate, weights, completions, chat completions
        health = TestClient(app).get("/health").json()
    assert {"POST /v1/generate", "POST /v1/weights"} <= set(done)
    assert health["status"] == "ok" and health["checkpoint"]
