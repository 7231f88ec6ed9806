"""Paynow's status updates applied to payments.

Paynow posts a form to the result URL whenever a transaction's status changes (status_update.md):
reference (our attempt's), amount, paynowreference, pollurl, status and hash. The receiver has
already checked the hash with the connection's integration key (the "paynow" verifier), which
names the event "payment.<status>", so every Paynow event comes here. The handler runs inside
the inbox's transaction: it reads the form and the payment, and calls nobody.

The statuses mean what they mean to `sync` (app/providers/paynow.py: `status_result`), and
`attempt_outcome` only ever moves an attempt forward, so a late "Sent" after "Paid" changes
nothing, and a "Refunded" or "Disputed" after a payment went through does not undo it: the money
taken back (or held) is reported in the log for the office, as PayPal's reversals are.
"""

from __future__ import annotations

import logging
from urllib.parse import parse_qsl

from sqlalchemy import select
from sqlalchemy.orm import Session

from app.domain.money import Money
from app.domain.payments import ChargeStatus, FailureKind
from app.providers.paynow import REFUNDED, status_result
from app.services.inbox import InboxEvent
from app.services.inbox_worker import InboxWorker
from app.services.payment_events import attempt_outcome
from app.services.payments import FAILED, PROCESSING, SUCCEEDED
from app.store.payments import PaymentAttemptRow, PaymentRow

log = logging.getLogger("switchboard.payments")

# Paynow statuses that take back (or hold) money a payer paid.
TAKEN_BACK = frozenset({REFUNDED, "disputed"})

STATUSES = {
    ChargeStatus.SUCCEEDED: SUCCEEDED,
    ChargeStatus.PROCESSING: PROCESSING,
    ChargeStatus.FAILED: FAILED,
}


def register(worker: InboxWorker) -> None:
    # The verifier names each update "payment.<Paynow's status>"; one handler reads them all.
    worker.register("paynow", "*", _status_update)


def _status_update(session: Session, event: InboxEvent) -> None:
    fields = _fields(event.body)
    reference, poll_url = fields.get("reference", ""), fields.get("pollurl", "")
    result = status_result(fields, _amount_of(session, reference), poll_url)
    if result.failure is not None and result.failure.kind is FailureKind.UNKNOWN:
        # Paynow's own, signed, yet not what we asked for (another amount): a person looks.
        log.error(
            "a Paynow status update does not match its payment",
            extra={"event": event.id, "reference": reference, "detail": result.failure.message},
        )
        return
    paynow_status = fields.get("status", "").strip().lower()
    if paynow_status in TAKEN_BACK and _paid_already(session, reference):
        log.error(
            "Paynow says a payment that went through was %s: the money went back to the "
            "payer or is held",
            paynow_status,
            extra={
                "event": event.id,
                "connection": event.connection_id,
                "reference": reference,
                "gateway_id": result.gateway_id,
            },
        )
    attempt_outcome(
        session,
        event,
        reference,
        STATUSES[result.status],
        result.gateway_id,
        result.failure,
    )


def _fields(body: bytes) -> dict[str, str]:
    """The form, names lower-cased, the first of each name (as the verifier read it)."""
    fields: dict[str, str] = {}
    for name, value in parse_qsl(body.decode("utf-8"), keep_blank_values=True):
        fields.setdefault(name.strip().lower(), value.strip())
    return fields


def _paid_already(session: Session, reference: str) -> bool:
    """Whether the attempt with this reference has already gone through."""
    if not reference:
        return False
    status = session.scalar(
        select(PaymentAttemptRow.status).where(PaymentAttemptRow.reference == reference).limit(1)
    )
    return status == SUCCEEDED


def _amount_of(session: Session, reference: str) -> Money | None:
    """What the attempt with this reference asked for."""
    if not reference:
        return None
    row = session.execute(
        select(PaymentRow.amount_minor, PaymentRow.currency)
        .join(PaymentAttemptRow, PaymentAttemptRow.payment_id == PaymentRow.id)
        .where(PaymentAttemptRow.reference == reference)
    ).first()
    return Money(row[0], row[1]) if row is not None else None
