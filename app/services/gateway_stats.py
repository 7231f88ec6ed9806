"""How each payment gateway has done over a period: attempts and what became of them, how fast
it answered, and what it kept in fees; per hour or per day for the graphs, and in total.

An attempt counts in the hour (or the school's day) it started. What became of it:

- a success: the gateway took the payment (paid, or accepted and on its way), as the router
  counts it;
- a hard or soft decline: the payer's bank said no;
- a technical failure: the gateway could not take it (down, an error, no such payment on a
  look-up), which says nothing about the payer;
- an unknown outcome: no answer, and nobody knows yet whether the money moved.

Money is counted on the attempt that was paid (not one "on its way"): its payment's amount, and
the fee once the gateway has reported it. Fees as a share of the amount are computed only over
payments whose fee is known, in each currency separately, since amounts in different currencies
cannot be added up.

The SQL is one plain join over a time range (portable to SQLite and PostgreSQL); bucketing,
classifying and the latency percentiles are done here in Python, since percentiles cannot be
merged from per-bucket figures and bucket arithmetic on timestamps differs per database.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, time, timedelta
from enum import StrEnum
from zoneinfo import ZoneInfo

from sqlalchemy import select
from sqlalchemy.orm import Session

from app.domain.payments import FailureKind
from app.providers import KINDS
from app.providers.gateway import PAYMENTS
from app.services.payments import PROCESSING, SENT, SUCCEEDED
from app.store.database import Database
from app.store.integration import ProviderConnection
from app.store.payments import PaymentAttemptRow, PaymentRow

MAX_BUCKETS = 720  # points per curve, at most: more only slows the graphs down


class Unit(StrEnum):
    HOUR = "hour"
    DAY = "day"  # the school's calendar day, midnight to midnight in its time zone


class Period(StrEnum):
    """The periods a person can look at, each the last few whole hours or days up to now."""

    DAY = "24h"
    WEEK = "7d"
    MONTH = "30d"
    QUARTER = "90d"

    @property
    def label(self) -> str:
        return _PERIODS[self][0]

    @property
    def unit(self) -> Unit:
        return _PERIODS[self][1]

    @property
    def buckets(self) -> int:
        return _PERIODS[self][2]


_PERIODS: dict[Period, tuple[str, Unit, int]] = {
    Period.DAY: ("Last 24 hours", Unit.HOUR, 24),
    Period.WEEK: ("Last 7 days", Unit.HOUR, 7 * 24),
    Period.MONTH: ("Last 30 days", Unit.DAY, 30),
    Period.QUARTER: ("Last 90 days", Unit.DAY, 90),
}
assert all(count <= MAX_BUCKETS for _label, _unit, count in _PERIODS.values())


@dataclass(frozen=True)
class CurrencyTotals:
    """Money a gateway took in one currency, in minor units."""

    currency: str
    paid: int  # payments taken
    taken_minor: int
    fees_minor: int  # the fees the gateway has reported so far
    fee_base_minor: int  # the amount of the payments whose fee is known

    @property
    def fee_percent(self) -> float | None:
        """Fees as a percentage of the amount they were charged on; None when no fee is known."""
        if self.fee_base_minor <= 0:
            return None
        return self.fees_minor / self.fee_base_minor * 100


@dataclass(frozen=True)
class Figures:
    """One gateway over one bucket (or the whole period)."""

    attempts: int = 0
    successes: int = 0
    hard_declines: int = 0
    soft_declines: int = 0
    technical_failures: int = 0
    unknown_outcomes: int = 0
    p50_ms: float | None = None
    p95_ms: float | None = None
    money: tuple[CurrencyTotals, ...] = ()  # by currency code

    @property
    def declines(self) -> int:
        return self.hard_declines + self.soft_declines

    @property
    def success_percent(self) -> float | None:
        """Successes as a percentage of all attempts; None without attempts."""
        return self.successes / self.attempts * 100 if self.attempts else None

    @property
    def fee_percent(self) -> float | None:
        """Fees as a percentage of the amount taken. Exact in one currency; across several, the
        currencies' percentages averaged by how many payments each had (amounts in different
        currencies cannot be added up)."""
        known = [(p, m.paid) for m in self.money if (p := m.fee_percent) is not None]
        weight = sum(paid for _percent, paid in known)
        if not weight:
            return None
        return sum(percent * paid for percent, paid in known) / weight


@dataclass(frozen=True)
class GatewayFigures:
    connection_id: int
    name: str
    total: Figures
    buckets: tuple[Figures, ...]  # one per bucket of the report, oldest first


@dataclass(frozen=True)
class GatewayReport:
    period: Period
    edges: tuple[datetime, ...]  # bucket boundaries in UTC: bucket i is [edges[i], edges[i+1])
    gateways: tuple[GatewayFigures, ...]  # every payment gateway, and any other one attempted
    has_payments: bool  # whether any payment was ever asked for (in any period)

    @property
    def start(self) -> datetime:
        return self.edges[0]

    @property
    def end(self) -> datetime:
        return self.edges[-1]


class GatewayStats:
    """Reads the gateway figures from the payment attempts."""

    def __init__(self, db: Database) -> None:
        self._db = db

    async def report(
        self, period: Period, zone: ZoneInfo, now: datetime | None = None
    ) -> GatewayReport:
        """Every gateway's figures for the `period` up to `now` (default: the clock), in hour
        or day buckets aligned to the clocks of `zone`."""
        edges = bucket_edges(period, now or datetime.now(UTC), zone)
        return await self._db.read(_report, period, edges)


def bucket_edges(period: Period, now: datetime, zone: ZoneInfo) -> tuple[datetime, ...]:
    """The boundaries of the period's buckets, in UTC: the last bucket is the hour (or day) under
    way at `now`, and the first is that many buckets before it."""
    count = period.buckets
    local = now.astimezone(zone)
    if period.unit is Unit.HOUR:
        # Local hours, so a school half an hour off UTC sees 14:00–15:00, not 14:30–15:30.
        current = local.replace(minute=0, second=0, microsecond=0).astimezone(UTC)
        return tuple(current + timedelta(hours=i) for i in range(1 - count, 2))
    today = local.date()
    return tuple(
        datetime.combine(today + timedelta(days=i), time(0), zone).astimezone(UTC)
        for i in range(1 - count, 2)
    )


def percentile(values: Sequence[float], share: float) -> float | None:
    """The `share` (0..1) percentile of `values`, interpolating linearly between the two nearest
    ranks (as numpy and spreadsheets do by default); None without values."""
    if not values:
        return None
    ordered = sorted(values)
    position = (len(ordered) - 1) * share
    low = math.floor(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


# --- reading and adding up ----------------------------------------------------------------------

SUCCESS = "success"
HARD = "hard"
SOFT = "soft"
TECHNICAL = "technical"
UNKNOWN = "unknown"


def outcome(status: str, failure_kind: str | None) -> str:
    """What became of an attempt, from its status and failure kind."""
    if status in (SUCCEEDED, PROCESSING):
        return SUCCESS
    if status == SENT or failure_kind == FailureKind.UNKNOWN.value:
        return UNKNOWN
    if failure_kind == FailureKind.HARD_DECLINE.value:
        return HARD
    if failure_kind == FailureKind.SOFT_DECLINE.value:
        return SOFT
    # Failed for a technical reason, or with no reason recorded: not the payer's doing.
    return TECHNICAL


@dataclass
class _Tally:
    counts: dict[str, int] = field(default_factory=dict)
    latencies: list[float] = field(default_factory=list)
    # currency: [payments, amount, fees, amount with a known fee]
    money: dict[str, list[int]] = field(default_factory=dict)

    def add(self, row: _AttemptRow) -> None:
        kind = outcome(row.status, row.failure_kind)
        self.counts[kind] = self.counts.get(kind, 0) + 1
        if row.latency_ms is not None:
            self.latencies.append(row.latency_ms)
        if row.status == SUCCEEDED:
            totals = self.money.setdefault(row.currency, [0, 0, 0, 0])
            totals[0] += 1
            totals[1] += row.amount_minor
            if row.fee_minor is not None:
                totals[2] += row.fee_minor
                totals[3] += row.amount_minor

    def figures(self) -> Figures:
        return Figures(
            attempts=sum(self.counts.values()),
            successes=self.counts.get(SUCCESS, 0),
            hard_declines=self.counts.get(HARD, 0),
            soft_declines=self.counts.get(SOFT, 0),
            technical_failures=self.counts.get(TECHNICAL, 0),
            unknown_outcomes=self.counts.get(UNKNOWN, 0),
            p50_ms=percentile(self.latencies, 0.50),
            p95_ms=percentile(self.latencies, 0.95),
            money=tuple(
                CurrencyTotals(currency, *totals) for currency, totals in sorted(self.money.items())
            ),
        )


@dataclass(frozen=True)
class _AttemptRow:
    connection_id: int
    started_at: datetime
    status: str
    failure_kind: str | None
    latency_ms: float | None
    amount_minor: int
    currency: str
    fee_minor: int | None


def _report(session: Session, period: Period, edges: tuple[datetime, ...]) -> GatewayReport:
    by_gateway: dict[int, list[_AttemptRow]] = {}
    query = (
        select(
            PaymentAttemptRow.connection_id,
            PaymentAttemptRow.started_at,
            PaymentAttemptRow.status,
            PaymentAttemptRow.failure_kind,
            PaymentAttemptRow.latency_ms,
            PaymentRow.amount_minor,
            PaymentRow.currency,
            PaymentRow.fee_minor,
        )
        .join(PaymentRow, PaymentRow.id == PaymentAttemptRow.payment_id)
        .where(PaymentAttemptRow.started_at >= edges[0])
        .where(PaymentAttemptRow.started_at < edges[-1])
    )
    for row in session.execute(query):
        attempt = _AttemptRow(*row)
        by_gateway.setdefault(attempt.connection_id, []).append(attempt)
    has_payments = session.scalar(select(PaymentRow.id).limit(1)) is not None
    gateways = tuple(
        _gateway_figures(connection_id, name, by_gateway.get(connection_id, ()), edges)
        for connection_id, name in _gateway_names(session, set(by_gateway))
    )
    return GatewayReport(period, edges, gateways, has_payments)


def _gateway_names(session: Session, attempted: set[int]) -> list[tuple[int, str]]:
    """Every connection that can take payments, and any other one with attempts, by id (so a
    gateway keeps its colour when another is added)."""
    rows = session.execute(
        select(ProviderConnection.id, ProviderConnection.name, ProviderConnection.kind).order_by(
            ProviderConnection.id
        )
    )
    return [
        (connection_id, name)
        for connection_id, name, kind in rows
        if connection_id in attempted or _takes_payments(kind)
    ]


def _takes_payments(kind: str) -> bool:
    spec = KINDS.get(kind)
    return spec is not None and PAYMENTS in spec.capabilities


def _gateway_figures(
    connection_id: int, name: str, rows: Iterable[_AttemptRow], edges: tuple[datetime, ...]
) -> GatewayFigures:
    total = _Tally()
    buckets = [_Tally() for _ in range(len(edges) - 1)]
    for row in rows:
        total.add(row)
        # An attempt that starts exactly on a boundary belongs to the bucket that begins there.
        buckets[bisect.bisect_right(edges, row.started_at) - 1].add(row)
    return GatewayFigures(
        connection_id, name, total.figures(), tuple(bucket.figures() for bucket in buckets)
    )
