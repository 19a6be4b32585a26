"""The hostile requests of issue 14, sent exactly (raw sockets) to real uvicorn processes of the buffer,
the trainer and the judge: chunked bodies far over the limit (413, and the process's memory does not
grow by more than the limit), NUL in paths and query strings, unparsable bodies of every kind, and
booleans where counts belong."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from contextlib import ExitStack

import pytest

from .rawhttp import Service, request, rss_kib, uvicorn_service

pytestmark = pytest.mark.integration

LIMIT = 16 * 1024 * 1024  # BTP_MAX_BODY_BYTES of the services under test
HUGE = 100 * 1024 * 1024  # the chunked body sent: 100 MiB
CHUNK = 64 * 1024
SLACK = 4 * 1024 * 1024  # socket and parser buffers, allocator rounding
ENDPOINTS = {"buffer": "/v1/experiences", "trainer": "/v1/jobs", "judge": "/v1/judge"}
REDIS_URL = os.environ.get("BTP_TEST_TRAINER_REDIS", "redis://127.0.0.1:6379/5")


@pytest.fixture(scope="module")
def services(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Service]]:
    """The three services in their own processes (SQLite files, Redis DB 5), body limit 16 MiB."""
    tmp = tmp_path_factory.mktemp("refusals")
    common = {"BTP_DATA_DIR": str(tmp), "BTP_MAX_BODY_BYTES": str(LIMIT), "BTP_REDIS_URL": REDIS_URL}
    envs = {
        "buffer": {**common, "BTP_DATABASE_URL": f"sqlite:///{tmp / 'buffer.sqlite3'}"},
        "trainer": {**common, "BTP_DATABASE_URL": f"sqlite:///{tmp / 'trainer.sqlite3'}"},
        "judge": {**common, "BTP_JUDGE_WORKERS": "1"},
    }
    with ExitStack() as stack:
        yield {name: stack.enter_context(uvicorn_service(name, env, tmp / f"{name}.log")) for name, env in envs.items()}


def _chunks(total: int) -> Iterator[bytes]:
    block = b"x" * CHUNK
    for _ in range(total // CHUNK):
        yield block


@pytest.mark.parametrize("name", sorted(ENDPOINTS))
def test_chunked_body_over_the_limit_is_413_without_reading_it(services: dict[str, Service], name: str) -> None:
    svc = services[name]
    # warm up the request path (imports, first allocations) with a small chunked body
    warm = request(svc.port, "POST", ENDPOINTS[name], chunks=iter([b"{}"]))
    assert warm.status == 422, warm.body
    before = rss_kib(svc.proc.pid)
    r = request(svc.port, "POST", ENDPOINTS[name], chunks=_chunks(HUGE), timeout=120)
    assert r.status == 413, r.body
    assert r.error["type"] == "payload_too_large" and r.error["param"] == "body"
    peak = rss_kib(svc.proc.pid, "VmHWM")
    # The service stopped reading at the limit: the client could not push the whole body (only what the
    # socket buffers hold past the limit), and the process's peak memory grew by the body it may hold
    # (the limit) plus buffers, never by the 100 MiB sent (reading it whole grew it by about 300 MiB).
    assert r.sent < LIMIT + 16 * 1024 * 1024, r.sent
    grown = (peak - before) * 1024
    assert grown < LIMIT + SLACK, f"peak RSS grew by {grown / 2**20:.1f} MiB"
    assert request(svc.port, "GET", "/health").status == 200


@pytest.mark.parametrize("name", sorted(ENDPOINTS))
def test_chunked_body_under_the_limit_is_read_whole(services: dict[str, Service], name: str) -> None:
    body = json.dumps({"padding": "y" * (2 * CHUNK)}).encode()
    r = request(services[name].port, "POST", ENDPOINTS[name], chunks=iter([body[:CHUNK], body[CHUNK:]]))
    # the whole body arrived and was parsed: the refusal is about its content (an unknown field)
    assert r.status == 422 and r.error["type"] == "validation_error", r.body


@pytest.mark.parametrize(
    ("name", "method", "target"),
    [
        ("trainer", "GET", "/v1/jobs/%00"),
        ("trainer", "GET", "/v1/jobs/a%00b"),
        ("trainer", "POST", "/v1/jobs/%00/cancel"),
        ("trainer", "GET", "/v1/jobs?status=%00"),
        ("buffer", "GET", "/v1/tasks/%00"),
        ("buffer", "GET", "/v1/tasks?dataset=a%00b"),
        ("buffer", "PATCH", "/v1/experiences/%00"),
        ("judge", "POST", "/v1/judge/%00"),
    ],
)
def test_nul_in_path_or_query_is_422(services: dict[str, Service], name: str, method: str, target: str) -> None:
    r = request(services[name].port, method, target, body=b"{}" if method != "GET" else None)
    assert r.status == 422, r.body
    assert r.error["type"] == "validation_error" and r.error["param"] in ("path", "query")


UNPARSABLE = {
    "deep nesting": b"[" * 100_000,
    "deep nesting closed": b"[" * 100_000 + b"]" * 100_000,
    "5000-digit integer": b'{"n": ' + b"7" * 5000 + b"}",
    "invalid UTF-8": b'{"model": "\xff\xfe"}',
    "truncated": b'{"model": ',
}


@pytest.mark.parametrize("name", sorted(ENDPOINTS))
@pytest.mark.parametrize("kind", sorted(UNPARSABLE))
def test_every_unparsable_body_is_invalid_json(services: dict[str, Service], name: str, kind: str) -> None:
    r = request(services[name].port, "POST", ENDPOINTS[name], body=UNPARSABLE[kind])
    assert r.status == 400, r.body
    assert r.error["type"] == "invalid_json" and r.error["param"] == "body"


@pytest.mark.parametrize(
    ("name", "target", "body", "param"),
    [
        ("trainer", "/v1/jobs", {"model": "SmolLM2-135M-Instruct", "batch_size": True}, "batch_size"),
        ("trainer", "/v1/jobs", {"model": "SmolLM2-135M-Instruct", "steps": True}, "steps"),
        ("trainer", "/v1/jobs", {"model": "SmolLM2-135M-Instruct", "seed": False}, "seed"),
        ("trainer", "/v1/jobs", {"model": "SmolLM2-135M-Instruct", "steps": 2.0}, "steps"),
        ("trainer", "/v1/jobs", {"model": "SmolLM2-135M-Instruct", "steps": "2"}, "steps"),
        ("trainer", "/v1/jobs", {"model": "SmolLM2-135M-Instruct", "sample": {"n": True}}, "sample.n"),
        ("buffer", "/v1/sample", {"n": True}, "n"),
        ("buffer", "/v1/sample", {"n": 4, "seed": True}, "seed"),
        ("buffer", "/v1/sample", {"n": 4, "alpha": True}, "alpha"),
        ("judge", "/v1/judge", {"program": "", "tests": {"kind": "check", "entry_point": "f", "code": "x"},
                                "limits": {"memory_mb": True}}, "limits.memory_mb"),
    ],
)
def test_booleans_are_not_counts(services: dict[str, Service], name: str, target: str, body: dict[str, object],
                                 param: str) -> None:  # fmt: skip
    r = request(services[name].port, "POST", target, body=json.dumps(body).encode())
    assert r.status == 422, r.body
    assert r.error["type"] == "validation_error" and r.error["param"] == param, r.error


def test_unstorable_strings_are_422(services: dict[str, Service]) -> None:
    task = {"id": "t/1", "dataset": "d", "prompt": "p", "tests": {"kind": "check", "entry_point": "f", "code": "x"}}
    cases = [
        ("buffer", "/v1/tasks", {"tasks": [{**task, "id": "a\x00b"}]}, "tasks.0.id"),
        ("buffer", "/v1/tasks", {"tasks": [{**task, "metadata": {"k": ["\ud800"]}}]}, "tasks.0.metadata.k.0"),
        ("buffer", "/v1/tasks", {"tasks": [{**task, "tests": {**task["tests"], "code": "\x00"}}]}, "tasks.0.tests.code"),  # type: ignore[dict-item]
        ("trainer", "/v1/jobs", {"model": "SmolLM2-135M-Instruct", "sample": {"dataset": "\x00"}}, "sample.dataset"),
    ]
    for name, target, body, param in cases:
        # json.dumps escapes both as \u0000 and \ud800, as a hostile client would send them
        r = request(services[name].port, "POST", target, body=json.dumps(body).encode())
        assert r.status == 422, (body, r.body)
        assert r.error["param"] == param, r.error
