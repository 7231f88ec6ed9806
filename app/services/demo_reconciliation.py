"""The demo school's reconciliation, as a bursar would have left it: each sandbox gateway's
ledger read through its API, the statements of the school's two bank accounts for the same
weeks, and a run every Monday morning, then one now.

The statements are made from the payouts the gateways report, with what banks do to them: each
arrives a day later under the bank's own words; the US dollar account takes a monthly fee; one
payout arrives short by the bank's charge for receiving it; and two arrive as one deposit that
names neither (split it on the Exceptions page to match them). The newest payouts are not on the
statement yet. They are imported as files the way the office imports them."""

from __future__ import annotations

import csv
import random
import tempfile
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

from sqlalchemy import select
from sqlalchemy.orm import Session

from app.domain.money import Money
from app.domain.payments import GatewayLedger
from app.domain.reconciliation import Kind
from app.providers.http import ResilientClient
from app.providers.sandbox import (
    SANDBOX_PAYMENTS,
    SANDBOX_URL,
    Behaviour,
    SandboxGateway,
    SimulatedTransport,
    books_of,
)
from app.providers.sandbox_ledger import Ledger
from app.providers.spec import RatePolicy, ResiliencePolicy
from app.services import Services
from app.store.reconciliation import ReconRecordRow

ACCOUNTS = {"USD": "Main account (US$)", "ZWG": "ZiG account"}
MONTHLY_FEE = Money(-500, "USD")  # the US dollar account's monthly fee
RECEIVING_CHARGE = 250  # what the bank keeps of one payout, in cents
RUN_AT = time(7)  # the weekly run, Monday mornings
DEMO_READER = "demo-reader"  # the key the demo's own reads of the sandbox books carry


@dataclass(frozen=True)
class _Payout:
    reference: str
    amount: Money
    arrives: date


async def seed_reconciliation(
    services: Services, connections: list[int], start: datetime, now: datetime, seed: int
) -> int:
    """Read the gateways, import the bank statements and reconcile weekly up to `now` (a
    moment in the school's time zone); how many runs were made."""
    recon = services.reconciliation
    for connection_id in connections:
        record = await services.connections.connection(connection_id)
        books = books_of(connection_id, record.config)
        await recon.keep_ledger(connection_id, await _read_books(books, start, now), now)
    payouts = await services.db.read(_payouts)
    statement_day = now.date() - timedelta(days=1)  # statements are read up to yesterday
    rng = random.Random(seed * 104_729 + 3)
    with tempfile.TemporaryDirectory(prefix="switchboard-demo-") as folder:
        for currency, label in ACCOUNTS.items():
            lines = _statement(
                [payout for payout in payouts if payout.amount.currency == currency],
                currency,
                start.date(),
                statement_day,
                rng,
            )
            if not lines:
                continue
            path = Path(folder) / f"{label} statement.csv"
            _write(path, lines)
            account = await recon.source_for_bank(label)
            await recon.import_file(path, "bank-csv", source=account)
    zone = now.tzinfo if isinstance(now.tzinfo, ZoneInfo) else ZoneInfo("UTC")
    mondays = [
        datetime.combine(day, RUN_AT, zone)
        for day in _days(start.date() + timedelta(days=7), now.date())
        if day.weekday() == 0 and datetime.combine(day, RUN_AT, zone) < now
    ]
    for moment in mondays:
        await recon.run("scheduled", as_of=moment)
    await recon.run("manual", as_of=now)
    return len(mondays) + 1


async def _read_books(books: Ledger, start: datetime, now: datetime) -> GatewayLedger:
    """A sandbox's ledger as its API answers, read by the Stripe client's own code but without
    the connection's simulated answer times, failures and outages: they would make seeding slow
    and, in an outage, fail it."""

    async def no_wait(_seconds: float) -> None:
        return None

    transport = SimulatedTransport(
        Behaviour(1.0, 1.0, 0.0), DEMO_READER, ledger=books, sleep=no_wait
    )
    client = ResilientClient(
        connection_id=0,
        name="demo",
        base_url=SANDBOX_URL,
        policy=ResiliencePolicy(timeout=30.0, rate=RatePolicy(requests=10_000, per_seconds=1)),
        headers={"Authorization": f"Bearer {DEMO_READER}"},
        transport=transport,
    )
    try:
        return await SandboxGateway(SANDBOX_PAYMENTS, client, {}, {}).ledger(start, now)
    finally:
        await client.aclose()


def _payouts(session: Session) -> list[_Payout]:
    rows = session.execute(
        select(ReconRecordRow.reference, ReconRecordRow.amount_minor, ReconRecordRow.currency,
               ReconRecordRow.at)
        .where(ReconRecordRow.kind == Kind.PAYOUT.value)
        .order_by(ReconRecordRow.at, ReconRecordRow.id)
    )  # fmt: skip
    return [
        _Payout(reference, Money(minor, currency), at.date())
        for reference, minor, currency, at in rows
    ]


def _statement(
    payouts: list[_Payout], currency: str, start: date, until: date, rng: random.Random
) -> list[tuple[date, str, Money]]:
    """One account's lines up to `until`: its payouts as the bank words them, and its fees."""
    arrived = [payout for payout in payouts if payout.arrives <= until]
    lines: list[tuple[date, str, Money]] = []
    merged: set[int] = set()
    short = -1
    if currency == "USD" and len(arrived) >= 6:
        # Two payouts early on paid in as one deposit; one later short by the bank's charge.
        first = rng.randrange(0, len(arrived) // 2 - 1)
        merged = {first, first + 1}
        together = arrived[first].amount + arrived[first + 1].amount
        lines.append((arrived[first + 1].arrives, "DEPOSIT SANDBOX PAYMENTS", together))
        short = rng.randrange(len(arrived) // 2 + 1, len(arrived))
    for index, payout in enumerate(arrived):
        if index in merged:
            continue
        amount = payout.amount
        text = f"SANDBOX PAYOUT {payout.reference.upper()}"
        if index == short:
            amount = Money(amount.minor - RECEIVING_CHARGE, currency)
            text += " LESS CHARGES"
        lines.append((payout.arrives, text, amount))
    if currency == MONTHLY_FEE.currency:
        lines.extend(
            (day, "MONTHLY ACCOUNT FEE", MONTHLY_FEE)
            for day in _days(start, until)
            if (day + timedelta(days=1)).day == 1  # the last day of each month
        )
    return sorted(lines, key=lambda line: (line[0], line[1]))


def _write(path: Path, lines: list[tuple[date, str, Money]]) -> None:
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["Date", "Description", "Amount", "Currency"])
        for day, text, amount in lines:
            writer.writerow([day.isoformat(), text, amount.for_input(), amount.currency])


def _days(first: date, last: date) -> list[date]:
    return [first + timedelta(days=n) for n in range((last - first).days + 1)]
