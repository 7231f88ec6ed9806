"""Each gateway's settled ledger of a period, read through its real API over loopback: what it
took, gave back, kept in fees and paid out to the bank, and which payout carried what.

Stripe's dialect is played by the sandbox's books (app/providers/sandbox_ledger.py) behind a real
HTTP server, and in process by the sandbox gateway itself; localstripe is asked only what it
answers (it refuses the `created` filters and has no `payout` filter). PayPal and Dwolla are
their fakes (tests/fakes/paypal.py, tests/fakes/dwolla.py)."""

from __future__ import annotations

import json
import random
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

import httpx
import pytest
from starlette.types import Receive, Scope, Send

from app.domain.money import Money
from app.domain.payments import ChargeRequest, FailureKind, GatewayLedger, RefundStatus
from app.providers import sandbox_ledger
from app.providers.dwolla import Dwolla
from app.providers.gateway import Feature, PaymentGateway, failure_of
from app.providers.http import CredentialsRefused, ProviderError, ProviderFailed
from app.providers.paynow import Paynow
from app.providers.paypal import PayPal
from app.providers.paysafe import Paysafe
from app.providers.sandbox import SandboxGateway
from app.providers.stripe import BALANCE_TRANSACTIONS, Stripe
from app.services import Services
from tests.fakes.dwolla import FakeDwolla
from tests.fakes.ledger_gateway import LedgerGateway
from tests.fakes.paypal import FakePayPal
from tests.fakes.scripted import Reply, ScriptedServer
from tests.fakes.server import served
from tests.support.localstripe import LocalStripe

DAY = timedelta(days=1)
# A Monday morning, well in the past: the sandbox's clock is set, nothing waits for real time.
MONDAY = datetime(2026, 3, 2, 10, 0, tzinfo=UTC)


def test_only_gateways_with_a_ledger_api_say_they_have_one() -> None:
    for gateway in (Stripe, SandboxGateway, PayPal, Dwolla):
        assert Feature.LEDGER in gateway.features, gateway
    for gateway in (Paysafe, Paynow):
        assert Feature.LEDGER not in gateway.features, gateway


def fast(provider: Any) -> None:
    """A gateway that fails is given up on quickly."""
    policy = provider.client.policy
    provider.client.policy = replace(
        policy, timeout=1.0, retry=replace(policy.retry, base_delay=0.01, max_delay=0.01)
    )


# --- Stripe's dialect: the sandbox's books on loopback --------------------------------------------


@dataclass
class Books:
    """The sandbox's books behind a real HTTP server, with their clock and every query asked."""

    gateway: LedgerGateway
    url: str
    now: list[float]
    asked: list[tuple[str, dict[str, str]]]

    def at(self, moment: datetime) -> None:
        self.now[0] = moment.timestamp()

    def queries(self, path: str) -> list[dict[str, str]]:
        return [query for asked_path, query in self.asked if asked_path == path]


@pytest.fixture
def books() -> Iterator[Books]:
    gateway = LedgerGateway()
    now = [MONDAY.timestamp()]
    gateway.ledger.clock = lambda: now[0]
    asked: list[tuple[str, dict[str, str]]] = []

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            asked.append((scope["path"], dict(parse_qsl(scope["query_string"].decode()))))
        await gateway.app(scope, receive, send)

    with served(app) as url:
        yield Books(gateway, url, now, asked)


async def stripe_at(services: Services, url: str) -> Stripe:
    record = await services.connections.add(
        "stripe", f"Stripe {uuid.uuid4().hex[:6]}", {"api_url": url}, {"secret_key": "sk_test_1"}
    )
    provider = await services.connections.provider(record.id)
    assert isinstance(provider, Stripe)
    assert isinstance(provider, PaymentGateway)
    return provider


def card(minor: int, currency: str = "USD") -> ChargeRequest:
    return ChargeRequest(f"pay_{uuid.uuid4().hex}", Money(minor, currency), "card", "pm_card_visa")


async def take_payments(stripe: Stripe, books: Books) -> list[str]:
    """Twelve payments six hours apart from Monday 10:00, one refunded in part on Tuesday."""
    paid = []
    for number in range(12):
        books.at(MONDAY + number * timedelta(hours=6))
        result = await stripe.charge(card(10_000 + number * 100))
        assert result.succeeded, result.failure
        paid.append(result.gateway_id)
    books.at(MONDAY + timedelta(hours=31))
    refund = await stripe.refund(paid[2], Money(2_500, "USD"), "ref_1")
    assert refund.status is RefundStatus.SUCCEEDED
    return paid


