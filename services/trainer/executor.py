"""Run one job by id: what the Celery task calls (no Celery import here).

It turns the job row into a :func:`.training.run_job` call, writes progress to the job table, and ends
the job ``succeeded``, ``failed`` (with a clear message) or ``cancelled``. Errors never escape to Celery:
the worker acknowledges the task and serves the next one. A job already in a final state (a duplicate
delivery) is skipped; a ``running`` job delivered again (its worker died) resumes from its last
checkpoint.
"""

from __future__ import annotations

import logging
import traceback
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy.orm import sessionmaker

from services.common.client import BufferClient, GeneratorClient
from services.common.errors import BTPError, ValidationError
from services.common.schemas.trainer import JobCreate, LossPoint
from services.common.settings import outbound_url
from services.common.spread import generator_client

from . import jobs
from .db import make_engine, make_sessionmaker
from .service import checked_job
from .settings import Settings

log = logging.getLogger(__name__)


@contextmanager
def buffer_client(job: JobCreate, settings: Settings) -> Iterator[BufferClient]:
    """A client of the buffer service the settings (``BTP_BUFFER_URL``) name, or the job's ``buffer_url``
    when that is the same service or on ``BTP_ALLOWED_URLS`` (else a 422: a job never redirects a worker).

    The worker never opens a buffer of its own (that is the CLI's embedded mode): without a URL the job
    fails with a message that says what to set.
    """
    url = outbound_url(job.buffer_url, configured=settings.buffer_url, allowed=settings.allowed_urls,
                       param="buffer_url")  # fmt: skip
    if not url:
        raise ValidationError(
            "no buffer service is known: set BTP_BUFFER_URL for the worker or buffer_url on the job",
            param="buffer_url",
        )
    with BufferClient(url, token=settings.api_token, retry_s=settings.buffer_retry_s) as client:
        yield client


def publish(checkpoint: Path, *, generator: GeneratorClient) -> tuple[bool, str | None]:
    """Ask the generator to serve ``checkpoint``; returns (published, error message)."""
    try:
        generator.set_weights(str(checkpoint))
    except Exception as exc:  # any failure is reported on the job, which still succeeded
        return False, f"training succeeded but publishing to the generator failed: {exc}"
    return True, None


def publish_for_job(job: JobCreate, settings: Settings, checkpoint: Path) -> tuple[bool, str | None]:
    """Publish to the generator the settings name (or the job, when that one is allowed)."""
    try:
        url = outbound_url(job.generator_url, configured=settings.generator_url, allowed=settings.allowed_urls,
                           param="generator_url")  # fmt: skip
    except BTPError as exc:
        return False, f"training succeeded but the checkpoint was not published: {exc.message}"
    if not url:
        return False, (
            "training succeeded but publish_to_generator is set and no generator URL is known "
            "(job.generator_url or BTP_GENERATOR_URL)"
        )
    # several comma-separated URLs (one replica per GPU): the checkpoint is published to every one
    with generator_client(url, token=settings.api_token, timeout=settings.publish_timeout_s) as gen:
        return publish(checkpoint, generator=gen)


def job_dir(settings: Settings, job_id: str) -> Path:
    """``<checkpoints>/<job>``: the job's step-N checkpoints and its TensorBoard folder."""
    return settings.resolved_checkpoints_dir() / job_id


def execute_job(job_id: str, settings: Settings, *, session_factory: sessionmaker[Any] | None = None) -> str:
    """Run job ``job_id`` to a final state; returns that state (or ``skipped``)."""
    if session_factory is None:
        session_factory = make_sessionmaker(make_engine(settings.resolved_database_url()))
    out_dir = job_dir(settings, job_id)
    with session_factory() as session:
        try:
            started = jobs.start_attempt(
                session=session, job_id=job_id, tensorboard_dir=str(out_dir / "tensorboard")
            )
        except BTPError as exc:
            log.warning("task for job %s: %s", job_id, exc.message)
            return "skipped"
        if started is None:
            log.info("job %s is already final; duplicate delivery skipped", job_id)
            return "skipped"
        try:
            job = checked_job(started.config, settings)
        except BTPError as exc:  # the paths or the settings changed since submission
            jobs.finish(session=session, job_id=job_id, status="failed", error=exc.message)
            log.warning("job %s refused: %s", job_id, exc.message)
            return "failed"

        def on_step(point: LossPoint) -> None:
            jobs.record_step(
                session=session, job_id=job_id, step=point.step, loss=point.loss,
                tokens_per_s=point.tokens_per_s, lr=point.lr, at=point.at, experience_ids=point.experience_ids,
                weights_versions=point.weights_versions,
            )

        def on_checkpoint(step: int, path: Path) -> None:
            jobs.record_checkpoint(session=session, job_id=job_id, path=str(path))

        def on_resume(step: int) -> None:
            jobs.mark_resumed(session=session, job_id=job_id, step=step)

        def cancel() -> bool:
            return jobs.is_cancel_requested(session=session, job_id=job_id)

        try:
            from .training import run_job  # torch is imported by the worker only

            with buffer_client(job, settings) as buffer:
                result = run_job(
                    job, buffer=buffer, output_dir=out_dir, on_step=on_step, cancel=cancel,
                    on_checkpoint=on_checkpoint, on_resume=on_resume, device=settings.device,
                    data_dir=settings.data_dir, keep_checkpoints=settings.keep_checkpoints,
                )
        except BTPError as exc:
            session.rollback()
            jobs.finish(session=session, job_id=job_id, status="failed", error=exc.message)
            log.warning("job %s failed: %s", job_id, exc.message)
            return "failed"
        except Exception as exc:  # the job fails, the worker keeps serving
            session.rollback()
            message = f"{type(exc).__name__}: {exc}"
            jobs.finish(session=session, job_id=job_id, status="failed", error=message[:4000])
            log.error("job %s failed: %s\n%s", job_id, message, traceback.format_exc())
            return "failed"
        checkpoint = str(result.checkpoint) if result.checkpoint else None
        if result.status == "cancelled":
            jobs.finish(session=session, job_id=job_id, status="cancelled", checkpoint=checkpoint)
            return "cancelled"
        published: bool | None = None
        error: str | None = None
        if job.publish_to_generator and result.checkpoint is not None:
            published, error = publish_for_job(job, settings, result.checkpoint)
        jobs.finish(
            session=session, job_id=job_id, status="succeeded", checkpoint=checkpoint,
            published=published, error=error,
        )
        return "succeeded"
