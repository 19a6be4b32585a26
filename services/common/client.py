"""Typed sync and async clients for the four services.

Every client takes an injected ``httpx.Client``/``httpx.AsyncClient`` or a transport, so tests and the
embedded mode run the real apps in-process (Starlette's ``TestClient`` is an ``httpx.Client``;
``httpx.ASGITransport`` serves async clients). Non-2xx answers raise the exception class the server
raised (:func:`services.common.errors.parse_error`). The current request id (if any) is forwarded as
``X-Request-ID`` so one id follows a request across services.
"""

from __future__ import annotations

import asyncio
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, TypeVar
from urllib.parse import quote

import httpx
from pydantic import BaseModel

from .errors import BTPError, UnavailableError, parse_error
from .logging import REQUEST_ID_HEADER, get_request_id
from .schemas.buffer import (
    ExperienceCreateRequest,
    ExperienceCreateResponse,
    ExperienceIn,
    ExperienceList,
    ExperienceOut,
    ExperienceUpdate,
    GroupStatsResponse,
    RecentDrawList,
    SampleRequest,
    SampleResponse,
    StatsResponse,
    TaskIn,
    TaskList,
    TaskOut,
    TaskUpsertRequest,
    TaskUpsertResponse,
)
from .schemas.generator import GenerateRequest, GenerateResponse, WeightsRequest, WeightsResponse
from .schemas.judge import JudgeBatchRequest, JudgeBatchResponse, JudgeRequest, JudgeResponse
from .schemas.trainer import JobCreate, JobList, JobOut
from .settings import DEFAULT_PORTS

M = TypeVar("M", bound=BaseModel)
log = logging.getLogger(__name__)

DEFAULT_URLS = {name: f"http://127.0.0.1:{port}" for name, port in DEFAULT_PORTS.items()}


@dataclass
class Call:
    """One HTTP call: what to send and what model the 2xx body parses into."""

    method: str
    path: str
    body: BaseModel | None = None
    params: dict[str, Any] = field(default_factory=dict)
    model: type[BaseModel] | None = None
    idempotent: bool = True  # safe to send again when the connection broke after the request went out


def _headers(token: str | None) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"} if token else {}


def _request_headers() -> dict[str, str]:
    rid = get_request_id()
    return {REQUEST_ID_HEADER: rid} if rid else {}


def _decode(call: Call, response: httpx.Response) -> Any:
    if response.status_code >= 400:
        raise parse_error(response)
    if call.model is None:
        return response.json() if response.content else None
    return call.model.model_validate_json(response.content)


def _kwargs(call: Call) -> dict[str, Any]:
    kwargs: dict[str, Any] = {"headers": _request_headers()}
    if call.body is not None:
        kwargs["content"] = call.body.model_dump_json(exclude_unset=False)
        kwargs["headers"]["Content-Type"] = "application/json"
    if call.params:
        kwargs["params"] = {k: v for k, v in call.params.items() if v is not None}
    return kwargs


# Transport errors after which a request may be sent again: the server never got it (connect), or it died
# or was restarted while answering (read/write/protocol). Timeouts of a slow answer are not retried.
_NEVER_SENT = (httpx.ConnectError, httpx.ConnectTimeout)
_CONNECTION_LOST = (httpx.ReadError, httpx.WriteError, httpx.RemoteProtocolError)
_GATEWAY_STATUSES = (502, 504)  # a load balancer in front of replicas that are all restarting


def _retryable(call: Call, exc: Exception | None, status: int | None) -> bool:
    if isinstance(exc, _NEVER_SENT):
        return True
    if not call.idempotent:
        return False
    return isinstance(exc, _CONNECTION_LOST) or status in _GATEWAY_STATUSES


