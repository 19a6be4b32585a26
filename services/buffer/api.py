"""Buffer routes (ARCHITECTURE.md "Buffer"): routes only, the work is in service.py and replay.py."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Query, Request, Response
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel
from pydantic import ValidationError as PydanticValidationError

from services.common.errors import ValidationError
from services.common.schemas.buffer import (
    ExperienceCreateRequest,
    ExperienceCreateResponse,
    ExperienceList,
    ExperienceOut,
    ExperienceUpdate,
    GroupStatsResponse,
    RecentDrawList,
    SampleRequest,
    SampleResponse,
    StatsResponse,
    TaskList,
    TaskOut,
    TaskUpsertRequest,
    TaskUpsertResponse,
)

from . import replay, service
from .deps import IndexDep, RecentDep, RuntimeDep, SessionDep, SettingsDep

router = APIRouter(prefix="/v1", tags=["buffer"])

MAX_ID = 2**63 - 1
ExperienceId = Annotated[int, Path(ge=1, le=MAX_ID, description="Experience id.")]
Limit = Annotated[int, Query(ge=1, le=100_000, description="Page size (at most the configured maximum).")]
Offset = Annotated[int, Query(ge=0, le=MAX_ID // 2, description="Rows to skip.")]
Text = Annotated[str | None, Query(min_length=1, max_length=512)]


def _limit(limit: int, settings: SettingsDep) -> int:
    return min(limit, settings.max_list_limit)


@router.post("/tasks", response_model=TaskUpsertResponse)
def upsert_tasks(body: TaskUpsertRequest, session: SessionDep, settings: SettingsDep) -> TaskUpsertResponse:
    """Insert or update tasks by id."""
    return service.upsert_tasks(session=session, request=body, settings=settings)


@router.get("/tasks", response_model=TaskList)
def list_tasks(
    session: SessionDep,
    settings: SettingsDep,
    dataset: Text = None,
    split: Text = None,
    limit: Limit = 100,
    offset: Offset = 0,
) -> TaskList:
    """List tasks, filtered by dataset and split."""
    return service.list_tasks(
        session=session, dataset=dataset, split=split, limit=_limit(limit, settings), offset=offset
    )


@router.get("/tasks/{task_id:path}", response_model=TaskOut, responses={404: {"description": "No such task"}})
def get_task(task_id: str, session: SessionDep) -> TaskOut:
    """One task by id (ids may contain '/', percent-encoded or not)."""
    return service.get_task(session=session, task_id=task_id)


def _inline_schema(model: type[BaseModel]) -> dict[str, Any]:
    """The model's JSON schema with its $defs inlined (for an openapi_extra request body)."""
    schema = model.model_json_schema()
    defs = schema.pop("$defs", {})

    def resolve(node: Any) -> Any:
        if isinstance(node, dict):
            ref = node.get("$ref")
            if isinstance(ref, str) and ref.startswith("#/$defs/"):
                return resolve(defs[ref.removeprefix("#/$defs/")])
            return {k: resolve(v) for k, v in node.items()}
        if isinstance(node, list):
            return [resolve(v) for v in node]
        return node

    return dict(resolve(schema))


async def experience_batch(request: Request) -> ExperienceCreateRequest:
    """The POST /v1/experiences body, validated straight from the JSON bytes.

    pydantic's JSON mode is about 5x faster than FastAPI's json.loads + Python-mode validation on a
    1,000-item batch; errors keep the same envelope (422, or 400 for malformed JSON).
    """
    content_type = request.headers.get("content-type", "application/json")
    if "json" not in content_type.lower():
        raise ValidationError("the body must be application/json", param="body")
    try:
        return ExperienceCreateRequest.model_validate_json(await request.body())
    except PydanticValidationError as exc:
        raise RequestValidationError(exc.errors(include_url=False)) from None  # ctx names unstorable fields


@router.post(
    "/experiences",
    response_model=ExperienceCreateResponse,
    responses={413: {"description": "A program over the size limit"}, 422: {"description": "Bad item or unknown task"}},
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": _inline_schema(ExperienceCreateRequest)}},
        }
    },
)
def create_experiences(
    body: Annotated[ExperienceCreateRequest, Depends(experience_batch)], session: SessionDep, settings: SettingsDep
) -> ExperienceCreateResponse:
    """Bulk insert, idempotent on (task_id, program, source); one transaction."""
    return service.create_experiences(session=session, request=body, settings=settings)


@router.get("/experiences", response_model=ExperienceList)
def list_experiences(
    session: SessionDep,
    settings: SettingsDep,
    task_id: Text = None,
    source: Text = None,
    round: Annotated[int | None, Query(ge=0, le=1_000_000)] = None,
    judged: bool | None = None,
    dataset: Text = None,
    split: Text = None,
    limit: Limit = 100,
    offset: Offset = 0,
) -> ExperienceList:
    """List experiences with filters."""
    return service.list_experiences(
        session=session,
        task_id=task_id,
        source=source,
        round_=round,
        judged=judged,
        dataset=dataset,
        split=split,
        limit=_limit(limit, settings),
        offset=offset,
    )


@router.get("/experiences/{experience_id}", response_model=ExperienceOut, responses={404: {"description": "No such experience"}})
def get_experience(experience_id: ExperienceId, session: SessionDep) -> ExperienceOut:
    """One experience by id."""
    return service.get_experience(session=session, experience_id=experience_id)


@router.patch("/experiences/{experience_id}", response_model=ExperienceOut, responses={404: {"description": "No such experience"}})
def update_experience(experience_id: ExperienceId, body: ExperienceUpdate, session: SessionDep) -> ExperienceOut:
    """Set the pass rate (and judge details) of one experience: the testing phase."""
    return service.update_experience(session=session, experience_id=experience_id, update_=body)


@router.post("/sample", response_model=SampleResponse)
def sample(body: SampleRequest, runtime: RuntimeDep, index: IndexDep, settings: SettingsDep, recent: RecentDep) -> Response:
    """Prioritized minibatch with replacement (Eq. 6-8)."""
    # The session is opened here, in the endpoint's worker thread, not through SessionDep: a generator
    # dependency costs two more thread-pool hops (enter and exit) on the buffer's hottest request.
    with runtime.sessions() as session:
        result = replay.sample(session=session, index=index, request=body, settings=settings)
    recent.record(body, result)
    # already a validated SampleResponse: serialise once instead of re-validating n items
    return Response(result.model_dump_json(), media_type="application/json")


@router.get("/stats", response_model=StatsResponse)
def stats(session: SessionDep, index: IndexDep, settings: SettingsDep, dataset: Text = None) -> StatsResponse:
    """Counts, pass-rate and P2Value distributions per dataset."""
    return replay.stats(session=session, index=index, dataset=dataset, settings=settings)


@router.get("/stats/groups", response_model=GroupStatsResponse)
def stats_groups(session: SessionDep, dataset: Text = None) -> GroupStatsResponse:
    """Programs per round and source: counts, judged, mean pass rate."""
    return service.experience_groups(session=session, dataset=dataset)


@router.get("/samples/recent", response_model=RecentDrawList)
def recent_samples(
    recent: RecentDep, limit: Annotated[int, Query(ge=1, le=32, description="Minibatches.")] = 10
) -> RecentDrawList:
    """The last minibatches this process drew (ids, P2Values, pass rates), oldest first."""
    return RecentDrawList(items=recent.last(limit))
