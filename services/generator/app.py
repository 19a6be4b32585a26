"""Generator service app: ``uvicorn services.generator.app:create_app --factory`` (port 8001)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from services.common.errors import BTPError
from services.common.http import build_app
from services.common.logging import configure_logging
from services.common.startup import StartupError, process_settings

from .api import router
from .engine import Engine
from .openai_api import openai_error
from .openai_api import router as openai_router
from .settings import Settings


class _EngineCollector(Collector):
    """Exposes the engine's counters on /metrics."""

    def __init__(self, app: FastAPI) -> None:
        self.app = app

    def collect(self) -> Iterator[Any]:
        engine: Engine | None = getattr(self.app.state, "engine", None)
        if engine is None:
            return
        for key, value in engine.stats.items():
            c = CounterMetricFamily(f"btp_generator_{key}", f"generator {key.replace('_', ' ')}")
            c.add_metric([], float(value))
            yield c
        g = GaugeMetricFamily("btp_generator_queue_depth", "requests waiting or running")
        g.add_metric([], float(engine.health()["queue"]))
        yield g


def check_dependencies(settings: Settings) -> None:
    """The model exists (known name with its wheel, or a local folder / .gguf file) and the device is there;
    :class:`~services.common.startup.StartupError` otherwise. Loads nothing."""
    from services import models

    try:
        models.check_available(settings.model, settings.resolved_model_cache_dir())
    except BTPError as exc:
        raise StartupError(exc.message, "BTP_GENERATOR_MODEL") from exc
    try:
        models.pick_device(settings.device)
    except BTPError as exc:
        raise StartupError(exc.message, "BTP_GENERATOR_DEVICE") from exc


def create_app(settings: Settings | None = None) -> FastAPI:
    """Build the generator app; the model loads in the lifespan, not at import. Without ``settings`` (a
    starting process) they come from the environment and a missing model or device ends the process with
    one line."""
    settings = settings or process_settings(Settings, "generator", check_dependencies)
    configure_logging(settings.log_level)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        engine = Engine(settings)
        await engine.start()
        app.state.engine = engine
        try:
            yield
        finally:
            app.state.engine = None
            await engine.stop()

    def health(request: Request) -> dict[str, Any]:
        engine: Engine | None = getattr(request.app.state, "engine", None)
        return engine.health() if engine is not None else {}

    app = build_app(
        service="generator",
        title="BTP generator",
        routers=[router, openai_router],
        api_token=settings.api_token,
        max_body_bytes=settings.max_body_bytes,
        lifespan=lifespan,
        health_details=health,
        error_format=openai_error,
    )
    app.state.settings = settings
    app.state.engine = None
    app.state.metrics_registry.register(_EngineCollector(app))
    return app
