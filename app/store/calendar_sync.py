"""Calendar sync: per connection, each record it mirrors with what both sides agreed on at the
last sync, where reading the calendar's changes stopped, and what waits for a person (a move
the teacher made in the calendar, a lesson changed on both sides, a double booking).

Content is compared by hashes of its normalized form (`app.domain.sync.EventContent`), never
by the bytes either side wrote; the etag is kept only for the next conditional write.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import BigInteger, ForeignKey, Index, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from app.store.base import Base, BigId, utcnow


class SyncItemRow(Base):
    """One local record and its event in one calendar. Until the event exists, `remote_id` is
    empty and `event_id` is the id it will be created under (the same after a crash, so a
    create repeated cannot make a second event). The hashes are empty until both sides agreed
    once."""

    __tablename__ = "sync_items"
    __table_args__ = (
        UniqueConstraint("connection_id", "local_kind", "local_id"),
        Index("ix_sync_items_connection_remote", "connection_id", "remote_id"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    connection_id: Mapped[int] = mapped_column(
        ForeignKey("provider_connections.id", ondelete="CASCADE")
    )
    local_kind: Mapped[str] = mapped_column(String(16))  # lesson
    local_id: Mapped[int] = mapped_column(BigInteger)
    event_id: Mapped[str] = mapped_column(String(64))
    remote_id: Mapped[str] = mapped_column(String(1024), default="")
    remote_etag: Mapped[str] = mapped_column(String(255), default="")
    local_hash: Mapped[str] = mapped_column(String(64), default="")
    remote_hash: Mapped[str] = mapped_column(String(64), default="")
    meet_link: Mapped[str] = mapped_column(String(500), default="")
    link: Mapped[str] = mapped_column(String(1000), default="")
    synced_at: Mapped[datetime | None]


class SyncStateRow(Base):
    """Where one connection's sync stands: the calendar's token for what changed since, the
    last run and its outcome, and deletions held back until a person confirms them."""

    __tablename__ = "sync_state"

    connection_id: Mapped[int] = mapped_column(
        ForeignKey("provider_connections.id", ondelete="CASCADE"), primary_key=True
    )
    token: Mapped[str] = mapped_column(Text, default="")
    started_at: Mapped[datetime | None]
    finished_at: Mapped[datetime | None]
    outcome: Mapped[str] = mapped_column(String(16), default="")  # ok | partial | failed | held
    counts: Mapped[dict[str, Any]] = mapped_column(default=dict)
    message: Mapped[str] = mapped_column(Text, default="")
    held: Mapped[dict[str, Any]] = mapped_column(default=dict)  # {"token", "reason"} to confirm
    channel: Mapped[dict[str, Any]] = mapped_column(default=dict)  # push channel, where used


class SyncIssueRow(Base):
    """Something a person decides: a move or cancellation the teacher made in the calendar (a
    proposal), a lesson changed on both sides (a conflict), or a double booking. Both versions
    are kept as they were when it was found; resolving keeps the row with who and how."""

    __tablename__ = "sync_issues"
    __table_args__ = (
        Index("ix_sync_issues_open", "resolved_at", "connection_id"),
        Index("ix_sync_issues_local", "local_kind", "local_id"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    connection_id: Mapped[int | None] = mapped_column(
        ForeignKey("provider_connections.id", ondelete="CASCADE")
    )
    kind: Mapped[str] = mapped_column(String(16))  # move | cancel | conflict | double_booking
    local_kind: Mapped[str] = mapped_column(String(16), default="lesson")
    local_id: Mapped[int] = mapped_column(BigInteger)
    remote_id: Mapped[str] = mapped_column(String(1024), default="")
    remote_etag: Mapped[str] = mapped_column(String(255), default="")
    school: Mapped[dict[str, Any]] = mapped_column(default=dict)  # the school's version
    calendar: Mapped[dict[str, Any]] = mapped_column(default=dict)  # the calendar's version
    detail: Mapped[str] = mapped_column(Text, default="")
    found_at: Mapped[datetime] = mapped_column(default=utcnow)
    resolved_at: Mapped[datetime | None]
    resolution: Mapped[str] = mapped_column(String(16), default="")
    resolved_by: Mapped[str] = mapped_column(String(120), default="")


class BusyRow(Base):
    """An event of the teacher's own in their calendar (not a lesson): when they are busy, so
    a lesson at the same time is a double booking to tell the office of."""

    __tablename__ = "calendar_busy"
    __table_args__ = (UniqueConstraint("connection_id", "remote_id"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    connection_id: Mapped[int] = mapped_column(
        ForeignKey("provider_connections.id", ondelete="CASCADE")
    )
    remote_id: Mapped[str] = mapped_column(String(1024))
    starts_at: Mapped[datetime]
    ends_at: Mapped[datetime]
    summary: Mapped[str] = mapped_column(String(300), default="")