class SyncClient:
    """Base of the sync service clients."""

    service = "service"

    def __init__(
        self,
        base_url: str | None = None,
        *,
        token: str | None = None,
        timeout: float = 600.0,
        transport: httpx.BaseTransport | None = None,
        client: httpx.Client | None = None,
        retry_s: float = 0.0,
    ) -> None:
        # retry_s > 0: a call whose connection failed or broke (a service container restarting, a replica
        # lost) is sent again with backoff for up to retry_s seconds; see _retryable. Non-idempotent calls
        # (creating a training job) are retried only when the request never reached the server.
        self.retry_s = retry_s
        if client is not None:
            self.http = client
            if token:
                self.http.headers.update(_headers(token))
        else:
            self.http = httpx.Client(
                base_url=base_url or DEFAULT_URLS.get(self.service, "http://127.0.0.1"),
                headers=_headers(token),
                timeout=timeout,
                transport=transport,
            )

    def call(self, call: Call) -> Any:
        """Send one call and decode its answer (retrying a lost connection for up to ``retry_s``)."""
        deadline = time.monotonic() + self.retry_s
        delay = 0.5
        while True:
            try:
                response = self.http.request(call.method, call.path, **_kwargs(call))
            except httpx.TransportError as exc:
                if not _retryable(call, exc, None) or time.monotonic() + delay > deadline:
                    raise
            else:
                if not _retryable(call, None, response.status_code) or time.monotonic() + delay > deadline:
                    return _decode(call, response)
            log.warning("%s %s%s: connection failed or broke, retrying in %.1fs", call.method,
                        self.http.base_url, call.path, delay)  # fmt: skip
            time.sleep(delay)
            delay = min(2 * delay, 5.0)

    def health(self) -> dict[str, Any]:
        """``GET /health``."""
        result: dict[str, Any] = self.call(Call("GET", "/health"))
        return result

    def wait_until_healthy(self, timeout: float = 60.0, interval: float = 0.2) -> dict[str, Any]:
        """Poll ``/health`` until it answers 200, or raise :class:`UnavailableError`."""
        deadline = time.monotonic() + timeout
        last: Exception | None = None
        while time.monotonic() < deadline:
            try:
                return self.health()
            except (httpx.HTTPError, BTPError) as exc:
                last = exc
            time.sleep(interval)
        raise UnavailableError(f"{self.service} not healthy after {timeout:.0f}s: {last}")

    def close(self) -> None:
        self.http.close()

    def __enter__(self: Any) -> Any:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class AsyncClient:
    """Base of the async service clients."""

    service = "service"

    def __init__(
        self,
        base_url: str | None = None,
        *,
        token: str | None = None,
        timeout: float = 600.0,
        transport: httpx.AsyncBaseTransport | None = None,
        client: httpx.AsyncClient | None = None,
    ) -> None:
        if client is not None:
            self.http = client
            if token:
                self.http.headers.update(_headers(token))
        else:
            self.http = httpx.AsyncClient(
                base_url=base_url or DEFAULT_URLS.get(self.service, "http://127.0.0.1"),
                headers=_headers(token),
                timeout=timeout,
                transport=transport,
            )

    async def call(self, call: Call) -> Any:
        """Send one call and decode its answer."""
        response = await self.http.request(call.method, call.path, **_kwargs(call))
        return _decode(call, response)

    async def health(self) -> dict[str, Any]:
        """``GET /health``."""
        result: dict[str, Any] = await self.call(Call("GET", "/health"))
        return result

    async def wait_until_healthy(self, timeout: float = 60.0, interval: float = 0.2) -> dict[str, Any]:
        """Poll ``/health`` until it answers 200, or raise :class:`UnavailableError`."""
        deadline = time.monotonic() + timeout
        last: Exception | None = None
        while time.monotonic() < deadline:
            try:
                return await self.health()
            except (httpx.HTTPError, BTPError) as exc:
                last = exc
            await asyncio.sleep(interval)
        raise UnavailableError(f"{self.service} not healthy after {timeout:.0f}s: {last}")

    async def aclose(self) -> None:
        await self.http.aclose()


# --- calls, shared by the sync and async clients -------------------------------------------------