@pytest.mark.asyncio
async def test_stripe_ledger_reads_every_page_of_the_period_and_only_the_period(
    services: Services, books: Books
) -> None:
    stripe = await stripe_at(services, books.url)
    await take_payments(stripe, books)
    books.at(MONDAY + 10 * DAY)
    stripe.page_size = 3
    ledger = await stripe.ledger(MONDAY + timedelta(hours=6), MONDAY + 2 * DAY)
    # Payments 1 to 7 (6 h to 42 h after Monday 10:00) and Tuesday's refund; nothing was paid
    # out before Thursday's midnight.
    created = [entry.created for entry in ledger.entries]
    assert sorted(entry.kind for entry in ledger.entries) == ["charge"] * 7 + ["refund"]
    assert all(
        (MONDAY + timedelta(hours=6)).timestamp() <= moment < (MONDAY + 2 * DAY).timestamp()
        for moment in created
    )
    assert created == sorted(created, reverse=True)  # Stripe lists newest first
    asked = books.queries("/v1/balance_transactions")
    in_period = [query for query in asked if "created[gte]" in query]
    assert len(in_period) == 3  # eight transactions, three a page
    assert {query["limit"] for query in asked} == {"3"}
    assert [query.get("starting_after", "") for query in in_period][1:] == [
        ledger.entries[2].gateway_id,
        ledger.entries[5].gateway_id,
    ]
    assert {query["created[lt]"] for query in in_period} == {
        str(int((MONDAY + 2 * DAY).timestamp()))
    }
    assert ledger.payouts == []  # the first payout reaches the bank on Friday


@pytest.mark.asyncio
async def test_stripe_ledger_names_each_charge_by_the_payment_intent_our_side_recorded(
    services: Services, books: Books
) -> None:
    """Balance transactions name the charge (`ch_…`); payments are recorded by their
    PaymentIntent (`pi_…`). The ledger asks Stripe to expand each source and names a charge by
    its PaymentIntent, a refund by its own id, so both sides meet on one reference."""
    stripe = await stripe_at(services, books.url)
    paid = await take_payments(stripe, books)
    books.at(MONDAY + 10 * DAY)
    ledger = await stripe.ledger(MONDAY - DAY, MONDAY + 10 * DAY)
    charges = [entry for entry in ledger.entries if entry.kind == "charge"]
    assert sorted(entry.source for entry in charges) == sorted(paid)
    assert all(entry.source.startswith("pi_") for entry in charges)
    [refund] = [entry for entry in ledger.entries if entry.kind == "refund"]
    assert refund.source == next(iter(books.gateway.ledger.refunds))
    in_period = [q for q in books.queries("/v1/balance_transactions") if "created[gte]" in q]
    assert {query["expand[]"] for query in in_period} == {"data.source"}


def test_the_sandbox_expands_only_what_stripe_can() -> None:
    ledger = LedgerGateway().ledger
    request = httpx.Request(
        "GET", "https://sandbox.invalid/v1/balance_transactions?expand[]=data.customer"
    )
    answer = ledger.handle(request)
    assert answer is not None
    assert answer[0] == 400
    assert "cannot be expanded" in answer[1]["error"]["message"]


@pytest.mark.asyncio
async def test_stripe_ledger_links_every_transaction_to_the_payout_that_carried_it(
    services: Services, books: Books
) -> None:
    stripe = await stripe_at(services, books.url)
    await take_payments(stripe, books)
    books.at(MONDAY + 10 * DAY)
    ledger = await stripe.ledger(MONDAY - DAY, MONDAY + 10 * DAY)
    payments = [entry for entry in ledger.entries if entry.kind != "payout"]
    [refund] = [entry for entry in payments if entry.kind == "refund"]
    assert refund.amount == Money(-2_500, "USD")  # money given back is negative
    assert all(entry.payout for entry in payments)
    # Daily automatic payouts: what became available (two days after it was taken) by each
    # midnight, Thursday to Sunday; each reached the bank the day after.
    assert len(ledger.payouts) == 4
    for payout in ledger.payouts:
        assert payout.amount.minor > 0  # money sent to the bank is positive
        assert payout.itemized
        assert payout.status == "paid"
        assert payout.arrival == payout.created + 86_400
        carried = [entry for entry in payments if entry.payout == payout.gateway_id]
        [own] = [entry for entry in ledger.entries if entry.source == payout.gateway_id]
        assert own.kind == "payout"
        assert own.payout == payout.gateway_id
        assert own.amount == Money(-payout.amount.minor, "USD")
        assert sum(entry.net.minor for entry in carried) == payout.amount.minor
    # Friday's payout carried Tuesday's refund with what Wednesday took.
    assert refund.payout in {payout.gateway_id for payout in ledger.payouts}
    by_payout = books.queries("/v1/balance_transactions")
    assert {query["payout"] for query in by_payout if "payout" in query} == {
        payout.gateway_id for payout in ledger.payouts
    }
    arrived = books.queries("/v1/payouts")
    assert any("arrival_date[gte]" in query for query in arrived)


