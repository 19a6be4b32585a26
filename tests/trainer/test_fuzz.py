"""Schemathesis over the trainer's OpenAPI schema: no 5xx, every answer conforms to the schema.

Runs the real app (SQLite file, Redis DB 5) in-process; each operation gets 30 generated requests,
valid and invalid (schemathesis' positive and negative modes).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import schemathesis
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from schemathesis.specs.openapi.checks import positive_data_acceptance

from services.trainer.app import create_app
from services.trainer.settings import Settings
from tests.common.hostile import check_hostile_variants, check_unparsable_bodies

from .conftest import REDIS_URL


@pytest.fixture()
def fuzz_app(tmp_path: Path, redis_url: str) -> Iterator[object]:
    app = create_app(Settings(database_url=f"sqlite:///{tmp_path / 'f.sqlite3'}", redis_url=REDIS_URL, data_dir=tmp_path))
    with TestClient(app):  # runs the lifespan
        yield app


def test_api_conforms_to_its_schema(fuzz_app: object) -> None:
    schema = schemathesis.openapi.from_asgi("/openapi.json", fuzz_app)
    operations = [result.ok() for result in schema.get_all_operations()]
    assert {f"{op.method.upper()} {op.path}" for op in operations} >= {
        "POST /v1/jobs", "GET /v1/jobs", "GET /v1/jobs/{job_id}", "POST /v1/jobs/{job_id}/cancel",
    }
    seen: dict[str, set[int]] = {}
    for op in operations:

        @given(case=op.as_strategy())
        @settings(max_examples=30, deadline=None, suppress_health_check=list(HealthCheck), database=None)
        def check(case: schemathesis.Case) -> None:
            response = case.call()
            seen.setdefault(f"{case.method.upper()} {case.operation.path}", set()).add(response.status_code)
            assert response.status_code < 500, (case.method, case.path, case.body, response.text)
            if response.status_code >= 400:
                err = response.json()["error"]
                assert isinstance(err["type"], str) and isinstance(err["message"], str)
            # The schema cannot say that `model` must name an existing folder or a known model, so a
            # schema-valid body may rightly get a 422: every other built-in check stays on.
            case.validate_response(response, excluded_checks=[positive_data_acceptance])
            check_hostile_variants(case, nul_refused=True)  # issue 14: booleans, NUL strings and paths

        check()
    assert check_unparsable_bodies(fuzz_app, schema) == 1
    # Fuzzing exercised rejections, and the service is still healthy.
    assert any(code >= 400 for code in seen.get("POST /v1/jobs", set()))
    with TestClient(fuzz_app) as client:  # type: ignore[arg-type]
        assert client.get("/health").json()["status"] == "ok"
