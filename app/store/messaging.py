"""Messages: the templates they are written from (a variant per language and channel), each
send (a batch: one message or thousands), every message with where it stands, and who asked
not to get messages on a channel.

A batch holds at most one message per channel and address (a unique constraint), so a send
that resumes after a crash can never add a second message for anyone; a message is marked
`sending` and committed before its provider is called, so one found in that state after a
crash is looked up at the provider rather than sent again.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import ForeignKey, Index, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from app.store.base import Base, BigId, utcnow


class TemplateRow(Base):
    __tablename__ = "message_templates"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    name: Mapped[str] = mapped_column(String(100), unique=True)
    description: Mapped[str] = mapped_column(Text, default="")
    # The names a template's text may use ({{ guardian.first_name }}...), for the editor.
    purpose: Mapped[str] = mapped_column(String(32), default="general")
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)
    version: Mapped[int] = mapped_column(default=1)


class TemplateVariantRow(Base):
    """A template's text in one language for one channel. E-mail: subject, text and HTML; SMS:
    text; WhatsApp: the approved template's name and its parameters (each a small template of
    its own), and text for replies inside the 24-hour window; push: title (subject) and body."""

    __tablename__ = "template_variants"
    __table_args__ = (UniqueConstraint("template_id", "language", "channel"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    template_id: Mapped[int] = mapped_column(ForeignKey("message_templates.id", ondelete="CASCADE"))
    language: Mapped[str] = mapped_column(String(16))
    channel: Mapped[str] = mapped_column(String(16))
    subject: Mapped[str] = mapped_column(Text, default="")
    text: Mapped[str] = mapped_column(Text, default="")
    html: Mapped[str] = mapped_column(Text, default="")
    whatsapp_template: Mapped[str] = mapped_column(String(200), default="")
    parameters: Mapped[list[str]] = mapped_column(default=list)


class MessageBatchRow(Base):
    """One send: to one person or an audience, prepared, then confirmed, then sent."""

    __tablename__ = "message_batches"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    template_id: Mapped[int | None] = mapped_column(
        ForeignKey("message_templates.id", ondelete="SET NULL")
    )
    title: Mapped[str] = mapped_column(String(200))
    channel: Mapped[str] = mapped_column(String(16), default="")  # "": each person's preferred
    audience: Mapped[dict[str, Any]] = mapped_column(default=dict)
    # prepared | sending | paused | cancelled | done
    status: Mapped[str] = mapped_column(String(16), default="prepared")
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    confirmed_at: Mapped[datetime | None]
    finished_at: Mapped[datetime | None]
    created_by: Mapped[str] = mapped_column(String(100), default="")
    message: Mapped[str] = mapped_column(Text, default="")  # why it paused, in a sentence
    # While sending: the engine sending it (app/services/claims.py) and until when its claim
    # holds unless renewed; another computer neither sends it meanwhile nor pauses it as
    # abandoned.
    sending_by: Mapped[str | None] = mapped_column(String(160))
    lease_until: Mapped[datetime | None]


class MessageRow(Base):
    __tablename__ = "messages"
    __table_args__ = (
        UniqueConstraint("batch_id", "channel", "address"),
        Index("ix_messages_batch_status", "batch_id", "status"),
        Index("ix_messages_provider", "connection_id", "provider_id"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    batch_id: Mapped[int] = mapped_column(ForeignKey("message_batches.id", ondelete="CASCADE"))
    channel: Mapped[str] = mapped_column(String(16))
    address: Mapped[str] = mapped_column(String(320))
    recipient_kind: Mapped[str] = mapped_column(String(16), default="")  # guardian | teacher
    recipient_id: Mapped[int | None]
    recipient_name: Mapped[str] = mapped_column(String(200), default="")
    language: Mapped[str] = mapped_column(String(16), default="en")
    subject: Mapped[str] = mapped_column(Text, default="")
    text: Mapped[str] = mapped_column(Text, default="")
    html: Mapped[str] = mapped_column(Text, default="")
    # WhatsApp: the approved template and its filled-in parameters.
    template_name: Mapped[str] = mapped_column(String(200), default="")
    parameters: Mapped[list[str]] = mapped_column(default=list)
    segments: Mapped[int] = mapped_column(default=0)
    status: Mapped[str] = mapped_column(String(16), default="prepared")
    connection_id: Mapped[int | None] = mapped_column(
        ForeignKey("provider_connections.id", ondelete="SET NULL")
    )
    provider_id: Mapped[str] = mapped_column(String(255), default="")
    error: Mapped[str] = mapped_column(Text, default="")
    cost_minor: Mapped[int | None]
    currency: Mapped[str] = mapped_column(String(3), default="")
    # E-mail: the token of its unsubscribe link ("" without one; app.services.unsubscribe).
    unsubscribe_token: Mapped[str] = mapped_column(
        String(64), default="", server_default="", index=True
    )
    unsubscribe_url: Mapped[str] = mapped_column(String(500), default="", server_default="")
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    sending_at: Mapped[datetime | None]  # when it was handed to the provider
    status_at: Mapped[datetime | None]


class OptOutRow(Base):
    """Someone who asked not to get messages on a channel (a STOP reply, an unsubscribe link,
    a bounce that said the address is gone, or the office)."""

    __tablename__ = "opt_outs"
    __table_args__ = (UniqueConstraint("channel", "address"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    channel: Mapped[str] = mapped_column(String(16))
    address: Mapped[str] = mapped_column(String(320))
    source: Mapped[str] = mapped_column(String(32))  # reply | unsubscribe | provider | office
    note: Mapped[str] = mapped_column(Text, default="")
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
