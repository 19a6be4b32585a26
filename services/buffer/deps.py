"""FastAPI dependencies of the buffer: the runtime (engine, sessions, index) and a per-request session."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Annotated, Any

from fastapi import Depends, Request
from fastapi.concurrency import run_in_threadpool
from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from .db import make_engine, migrate
from .index import PriorityIndex
from .recent import RecentDraws
from .settings import Settings


@dataclass
class BufferRuntime:
    """Long-lived objects of one app: built in the lifespan, closed at shutdown."""

    settings: Settings
    engine: Engine
    sessions: sessionmaker[Session]
    index: PriorityIndex
    recent: RecentDraws = field(default_factory=RecentDraws)

    @classmethod
    def start(cls, settings: Settings) -> BufferRuntime:
        """Connect, migrate (unless disabled) and build an empty index."""
        engine = make_engine(
            settings.resolved_database_url(), pool_size=settings.pool_size, max_overflow=settings.max_overflow
        )
        if settings.migrate_on_start:
            migrate(engine)
        sessions = sessionmaker(engine, expire_on_commit=False, autobegin=True)
        return cls(settings, engine, sessions, PriorityIndex(settings.sample_cache_entries))

    def close(self) -> None:
        """Release the connection pool."""
        self.engine.dispose()


_start_lock = threading.Lock()


def _start_runtime(state: Any) -> BufferRuntime:
    with _start_lock:
        runtime: BufferRuntime | None = getattr(state, "buffer", None)
        if runtime is None:
            runtime = BufferRuntime.start(state.buffer_settings)
            state.buffer = runtime
        return runtime


# The dependencies below are ``async def`` because they only read attributes: FastAPI runs a plain ``def``
# dependency in its thread pool, one thread hop each (several per request, a measurable part of a
# millisecond-scale POST /v1/sample on a loaded machine). Anything that blocks goes to the pool explicitly.


async def get_runtime(request: Request) -> BufferRuntime:
    """The app's runtime; started on first use when the lifespan did not run (TestClient without `with`)."""
    state = request.app.state
    runtime: BufferRuntime | None = getattr(state, "buffer", None)
    if runtime is None:  # connects and migrates: off the event loop
        runtime = await run_in_threadpool(_start_runtime, state)
    return runtime


RuntimeDep = Annotated[BufferRuntime, Depends(get_runtime)]


async def get_settings(runtime: RuntimeDep) -> Settings:
    """The app's settings."""
    return runtime.settings


async def get_index(runtime: RuntimeDep) -> PriorityIndex:
    """The app's priority index."""
    return runtime.index


def get_session(runtime: RuntimeDep) -> Iterator[Session]:
    """One session per request, closed afterwards."""
    session = runtime.sessions()
    try:
        yield session
    finally:
        session.close()


async def get_recent(runtime: RuntimeDep) -> RecentDraws:
    """The app's record of recent minibatches."""
    return runtime.recent


RecentDep = Annotated[RecentDraws, Depends(get_recent)]
SettingsDep = Annotated[Settings, Depends(get_settings)]
IndexDep = Annotated[PriorityIndex, Depends(get_index)]
SessionDep = Annotated[Session, Depends(get_session)]
