"""Server-side HTTP plumbing shared by every service.

- :func:`install_error_handlers`: every non-2xx answer uses the error envelope of :mod:`.errors`
  (our errors, Starlette/FastAPI ``HTTPException``, request validation, malformed JSON, and a last
  resort for unexpected exceptions that logs the trace and never sends it).
- :class:`ServiceMiddleware`: pure ASGI middleware for the request id (``X-Request-ID``), bearer-token
  auth on every path but ``/health``, a request-body size limit and Prometheus request metrics.
- :func:`health_router` and :func:`metrics_router`.

What every service refuses here, before any route runs (README, "Limits and rules"):

- A body over ``max_body_bytes`` is a 413 however it arrives: a ``Content-Length`` above the limit is
  refused before reading, and a chunked body (no ``Content-Length``) is counted as it is received and
  refused at the first chunk past the limit, so at most the limit is ever held in memory. The app never
  sees a truncated body: reading it raises, and whatever the app then answers is replaced by the 413.
- A path or query string with a NUL character (``%00``) is a 422: no database stores it, and no id,
  name or filter contains it.
- Every body that does not parse as JSON is a 400 ``invalid_json``: malformed text, invalid UTF-8, nesting
  deeper than the parser's recursion limit, and integers longer than Python's 4300-digit limit.
- ``/health`` answers without a token, but then only ``{"status", "service"}``: the service's details
  (counters, sandbox privileges, queue) need the bearer token when ``BTP_API_TOKEN`` is set.
- :func:`build_app`: one call that wires the above into a FastAPI app.
"""

from __future__ import annotations

import contextlib
import hmac
import json
import logging
import time
from collections.abc import Callable, Mapping
from contextlib import AbstractAsyncContextManager
from typing import Any

from fastapi import APIRouter, FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .errors import (
    AuthenticationError,
    BTPError,
    InvalidJSONError,
    PayloadTooLargeError,
    ValidationError,
    error_for_status,
)
from .logging import REQUEST_ID_HEADER, new_request_id, reset_request_id, set_request_id
from .schemas.types import UNSTORABLE

log = logging.getLogger(__name__)

PUBLIC_PATHS = frozenset({"/health"})

ErrorFormat = Callable[[str, BTPError], "tuple[int, dict[str, Any]] | None"]
"""An app's own error rendering for some paths: (path, error) -> (status, body), or None for the envelope."""


def error_response(
    exc: BTPError, headers: Mapping[str, str] | None = None, *, path: str = "", error_format: ErrorFormat | None = None,
) -> JSONResponse:
    """Render an exception as the error envelope (or as ``error_format`` renders it for ``path``)."""
    rendered = error_format(path, exc) if error_format is not None else None
    status, body = rendered if rendered is not None else (exc.status, exc.to_envelope())
    return JSONResponse(body, status_code=status, headers=dict(headers or {}))


def is_public(path: str, public: frozenset[str]) -> bool:
    """Whether ``path`` needs no token: listed exactly, or under a listed prefix ending in ``/`` (not ``/`` itself)."""
    return path in public or any(len(p) > 1 and p.endswith("/") and path.startswith(p) for p in public)


def _format(request: Request) -> ErrorFormat | None:
    return getattr(request.app.state, "error_format", None)


def _loc_to_param(loc: tuple[Any, ...] | list[Any]) -> str | None:
    parts = [str(p) for p in loc if p not in ("body", "query", "path", "header")]
    return ".".join(parts) or None


