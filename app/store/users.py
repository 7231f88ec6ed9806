"""People who sign in, the service user, their one-time backup codes, and approvals.

A user's password is kept only as an Argon2id hash. The two-step sign-in's TOTP secret is
sealed (AES-GCM) with a key derived from the password, so the database alone never yields it
and another office PC on the same database can still check codes; a password reset by an
administrator therefore also removes the second step, which the person sets up again.

It replaces the first migration's placeholder `users` table (nothing ever wrote to it), which
migration 0021 drops.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, ForeignKey, Index, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from app.store.base import Base, BigId, utcnow


class UserRow(Base):
    __tablename__ = "users"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    name: Mapped[str] = mapped_column(String(100))  # as typed at creation, shown everywhere
    login: Mapped[str] = mapped_column(String(100), unique=True)  # name.casefold(): sign-in key
    role: Mapped[str] = mapped_column(String(32))
    service: Mapped[bool] = mapped_column(default=False)  # the engine's and the CLI's user
    password_hash: Mapped[str | None] = mapped_column(String(255))
    totp_sealed: Mapped[str | None] = mapped_column(Text)  # nonce + AES-GCM ciphertext, base64
    totp_salt: Mapped[str | None] = mapped_column(String(64))  # for the key from the password
    totp_last_step: Mapped[int | None]  # the newest time step used: a code works once
    failed_attempts: Mapped[int] = mapped_column(default=0)
    locked_until: Mapped[datetime | None]
    disabled: Mapped[bool] = mapped_column(default=False)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    last_sign_in_at: Mapped[datetime | None]


class BackupCodeRow(Base):
    """One of a user's one-time backup codes, hashed; `used_at` set when it was spent."""

    __tablename__ = "backup_codes"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    code_hash: Mapped[str] = mapped_column(String(255))
    used_at: Mapped[datetime | None]


class ApprovalRow(Base):
    """A risky action one person asked for and a second must approve before it happens."""

    __tablename__ = "approvals"
    __table_args__ = (Index("ix_approvals_status_requested", "status", "requested_at"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    action: Mapped[str] = mapped_column(String(40))  # "refund", "gateway.pause", ...
    record_kind: Mapped[str] = mapped_column(String(40))
    record_id: Mapped[str] = mapped_column(String(64))
    params: Mapped[dict[str, Any]] = mapped_column(JSON(), default=dict)
    summary: Mapped[str] = mapped_column(String(500))
    requested_by: Mapped[str] = mapped_column(String(100))
    requested_at: Mapped[datetime] = mapped_column(default=utcnow)
    status: Mapped[str] = mapped_column(String(20), default="waiting")
    decided_by: Mapped[str | None] = mapped_column(String(100))
    decided_at: Mapped[datetime | None]
    outcome: Mapped[str | None] = mapped_column(String(500))  # what happened, in one sentence
