"""The Celery app: Redis broker and result backend, one long GPU task at a time per worker.

``acks_late`` + ``task_reject_on_worker_lost``: a task is acknowledged only when it returns, so a worker
killed mid-job (SIGKILL, OOM, lost node) leaves it unacknowledged; Redis hands it out again after
``visibility_timeout`` and the job resumes from its last checkpoint (:mod:`.runner`). Prefetch 1: a
worker never holds a second job it cannot start.

The task body imports the training code lazily, so building this app (as the API does, to
``send_task`` by name) never imports torch.
"""

from __future__ import annotations

from typing import Any

from celery import Celery

from .settings import TRAIN_TASK, Settings


def make_celery(settings: Settings | None = None) -> Celery:
    """A Celery app configured from ``settings`` with the ``btp.train`` task registered."""
    settings = settings or Settings()
    app = Celery("btp-trainer", broker=settings.redis_url, backend=settings.redis_url)
    transport = {
        "visibility_timeout": settings.visibility_timeout_s,
        "unacked_restore_throttle": settings.restore_throttle,
    }
    app.conf.update(
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        task_default_queue=settings.queue,
        task_routes={TRAIN_TASK: {"queue": settings.queue}},
        task_serializer="json",
        result_serializer="json",
        accept_content=["json"],
        task_track_started=True,
        result_expires=7 * 24 * 3600,
        broker_transport_options=transport,
        result_backend_transport_options=transport,
        broker_connection_retry_on_startup=True,
        worker_hijack_root_logger=False,
    )
    app.conf.btp_settings = settings

    @app.task(name=TRAIN_TASK, bind=True, acks_late=True, reject_on_worker_lost=True)
    def train(self: Any, job_id: str) -> str:
        """Run (or resume) one training job by id."""
        from .executor import execute_job

        return execute_job(job_id, settings)

    return app