@pytest.mark.asyncio
async def test_a_period_before_its_payouts_still_learns_which_payout_carried_it(
    services: Services, books: Books
) -> None:
    stripe = await stripe_at(services, books.url)
    await take_payments(stripe, books)
    books.at(MONDAY + 10 * DAY)
    monday = await stripe.ledger(MONDAY, MONDAY + timedelta(hours=14))
    assert [entry.kind for entry in monday.entries] == ["charge"] * 3
    assert all(entry.payout.startswith("po_") for entry in monday.entries)
    assert monday.payouts == []  # they arrive later in the week


@pytest.mark.asyncio
async def test_what_is_not_available_yet_is_not_paid_out(services: Services, books: Books) -> None:
    stripe = await stripe_at(services, books.url)
    await stripe.charge(card(5_000))
    books.at(MONDAY + timedelta(hours=37))  # Tuesday 23:00: available on Wednesday 10:00
    ledger = await stripe.ledger(MONDAY - DAY, MONDAY + 3 * DAY)
    assert [(entry.kind, entry.payout) for entry in ledger.entries] == [("charge", "")]
    assert ledger.payouts == []


@pytest.mark.asyncio
async def test_a_balance_below_zero_waits_for_the_next_payout(
    services: Services, books: Books
) -> None:
    stripe = await stripe_at(services, books.url)
    paid = await stripe.charge(card(4_000))
    books.at(MONDAY + 3 * DAY)  # paid out at Thursday's midnight
    await stripe.ledger(MONDAY, MONDAY + 3 * DAY)
    await stripe.refund(paid.gateway_id, Money(4_000, "USD"), "ref_all")
    books.at(MONDAY + 6 * DAY)
    await stripe.charge(card(1_000))  # Sunday: too little to cover the refund
    books.at(MONDAY + 12 * DAY)
    await stripe.charge(card(9_000))  # the Saturday after: now it is covered
    books.at(MONDAY + 20 * DAY)
    ledger = await stripe.ledger(MONDAY, MONDAY + 20 * DAY)
    assert [payout.amount.minor for payout in sorted(ledger.payouts, key=lambda p: p.created)] == [
        4_000 - 146,  # 2.9 % + 30 of 40.00
        1_000 - 59 + 9_000 - 291 - 4_000,
    ]


@pytest.mark.asyncio
async def test_a_gateway_that_fails_or_refuses_is_a_classified_provider_error(
    services: Services, scripted_server: ScriptedServer
) -> None:
    scripted_server.script("GET", "/v1/balance_transactions", Reply(503), then=Reply(503))
    stripe = await stripe_at(services, scripted_server.url)
    fast(stripe)
    with pytest.raises(ProviderFailed) as failing:
        await stripe.ledger(MONDAY, MONDAY + DAY)
    failure = failure_of(failing.value)
    assert (failure.kind, failure.code) == (FailureKind.TECHNICAL, "http_503")
    refusal = {"error": {"type": "invalid_request_error", "message": "Invalid API Key provided"}}
    scripted_server.script("GET", "/v1/balance_transactions", Reply(401, json=refusal))
    with pytest.raises(ProviderError, match="Invalid API Key provided") as refused:
        await stripe.ledger(MONDAY, MONDAY + DAY)
    assert refused.value.status == 401


@pytest.mark.asyncio
async def test_a_ledger_is_asked_for_in_aware_times(services: Services, books: Books) -> None:
    stripe = await stripe_at(services, books.url)
    with pytest.raises(ValueError, match="time zone"):
        await stripe.ledger(datetime(2026, 3, 1), datetime(2026, 3, 2))
    empty = await stripe.ledger(MONDAY, MONDAY)
    assert empty == GatewayLedger([], [])


