"""Outbound webhooks: the endpoints a school registers to hear Switchboard's own events, each
event as it was emitted (a message, whose id is the `webhook-id` every try and replay repeats),
one delivery per endpoint per message, and a log of every try.

A signing secret is never stored here: an endpoint holds only the *name* it has in the
credential store (`app.services.secrets.SecretStore`), and during a rotation the name of the
previous one, which still signs until `previous_secret_expires_at`.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import ForeignKey, Index, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from app.store.base import Base, BigId, utcnow


class WebhookEndpointRow(Base):
    """A URL that receives our events. `event_types` empty means every type. `failing_since`
    is the first failed try since the last success (None while healthy): after five days of
    that the endpoint is disabled, and re-enabling it clears it."""

    __tablename__ = "webhook_endpoints"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    url: Mapped[str] = mapped_column(String(2000))
    description: Mapped[str] = mapped_column(Text, default="")
    event_types: Mapped[list[str]] = mapped_column(default=list)
    enabled: Mapped[bool] = mapped_column(default=True)
    disabled_reason: Mapped[str] = mapped_column(Text, default="")
    disabled_at: Mapped[datetime | None]
    secret_name: Mapped[str] = mapped_column(String(200))
    previous_secret_name: Mapped[str] = mapped_column(String(200), default="")
    previous_secret_expires_at: Mapped[datetime | None]
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    failing_since: Mapped[datetime | None]
    last_success_at: Mapped[datetime | None]
    # Made by another app through its API (a Zapier REST hook), not by a person: its 410 Gone
    # means "unsubscribed", so it is removed rather than disabled with an alert.
    subscription: Mapped[bool] = mapped_column(default=False, server_default="0")


class WebhookMessageRow(Base):
    """One event as emitted, kept so that every try and every replay sends the same body
    under the same id ("msg_…")."""

    __tablename__ = "webhook_messages"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    event_type: Mapped[str] = mapped_column(String(128), index=True)
    payload: Mapped[dict[str, Any]] = mapped_column(default=dict)
    created_at: Mapped[datetime] = mapped_column(default=utcnow, index=True)


class WebhookDeliveryRow(Base):
    """One message on its way to one endpoint.

    status: pending (not tried yet), failed (tried, another try at `next_attempt_at`),
    delivered, dead (every try failed: a dead letter), cancelled (the endpoint was disabled or
    a person cancelled it). A replay is a new row with `replay_of` naming the one replayed.
    """

    __tablename__ = "webhook_deliveries"
    __table_args__ = (
        Index("ix_webhook_deliveries_due", "status", "next_attempt_at"),
        Index("ix_webhook_deliveries_endpoint", "endpoint_id", "status"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    message_id: Mapped[str] = mapped_column(
        ForeignKey("webhook_messages.id", ondelete="CASCADE"), index=True
    )
    endpoint_id: Mapped[int] = mapped_column(ForeignKey("webhook_endpoints.id", ondelete="CASCADE"))
    status: Mapped[str] = mapped_column(String(16), default="pending")
    attempts: Mapped[int] = mapped_column(default=0)
    next_attempt_at: Mapped[datetime | None]
    last_status_code: Mapped[int | None]
    last_error: Mapped[str] = mapped_column(Text, default="")
    last_attempt_at: Mapped[datetime | None]
    delivered_at: Mapped[datetime | None]
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    replay_of: Mapped[int | None] = mapped_column(BigId)


class WebhookAttemptRow(Base):
    """One try of a delivery: when, the HTTP status (None when no answer came), how long it
    took, and what went wrong in a sentence (never the body or a secret)."""

    __tablename__ = "webhook_attempts"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    delivery_id: Mapped[int] = mapped_column(
        ForeignKey("webhook_deliveries.id", ondelete="CASCADE"), index=True
    )
    at: Mapped[datetime]
    status_code: Mapped[int | None]
    latency_ms: Mapped[int] = mapped_column(default=0)
    error: Mapped[str] = mapped_column(Text, default="")
