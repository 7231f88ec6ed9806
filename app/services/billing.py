"""Billing runs: the invoices due by a date, charged together, each exactly once.

A run is prepared first (which invoices, how much, and which cannot be charged and why), then
charged a few at a time. Each invoice's charge has an idempotency key made of the run, the
invoice and how many times it was tried, and the invoice is marked "charging" before its charge
begins. So a run interrupted anywhere (a crash, a power cut, a person pausing it) is resumed by
running it again: an invoice that was being charged is charged with the same key, which returns
or settles the payment that was begun instead of making another.

Several office computers may share one database and run the same billing run at once: each
takes one invoice at a time, claimed with `FOR UPDATE SKIP LOCKED` and marked "charging" by
that engine until a lease runs out. Another engine takes an invoice being charged only when its
engine is gone (its lease ran out, or it was a process of this computer that no longer runs),
and the run is finished by whichever engine charges its last invoice. Preparing runs is one at
a time across computers, so no invoice is in two unfinished runs.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, datetime, timedelta

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from app.domain.access import Permission
from app.domain.errors import NotFound, SwitchboardError
from app.domain.money import Money
from app.services import access, audit, claims
from app.services.events import EventHub
from app.services.payments import (
    FAILED,
    PENDING,
    PROCESSING,
    SUCCEEDED,
    UNKNOWN,
    Payment,
    PaymentService,
)
from app.services.routing import RoutingService
from app.store.base import utcnow
from app.store.database import Database
from app.store.payments import (
    BillingItemRow,
    BillingRunRow,
    PaymentMethodRow,
    PaymentRow,
)
from app.store.school import Guardian, Invoice

log = logging.getLogger("switchboard.billing")

TOPIC = "billing"
CONCURRENCY = 4
# An invoice being charged is another engine's to take up only this long after its engine
# began (far longer than a charge, with its retries and a gateway's fail-over, can take).
CHARGE_LEASE = timedelta(minutes=10)

# A run's status
PREPARED, RUNNING, PAUSED, CANCELED, FINISHED = (
    "prepared",
    "running",
    "paused",
    "canceled",
    "finished",
)
UNFINISHED = (PREPARED, RUNNING, PAUSED)
# An item's status besides a payment's
WAITING, CHARGING, SKIPPED = "waiting", "charging", "skipped"


@dataclass(frozen=True)
class BillingItem:
    id: int
    invoice_id: int
    invoice_number: str
    guardian_id: int | None
    amount: Money
    status: str
    payment_id: int | None
    message: str
    payer: str = ""


@dataclass(frozen=True)
class BillingRun:
    id: int
    due_before: date
    status: str
    counts: dict[str, int]  # items by status
    totals: dict[str, Money]  # what is to be (or was) charged, by currency

    @property
    def total_items(self) -> int:
        return sum(self.counts.values())

    @property
    def done(self) -> int:
        return sum(
            count for status, count in self.counts.items() if status not in (WAITING, CHARGING)
        )


@dataclass(frozen=True)
class InvoiceDue:
    """What charging one invoice on its own would take: from whom, how much is still owed, and
    the idempotency key (the same until a payment of it fails, so a charge asked for twice is
    made once, and asking again about one not settled settles it)."""

    invoice_id: int
    number: str
    guardian_id: int
    amount: Money
    key: str


Progress = Callable[[BillingRun], None]


class BillingService:
    def __init__(
        self,
        db: Database,
        events: EventHub,
        payments: PaymentService,
        routing: RoutingService,
    ) -> None:
        self._db = db
        self._events = events
        self._payments = payments
        self._routing = routing
        self._stopping: dict[int, str] = {}  # run id -> the status it stops in
        self._running: set[int] = set()  # runs this service is charging
        self._holder = claims.holder()  # how this service's charges are named to other engines

    # --- one invoice ----------------------------------------------------------------------------

    async def invoice_due(self, invoice_id: int) -> InvoiceDue:
        """What is owed on an invoice and by whom; a clear error when it cannot be charged."""

        def query(session: Session) -> InvoiceDue:
            invoice = session.get(Invoice, invoice_id)
            if invoice is None:
                raise NotFound(f"There is no invoice number {invoice_id}.")
            if invoice.guardian_id is None:
                raise SwitchboardError(f"Invoice {invoice.number} has no guardian to charge.")
            paid = session.scalar(
                select(func.coalesce(func.sum(PaymentRow.amount_minor), 0))
                .where(PaymentRow.invoice_id == invoice_id)
                .where(PaymentRow.status == SUCCEEDED)
            )
            failed = session.scalar(
                select(func.count())
                .select_from(PaymentRow)
                .where(PaymentRow.invoice_id == invoice_id)
                .where(PaymentRow.status == FAILED)
            )
            owed = invoice.total_minor - int(paid or 0)
            if owed <= 0:
                raise SwitchboardError(f"Invoice {invoice.number} is paid.")
            return InvoiceDue(
                invoice_id,
                invoice.number,
                invoice.guardian_id,
                Money(owed, invoice.currency),
                f"invoice:{invoice_id}:{int(failed or 0) + 1}",
            )

        return await self._db.read(query)

    async def charge_invoice(
        self, invoice_id: int, method: str = "card", home_country: str = ""
    ) -> Payment:
        """Charge what is owed on one invoice to its guardian's saved method."""
        access.require(Permission.RUN_BILLING)
        due = await self.invoice_due(invoice_id)
        return await self._routing.charge(
            self._payments,
            guardian_id=due.guardian_id,
            amount=due.amount,
            method=method,
            idempotency_key=due.key,
            invoice_id=invoice_id,
            description=f"Invoice {due.number}",
            home_country=home_country,
        )

    # --- preparing ---------------------------------------------------------------------------

    async def unfinished(self) -> BillingRun | None:
        def query(session: Session) -> int | None:
            return session.scalar(
                select(BillingRunRow.id)
                .where(BillingRunRow.status.in_(UNFINISHED))
                .order_by(BillingRunRow.id)
                .limit(1)
            )

        found = await self._db.read(query)
        return await self.run_of(found) if found is not None else None

    async def prepare(self, due_before: date) -> BillingRun:
        """Which invoices due by `due_before` would be charged, and which cannot be, and why.
        Nothing is charged."""
        access.require(Permission.RUN_BILLING)
        who = access.actor()
        pending = await self.unfinished()
        if pending is not None:
            raise SwitchboardError(
                f"Billing run {pending.id} is not finished; run it again to finish it, or "
                "cancel it first."
            )

        def write(session: Session) -> int:
            # Two computers preparing at once: one after the other, and the second one finds
            # the first's run unfinished.
            claims.exclusive(session, "billing.prepare")
            unfinished = session.scalar(
                select(BillingRunRow.id).where(BillingRunRow.status.in_(UNFINISHED)).limit(1)
            )
            if unfinished is not None:
                raise SwitchboardError(
                    f"Billing run {unfinished} is not finished; run it again to finish it, or "
                    "cancel it first."
                )
            run = BillingRunRow(due_before=due_before, status=PREPARED)
            session.add(run)
            session.flush()
            paid = (
                select(PaymentRow.invoice_id, func.sum(PaymentRow.amount_minor).label("paid"))
                .where(PaymentRow.status.in_((SUCCEEDED, PROCESSING)))
                .where(PaymentRow.invoice_id.is_not(None))
                .group_by(PaymentRow.invoice_id)
                .subquery()
            )
            unsettled = set(
                session.scalars(
                    select(PaymentRow.invoice_id).where(PaymentRow.status.in_((PENDING, UNKNOWN)))
                )
            )
            with_card = set(
                session.scalars(
                    select(PaymentMethodRow.guardian_id).where(PaymentMethodRow.method == "card")
                )
            )
            rows = session.execute(
                select(Invoice, func.coalesce(paid.c.paid, 0))
                .outerjoin(paid, paid.c.invoice_id == Invoice.id)
                .where(Invoice.status == "open")
                .where(Invoice.due_on <= due_before)
                .order_by(Invoice.due_on, Invoice.id)
            ).all()
            for invoice, already in rows:
                owed = invoice.total_minor - int(already)
                if owed <= 0:
                    continue
                status, message = WAITING, ""
                if invoice.guardian_id is None:
                    status, message = SKIPPED, "The invoice has no guardian to charge."
                elif invoice.guardian_id not in with_card:
                    status, message = SKIPPED, "No card is saved for this family."
                elif invoice.id in unsettled:
                    status, message = (
                        SKIPPED,
                        "A payment for this invoice is not settled yet; it is not charged again "
                        "until it is.",
                    )
                session.add(
                    BillingItemRow(
                        run_id=run.id,
                        invoice_id=invoice.id,
                        guardian_id=invoice.guardian_id,
                        amount_minor=owed,
                        currency=invoice.currency,
                        status=status,
                        message=message,
                    )
                )
            session.flush()
            audit.record(
                session,
                who,
                "billing.prepared",
                "billing_run",
                run.id,
                None,
                {"due_before": due_before, **_run_figures(session, run.id)},
            )
            return run.id

        run_id = await self._db.write(write)
        return await self.run_of(run_id)

    # --- charging ------------------------------------------------------------------------------

    async def run(
        self,
        run_id: int,
        *,
        concurrency: int = CONCURRENCY,
        progress: Progress | None = None,
        home_country: str = "",
    ) -> BillingRun:
        """Charge every invoice of the run not yet charged, `concurrency` at a time; resumes a
        run that was interrupted or paused."""
        access.require(Permission.RUN_BILLING)
        who = access.actor()
        run = await self.run_of(run_id)
        if run.status in (CANCELED, FINISHED):
            raise SwitchboardError(f"Billing run {run_id} is {run.status}.")
        await self._set_status(run_id, RUNNING, who, "billing.started")
        self._stopping.pop(run_id, None)
        self._running.add(run_id)
        unsettled: list[int] = []

        async def worker() -> None:
            while run_id not in self._stopping:
                claim = await self._db.write(
                    _claim_item, run_id, self._holder, frozenset(unsettled), utcnow()
                )
                if claim is None:
                    return
                try:
                    await self._charge(run_id, claim, home_country)
                except Exception:
                    # Left "charging": running the run again charges it with the same key,
                    # which returns or settles whatever was begun.
                    log.exception("billing item not settled", extra={"item": claim.item_id})
                    unsettled.append(claim.item_id)
                    await self._db.write(_release, claim.item_id, self._holder)
                if progress is not None:
                    progress(await self.run_of(run_id))

        try:
            await asyncio.gather(*(worker() for _ in range(max(1, concurrency))))
        finally:
            self._running.discard(run_id)
        stopped = self._stopping.pop(run_id, None)
        status = await self._db.write(_conclude, run_id, stopped, self._holder, utcnow())
        self._events.publish(TOPIC, {"run": run_id, "status": status})
        finished = await self.run_of(run_id)
        log.info("billing run %s", finished.status, extra={"run": run_id, **finished.counts})
        return finished

    async def _charge(self, run_id: int, claim: _Claim, home_country: str) -> None:
        status, payment_id, message = FAILED, None, ""
        try:
            payment = await self._routing.charge(
                self._payments,
                guardian_id=claim.guardian_id,
                amount=claim.amount,
                method="card",
                idempotency_key=f"billing:{run_id}:{claim.invoice_id}:{claim.tries}",
                invoice_id=claim.invoice_id,
                description=f"Billing run {run_id}",
                home_country=home_country,
            )
        except SwitchboardError as error:
            message = str(error)
        else:
            payment_id = payment.id
            status = (
                payment.status if payment.status in (SUCCEEDED, PROCESSING, UNKNOWN) else FAILED
            )
            if payment.failure is not None and status != SUCCEEDED:
                message = payment.failure.message

        holder = self._holder

        def end(session: Session) -> None:
            row = session.get(BillingItemRow, claim.item_id, with_for_update=True)
            if row is None:
                return
            if row.charging_by not in (holder, None):
                # This engine's lease ran out and another took the invoice up: the same key
                # made it the same payment, which that engine records.
                log.warning("billing item taken up elsewhere", extra={"item": claim.item_id})
                return
            row.status, row.payment_id, row.message = status, payment_id, message
            row.charging_by, row.lease_until = None, None

        await self._db.write(end)
        self._events.publish(TOPIC, {"run": run_id, "item": claim.item_id, "status": status})

    def stop(self, run_id: int, status: str = PAUSED) -> None:
        """Pause (or cancel) a running run after the charges under way; a paused run resumes
        when run again."""
        access.require(Permission.RUN_BILLING)
        if status not in (PAUSED, CANCELED):
            raise ValueError(status)
        self._stopping[run_id] = status

    async def cancel(self, run_id: int) -> BillingRun:
        """Cancel a run not finished: at once, or after the charges under way if it is
        running."""
        access.require(Permission.RUN_BILLING)
        who = access.actor()
        run = await self.run_of(run_id)
        if run.status == RUNNING and run_id not in self._running:
            # Charging on another computer (or on none, its engine gone): it stops taking
            # invoices at once and finishes the charges it has under way.
            await self._set_status(run_id, CANCELED, who, "billing.canceled")
        elif run.status == RUNNING:
            self.stop(run_id, CANCELED)
            # The run writes its status when its charges under way end; who stopped it is
            # recorded now.
            await self._db.write(_record_status, run_id, who, "billing.canceled", CANCELED)
        elif run.status in (PREPARED, PAUSED):
            await self._set_status(run_id, CANCELED, who, "billing.canceled")
        return await self.run_of(run_id)

    async def retry_failed(self, run_id: int) -> BillingRun:
        """Make the run's failed invoices wait again, each to be charged as a new payment (a
        new key); the run can then be run again."""
        access.require(Permission.RUN_BILLING)
        who = access.actor()

        def write(session: Session) -> None:
            run = session.get(BillingRunRow, run_id)
            if run is None:
                raise NotFound(f"There is no billing run {run_id}.")
            was = run.status
            again = 0
            for row in session.scalars(
                select(BillingItemRow)
                .where(BillingItemRow.run_id == run_id)
                .where(BillingItemRow.status == FAILED)
            ):
                row.status, row.tries, row.message = WAITING, row.tries + 1, ""
                again += 1
            run.status, run.finished_at = PAUSED, None
            audit.record(
                session,
                who,
                "billing.retried",
                "billing_run",
                run_id,
                {"status": was, "failed": again},
                {"status": PAUSED, "waiting_again": again},
            )

        await self._db.write(write)
        return await self.run_of(run_id)

    async def settle_items(self) -> int:
        """Bring invoices whose payment was not known up to date with their payment now; how
        many changed."""

        def write(session: Session) -> int:
            changed = 0
            rows = session.execute(
                select(BillingItemRow, PaymentRow.status, PaymentRow.failure_message)
                .join(PaymentRow, PaymentRow.id == BillingItemRow.payment_id)
                .where(BillingItemRow.status == UNKNOWN)
                .where(PaymentRow.status.in_((SUCCEEDED, PROCESSING, FAILED)))
            ).all()
            for item, status, message in rows:
                item.status = status
                item.message = (message or "") if status == FAILED else ""
                changed += 1
            return changed

        changed = await self._db.write(write)
        if changed:
            self._events.publish(TOPIC, {"settled": changed})
        return changed

    # --- reading ------------------------------------------------------------------------------

    async def run_of(self, run_id: int) -> BillingRun:
        def query(session: Session) -> BillingRun:
            run = session.get(BillingRunRow, run_id)
            if run is None:
                raise NotFound(f"There is no billing run {run_id}.")
            counts, totals = _tally(session, run_id)
            return BillingRun(
                run.id,
                run.due_before,
                run.status,
                counts,
                {currency: Money(minor, currency) for currency, minor in totals.items()},
            )

        return await self._db.read(query)

    async def latest(self) -> BillingRun | None:
        """The most recent run, finished or not."""

        def query(session: Session) -> int | None:
            return session.scalar(select(BillingRunRow.id).order_by(BillingRunRow.id.desc()))

        found = await self._db.read(query)
        return await self.run_of(found) if found is not None else None

    async def items(self, run_id: int) -> list[BillingItem]:
        def query(session: Session) -> list[BillingItem]:
            rows = session.execute(
                select(BillingItemRow, Invoice.number, Guardian.first_name, Guardian.last_name)
                .join(Invoice, Invoice.id == BillingItemRow.invoice_id)
                .outerjoin(Guardian, Guardian.id == BillingItemRow.guardian_id)
                .where(BillingItemRow.run_id == run_id)
                .order_by(BillingItemRow.id)
            ).all()
            return [
                BillingItem(
                    row.id,
                    row.invoice_id,
                    number,
                    row.guardian_id,
                    Money(row.amount_minor, row.currency),
                    row.status,
                    row.payment_id,
                    row.message,
                    f"{first} {last}" if first is not None else "",
                )
                for row, number, first, last in rows
            ]

        return await self._db.read(query)

    async def _set_status(self, run_id: int, status: str, who: str = "", action: str = "") -> None:
        """With `action`, the change is recorded in the audit trail as done by `who`."""

        def write(session: Session) -> None:
            run = session.get(BillingRunRow, run_id)
            if run is None:
                raise NotFound(f"There is no billing run {run_id}.")
            if action:
                _record_status(session, run_id, who, action, status)
            run.status = status
            if status in (FINISHED, CANCELED):
                run.finished_at = utcnow()

        await self._db.write(write)
        self._events.publish(TOPIC, {"run": run_id, "status": status})


