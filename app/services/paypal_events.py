"""What PayPal's webhooks tell us about payments and refunds, applied through the gateway-neutral
`attempt_outcome` and `refund_outcome` (app/services/payment_events.py).

A capture's event carries our attempt's reference as its `custom_id` and the order, which is
the payment's id at PayPal, as `supplementary_data.related_ids.order_id`. A refund's event
(PAYMENT.CAPTURE.REFUNDED) carries the refund, with our refund's reference as its `custom_id`.

CHECKOUT.ORDER.APPROVED (a payer approved a payment link) changes nothing here: the order must
still be captured, which is a call to PayPal, and handlers run inside the inbox's database
transaction, where no network call belongs (it would hold the transaction open for as long as
PayPal takes, and a rollback could not take the capture back). The payments sync captures an
approved order when it next asks about it (PayPal keeps an approval for hours, the sync asks
every minute or two), with a request ID of its own so a capture is never made twice; the
capture's own event then settles the payment.

Relied on: PayPal's "Webhook event names" (Payments v2 and Orders) and the capture and refund
resources of Payments v2.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from sqlalchemy.orm import Session

from app.domain.payments import Failure
from app.providers.paypal import capture_failure
from app.services.inbox import InboxEvent
from app.services.inbox_worker import InboxWorker
from app.services.payment_events import attempt_outcome, refund_outcome
from app.services.payments import FAILED, PROCESSING, SUCCEEDED

log = logging.getLogger("switchboard.payments")

KIND = "paypal"
CAPTURE_EVENTS = {
    "PAYMENT.CAPTURE.COMPLETED": SUCCEEDED,
    "PAYMENT.CAPTURE.PENDING": PROCESSING,
    "PAYMENT.CAPTURE.DECLINED": FAILED,
    "PAYMENT.CAPTURE.DENIED": FAILED,
}
REFUND_STATUSES = {
    "COMPLETED": "succeeded",
    "FAILED": "failed",
    "CANCELLED": "canceled",
    "PENDING": "pending",
}


def register(worker: InboxWorker) -> None:
    for event_type in CAPTURE_EVENTS:
        worker.register(KIND, event_type, _capture)
    worker.register(KIND, "PAYMENT.CAPTURE.REFUNDED", _refund)
    worker.register(KIND, "PAYMENT.CAPTURE.REVERSED", _reversed)
    worker.register(KIND, "CHECKOUT.ORDER.APPROVED", _approved)


def _resource(event: InboxEvent) -> dict[str, Any]:
    body = json.loads(event.body)
    found = body.get("resource") if isinstance(body, dict) else None
    if not isinstance(found, dict):
        raise ValueError("the event has no resource")
    return found


def _order_id(capture: dict[str, Any]) -> str:
    data = capture.get("supplementary_data")
    related = data.get("related_ids") if isinstance(data, dict) else None
    order_id = related.get("order_id") if isinstance(related, dict) else None
    return order_id if isinstance(order_id, str) else ""


def _text(value: Any) -> str:
    return value if isinstance(value, str) else ""


def _capture(session: Session, event: InboxEvent) -> None:
    capture = _resource(event)
    status = CAPTURE_EVENTS[event.event_type]
    failure: Failure | None = capture_failure(capture) if status == FAILED else None
    attempt_outcome(
        session,
        event,
        _text(capture.get("custom_id")),
        status,
        _order_id(capture),
        failure,
    )


def _refund(session: Session, event: InboxEvent) -> None:
    refund = _resource(event)
    details = refund.get("status_details")
    reason = _text(details.get("reason")) if isinstance(details, dict) else ""
    refund_outcome(
        session,
        _text(refund.get("id")),
        _text(refund.get("custom_id")),
        REFUND_STATUSES.get(_text(refund.get("status")), "pending"),
        f"PayPal could not make the refund ({reason.replace('_', ' ').lower()})."
        if reason
        else "PayPal could not make the refund.",
    )


def _reversed(_session: Session, event: InboxEvent) -> None:
    # PayPal took a payment back (a chargeback, or the payer's bank reversed it). Switchboard
    # has no record for money taken back by others, so the office is told through the log.
    resource = _resource(event)
    log.error(
        "PayPal reversed a payment: the money went back to the payer",
        extra={
            "event": event.id,
            "connection": event.connection_id,
            "reference": _text(resource.get("custom_id")),
            "gateway_id": _text(resource.get("id")),
        },
    )


def _approved(_session: Session, event: InboxEvent) -> None:
    # Captured by the payments sync, not here (see the module docstring).
    log.info(
        "a payer approved a PayPal order; the payments sync will capture it",
        extra={"event": event.id, "gateway_id": _text(_resource(event).get("id"))},
    )