def install_error_handlers(app: FastAPI) -> None:
    """Register envelope handlers for every error kind."""

    async def on_btp(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, BTPError)
        if exc.status >= 500:
            log.warning("%s: %s", type(exc).__name__, exc.message)
        headers = {"Retry-After": "1"} if exc.status in (429, 503) else None
        return error_response(exc, headers, path=request.url.path, error_format=_format(request))

    async def on_http(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, StarletteHTTPException)
        if isinstance(exc, BodyTooLarge):
            return error_response(exc.error)
        if exc.status_code == 400 and isinstance(exc.__cause__, (RecursionError, ValueError)):
            # FastAPI turns every parser failure but JSONDecodeError (nesting past the recursion limit,
            # an integer past 4300 digits, invalid UTF-8) into a bare 400: they are all unparsable JSON.
            reason = "nested too deeply" if isinstance(exc.__cause__, RecursionError) else str(exc.__cause__)
            return error_response(InvalidJSONError(f"request body is not valid JSON: {reason}"[:300], param="body"))
        cls = error_for_status(exc.status_code)
        detail = exc.detail if isinstance(exc.detail, str) else json.dumps(exc.detail)
        return error_response(cls(detail, status_code=exc.status_code), getattr(exc, "headers", None),
                              path=request.url.path, error_format=_format(request))

    async def on_validation(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, RequestValidationError)
        errors = list(exc.errors())
        path, fmt = request.url.path, _format(request)
        if errors and errors[0].get("type") == "json_invalid":
            return error_response(InvalidJSONError("request body is not valid JSON", param="body"), path=path, error_format=fmt)
        first = errors[0] if errors else {}
        loc = list(first.get("loc", ()))
        if first.get("type") == UNSTORABLE:  # raised by the model: the field is in the context
            loc.append(first.get("ctx", {}).get("where", ""))
        param = _loc_to_param(loc)
        msg = str(first.get("msg", "invalid request"))
        if first.get("type") == UNSTORABLE:
            msg = f"{first.get('ctx', {}).get('reason', 'unstorable')}, which cannot be stored"
        text = f"{param}: {msg}" if param else msg
        if len(errors) > 1:
            text += f" (and {len(errors) - 1} more)"
        return error_response(ValidationError(text, param=param), path=path, error_format=fmt)

    async def on_unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error")
        return error_response(BTPError(f"internal error: {type(exc).__name__}"), path=request.url.path,
                              error_format=_format(request))

    app.add_exception_handler(BTPError, on_btp)
    app.add_exception_handler(StarletteHTTPException, on_http)
    app.add_exception_handler(RequestValidationError, on_validation)
    app.add_exception_handler(Exception, on_unexpected)


class BodyTooLarge(HTTPException):
    """Raised from ``receive`` when a body passes the limit; FastAPI's HTTPException, so its body parser
    re-raises it as is."""

    def __init__(self, limit: int) -> None:
        self.error = PayloadTooLargeError(f"request body over {limit} bytes", param="body")
        super().__init__(status_code=413, detail=self.error.message)


def bearer_ok(headers: Mapping[str, str], api_token: str | None) -> bool:
    """Whether the request may use the service: no token configured, or the right bearer token."""
    if not api_token:
        return True
    auth = headers.get("authorization", "")
    return hmac.compare_digest(auth.encode(), f"Bearer {api_token}".encode())


def _has_nul(scope: Scope) -> str | None:
    """``path`` or ``query`` when that part of the URL holds a NUL character (percent-encoded or not)."""
    if "\x00" in scope.get("path", ""):
        return "path"
    query = bytes(scope.get("query_string", b"")).lower()
    if b"%00" in query or b"\x00" in query:
        return "query"
    return None