@dataclass(frozen=True)
class _Claim:
    """An invoice of a run claimed for charging by this engine."""

    item_id: int
    invoice_id: int
    guardian_id: int
    amount: Money
    tries: int


def _claim_item(
    session: Session, run_id: int, holder: str, skip: frozenset[int], now: datetime
) -> _Claim | None:
    """The next invoice of a running run to charge, marked charging by `holder` (None when
    none is left, or the run was paused or cancelled). An invoice whose charge was under way
    when its engine stopped is taken up too: charged with the same key, which returns what
    was begun."""
    run = session.get(BillingRunRow, run_id)
    if run is None or run.status != RUNNING:
        return None
    query = (
        select(BillingItemRow)
        .where(BillingItemRow.run_id == run_id)
        .where(BillingItemRow.guardian_id.is_not(None))
        .order_by(BillingItemRow.id)
        # Another engine's worker claiming at the same moment takes the next invoice.
        .with_for_update(skip_locked=True)
    )
    if skip:
        query = query.where(BillingItemRow.id.not_in(skip))
    waiting = session.scalars(query.where(BillingItemRow.status == WAITING).limit(1)).first()
    if waiting is not None:
        return _take(waiting, holder, now)
    for row in session.scalars(query.where(BillingItemRow.status == CHARGING)):
        if _abandoned(row, now):
            return _take(row, holder, now)
    return None


