"""Automations: what happened in the school (domain events), the automations that act on it,
each run of an automation for one event with its attempts, and the follow-up tasks they make.

An event row is written in the same transaction as the change it tells of (a payment marked
succeeded, a lesson saved), so a crash can neither lose one nor invent one. `key`, where set,
makes an event once-only: a time-based trigger ("invoice overdue") records each subject once
for the date that made it due. A run is unique per (automation, event), so dispatching an
event twice, after a crash or a replay, can never run an automation for it twice.
"""

from __future__ import annotations

from datetime import date, datetime
from typing import Any

from sqlalchemy import JSON, BigInteger, ForeignKey, Index, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from app.store.base import Base, BigId, utcnow


class DomainEventRow(Base):
    """Something that happened: `type` is the trigger ("payment.succeeded"), the subject the
    record it is about, `payload` what conditions and webhooks read. `dispatched_at`: the
    runs it called for are made; `forwarded_at`: it was handed to the outbound webhooks."""

    __tablename__ = "events"
    __table_args__ = (
        Index("ix_events_undispatched", "dispatched_at"),
        Index("ix_events_unforwarded", "forwarded_at"),
        Index("ix_events_subject", "subject_kind", "subject_id"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    type: Mapped[str] = mapped_column(String(64))
    subject_kind: Mapped[str] = mapped_column(String(32))
    subject_id: Mapped[int | None] = mapped_column(BigInteger)
    payload: Mapped[dict[str, Any]] = mapped_column(default=dict)
    key: Mapped[str | None] = mapped_column(String(200), unique=True)
    occurred_at: Mapped[datetime] = mapped_column(default=utcnow, index=True)
    dispatched_at: Mapped[datetime | None]
    forwarded_at: Mapped[datetime | None]
    webhook_message_id: Mapped[str] = mapped_column(String(64), default="")


class AutomationRow(Base):
    """Trigger → conditions → actions. `conditions` and `actions` are small declarative lists
    (app/services/automations.py says what each may hold); `recipe` names a built-in recipe,
    which ships switched off."""

    __tablename__ = "automations"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    name: Mapped[str] = mapped_column(String(100), unique=True)
    description: Mapped[str] = mapped_column(Text, default="")
    trigger: Mapped[str] = mapped_column(String(64), index=True)
    conditions: Mapped[list[Any]] = mapped_column(JSON, default=list)
    actions: Mapped[list[Any]] = mapped_column(JSON, default=list)
    enabled: Mapped[bool] = mapped_column(default=False)
    recipe: Mapped[str | None] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)
    version: Mapped[int] = mapped_column(default=1)


class AutomationRunRow(Base):
    """One automation acting on one event. `status`: pending → running → succeeded, or
    retrying (waiting for `next_attempt_at`) and in the end failed, for a person to retry or
    dismiss. `steps` has an entry per action: whether it is done and what it made (the message
    send's batch id is written here *before* the send starts, so a retry resumes that send
    instead of sending again). While running, `next_attempt_at` is the claim's lease."""

    __tablename__ = "automation_runs"
    __table_args__ = (
        UniqueConstraint("automation_id", "event_id"),
        Index("ix_automation_runs_due", "status", "next_attempt_at"),
        Index("ix_automation_runs_automation", "automation_id", "id"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    automation_id: Mapped[int] = mapped_column(ForeignKey("automations.id", ondelete="CASCADE"))
    event_id: Mapped[int] = mapped_column(ForeignKey("events.id", ondelete="CASCADE"), index=True)
    status: Mapped[str] = mapped_column(String(16), default="pending")
    attempts: Mapped[int] = mapped_column(default=0)
    next_attempt_at: Mapped[datetime | None]
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    started_at: Mapped[datetime | None]
    finished_at: Mapped[datetime | None]
    error: Mapped[str] = mapped_column(Text, default="")
    outcome: Mapped[str] = mapped_column(Text, default="")  # what it did, in a sentence
    steps: Mapped[list[Any]] = mapped_column(JSON, default=list)
    # While running: the engine that claimed it (app/services/claims.py), so another engine
    # starting takes up only runs whose engine is gone or whose lease ran out.
    claimed_by: Mapped[str | None] = mapped_column(String(160))


class TaskRow(Base):
    """A follow-up for a person (call a family whose payment failed), made by an automation
    or by hand, about a record (`related_kind`, `related_id`)."""

    __tablename__ = "tasks"
    __table_args__ = (Index("ix_tasks_open", "done", "due_on"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    title: Mapped[str] = mapped_column(String(200))
    notes: Mapped[str] = mapped_column(Text, default="")
    due_on: Mapped[date | None]
    related_kind: Mapped[str] = mapped_column(String(32), default="")
    related_id: Mapped[int | None] = mapped_column(BigInteger)
    done: Mapped[bool] = mapped_column(default=False)
    done_at: Mapped[datetime | None]
    done_by: Mapped[str] = mapped_column(String(120), default="")
    automation_id: Mapped[int | None] = mapped_column(
        ForeignKey("automations.id", ondelete="SET NULL")
    )
    run_id: Mapped[int | None] = mapped_column(
        ForeignKey("automation_runs.id", ondelete="SET NULL")
    )
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
