"""Judge routes: ``POST /v1/judge`` and ``POST /v1/judge/batch``."""

from __future__ import annotations

from fastapi import APIRouter

from services.common.schemas.judge import JudgeBatchRequest, JudgeBatchResponse, JudgeRequest, JudgeResponse

from .deps import JudgeDep

router = APIRouter(prefix="/v1", tags=["judge"])

_ERRORS: dict[int | str, dict[str, str]] = {
    413: {"description": "Request body too large"},
    422: {"description": "Invalid request (error envelope)"},
    429: {"description": "Queue full, retry later (error envelope)"},
    503: {"description": "Sandbox broken (error envelope)"},
}


@router.post("/judge", response_model=JudgeResponse, responses=_ERRORS)
def judge(body: JudgeRequest, judge: JudgeDep) -> JudgeResponse:
    """Run one program against its tests in a sandbox; a failing program is a 200 with its verdict."""
    return judge.judge(body)


@router.post("/judge/batch", response_model=JudgeBatchResponse, responses=_ERRORS)
def judge_batch(body: JudgeBatchRequest, judge: JudgeDep) -> JudgeBatchResponse:
    """Judge many programs in parallel; results in request order."""
    return JudgeBatchResponse(results=judge.judge_many(body.items))
