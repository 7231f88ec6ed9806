"""Billing runs: prepared (what will be charged, what cannot be and why), charged a few at a
time with progress, paused and resumed, failed invoices retried as new payments."""

from __future__ import annotations

import uuid
from datetime import date

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

from app.domain.errors import SwitchboardError
from app.domain.money import Money
from app.services import Services
from app.services.billing import CANCELED, FINISHED, PAUSED, PREPARED, BillingRun
from app.store.payments import BillingItemRow, PaymentRow
from app.store.school import Guardian, Invoice

pytestmark = pytest.mark.both_databases  # the workers' claims differ by database

DUE = date(2026, 11, 20)


async def school(services: Services, families: int, *, declined: int = 0) -> list[int]:
    """`families` guardians with a card saved at a sandbox gateway and one invoice due each
    (the first `declined` of them with a card that is always declined), plus one invoice
    without a guardian and one family without a card. The invoices' ids."""
    record = await services.connections.add(
        "sandbox-payments",
        f"Sandbox {uuid.uuid4().hex[:6]}",
        {"error_rate": 0, "latency_ms": 1, "latency_p95_ms": 2, "approval_rate": 1},
        {"api_key": "sk_sandbox"},
    )

    def write(session: Session) -> list[tuple[int, int]]:
        made = []
        for n in range(families + 1):
            guardian = Guardian(ref=f"G-{n}", first_name="Parent", last_name=str(n))
            session.add(guardian)
            session.flush()
            invoice = Invoice(
                number=f"INV-{n}",
                guardian_id=guardian.id,
                currency="USD",
                total_minor=5_000,
                issued_on=date(2026, 11, 1),
                due_on=DUE,
            )
            session.add(invoice)
            session.flush()
            made.append((guardian.id, invoice.id))
        orphan = Invoice(
            number="INV-ORPHAN",
            currency="USD",
            total_minor=1_000,
            issued_on=date(2026, 11, 1),
            due_on=DUE,
        )
        session.add(orphan)
        return made

    made = await services.db.write(write)
    for n, (guardian_id, _) in enumerate(made[:families]):
        token = f"pm_sandbox_declined_{n}" if n < declined else f"pm_sandbox_visa_{n}"
        await services.routing.save_method(guardian_id, record.id, "card", token)
    return [invoice_id for _, invoice_id in made]


@pytest.mark.asyncio
async def test_preparing_shows_what_will_be_charged_and_what_cannot_be(services: Services) -> None:
    await school(services, 3)
    run = await services.billing.prepare(DUE)
    assert run.status == PREPARED
    assert run.counts == {"waiting": 3, "skipped": 2}
    assert run.totals == {"USD": Money(3 * 5_000, "USD")}
    reasons = {item.invoice_number: item.message for item in await services.billing.items(run.id)}
    assert reasons["INV-3"] == "No card is saved for this family."
    assert reasons["INV-ORPHAN"] == "The invoice has no guardian to charge."
    assert await services.payments.payments() == []
    with pytest.raises(SwitchboardError, match="is not finished"):
        await services.billing.prepare(DUE)


@pytest.mark.asyncio
async def test_a_run_charges_each_invoice_and_reports_progress(services: Services) -> None:
    await school(services, 6)
    run = await services.billing.prepare(DUE)
    seen: list[int] = []
    finished = await services.billing.run(
        run.id, concurrency=2, progress=lambda state: seen.append(state.done)
    )
    assert finished.status == FINISHED
    assert finished.counts == {"succeeded": 6, "skipped": 2}
    assert len(seen) == 6  # once per invoice charged
    assert max(seen) == 8  # the skipped two count as done
    assert len(await services.payments.payments()) == 6
    # Running the same invoices again charges nobody twice: they are paid.
    again = await services.billing.prepare(DUE)
    assert again.counts == {"skipped": 2}


