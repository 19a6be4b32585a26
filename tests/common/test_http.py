"""The shared plumbing: error envelope for every error kind, parse_error round trip, auth, request ids,
health and metrics, settings aliases, and the typed clients against a real app in-process."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator

import httpx
import pytest
from fastapi import APIRouter, HTTPException
from fastapi.testclient import TestClient
from pydantic import BaseModel, Field

from services.common import errors
from services.common.client import AsyncClient, Call, SyncClient
from services.common.http import build_app
from services.common.logging import (
    REQUEST_ID_HEADER,
    RequestIdFilter,
    get_request_id,
    reset_request_id,
    set_request_id,
)
from services.common.settings import CommonSettings


class Echo(BaseModel):
    n: int = Field(ge=1, le=10)


def make_app(token: str | None = None, max_body: int = 1 << 20):
    router = APIRouter()
    seen: dict[str, str | None] = {}

    @router.post("/v1/echo")
    def echo(body: Echo) -> Echo:
        seen["rid"] = get_request_id()
        return body

    @router.get("/v1/raise/{kind}")
    def raise_(kind: str) -> dict[str, str]:
        if kind == "http":
            raise HTTPException(status_code=404, detail="no such thing")
        if kind == "crash":
            raise RuntimeError("secret internals")
        cls = errors.ERROR_CLASSES[kind]
        raise cls(f"raised {kind}", param="p")

    app = build_app(
        service="testsvc",
        title="test",
        routers=[router],
        api_token=token,
        max_body_bytes=max_body,
    )
    app.state.seen = seen
    return app


@pytest.fixture()
def client() -> TestClient:
    return TestClient(make_app(), raise_server_exceptions=False)


@pytest.mark.parametrize("kind", sorted(errors.ERROR_CLASSES))
def test_every_error_kind_uses_the_envelope_and_parses_back(client: TestClient, kind: str) -> None:
    r = client.get(f"/v1/raise/{kind}")
    cls = errors.ERROR_CLASSES[kind]
    assert r.status_code == cls.status_code
    assert r.json() == {"error": {"type": kind, "message": f"raised {kind}", "param": "p"}}
    exc = errors.parse_error(r)
    assert type(exc) is cls
    assert exc.message == f"raised {kind}" and exc.param == "p"


def test_http_exception_and_unknown_route(client: TestClient) -> None:
    r = client.get("/v1/raise/http")
    assert r.status_code == 404 and r.json()["error"]["type"] == "not_found"
    r = client.get("/nowhere")
    assert r.status_code == 404 and r.json()["error"]["type"] == "not_found"
    r = client.delete("/v1/echo")
    assert r.status_code == 405 and "error" in r.json()


def test_unexpected_exception_is_a_500_envelope_without_trace(client: TestClient) -> None:
    r = client.get("/v1/raise/crash")
    assert r.status_code == 500
    body = r.json()
    assert body["error"]["type"] == "internal_error"
    assert "secret internals" not in r.text and "Traceback" not in r.text


def test_validation_and_malformed_json(client: TestClient) -> None:
    r = client.post("/v1/echo", json={"n": 99})
    assert r.status_code == 422
    err = r.json()["error"]
    assert err["type"] == "validation_error" and err["param"] == "n"
    r = client.post("/v1/echo", content=b"{not json", headers={"Content-Type": "application/json"})
    assert r.status_code == 400 and r.json()["error"]["type"] == "invalid_json"
    assert isinstance(errors.parse_error(r), errors.InvalidJSONError)


def test_body_limit() -> None:
    c = TestClient(make_app(max_body=100))
    r = c.post("/v1/echo", content=b"{" + b" " * 200 + b"}", headers={"Content-Type": "application/json"})
    assert r.status_code == 413 and r.json()["error"]["type"] == "payload_too_large"


def test_bearer_auth_everywhere_but_health() -> None:
    c = TestClient(make_app(token="s3cret"))
    assert c.get("/health").status_code == 200
    for path in ("/metrics", "/openapi.json", "/docs"):
        r = c.get(path)
        assert r.status_code == 401, path
        assert r.json()["error"]["type"] == "unauthorized"
    assert c.post("/v1/echo", json={"n": 1}, headers={"Authorization": "Bearer wrong"}).status_code == 401
    ok = c.post("/v1/echo", json={"n": 1}, headers={"Authorization": "Bearer s3cret"})
    assert ok.status_code == 200 and ok.json() == {"n": 1}


def test_health_and_metrics(client: TestClient) -> None:
    h = client.get("/health")
    assert h.status_code == 200 and h.json()["status"] == "ok" and h.json()["service"] == "testsvc"
    client.post("/v1/echo", json={"n": 2})
    m = client.get("/metrics")
    assert m.status_code == 200
    assert 'btp_http_requests_total{method="POST",route="/v1/echo",service="testsvc",status="200"}' in m.text


def test_request_id_is_echoed_and_generated(client: TestClient) -> None:
    r = client.post("/v1/echo", json={"n": 1}, headers={REQUEST_ID_HEADER: "abc123"})
    assert r.headers["x-request-id"] == "abc123"
    assert client.app.state.seen["rid"] == "abc123"  # type: ignore[attr-defined]
    r = client.post("/v1/echo", json={"n": 1})
    assert len(r.headers["x-request-id"]) == 32


def test_client_forwards_the_current_request_id() -> None:
    app = make_app()
    sync = SyncClient(client=TestClient(app))
    token = set_request_id("carried-id")
    try:
        assert sync.call(Call("POST", "/v1/echo", Echo(n=3))) == {"n": 3}
    finally:
        reset_request_id(token)
    assert app.state.seen["rid"] == "carried-id"


def test_sync_client_raises_the_server_exception_class() -> None:
    sync = SyncClient(client=TestClient(make_app(), raise_server_exceptions=False))
    with pytest.raises(errors.OverloadedError) as info:
        sync.call(Call("GET", "/v1/raise/overloaded"))
    assert info.value.status == 429
    with pytest.raises(errors.ValidationError):
        sync.call(Call("POST", "/v1/echo", Echo.model_construct(n=50)))
    assert sync.wait_until_healthy(timeout=5)["status"] == "ok"


def test_async_client_over_asgi_transport() -> None:
    async def go() -> None:
        client = AsyncClient(base_url="http://test", transport=httpx.ASGITransport(app=make_app(token="t")), token="t")
        assert (await client.wait_until_healthy(timeout=5))["status"] == "ok"
        assert await client.call(Call("POST", "/v1/echo", Echo(n=4))) == {"n": 4}
        with pytest.raises(errors.NotFoundError):
            await client.call(Call("GET", "/v1/raise/not_found"))
        await client.aclose()

    asyncio.run(go())


def test_wait_until_healthy_times_out() -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("refused", request=request)

    sync = SyncClient("http://127.0.0.1:9", transport=httpx.MockTransport(refuse))
    with pytest.raises(errors.UnavailableError):
        sync.wait_until_healthy(timeout=0.3, interval=0.05)


def test_parse_error_without_envelope() -> None:
    r = httpx.Response(502, text="bad gateway")
    exc = errors.parse_error(r)
    assert isinstance(exc, errors.UpstreamError) and "bad gateway" in exc.message


def test_shared_settings_names(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    from pydantic_settings import SettingsConfigDict

    class SvcSettings(CommonSettings):
        model_config = SettingsConfigDict(env_prefix="BTP_SVC_", extra="ignore", populate_by_name=True)
        workers: int = Field(2, description="workers")

    monkeypatch.setenv("BTP_DATABASE_URL", "postgresql+psycopg://x@h/db")
    monkeypatch.setenv("BTP_API_TOKEN", "tok")
    monkeypatch.setenv("BTP_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("BTP_SVC_WORKERS", "7")
    monkeypatch.setenv("DATABASE_URL", "sqlite:///wrong")
    s = SvcSettings()
    assert s.database_url == "postgresql+psycopg://x@h/db"
    assert s.api_token == "tok" and s.workers == 7 and s.data_dir == tmp_path
    assert SvcSettings(database_url="sqlite:///x").database_url == "sqlite:///x"
    monkeypatch.delenv("BTP_DATABASE_URL")
    assert SvcSettings().resolved_database_url() == f"sqlite:///{tmp_path / 'btp.sqlite3'}"
    for name, field in CommonSettings.model_fields.items():
        assert field.description, name


def test_log_lines_carry_the_request_id(caplog: pytest.LogCaptureFixture) -> None:
    logger = logging.getLogger("btp.test")
    caplog.handler.addFilter(RequestIdFilter())
    token = set_request_id("rid-42")
    try:
        with caplog.at_level(logging.INFO):
            logger.info("hello")
    finally:
        reset_request_id(token)
    assert caplog.records[-1].request_id == "rid-42"  # type: ignore[attr-defined]


def test_health_details_need_the_token_when_one_is_set() -> None:
    """Issue 14: /health answers everyone, but only says the service is up; the details (the judge's
    programs_judged and privileged, the generator's checkpoint) need the bearer token."""

    def details(_: object) -> dict[str, object]:
        return {"programs_judged": 7, "privileged": True}

    def app_with(token: str | None) -> TestClient:
        app = build_app(service="testsvc", title="t", routers=[], api_token=token, max_body_bytes=1 << 20,
                        health_details=details)  # type: ignore[arg-type]
        return TestClient(app)

    guarded = app_with("s3")
    assert guarded.get("/health").json() == {"status": "ok", "service": "testsvc"}
    assert guarded.get("/health", headers={"Authorization": "Bearer nope"}).json() == {"status": "ok", "service": "testsvc"}
    full = guarded.get("/health", headers={"Authorization": "Bearer s3"}).json()
    assert full == {"status": "ok", "service": "testsvc", "programs_judged": 7, "privileged": True}
    assert app_with(None).get("/health").json()["programs_judged"] == 7  # no token: nothing is guarded


def test_chunked_body_limit_in_process() -> None:
    """The 413 for a chunked body (no Content-Length) through the ASGI app itself; the route never runs."""
    app = make_app(max_body=1000)
    client = TestClient(app)

    def body() -> Iterator[bytes]:
        yield b'{"n": 1, "pad": "'
        for _ in range(100):
            yield b"x" * 100
        yield b'"}'

    r = client.post("/v1/echo", content=body(), headers={"Content-Type": "application/json"})
    assert r.status_code == 413 and r.json()["error"] == {
        "type": "payload_too_large", "message": "request body over 1000 bytes", "param": "body"}
    assert "rid" not in app.state.seen
