"""Settings of the driver (`btp`): the shared `BTP_*` names plus `BTP_PIPELINE_*` defaults."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from services.common.settings import CommonSettings, shared


class Settings(CommonSettings):
    """Where runs live and which services to drive (unset URLs = embedded, in-process)."""

    model_config = SettingsConfigDict(
        env_prefix="BTP_PIPELINE_", extra="ignore", populate_by_name=True, validate_default=True
    )

    log_level: str = Field(
        default="WARNING",
        validation_alias=shared("log_level"),
        description="Log level of the in-process services and libraries: the CLI shows progress bars instead.",
    )
    default_model: str = Field(
        default="SmolLM2-135M-Instruct",
        description="Model fine-tuned by `btp run` when --model is not given: a local HF folder or a known name.",
    )
    mbpp_path: Path | None = Field(
        default=None, description="MBPP (MultiPL-E reworded) JSON file; unset = ../shared/data next to the repo when present, else the packaged copy."
    )
    poll_interval_s: float = Field(
        default=1.0, gt=0, description="How often a remote trainer job is polled, seconds."
    )
    service_timeout_s: float = Field(
        default=1800.0, gt=0, description="HTTP timeout of one call to a remote service, seconds."
    )
    service_retry_s: float = Field(
        default=180.0, ge=0,
        description="How long a call to a remote service is retried while its connection fails or breaks "
        "(a container restarting, a replica lost), seconds; 0 = never retry.",
    )
    judge_split: int = Field(
        default=0, ge=0,
        description="Programs per request to a remote judge: a bigger batch is sent as several requests, "
        "BTP_PIPELINE_JUDGE_PARALLEL at a time, so that judge replicas behind a balancer share it; 0 = one request.",
    )
    judge_parallel: int = Field(
        default=4, ge=1, description="Judge requests in flight at once when BTP_PIPELINE_JUDGE_SPLIT splits a batch."
    )

    def runs_dir(self) -> Path:
        """``BTP_DATA_DIR/runs``."""
        return self.data_dir / "runs"

    def models_dir(self) -> Path:
        """``BTP_DATA_DIR/models``: converted offline models."""
        return self.data_dir / "models"
