"""Taking and refunding payments without ever charging a family twice.

A charge is a logical payment with the caller's idempotency key, and one or more attempts at
gateways, each with a reference of its own. The rules:

- The payment's row, key and parameters included, is committed before any gateway is called.
  The same key again returns that payment (and finishes it, if it was interrupted); the same key
  with other parameters is refused.
- Each attempt's row is committed before its request is sent, so a crash mid-request leaves an
  attempt whose outcome is unknown, never a charge nobody knows about.
- What follows a failed attempt depends on its kind (see app/domain/payments.py): a decline ends
  the payment; a technical failure moves on to the next gateway; an unknown outcome is first
  looked up at that gateway by the attempt's reference, and the next gateway is tried only if
  the first one has no such payment. While that cannot be found out, the payment stays
  "unknown" and nothing else is tried.
- Attempts are capped (`MAX_ATTEMPTS`).

A refund reserves its amount on the payment in the same statement that checks what is left, so
refunds made at the same moment can never add up to more than was paid; a refund the gateway
refuses gives its reservation back.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from app.domain.access import Permission
from app.domain.errors import NotFound, SwitchboardError
from app.domain.money import Money
from app.domain.payments import (
    ChargeRequest,
    ChargeResult,
    ChargeStatus,
    Failure,
    FailureKind,
    RefundResult,
    RefundStatus,
)
from app.logs import REDACTOR
from app.providers.gateway import (
    PAYMENTS,
    Feature,
    LinkRequest,
    PaymentGateway,
    Unsupported,
    may_have_acted,
    no_decision,
)
from app.providers.http import ProviderError
from app.services import access, approvals, audit
from app.services.connections import ConnectionService
from app.services.domain_events import record_payment_outcome, record_refund
from app.services.events import EventHub
from app.store.base import utcnow
from app.store.database import Database
from app.store.integration import ProviderConnection
from app.store.payments import PaymentAttemptRow, PaymentRow, RefundRow
from app.store.school import Guardian, Invoice

log = logging.getLogger("switchboard.payments")

TOPIC = "payments"
MAX_ATTEMPTS = 3
# How long after its last change a payment whose outcome is not known is asked about again.
SETTLE_AFTER = timedelta(minutes=2)
# A payment on its way (a bank debit takes days, a mobile-money payer may take minutes to
# approve) is asked about this often, in case its gateway's webhook never comes.
POLL_PROCESSING_EVERY = timedelta(minutes=10)
# A payment link not paid by then is given up on (and no longer asked about).
LINK_DAYS = 30

# A payment's status
PENDING = "pending"  # asked for, no attempt settled yet
SUCCEEDED = "succeeded"
PROCESSING = "processing"  # the gateway accepted it; the money is on its way
FAILED = "failed"
UNKNOWN = "unknown"  # an attempt's outcome could not be found out: nothing else is tried
FINAL = frozenset({SUCCEEDED, FAILED})
# Statuses a charge may still move on from by trying (another) gateway.
OPEN = frozenset({PENDING, UNKNOWN})
# An attempt's status besides those: its request may have left, its outcome is not recorded.
SENT = "sent"
# How far along a status is. Nothing moves a payment or an attempt back: a webhook may have
# settled it while a lookup was still waiting (a failure may be overtaken by a success, since
# the money did move, never the reverse).
# Gateway codes for "the first request with this key is still being worked on".
STILL_WORKING = frozenset({"idempotency_key_in_use"})
RANK = {PENDING: 0, UNKNOWN: 0, SENT: 0, PROCESSING: 1, FAILED: 2, SUCCEEDED: 3}


class IdempotencyConflict(SwitchboardError):
    """The same idempotency key was used for a different payment."""


class RefundRefused(SwitchboardError):
    """A refund that cannot be made (more than is left, a payment not taken)."""


@dataclass(frozen=True)
class Candidate:
    """A gateway to try, with the payer's saved method there, and why it was chosen."""

    connection_id: int
    token: str
    customer: str = ""
    why: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class ChargeOrder:
    idempotency_key: str
    amount: Money
    method: str
    candidates: Sequence[Candidate]
    invoice_id: int | None = None
    guardian_id: int | None = None
    description: str = ""

    def digest(self) -> str:
        """What makes two orders the same payment (not where it is tried)."""
        fields = [
            self.amount.minor,
            self.amount.currency,
            self.method,
            self.invoice_id,
            self.guardian_id,
        ]
        return hashlib.sha256(json.dumps(fields).encode()).hexdigest()


@dataclass(frozen=True)
class LinkOrder:
    """A payment the payer makes on a gateway's page: where, how much, for what."""

    idempotency_key: str
    amount: Money
    connection_id: int
    description: str
    guardian_id: int | None = None
    invoice_id: int | None = None
    payer_email: str = ""
    return_url: str = ""
    method: str = ""  # where the gateway needs one ("ecocash" at Paynow)


@dataclass(frozen=True)
class Attempt:
    number: int
    reference: str
    connection_id: int
    status: str
    gateway_id: str
    failure: Failure | None
    why: dict[str, Any]
    latency_ms: float | None
    token: str
    customer: str
    started_at: datetime


