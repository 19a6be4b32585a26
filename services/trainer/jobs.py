"""Job records: keyword-only functions over a SQLAlchemy session (no FastAPI, no torch, no Celery).

State machine: ``queued -> running -> succeeded | failed | cancelled``; ``queued -> cancelled``.
A job that is ``running`` when its task is delivered again (the worker died) stays ``running`` and
resumes; a job in a final state is never run again.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence

from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session

from services.common.errors import ConflictError, NotFoundError
from services.common.schemas.trainer import JobCreate, JobOut, JobProgress, LossPoint

from .db import JobRow, LossPointRow, utcnow

FINAL_STATES = frozenset({"succeeded", "failed", "cancelled"})
ACTIVE_STATES = frozenset({"queued", "running"})


def new_job_id() -> str:
    """A fresh job id."""
    return uuid.uuid4().hex


def to_out(row: JobRow, points: Sequence[LossPointRow]) -> JobOut:
    """The wire model of a job row and its loss points."""
    return JobOut(
        id=row.id,
        status=row.status,  # type: ignore[arg-type]
        config=JobCreate.model_validate(row.config),
        progress=JobProgress(step=row.step, total_steps=row.total_steps),
        loss_history=[
            LossPoint(step=p.step, loss=p.loss, tokens_per_s=p.tokens_per_s, lr=p.lr, at=p.at,
                      experience_ids=p.experience_ids, weights_versions=p.weights_versions)
            for p in points
        ],
        checkpoint=row.checkpoint,
        error=row.error,
        created_at=row.created_at,
        started_at=row.started_at,
        finished_at=row.finished_at,
        attempts=row.attempts,
        resumed_from_step=row.resumed_from_step,
        cancel_requested=row.cancel_requested,
        published=row.published,
        tensorboard_dir=row.tensorboard_dir,
    )


def _row(session: Session, job_id: str) -> JobRow:
    row = session.get(JobRow, job_id)
    if row is None:
        raise NotFoundError(f"job {job_id!r} not found", param="id")
    return row


def _points(session: Session, job_id: str) -> list[LossPointRow]:
    stmt = select(LossPointRow).where(LossPointRow.job_id == job_id).order_by(LossPointRow.step)
    return list(session.scalars(stmt))


def count_active(*, session: Session) -> int:
    """Queued or running jobs."""
    stmt = select(func.count()).select_from(JobRow).where(JobRow.status.in_(ACTIVE_STATES))
    return int(session.scalar(stmt) or 0)


def create_job(*, session: Session, job: JobCreate, job_id: str | None = None) -> JobOut:
    """Insert a queued job."""
    row = JobRow(
        id=job_id or new_job_id(),
        status="queued",
        config=job.model_dump(mode="json"),
        step=0,
        total_steps=job.steps,
        cancel_requested=False,
        attempts=0,
        created_at=utcnow(),
    )
    session.add(row)
    session.commit()
    return to_out(row, [])


def get_job(*, session: Session, job_id: str) -> JobOut:
    """One job with its loss history."""
    row = _row(session, job_id)
    return to_out(row, _points(session, job_id))


def list_jobs(*, session: Session, status: str | None = None, limit: int = 100, offset: int = 0) -> list[JobOut]:
    """Jobs, newest first."""
    stmt = select(JobRow).order_by(JobRow.created_at.desc(), JobRow.id).limit(limit).offset(offset)
    if status is not None:
        stmt = stmt.where(JobRow.status == status)
    rows = list(session.scalars(stmt))
    return [to_out(r, _points(session, r.id)) for r in rows]


def delete_job(*, session: Session, job_id: str) -> None:
    """Remove a job that could not be enqueued."""
    session.execute(delete(LossPointRow).where(LossPointRow.job_id == job_id))
    session.execute(delete(JobRow).where(JobRow.id == job_id))
    session.commit()


def cancel_job(*, session: Session, job_id: str) -> JobOut:
    """Cancel a queued job at once; ask a running one to stop at its next step."""
    row = _row(session, job_id)
    if row.status in FINAL_STATES:
        raise ConflictError(f"job {job_id!r} is already {row.status}", param="id")
    if row.status == "queued":
        row.status = "cancelled"
        row.finished_at = utcnow()
    row.cancel_requested = True
    session.commit()
    return to_out(row, _points(session, job_id))


def is_cancel_requested(*, session: Session, job_id: str) -> bool:
    """Whether someone asked to cancel the job."""
    row = _row(session, job_id)
    session.refresh(row)
    return bool(row.cancel_requested)


def start_attempt(*, session: Session, job_id: str, tensorboard_dir: str | None = None) -> JobOut | None:
    """Mark a delivered job running; ``None`` when it is final (the delivery is a duplicate)."""
    row = _row(session, job_id)
    if row.status in FINAL_STATES:
        return None
    row.status = "running"
    row.attempts += 1
    if row.started_at is None:
        row.started_at = utcnow()
    if tensorboard_dir is not None:
        row.tensorboard_dir = tensorboard_dir
    session.commit()
    return to_out(row, _points(session, job_id))


def mark_resumed(*, session: Session, job_id: str, step: int) -> None:
    """The attempt resumes from checkpoint ``step``: steps after it are run (and recorded) again."""
    row = _row(session, job_id)
    row.resumed_from_step = step
    row.step = step
    session.execute(delete(LossPointRow).where(LossPointRow.job_id == job_id, LossPointRow.step > step))
    session.commit()


def record_step(
    *, session: Session, job_id: str, step: int, loss: float, tokens_per_s: float | None, lr: float | None,
    at: float | None = None, experience_ids: list[int] | None = None,
    weights_versions: list[int | None] | None = None,
) -> None:
    """Record one optimizer step (idempotent per step), with the experiences it trained on and the
    weights version that sampled each (so a driver reads async BTP's lag off the job)."""
    row = _row(session, job_id)
    session.execute(delete(LossPointRow).where(LossPointRow.job_id == job_id, LossPointRow.step == step))
    session.add(LossPointRow(job_id=job_id, step=step, loss=loss, tokens_per_s=tokens_per_s, lr=lr, at=at,
                             experience_ids=experience_ids, weights_versions=weights_versions))  # fmt: skip
    row.step = step
    session.commit()


def record_checkpoint(*, session: Session, job_id: str, path: str) -> None:
    """The newest complete checkpoint of the job."""
    row = _row(session, job_id)
    row.checkpoint = path
    session.commit()


def finish(
    *,
    session: Session,
    job_id: str,
    status: str,
    error: str | None = None,
    checkpoint: str | None = None,
    published: bool | None = None,
) -> None:
    """Put the job in a final state."""
    if status not in FINAL_STATES:
        raise ValueError(f"not a final state: {status}")
    row = _row(session, job_id)
    row.status = status
    row.error = error
    if checkpoint is not None:
        row.checkpoint = checkpoint
    if published is not None:
        row.published = published
    row.finished_at = utcnow()
    session.commit()
