"""What Dwolla's webhooks tell us about transfers, applied to payments and refunds.

A Dwolla event names its transfer (`resourceId`, and `_links.resource.href`, the transfer's
address) and says what became of it by its topic; it carries no amount and no status, and our
reference (the transfer's `correlationId`) only sometimes. So a transfer is found by our
reference when the event has it, else by its id: a charge's attempt, or a refund, which is a
transfer of its own from the school back to the family.

Dwolla sends one event per party (the family's `customer_transfer_*` and the school's
`transfer_*`), at least once and in any order; the outcome functions only ever move forward,
so each is applied once in effect. A debit the bank returns after Dwolla said it was processed
(an ACH return can come weeks later) takes the money back; the payment stays succeeded (nothing
moves back) and the office is told through the log, as for a PayPal reversal.

A failure event does not say why; the ACH return code must be asked for
(`GET /transfers/{id}/failure`), and handlers make no calls (they run inside the inbox's
transaction). A returned debit is therefore recorded as a hard decline: final, like every
return but insufficient funds, and never tried again by guesswork.

Relied on: Dwolla's "Events" reference (topics and payload) and "Webhooks".
"""

from __future__ import annotations

import json
import logging
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from app.domain.payments import Failure, FailureKind
from app.providers.dwolla import CANCELLED
from app.services.inbox import InboxEvent
from app.services.inbox_worker import InboxWorker
from app.services.payment_events import attempt_outcome, refund_outcome
from app.services.payments import FAILED, PROCESSING, SUCCEEDED
from app.store.payments import PaymentAttemptRow, RefundRow

log = logging.getLogger("switchboard.payments")

KIND = "dwolla"
# A transfer's own topics, for the family's side and the school's.
TRANSFER_PREFIXES = ("customer_transfer_", "transfer_")
# The bank leg of a transfer through a Dwolla balance: a transfer of its own, with its own id.
BANK_PREFIXES = ("customer_bank_transfer_", "bank_transfer_")
PAYMENT_STATUSES = {
    "created": PROCESSING,
    "completed": SUCCEEDED,
    "failed": FAILED,
    "cancelled": FAILED,
}
REFUND_STATUSES = {
    "created": "pending",
    "completed": "succeeded",
    "failed": "failed",
    "cancelled": "canceled",
}
RETURNED = Failure(
    FailureKind.HARD_DECLINE,
    "ach_return",
    "The family's bank returned the payment; Dwolla's dashboard shows the bank's reason. Ask "
    "the family for another bank account or another way to pay.",
)


def register(worker: InboxWorker) -> None:
    for prefix in (*TRANSFER_PREFIXES, *BANK_PREFIXES):
        for outcome in PAYMENT_STATUSES:
            worker.register(KIND, prefix + outcome, _transfer_event)


def _transfer_event(session: Session, event: InboxEvent) -> None:
    body = _body(event)
    outcome = event.event_type.rsplit("_", 1)[-1]
    reference = body.get("correlationId")
    reference = reference if isinstance(reference, str) else ""
    transfer_id = _transfer_id(body)
    if event.event_type.startswith(BANK_PREFIXES):
        # A bank leg's id is not the transfer we hold: it can only be matched by our
        # reference, and must not replace the transfer's id where it is.
        if not reference:
            return
        transfer_id = ""
    if _is_refund(session, transfer_id, reference):
        refund_outcome(session, transfer_id, reference, REFUND_STATUSES[outcome])
        return
    failure = {"failed": RETURNED, "cancelled": CANCELLED}.get(outcome)
    if outcome == "failed" and _succeeded(session, event, reference, transfer_id):
        # Returned after it was processed: the money went back to the family's bank.
        log.error(
            "Dwolla returned a payment after it went through: the money went back to the payer",
            extra={
                "event": event.id,
                "connection": event.connection_id,
                "reference": reference,
                "gateway_id": transfer_id,
            },
        )
    attempt_outcome(session, event, reference, PAYMENT_STATUSES[outcome], transfer_id, failure)


def _succeeded(session: Session, event: InboxEvent, reference: str, transfer_id: str) -> bool:
    """Whether the attempt this event is about has already gone through."""
    query = select(PaymentAttemptRow.status)
    if reference:
        query = query.where(PaymentAttemptRow.reference == reference)
    elif transfer_id:
        query = query.where(PaymentAttemptRow.connection_id == event.connection_id).where(
            PaymentAttemptRow.gateway_id == transfer_id
        )
    else:
        return False
    return session.scalar(query.limit(1)) == SUCCEEDED


def _is_refund(session: Session, transfer_id: str, reference: str) -> bool:
    conditions = []
    if transfer_id:
        conditions.append(RefundRow.gateway_id == transfer_id)
    if reference:
        conditions.append(RefundRow.reference == reference)
    return any(
        session.scalar(select(RefundRow.id).where(condition).limit(1)) is not None
        for condition in conditions
    )


def _transfer_id(body: dict[str, Any]) -> str:
    """The transfer's id as the gateway module keeps it: Dwolla's ids are GUIDs, written in
    upper case in events and in lower case in `Location`."""
    resource_id = body.get("resourceId")
    if isinstance(resource_id, str) and resource_id:
        return resource_id.lower()
    links = body.get("_links")
    resource = links.get("resource") if isinstance(links, dict) else None
    href = resource.get("href") if isinstance(resource, dict) else None
    return href.rstrip("/").rsplit("/", 1)[-1].lower() if isinstance(href, str) else ""


def _body(event: InboxEvent) -> dict[str, Any]:
    body = json.loads(event.body)
    if not isinstance(body, dict):
        raise ValueError("the event is not a JSON object")
    return body
