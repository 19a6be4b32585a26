"""Initial schema: tasks, experiences, buffer_state.

Revision ID: 0001
Revises:
Create Date: 2026-11-25
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
JsonType = sa.JSON().with_variant(JSONB(), "postgresql")


def upgrade() -> None:
    op.create_table(
        "tasks",
        sa.Column("seq", BigId, primary_key=True, autoincrement=True),
        sa.Column("id", sa.String(512), nullable=False),
        sa.Column("dataset", sa.String(128), nullable=False),
        sa.Column("split", sa.String(64), nullable=False),
        sa.Column("difficulty", sa.String(64)),
        sa.Column("prompt", sa.Text(), nullable=False),
        sa.Column("tests", JsonType, nullable=False),
        sa.Column("metadata", JsonType, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.UniqueConstraint("id", name="uq_tasks_id"),
    )
    op.create_index("ix_tasks_dataset_split", "tasks", ["dataset", "split"])
    op.create_table(
        "experiences",
        sa.Column("id", BigId, primary_key=True, autoincrement=True),
        sa.Column("task_id", sa.String(512), sa.ForeignKey("tasks.id", name="fk_experiences_task"), nullable=False),
        sa.Column("task_seq", sa.BigInteger(), nullable=False),
        sa.Column("program", sa.Text(), nullable=False),
        sa.Column("program_hash", sa.LargeBinary(32), nullable=False),
        sa.Column("source", sa.String(512), nullable=False),
        sa.Column("source_key", sa.BigInteger(), nullable=False),
        sa.Column("group_key", sa.BigInteger(), nullable=False),
        sa.Column("logprob", sa.Float(), nullable=False),
        sa.Column("token_count", sa.Integer(), nullable=False),
        sa.Column("probability", sa.Float(), nullable=False),
        sa.Column("pass_rate", sa.Float()),
        sa.Column("judge", JsonType),
        sa.Column("round", sa.Integer(), nullable=False),
        sa.Column("generation", sa.String(128)),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("judged_at", sa.DateTime(timezone=True)),
        sa.Column("row_version", sa.BigInteger(), nullable=False),
        sa.CheckConstraint("probability >= 0 AND probability <= 1", name="ck_experiences_probability"),
        sa.CheckConstraint(
            "pass_rate IS NULL OR (pass_rate >= 0 AND pass_rate <= 1)", name="ck_experiences_pass_rate"
        ),
        sa.CheckConstraint("logprob <= 0", name="ck_experiences_logprob"),
        sa.CheckConstraint("token_count >= 0", name="ck_experiences_token_count"),
    )
    op.create_index(
        "uq_experiences_identity", "experiences", ["program_hash", "task_id", "source"], unique=True
    )
    op.create_index("ix_experiences_task_id", "experiences", ["task_id"])
    op.create_index("ix_experiences_row_version", "experiences", ["row_version"])
    state = op.create_table(
        "buffer_state",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("version", sa.BigInteger(), nullable=False),
        sa.Column("task_version", sa.BigInteger(), nullable=False),
    )
    op.bulk_insert(state, [{"id": 1, "version": 0, "task_version": 0}])


def downgrade() -> None:
    op.drop_table("buffer_state")
    op.drop_index("ix_experiences_row_version", table_name="experiences")
    op.drop_index("ix_experiences_task_id", table_name="experiences")
    op.drop_index("uq_experiences_identity", table_name="experiences")
    op.drop_table("experiences")
    op.drop_index("ix_tasks_dataset_split", table_name="tasks")
    op.drop_table("tasks")