@pytest.mark.asyncio
async def test_a_paused_run_resumes_where_it_stopped(services: Services) -> None:
    await school(services, 8)
    run = await services.billing.prepare(DUE)

    def pause_after_three(state: BillingRun) -> None:
        if state.counts.get("succeeded", 0) >= 3:
            services.billing.stop(run.id)

    paused = await services.billing.run(run.id, concurrency=1, progress=pause_after_three)
    assert paused.status == PAUSED
    assert paused.counts["succeeded"] == 3
    assert paused.counts["waiting"] == 5
    assert (await services.billing.unfinished()) == paused
    finished = await services.billing.run(run.id)
    assert finished.counts == {"succeeded": 8, "skipped": 2}
    assert len(await services.payments.payments()) == 8


@pytest.mark.asyncio
async def test_failed_invoices_are_retried_as_new_payments(services: Services) -> None:
    await school(services, 4, declined=1)
    run = await services.billing.prepare(DUE)
    first = await services.billing.run(run.id)
    assert first.counts == {"succeeded": 3, "failed": 1, "skipped": 2}
    [failed] = [item for item in await services.billing.items(run.id) if item.status == "failed"]
    assert failed.message == "Your card was declined."
    retried = await services.billing.retry_failed(run.id)
    assert retried.counts["waiting"] == 1
    second = await services.billing.run(run.id)
    assert second.counts == {"succeeded": 3, "failed": 1, "skipped": 2}
    tries = [p for p in await services.payments.payments() if p.invoice_id == failed.invoice_id]
    assert len(tries) == 2  # a new key, so a new payment, not the declined one returned


@pytest.mark.asyncio
async def test_a_prepared_run_can_be_canceled(services: Services) -> None:
    await school(services, 2)
    run = await services.billing.prepare(DUE)
    canceled = await services.billing.cancel(run.id)
    assert canceled.status == CANCELED
    assert await services.billing.unfinished() is None
    with pytest.raises(SwitchboardError, match="is canceled"):
        await services.billing.run(run.id)


@pytest.mark.asyncio
async def test_an_invoice_whose_payment_is_not_settled_is_not_charged_again(
    services: Services,
) -> None:
    invoices = await school(services, 2)

    def unsettled_payment(session: Session) -> None:
        session.add(
            PaymentRow(
                reference="pay_unsettled",
                idempotency_key="earlier-run",
                request_digest="-",
                invoice_id=invoices[0],
                amount_minor=5_000,
                currency="USD",
                method="card",
                status="unknown",
            )
        )

    await services.db.write(unsettled_payment)
    run = await services.billing.prepare(DUE)
    items = {item.invoice_id: item for item in await services.billing.items(run.id)}
    assert items[invoices[0]].status == "skipped"
    assert "not settled yet" in items[invoices[0]].message
    assert items[invoices[1]].status == "waiting"


@pytest.mark.asyncio
async def test_an_invoice_whose_payment_was_unknown_follows_its_payment_once_settled(
    services: Services,
) -> None:
    await school(services, 2)
    run = await services.billing.prepare(DUE)
    await services.billing.run(run.id)
    [first, second] = [item for item in await services.billing.items(run.id) if item.payment_id]

    def lost_then_settled(session: Session) -> None:
        # As after a lost answer: the item unknown; the payment since settled in the background.
        for item_row in session.scalars(select(BillingItemRow)):
            if item_row.payment_id in (first.payment_id, second.payment_id):
                item_row.status = "unknown"
        failed = session.get(PaymentRow, second.payment_id)
        assert failed is not None
        failed.status, failed.failure_message = "failed", "No gateway took this payment."

    await services.db.write(lost_then_settled)
    assert await services.billing.settle_items() == 2
    items = {item.id: item for item in await services.billing.items(run.id)}
    assert items[first.id].status == "succeeded"
    assert (items[second.id].status, items[second.id].message) == (
        "failed",
        "No gateway took this payment.",
    )
