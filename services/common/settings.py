"""Settings base shared by every service: `BTP_` environment variables, every field described.

The names in ARCHITECTURE.md ("Settings everyone relies on") are read exactly as written
(``BTP_DATABASE_URL``, ``BTP_REDIS_URL`` ...) whatever prefix a service adds for its own fields
(``BTP_BUFFER_...``). Settings objects are built in ``create_app``, the CLI or the Celery app, never at
import time.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import AliasChoices, Field
from pydantic_settings import BaseSettings, SettingsConfigDict

DEFAULT_PORTS: dict[str, int] = {"generator": 8001, "judge": 8002, "buffer": 8003, "trainer": 8004}
"""Each service's default port: the one source for clients, settings, `btp serve` and `btp stack up`."""

DASHBOARD_PORT = 8005
"""`btp dashboard` and the dashboard of `btp stack up`."""

DEFAULT_TRAIN_QUEUE = "btp-train"
"""The Celery queue of training jobs (``BTP_TRAINER_QUEUE`` overrides it)."""


def shared(name: str) -> AliasChoices:
    """Alias so a shared field reads ``BTP_<NAME>`` whatever the subclass's env prefix is."""
    return AliasChoices(f"BTP_{name.upper()}", f"btp_{name}")


def default_data_dir() -> Path:
    """``~/.cache/btp``: runs, caches, converted models and checkpoints."""
    return Path.home() / ".cache" / "btp"


class CommonSettings(BaseSettings):
    """Fields every service and the driver understand."""

    model_config = SettingsConfigDict(
        env_prefix="BTP_", extra="ignore", populate_by_name=True, validate_default=True
    )

    data_dir: Path = Field(
        default_factory=default_data_dir,
        validation_alias=shared("data_dir"),
        description="Where runs, caches, converted models and checkpoints live.",
    )
    database_url: str | None = Field(
        default=None,
        validation_alias=shared("database_url"),
        description="SQLAlchemy URL of the buffer's (and trainer's job) database; unset means a SQLite file "
        "under the data dir.",
    )
    redis_url: str = Field(
        default="redis://127.0.0.1:6379/0",
        validation_alias=shared("redis_url"),
        description="Celery broker and result backend.",
    )
    api_token: str | None = Field(
        default=None,
        validation_alias=shared("api_token"),
        description="When set, `Authorization: Bearer <token>` is required on every endpoint but /health.",
    )
    log_level: str = Field(
        default="INFO", validation_alias=shared("log_level"), description="Python logging level name."
    )
    generator_url: str | None = Field(
        default=None, validation_alias=shared("generator_url"), description="Generator service URL; unset = embedded."
    )
    judge_url: str | None = Field(
        default=None, validation_alias=shared("judge_url"), description="Judge service URL; unset = embedded."
    )
    buffer_url: str | None = Field(
        default=None, validation_alias=shared("buffer_url"), description="Buffer service URL; unset = embedded."
    )
    trainer_url: str | None = Field(
        default=None, validation_alias=shared("trainer_url"), description="Trainer service URL; unset = embedded."
    )
    max_body_bytes: int = Field(
        default=64 * 1024 * 1024,
        validation_alias=shared("max_body_bytes"),
        description="Largest request body accepted (413 above it).",
        gt=0,
    )

    def resolved_database_url(self) -> str:
        """The database URL, defaulting to a SQLite file under the data dir."""
        if self.database_url:
            return self.database_url
        self.data_dir.mkdir(parents=True, exist_ok=True)
        return f"sqlite:///{self.data_dir / 'btp.sqlite3'}"
