"""What messaging providers' callbacks tell us: delivery reports move a message along (never
back: a late "sent" after "delivered" changes nothing), a failure says why, a bounce or an
unsubscribe adds an opt-out, and an SMS reply of "STOP" (or "START") changes the sender's.

Each provider kind's callback reader is in its module (`reads_deliveries`); this applies what
it read, inside the inbox's transaction. A report for a message whose send result is not
written yet (the provider answered the callback before the send's group commit) fails for
now and is tried again a few seconds later by the inbox.
"""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session

from app.domain.errors import SwitchboardError
from app.domain.messages import Channel, MessageStatus, advances, reply_intent
from app.providers.messaging import DELIVERY_PARSERS, Delivery, Reply
from app.services.inbox import InboxEvent
from app.services.inbox_worker import InboxWorker
from app.services.messaging import add_opt_out, remove_opt_out
from app.store.base import utcnow
from app.store.integration import ProviderConnection
from app.store.messaging import MessageRow

# How long a report for a message we cannot find yet is retried before it is let go (it may
# be about a message sent from the provider's own console).
UNKNOWN_GRACE = timedelta(minutes=10)
REPLY_CHANNELS = {"whatsapp": Channel.WHATSAPP}


class NotYetKnown(SwitchboardError):
    """A report came before the send that it is about was written; tried again shortly."""


def register(worker: InboxWorker) -> None:
    for kind in DELIVERY_PARSERS:
        worker.register(kind, "*", _apply)


def _apply(session: Session, event: InboxEvent) -> None:
    parser = DELIVERY_PARSERS.get(_kind(session, event))
    if parser is None:
        return
    for report in parser(event.event_type, event.body):
        if isinstance(report, Reply):
            _reply(session, event, report)
        else:
            _delivery(session, event, report)


def _kind(session: Session, event: InboxEvent) -> str:
    row = session.get(ProviderConnection, event.connection_id)
    return row.kind if row is not None else ""


def _delivery(session: Session, event: InboxEvent, report: Delivery) -> None:
    row = session.scalars(
        select(MessageRow).where(
            MessageRow.connection_id == event.connection_id,
            MessageRow.provider_id == report.provider_id,
        )
    ).first()
    if row is None:
        if utcnow() - event.received_at < UNKNOWN_GRACE:
            raise NotYetKnown(f"No message {report.provider_id} has been recorded yet.")
        return
    current = MessageStatus(row.status)
    if advances(current, report.status):
        row.status, row.status_at = report.status.value, utcnow()
        if report.error:
            row.error = report.error[:2000]
    if report.cost_minor is not None:
        row.cost_minor, row.currency = report.cost_minor, report.currency
    if report.opted_out:
        add_opt_out(session, row.channel, report.address or row.address, "provider", report.error)


def _reply(session: Session, event: InboxEvent, reply: Reply) -> None:
    intent = reply_intent(reply.text)
    if not intent or not reply.address:
        return
    kind = _kind(session, event)
    channel = REPLY_CHANNELS.get(kind, Channel.SMS).value
    if intent == "stop":
        add_opt_out(session, channel, reply.address, "reply", f"Replied “{reply.text.strip()}”")
    else:
        remove_opt_out(session, channel, reply.address)
