"""Settings base shared by every service: `BTP_` environment variables, every field described.

The names in ARCHITECTURE.md ("Settings everyone relies on") are read exactly as written
(``BTP_DATABASE_URL``, ``BTP_REDIS_URL`` ...) whatever prefix a service adds for its own fields
(``BTP_BUFFER_...``). Settings objects are built in ``create_app``, the CLI or the Celery app, never at
import time.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import urlsplit

from pydantic import AliasChoices, Field, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from .errors import ValidationError

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


def _split(value: Any, *seps: str) -> Any:
    """A list from an environment string: a JSON list, or items between any of ``seps``."""
    if not isinstance(value, str):
        return value
    text = value.strip()
    if text.startswith("["):
        return json.loads(text)
    for sep in seps[1:]:
        text = text.replace(sep, seps[0])
    return [part.strip() for part in text.split(seps[0]) if part.strip()]


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

    model_roots: Annotated[list[Path], NoDecode] = Field(
        default_factory=list,
        validation_alias=shared("model_roots"),
        description="Folders (separated by ':' or ',') under which an HTTP client may name a model or checkpoint "
        "path, besides <data_dir>/models and the checkpoints folder; paths are resolved (symlinks "
        "followed) before the check.",
    )
    allowed_urls: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        validation_alias=shared("allowed_urls"),
        description="Service URLs (separated by ',') a request may name (a training job's buffer_url or "
        "generator_url) besides the configured BTP_*_URL; nothing else is ever called.",
    )

    @field_validator("model_roots", mode="before")
    @classmethod
    def _split_roots(cls, value: Any) -> Any:
        return _split(value, os.pathsep, ",")

    @field_validator("allowed_urls", mode="before")
    @classmethod
    def _split_urls(cls, value: Any) -> Any:
        return _split(value, ",")

    def allowed_model_roots(self) -> list[Path]:
        """Folders under which a client may name a model or checkpoint (subclasses add their own)."""
        return [self.data_dir / "models", self.data_dir / "checkpoints", *self.model_roots]

    def resolved_database_url(self) -> str:
        """The database URL, defaulting to a SQLite file under the data dir."""
        if self.database_url:
            return self.database_url
        self.data_dir.mkdir(parents=True, exist_ok=True)
        return f"sqlite:///{self.data_dir / 'btp.sqlite3'}"


def normalize_url(url: str) -> tuple[str, str, int, str] | None:
    """(scheme, host, port, path) of an http(s) URL, for comparing two spellings; None if not one."""
    try:
        parts = urlsplit(url.strip())
        port = parts.port
    except ValueError:
        return None
    if parts.scheme.lower() not in ("http", "https") or not parts.hostname or parts.username or parts.password:
        return None
    if parts.query or parts.fragment:
        return None
    scheme = parts.scheme.lower()
    return scheme, parts.hostname.lower(), port or (443 if scheme == "https" else 80), parts.path.rstrip("/")


def outbound_url(
    requested: str | None, *, configured: str | None, allowed: Sequence[str], param: str
) -> str | None:
    """The URL a service calls for ``param``: the configured one when the request names none; the
    requested one only when it is the configured one or on the allow-list (``BTP_ALLOWED_URLS``); else a
    422 that names neither, so a request can never point a service at an address of its choosing."""
    if requested is None:
        return configured
    wanted = normalize_url(requested)
    permitted = [u for u in (configured, *allowed) if u]
    if wanted is not None and any(normalize_url(u) == wanted for u in permitted):
        return requested
    raise ValidationError(
        f"{param} must be the service's configured URL (BTP_*_URL) or one of BTP_ALLOWED_URLS; "
        "leave it unset to use the configured one",
        param=param,
    )
