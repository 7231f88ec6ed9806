"""The audit trail: one row per state-changing action (who, what, which record, a before/after
summary, when, from which machine), each row chained to the one before it by a SHA-256 hash.

`seq` is a gapless sequence number (1, 2, 3, ...) separate from the row id, so a deleted row
shows as a gap and a reordered one as a sequence whose hashes no longer link; see
`app.services.audit` for how the chain is written and verified.

It replaces the first migration's placeholder `audit_log` table (no sequence number, nothing
writing to it), which migration 0020 drops.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, Index, String
from sqlalchemy.orm import Mapped, mapped_column

from app.store.base import Base, BigId, utcnow


class AuditRow(Base):
    __tablename__ = "audit_trail"
    __table_args__ = (Index("ix_audit_trail_record", "record_kind", "record_id"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    seq: Mapped[int] = mapped_column(BigId, unique=True)
    at: Mapped[datetime] = mapped_column(default=utcnow, index=True)
    actor: Mapped[str] = mapped_column(String(100))  # a user name, or "office", "engine"...
    machine: Mapped[str] = mapped_column(String(255))  # the host name it was done from
    action: Mapped[str] = mapped_column(String(64), index=True)  # "connection.added"
    record_kind: Mapped[str] = mapped_column(String(64))  # "connection", "refund"
    record_id: Mapped[str] = mapped_column(String(64))
    # {"before": {...} | None, "after": {...} | None}: never a secret.
    summary: Mapped[dict[str, Any]] = mapped_column(JSON())
    prev_hash: Mapped[str] = mapped_column(String(64))
    hash: Mapped[str] = mapped_column(String(64))
