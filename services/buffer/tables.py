"""SQLAlchemy 2 models of the buffer: tasks (X, S), experiences (t, P(t), pass_rate) and a change marker.

Identity of an experience is (task_id, program, source). Programs can be megabytes, so the unique index
is on a fixed-size SHA-256 digest of the program (``program_hash``, leading column so look-ups by
digest use it) together with task_id and source.

``buffer_state`` is a single row holding two counters. Every write transaction bumps ``version`` (or
``task_version`` for task upserts) as its first statement, which (a) serialises writers, so row
versions commit in order, and (b) stamps each written experience with ``row_version``. A process with
an in-memory priority index compares the counters (one primary-key read) and fetches only the rows with
a newer ``row_version``: several buffer processes stay correct without any message bus.
"""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    CheckConstraint,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

BigId = BigInteger().with_variant(Integer, "sqlite")
"""64-bit ids on PostgreSQL; SQLite autoincrements only INTEGER PRIMARY KEY (which is 64-bit there)."""
JsonType = JSON().with_variant(JSONB(), "postgresql")


class UTCDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC datetimes on both stores (SQLite hands back naive values)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is not None and value.tzinfo is None:
            value = value.replace(tzinfo=UTC)
        return value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is not None and value.tzinfo is None:
            value = value.replace(tzinfo=UTC)
        return value


def program_digest(program: str) -> bytes:
    """SHA-256 of the UTF-8 program: the fixed-size column of the idempotency key."""
    return hashlib.sha256(program.encode("utf-8")).digest()


def key64(text: str) -> int:
    """A signed 64-bit hash of a string (source filter and beam groups in the priority index)."""
    return int.from_bytes(hashlib.blake2b(text.encode("utf-8"), digest_size=8).digest(), "big", signed=True)


def group_key(task_id: str, source: str, round_: int, generation: str | None) -> int:
    """The beam_softmax group: the k beams of one task from one model, round and generation."""
    return key64(f"{task_id}\x00{source}\x00{round_}\x00{generation or ''}")


class Base(DeclarativeBase):
    pass


class Task(Base):
    __tablename__ = "tasks"

    seq: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    id: Mapped[str] = mapped_column(String(512), nullable=False)
    dataset: Mapped[str] = mapped_column(String(128), nullable=False)
    split: Mapped[str] = mapped_column(String(64), nullable=False)
    difficulty: Mapped[str | None] = mapped_column(String(64))
    prompt: Mapped[str] = mapped_column(Text, nullable=False)
    tests: Mapped[dict[str, Any]] = mapped_column(JsonType, nullable=False)
    meta: Mapped[dict[str, Any]] = mapped_column("metadata", JsonType, nullable=False, default=dict)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), nullable=False)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), nullable=False)

    __table_args__ = (
        UniqueConstraint("id", name="uq_tasks_id"),
        Index("ix_tasks_dataset_split", "dataset", "split"),
    )


class Experience(Base):
    __tablename__ = "experiences"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    task_id: Mapped[str] = mapped_column(String(512), ForeignKey("tasks.id"), nullable=False)
    task_seq: Mapped[int] = mapped_column(BigInteger, nullable=False)
    program: Mapped[str] = mapped_column(Text, nullable=False)
    program_hash: Mapped[bytes] = mapped_column(LargeBinary(32), nullable=False)
    source: Mapped[str] = mapped_column(String(512), nullable=False)
    source_key: Mapped[int] = mapped_column(BigInteger, nullable=False)
    group_key: Mapped[int] = mapped_column(BigInteger, nullable=False)
    logprob: Mapped[float] = mapped_column(Float, nullable=False)
    token_count: Mapped[int] = mapped_column(Integer, nullable=False)
    probability: Mapped[float] = mapped_column(Float, nullable=False)
    pass_rate: Mapped[float | None] = mapped_column(Float)
    judge: Mapped[dict[str, Any] | None] = mapped_column(JsonType)
    round: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    generation: Mapped[str | None] = mapped_column(String(128))
    weights_version: Mapped[int | None] = mapped_column(BigInteger)  # the generator's weights version (async BTP)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), nullable=False)
    judged_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    row_version: Mapped[int] = mapped_column(BigInteger, nullable=False)

    __table_args__ = (
        Index("uq_experiences_identity", "program_hash", "task_id", "source", unique=True),
        Index("ix_experiences_task_id", "task_id"),
        Index("ix_experiences_row_version", "row_version"),
        CheckConstraint("probability >= 0 AND probability <= 1", name="ck_experiences_probability"),
        CheckConstraint("pass_rate IS NULL OR (pass_rate >= 0 AND pass_rate <= 1)", name="ck_experiences_pass_rate"),
        CheckConstraint("logprob <= 0", name="ck_experiences_logprob"),
        CheckConstraint("token_count >= 0", name="ck_experiences_token_count"),
    )


class BufferState(Base):
    """One row (id 1): the change markers the priority index polls."""

    __tablename__ = "buffer_state"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    version: Mapped[int] = mapped_column(BigInteger, nullable=False, default=0)
    task_version: Mapped[int] = mapped_column(BigInteger, nullable=False, default=0)