# --- localstripe: only what it answers ------------------------------------------------------------


@pytest.mark.asyncio
async def test_localstripe_pages_its_balance_transactions_as_stripe_does(
    services: Services, localstripe: LocalStripe
) -> None:
    stripe = await stripe_at(services, localstripe.url)
    customer, method = localstripe.saved_card()
    request = ChargeRequest(
        f"pay_{uuid.uuid4().hex}",
        Money(6_000, "EUR"),
        "card",
        method,
        customer,
        created_at=time.time(),
    )
    paid = await stripe.charge(request)
    await stripe.refund(paid.gateway_id, Money(1_000, "EUR"), "ref_a")
    await stripe.refund(paid.gateway_id, Money(2_000, "EUR"), "ref_b")
    stripe.page_size = 1  # localstripe honours `limit`, `starting_after` and `has_more`
    listed = await stripe._list(BALANCE_TRANSACTIONS, {})
    assert sorted(int(item["amount"]) for item in listed) == [-2_000, -1_000, 6_000]
    assert len({item["id"] for item in listed}) == 3


@pytest.mark.asyncio
async def test_localstripe_refuses_the_period_filters_and_the_ledger_says_so(
    services: Services, localstripe: LocalStripe
) -> None:
    # localstripe 1.15 knows no `created` (nor `payout`) filter on balance transactions: it
    # answers 400 "Unexpected created". The ledger passes that on rather than guess.
    stripe = await stripe_at(services, localstripe.url)
    with pytest.raises(ProviderError, match="Unexpected created") as refused:
        await stripe.ledger(MONDAY, MONDAY + DAY)
    assert refused.value.status == 400


# --- the sandbox gateway: payouts made when its books are read, and kept --------------------------


async def sandbox_at(
    services: Services,
) -> tuple[SandboxGateway, sandbox_ledger.Ledger, list[float]]:
    record = await services.connections.add(
        "sandbox-payments",
        f"Sandbox {uuid.uuid4().hex[:6]}",
        {"error_rate": 0, "latency_ms": 1, "latency_p95_ms": 2, "approval_rate": 1},
        {"api_key": "sk_sandbox"},
    )
    provider = await services.connections.provider(record.id)
    assert isinstance(provider, SandboxGateway)
    books = sandbox_ledger.ledger_of(record.id, 1.0, provider.fees)
    now = [MONDAY.timestamp()]
    books.clock = lambda: now[0]
    return provider, books, now


@pytest.mark.asyncio
async def test_the_sandbox_pays_out_daily_keeps_its_payouts_and_makes_the_same_ones_again(
    services: Services, tmp_path: Path
) -> None:
    sandbox, books, now = await sandbox_at(services)
    for hours, minor in ((0, 10_000), (20, 4_000), (30, 2_500), (50, 7_000)):
        now[0] = (MONDAY + timedelta(hours=hours)).timestamp()
        assert (await sandbox.charge(card(minor))).succeeded
        await sandbox.charge(card(1_000, "EUR"))  # each currency is paid out on its own
    now[0] = (MONDAY + 8 * DAY).timestamp()
    ledger = await sandbox.ledger(MONDAY, MONDAY + 8 * DAY)
    assert {payout.amount.currency for payout in ledger.payouts} == {"USD", "EUR"}
    assert all(entry.payout for entry in ledger.entries)
    assert books.path is not None
    kept = json.loads(books.path.read_text(encoding="utf-8"))
    assert set(kept["payouts"]) == {payout.gateway_id for payout in ledger.payouts}
    # Read again from the file, the books have the same payouts and make no more.
    again = sandbox_ledger.Ledger(1.0, sandbox.fees, random.Random(), path=books.path)
    again.load()
    again.clock = books.clock
    assert again.payouts == books.payouts
    assert not again.pay_out()
    # The same books without their payouts make the very same ones.
    fresh = tmp_path / "fresh.json"
    kept["balance"] = [item for item in kept["balance"] if item["type"] != "payout"]
    kept["payouts"], kept["paid_in"] = {}, {}
    fresh.write_text(json.dumps(kept), encoding="utf-8")
    remade = sandbox_ledger.Ledger(1.0, sandbox.fees, random.Random(), path=fresh)
    remade.load()
    remade.clock = books.clock
    assert remade.pay_out()
    assert remade.payouts == books.payouts
    assert remade.paid_in == books.paid_in


