"""What gateways' webhooks tell us about payments and refunds, applied to them.

Each handler runs inside the inbox's transaction (app/services/inbox_worker.py), so an event is
applied exactly once. Events come at least once and in any order, so a handler only ever moves
a payment forward: a payment that went through stays through (only refunds change it), a late
"processing" never undoes an outcome, and a success arriving after a failure wins, because the
money did move.

The payment is found by our attempt's reference, which every charge carries in the gateway's
metadata, so an event about a charge whose answer we never got still finds its payment.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from app.domain.payments import Failure, FailureKind
from app.providers.stripe import REFERENCE_KEY, decline_of
from app.services.domain_events import record_refund
from app.services.inbox import InboxEvent
from app.services.inbox_worker import InboxWorker
from app.services.payments import FAILED, PROCESSING, SUCCEEDED, advance_attempt
from app.store.payments import PaymentAttemptRow, PaymentRow, RefundRow

log = logging.getLogger("switchboard.payments")

STRIPE_INTENT_EVENTS = {
    "payment_intent.succeeded": SUCCEEDED,
    "payment_intent.processing": PROCESSING,
    "payment_intent.payment_failed": FAILED,
    "payment_intent.canceled": FAILED,
}
STRIPE_REFUND_EVENTS = (
    "refund.created",
    "refund.updated",
    "refund.failed",
    "charge.refund.updated",
)


def register(worker: InboxWorker) -> None:
    for event_type in STRIPE_INTENT_EVENTS:
        worker.register("stripe", event_type, _stripe_intent)
    for event_type in STRIPE_REFUND_EVENTS:
        worker.register("stripe", event_type, _stripe_refund)


def _object(event: InboxEvent) -> dict[str, Any]:
    body = json.loads(event.body)
    found = body.get("data", {}).get("object") if isinstance(body, dict) else None
    if not isinstance(found, dict):
        raise ValueError("the event has no data.object")
    return found


def _stripe_intent(session: Session, event: InboxEvent) -> None:
    intent = _object(event)
    status = STRIPE_INTENT_EVENTS[event.event_type]
    metadata = intent.get("metadata") or {}
    reference = metadata.get(REFERENCE_KEY) if isinstance(metadata, dict) else None
    failure: Failure | None = None
    if status == FAILED:
        error = intent.get("last_payment_error") or {}
        failure = (
            decline_of(
                str(error.get("code") or "card_declined"),
                str(error.get("decline_code") or ""),
                str(error.get("message") or "The payment failed."),
            )
            if event.event_type == "payment_intent.payment_failed"
            else Failure(FailureKind.HARD_DECLINE, "canceled", "The payment was canceled.")
        )
    attempt_outcome(
        session,
        event,
        reference if isinstance(reference, str) else "",
        status,
        str(intent.get("id", "")),
        failure,
    )


def attempt_outcome(
    session: Session,
    event: InboxEvent,
    reference: str,
    status: str,
    gateway_id: str = "",
    failure: Failure | None = None,
) -> None:
    """What a gateway says became of one attempt, found by our attempt `reference`, or for
    gateways whose events do not carry it, by the gateway's id of the payment at the event's
    connection: moved forward, never back, with its payment. For every gateway's handlers."""
    attempt = None
    if reference:
        attempt = session.scalar(
            select(PaymentAttemptRow).where(PaymentAttemptRow.reference == reference)
        )
    elif gateway_id:
        attempt = session.scalar(
            select(PaymentAttemptRow)
            .where(PaymentAttemptRow.connection_id == event.connection_id)
            .where(PaymentAttemptRow.gateway_id == gateway_id)
            .order_by(PaymentAttemptRow.id.desc())
            .limit(1)
        )
    if attempt is None:
        # Not a payment Switchboard made (taken in the gateway's dashboard, say).
        log.info(
            "gateway event about a payment we did not make",
            extra={"event": event.id, "connection": event.connection_id},
        )
        return
    advance_attempt(session, attempt, status, gateway_id, failure)


def _stripe_refund(session: Session, event: InboxEvent) -> None:
    found = _object(event)
    # charge.refund.updated and refund.* carry the refund itself.
    if found.get("object") != "refund":
        return
    metadata = found.get("metadata") or {}
    reference = metadata.get(REFERENCE_KEY) if isinstance(metadata, dict) else None
    refund_outcome(
        session,
        str(found.get("id", "")),
        reference if isinstance(reference, str) else "",
        str(found.get("status", "")),
        str(found.get("failure_reason") or ""),
    )


def refund_outcome(
    session: Session, gateway_id: str, reference: str, status: str, reason: str = ""
) -> None:
    """What a gateway says became of a refund (found by its id there, else by our reference):
    "succeeded", "failed" or "canceled"; anything else ("pending") changes nothing."""
    row = None
    if gateway_id:
        row = session.scalar(select(RefundRow).where(RefundRow.gateway_id == gateway_id))
    if row is None and reference:
        row = session.scalar(select(RefundRow).where(RefundRow.reference == reference))
    if row is None:
        return
    if status == row.status or status not in ("succeeded", "failed", "canceled"):
        return  # "pending" never moves a refund back
    if status == "succeeded":
        if row.status in ("failed", "canceled"):
            # Marked failed here, but the gateway made it after all: the money left, so it
            # counts against the payment again.
            counted = session.execute(
                update(PaymentRow)
                .where(PaymentRow.id == row.payment_id)
                .where(PaymentRow.refunded_minor + row.amount_minor <= PaymentRow.amount_minor)
                .values(refunded_minor=PaymentRow.refunded_minor + row.amount_minor)
            )
            if counted.rowcount != 1:  # type: ignore[attr-defined]
                # Refunded again meanwhile: more went back than was paid.
                log.error("refunds exceed the payment", extra={"refund": row.reference})
        row.status = status
        row.failure_message = None
        row.gateway_id = gateway_id or row.gateway_id
        record_refund(session, row)
        return
    # Failed or canceled (a refund can fail even after it succeeded, when the card was closed):
    # the money is back with the school, so the amount can be refunded again.
    if row.status in ("failed", "canceled"):
        return
    session.execute(
        update(PaymentRow)
        .where(PaymentRow.id == row.payment_id)
        .values(refunded_minor=PaymentRow.refunded_minor - row.amount_minor)
    )
    row.failure_message = reason or "The gateway could not refund it."
    row.gateway_id = gateway_id or row.gateway_id
    row.status = status
