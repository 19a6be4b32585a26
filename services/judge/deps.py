"""FastAPI dependencies of the judge: the engine that app.py's lifespan put on ``app.state``."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from services.common.errors import UnavailableError

from .judging import Judge


def get_judge(request: Request) -> Judge:
    """The judge engine (503 if the sandbox pool is not running)."""
    judge: Judge | None = getattr(request.app.state, "judge", None)
    if judge is None:
        raise UnavailableError("judge sandbox pool is not running")
    return judge


JudgeDep = Annotated[Judge, Depends(get_judge)]