def test_the_sandbox_lists_as_stripe_does() -> None:
    books = sandbox_ledger.Ledger(1.0, sandbox_ledger.sandbox_fees({}), random.Random())

    def get(path: str, **query: Any) -> tuple[int, dict[str, Any]]:
        answer = books.handle(httpx.Request("GET", f"https://sandbox.invalid{path}", params=query))
        assert answer is not None
        return answer

    for _ in range(12):
        books._book("charge", 1_000, 59, "USD", f"ch_{uuid.uuid4().hex}")
    status, first = get("/v1/balance_transactions")
    assert (status, len(first["data"]), first["has_more"]) == (200, 10, True)  # Stripe's default
    status, rest = get("/v1/balance_transactions", limit=5, starting_after=first["data"][-1]["id"])
    assert (len(rest["data"]), rest["has_more"]) == (2, False)
    assert get("/v1/balance_transactions", limit=101)[0] == 400
    assert get("/v1/balance_transactions", colour="red")[1]["error"]["code"] == "parameter_unknown"
    assert get("/v1/balance_transactions", payout="po_nothing")[0] == 404
    assert get("/v1/payouts", **{"arrival_date[gte]": 0})[1]["data"] == []


# --- PayPal: Transaction Search -------------------------------------------------------------------


@pytest.fixture
def paypal_fake() -> Iterator[FakePayPal]:
    fake = FakePayPal()
    with served(fake.app) as url:
        fake.base_url = url
        yield fake


async def paypal_at(services: Services, fake: FakePayPal) -> PayPal:
    record = await services.connections.add(
        "paypal",
        f"PayPal {uuid.uuid4().hex[:6]}",
        {"client_id": fake.client_id, "api_url": fake.base_url},
        {"client_secret": fake.client_secret},
    )
    provider = await services.connections.provider(record.id)
    assert isinstance(provider, PayPal)
    assert isinstance(provider, PaymentGateway)
    fast(provider)
    return provider


def saved_paypal(minor: int) -> ChargeRequest:
    return ChargeRequest(
        f"pay_{uuid.uuid4().hex}-1",
        Money(minor, "USD"),
        "paypal",
        "vault-8kk8451t",
        created_at=time.time(),
    )


@pytest.mark.asyncio
async def test_paypal_ledger_records_payments_and_refunds_as_our_side_does(
    services: Services, paypal_fake: FakePayPal
) -> None:
    paypal = await paypal_at(services, paypal_fake)
    paid = await paypal.charge(saved_paypal(10_000))
    other = await paypal.charge(saved_paypal(2_000))
    refund = await paypal.refund(paid.gateway_id, Money(2_500, "USD"), "ref_1")
    withdrawal = paypal_fake.withdraw("50.00")
    now = datetime.now(UTC)
    ledger = await paypal.ledger(now - timedelta(hours=1), now + timedelta(minutes=1))
    by_source = {entry.source: entry for entry in ledger.entries}
    # A payment is recorded under its order on our side: the capture is joined to it.
    payment = by_source[paid.gateway_id]
    [capture] = paypal_fake.captures_of(paid.gateway_id)
    assert (payment.gateway_id, payment.kind) == (capture["id"], "charge")
    assert (payment.amount, payment.fee, payment.net) == (
        Money(10_000, "USD"),
        Money(398, "USD"),  # what PayPal kept, as the capture said
        Money(9_602, "USD"),
    )
    assert payment.payout == ""  # PayPal pays out of a pooled balance
    assert by_source[other.gateway_id].amount == Money(2_000, "USD")
    given_back = by_source[refund.gateway_id]
    assert (given_back.kind, given_back.amount) == ("refund", Money(-2_500, "USD"))
    sent = by_source[withdrawal]
    assert (sent.kind, sent.amount, sent.payout) == ("payout", Money(-5_000, "USD"), withdrawal)
    [payout] = ledger.payouts
    assert (payout.gateway_id, payout.amount, payout.status) == (
        withdrawal,
        Money(5_000, "USD"),
        "paid",
    )
    assert not payout.itemized
    [search] = paypal_fake.searches()
    assert (search["fields"], search["page_size"], search["page"]) == ("all", "500", "1")
    assert paypal_fake.count(f"/v2/payments/captures/{capture['id']}") == 1