@dataclass(frozen=True)
class Payment:
    id: int
    reference: str
    idempotency_key: str
    amount: Money
    method: str
    status: str
    connection_id: int | None
    gateway_id: str
    fee: Money | None
    refunded: Money
    failure: Failure | None
    attempts: tuple[Attempt, ...]
    invoice_id: int | None
    guardian_id: int | None
    created_at: datetime
    payer: str = ""  # the guardian's name, where the query asked for it
    description: str = ""

    @property
    def link(self) -> str:
        """The page the payer pays on, for a payment asked for by a link ("" otherwise)."""
        return next((str(a.why["link"]) for a in self.attempts if a.why.get("link")), "")

    @property
    def refundable(self) -> Money:
        left = self.amount.minor - self.refunded.minor if self.status == SUCCEEDED else 0
        return Money(left, self.amount.currency)


@dataclass(frozen=True)
class Refund:
    id: int
    payment_id: int
    reference: str
    amount: Money
    status: str
    gateway_id: str
    failure_message: str | None


class KeyedLocks:
    """An asyncio lock per key, forgotten once nobody holds or waits for it."""

    def __init__(self) -> None:
        self._locks: dict[str, tuple[asyncio.Lock, int]] = {}

    @contextlib.asynccontextmanager
    async def hold(self, key: str) -> AsyncIterator[None]:
        lock, users = self._locks.get(key, (asyncio.Lock(), 0))
        self._locks[key] = (lock, users + 1)
        try:
            async with lock:
                yield
        finally:
            lock, users = self._locks[key]
            if users == 1:
                del self._locks[key]
            else:
                self._locks[key] = (lock, users - 1)


# What a finished attempt teaches (the router): connection, method, currency, result, latency.
Observer = Callable[[int, str, str, ChargeResult, "float | None"], None]


