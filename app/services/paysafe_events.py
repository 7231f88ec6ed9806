"""What Paysafe's webhooks say about payments and refunds, applied to them.

Paysafe posts `{"eventName", "resourceId", "payload": {…the payment or refund…}}`; the payload
carries our reference as `merchantRefNum`, so an event about a charge whose answer never came
still finds its attempt. The rules of app/services/payment_events.py apply: events come at least
once and in any order, handlers run inside the inbox's transaction (no network here) and only
move a payment or refund forward.

Relied on: developer.paysafe.com, Payments API "Configure Webhooks" and its webhook payload
samples (the envelope, and event names PAYMENT_COMPLETED, PAYMENT_FAILED, PAYMENT_CANCELLED,
PAYMENT_ERRORED, PAYMENT_EXPIRED, PAYMENT_HELD, REFUND_COMPLETED, REFUND_FAILED,
REFUND_CANCELLED, REFUND_ERRORED).
"""

from __future__ import annotations

import json
from typing import Any

from sqlalchemy.orm import Session

from app.domain.payments import Failure, FailureKind
from app.providers.paysafe import decline_of
from app.services.inbox import InboxEvent
from app.services.inbox_worker import InboxWorker
from app.services.payment_events import attempt_outcome, refund_outcome
from app.services.payments import FAILED, PROCESSING, SUCCEEDED

KIND = "paysafe"
PAYMENT_EVENTS = {
    "PAYMENT_COMPLETED": SUCCEEDED,
    "PAYMENT_HELD": PROCESSING,
    "PAYMENT_FAILED": FAILED,
    "PAYMENT_CANCELLED": FAILED,
    "PAYMENT_ERRORED": FAILED,
    "PAYMENT_EXPIRED": FAILED,
}
REFUND_EVENTS = {
    "REFUND_COMPLETED": "succeeded",
    "REFUND_FAILED": "failed",
    "REFUND_ERRORED": "failed",
    "REFUND_CANCELLED": "canceled",
}
FAILURES = {
    "PAYMENT_CANCELLED": Failure(
        FailureKind.HARD_DECLINE, "CANCELLED", "The payment was cancelled at Paysafe."
    ),
    "PAYMENT_ERRORED": Failure(
        FailureKind.TECHNICAL, "ERRORED", "Paysafe could not process the payment."
    ),
    "PAYMENT_EXPIRED": Failure(
        FailureKind.TECHNICAL, "EXPIRED", "The payment expired at Paysafe before it was made."
    ),
}


def register(worker: InboxWorker) -> None:
    for event_type in PAYMENT_EVENTS:
        worker.register(KIND, event_type, _payment)
    for event_type in REFUND_EVENTS:
        worker.register(KIND, event_type, _refund)


def _payload(event: InboxEvent) -> dict[str, Any]:
    body = json.loads(event.body)
    found = body.get("payload") if isinstance(body, dict) else None
    if not isinstance(found, dict):
        raise ValueError("the event has no payload")
    return found


def _payment(session: Session, event: InboxEvent) -> None:
    payment = _payload(event)
    status = PAYMENT_EVENTS[event.event_type]
    failure = _failure(event.event_type, payment) if status == FAILED else None
    reference = payment.get("merchantRefNum")
    attempt_outcome(
        session,
        event,
        reference if isinstance(reference, str) else "",
        status,
        str(payment.get("id") or ""),
        failure,
    )


def _failure(event_type: str, payment: dict[str, Any]) -> Failure:
    error = payment.get("error")
    if isinstance(error, dict) and error.get("code"):
        return decline_of(
            str(error["code"]), str(error.get("message") or "Paysafe declined the payment.")
        )
    return FAILURES.get(
        event_type,
        decline_of("declined", "Paysafe declined the payment"),
    )


def _refund(session: Session, event: InboxEvent) -> None:
    refund = _payload(event)
    error = refund.get("error")
    reason = str(error.get("message") or "") if isinstance(error, dict) else ""
    reference = refund.get("merchantRefNum")
    refund_outcome(
        session,
        str(refund.get("id") or ""),
        reference if isinstance(reference, str) else "",
        REFUND_EVENTS[event.event_type],
        reason,
    )
