"""Server-side HTTP plumbing shared by every service.

- :func:`install_error_handlers`: every non-2xx answer uses the error envelope of :mod:`.errors`
  (our errors, Starlette/FastAPI ``HTTPException``, request validation, malformed JSON, and a last
  resort for unexpected exceptions that logs the trace and never sends it).
- :class:`ServiceMiddleware`: pure ASGI middleware for the request id (``X-Request-ID``), bearer-token
  auth on every path but ``/health``, a request-body size limit and Prometheus request metrics.
- :func:`health_router` and :func:`metrics_router`.
- :func:`build_app`: one call that wires the above into a FastAPI app.
"""

from __future__ import annotations

import hmac
import json
import logging
import time
from collections.abc import Callable, Mapping
from contextlib import AbstractAsyncContextManager
from typing import Any

from fastapi import APIRouter, FastAPI, Request
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
        param = _loc_to_param(first.get("loc", ()))
        msg = str(first.get("msg", "invalid request"))
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
            if self.api_token and not is_public(path, self.public_paths):
                auth = headers.get("authorization", "")
                expected = f"Bearer {self.api_token}"
                if not hmac.compare_digest(auth.encode(), expected.encode()):
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
            await self.app(scope, receive, send_wrapper)
        finally:
            route = scope.get("route")
            route_path = getattr(route, "path", None) or "unmatched"
            method = scope.get("method", "GET")
            self.requests.labels(self.service, method, route_path, str(status_holder["status"])).inc()
            self.latency.labels(self.service, method, route_path).observe(time.perf_counter() - start)
            reset_request_id(token)


def health_router(details: Callable[[Request], dict[str, Any]] | None = None) -> APIRouter:
    """``GET /health``: 200 ``{"status": "ok", ...}`` when ready."""
    router = APIRouter(tags=["ops"])

    @router.get("/health", summary="Liveness and readiness")
    def health(request: Request) -> dict[str, Any]:
        """Service health and identity."""
        body: dict[str, Any] = {"status": "ok", "service": request.app.state.service_name}
        if details is not None:
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
