"""What the API does beyond plain records: validate a job, store it, enqueue it by task name."""

from __future__ import annotations

import logging

from celery import Celery
from sqlalchemy.orm import Session

from services.common.errors import OverloadedError, UnavailableError, ValidationError
from services.common.schemas.trainer import JobCreate, JobOut
from services.common.settings import outbound_url
from services.models import allowed_model_ref, check_model_name

from . import jobs
from .settings import TRAIN_TASK, Settings

log = logging.getLogger(__name__)


def checked_job(job: JobCreate, settings: Settings) -> JobCreate:
    """The job as the worker may run it, or a 422: its model a known name or a folder under the model
    roots (resolved), its URLs only those the service is configured with. The API checks at submission,
    the worker again before it loads or calls anything (its own settings, the paths as they are then)."""
    model = allowed_model_ref(job.model, settings.allowed_model_roots(), param="model")
    check_model_name(model)
    for name, configured in (("generator_url", settings.generator_url), ("buffer_url", settings.buffer_url)):
        outbound_url(getattr(job, name), configured=configured, allowed=settings.allowed_urls, param=name)
    return job.model_copy(update={"model": model})


def validate_job(job: JobCreate, settings: Settings) -> None:
    """4xx for what the API can know without loading the model or asking the buffer."""
    checked_job(job, settings)
    if job.micro_batch_size is not None and job.micro_batch_size > job.batch_size:
        raise ValidationError(
            f"micro_batch_size ({job.micro_batch_size}) must not exceed batch_size ({job.batch_size})",
            param="micro_batch_size",
        )
    if job.warmup_steps > job.steps:
        raise ValidationError(
            f"warmup_steps ({job.warmup_steps}) must not exceed steps ({job.steps})", param="warmup_steps"
        )


def submit_job(*, session: Session, celery: Celery, settings: Settings, job: JobCreate) -> JobOut:
    """Validate, store as ``queued``, and enqueue ``btp.train`` with the job id."""
    validate_job(job, settings)
    if jobs.count_active(session=session) >= settings.max_active_jobs:
        raise OverloadedError(f"{settings.max_active_jobs} jobs are already queued or running; retry later")
    out = jobs.create_job(session=session, job=job)
    try:
        # Job state lives in the database, so the API never waits on Celery's result store; a broker that
        # is down answers 503 within a second instead of after Celery's long reconnect loop.
        celery.send_task(
            TRAIN_TASK, args=[out.id], task_id=out.id, queue=settings.queue, ignore_result=True,
            retry_policy={"max_retries": 2, "interval_start": 0, "interval_step": 0.2, "interval_max": 0.5},
        )
    except Exception as exc:
        log.error("cannot enqueue job %s: %s", out.id, exc)
        jobs.delete_job(session=session, job_id=out.id)
        raise UnavailableError(f"the task broker is unreachable: {type(exc).__name__}") from exc
    return out
