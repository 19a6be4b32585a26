"""Celery worker entry point: builds the app from the environment (``BTP_...``).

Start a worker (one job at a time; one process per GPU)::

    celery -A services.trainer.worker worker --pool=solo --concurrency=1 -Q btp-train --loglevel=INFO

Several GPUs for one job: start the worker on one node and let the job itself spread (see
services/trainer/README.md for ``torchrun``); or run one worker per GPU with ``CUDA_VISIBLE_DEVICES``.
"""

from __future__ import annotations

from typing import Any

from celery.signals import worker_init

from services.common.logging import configure_logging

from .celery_app import make_celery
from .settings import Settings

_settings = Settings()
configure_logging(_settings.log_level)
app = make_celery(_settings)
celery = app


@worker_init.connect
def _warm_imports(**_: Any) -> None:
    """Import torch and the training code before the first job rather than during it."""
    from . import training  # noqa: F401
