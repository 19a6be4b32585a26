"""Client retries: a lost connection (a service container restarting) is retried for ``retry_s``; a request
that may have reached the server is not re-sent when it is not idempotent (creating a training job)."""

from __future__ import annotations

import httpx
import pytest

from services.common.client import BufferClient, TrainerClient
from services.common.schemas.trainer import JobCreate


def _flaky(failures: list[Exception], body: dict[str, object]) -> tuple[httpx.MockTransport, list[str]]:
    seen: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request.url.path)
        if failures:
            raise failures.pop(0)
        return httpx.Response(200, json=body)

    return httpx.MockTransport(handler), seen



def test_connect_and_read_errors_are_retried(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("services.common.client.time.sleep", lambda s: None)
    transport, seen = _flaky([httpx.ConnectError("refused"), httpx.ReadError("reset")], {"status": "ok"})
    client = BufferClient("http://buffer", transport=transport, retry_s=60)
    assert client.health() == {"status": "ok"}
    assert len(seen) == 3


def test_no_retry_by_default() -> None:
    transport, seen = _flaky([httpx.ConnectError("refused")], {"status": "ok"})
    with pytest.raises(httpx.ConnectError):
        BufferClient("http://buffer", transport=transport).health()
    assert len(seen) == 1


def test_gateway_error_is_retried(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("services.common.client.time.sleep", lambda s: None)
    answers = [httpx.Response(502, text="bad gateway"), httpx.Response(200, json={"status": "ok"})]
    client = BufferClient("http://buffer", transport=httpx.MockTransport(lambda r: answers.pop(0)), retry_s=60)
    assert client.health() == {"status": "ok"}


def test_creating_a_job_is_not_resent_after_the_request_went_out(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("services.common.client.time.sleep", lambda s: None)
    job = JobCreate(model="m", batch_size=1, steps=1, learning_rate=1e-5, sample={"n": 1})
    transport, seen = _flaky([httpx.ReadError("reset")], {})
    with pytest.raises(httpx.ReadError):
        TrainerClient("http://trainer", transport=transport, retry_s=60).create_job(job)
    assert len(seen) == 1
    transport, seen = _flaky([httpx.ConnectError("refused"), httpx.ReadError("reset")], {})
    with pytest.raises(httpx.ReadError):
        TrainerClient("http://trainer", transport=transport, retry_s=60).create_job(job)
    assert len(seen) == 2  # never sent: retried once; then lost after sending: not retried