def _generate(req: GenerateRequest) -> Call:
    return Call("POST", "/v1/generate", req, model=GenerateResponse)


def _weights(req: WeightsRequest) -> Call:
    return Call("POST", "/v1/weights", req, model=WeightsResponse)


def _judge(req: JudgeRequest) -> Call:
    return Call("POST", "/v1/judge", req, model=JudgeResponse)


def _judge_batch(req: JudgeBatchRequest) -> Call:
    return Call("POST", "/v1/judge/batch", req, model=JudgeBatchResponse)


def _upsert_tasks(tasks: list[TaskIn]) -> Call:
    return Call("POST", "/v1/tasks", TaskUpsertRequest(tasks=tasks), model=TaskUpsertResponse)


def _get_task(task_id: str) -> Call:
    return Call("GET", f"/v1/tasks/{_quote(task_id)}", model=TaskOut)


def _quote(value: str) -> str:
    return quote(value, safe="")


def _list_tasks(dataset: str | None, split: str | None, limit: int, offset: int) -> Call:
    params = {"dataset": dataset, "split": split, "limit": limit, "offset": offset}
    return Call("GET", "/v1/tasks", params=params, model=TaskList)


def _add_experiences(items: list[ExperienceIn]) -> Call:
    return Call("POST", "/v1/experiences", ExperienceCreateRequest(items=items), model=ExperienceCreateResponse)


def _update_experience(experience_id: int, update: ExperienceUpdate) -> Call:
    return Call("PATCH", f"/v1/experiences/{experience_id}", update, model=ExperienceOut)


def _get_experience(experience_id: int) -> Call:
    return Call("GET", f"/v1/experiences/{experience_id}", model=ExperienceOut)


def _list_experiences(**params: Any) -> Call:
    return Call("GET", "/v1/experiences", params=params, model=ExperienceList)


def _sample(req: SampleRequest) -> Call:
    return Call("POST", "/v1/sample", req, model=SampleResponse)


def _stats(dataset: str | None) -> Call:
    return Call("GET", "/v1/stats", params={"dataset": dataset}, model=StatsResponse)


def _create_job(job: JobCreate) -> Call:
    return Call("POST", "/v1/jobs", job, model=JobOut, idempotent=False)


def _get_job(job_id: str) -> Call:
    return Call("GET", f"/v1/jobs/{_quote(job_id)}", model=JobOut)


def _list_jobs() -> Call:
    return Call("GET", "/v1/jobs", model=JobList)


def _cancel_job(job_id: str) -> Call:
    return Call("POST", f"/v1/jobs/{_quote(job_id)}/cancel", model=JobOut)


# --- sync clients ----------------------------------------------------------------------------------


class GeneratorClient(SyncClient):
    service = "generator"

    def generate(self, req: GenerateRequest) -> GenerateResponse:
        """``POST /v1/generate``."""
        return self.call(_generate(req))  # type: ignore[no-any-return]

    def set_weights(self, checkpoint: str, *, version: int | None = None, lineage: str | None = None) -> WeightsResponse:
        """``POST /v1/weights`` (``version``/``lineage``: see :class:`WeightsRequest`)."""
        req = WeightsRequest(checkpoint=checkpoint, version=version, lineage=lineage)
        return self.call(_weights(req))  # type: ignore[no-any-return]


