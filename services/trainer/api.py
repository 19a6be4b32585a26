"""Trainer HTTP routes (``/v1/jobs``); the logic lives in :mod:`.service` and :mod:`.jobs`."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Path, Query, status

from services.common.schemas.trainer import JobCreate, JobList, JobOut, JobStatus

from . import jobs
from .deps import CeleryDep, SessionDep, SettingsDep
from .service import submit_job

router = APIRouter(prefix="/v1", tags=["jobs"])

JobId = Annotated[str, Path(min_length=1, max_length=64, description="Job id.")]
ERRORS: dict[int | str, dict[str, Any]] = {
    404: {"description": "No such job."},
    409: {"description": "The job is already final."},
    422: {"description": "Invalid job."},
    429: {"description": "Too many active jobs."},
    503: {"description": "Broker unreachable."},
}


@router.post("/jobs", status_code=status.HTTP_201_CREATED, response_model=JobOut, responses=ERRORS)
def create_job(job: JobCreate, session: SessionDep, celery: CeleryDep, settings: SettingsDep) -> JobOut:
    """Validate a fine-tuning job, store it as queued and enqueue it for a worker."""
    return submit_job(session=session, celery=celery, settings=settings, job=job)


@router.get("/jobs/{job_id}", response_model=JobOut, responses=ERRORS)
def get_job(job_id: JobId, session: SessionDep) -> JobOut:
    """Status, progress, loss history and checkpoint of one job."""
    return jobs.get_job(session=session, job_id=job_id)


@router.get("/jobs", response_model=JobList, responses=ERRORS)
def list_jobs(
    session: SessionDep,
    status_: Annotated[JobStatus | None, Query(alias="status", description="Only jobs in this state.")] = None,
    limit: Annotated[int, Query(ge=1, le=1000, description="Jobs at most.")] = 100,
    offset: Annotated[int, Query(ge=0, le=1_000_000, description="Jobs to skip.")] = 0,
) -> JobList:
    """Jobs, newest first."""
    return JobList(items=jobs.list_jobs(session=session, status=status_, limit=limit, offset=offset))


@router.post("/jobs/{job_id}/cancel", response_model=JobOut, responses=ERRORS)
def cancel_job(job_id: JobId, session: SessionDep) -> JobOut:
    """Cancel a queued job now, or stop a running one at its next step (it keeps a checkpoint)."""
    return jobs.cancel_job(session=session, job_id=job_id)
