"""The demo school's payment history: six weeks or so of tuition and small payments at its
sandbox gateways, written as the payment service would have written them, so the Payments and
Gateway analytics pages have something true to show from the first moment."""

from __future__ import annotations

import asyncio
import re
import shutil
from collections import Counter, defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import keyring
import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

from app.config import DATABASE_FILE, Config, resolve_config
from app.domain.errors import SwitchboardError
from app.domain.money import Money
from app.domain.payments import FailureKind, FeeSchedule
from app.domain.school import InvoiceStatus
from app.providers.gateway import PaymentGateway
from app.services import Services
from app.services.demo import DemoSummary, seed_demo
from app.services.gateway_stats import GatewayStats, Period
from app.services.payments import ChargeOrder
from app.store.payments import PaymentAttemptRow, PaymentRow
from app.store.school import Invoice
from tests.support.memory_keyring import MemoryKeyring

TODAY = date(2026, 11, 18)  # a Wednesday
ZONE = ZoneInfo("Africa/Harare")
NOW = datetime.combine(TODAY, time(12), ZONE)  # what `today=` means for the demo's "now"
INVOICE_KEY = re.compile(r"^invoice:(\d+):(\d+)$")


@dataclass(frozen=True)
class Seeded:
    summary: DemoSummary
    payments: list[PaymentRow]
    attempts: dict[int, list[PaymentAttemptRow]]  # by payment id, in order
    invoices: dict[int, Invoice]
    fees: dict[int, FeeSchedule]  # by connection id
    names: dict[int, str]
    config: Config


def _fresh_config(folder: Path, template: Path) -> Config:
    folder.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(template, folder / DATABASE_FILE)
    return resolve_config(str(folder), environ={})


def _read(session: Session) -> tuple[list[PaymentRow], list[PaymentAttemptRow], list[Invoice]]:
    payments = list(session.scalars(select(PaymentRow).order_by(PaymentRow.id)))
    attempts = list(
        session.scalars(
            select(PaymentAttemptRow).order_by(
                PaymentAttemptRow.payment_id, PaymentAttemptRow.number
            )
        )
    )
    invoices = list(session.scalars(select(Invoice)))
    session.expunge_all()
    return payments, attempts, invoices


async def _seed(config: Config, seed: int = 2026) -> Seeded:
    services = await Services.open(config)
    try:
        summary = await seed_demo(services, today=TODAY, seed=seed)
        payments, attempts, invoices = await services.db.read(_read)
        fees: dict[int, FeeSchedule] = {}
        names: dict[int, str] = {}
        for record in await services.connections.connections():
            provider = await services.connections.provider(record.id)
            assert isinstance(provider, PaymentGateway)
            fees[record.id] = provider.fees
            names[record.id] = record.name
    finally:
        await services.close()
    by_payment: dict[int, list[PaymentAttemptRow]] = defaultdict(list)
    for attempt in attempts:
        by_payment[attempt.payment_id].append(attempt)
    return Seeded(
        summary,
        payments,
        dict(by_payment),
        {invoice.id: invoice for invoice in invoices},
        fees,
        names,
        config,
    )


@contextmanager
def _memory_keyring() -> Iterator[None]:
    """The credential store the sandboxes' keys go to (the per-test one is not there yet when a
    module's fixture runs)."""
    previous = keyring.get_keyring()
    keyring.set_keyring(MemoryKeyring())
    try:
        yield
    finally:
        keyring.set_keyring(previous)


@pytest.fixture(scope="module")
def seeded(tmp_path_factory: pytest.TempPathFactory, migrated_template: Path) -> Seeded:
    """One demo school for the tests that only read it."""
    config = _fresh_config(tmp_path_factory.mktemp("demo-payments"), migrated_template)
    with _memory_keyring():
        return asyncio.run(_seed(config))


def _local(moment: datetime) -> datetime:
    return moment.astimezone(ZONE)


# --- what was written ----------------------------------------------------------------------------


