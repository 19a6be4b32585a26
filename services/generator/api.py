"""Generator routes: ``POST /v1/generate`` and ``POST /v1/weights``."""

from __future__ import annotations

from fastapi import APIRouter, Request

from services.common.schemas.generator import (
    GenerateRequest,
    GenerateResponse,
    WeightsRequest,
    WeightsResponse,
)
from services.models import allowed_model_ref

from .deps import EngineDep

ERRORS: dict[int | str, dict[str, str]] = {
    401: {"description": "Missing or invalid bearer token"},
    404: {"description": "Unknown model or checkpoint"},
    413: {"description": "Request body too large"},
    422: {"description": "Invalid request or over the work limits"},
    429: {"description": "Generation queue full"},
    503: {"description": "Model not loaded yet"},
}

router = APIRouter(prefix="/v1", tags=["generator"])


@router.post("/generate", response_model=GenerateResponse, responses=ERRORS)  # type: ignore[arg-type]
async def generate(req: GenerateRequest, engine: EngineDep) -> GenerateResponse:
    """Complete prompts: top-k programs by beam search (or greedy / sampled) with exact log-probabilities."""
    return await engine.generate(req)


@router.post("/weights", response_model=WeightsResponse, responses=ERRORS)  # type: ignore[arg-type]
async def set_weights(req: WeightsRequest, engine: EngineDep, request: Request) -> WeightsResponse:
    """Swap the served weights (known name, or a folder under the model roots) without a restart."""
    roots = request.app.state.settings.allowed_model_roots()
    return await engine.swap_weights(allowed_model_ref(req.checkpoint, roots, param="checkpoint"), req.version,
                                     req.lineage)