class JudgeClient(SyncClient):
    """``split`` > 0: a batch of more than ``split`` programs goes out as requests of ``split`` programs,
    ``parallel`` of them at a time, so that judge replicas behind a balancer share it (a single judge
    answers them concurrently too); the answer is the same, in order."""

    service = "judge"

    def __init__(self, base_url: str | None = None, *, split: int = 0, parallel: int = 1, **kwargs: Any) -> None:
        super().__init__(base_url, **kwargs)
        if split < 0 or parallel < 1:
            raise ValueError(f"split must be >= 0 and parallel >= 1 (got {split}, {parallel})")
        self.split, self.parallel = split, parallel

    def judge(self, req: JudgeRequest) -> JudgeResponse:
        """``POST /v1/judge``."""
        return self.call(_judge(req))  # type: ignore[no-any-return]

    def judge_batch(self, items: list[JudgeRequest]) -> JudgeBatchResponse:
        """``POST /v1/judge/batch`` (several, concurrently, when ``split`` says so)."""
        if self.split <= 0 or len(items) <= self.split:
            return self.call(_judge_batch(JudgeBatchRequest(items=items)))  # type: ignore[no-any-return]
        parts = [items[i : i + self.split] for i in range(0, len(items), self.split)]
        with ThreadPoolExecutor(max_workers=min(self.parallel, len(parts))) as pool:
            answers = list(pool.map(lambda part: self.call(_judge_batch(JudgeBatchRequest(items=part))), parts))
        return JudgeBatchResponse(results=[r for answer in answers for r in answer.results])


class BufferClient(SyncClient):
    service = "buffer"

    def upsert_tasks(self, tasks: list[TaskIn]) -> TaskUpsertResponse:
        """``POST /v1/tasks``."""
        return self.call(_upsert_tasks(tasks))  # type: ignore[no-any-return]

    def get_task(self, task_id: str) -> TaskOut:
        """``GET /v1/tasks/{id}``."""
        return self.call(_get_task(task_id))  # type: ignore[no-any-return]

    def list_tasks(
        self, dataset: str | None = None, split: str | None = None, limit: int = 1000, offset: int = 0
    ) -> TaskList:
        """``GET /v1/tasks``."""
        return self.call(_list_tasks(dataset, split, limit, offset))  # type: ignore[no-any-return]

    def add_experiences(self, items: list[ExperienceIn]) -> ExperienceCreateResponse:
        """``POST /v1/experiences`` (idempotent on task_id, program, source)."""
        return self.call(_add_experiences(items))  # type: ignore[no-any-return]

    def update_experience(self, experience_id: int, update: ExperienceUpdate) -> ExperienceOut:
        """``PATCH /v1/experiences/{id}``."""
        return self.call(_update_experience(experience_id, update))  # type: ignore[no-any-return]

    def get_experience(self, experience_id: int) -> ExperienceOut:
        """``GET /v1/experiences/{id}``."""
        return self.call(_get_experience(experience_id))  # type: ignore[no-any-return]

    def list_experiences(self, **params: Any) -> ExperienceList:
        """``GET /v1/experiences`` with filters (task_id, source, round, judged, limit, offset)."""
        return self.call(_list_experiences(**params))  # type: ignore[no-any-return]

    def sample(self, req: SampleRequest) -> SampleResponse:
        """``POST /v1/sample``."""
        return self.call(_sample(req))  # type: ignore[no-any-return]

    def stats(self, dataset: str | None = None) -> StatsResponse:
        """``GET /v1/stats``."""
        return self.call(_stats(dataset))  # type: ignore[no-any-return]

    def stats_groups(self, dataset: str | None = None) -> GroupStatsResponse:
        """``GET /v1/stats/groups``: programs per round and source."""
        call = Call("GET", "/v1/stats/groups", params={"dataset": dataset}, model=GroupStatsResponse)
        return self.call(call)  # type: ignore[no-any-return]

    def recent_samples(self, limit: int = 10) -> RecentDrawList:
        """``GET /v1/samples/recent``: the last minibatches the buffer drew."""
        return self.call(Call("GET", "/v1/samples/recent", params={"limit": limit}, model=RecentDrawList))  # type: ignore[no-any-return]


class TrainerClient(SyncClient):
    service = "trainer"

    def create_job(self, job: JobCreate) -> JobOut:
        """``POST /v1/jobs``."""
        return self.call(_create_job(job))  # type: ignore[no-any-return]

    def get_job(self, job_id: str) -> JobOut:
        """``GET /v1/jobs/{id}``."""
        return self.call(_get_job(job_id))  # type: ignore[no-any-return]

    def list_jobs(self) -> JobList:
        """``GET /v1/jobs``."""
        return self.call(_list_jobs())  # type: ignore[no-any-return]

    def cancel_job(self, job_id: str) -> JobOut:
        """``POST /v1/jobs/{id}/cancel``."""
        return self.call(_cancel_job(job_id))  # type: ignore[no-any-return]