def _abandoned(row: BillingItemRow, now: datetime) -> bool:
    lapsed = row.lease_until is None or row.lease_until <= now
    return lapsed or claims.gone(row.charging_by)


def _take(row: BillingItemRow, holder: str, now: datetime) -> _Claim:
    assert row.guardian_id is not None  # the claim's query asks for one
    row.status, row.charging_by, row.lease_until = CHARGING, holder, now + CHARGE_LEASE
    return _Claim(
        row.id, row.invoice_id, row.guardian_id, Money(row.amount_minor, row.currency), row.tries
    )


def _release(session: Session, item_id: int, holder: str) -> None:
    """A charge whose outcome is not known: left charging, for the next run of the run."""
    row = session.get(BillingItemRow, item_id, with_for_update=True)
    if row is not None and row.charging_by == holder:
        row.charging_by, row.lease_until = None, None


def _conclude(
    session: Session, run_id: int, stopped: str | None, holder: str, now: datetime
) -> str:
    """The run's status once this engine has nothing more to charge in it: `stopped` (paused
    or canceled here), or still running while another engine charges in it, or paused with
    invoices left, or finished."""
    run = session.get(BillingRunRow, run_id, with_for_update=True)
    if run is None:
        raise NotFound(f"There is no billing run {run_id}.")
    if run.status != RUNNING:
        return run.status  # paused or canceled meanwhile, here or on another computer
    if stopped is not None:
        run.status = stopped
    else:
        left = session.scalars(
            select(BillingItemRow)
            .where(BillingItemRow.run_id == run_id)
            .where(BillingItemRow.status.in_((WAITING, CHARGING)))
        ).all()
        if any(row.charging_by != holder and not _abandoned(row, now) for row in left):
            return RUNNING  # the engine charging those finishes the run
        run.status = PAUSED if left else FINISHED
    if run.status in (FINISHED, CANCELED):
        run.finished_at = now
    return run.status


