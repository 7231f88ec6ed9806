"""reconciliation: a record split into parts by hand

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-06 22:30:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0012"
down_revision: str | None = "0011"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("recon_records", sa.Column("split_decision", sa.BigInteger(), nullable=True))
    op.create_index(
        op.f("ix_recon_records_split_decision"), "recon_records", ["split_decision"], unique=False
    )


def downgrade() -> None:
    op.drop_index(op.f("ix_recon_records_split_decision"), table_name="recon_records")
    with op.batch_alter_table("recon_records") as batch:
        batch.drop_column("split_decision")
