"""FastAPI dependencies of the generator."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from services.common.errors import UnavailableError

from .engine import Engine


def get_engine(request: Request) -> Engine:
    """The engine the lifespan put on ``app.state``."""
    engine = getattr(request.app.state, "engine", None)
    if engine is None:
        raise UnavailableError("the generator is starting")
    return engine  # type: ignore[no-any-return]


EngineDep = Annotated[Engine, Depends(get_engine)]
