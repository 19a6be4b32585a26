"""The dashboard: ``btp dashboard`` or ``uvicorn services.pipeline.dashboard.app:create_app --factory`` (port 8005).

A static page (``static/``: HTML, CSS and a small SVG chart module, no build step, nothing fetched from
outside the machine) that polls this app's read API every few seconds:

- ``GET /api/runs``: the run folders under ``BTP_DATA_DIR/runs``, most recently active first, with the
  phase running now (``progress.json``);
- ``GET /api/runs/{name}``: held-out pass rate and accuracy per round, training losses, and for an
  embedded run its own buffer (``buffer.sqlite3``, opened read-mostly through the buffer's app);
- ``GET /api/services``: health of each configured service (``BTP_*_URL``), the buffer's stats, programs per
  round and source and last minibatches, and the trainer's jobs with progress, loss and learning rate.

Same auth as every service: with ``BTP_API_TOKEN`` set, the API needs the bearer token (the page reads it
from the URL fragment, ``/#token=...``, which never reaches a server log); the static files are public.
"""

from __future__ import annotations

import threading
from collections.abc import AsyncIterator
from contextlib import ExitStack, asynccontextmanager
from pathlib import Path
from typing import Any

from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import FileResponse
from fastapi.staticfiles import StaticFiles
from starlette.concurrency import run_in_threadpool

from services.common.client import BufferClient
from services.common.errors import NotFoundError
from services.common.http import PUBLIC_PATHS, build_app
from services.common.logging import configure_logging

from ..settings import Settings
from . import data

STATIC = Path(__file__).parent / "static"

router = APIRouter(prefix="/api", tags=["dashboard"])
pages = APIRouter(include_in_schema=False)


@pages.get("/")
def index() -> FileResponse:
    """The page."""
    return FileResponse(STATIC / "index.html", media_type="text/html")


class EmbeddedBuffers:
    """The buffers of embedded run folders, opened once each (in-process buffer app on the run's SQLite)."""

    def __init__(self, settings: Settings) -> None:
        self.settings, self.stack = settings, ExitStack()
        self.open: dict[Path, BufferClient] = {}
        self.lock = threading.Lock()

    def __call__(self, run: Path) -> BufferClient | None:
        from ..connect import embedded_buffer

        with self.lock:
            if run not in self.open:
                self.open[run] = embedded_buffer(self.stack, self.settings, f"sqlite:///{run / 'buffer.sqlite3'}")
            return self.open[run]

    def close(self) -> None:
        """Close every opened buffer."""
        self.stack.close()


def _settings(request: Request) -> Settings:
    return request.app.state.settings  # type: ignore[no-any-return]


@router.get("/runs")
async def runs(request: Request) -> dict[str, Any]:
    """Run folders, most recently active first."""
    return {"runs": await run_in_threadpool(data.list_runs, _settings(request).runs_dir())}


@router.get("/runs/{name}")
async def run(name: str, request: Request) -> dict[str, Any]:
    """One run: per-round curves, losses, phase now, and its embedded buffer."""
    detail = await run_in_threadpool(data.run_detail, _settings(request).runs_dir(), name, request.app.state.buffers)
    if detail is None:
        raise NotFoundError(f"no run named {name!r}", param="name")
    return detail


@router.get("/services")
async def services(request: Request) -> dict[str, Any]:
    """Health and read APIs of the configured services."""
    s = _settings(request)
    urls = {"generator": s.generator_url, "judge": s.judge_url, "buffer": s.buffer_url, "trainer": s.trainer_url}
    return await run_in_threadpool(data.services_overview, urls, s.api_token)


def create_app(settings: Settings | None = None) -> FastAPI:
    """The dashboard app; run folders are read from ``settings.runs_dir()``."""
    settings = settings or Settings()
    configure_logging(settings.log_level)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        try:
            yield
        finally:
            app.state.buffers.close()

    app = build_app(service="dashboard", title="BTP dashboard", routers=[pages, router], api_token=settings.api_token,
                    max_body_bytes=1024 * 1024, lifespan=lifespan,
                    public_paths=PUBLIC_PATHS | {"/", "/static/"})
    app.state.settings = settings
    app.state.buffers = EmbeddedBuffers(settings)
    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    return app