@pytest.mark.asyncio
async def test_paypal_ledger_keeps_what_moved_money_and_tells_repeated_ids_apart(
    services: Services, paypal_fake: FakePayPal
) -> None:
    at = datetime(2026, 4, 6, 9, tzinfo=UTC)
    paypal_fake.book("T0006", "30.00", at=at, status="D")  # denied: nothing moved
    paypal_fake.book("T0006", "40.00", at=at, status="P")  # pending: not settled yet
    reversed_payment = paypal_fake.book("T0006", "50.00", at=at, status="V", fee="-2.24")
    reversal = paypal_fake.book("T1106", "-50.00", at=at, reference=reversed_payment)
    sent_back = paypal_fake.withdraw("70.00", at=at, status="V")
    came_back = paypal_fake.book("T1101", "70.00", at=at, reference=sent_back)
    on_its_way = paypal_fake.withdraw("10.00", at=at, status="P")
    converted = "5TY05013RG002845M"
    paypal_fake.book("T0200", "-20.00", at=at, transaction_id=converted)
    paypal_fake.book("T0200", "18.40", "EUR", at=at, transaction_id=converted)
    paypal = await paypal_at(services, paypal_fake)
    ledger = await paypal.ledger(at, at + DAY)
    entries = {entry.gateway_id: entry for entry in ledger.entries}
    assert set(entries) == {
        reversed_payment,
        reversal,
        sent_back,
        came_back,
        on_its_way,
        f"{converted}-T0200-USD",
        f"{converted}-T0200-EUR",
    }
    payment = entries[reversed_payment]
    assert (payment.kind, payment.fee, payment.net) == (
        "charge",
        Money(224, "USD"),
        Money(4_776, "USD"),
    )
    assert payment.source == reversed_payment  # no Orders v2 capture: PayPal has no order
    assert (entries[reversal].kind, entries[reversal].source) == ("adjustment", reversed_payment)
    assert (entries[came_back].kind, entries[came_back].source) == ("payout_failure", sent_back)
    assert {entries[f"{converted}-T0200-EUR"].kind} == {"conversion"}
    assert {(p.gateway_id, p.amount.minor, p.status) for p in ledger.payouts} == {
        (sent_back, 7_000, "failed"),
        (on_its_way, 1_000, "pending"),
    }


@pytest.mark.asyncio
async def test_paypal_ledger_asks_31_days_at_a_time_page_by_page(
    services: Services, paypal_fake: FakePayPal
) -> None:
    since = datetime(2026, 1, 1, tzinfo=UTC)
    until = since + timedelta(days=70)
    for day in range(-1, 71):
        for hour in (1, 9, 17):
            at = since + timedelta(days=day, hours=hour)
            paypal_fake.book("T0100", "-1.00", at=at)  # a monthly fee, say: no order to look up
    at_start = paypal_fake.book("T1201", "-30.00", at=since)  # a chargeback
    paypal_fake.book("T1201", "-40.00", at=until)  # the period's end is not in it
    at_seam = paypal_fake.book("T1201", "-20.00", at=since + timedelta(days=31))
    paypal = await paypal_at(services, paypal_fake)
    paypal.search_page_size = 40
    ledger = await paypal.ledger(since, until)
    assert len(ledger.entries) == 70 * 3 + 2
    assert len({entry.gateway_id for entry in ledger.entries}) == len(ledger.entries)
    assert {at_start, at_seam} <= {entry.gateway_id for entry in ledger.entries}
    searches = paypal_fake.searches()
    windows = sorted({(search["start_date"], search["end_date"]) for search in searches})
    assert windows == [
        ("2026-01-01T00:00:00Z", "2026-02-01T00:00:00Z"),
        ("2026-02-01T00:00:00Z", "2026-03-04T00:00:00Z"),
        ("2026-03-04T00:00:00Z", "2026-03-12T00:00:00Z"),
    ]
    pages = [search["page"] for search in searches if search["start_date"].startswith("2026-01")]
    assert pages == ["1", "2", "3"]  # 95 transactions, 40 a page
    assert {entry.kind for entry in ledger.entries} == {"fee", "adjustment"}


@pytest.mark.asyncio
async def test_a_search_paypal_finds_too_large_is_asked_again_in_halves(
    services: Services, paypal_fake: FakePayPal
) -> None:
    day = datetime(2026, 4, 6, tzinfo=UTC)
    for minute in range(0, 24 * 60, 24):
        paypal_fake.book("T0100", "-0.10", at=day + timedelta(minutes=minute))
    paypal_fake.max_results = 25
    paypal = await paypal_at(services, paypal_fake)
    ledger = await paypal.ledger(day, day + DAY)
    assert len(ledger.entries) == 60
    assert len(paypal_fake.searches()) > 3


