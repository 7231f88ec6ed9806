"""Payments: one row per logical payment (what the bursar asked for), one per attempt at a
gateway, and one per refund.

A payment's row, with its idempotency key, is committed before any gateway is called, and each
attempt's row (with its own reference) before its request is sent: whatever happens next, a
restart finds what was asked, where, and under which reference to look it up.
"""

from __future__ import annotations

from datetime import date, datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    ForeignKey,
    Index,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import Mapped, mapped_column

from app.store.base import Base, BigId, utcnow

# Minor units need 64 bits: 50 million rupiah is 5 billion sen.
Minor = BigInteger


class PaymentRow(Base):
    __tablename__ = "payments"
    __table_args__ = (
        CheckConstraint("amount_minor > 0", name="amount_positive"),
        CheckConstraint("refunded_minor >= 0", name="refunded_not_negative"),
        CheckConstraint("refunded_minor <= amount_minor", name="refunds_within_amount"),
        Index("ix_payments_status_created", "status", "created_at"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    reference: Mapped[str] = mapped_column(String(64), unique=True)
    # The caller's key for this payment (an invoice's billing-run entry, a form submission):
    # the same key again returns this payment; with other parameters it is refused.
    idempotency_key: Mapped[str] = mapped_column(String(200), unique=True)
    request_digest: Mapped[str] = mapped_column(String(64))
    invoice_id: Mapped[int | None] = mapped_column(
        ForeignKey("invoices.id", ondelete="RESTRICT"), index=True
    )
    guardian_id: Mapped[int | None] = mapped_column(
        ForeignKey("guardians.id", ondelete="RESTRICT"), index=True
    )
    amount_minor: Mapped[int] = mapped_column(Minor)
    currency: Mapped[str] = mapped_column(String(3))
    method: Mapped[str] = mapped_column(String(32))
    status: Mapped[str] = mapped_column(String(16), default="pending")
    connection_id: Mapped[int | None] = mapped_column(
        ForeignKey("provider_connections.id", ondelete="RESTRICT"), index=True
    )
    gateway_id: Mapped[str] = mapped_column(String(200), default="")
    fee_minor: Mapped[int | None] = mapped_column(Minor)
    # Refunded, or being refunded: a refund reserves its amount here before the gateway is
    # asked, so refunds made at the same time can never add up to more than was paid.
    refunded_minor: Mapped[int] = mapped_column(Minor, default=0)
    failure_kind: Mapped[str | None] = mapped_column(String(32))
    failure_code: Mapped[str | None] = mapped_column(String(200))
    failure_message: Mapped[str | None] = mapped_column(Text)
    description: Mapped[str] = mapped_column(String(200), default="")
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class PaymentAttemptRow(Base):
    __tablename__ = "payment_attempts"
    __table_args__ = (
        Index("ix_payment_attempts_connection_started", "connection_id", "started_at"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    payment_id: Mapped[int] = mapped_column(
        ForeignKey("payments.id", ondelete="CASCADE"), index=True
    )
    number: Mapped[int]
    reference: Mapped[str] = mapped_column(String(80), unique=True)
    connection_id: Mapped[int] = mapped_column(
        ForeignKey("provider_connections.id", ondelete="RESTRICT")
    )
    # sent: the request may have reached the gateway, outcome not yet known
    status: Mapped[str] = mapped_column(String(16), default="sent")
    # What was sent, so that asking the gateway about it later repeats it exactly.
    token: Mapped[str] = mapped_column(String(200), default="", server_default="")
    customer: Mapped[str] = mapped_column(String(200), default="", server_default="")
    gateway_id: Mapped[str] = mapped_column(String(200), default="")
    failure_kind: Mapped[str | None] = mapped_column(String(32))
    failure_code: Mapped[str | None] = mapped_column(String(200))
    failure_message: Mapped[str | None] = mapped_column(Text)
    # Why this gateway: the router's explanation, kept with the attempt.
    decision: Mapped[dict[str, Any]] = mapped_column(default=dict)
    started_at: Mapped[datetime] = mapped_column(default=utcnow)
    finished_at: Mapped[datetime | None]
    latency_ms: Mapped[float | None]


class RefundRow(Base):
    __tablename__ = "refunds"
    __table_args__ = (CheckConstraint("amount_minor > 0", name="amount_positive"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    payment_id: Mapped[int] = mapped_column(
        ForeignKey("payments.id", ondelete="RESTRICT"), index=True
    )
    reference: Mapped[str] = mapped_column(String(80), unique=True)
    amount_minor: Mapped[int] = mapped_column(Minor)
    currency: Mapped[str] = mapped_column(String(3))
    status: Mapped[str] = mapped_column(String(16), default="pending")
    gateway_id: Mapped[str] = mapped_column(String(200), default="")
    failure_message: Mapped[str | None] = mapped_column(Text)
    reason: Mapped[str] = mapped_column(String(200), default="")
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class PaymentMethodRow(Base):
    """A payer's payment method saved at one gateway: the gateway's token for it (and its id for
    the payer, where it keeps payers). A card saved at two gateways is two rows."""

    __tablename__ = "payment_methods"
    __table_args__ = (UniqueConstraint("connection_id", "token"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    guardian_id: Mapped[int] = mapped_column(
        ForeignKey("guardians.id", ondelete="CASCADE"), index=True
    )
    connection_id: Mapped[int] = mapped_column(
        ForeignKey("provider_connections.id", ondelete="CASCADE")
    )
    method: Mapped[str] = mapped_column(String(32))
    token: Mapped[str] = mapped_column(String(200))
    customer: Mapped[str] = mapped_column(String(200), default="")
    label: Mapped[str] = mapped_column(String(100), default="")
    country: Mapped[str] = mapped_column(String(2), default="")  # the issuer's
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class BillingRunRow(Base):
    """One billing run: the invoices due by a date, charged together."""

    __tablename__ = "billing_runs"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    due_before: Mapped[date]
    # prepared → running → finished; paused and canceled by a person
    status: Mapped[str] = mapped_column(String(16), default="prepared")
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    finished_at: Mapped[datetime | None]


class BillingItemRow(Base):
    """One invoice in a billing run, and what became of it."""

    __tablename__ = "billing_items"
    __table_args__ = (
        UniqueConstraint("run_id", "invoice_id"),
        Index("ix_billing_items_run_status", "run_id", "status"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    run_id: Mapped[int] = mapped_column(ForeignKey("billing_runs.id", ondelete="CASCADE"))
    invoice_id: Mapped[int] = mapped_column(ForeignKey("invoices.id", ondelete="RESTRICT"))
    guardian_id: Mapped[int | None] = mapped_column(ForeignKey("guardians.id", ondelete="RESTRICT"))
    amount_minor: Mapped[int] = mapped_column(Minor)
    currency: Mapped[str] = mapped_column(String(3))
    # waiting → charging → succeeded | failed | unknown; skipped when it cannot be charged
    status: Mapped[str] = mapped_column(String(16), default="waiting")
    tries: Mapped[int] = mapped_column(default=0)  # a retry of a failed one is a new payment
    payment_id: Mapped[int | None] = mapped_column(ForeignKey("payments.id", ondelete="SET NULL"))
    message: Mapped[str] = mapped_column(Text, default="")
    # While charging: the engine charging it (app/services/claims.py) and until when; another
    # engine working the same run takes it only when that engine is gone or the lease ran out.
    charging_by: Mapped[str | None] = mapped_column(String(160))
    lease_until: Mapped[datetime | None]


class ExchangeRateRow(Base):
    """One published rate: on a day, from a source, units of `currency` per unit of `base`,
    kept as the exact decimal text it was published as."""

    __tablename__ = "exchange_rates"
    __table_args__ = (
        UniqueConstraint("connection_id", "on", "base", "currency"),
        Index("ix_exchange_rates_pair_on", "base", "currency", "on"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    connection_id: Mapped[int] = mapped_column(
        ForeignKey("provider_connections.id", ondelete="CASCADE")
    )
    on: Mapped[date]
    base: Mapped[str] = mapped_column(String(3))
    currency: Mapped[str] = mapped_column(String(3))
    rate: Mapped[str] = mapped_column(String(40))
    fetched_at: Mapped[datetime] = mapped_column(default=utcnow)


class RoutingRuleRow(Base):
    """An administrator's routing rule (app/domain/routing_rules.py); `position` orders them,
    the first that matches a payment decides. `gateways` holds connection ids, preferred first;
    a connection removed later simply no longer takes anything."""

    __tablename__ = "routing_rules"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    position: Mapped[int] = mapped_column(default=0)
    currency: Mapped[str] = mapped_column(String(3), default="")
    method: Mapped[str] = mapped_column(String(32), default="")
    country: Mapped[str] = mapped_column(String(2), default="")
    min_minor: Mapped[int | None] = mapped_column(Minor)
    max_minor: Mapped[int | None] = mapped_column(Minor)
    gateways: Mapped[list[str]] = mapped_column(default=list)
    note: Mapped[str] = mapped_column(String(200), default="")
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)
