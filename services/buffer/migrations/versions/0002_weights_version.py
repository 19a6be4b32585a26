"""experiences.weights_version: the generator's weights version that sampled each program (async BTP).

Nullable: programs stored before this revision, from teachers or from JSONL files have no version.

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("experiences", sa.Column("weights_version", sa.BigInteger(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("experiences") as batch:
        batch.drop_column("weights_version")
