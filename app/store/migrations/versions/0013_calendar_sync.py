"""calendar sync: items, state per connection, issues for a person

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-06 23:00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0013"
down_revision: str | None = "0012"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "sync_items",
        sa.Column("id", ID, nullable=False),
        sa.Column("connection_id", ID, nullable=False),
        sa.Column("local_kind", sa.String(length=16), nullable=False),
        sa.Column("local_id", sa.BigInteger(), nullable=False),
        sa.Column("event_id", sa.String(length=64), nullable=False),
        sa.Column("remote_id", sa.String(length=1024), nullable=False),
        sa.Column("remote_etag", sa.String(length=255), nullable=False),
        sa.Column("local_hash", sa.String(length=64), nullable=False),
        sa.Column("remote_hash", sa.String(length=64), nullable=False),
        sa.Column("meet_link", sa.String(length=500), nullable=False),
        sa.Column("link", sa.String(length=1000), nullable=False),
        sa.Column("synced_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["connection_id"],
            ["provider_connections.id"],
            name=op.f("fk_sync_items_connection_id_provider_connections"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_sync_items")),
        sa.UniqueConstraint(
            "connection_id",
            "local_kind",
            "local_id",
            name=op.f("uq_sync_items_connection_id_local_kind_local_id"),
        ),
    )
    op.create_index("ix_sync_items_connection_remote", "sync_items", ["connection_id", "remote_id"])
    op.create_table(
        "sync_state",
        sa.Column("connection_id", ID, nullable=False),
        sa.Column("token", sa.Text(), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("outcome", sa.String(length=16), nullable=False),
        sa.Column("counts", sa.JSON(), nullable=False),
        sa.Column("message", sa.Text(), nullable=False),
        sa.Column("held", sa.JSON(), nullable=False),
        sa.Column("channel", sa.JSON(), nullable=False),
        sa.ForeignKeyConstraint(
            ["connection_id"],
            ["provider_connections.id"],
            name=op.f("fk_sync_state_connection_id_provider_connections"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("connection_id", name=op.f("pk_sync_state")),
    )
    op.create_table(
        "sync_issues",
        sa.Column("id", ID, nullable=False),
        sa.Column("connection_id", ID, nullable=True),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("local_kind", sa.String(length=16), nullable=False),
        sa.Column("local_id", sa.BigInteger(), nullable=False),
        sa.Column("remote_id", sa.String(length=1024), nullable=False),
        sa.Column("remote_etag", sa.String(length=255), nullable=False),
        sa.Column("school", sa.JSON(), nullable=False),
        sa.Column("calendar", sa.JSON(), nullable=False),
        sa.Column("detail", sa.Text(), nullable=False),
        sa.Column("found_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("resolved_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("resolution", sa.String(length=16), nullable=False),
        sa.Column("resolved_by", sa.String(length=120), nullable=False),
        sa.ForeignKeyConstraint(
            ["connection_id"],
            ["provider_connections.id"],
            name=op.f("fk_sync_issues_connection_id_provider_connections"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_sync_issues")),
    )
    op.create_index("ix_sync_issues_open", "sync_issues", ["resolved_at", "connection_id"])
    op.create_index("ix_sync_issues_local", "sync_issues", ["local_kind", "local_id"])
    op.create_table(
        "calendar_busy",
        sa.Column("id", ID, nullable=False),
        sa.Column("connection_id", ID, nullable=False),
        sa.Column("remote_id", sa.String(length=1024), nullable=False),
        sa.Column("starts_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("ends_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("summary", sa.String(length=300), nullable=False),
        sa.ForeignKeyConstraint(
            ["connection_id"],
            ["provider_connections.id"],
            name=op.f("fk_calendar_busy_connection_id_provider_connections"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_calendar_busy")),
        sa.UniqueConstraint(
            "connection_id", "remote_id", name=op.f("uq_calendar_busy_connection_id_remote_id")
        ),
    )


def downgrade() -> None:
    op.drop_table("calendar_busy")
    op.drop_index("ix_sync_issues_local", table_name="sync_issues")
    op.drop_index("ix_sync_issues_open", table_name="sync_issues")
    op.drop_table("sync_issues")
    op.drop_table("sync_state")
    op.drop_index("ix_sync_items_connection_remote", table_name="sync_items")
    op.drop_table("sync_items")