# --- async clients ---------------------------------------------------------------------------------


class AsyncGeneratorClient(AsyncClient):
    service = "generator"

    async def generate(self, req: GenerateRequest) -> GenerateResponse:
        """``POST /v1/generate``."""
        return await self.call(_generate(req))  # type: ignore[no-any-return]

    async def set_weights(self, checkpoint: str, *, version: int | None = None, lineage: str | None = None) -> WeightsResponse:
        """``POST /v1/weights`` (``version``/``lineage``: see :class:`WeightsRequest`)."""
        req = WeightsRequest(checkpoint=checkpoint, version=version, lineage=lineage)
        return await self.call(_weights(req))  # type: ignore[no-any-return]


class AsyncJudgeClient(AsyncClient):
    service = "judge"

    async def judge(self, req: JudgeRequest) -> JudgeResponse:
        """``POST /v1/judge``."""
        return await self.call(_judge(req))  # type: ignore[no-any-return]

    async def judge_batch(self, items: list[JudgeRequest]) -> JudgeBatchResponse:
        """``POST /v1/judge/batch``."""
        return await self.call(_judge_batch(JudgeBatchRequest(items=items)))  # type: ignore[no-any-return]


class AsyncBufferClient(AsyncClient):
    service = "buffer"

    async def upsert_tasks(self, tasks: list[TaskIn]) -> TaskUpsertResponse:
        """``POST /v1/tasks``."""
        return await self.call(_upsert_tasks(tasks))  # type: ignore[no-any-return]

    async def get_task(self, task_id: str) -> TaskOut:
        """``GET /v1/tasks/{id}``."""
        return await self.call(_get_task(task_id))  # type: ignore[no-any-return]

    async def list_tasks(
        self, dataset: str | None = None, split: str | None = None, limit: int = 1000, offset: int = 0
    ) -> TaskList:
        """``GET /v1/tasks``."""
        return await self.call(_list_tasks(dataset, split, limit, offset))  # type: ignore[no-any-return]

    async def add_experiences(self, items: list[ExperienceIn]) -> ExperienceCreateResponse:
        """``POST /v1/experiences``."""
        return await self.call(_add_experiences(items))  # type: ignore[no-any-return]

    async def update_experience(self, experience_id: int, update: ExperienceUpdate) -> ExperienceOut:
        """``PATCH /v1/experiences/{id}``."""
        return await self.call(_update_experience(experience_id, update))  # type: ignore[no-any-return]

    async def sample(self, req: SampleRequest) -> SampleResponse:
        """``POST /v1/sample``."""
        return await self.call(_sample(req))  # type: ignore[no-any-return]

    async def stats(self, dataset: str | None = None) -> StatsResponse:
        """``GET /v1/stats``."""
        return await self.call(_stats(dataset))  # type: ignore[no-any-return]


class AsyncTrainerClient(AsyncClient):
    service = "trainer"

    async def create_job(self, job: JobCreate) -> JobOut:
        """``POST /v1/jobs``."""
        return await self.call(_create_job(job))  # type: ignore[no-any-return]

    async def get_job(self, job_id: str) -> JobOut:
        """``GET /v1/jobs/{id}``."""
        return await self.call(_get_job(job_id))  # type: ignore[no-any-return]

    async def list_jobs(self) -> JobList:
        """``GET /v1/jobs``."""
        return await self.call(_list_jobs())  # type: ignore[no-any-return]

    async def cancel_job(self, job_id: str) -> JobOut:
        """``POST /v1/jobs/{id}/cancel``."""
        return await self.call(_cancel_job(job_id))  # type: ignore[no-any-return]
