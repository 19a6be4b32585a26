"""Trainer settings: ``BTP_TRAINER_...`` environment variables plus the shared ``BTP_...`` names."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from services.common.settings import DEFAULT_PORTS, DEFAULT_TRAIN_QUEUE, CommonSettings

TRAIN_TASK = "btp.train"
"""Celery task name; the API enqueues by this name only, so it never imports the training code."""


class Settings(CommonSettings):
    """Trainer API and worker settings."""

    model_config = SettingsConfigDict(
        env_prefix="BTP_TRAINER_", extra="ignore", populate_by_name=True, validate_default=True
    )

    host: str = Field("127.0.0.1", description="Bind address of the HTTP API.")
    port: int = Field(DEFAULT_PORTS["trainer"], ge=1, le=65535, description="Port of the HTTP API.")
    queue: str = Field(DEFAULT_TRAIN_QUEUE, min_length=1, description="Celery queue the training tasks go to.")
    device: str = Field("auto", description="Training device: auto (CUDA when present), cpu, cuda, cuda:1 ...")
    visibility_timeout_s: float = Field(
        12 * 3600.0,
        gt=0,
        description="Redis visibility timeout: an unacknowledged task (its worker died) is delivered again "
        "after this long. Set it above the longest job, or a live job is handed to a second worker.",
    )
    restore_throttle: int = Field(
        10,
        ge=1,
        description="Look for unacknowledged tasks to restore on every N-th poll of the broker.",
    )
    checkpoints_dir: Path | None = Field(
        None, description="Where checkpoints go; default <data_dir>/checkpoints (<dir>/<job>/step-N)."
    )
    keep_checkpoints: int = Field(
        0, ge=0, description="Keep only the last N step checkpoints of a job (0 keeps all)."
    )
    max_active_jobs: int = Field(
        1000, ge=1, description="Queued or running jobs at most; more answer 429."
    )
    broker_wait_s: float = Field(
        60.0,
        ge=0,
        description="How long a starting worker waits for the Redis broker (BTP_REDIS_URL) before it gives up "
        "with one line naming the broker.",
    )
    buffer_retry_s: float = Field(
        180.0, ge=0,
        description="How long a call to the buffer is retried while its connection fails or breaks (the "
        "buffer restarting), seconds; 0 = never.",
    )
    publish_timeout_s: float = Field(600.0, gt=0, description="Timeout of the generator's POST /v1/weights.")

    def resolved_checkpoints_dir(self) -> Path:
        """The checkpoint root, defaulting to ``<data_dir>/checkpoints``."""
        return self.checkpoints_dir or self.data_dir / "checkpoints"

    def allowed_model_roots(self) -> list[Path]:
        """Where a job's ``model`` may lie: the shared roots and this trainer's checkpoints folder."""
        return [*super().allowed_model_roots(), self.resolved_checkpoints_dir()]