@pytest.mark.asyncio
async def test_paypal_without_transaction_search_says_how_to_allow_it(
    services: Services, paypal_fake: FakePayPal
) -> None:
    paypal = await paypal_at(services, paypal_fake)
    paypal_fake.transaction_search = False
    now = datetime.now(UTC)
    with pytest.raises(CredentialsRefused, match="Transaction Search") as refused:
        await paypal.ledger(now - DAY, now)
    assert refused.value.status == 403
    # Once allowed, it works with a new token: the old one keeps being refused at PayPal.
    tokens = paypal_fake.count("/v1/oauth2/token")
    paypal_fake.transaction_search = True
    assert await paypal.ledger(now - DAY, now) == GatewayLedger([], [])
    assert paypal_fake.count("/v1/oauth2/token") == tokens + 1


@pytest.mark.asyncio
async def test_paypal_failing_is_a_classified_provider_error(
    services: Services, paypal_fake: FakePayPal
) -> None:
    paypal = await paypal_at(services, paypal_fake)
    paypal_fake.failing = True
    now = datetime.now(UTC)
    with pytest.raises(ProviderFailed) as failing:
        await paypal.ledger(now - DAY, now)
    assert failure_of(failing.value).code == "http_503"


@pytest.mark.asyncio
async def test_what_paypal_has_not_refreshed_yet_is_not_in_the_ledger(
    services: Services, paypal_fake: FakePayPal
) -> None:
    paypal = await paypal_at(services, paypal_fake)
    paypal_fake.lag = 3 * 3600  # "a maximum of three hours"
    await paypal.charge(saved_paypal(3_000))
    now = datetime.now(UTC)
    assert (await paypal.ledger(now - DAY, now + DAY)).entries == []
    paypal_fake.lag = 0
    assert len((await paypal.ledger(now - DAY, now + DAY)).entries) == 1


# --- Dwolla: the account's transfers --------------------------------------------------------------


@pytest.fixture
def dwolla_fake() -> Iterator[FakeDwolla]:
    fake = FakeDwolla()
    with served(fake.app) as url:
        fake.base_url = url
        yield fake


async def dwolla_at(services: Services, fake: FakeDwolla, funding_source: str) -> Dwolla:
    record = await services.connections.add(
        "dwolla",
        f"Dwolla {uuid.uuid4().hex[:6]}",
        {"key": fake.key, "funding_source": funding_source, "api_url": fake.base_url},
        {"secret": fake.secret},
    )
    provider = await services.connections.provider(record.id)
    assert isinstance(provider, Dwolla)
    assert isinstance(provider, PaymentGateway)
    fast(provider)
    return provider


def debit(fake: FakeDwolla, cents: int) -> ChargeRequest:
    customer = fake.add_customer()
    return ChargeRequest(
        f"pay_{uuid.uuid4().hex}-1",
        Money(cents, "USD"),
        "ach",
        fake.add_bank(customer),
        customer,
        created_at=time.time(),
    )


@pytest.mark.asyncio
async def test_dwolla_ledger_has_payments_refunds_fees_and_withdrawals_from_the_balance(
    services: Services, dwolla_fake: FakeDwolla
) -> None:
    dwolla = await dwolla_at(services, dwolla_fake, dwolla_fake.school_balance_funding_source)
    paid = await dwolla.charge(debit(dwolla_fake, 12_500))
    to_refund = await dwolla.charge(debit(dwolla_fake, 8_000))
    dwolla_fake.process()
    dwolla_fake.add_fee(paid.gateway_id, "0.25", charge_to="school")
    dwolla_fake.add_fee(paid.gateway_id, "1.00", charge_to="family")
    refund = await dwolla.refund(to_refund.gateway_id, Money(5_000, "USD"), "ref_1")
    dwolla_fake.process()
    still_pending = await dwolla.charge(debit(dwolla_fake, 3_000))  # no money moved yet
    withdrawal = dwolla_fake.withdraw("80.00")
    on_its_way = dwolla_fake.withdraw("20.00", status="pending")
    topped_up = dwolla_fake.add_transfer(
        dwolla_fake.school_bank, dwolla_fake.school_balance, "30.00"
    )
    now = datetime.now(UTC)
    ledger = await dwolla.ledger(now - timedelta(hours=1), now + timedelta(minutes=1))
    by_source = {entry.source: entry for entry in ledger.entries}
    payment = by_source[paid.gateway_id]
    assert (payment.kind, payment.amount, payment.fee, payment.net) == (
        "charge",
        Money(12_500, "USD"),
        Money(25 - 100, "USD"),  # kept 0.25 of the school's, gave it 1.00 of the family's
        Money(12_575, "USD"),
    )
    assert by_source[to_refund.gateway_id].amount == Money(8_000, "USD")
    assert still_pending.gateway_id not in by_source
    given_back = by_source[refund.gateway_id]
    assert (given_back.kind, given_back.amount) == ("refund", Money(-5_000, "USD"))
    sent = by_source[withdrawal]
    assert (sent.kind, sent.amount, sent.payout) == ("payout", Money(-8_000, "USD"), withdrawal)
    assert on_its_way not in by_source
    assert (by_source[topped_up].kind, by_source[topped_up].amount) == (
        "topup",
        Money(3_000, "USD"),
    )
    assert len(ledger.entries) == 5  # the fees are not entries of their own
    assert {(p.gateway_id, p.amount.minor, p.status) for p in ledger.payouts} == {
        (withdrawal, 8_000, "paid"),
        (on_its_way, 2_000, "in_transit"),
    }