class PaymentService:
    def __init__(
        self,
        db: Database,
        events: EventHub,
        connections: ConnectionService,
        observe: Observer | None = None,
    ) -> None:
        self._db = db
        # Four eyes on large refunds (set by Services.open; None: never asked).
        self.approvals: approvals.ApprovalService | None = None
        self._events = events
        self._connections = connections
        self._observe = observe
        self._locks = KeyedLocks()

    # --- charging -----------------------------------------------------------------------------

    async def charge(self, order: ChargeOrder) -> Payment:
        """Take the payment (or return it, if this key was used before)."""
        access.require(Permission.TAKE_PAYMENTS)
        who = access.actor()
        if not order.idempotency_key or len(order.idempotency_key) > 200:
            raise SwitchboardError("A payment needs an idempotency key of 1 to 200 characters.")
        if order.amount.minor <= 0:
            raise SwitchboardError("A payment must be for more than zero.")
        # One charge per key at a time in this process; the database keeps other PCs apart.
        async with self._locks.hold(order.idempotency_key):
            gateways = [candidate.connection_id for candidate in order.candidates]
            payment_id = await self._db.write(self._open, order, who, "payment.charged", gateways)
            payment = await self.payment(payment_id)
            if payment.status not in OPEN:  # done, or taken and on its way (processing)
                return payment
            return await self._advance(payment, order)

    async def create_link(self, order: LinkOrder) -> Payment:
        """Ask a gateway for a page where the payer pays (or return the payment this key asked
        for before); the payment is on its way (`Payment.link`) until the payer has paid, which
        the gateway's webhook or the regular look-ups say. A link whose answer was lost can be
        paid by no one (no one has its address), so it simply fails: ask for another."""
        access.require(Permission.TAKE_PAYMENTS)
        who = access.actor()
        gateway = await self._gateway(order.connection_id)
        name = (await self._connections.connection(order.connection_id)).name
        if Feature.LINKS not in gateway.features:
            raise Unsupported(f"{name} does not make payment links.")
        charge = ChargeOrder(
            idempotency_key=order.idempotency_key,
            amount=order.amount,
            method=order.method or "link",
            candidates=(),
            invoice_id=order.invoice_id,
            guardian_id=order.guardian_id,
            description=order.description,
        )
        if not charge.idempotency_key or len(charge.idempotency_key) > 200:
            raise SwitchboardError("A payment needs an idempotency key of 1 to 200 characters.")
        async with self._locks.hold(order.idempotency_key):
            opened = await self._db.write(
                self._open, charge, who, "payment.link_created", [order.connection_id]
            )
            payment = await self.payment(opened)
            if payment.status not in OPEN or payment.attempts:
                return payment
            why = {"explanation": f"a payment link at {name}, chosen by the office"}
            candidate = Candidate(order.connection_id, "", why=why)
            request = self._request(payment, charge, candidate, 1)
            await self._db.write(self._begin_attempt, payment.id, request, candidate)
            asked = LinkRequest(
                reference=request.reference,
                amount=order.amount,
                description=order.description or f"Payment {payment.id}",
                return_url=order.return_url,
                payer_email=order.payer_email,
                method=order.method,
                created_at=request.created_at,
            )
            try:
                link = await gateway.create_link(asked)
            except (ProviderError, Unsupported) as error:
                failure = Failure(
                    FailureKind.TECHNICAL,
                    getattr(error, "error_class", "unsupported"),
                    f"{name} did not make the payment link: {error}",
                )
                result = ChargeResult(ChargeStatus.FAILED, "", failure)
                await self._db.write(self._end_attempt, request.reference, result, None)
                return await self._finish(payment.id, FAILED, order.connection_id, result)
            made = {**why, "link": link.url, "expires_at": link.expires_at}
            result = ChargeResult(ChargeStatus.PROCESSING, link.gateway_id)
            await self._db.write(self._end_link, request.reference, result, made)
            return await self._finish(payment.id, PROCESSING, order.connection_id, result)

    async def link_gateways(self) -> list[tuple[int, str]]:
        """The connections that make payment links: (id, name)."""
        found = []
        for record in await self._connections.connections():
            if PAYMENTS not in record.spec.capabilities:
                continue
            provider = await self._connections.provider(record.id)
            if isinstance(provider, PaymentGateway) and Feature.LINKS in provider.features:
                found.append((record.id, record.name))
        return found

    def _end_link(
        self, session: Session, reference: str, result: ChargeResult, made: dict[str, Any]
    ) -> None:
        self._end_attempt(session, reference, result, None)
        row = session.scalar(
            select(PaymentAttemptRow).where(PaymentAttemptRow.reference == reference)
        )
        if row is not None:
            row.decision = made

    def _open(
        self, session: Session, order: ChargeOrder, who: str, action: str, gateways: list[int]
    ) -> int:
        """The payment for this key, opened now (and recorded in the audit trail as `action`
        by `who`, at `gateways` in the order they will be tried) if it is new."""
        digest = order.digest()
        row = session.scalar(
            select(PaymentRow).where(PaymentRow.idempotency_key == order.idempotency_key)
        )
        if row is not None:
            if row.request_digest != digest:
                raise IdempotencyConflict(
                    f"The key {order.idempotency_key!r} was used for another payment "
                    f"({Money(row.amount_minor, row.currency)} by {row.method}); a new payment "
                    "needs a new key."
                )
            return row.id
        if order.invoice_id is not None and session.get(Invoice, order.invoice_id) is None:
            raise NotFound(f"There is no invoice number {order.invoice_id}.")
        if order.guardian_id is not None and session.get(Guardian, order.guardian_id) is None:
            raise NotFound(f"There is no guardian number {order.guardian_id}.")
        row = PaymentRow(
            reference=f"pay_{uuid.uuid4().hex}",
            idempotency_key=order.idempotency_key,
            request_digest=digest,
            invoice_id=order.invoice_id,
            guardian_id=order.guardian_id,
            amount_minor=order.amount.minor,
            currency=order.amount.currency,
            method=order.method,
            status=PENDING,
            description=order.description[:200],
        )
        try:
            with session.begin_nested():
                session.add(row)
        except IntegrityError:  # another office PC opened it at the same moment
            return self._open(session, order, who, action, gateways)
        names = dict(
            session.execute(
                select(ProviderConnection.id, ProviderConnection.name).where(
                    ProviderConnection.id.in_(gateways)
                )
            ).all()
        )
        # What was asked, never how: no card token, customer or key goes in.
        audit.record(
            session,
            who,
            action,
            "payment",
            row.id,
            None,
            {
                "amount_minor": order.amount.minor,
                "currency": order.amount.currency,
                "method": order.method,
                "payer": order.guardian_id,
                "invoice": order.invoice_id,
                "gateways": [{"id": id_, "name": names.get(id_, "")} for id_ in gateways],
                "description": row.description,
            },
        )
        return row.id

    async def _advance(self, payment: Payment, order: ChargeOrder) -> Payment:
        # An attempt whose outcome was written but not yet the payment's (a crash between the
        # two): the payment follows it, and no other gateway is tried.
        for attempt in payment.attempts:
            if attempt.status in (SUCCEEDED, PROCESSING):
                return await self._finish(
                    payment.id, attempt.status, attempt.connection_id, _result_of(attempt)
                )
        for attempt in payment.attempts:
            if attempt.failure is not None and attempt.failure.kind in (
                FailureKind.HARD_DECLINE,
                FailureKind.SOFT_DECLINE,
            ):
                return await self._finish(
                    payment.id, FAILED, attempt.connection_id, failure=attempt.failure
                )
        # An attempt interrupted before its outcome was written: find out first.
        for attempt in payment.attempts:
            if attempt.status == SENT:
                settled = await self._settle_unknown(payment, attempt)
                if settled is not None:
                    return settled
        tried = {attempt.connection_id for attempt in payment.attempts}
        number = len(payment.attempts)
        for candidate in order.candidates:
            if candidate.connection_id in tried:
                continue
            if number >= MAX_ATTEMPTS:
                break
            if number and (await self.payment(payment.id)).status not in OPEN:
                # Settled meanwhile (a webhook about an earlier attempt): nothing more to try.
                return await self.payment(payment.id)
            number += 1
            tried.add(candidate.connection_id)
            request = self._request(payment, order, candidate, number)
            await self._db.write(self._begin_attempt, payment.id, request, candidate)
            gateway = await self._gateway(candidate.connection_id)
            started = time.monotonic()
            result = await gateway.charge(request)
            latency = (time.monotonic() - started) * 1000
            await self._db.write(self._end_attempt, request.reference, result, latency)
            if self._observe is not None:
                self._observe(
                    candidate.connection_id,
                    payment.method,
                    payment.amount.currency,
                    result,
                    latency,
                )
            outcome = await self._after(payment, request, candidate.connection_id, result)
            if outcome is not None:
                return outcome
        last = (await self.payment(payment.id)).attempts
        failure = last[-1].failure if last else None
        return await self._finish(
            payment.id,
            FAILED,
            failure=failure
            or Failure(FailureKind.TECHNICAL, "no_gateway", "No gateway could take this payment."),
        )

    async def _after(
        self, payment: Payment, request: ChargeRequest, connection_id: int, result: ChargeResult
    ) -> Payment | None:
        """The payment once this attempt's result is known, or None to try the next gateway."""
        if result.status in (ChargeStatus.SUCCEEDED, ChargeStatus.PROCESSING):
            status = SUCCEEDED if result.succeeded else PROCESSING
            return await self._finish(payment.id, status, connection_id, result)
        failure = result.failure
        if failure is None or failure.kind in (FailureKind.HARD_DECLINE, FailureKind.SOFT_DECLINE):
            return await self._finish(payment.id, FAILED, connection_id, result, failure)
        if may_have_acted(failure):
            # The gateway may have taken it: ask before going anywhere else.
            return await self._look_up(payment, request, connection_id, result.gateway_id)
        return None  # technical: the next gateway

    async def _settle_unknown(self, payment: Payment, attempt: Attempt) -> Payment | None:
        """Ask the gateway what became of an attempt whose outcome was never written, with the
        very request that was sent (the same key, parameters and time)."""
        request = ChargeRequest(
            reference=attempt.reference,
            amount=payment.amount,
            method=payment.method,
            token=attempt.token,
            customer=attempt.customer,
            description=payment.description,
            created_at=attempt.started_at.timestamp(),
        )
        return await self._look_up(payment, request, attempt.connection_id, attempt.gateway_id)

    async def _look_up(
        self, payment: Payment, request: ChargeRequest, connection_id: int, gateway_id: str
    ) -> Payment | None:
        """The payment once the gateway says what became of this attempt; None when it has no
        such payment (the next gateway may be tried). Anything short of an answer (the
        gateway down, still working on the first request, refusing the question) leaves the
        outcome unknown, and nothing else is tried."""
        gateway = await self._gateway(connection_id)
        synced = await gateway.sync(request, gateway_id)
        if synced.status is ChargeStatus.NOT_FOUND:
            await self._db.write(self._end_attempt, request.reference, synced, None)
            return None
        failure = synced.failure
        answered = synced.status in (ChargeStatus.SUCCEEDED, ChargeStatus.PROCESSING) or (
            failure is not None
            and (
                failure.kind in (FailureKind.HARD_DECLINE, FailureKind.SOFT_DECLINE)
                # The gateway found our payment, and it failed on its side: no money moved.
                or (
                    failure.kind is FailureKind.TECHNICAL
                    and bool(synced.gateway_id)
                    and not no_decision(failure)
                    and failure.code not in STILL_WORKING
                )
            )
        )
        if not answered:
            why = synced.failure.message if synced.failure else "no answer"
            synced = ChargeResult(
                ChargeStatus.FAILED,
                synced.gateway_id or gateway_id,
                Failure(
                    FailureKind.UNKNOWN,
                    synced.failure.code if synced.failure else "unknown",
                    f"Whether this payment went through is not known yet: {why}",
                ),
            )
            await self._db.write(self._end_attempt, request.reference, synced, None)
            return await self._finish(payment.id, UNKNOWN, connection_id, synced)
        await self._db.write(self._end_attempt, request.reference, synced, None)
        return await self._after(payment, request, connection_id, synced)

    def _request(
        self, payment: Payment, order: ChargeOrder, candidate: Candidate, number: int
    ) -> ChargeRequest:
        return ChargeRequest(
            reference=f"{payment.reference}-{number}",
            amount=payment.amount,
            method=payment.method,
            token=candidate.token,
            customer=candidate.customer,
            description=order.description[:200],  # as kept, so a look-up repeats it exactly
            created_at=time.time(),
        )

    def _begin_attempt(
        self, session: Session, payment_id: int, request: ChargeRequest, candidate: Candidate
    ) -> None:
        number = int(request.reference.rsplit("-", 1)[1])
        session.add(
            PaymentAttemptRow(
                payment_id=payment_id,
                number=number,
                reference=request.reference,
                connection_id=candidate.connection_id,
                status=SENT,
                token=candidate.token,
                customer=candidate.customer,
                decision=candidate.why,
            )
        )

    def _end_attempt(
        self, session: Session, reference: str, result: ChargeResult, latency_ms: float | None
    ) -> None:
        row = session.scalar(
            select(PaymentAttemptRow).where(PaymentAttemptRow.reference == reference)
        )
        if row is None:
            raise NotFound(f"There is no payment attempt {reference}.")
        if row.status != SENT:
            return  # settled already (by a webhook, or an earlier answer): keep that
        if result.status is ChargeStatus.NOT_FOUND:
            row.status = FAILED
            row.failure_kind = FailureKind.TECHNICAL.value
            row.failure_code = "not_found"
            row.failure_message = "The gateway has no payment with this reference."
        elif result.failure is not None and may_have_acted(result.failure):
            row.status = SENT  # still unknown, until the gateway is asked
        else:
            row.status = {
                ChargeStatus.SUCCEEDED: SUCCEEDED,
                ChargeStatus.PROCESSING: PROCESSING,
            }.get(result.status, FAILED)
        if result.failure is not None and result.status is not ChargeStatus.NOT_FOUND:
            row.failure_kind = result.failure.kind.value
            row.failure_code = result.failure.code[:200]
            row.failure_message = _told(result.failure)
        if result.gateway_id:
            row.gateway_id = result.gateway_id
        if latency_ms is not None:
            row.latency_ms = latency_ms
        row.finished_at = utcnow()

    async def _finish(
        self,
        payment_id: int,
        status: str,
        connection_id: int | None = None,
        result: ChargeResult | None = None,
        failure: Failure | None = None,
    ) -> Payment:
        failure = failure or (result.failure if result is not None else None)

        def write(session: Session) -> None:
            row = session.get(PaymentRow, payment_id)
            if row is None:
                raise NotFound(f"There is no payment number {payment_id}.")
            if RANK[status] < RANK[row.status] or (status == row.status and status in FINAL):
                return  # settled further already (a webhook came first): keep that
            row.status = status
            if connection_id is not None:
                row.connection_id = connection_id
            if result is not None and result.gateway_id:
                row.gateway_id = result.gateway_id
            if result is not None and result.fee is not None:
                row.fee_minor = result.fee.minor
            if status in (SUCCEEDED, PROCESSING):
                row.failure_kind = row.failure_code = row.failure_message = None
            elif failure is not None:
                row.failure_kind = failure.kind.value
                row.failure_code = failure.code[:200]
                row.failure_message = _told(failure)
            record_payment_outcome(session, row)

        await self._db.write(write)
        payment = await self.payment(payment_id)
        self._events.publish(TOPIC, {"id": payment_id, "status": status})
        log.info(
            "payment %s",
            status,
            extra={"payment": payment.reference, "attempts": len(payment.attempts)},
        )
        return payment

    async def _gateway(self, connection_id: int) -> PaymentGateway:
        provider = await self._connections.provider(connection_id)
        if not isinstance(provider, PaymentGateway):
            raise SwitchboardError(f"{provider.client.name} cannot take payments.")
        return provider

    # --- settling what is not known ----------------------------------------------------------

    async def settle(
        self,
        older_than: timedelta = SETTLE_AFTER,
        limit: int = 50,
        poll_every: timedelta = POLL_PROCESSING_EVERY,
    ) -> int:
        """Ask the gateways about payments whose outcome is not known (an answer lost, a crash
        mid-charge) and refunds still pending, a while after they began; how many were asked
        about. Only the gateway already asked is asked again: nothing new is charged here. A
        payment no gateway took ends failed, so it can be charged again."""
        since = utcnow() - older_than
        asked = 0
        for payment_id in await self._db.read(_unsettled_payments, since, limit):
            asked += await self._guarded(self._settle_payment, payment_id, "payment")
        for refund_id in await self._db.read(_pending_refunds, since, limit):
            asked += await self._guarded(self._settle_pending_refund, refund_id, "refund")
        polled = utcnow() - poll_every
        for payment_id in await self._db.read(_processing_payments, polled, limit):
            asked += await self._guarded(self._poll_processing, payment_id, "payment")
        return asked

    async def _guarded(
        self, settle: Callable[[int], Awaitable[object]], item_id: int, what: str
    ) -> int:
        """One item settled; an item that fails unexpectedly (a gateway's answer no one
        foresaw) is logged and left for next time, and never stops the others."""
        try:
            await settle(item_id)
        except Exception:
            log.exception("could not settle a %s", what, extra={what: item_id})
        return 1

    async def _settle_payment(self, payment_id: int) -> None:
        key = (await self.payment(payment_id)).idempotency_key
        async with self._locks.hold(key):  # never beside a charge of it under way here
            payment = await self.payment(payment_id)
            if payment.status not in OPEN:
                return
            for attempt in payment.attempts:
                if attempt.status == SENT:
                    await self._settle_unknown(payment, attempt)
            settled = await self.payment(payment_id)
            if settled.status in OPEN and not any(a.status == SENT for a in settled.attempts):
                last = settled.attempts[-1].failure if settled.attempts else None
                await self._finish(
                    payment_id,
                    FAILED,
                    failure=Failure(
                        FailureKind.TECHNICAL,
                        last.code if last else "not_taken",
                        "No gateway took this payment; it can be charged again.",
                    ),
                )

    async def _poll_processing(self, payment_id: int) -> None:
        """Ask the gateway whether a payment on its way has arrived (or bounced)."""
        payment = await self.payment(payment_id)
        attempt = next((a for a in payment.attempts if a.status == PROCESSING), None)
        if payment.status != PROCESSING or attempt is None:
            return
        gateway = await self._gateway(attempt.connection_id)
        request = ChargeRequest(
            reference=attempt.reference,
            amount=payment.amount,
            method=payment.method,
            token=attempt.token,
            customer=attempt.customer,
            description=payment.description,
            created_at=attempt.started_at.timestamp(),
        )
        synced = await gateway.sync(request, attempt.gateway_id)
        status = {ChargeStatus.SUCCEEDED: SUCCEEDED, ChargeStatus.PROCESSING: PROCESSING}.get(
            synced.status
        )
        failure = synced.failure
        if failure is not None and failure.kind in (
            FailureKind.HARD_DECLINE,
            FailureKind.SOFT_DECLINE,
        ):
            status = FAILED  # the bank returned it, the payer declined on their phone
        elif status != SUCCEEDED and attempt.why.get("link") and _older(attempt, LINK_DAYS):
            status = FAILED
            failure = Failure(
                FailureKind.SOFT_DECLINE,
                "link_expired",
                f"The payment link was not paid within {LINK_DAYS} days.",
            )
        reference = attempt.reference

        def write(session: Session) -> str:
            row = session.scalar(
                select(PaymentAttemptRow).where(PaymentAttemptRow.reference == reference)
            )
            payment_row = session.get(PaymentRow, payment_id)
            if row is None or payment_row is None:
                return ""
            if status in (SUCCEEDED, FAILED):
                advance_attempt(session, row, status, synced.gateway_id, failure, synced.fee)
            payment_row.updated_at = utcnow()  # asked: the next time is a while off
            return payment_row.status

        now = await self._db.write(write)
        if now != PROCESSING:
            self._events.publish(TOPIC, {"id": payment_id, "status": now})

    async def _settle_pending_refund(self, refund_id: int) -> None:
        refund = await self._refund_row(refund_id)
        payment = await self.payment(refund.payment_id)
        if payment.connection_id is None:
            return
        gateway = await self._gateway(payment.connection_id)
        if refund.gateway_id:
            result = await gateway.refund_status(refund.gateway_id, refund.amount)
        else:
            # The answer was lost: the same request with the same key says what was done. If
            # that cannot be asked either, the first may still have been made: keep waiting.
            result = await gateway.refund(payment.gateway_id, refund.amount, refund.reference)
            if result.failure is not None and no_decision(result.failure):
                result = replace(result, status=RefundStatus.PENDING)
        await self._settle_refund(refund_id, result)

    # --- refunds ------------------------------------------------------------------------------

    async def refund(
        self,
        payment_id: int,
        amount: Money | None = None,
        reason: str = "",
    ) -> Refund:
        """Refund `amount` (all that is left when None) of a payment that succeeded."""
        access.require(Permission.REFUND)
        who = access.actor()
        payment = await self.payment(payment_id)
        wanted = amount or payment.refundable
        if wanted.currency != payment.amount.currency:
            raise RefundRefused(
                f"This payment was in {payment.amount.currency}; refund it in the same currency."
            )
        if wanted.minor <= 0:
            raise RefundRefused("Nothing is left to refund on this payment.")
        if payment.connection_id is None:
            raise RefundRefused("Only a payment that went through can be refunded.")
        gateway = await self._gateway(payment.connection_id)
        if Feature.REFUNDS not in gateway.features:
            name = (await self._connections.connection(payment.connection_id)).name
            raise RefundRefused(
                f"{name} cannot be asked for refunds; refund it in the gateway's own dashboard."
            )
        if self.approvals is not None:
            await self.approvals.gate(
                self.approvals.refund_needs_approval(wanted.amount),
                approvals.REFUND,
                "payment",
                payment_id,
                {
                    "payment_id": payment_id,
                    "amount": str(wanted.amount),
                    "minor": wanted.minor,
                    "currency": wanted.currency,
                    "reason": reason,
                },
                f"A refund of {wanted} on payment {payment_id}",
            )
        refund_id = await self._db.write(self._reserve, payment, wanted, reason, who)
        refund = await self._refund_row(refund_id)
        result = await gateway.refund(payment.gateway_id, wanted, refund.reference)
        return await self._settle_refund(refund_id, result)

    def _reserve(
        self, session: Session, payment: Payment, amount: Money, reason: str, who: str
    ) -> int:
        reserved = session.execute(
            update(PaymentRow)
            .where(PaymentRow.id == payment.id)
            .where(PaymentRow.status == SUCCEEDED)
            .where(PaymentRow.refunded_minor + amount.minor <= PaymentRow.amount_minor)
            .values(refunded_minor=PaymentRow.refunded_minor + amount.minor)
        )
        if reserved.rowcount != 1:  # type: ignore[attr-defined]
            paid = session.get(PaymentRow, payment.id)
            if paid is None or paid.status != SUCCEEDED:
                raise RefundRefused("Only a payment that went through can be refunded.")
            left = Money(paid.amount_minor - paid.refunded_minor, paid.currency)
            raise RefundRefused(
                f"Only {left} of this payment is left to refund (some may be on its way back)."
            )
        refund = RefundRow(
            payment_id=payment.id,
            reference=f"ref_{uuid.uuid4().hex}",
            amount_minor=amount.minor,
            currency=amount.currency,
            status=RefundStatus.PENDING.value,
            reason=reason[:200],
        )
        session.add(refund)
        session.flush()
        audit.record(
            session,
            who,
            "refund.requested",
            "refund",
            refund.id,
            None,
            {
                "payment": payment.id,
                "amount_minor": amount.minor,
                "currency": amount.currency,
                "reason": refund.reason,
            },
        )
        return refund.id

    async def _settle_refund(self, refund_id: int, result: RefundResult) -> Refund:
        def write(session: Session) -> None:
            row = session.get(RefundRow, refund_id)
            if row is None:
                raise NotFound(f"There is no refund number {refund_id}.")
            # A refund the gateway may have made (a timeout, a 500, a request it is still
            # working on) stays pending, its amount reserved, until the gateway says.
            unknown = result.failure is not None and (
                may_have_acted(result.failure) or result.failure.code in STILL_WORKING
            )
            if row.status != RefundStatus.PENDING.value:
                pass  # settled already by a webhook
            elif result.status in (RefundStatus.FAILED, RefundStatus.CANCELED) and not unknown:
                row.status = result.status.value
                row.failure_message = _told(result.failure) if result.failure else None
                # Give the reservation back: the money never left.
                session.execute(
                    update(PaymentRow)
                    .where(PaymentRow.id == row.payment_id)
                    .values(refunded_minor=PaymentRow.refunded_minor - row.amount_minor)
                )
            elif not unknown:
                row.status = result.status.value
            elif unknown and result.failure is not None:
                row.failure_message = f"Not known yet: {_told(result.failure)}"
            if result.gateway_id:
                row.gateway_id = result.gateway_id
            record_refund(session, row)

        await self._db.write(write)
        refund = await self._refund_row(refund_id)
        self._events.publish(TOPIC, {"id": refund.payment_id, "refund": refund_id})
        return refund

    # --- reading ------------------------------------------------------------------------------

    async def payment(self, payment_id: int) -> Payment:
        def query(session: Session) -> Payment:
            row = session.get(PaymentRow, payment_id)
            if row is None:
                raise NotFound(f"There is no payment number {payment_id}.")
            attempts = session.scalars(
                select(PaymentAttemptRow)
                .where(PaymentAttemptRow.payment_id == payment_id)
                .order_by(PaymentAttemptRow.number)
            ).all()
            return _payment(row, attempts)

        return await self._db.read(query)

    async def payments(
        self, limit: int = 100, *, status: str | None = None, connection_id: int | None = None
    ) -> list[Payment]:
        """The latest payments, newest first, with their payers' names."""

        def query(session: Session) -> list[Payment]:
            chosen = (
                select(PaymentRow, Guardian.first_name, Guardian.last_name)
                .outerjoin(Guardian, Guardian.id == PaymentRow.guardian_id)
                .order_by(PaymentRow.id.desc())
                .limit(limit)
            )
            if status is not None:
                chosen = chosen.where(PaymentRow.status == status)
            if connection_id is not None:
                chosen = chosen.where(PaymentRow.connection_id == connection_id)
            rows = session.execute(chosen).all()
            attempts: dict[int, list[PaymentAttemptRow]] = {}
            if rows:
                for attempt in session.scalars(
                    select(PaymentAttemptRow)
                    .where(PaymentAttemptRow.payment_id.in_([row[0].id for row in rows]))
                    .order_by(PaymentAttemptRow.number)
                ):
                    attempts.setdefault(attempt.payment_id, []).append(attempt)
            return [
                _payment(row, attempts.get(row.id, []), " ".join(filter(None, (first, last))))
                for row, first, last in rows
            ]

        return await self._db.read(query)

    async def refunds(self, payment_id: int) -> list[Refund]:
        def query(session: Session) -> list[Refund]:
            rows = session.scalars(
                select(RefundRow).where(RefundRow.payment_id == payment_id).order_by(RefundRow.id)
            ).all()
            return [_refund(row) for row in rows]

        return await self._db.read(query)

    async def _refund_row(self, refund_id: int) -> Refund:
        def query(session: Session) -> Refund:
            row = session.get(RefundRow, refund_id)
            if row is None:
                raise NotFound(f"There is no refund number {refund_id}.")
            return _refund(row)

        return await self._db.read(query)


