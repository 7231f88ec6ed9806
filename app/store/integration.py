"""The integration core: provider connections, what they said and what we owe them.

These tables are filled by later capabilities (connections, the webhook receiver, the outbox,
the audit trail); they exist from the first migration so the schema grows by addition.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, ForeignKey, Index, LargeBinary, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from app.store.base import Base, BigId, utcnow


class ProviderConnection(Base):
    """A configured provider. `config` holds only non-secret fields; secrets live in the
    credential store under the names in `secret_names`."""

    __tablename__ = "provider_connections"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    kind: Mapped[str] = mapped_column(String(64), index=True)
    name: Mapped[str] = mapped_column(String(100), unique=True)
    config: Mapped[dict[str, Any]] = mapped_column(default=dict)
    secret_names: Mapped[list[str]] = mapped_column(default=list)
    enabled: Mapped[bool] = mapped_column(default=True)
    webhook_token: Mapped[str | None] = mapped_column(String(64), unique=True)
    # Seconds between health checks; None: the provider kind's default.
    health_interval: Mapped[int | None]
    # Secrets the operator keeps outside Switchboard (a headless engine): field -> "env:NAME"
    # or "file:PATH", read when the secret is needed. A reference, never a value.
    secret_refs: Mapped[dict[str, Any]] = mapped_column(default=dict)
    # While a webhook signing secret is rotated: {"field", "current" (how many of the stored
    # space-separated secrets are the new ones, first), "until" (ISO instant the old ones stop)}.
    secret_rotation: Mapped[dict[str, Any] | None] = mapped_column(JSON())
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class HealthCheckRow(Base):
    """One scheduled health check: kept raw for 7 days, then only in the rollups."""

    __tablename__ = "health_checks"
    __table_args__ = (Index("ix_health_checks_connection_at", "connection_id", "at"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    connection_id: Mapped[int] = mapped_column(
        ForeignKey("provider_connections.id", ondelete="CASCADE")
    )
    at: Mapped[datetime] = mapped_column(default=utcnow, index=True)
    ok: Mapped[bool]
    latency_ms: Mapped[float]
    error_class: Mapped[str | None] = mapped_column(String(32))
    detail: Mapped[str] = mapped_column(String(300), default="")


class MetricRollup(Base):
    """A connection's traffic and checks over one minute, hour or day. Latencies are kept as a
    histogram over fixed buckets (app.services.metrics), so rollups merge exactly and
    percentiles can be estimated from any of them."""

    __tablename__ = "metric_rollups"

    connection_id: Mapped[int] = mapped_column(
        ForeignKey("provider_connections.id", ondelete="CASCADE"), primary_key=True
    )
    resolution: Mapped[str] = mapped_column(String(8), primary_key=True)
    bucket_start: Mapped[datetime] = mapped_column(primary_key=True)
    requests: Mapped[int] = mapped_column(default=0)
    failures: Mapped[int] = mapped_column(default=0)
    refused: Mapped[int] = mapped_column(default=0)
    latency_total_ms: Mapped[float] = mapped_column(default=0.0)
    latency_max_ms: Mapped[float] = mapped_column(default=0.0)
    histogram: Mapped[list[int]] = mapped_column(JSON(), default=list)
    checks: Mapped[int] = mapped_column(default=0)
    checks_ok: Mapped[int] = mapped_column(default=0)


class AlertRow(Base):
    """A notice that a connection went down, recovered, or had its breaker open."""

    __tablename__ = "alerts"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    at: Mapped[datetime] = mapped_column(default=utcnow, index=True)
    connection_id: Mapped[int | None] = mapped_column(
        ForeignKey("provider_connections.id", ondelete="SET NULL")
    )
    kind: Mapped[str] = mapped_column(String(32))
    message: Mapped[str] = mapped_column(String(500))
    seen: Mapped[bool] = mapped_column(default=False)


class CircuitStateRow(Base):
    """A circuit breaker's last state, so an open breaker stays open across a restart.
    `endpoint` is "" for the connection's own breaker."""

    __tablename__ = "circuit_state"

    connection_id: Mapped[int] = mapped_column(
        ForeignKey("provider_connections.id", ondelete="CASCADE"), primary_key=True
    )
    endpoint: Mapped[str] = mapped_column(String(64), primary_key=True, default="")
    state: Mapped[dict[str, Any]] = mapped_column(default=dict)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class RequestLogEntry(Base):
    """One call to a provider: enough to see what failed and how slowly, never a secret."""

    __tablename__ = "request_log"
    __table_args__ = (Index("ix_request_log_connection_at", "connection_id", "at"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    at: Mapped[datetime] = mapped_column(default=utcnow, index=True)
    connection_id: Mapped[int | None] = mapped_column(
        ForeignKey("provider_connections.id", ondelete="SET NULL")
    )
    operation: Mapped[str] = mapped_column(String(64))
    method: Mapped[str] = mapped_column(String(8))
    url: Mapped[str] = mapped_column(String(2000))
    status_code: Mapped[int | None]
    latency_ms: Mapped[float]
    error_class: Mapped[str | None] = mapped_column(String(64))
    attempt: Mapped[int] = mapped_column(default=1)


class WebhookInboxEntry(Base):
    """An event a provider sent us and we acknowledged: kept until processed, exactly once."""

    __tablename__ = "webhook_inbox"
    __table_args__ = (
        UniqueConstraint("connection_id", "provider_event_id"),
        Index("ix_webhook_inbox_status_next", "status", "next_attempt_at"),
        Index("ix_webhook_inbox_received_at", "received_at"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    connection_id: Mapped[int] = mapped_column(
        ForeignKey("provider_connections.id", ondelete="RESTRICT")
    )
    provider_event_id: Mapped[str] = mapped_column(String(200))
    event_type: Mapped[str] = mapped_column(String(200), default="")
    received_at: Mapped[datetime] = mapped_column(default=utcnow)
    headers: Mapped[dict[str, Any]] = mapped_column(default=dict)
    body: Mapped[bytes] = mapped_column(LargeBinary)
    status: Mapped[str] = mapped_column(String(16), default="received")
    attempts: Mapped[int] = mapped_column(default=0)
    next_attempt_at: Mapped[datetime | None]
    last_error: Mapped[str | None] = mapped_column(Text)
    processed_at: Mapped[datetime | None]


class OutboxEntry(Base):
    """An effect on the outside world we have decided on and must deliver at least once;
    `idempotency_key` lets the receiving side deduplicate."""

    __tablename__ = "outbox"
    __table_args__ = (Index("ix_outbox_status_next", "status", "next_attempt_at"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    topic: Mapped[str] = mapped_column(String(64))
    idempotency_key: Mapped[str] = mapped_column(String(200), unique=True)
    payload: Mapped[dict[str, Any]] = mapped_column(default=dict)
    status: Mapped[str] = mapped_column(String(16), default="pending")
    attempts: Mapped[int] = mapped_column(default=0)
    next_attempt_at: Mapped[datetime | None]
    last_error: Mapped[str | None] = mapped_column(Text)
    done_at: Mapped[datetime | None]


class SettingRow(Base):
    """A user setting (declared in app.config) or a piece of the app's own state."""

    __tablename__ = "settings"

    key: Mapped[str] = mapped_column(String(100), primary_key=True)
    value: Mapped[Any] = mapped_column(JSON())
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class JobRun(Base):
    """One run of a background job: what the history view and the status bar show."""

    __tablename__ = "job_runs"
    __table_args__ = (Index("ix_job_runs_job_started", "job_id", "started_at"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    job_id: Mapped[str] = mapped_column(String(64))
    started_at: Mapped[datetime] = mapped_column(default=utcnow)
    finished_at: Mapped[datetime | None]
    outcome: Mapped[str] = mapped_column(String(16), default="running")
    counts: Mapped[dict[str, Any]] = mapped_column(default=dict)
    error: Mapped[str | None] = mapped_column(Text)


class ScheduleTick(Base):
    """One start of a scheduled job, on whichever engine led at the time. Several computers
    may share one database; these keep each job to once per interval across them, also when
    the lead passes from one to another (app/services/leadership.py)."""

    __tablename__ = "schedule_ticks"
    __table_args__ = (Index("ix_schedule_ticks_job_at", "job_id", "at"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    job_id: Mapped[str] = mapped_column(String(64))
    at: Mapped[datetime]
    engine: Mapped[str] = mapped_column(String(160))
