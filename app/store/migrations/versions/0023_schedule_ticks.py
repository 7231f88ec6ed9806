"""Schedule ticks: each start of a scheduled job, so several engines on one database run each
job once per interval.

Revision ID: 0023
Revises: 0022
Create Date: 2026-12-07
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0023"
down_revision: str | None = "0022"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "schedule_ticks",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("job_id", sa.String(length=64), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("engine", sa.String(length=160), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_schedule_ticks")),
    )
    with op.batch_alter_table("schedule_ticks", schema=None) as batch_op:
        batch_op.create_index("ix_schedule_ticks_job_at", ["job_id", "at"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("schedule_ticks", schema=None) as batch_op:
        batch_op.drop_index("ix_schedule_ticks_job_at")
    op.drop_table("schedule_ticks")
