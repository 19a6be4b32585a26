"""The buffer's FastAPI app: ``create_app`` (also ``uvicorn services.buffer.app:create_app --factory``).

Nothing heavy happens at import. The lifespan connects to the database, migrates it to head and puts a
:class:`~services.buffer.deps.BufferRuntime` (engine, session factory, priority index) on ``app.state``.
Embedded use: ``TestClient(create_app(Settings(database_url=...)))``; the runtime also starts lazily on
the first request if the lifespan did not run.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request

from services.common.http import build_app
from services.common.logging import configure_logging
from services.common.startup import check_database, process_settings

from .api import router
from .db import normalize_url
from .deps import BufferRuntime
from .settings import Settings


def check_dependencies(settings: Settings) -> None:
    """The database answers (:class:`~services.common.startup.StartupError` otherwise)."""
    check_database(normalize_url(settings.resolved_database_url()))


def create_app(settings: Settings | None = None) -> FastAPI:
    """Build the buffer app; without ``settings`` (a starting process) they come from the environment and
    an unreachable database ends the process with one line."""
    settings = settings or process_settings(Settings, "buffer", check_dependencies)
    configure_logging(settings.log_level)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if getattr(app.state, "buffer", None) is None:
            app.state.buffer = BufferRuntime.start(settings)
        try:
            yield
        finally:
            runtime: BufferRuntime | None = getattr(app.state, "buffer", None)
            if runtime is not None:
                runtime.close()
                app.state.buffer = None

    def health(request: Request) -> dict[str, Any]:
        runtime: BufferRuntime | None = getattr(request.app.state, "buffer", None)
        return {"database": runtime.engine.dialect.name if runtime else "not started"}

    app = build_app(
        service="buffer",
        title="BTP buffer",
        routers=[router],
        api_token=settings.api_token,
        max_body_bytes=settings.max_body_bytes,
        lifespan=lifespan,
        health_details=health,
    )
    app.state.buffer_settings = settings
    app.state.buffer = None
    return app