def _tally(session: Session, run_id: int) -> tuple[dict[str, int], dict[str, int]]:
    """A run's items by status, and what is to be (or was) charged by currency, in minor
    units."""
    counts: Counter[str] = Counter()
    totals: dict[str, int] = {}
    for status, currency, count, minor in session.execute(
        select(
            BillingItemRow.status,
            BillingItemRow.currency,
            func.count(),
            func.sum(BillingItemRow.amount_minor),
        )
        .where(BillingItemRow.run_id == run_id)
        .group_by(BillingItemRow.status, BillingItemRow.currency)
    ):
        counts[status] += int(count)
        if status != SKIPPED:
            totals[currency] = totals.get(currency, 0) + int(minor or 0)
    return dict(counts), totals


def _run_figures(session: Session, run_id: int) -> dict[str, object]:
    """What the audit trail keeps of a run: how many invoices by status, and the totals."""
    counts, totals = _tally(session, run_id)
    return {"invoices": counts, "totals_minor": totals}


def _record_status(session: Session, run_id: int, who: str, action: str, status: str) -> None:
    run = session.get(BillingRunRow, run_id)
    if run is None:
        raise NotFound(f"There is no billing run {run_id}.")
    figures = _run_figures(session, run_id)
    audit.record(
        session,
        who,
        action,
        "billing_run",
        run_id,
        {"status": run.status},
        {"status": status, "due_before": run.due_before, **figures},
    )