def _unsettled_payments(session: Session, since: datetime, limit: int) -> list[int]:
    return list(
        session.scalars(
            select(PaymentRow.id)
            .where(PaymentRow.status.in_(OPEN))
            .where(PaymentRow.updated_at < since)
            .order_by(PaymentRow.id)
            .limit(limit)
        )
    )


def _older(attempt: Attempt, days: int) -> bool:
    return attempt.started_at < utcnow() - timedelta(days=days)


def _processing_payments(session: Session, since: datetime, limit: int) -> list[int]:
    return list(
        session.scalars(
            select(PaymentRow.id)
            .where(PaymentRow.status == PROCESSING)
            .where(PaymentRow.updated_at < since)
            .order_by(PaymentRow.updated_at)
            .limit(limit)
        )
    )


def _pending_refunds(session: Session, since: datetime, limit: int) -> list[int]:
    return list(
        session.scalars(
            select(RefundRow.id)
            .where(RefundRow.status == RefundStatus.PENDING.value)
            .where(RefundRow.updated_at < since)
            .order_by(RefundRow.id)
            .limit(limit)
        )
    )


def _result_of(attempt: Attempt) -> ChargeResult:
    status = ChargeStatus.SUCCEEDED if attempt.status == SUCCEEDED else ChargeStatus.PROCESSING
    return ChargeResult(status, attempt.gateway_id)