class ServiceMiddleware:
    """Request id, auth, body-size limit and request metrics, as one pure ASGI middleware."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        service: str,
        registry: CollectorRegistry,
        api_token: str | None = None,
        max_body_bytes: int = 64 * 1024 * 1024,
        error_format: ErrorFormat | None = None,
        public_paths: frozenset[str] = PUBLIC_PATHS,
    ) -> None:
        self.app = app
        self.error_format = error_format
        self.public_paths = public_paths
        self.service = service
        self.api_token = api_token
        self.max_body_bytes = max_body_bytes
        self.requests = Counter(
            "btp_http_requests", "HTTP requests served", ["service", "method", "route", "status"],
            registry=registry,
        )
        self.latency = Histogram(
            "btp_http_request_seconds", "HTTP request latency", ["service", "method", "route"],
            registry=registry,
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
        rid = headers.get(REQUEST_ID_HEADER.lower()) or new_request_id()
        rid = rid[:128]
        token = set_request_id(rid)
        start = time.perf_counter()
        status_holder = {"status": 500}

        async def send_wrapper(message: Message) -> None:
            if message["type"] == "http.response.start":
                status_holder["status"] = message["status"]
                message.setdefault("headers", [])
                message["headers"] = [*list(message["headers"]), (b"x-request-id", rid.encode("latin-1"))]
            await send(message)

        try:
            path = scope.get("path", "")
            if not is_public(path, self.public_paths) and not bearer_ok(headers, self.api_token):
                resp = error_response(
                    AuthenticationError("missing or invalid bearer token", param="Authorization"),
                    {"WWW-Authenticate": "Bearer"}, path=path, error_format=self.error_format,
                )
                await resp(scope, receive, send_wrapper)
                return
            length = headers.get("content-length")
            if length is not None and length.isdigit() and int(length) > self.max_body_bytes:
                resp = error_response(
                    PayloadTooLargeError(f"request body over {self.max_body_bytes} bytes", param="body"),
                    path=path, error_format=self.error_format,
                )
                await resp(scope, receive, send_wrapper)
                return
            part = _has_nul(scope)
            if part is not None:
                resp = error_response(
                    ValidationError(f"{part} contains a NUL character, which no id or name may hold", param=part)
                )
                await resp(scope, receive, send_wrapper)
                return
            await self._call_limited(scope, receive, send_wrapper)
        finally:
            route = scope.get("route")
            route_path = getattr(route, "path", None) or "unmatched"
            method = scope.get("method", "GET")
            self.requests.labels(self.service, method, route_path, str(status_holder["status"])).inc()
            self.latency.labels(self.service, method, route_path).observe(time.perf_counter() - start)
            reset_request_id(token)


    async def _call_limited(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Run the app with a ``receive`` that counts body bytes and stops at the limit (chunked bodies)."""
        limit = self.max_body_bytes
        state = {"received": 0, "over": False, "started": False}

        async def limited_receive() -> Message:
            if state["over"]:  # the app asked again after the refusal: the client is as good as gone
                return {"type": "http.disconnect"}
            message = await receive()
            if message["type"] == "http.request":
                state["received"] += len(message.get("body", b""))
                if state["received"] > limit:
                    state["over"] = True
                    raise BodyTooLarge(limit)
            return message

        async def guarded_send(message: Message) -> None:
            if not state["over"]:
                if message["type"] == "http.response.start":
                    state["started"] = True
                await send(message)

        with contextlib.suppress(BodyTooLarge):  # a route read the body outside FastAPI: answered below
            await self.app(scope, limited_receive, guarded_send)
        if state["over"] and not state["started"]:
            # Whatever the app made of the refused body (FastAPI's 413, a handler's own error), the
            # client gets the 413; nothing the app sent after reading too much went out.
            state["over"] = False
            await error_response(BodyTooLarge(limit).error)(scope, receive, send)


def health_router(details: Callable[[Request], dict[str, Any]] | None = None) -> APIRouter:
    """``GET /health``: 200 ``{"status": "ok", ...}`` when ready."""
    router = APIRouter(tags=["ops"])

    @router.get("/health", summary="Liveness and readiness")
    def health(request: Request) -> dict[str, Any]:
        """Service health and identity."""
        body: dict[str, Any] = {"status": "ok", "service": request.app.state.service_name}
        # Without the token a caller learns only that the service is up: counters, sandbox privileges
        # and queue depth describe the host and its load, so they need the bearer token when one is set.
        authorized = bearer_ok(request.headers, getattr(request.app.state, "api_token", None))
        if details is not None and authorized:
            body.update(details(request))
        return body

    return router


def metrics_router() -> APIRouter:
    """``GET /metrics``: Prometheus text exposition of this app's registry."""
    router = APIRouter(tags=["ops"])

    @router.get("/metrics", summary="Prometheus metrics", response_class=Response)
    def metrics(request: Request) -> Response:
        """Prometheus metrics of this service."""
        data = generate_latest(request.app.state.metrics_registry)
        return Response(content=data, media_type=CONTENT_TYPE_LATEST)

    return router


def build_app(
    *,
    service: str,
    title: str,
    routers: list[APIRouter],
    api_token: str | None,
    max_body_bytes: int,
    lifespan: Callable[[FastAPI], AbstractAsyncContextManager[None]] | None = None,
    health_details: Callable[[Request], dict[str, Any]] | None = None,
    version: str = "0.1.0",
    error_format: ErrorFormat | None = None,
    public_paths: frozenset[str] = PUBLIC_PATHS,
) -> FastAPI:
    """A FastAPI app with the envelope, middleware, health and metrics of every BTP service.

    ``error_format`` renders errors differently on some paths (the generator's OpenAI-compatible routes).
    """
    app = FastAPI(title=title, version=version, lifespan=lifespan)
    registry = CollectorRegistry()
    app.state.service_name = service
    app.state.error_format = error_format
    app.state.metrics_registry = registry
    app.state.api_token = api_token
    install_error_handlers(app)
    app.add_middleware(
        ServiceMiddleware,
        service=service,
        registry=registry,
        api_token=api_token,
        max_body_bytes=max_body_bytes,
        error_format=error_format,
        public_paths=public_paths,
    )
    app.include_router(health_router(health_details))
    app.include_router(metrics_router())
    for router in routers:
        app.include_router(router)
    return app
