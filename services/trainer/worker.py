"""Celery worker entry point: builds the app from the environment (``BTP_...``).

Start a worker (one job at a time; one process per GPU)::

    celery -A services.trainer.worker worker --pool=solo --concurrency=1 -Q btp-train --loglevel=INFO

A starting worker first waits for the Redis broker (``BTP_REDIS_URL``) for at most
``BTP_TRAINER_BROKER_WAIT_S`` seconds, saying which broker it waits for; then it gives up with one line
naming it and exit code 1 (Celery's own retries would go on silently for many minutes). A bad ``BTP_*``
value ends it the same way (:mod:`services.common.startup`).

Several GPUs for one job: start the worker on one node and let the job itself spread (see
services/trainer/README.md for ``torchrun``); or run one worker per GPU with ``CUDA_VISIBLE_DEVICES``.
"""

from __future__ import annotations

import logging
from typing import Any

from celery.signals import celeryd_init, worker_init

from services.common.logging import configure_logging
from services.common.startup import StartupError, exit_with, process_settings, wait_for_redis

from .celery_app import make_celery
from .settings import Settings

_settings = process_settings(Settings, "worker")
configure_logging(_settings.log_level)
app = make_celery(_settings)
celery = app
log = logging.getLogger(__name__)


def wait_for_broker(settings: Settings) -> None:
    """Block until the broker answers; one line and exit 1 after ``broker_wait_s``."""
    setting = "BTP_REDIS_URL, or BTP_TRAINER_BROKER_WAIT_S to wait longer"
    try:
        wait_for_redis(settings.redis_url, settings.broker_wait_s, setting, log.warning, what="the Redis broker")
    except StartupError as exc:
        exit_with(f"worker cannot start: {exc}", exc)


@celeryd_init.connect
def _wait_for_broker(**_: Any) -> None:
    """Before the banner and before Celery's own (silent) connection retries."""
    wait_for_broker(_settings)


@worker_init.connect
def _warm_imports(**_: Any) -> None:
    """Import torch and the training code before the first job rather than during it."""
    from . import training  # noqa: F401
