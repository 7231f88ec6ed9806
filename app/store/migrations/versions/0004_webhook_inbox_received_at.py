"""webhook inbox: index on received_at (the events page's date filter and per-minute graph)

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-23
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_index("ix_webhook_inbox_received_at", "webhook_inbox", ["received_at"], unique=False)


def downgrade() -> None:
    op.drop_index("ix_webhook_inbox_received_at", table_name="webhook_inbox")
