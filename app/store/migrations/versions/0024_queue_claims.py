"""Queue claims: which engine holds an automation run, a send or a billing item while it works
on it, and until when, so several engines on one database never do one twice.

Revision ID: 0024
Revises: 0023
Create Date: 2026-12-07
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0024"
down_revision: str | None = "0023"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("automation_runs", schema=None) as batch_op:
        batch_op.add_column(sa.Column("claimed_by", sa.String(length=160), nullable=True))

    with op.batch_alter_table("billing_items", schema=None) as batch_op:
        batch_op.add_column(sa.Column("charging_by", sa.String(length=160), nullable=True))
        batch_op.add_column(sa.Column("lease_until", sa.DateTime(timezone=True), nullable=True))

    with op.batch_alter_table("message_batches", schema=None) as batch_op:
        batch_op.add_column(sa.Column("sending_by", sa.String(length=160), nullable=True))
        batch_op.add_column(sa.Column("lease_until", sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("message_batches", schema=None) as batch_op:
        batch_op.drop_column("lease_until")
        batch_op.drop_column("sending_by")

    with op.batch_alter_table("billing_items", schema=None) as batch_op:
        batch_op.drop_column("lease_until")
        batch_op.drop_column("charging_by")

    with op.batch_alter_table("automation_runs", schema=None) as batch_op:
        batch_op.drop_column("claimed_by")
