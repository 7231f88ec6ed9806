"""lessons that repeat: a series and its occurrences

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-06 23:30:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0014"
down_revision: str | None = "0013"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "lesson_series",
        sa.Column("id", ID, nullable=False),
        sa.Column("teacher_id", ID, nullable=False),
        sa.Column("title", sa.String(length=100), nullable=False),
        sa.Column("rule", sa.String(length=200), nullable=False),
        sa.Column("timezone", sa.String(length=64), nullable=False),
        sa.Column("first_start", sa.DateTime(timezone=True), nullable=False),
        sa.Column("minutes", sa.Integer(), nullable=False),
        sa.Column("room_id", ID, nullable=True),
        sa.Column("online", sa.Boolean(), nullable=False),
        sa.Column("notes", sa.Text(), nullable=False),
        sa.Column("student_ids", sa.JSON(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(
            ["teacher_id"],
            ["teachers.id"],
            name=op.f("fk_lesson_series_teacher_id_teachers"),
            ondelete="RESTRICT",
        ),
        sa.ForeignKeyConstraint(
            ["room_id"],
            ["rooms.id"],
            name=op.f("fk_lesson_series_room_id_rooms"),
            ondelete="SET NULL",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_lesson_series")),
    )
    with op.batch_alter_table("lessons") as batch:
        batch.add_column(sa.Column("series_id", ID, nullable=True))
        batch.add_column(sa.Column("original_start", sa.DateTime(timezone=True), nullable=True))
        batch.create_index(op.f("ix_lessons_series_id"), ["series_id"], unique=False)
        batch.create_foreign_key(
            op.f("fk_lessons_series_id_lesson_series"),
            "lesson_series",
            ["series_id"],
            ["id"],
            ondelete="SET NULL",
        )


def downgrade() -> None:
    with op.batch_alter_table("lessons") as batch:
        batch.drop_constraint(op.f("fk_lessons_series_id_lesson_series"), type_="foreignkey")
        batch.drop_index(op.f("ix_lessons_series_id"))
        batch.drop_column("original_start")
        batch.drop_column("series_id")
    op.drop_table("lesson_series")