def _failure(kind: str | None, code: str | None, message: str | None) -> Failure | None:
    if kind is None:
        return None
    return Failure(FailureKind(kind), code or "", message or "")


def _payment(row: PaymentRow, attempts: Sequence[PaymentAttemptRow], payer: str = "") -> Payment:
    return Payment(
        id=row.id,
        reference=row.reference,
        idempotency_key=row.idempotency_key,
        amount=Money(row.amount_minor, row.currency),
        method=row.method,
        status=row.status,
        connection_id=row.connection_id,
        gateway_id=row.gateway_id,
        fee=Money(row.fee_minor, row.currency) if row.fee_minor is not None else None,
        refunded=Money(row.refunded_minor, row.currency),
        failure=_failure(row.failure_kind, row.failure_code, row.failure_message),
        description=row.description,
        attempts=tuple(
            Attempt(
                number=attempt.number,
                reference=attempt.reference,
                connection_id=attempt.connection_id,
                status=attempt.status,
                gateway_id=attempt.gateway_id,
                failure=_failure(
                    attempt.failure_kind, attempt.failure_code, attempt.failure_message
                ),
                why=attempt.decision,
                latency_ms=attempt.latency_ms,
                token=attempt.token,
                customer=attempt.customer,
                started_at=attempt.started_at,
            )
            for attempt in attempts
        ),
        invoice_id=row.invoice_id,
        guardian_id=row.guardian_id,
        created_at=row.created_at,
        payer=payer,
    )


