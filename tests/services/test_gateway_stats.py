"""Gateway figures: attempts and their outcomes, answer times, fees and amounts per gateway, per
hour or day of the school's clock, and in total for the period."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from itertools import pairwise
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy.orm import Session

from app.services import Services
from app.services.gateway_stats import (
    MAX_BUCKETS,
    CurrencyTotals,
    Figures,
    GatewayReport,
    GatewayStats,
    Period,
    bucket_edges,
    percentile,
)
from app.store.payments import PaymentAttemptRow, PaymentRow

NOW = datetime(2026, 3, 10, 12, 30, tzinfo=UTC)
THIS_HOUR = datetime(2026, 3, 10, 12, tzinfo=UTC)


@dataclass(frozen=True)
class Tried:
    """An attempt to insert: where, when, and what became of it."""

    connection_id: int
    at: datetime
    status: str = "succeeded"
    failure_kind: str | None = None
    latency_ms: float | None = None
    amount_minor: int = 10_000
    currency: str = "USD"
    fee_minor: int | None = None


async def gateway(services: Services, name: str, kind: str = "sandbox-payments") -> int:
    values = {"api_url": "http://127.0.0.1:9"} if kind == "ecb-rates" else {}
    secrets = {} if kind == "ecb-rates" else {"api_key": "k"}
    return (await services.connections.add(kind, name, values, secrets)).id


async def insert(services: Services, *attempts: Tried) -> None:
    """Each attempt on a payment of its own, as the payment service writes them."""

    def write(session: Session) -> None:
        for attempt in attempts:
            payment = PaymentRow(
                reference=f"pay_{uuid.uuid4().hex}",
                idempotency_key=uuid.uuid4().hex,
                request_digest="test",
                amount_minor=attempt.amount_minor,
                currency=attempt.currency,
                method="card",
                status=attempt.status if attempt.status != "sent" else "unknown",
                connection_id=attempt.connection_id,
                fee_minor=attempt.fee_minor,
                created_at=attempt.at,
            )
            session.add(payment)
            session.flush()
            session.add(
                PaymentAttemptRow(
                    payment_id=payment.id,
                    number=1,
                    reference=f"{payment.reference}-1",
                    connection_id=attempt.connection_id,
                    status=attempt.status,
                    failure_kind=attempt.failure_kind,
                    started_at=attempt.at,
                    latency_ms=attempt.latency_ms,
                )
            )

    await services.db.write(write)


async def report(
    services: Services, period: Period = Period.DAY, zone: str = "UTC", now: datetime = NOW
) -> GatewayReport:
    return await GatewayStats(services.db).report(period, ZoneInfo(zone), now)


def figures_of(result: GatewayReport, connection_id: int) -> tuple[Figures, tuple[Figures, ...]]:
    [found] = [g for g in result.gateways if g.connection_id == connection_id]
    return found.total, found.buckets


@pytest.mark.asyncio
async def test_each_outcome_latency_fee_and_amount_is_counted_exactly(services: Services) -> None:
    cards = await gateway(services, "Cards")
    at = THIS_HOUR - timedelta(hours=2) + timedelta(minutes=5)
    outcomes = [
        *[("succeeded", None, 300)] * 4,
        ("succeeded", None, None),  # paid, fee not reported yet
        ("processing", None, None),  # on its way: a success, not yet money taken
        ("failed", "hard_decline", None),
        ("failed", "soft_decline", None),
        ("failed", "technical", None),
        ("failed", None, None),  # failed with no reason recorded: not the payer's doing
    ]
    attempts = [
        Tried(
            cards,
            at + timedelta(minutes=i),
            status,
            kind,
            latency_ms=100.0 * (i + 1),
            fee_minor=fee,
        )
        for i, (status, kind, fee) in enumerate(outcomes)
    ]
    # No answer: whether the money moved is unknown, and there is no answer time.
    attempts.append(Tried(cards, at, "sent", "timeout_unknown"))
    await insert(services, *attempts)

    total, buckets = figures_of(await report(services), cards)

    assert replace(total, p95_ms=None) == Figures(
        attempts=11,
        successes=6,
        hard_declines=1,
        soft_declines=1,
        technical_failures=2,
        unknown_outcomes=1,
        p50_ms=550.0,
        money=(CurrencyTotals("USD", 5, 50_000, 1_200, 40_000),),
    )
    assert total.p95_ms == pytest.approx(955.0)
    assert total.success_percent == pytest.approx(6 / 11 * 100)
    assert total.declines == 2
    assert total.fee_percent == pytest.approx(3.0)
    assert total.money[0].fee_percent == pytest.approx(3.0)
    assert len(buckets) == 24
    assert buckets[21] == total  # the hour before last, where every attempt was made
    assert all(bucket == Figures() for n, bucket in enumerate(buckets) if n != 21)


@pytest.mark.asyncio
async def test_a_gateway_without_attempts_is_listed_with_empty_figures(services: Services) -> None:
    busy = await gateway(services, "Busy")
    idle = await gateway(services, "Idle")
    await gateway(services, "Rates", kind="ecb-rates")  # not a payment gateway: not listed
    await insert(services, Tried(busy, NOW - timedelta(minutes=10), latency_ms=80.0))

    result = await report(services)

    assert [g.name for g in result.gateways] == ["Busy", "Idle"]
    total, buckets = figures_of(result, idle)
    assert total == Figures()
    assert total.success_percent is None
    assert total.fee_percent is None
    assert buckets == (Figures(),) * 24
    busy_total, busy_buckets = figures_of(result, busy)
    assert busy_total.attempts == busy_total.successes == 1
    assert busy_total.p50_ms == busy_total.p95_ms == 80.0
    assert busy_buckets[-1] == busy_total  # the hour under way
    assert busy_total.money == (CurrencyTotals("USD", 1, 10_000, 0, 0),)
    assert busy_total.fee_percent is None  # no fee reported yet: not pretended to be 0 %


@pytest.mark.asyncio
async def test_no_payments_at_all_is_told_apart_from_none_in_the_period(
    services: Services,
) -> None:
    cards = await gateway(services, "Cards")
    empty = await report(services)
    assert not empty.has_payments
    assert figures_of(empty, cards)[0] == Figures()

    await insert(services, Tried(cards, NOW - timedelta(days=3)))
    quiet = await report(services)
    assert quiet.has_payments
    assert figures_of(quiet, cards)[0] == Figures()
    assert figures_of(await report(services, Period.WEEK), cards)[0].attempts == 1


@pytest.mark.asyncio
async def test_attempts_on_bucket_boundaries(services: Services) -> None:
    cards = await gateway(services, "Cards")
    first = THIS_HOUR - timedelta(hours=23)
    await insert(
        services,
        Tried(cards, first - timedelta(microseconds=1), latency_ms=1.0),  # before the period
        Tried(cards, first, latency_ms=2.0),  # opens the first hour
        Tried(cards, first + timedelta(hours=5), latency_ms=3.0),  # opens the sixth
        Tried(cards, THIS_HOUR, latency_ms=4.0),  # opens the hour under way
        Tried(cards, THIS_HOUR + timedelta(hours=1), latency_ms=5.0),  # after the period
    )

    result = await report(services)

    assert result.start == first
    assert result.end == THIS_HOUR + timedelta(hours=1)
    assert len(result.edges) == 25
    total, buckets = figures_of(result, cards)
    assert total.attempts == 3
    assert [(n, b.p50_ms) for n, b in enumerate(buckets) if b.attempts] == [
        (0, 2.0),
        (5, 3.0),
        (23, 4.0),
    ]
    assert sum(b.attempts for b in buckets) == total.attempts


@pytest.mark.asyncio
async def test_days_are_the_school_s_days(services: Services) -> None:
    cards = await gateway(services, "Cards")
    now = datetime(2026, 3, 10, 1, 0, tzinfo=UTC)  # 03:00 on 10 March in Harare (UTC+2)
    midnight = datetime(2026, 3, 9, 22, 0, tzinfo=UTC)  # 10 March begins in Harare
    await insert(
        services,
        Tried(cards, midnight - timedelta(minutes=1), latency_ms=10.0),  # 9 March there
        Tried(cards, midnight, latency_ms=20.0),  # 10 March there
    )

    result = await report(services, Period.MONTH, "Africa/Harare", now)

    assert len(result.edges) == 31
    assert result.edges[-2] == midnight
    assert result.start == midnight - timedelta(days=29)
    _total, buckets = figures_of(result, cards)
    assert [b.p50_ms for b in buckets[-2:]] == [10.0, 20.0]


@pytest.mark.asyncio
async def test_currencies_are_never_added_together(services: Services) -> None:
    cards = await gateway(services, "Cards")
    at = NOW - timedelta(minutes=20)
    await insert(
        services,
        Tried(cards, at, amount_minor=10_000, currency="USD", fee_minor=300),  # 3 %
        Tried(cards, at, amount_minor=270_000, currency="ZWG", fee_minor=2_700),  # 1 %
        Tried(cards, at, amount_minor=270_000, currency="ZWG", fee_minor=2_700),  # 1 %
    )

    total, _buckets = figures_of(await report(services), cards)

    assert total.money == (
        CurrencyTotals("USD", 1, 10_000, 300, 10_000),
        CurrencyTotals("ZWG", 2, 540_000, 5_400, 540_000),
    )
    # Each currency's share, weighted by its payments: (3 % × 1 + 1 % × 2) / 3.
    assert total.fee_percent == pytest.approx(5 / 3)


@pytest.mark.parametrize("period", list(Period))
def test_every_period_has_a_bounded_number_of_buckets(period: Period) -> None:
    edges = bucket_edges(period, NOW, ZoneInfo("UTC"))
    assert len(edges) - 1 == period.buckets <= MAX_BUCKETS
    assert edges[0] <= NOW - timedelta(hours=23) < NOW < edges[-1]
    assert all(a < b for a, b in pairwise(edges))


def test_hours_follow_the_school_s_clock_in_a_half_hour_zone() -> None:
    edges = bucket_edges(Period.DAY, NOW, ZoneInfo("Asia/Kolkata"))  # UTC+5:30
    assert edges[-2] == datetime(2026, 3, 10, 12, 30, tzinfo=UTC)  # 18:00 there
    assert {edge.minute for edge in edges} == {30}


def test_a_day_of_a_clock_change_is_one_bucket_of_23_hours() -> None:
    # London's clocks went forward on 29 March 2026.
    now = datetime(2026, 4, 2, 12, tzinfo=UTC)
    edges = bucket_edges(Period.MONTH, now, ZoneInfo("Europe/London"))
    lengths = {b - a for a, b in pairwise(edges)}
    assert lengths == {timedelta(hours=24), timedelta(hours=23)}
    assert edges[-1] == datetime(2026, 4, 2, 23, tzinfo=UTC)  # midnight of 3 April, BST


def test_percentiles_interpolate_between_ranks() -> None:
    assert percentile([], 0.95) is None
    assert percentile([7.0], 0.95) == 7.0
    assert percentile([300.0, 100.0], 0.5) == 200.0
    assert percentile([float(v) for v in range(1, 101)], 0.95) == pytest.approx(95.05)
