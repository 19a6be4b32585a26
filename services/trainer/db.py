"""The trainer's job tables (``trainer_jobs``, ``trainer_loss_points``) and engine set-up.

The tables share the database with the buffer's (``BTP_DATABASE_URL``), so every name starts with
``trainer_`` and they are made with ``create_all`` on their own ``MetaData``: the buffer's migrations
never see them and they never see the buffer's.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Integer,
    MetaData,
    String,
    Text,
    UniqueConstraint,
    create_engine,
    event,
)
from sqlalchemy.engine import Engine
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, sessionmaker


def utcnow() -> datetime:
    """Timezone-aware now, UTC."""
    return datetime.now(UTC)


class Base(DeclarativeBase):
    metadata = MetaData()


class JobRow(Base):
    """One fine-tuning job; its state lives here, not in Celery's result store."""

    __tablename__ = "trainer_jobs"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    status: Mapped[str] = mapped_column(String(16), index=True)
    config: Mapped[dict[str, Any]] = mapped_column(JSON)
    step: Mapped[int] = mapped_column(Integer, default=0)
    total_steps: Mapped[int] = mapped_column(Integer, default=0)
    checkpoint: Mapped[str | None] = mapped_column(Text, nullable=True)
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    cancel_requested: Mapped[bool] = mapped_column(Boolean, default=False)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    resumed_from_step: Mapped[int | None] = mapped_column(Integer, nullable=True)
    published: Mapped[bool | None] = mapped_column(Boolean, nullable=True)
    tensorboard_dir: Mapped[str | None] = mapped_column(Text, nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    started_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)


class LossPointRow(Base):
    """Loss and throughput of one optimizer step of a job."""

    __tablename__ = "trainer_loss_points"
    __table_args__ = (UniqueConstraint("job_id", "step", name="trainer_loss_points_job_step"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    job_id: Mapped[str] = mapped_column(ForeignKey("trainer_jobs.id", ondelete="CASCADE"), index=True)
    step: Mapped[int] = mapped_column(Integer)
    loss: Mapped[float] = mapped_column(Float)
    tokens_per_s: Mapped[float | None] = mapped_column(Float, nullable=True)
    lr: Mapped[float | None] = mapped_column(Float, nullable=True)
    # when it finished, what it trained on, and the weights version that sampled each program (async BTP)
    at: Mapped[float | None] = mapped_column(Float, nullable=True)
    experience_ids: Mapped[list[int] | None] = mapped_column(JSON, nullable=True)
    weights_versions: Mapped[list[int | None] | None] = mapped_column(JSON, nullable=True)


# Columns added after the first release: ``create_all`` makes missing tables only, so an existing
# ``trainer_loss_points`` gets them with ALTER TABLE (nullable, so old rows stay valid).
ADDED_COLUMNS = {"trainer_loss_points": ("at", "experience_ids", "weights_versions")}


def add_missing_columns(engine: Engine) -> list[str]:
    """ALTER TABLE ... ADD COLUMN for every column of :data:`ADDED_COLUMNS` an existing table lacks
    (idempotent; two processes racing both try, and the loser's duplicate-column error is ignored)."""
    from sqlalchemy import inspect, text
    from sqlalchemy.exc import DBAPIError

    added = []
    for table, columns in ADDED_COLUMNS.items():
        have = {c["name"] for c in inspect(engine).get_columns(table)}
        for name in columns:
            if name in have:
                continue
            col = Base.metadata.tables[table].c[name]
            quote = engine.dialect.identifier_preparer.quote
            ddl = f"ALTER TABLE {quote(table)} ADD COLUMN {quote(name)} {col.type.compile(dialect=engine.dialect)}"
            try:
                with engine.begin() as conn:
                    conn.execute(text(ddl))
                added.append(f"{table}.{name}")
            except DBAPIError:
                if name not in {c["name"] for c in inspect(engine).get_columns(table)}:
                    raise
    return added


def make_engine(url: str) -> Engine:
    """An engine for ``url`` with the trainer tables created (idempotent)."""
    kwargs: dict[str, Any] = {"pool_pre_ping": True}
    if url.startswith("sqlite"):
        kwargs["connect_args"] = {"check_same_thread": False, "timeout": 30}
    engine = create_engine(url, **kwargs)
    if url.startswith("sqlite"):

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_conn: Any, _: Any) -> None:
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.close()

    Base.metadata.create_all(engine)
    add_missing_columns(engine)
    return engine


def make_sessionmaker(engine: Engine) -> sessionmaker:  # type: ignore[type-arg]
    """Sessions that keep loaded objects usable after commit."""
    return sessionmaker(bind=engine, expire_on_commit=False)