def _refund(row: RefundRow) -> Refund:
    return Refund(
        id=row.id,
        payment_id=row.payment_id,
        reference=row.reference,
        amount=Money(row.amount_minor, row.currency),
        status=row.status,
        gateway_id=row.gateway_id,
        failure_message=row.failure_message,
    )


def advance_attempt(
    session: Session,
    attempt: PaymentAttemptRow,
    status: str,
    gateway_id: str = "",
    failure: Failure | None = None,
    fee: Money | None = None,
) -> None:
    """What became of an attempt, as a gateway's webhook or a later look-up says: the attempt
    and its payment move forward, never back (a success after a failure wins: the money did
    move; a second success of one payment is reported, not recorded)."""
    if RANK[status] > RANK.get(attempt.status, 0):
        attempt.status = status
        attempt.gateway_id = gateway_id or attempt.gateway_id
        attempt.finished_at = attempt.finished_at or utcnow()
        if failure is not None:
            attempt.failure_kind = failure.kind.value
            attempt.failure_code = failure.code[:200]
            attempt.failure_message = _told(failure)
    payment = session.get(PaymentRow, attempt.payment_id)
    if payment is None:
        return
    if (
        status == SUCCEEDED
        and payment.status == SUCCEEDED
        and gateway_id
        and gateway_id != payment.gateway_id
    ):
        # Two attempts of one payment both took the money: the family paid twice.
        log.error(
            "a payment was taken twice: refund the second charge",
            extra={
                "payment": payment.reference,
                "attempt": attempt.reference,
                "gateway_id": gateway_id,
            },
        )
        return
    if RANK[status] <= RANK.get(payment.status, 0):
        return
    if status == FAILED and payment.connection_id not in (None, attempt.connection_id):
        return  # an earlier attempt's failure; the payment has moved on
    if (
        status == SUCCEEDED
        and payment.status == FAILED
        and payment.connection_id
        not in (
            None,
            attempt.connection_id,
        )
    ):
        log.error(
            "a payment succeeded at a gateway it was no longer being tried at",
            extra={"payment": payment.reference, "attempt": attempt.reference},
        )
    payment.status = status
    payment.connection_id = attempt.connection_id
    if fee is not None and status == SUCCEEDED:
        payment.fee_minor = fee.minor
    payment.gateway_id = gateway_id or payment.gateway_id
    if failure is not None:
        payment.failure_kind = failure.kind.value
        payment.failure_code = failure.code[:200]
        payment.failure_message = _told(failure)
    else:
        payment.failure_kind = payment.failure_code = payment.failure_message = None
    record_payment_outcome(session, payment)


def _told(failure: Failure) -> str:
    """A gateway's failure as stored and shown: its sentence, with any secret this process
    knows masked (a gateway's answer may quote the key it was sent)."""
    return REDACTOR.mask_known(failure.message)