def test_a_few_hundred_payments_across_the_three_sandboxes_over_the_last_weeks(
    seeded: Seeded,
) -> None:
    payments = seeded.payments
    assert seeded.summary.payments == len(payments)
    assert 200 <= len(payments) <= 450
    per_gateway = Counter(payment.connection_id for payment in payments)
    assert set(per_gateway) == set(seeded.names)
    assert all(count >= 20 for count in per_gateway.values()), per_gateway

    start = NOW - timedelta(days=7 * 8)
    assert all(start <= payment.created_at < NOW for payment in payments)
    # Every one of the last six weeks has payments, not only the weeks invoices went out.
    weeks = Counter((NOW - payment.created_at).days // 7 for payment in payments)
    assert all(weeks[week] > 0 for week in range(6)), weeks
    # Newest last: the Payments page shows them newest first by id.
    moments = [payment.created_at for payment in payments]
    assert moments == sorted(moments)


def test_payments_are_made_in_office_hours_mostly_on_weekdays(seeded: Seeded) -> None:
    local = [_local(payment.created_at) for payment in seeded.payments]
    assert all(8 <= moment.hour < 18 for moment in local)
    assert all(moment.weekday() != 6 for moment in local)  # closed on Sundays
    weekdays = sum(moment.weekday() < 5 for moment in local)
    assert weekdays >= 0.9 * len(local)


def test_amounts_are_invoices_totals_and_small_round_amounts_in_usd_and_zwg(
    seeded: Seeded,
) -> None:
    assert {payment.currency for payment in seeded.payments} == {"USD", "ZWG"}
    for payment in seeded.payments:
        assert payment.method == "card"
        assert payment.guardian_id is not None
        if payment.invoice_id is not None:
            invoice = seeded.invoices[payment.invoice_id]
            assert payment.amount_minor == invoice.total_minor
            assert payment.currency == invoice.currency
            assert payment.guardian_id == invoice.guardian_id
            assert payment.description == f"Invoice {invoice.number}"
        else:
            assert payment.amount_minor % 100 == 0  # whole dollars (or ZWG) for small things
            assert payment.description
    linked = sum(payment.invoice_id is not None for payment in seeded.payments)
    assert linked >= 0.6 * len(seeded.payments)


def test_every_payment_s_status_agrees_with_its_attempts(seeded: Seeded) -> None:
    for payment in seeded.payments:
        attempts = seeded.attempts[payment.id]
        assert [attempt.number for attempt in attempts] == list(range(1, len(attempts) + 1))
        assert all(
            attempt.reference == f"{payment.reference}-{attempt.number}" for attempt in attempts
        )
        # Every attempt but the last failed for a technical reason: only then is another
        # gateway tried, and never one tried already.
        assert all(
            attempt.status == "failed" and attempt.failure_kind == FailureKind.TECHNICAL.value
            for attempt in attempts[:-1]
        )
        assert len({attempt.connection_id for attempt in attempts}) == len(attempts)
        last = attempts[-1]
        assert last.connection_id == payment.connection_id
        succeeded = [attempt for attempt in attempts if attempt.status == "succeeded"]
        if payment.status == "succeeded":
            assert succeeded == [last]
            assert last.gateway_id == payment.gateway_id
            assert payment.gateway_id.startswith("pi_sbx")
            assert payment.failure_kind is None
        else:
            assert payment.status == "failed"
            assert succeeded == []
            assert (payment.failure_kind, payment.failure_code, payment.failure_message) == (
                last.failure_kind,
                last.failure_code,
                last.failure_message,
            )
        for attempt in attempts:
            assert attempt.finished_at is not None
            assert attempt.latency_ms is not None
            assert attempt.started_at >= payment.created_at
            elapsed = (attempt.finished_at - attempt.started_at).total_seconds() * 1000
            assert elapsed == pytest.approx(attempt.latency_ms, abs=1)
            assert attempt.token  # the card saved for this family at that gateway
        assert payment.updated_at == last.finished_at


def test_outcomes_mix_successes_declines_and_a_few_failovers(seeded: Seeded) -> None:
    statuses = Counter(payment.status for payment in seeded.payments)
    assert 0.8 <= statuses["succeeded"] / len(seeded.payments) <= 0.95
    codes = Counter(
        attempt.failure_code
        for attempts in seeded.attempts.values()
        for attempt in attempts
        if attempt.status == "failed"
    )
    assert codes["card_declined/insufficient_funds"] >= 3  # soft
    assert codes["card_declined/generic_decline"] >= 1  # hard
    assert codes["card_declined/stolen_card"] >= 1  # the families whose card always declines
    assert 1 <= codes["http_503"] <= 20
    failovers = [
        attempts
        for attempts in seeded.attempts.values()
        if len(attempts) > 1 and attempts[-1].status == "succeeded"
    ]
    assert failovers, "a technical failure followed by a success at another gateway"
    first = failovers[0][0]
    assert (
        first.failure_message
        == f"{seeded.names[first.connection_id]} had a problem of its own (HTTP 503)."
    )


def test_each_attempt_keeps_the_router_s_decision(seeded: Seeded) -> None:
    names = set(seeded.names.values())
    for payment in seeded.payments:
        attempts = seeded.attempts[payment.id]
        decision = attempts[0].decision
        assert all(attempt.decision == decision for attempt in attempts)  # one decision
        order = [int(key) for key in decision["order"]]
        assert [attempt.connection_id for attempt in attempts] == order[: len(attempts)]
        assert decision["explanation"].startswith(f"chose {seeded.names[order[0]]}: ")
        assert {score["gateway"] for score in decision["scores"]} <= set(decision["order"])
    explanations = " ".join(
        attempts[0].decision["explanation"] for attempts in seeded.attempts.values()
    )
    assert "% over the last" in explanations
    assert "eliminated: its circuit breaker is open" in explanations
    assert all(name in explanations for name in names)


def test_fees_are_each_gateway_s_schedule(seeded: Seeded) -> None:
    for payment in seeded.payments:
        if payment.status != "succeeded":
            assert payment.fee_minor is None
            continue
        assert payment.connection_id is not None
        schedule = seeded.fees[payment.connection_id]
        expected = schedule.fee(Money(payment.amount_minor, payment.currency), "card")
        assert payment.fee_minor == expected.minor
    # The gateways do not all charge the same.
    usd = Money(8_000, "USD")
    assert len({schedule.fee(usd, "card") for schedule in seeded.fees.values()}) == 3


def test_answer_times_follow_each_sandbox_s_latency(seeded: Seeded) -> None:
    by_name: dict[str, list[float]] = defaultdict(list)
    for attempts in seeded.attempts.values():
        for attempt in attempts:
            if attempt.failure_kind != FailureKind.TECHNICAL.value and attempt.latency_ms:
                by_name[seeded.names[attempt.connection_id]].append(attempt.latency_ms)
    medians = {name: sorted(values)[len(values) // 2] for name, values in by_name.items()}
    # Set to 90, 450 and 200 ms (app/services/demo.py SANDBOXES).
    assert 50 <= medians["Sandbox Cards"] <= 150
    assert 250 <= medians["Sandbox EcoCash"] <= 800
    assert 120 <= medians["Sandbox Bank Transfers"] <= 350


def test_invoices_and_their_payments_agree(seeded: Seeded) -> None:
    succeeded: dict[int, list[PaymentRow]] = defaultdict(list)
    keys: dict[int, list[int]] = defaultdict(list)
    for payment in seeded.payments:
        match = INVOICE_KEY.match(payment.idempotency_key)
        if payment.invoice_id is None:
            assert match is None
            continue
        assert match is not None
        assert int(match.group(1)) == payment.invoice_id
        keys[payment.invoice_id].append(int(match.group(2)))
        if payment.status == "succeeded":
            succeeded[payment.invoice_id].append(payment)
    # As `BillingService.invoice_due` numbers them: the next key after each failed payment.
    assert all(numbers == list(range(1, len(numbers) + 1)) for numbers in keys.values())
    assert all(len(paid) == 1 for paid in succeeded.values())
    for invoice_id in succeeded:
        assert seeded.invoices[invoice_id].status == InvoiceStatus.PAID.value
    assert any(seeded.invoices[i].issued_on.month == 10 for i in succeeded)
    # This month's invoices are paid only where the card was charged.
    this_month = [i for i in seeded.invoices.values() if i.issued_on.month == 11]
    paid_now = {i.id for i in this_month if i.status == InvoiceStatus.PAID.value}
    assert paid_now
    assert paid_now <= set(succeeded)
    # Some of last month's unpaid invoices show why: the card was declined.
    overdue = {
        i.id for i in seeded.invoices.values() if i.status == "open" and i.issued_on.month == 10
    }
    assert overdue & set(keys)


def test_the_digest_is_the_payment_service_s(seeded: Seeded) -> None:
    payment = seeded.payments[0]
    order = ChargeOrder(
        payment.idempotency_key,
        Money(payment.amount_minor, payment.currency),
        payment.method,
        (),
        payment.invoice_id,
        payment.guardian_id,
    )
    assert payment.request_digest == order.digest()


def test_gateway_analytics_report_plausible_figures_for_the_last_30_days(seeded: Seeded) -> None:
    async def report() -> list[tuple[str, int, float | None, int, float | None]]:
        services = await Services.open(seeded.config)
        try:
            found = await GatewayStats(services.db).report(Period.MONTH, ZONE, NOW)
        finally:
            await services.close()
        return [
            (
                g.name,
                g.total.attempts,
                g.total.success_percent,
                g.total.technical_failures,
                g.total.p95_ms,
            )
            for g in found.gateways
        ]

    rows = asyncio.run(report())
    assert [row[0] for row in rows] == [
        "Sandbox Cards",
        "Sandbox EcoCash",
        "Sandbox Bank Transfers",
    ]
    for name, attempts, success, technical, p95 in rows:
        assert attempts >= 10, name
        assert success is not None
        assert 70 <= success <= 100, (name, success)
        assert technical <= 0.1 * attempts
        assert p95 is not None
    total = sum(row[1] for row in rows)
    taken = sum(row[1] * (row[2] or 0) / 100 for row in rows)
    assert 0.8 <= taken / total <= 0.97
    p95 = {row[0]: row[4] for row in rows}
    assert p95["Sandbox Cards"] < p95["Sandbox Bank Transfers"] < p95["Sandbox EcoCash"]  # type: ignore[operator]


# --- seeding again, the same seed, refunds -------------------------------------------------------


async def test_seeding_again_does_not_add_a_second_history(services: Services) -> None:
    summary = await seed_demo(services, today=TODAY)
    assert summary.payments > 0
    counted = await services.db.read(lambda s: len(list(s.scalars(select(PaymentRow.id)))))
    with pytest.raises(SwitchboardError, match="--data-dir"):
        await seed_demo(services, today=TODAY)
    # Nor does writing the history again into a database that has one.
    from app.services.demo import _payment_history

    ids = [record.id for record in await services.connections.connections()]
    assert await _payment_history(services, ids, NOW, 2026) == 0
    again = await services.db.read(lambda s: len(list(s.scalars(select(PaymentRow.id)))))
    assert again == counted == summary.payments


async def test_the_same_seed_and_day_give_the_same_history(
    seeded: Seeded, tmp_path: Path, migrated_template: Path
) -> None:
    again = await _seed(_fresh_config(tmp_path / "again", migrated_template))

    def fingerprint(s: Seeded) -> list[tuple[object, ...]]:
        return [
            (p.reference, p.created_at, p.amount_minor, p.status, p.connection_id, p.fee_minor)
            for p in s.payments
        ]

    assert fingerprint(again) == fingerprint(seeded)


async def test_a_past_payment_can_be_refunded_at_its_sandbox(services: Services) -> None:
    await seed_demo(services, today=TODAY)
    cards = next(
        r.id for r in await services.connections.connections() if r.name == "Sandbox Cards"
    )
    paid = await services.payments.payments(500, status="succeeded", connection_id=cards)
    payment = paid[-1]
    refund = await services.payments.refund(payment.id, Money(500, payment.amount.currency))
    assert refund.status == "succeeded", refund.failure_message
    assert (await services.payments.payment(payment.id)).refunded.minor == 500
