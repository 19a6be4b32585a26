"""Buffer settings: ``BTP_BUFFER_*`` environment variables (plus the shared ``BTP_*`` names)."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from services.common.schemas.buffer import DEFAULT_POSSIBILITY, Possibility
from services.common.settings import DEFAULT_PORTS, CommonSettings


class Settings(CommonSettings):
    """Settings of the buffer service."""

    model_config = SettingsConfigDict(
        env_prefix="BTP_BUFFER_", extra="ignore", populate_by_name=True, validate_default=True
    )

    host: str = Field("127.0.0.1", description="Address `btp serve buffer` binds to.")
    port: int = Field(DEFAULT_PORTS["buffer"], ge=1, le=65535, description="Port `btp serve buffer` binds to.")
    max_sample_n: int = Field(4096, ge=1, description="Largest minibatch one POST /v1/sample may ask for.")
    max_program_bytes: int = Field(
        256 * 1024, ge=1, description="Largest program (UTF-8 bytes) an experience may carry; 413 above it."
    )
    max_items_per_request: int = Field(
        10_000, ge=1, description="Most tasks or experiences one POST may carry; 422 above it."
    )
    max_list_limit: int = Field(1000, ge=1, description="Largest page size of the GET list endpoints.")
    stats_alpha: float = Field(0.5, ge=0.0, le=1.0, description="alpha of the P2Value histogram in /v1/stats.")
    stats_possibility: Possibility = Field(
        DEFAULT_POSSIBILITY, description="possibility mode of the P2Value histogram in /v1/stats."
    )
    sample_cache_entries: int = Field(
        8, ge=0, description="Prepared sampling distributions (one per filter and parameters) kept in memory."
    )
    migrate_on_start: bool = Field(True, description="Run the Alembic migrations to head when the app starts.")
    pool_size: int = Field(10, ge=1, description="SQLAlchemy connection pool size (PostgreSQL).")
    max_overflow: int = Field(20, ge=0, description="Extra connections above pool_size (PostgreSQL).")
