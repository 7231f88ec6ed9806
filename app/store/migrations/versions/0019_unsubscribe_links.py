"""unsubscribe links

Revision ID: 0019
Revises: 0018
Create Date: 2026-12-07 02:50:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0019"
down_revision: str | None = "0018"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("messages", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("unsubscribe_token", sa.String(length=64), server_default="", nullable=False)
        )
        batch_op.add_column(
            sa.Column("unsubscribe_url", sa.String(length=500), server_default="", nullable=False)
        )
        batch_op.create_index(
            batch_op.f("ix_messages_unsubscribe_token"), ["unsubscribe_token"], unique=False
        )


def downgrade() -> None:
    with op.batch_alter_table("messages", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_messages_unsubscribe_token"))
        batch_op.drop_column("unsubscribe_url")
        batch_op.drop_column("unsubscribe_token")
