"""Trainer API app: ``uvicorn services.trainer.app:create_app --factory --port 8004``.

The API stores jobs and enqueues them by task name; it never imports torch or the training code.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request

from services.common.http import build_app
from services.common.logging import configure_logging
from services.common.startup import check_database, check_redis, process_settings

from .api import router
from .celery_app import make_celery
from .db import make_engine, make_sessionmaker
from .settings import Settings


def check_dependencies(settings: Settings) -> None:
    """The job database and the Redis broker answer (:class:`~services.common.startup.StartupError`
    otherwise)."""
    check_database(settings.resolved_database_url())
    check_redis(settings.redis_url)


def create_app(settings: Settings | None = None) -> FastAPI:
    """The trainer HTTP API (port 8004); without ``settings`` (a starting process) they come from the
    environment and an unreachable database or Redis ends the process with one line."""
    settings = settings or process_settings(Settings, "trainer", check_dependencies)
    configure_logging(settings.log_level)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        engine = make_engine(settings.resolved_database_url())
        app.state.engine = engine
        app.state.sessionmaker = make_sessionmaker(engine)
        app.state.celery = make_celery(settings)
        try:
            yield
        finally:
            app.state.celery.close()
            engine.dispose()

    def health(request: Request) -> dict[str, Any]:
        return {"queue": settings.queue}

    app = build_app(
        service="trainer",
        title="BTP trainer",
        routers=[router],
        api_token=settings.api_token,
        max_body_bytes=settings.max_body_bytes,
        lifespan=lifespan,
        health_details=health,
    )
    app.state.settings = settings
    return app