@pytest.mark.asyncio
async def test_payments_straight_to_the_school_s_bank_have_no_payouts(
    services: Services, dwolla_fake: FakeDwolla
) -> None:
    dwolla = await dwolla_at(services, dwolla_fake, dwolla_fake.school_funding_source)
    paid = await dwolla.charge(debit(dwolla_fake, 4_000))
    dwolla_fake.process()
    now = datetime.now(UTC)
    ledger = await dwolla.ledger(now - DAY, now + DAY)
    [entry] = ledger.entries
    assert (entry.source, entry.kind, entry.payout) == (paid.gateway_id, "charge", "")
    assert ledger.payouts == []


@pytest.mark.asyncio
async def test_dwolla_ledger_reads_every_page_of_the_period_s_days(
    services: Services, dwolla_fake: FakeDwolla
) -> None:
    family = dwolla_fake.add_bank(dwolla_fake.add_customer())
    start = datetime(2026, 5, 4, tzinfo=UTC)
    made = {}
    for hours in range(0, 20 * 24, 9):
        at = start + timedelta(hours=hours)
        made[dwolla_fake.add_transfer(family, dwolla_fake.school_balance, "10.00", at=at)] = at
    dwolla = await dwolla_at(services, dwolla_fake, dwolla_fake.school_balance_funding_source)
    dwolla.page_size = 7
    since, until = start + 5 * DAY, start + 15 * DAY
    ledger = await dwolla.ledger(since, until)
    assert {entry.gateway_id for entry in ledger.entries} == {
        transfer_id for transfer_id, at in made.items() if since <= at < until
    }
    asked = [
        seen.query
        for seen in dwolla_fake.sent("GET", f"/accounts/{dwolla_fake.account_id}/transfers")
    ]
    assert "startDate=2026-05-08" in asked[0]
    assert "endDate=2026-05-20" in asked[0]
    assert all("limit=7" in query for query in asked)
    assert len(asked) > 4


@pytest.mark.asyncio
async def test_days_holding_more_transfers_than_dwolla_lists_are_halved(
    services: Services, dwolla_fake: FakeDwolla
) -> None:
    family = dwolla_fake.add_bank(dwolla_fake.add_customer())
    start = datetime(2026, 6, 1, tzinfo=UTC)
    for hours in range(0, 12 * 24, 8):
        dwolla_fake.add_transfer(
            family, dwolla_fake.school_balance, "5.00", at=start + timedelta(hours=hours)
        )
    dwolla_fake.search_cap = 10  # Dwolla's offsets reach 10,000 transfers
    dwolla = await dwolla_at(services, dwolla_fake, dwolla_fake.school_balance_funding_source)
    dwolla.search_cap = 10
    ledger = await dwolla.ledger(start, start + 12 * DAY)
    assert len(ledger.entries) == 36


@pytest.mark.asyncio
async def test_dwolla_failing_is_a_classified_provider_error(
    services: Services, dwolla_fake: FakeDwolla
) -> None:
    dwolla = await dwolla_at(services, dwolla_fake, dwolla_fake.school_balance_funding_source)
    dwolla_fake.failing = True
    now = datetime.now(UTC)
    with pytest.raises(ProviderFailed) as failing:
        await dwolla.ledger(now - DAY, now)
    assert failure_of(failing.value).code == "http_503"
