"""Metrics: latency histograms, what counts as a request and a failure, rollups per minute, hour
and day, and the figures the dashboard shows, read from raw rows and rollups without counting
anything twice."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import delete, insert, select
from sqlalchemy.orm import Session

from app.services import Services, metrics
from app.services.metrics import (
    BUCKETS,
    GRACE,
    apply_retention,
    bucket_of,
    is_failure,
    is_request,
    percentile,
    roll_up,
    series,
    summaries,
)
from app.services.settings import get_state
from app.store.integration import (
    HealthCheckRow,
    MetricRollup,
    ProviderConnection,
    RequestLogEntry,
)

NOON = datetime(2025, 3, 10, 12, 0, tzinfo=UTC)
MINUTE = timedelta(minutes=1)
HOUR = timedelta(hours=1)
DAY = timedelta(days=1)


# --- helpers -------------------------------------------------------------------------------------


async def add_connection(services: Services, name: str) -> int:
    def write(session: Session) -> int:
        row = ProviderConnection(kind="sandbox-payments", name=name)
        session.add(row)
        session.flush()
        return row.id

    return await services.db.write(write)


def call(
    connection_id: int,
    at: datetime,
    latency_ms: float = 100.0,
    error_class: str | None = None,
    status: int | None = 200,
) -> dict[str, Any]:
    return {
        "at": at,
        "connection_id": connection_id,
        "operation": "get_balance",
        "method": "GET",
        "url": "https://api.example.com/v1/balance",
        "status_code": status,
        "latency_ms": latency_ms,
        "error_class": error_class,
        "attempt": 1,
    }


def check(
    connection_id: int, at: datetime, ok: bool = True, detail: str = "", error: str | None = None
) -> dict[str, Any]:
    return {
        "connection_id": connection_id,
        "at": at,
        "ok": ok,
        "latency_ms": 80.0,
        "error_class": error,
        "detail": detail,
    }


async def insert_rows(services: Services, table: Any, rows: list[dict[str, Any]]) -> None:
    def write(session: Session) -> None:
        session.execute(insert(table), rows)

    await services.db.write(write)


async def rollups(services: Services, resolution: str) -> list[dict[str, Any]]:
    def read(session: Session) -> list[dict[str, Any]]:
        statement = (
            select(MetricRollup)
            .where(MetricRollup.resolution == resolution)
            .order_by(MetricRollup.connection_id, MetricRollup.bucket_start)
        )
        return [
            {
                column.key: getattr(row, column.key)
                for column in MetricRollup.__table__.columns  # type: ignore[attr-defined]
            }
            for row in session.scalars(statement)
        ]

    return await services.db.read(read)


async def count(services: Services, table: Any) -> int:
    def read(session: Session) -> int:
        return len(session.execute(select(table)).all())

    return await services.db.read(read)


def histogram(**counts: int) -> list[int]:
    """A histogram from bucket indexes given as b0=…, b11=…"""
    result = [0] * BUCKETS
    for name, value in counts.items():
        result[int(name[1:])] = value
    return result


# --- histograms and percentiles ------------------------------------------------------------------


def test_latency_buckets_include_their_lower_edge_and_the_last_is_open() -> None:
    assert BUCKETS == 12
    assert [bucket_of(ms) for ms in (0, 4.999, 5, 9.99, 10, 19, 20, 50, 99.9, 100)] == [
        0,
        0,
        1,
        1,
        2,
        2,
        3,
        4,
        4,
        5,
    ]
    assert [bucket_of(ms) for ms in (4999, 5000, 9999.9, 10000, 250_000)] == [9, 10, 10, 11, 11]


def test_percentile_interpolates_linearly_inside_its_bucket() -> None:
    ten_between_100_and_200 = histogram(b5=10)
    assert percentile(ten_between_100_and_200, 0.5, 1000) == pytest.approx(150)
    half_below_5_half_below_10 = histogram(b0=5, b1=5)
    assert percentile(half_below_5_half_below_10, 0.5, 1000) == pytest.approx(5)
    assert percentile(half_below_5_half_below_10, 0.9, 1000) == pytest.approx(9)
    assert percentile(half_below_5_half_below_10, 0.0, 1000) == pytest.approx(0)


def test_the_open_last_bucket_ends_at_the_slowest_latency() -> None:
    assert percentile(histogram(b11=4), 0.5, 30_000) == pytest.approx(20_000)
    assert percentile(histogram(b11=4), 1.0, 30_000) == pytest.approx(30_000)


def test_a_percentile_never_exceeds_the_slowest_latency() -> None:
    assert percentile(histogram(b1=10), 0.95, 6.0) == pytest.approx(5.95)
    assert percentile(histogram(b1=10), 1.0, 6.0) == pytest.approx(6.0)


def test_an_empty_histogram_has_no_percentile_and_a_quantile_is_between_0_and_1() -> None:
    assert percentile([0] * BUCKETS, 0.95, 0.0) is None
    assert percentile([], 0.5, 0.0) is None
    with pytest.raises(ValueError, match="between 0 and 1"):
        percentile(histogram(b0=1), 95, 1.0)


# --- what counts ---------------------------------------------------------------------------------


def test_4xx_and_429_are_requests_but_not_provider_failures() -> None:
    for error_class in (None, "http_4xx", "http_429", "auth"):
        assert is_request(error_class)
        assert not is_failure(error_class)
    for error_class in ("http_5xx", "timeout", "timeout_unknown", "connect"):
        assert is_request(error_class)
        assert is_failure(error_class)


def test_a_call_refused_by_the_breaker_is_refused_not_a_request() -> None:
    assert not is_request("breaker_open")
    assert not is_failure("breaker_open")


async def test_rollups_count_refused_calls_apart_and_keep_them_out_of_latencies(
    services: Services,
) -> None:
    cid = await add_connection(services, "Pay")
    at = NOON + timedelta(seconds=5)
    await insert_rows(
        services,
        RequestLogEntry,
        [
            call(cid, at, 30, None),
            call(cid, at, 40, "http_4xx", 404),
            call(cid, at, 45, "http_429", 429),
            call(cid, at, 3000, "http_5xx", 503),
            call(cid, at, 10_000, "timeout", None),
            call(cid, at, 0.1, "breaker_open", None),
            call(cid, at, 0.2, "breaker_open", None),
        ],
    )
    await roll_up(services.db, NOON + 2 * MINUTE)
    [row] = await rollups(services, "minute")
    assert (row["requests"], row["failures"], row["refused"]) == (5, 2, 2)
    assert row["latency_total_ms"] == pytest.approx(30 + 40 + 45 + 3000 + 10_000)
    assert row["latency_max_ms"] == 10_000
    assert row["histogram"] == histogram(b3=3, b9=1, b11=1)


# --- roll-up -------------------------------------------------------------------------------------


async def test_minute_rollups_total_each_connection_per_minute_with_data(
    services: Services,
) -> None:
    pay, mail = await add_connection(services, "Pay"), await add_connection(services, "Mail")
    await insert_rows(
        services,
        RequestLogEntry,
        [
            call(pay, NOON + timedelta(seconds=1), 12),
            call(pay, NOON + timedelta(seconds=59.9), 700, "http_5xx", 502),
            call(mail, NOON + timedelta(seconds=30), 3),
            # nothing at 12:01: no row is written for it
            call(pay, NOON + 2 * MINUTE, 15_000, "timeout", None),
            call(None, NOON, 1),  # type: ignore[arg-type]  # a removed connection's call
        ],
    )
    await insert_rows(
        services,
        HealthCheckRow,
        [
            check(pay, NOON + timedelta(seconds=10)),
            check(pay, NOON + timedelta(seconds=40), ok=False),
            check(mail, NOON + 3 * MINUTE),
        ],
    )

    written = await roll_up(services.db, NOON + 5 * MINUTE)

    assert written == {"minute": 4, "hour": 0, "day": 0}
    rows = {
        (row["connection_id"], row["bucket_start"]): row
        for row in await rollups(services, "minute")
    }
    assert sorted(rows) == [
        (pay, NOON),
        (pay, NOON + 2 * MINUTE),
        (mail, NOON),
        (mail, NOON + 3 * MINUTE),
    ]
    first = rows[pay, NOON]
    assert (first["requests"], first["failures"], first["refused"]) == (2, 1, 0)
    assert (first["latency_total_ms"], first["latency_max_ms"]) == (712, 700)
    assert first["histogram"] == histogram(b2=1, b7=1)
    assert (first["checks"], first["checks_ok"]) == (2, 1)
    assert rows[pay, NOON + 2 * MINUTE]["histogram"] == histogram(b11=1)
    only_a_check = rows[mail, NOON + 3 * MINUTE]
    assert (only_a_check["requests"], only_a_check["checks"], only_a_check["checks_ok"]) == (
        0,
        1,
        1,
    )


async def test_hour_and_day_rollups_sum_counts_and_histograms_and_keep_the_max(
    services: Services,
) -> None:
    cid = await add_connection(services, "Pay")
    midnight = datetime(2025, 3, 10, tzinfo=UTC)
    calls = [
        call(cid, midnight + 9 * HOUR + 5 * MINUTE, 8),
        call(cid, midnight + 9 * HOUR + 50 * MINUTE, 120, "connect", None),
        call(cid, midnight + 9 * HOUR + 59 * MINUTE, 0, "breaker_open", None),
        call(cid, midnight + 10 * HOUR, 2500),
        call(cid, midnight + 23 * HOUR + 59 * MINUTE + timedelta(seconds=59), 60),
        call(cid, midnight + DAY + 10 * MINUTE, 9),  # the next day, not complete yet
    ]
    await insert_rows(services, RequestLogEntry, calls)
    await insert_rows(
        services,
        HealthCheckRow,
        [check(cid, midnight + 9 * HOUR + m * MINUTE, ok=m % 2 == 0) for m in range(10)],
    )

    written = await roll_up(services.db, midnight + DAY + HOUR + timedelta(seconds=30))

    assert written == {"minute": 15, "hour": 4, "day": 1}
    hours = {row["bucket_start"]: row for row in await rollups(services, "hour")}
    assert sorted(hours) == [
        midnight + 9 * HOUR,
        midnight + 10 * HOUR,
        midnight + 23 * HOUR,
        midnight + DAY,
    ]
    nine = hours[midnight + 9 * HOUR]
    assert (nine["requests"], nine["failures"], nine["refused"]) == (2, 1, 1)
    assert (nine["latency_total_ms"], nine["latency_max_ms"]) == (128, 120)
    assert nine["histogram"] == histogram(b1=1, b5=1)
    assert (nine["checks"], nine["checks_ok"]) == (10, 5)
    [day] = await rollups(services, "day")
    assert day["bucket_start"] == midnight
    assert (day["requests"], day["failures"], day["refused"]) == (4, 1, 1)
    assert (day["latency_total_ms"], day["latency_max_ms"]) == (8 + 120 + 2500 + 60, 2500)
    assert day["histogram"] == histogram(b1=1, b4=1, b5=1, b9=1)
    assert (day["checks"], day["checks_ok"]) == (10, 5)


async def test_rolling_up_again_changes_nothing(services: Services) -> None:
    cid = await add_connection(services, "Pay")
    start = NOON - 3 * DAY
    await insert_rows(
        services,
        RequestLogEntry,
        [call(cid, start + n * 7 * MINUTE, float(n % 900)) for n in range(3 * 24 * 60 // 7)],
    )
    await insert_rows(
        services, HealthCheckRow, [check(cid, start + n * 5 * MINUTE) for n in range(3 * 24 * 12)]
    )
    now = NOON + timedelta(seconds=10)
    first = await roll_up(services.db, now)
    before = {res: await rollups(services, res) for res in ("minute", "hour", "day")}

    assert await roll_up(services.db, now) == {"minute": 0, "hour": 0, "day": 0}
    assert await roll_up(services.db, now + timedelta(seconds=45)) == {
        "minute": 0,
        "hour": 0,
        "day": 0,
    }
    after = {res: await rollups(services, res) for res in ("minute", "hour", "day")}

    assert (first["hour"], first["day"]) == (72, 3)
    assert after == before


async def test_rows_arriving_within_the_grace_are_rolled_up(services: Services) -> None:
    cid = await add_connection(services, "Pay")
    await insert_rows(services, RequestLogEntry, [call(cid, NOON + timedelta(seconds=58))])

    # 12:01:05: the minute 12:00 ended only 5 s ago; a batch of its calls may still be coming.
    assert (await roll_up(services.db, NOON + MINUTE + timedelta(seconds=5)))["minute"] == 0
    await insert_rows(services, RequestLogEntry, [call(cid, NOON + timedelta(seconds=59.5))])
    assert (await roll_up(services.db, NOON + MINUTE + timedelta(seconds=10)))["minute"] == 1

    [row] = await rollups(services, "minute")
    assert row["requests"] == 2


async def test_a_backlog_is_rolled_up_a_few_hours_per_transaction(
    services: Services, monkeypatch: pytest.MonkeyPatch
) -> None:
    cid = await add_connection(services, "Pay")
    start = NOON - 2 * DAY
    await insert_rows(
        services, HealthCheckRow, [check(cid, start + n * MINUTE) for n in range(2 * 24 * 60)]
    )
    transactions: list[str] = []
    write = services.db.write

    async def counted(fn: Callable[..., Any], *args: Any) -> Any:
        transactions.append(str(args[0]) if args else fn.__name__)
        return await write(fn, *args)

    monkeypatch.setattr(services.db, "write", counted)

    written = await roll_up(services.db, NOON + timedelta(seconds=10))

    assert written == {"minute": 2 * 24 * 60, "hour": 48, "day": 2}
    minute_transactions = transactions.count("minute")
    assert minute_transactions >= (2 * DAY) / metrics.CHUNK["minute"]

    def watermark(session: Session) -> Any:
        return get_state(session, "metrics.minute_until")

    assert await services.db.read(watermark) == NOON.isoformat()


async def test_a_busy_backlog_is_also_cut_by_rows(
    services: Services, monkeypatch: pytest.MonkeyPatch
) -> None:
    cid = await add_connection(services, "Pay")
    start = NOON - 2 * HOUR
    await insert_rows(
        services,
        RequestLogEntry,
        [
            call(cid, start + m * MINUTE + timedelta(seconds=s))
            for m in range(120)
            for s in range(10)
        ],
    )
    monkeypatch.setattr(metrics, "CHUNK_ROWS", 100)
    transactions: list[str] = []
    write = services.db.write

    async def counted(fn: Callable[..., Any], *args: Any) -> Any:
        transactions.append(str(args[0]))
        return await write(fn, *args)

    monkeypatch.setattr(services.db, "write", counted)

    assert (await roll_up(services.db, NOON + GRACE))["minute"] == 120
    assert transactions.count("minute") >= 1200 / 100
    assert {row["requests"] for row in await rollups(services, "minute")} == {10}


async def test_an_idle_stretch_is_skipped_without_a_transaction_per_chunk(
    services: Services, monkeypatch: pytest.MonkeyPatch
) -> None:
    cid = await add_connection(services, "Pay")
    await insert_rows(services, HealthCheckRow, [check(cid, NOON - 60 * DAY)])
    await insert_rows(services, HealthCheckRow, [check(cid, NOON - MINUTE)])
    transactions: list[str] = []
    write = services.db.write

    async def counted(fn: Callable[..., Any], *args: Any) -> Any:
        transactions.append(str(args[0]))
        return await write(fn, *args)

    monkeypatch.setattr(services.db, "write", counted)

    assert (await roll_up(services.db, NOON + MINUTE))["minute"] == 2
    assert transactions.count("minute") <= 4


# --- retention -----------------------------------------------------------------------------------


async def test_retention_keeps_each_level_for_its_time(services: Services) -> None:
    cid = await add_connection(services, "Pay")
    now = NOON + timedelta(seconds=10)  # 12:00 is rolled up: its minute ended 10 s ago
    # A check at half past every hour for 40 days.
    first = NOON - 40 * DAY + 30 * MINUTE
    await insert_rows(
        services, HealthCheckRow, [check(cid, first + n * HOUR) for n in range(40 * 24)]
    )
    await roll_up(services.db, now)

    deleted = await apply_retention(services.db, now)

    assert (deleted["health_checks"], await count(services, HealthCheckRow)) == (33 * 24, 7 * 24)
    assert deleted["request_log"] == 0
    # One check an hour makes one minute rollup an hour.
    assert (deleted["minute"], len(await rollups(services, "minute"))) == (39 * 24, 24)
    # Hours are kept by their start: the hour that began exactly 30 days and 10 s ago is gone.
    assert (deleted["hour"], len(await rollups(services, "hour"))) == (10 * 24 + 1, 30 * 24 - 1)
    assert (deleted["day"], len(await rollups(services, "day"))) == (0, 40)


async def test_retention_deletes_nothing_that_is_not_rolled_up_yet(services: Services) -> None:
    cid = await add_connection(services, "Pay")
    await insert_rows(services, RequestLogEntry, [call(cid, NOON - 10 * DAY)])

    assert (await apply_retention(services.db, NOON))["request_log"] == 0
    assert await count(services, RequestLogEntry) == 1

    await roll_up(services.db, NOON)
    assert (await apply_retention(services.db, NOON))["request_log"] == 1
    [day] = await rollups(services, "day")
    assert day["requests"] == 1


# --- summaries -----------------------------------------------------------------------------------


async def test_a_summary_of_today_counts_requests_failures_and_refusals(
    services: Services,
) -> None:
    pay, idle = await add_connection(services, "Pay"), await add_connection(services, "Idle")
    today = NOON - 12 * HOUR
    await insert_rows(
        services,
        RequestLogEntry,
        [
            call(pay, today - MINUTE, 10),  # yesterday: not counted
            *[call(pay, today + n * MINUTE, 150) for n in range(16)],
            call(pay, today + HOUR, 40, "http_4xx", 404),
            call(pay, today + HOUR, 3000, "http_5xx", 500),
            call(pay, today + HOUR, 0.5, "breaker_open", None),
        ],
    )

    found = await summaries(services.db, [pay, idle], today, NOON)

    summary = found[pay]
    assert (summary.requests, summary.failures, summary.refused) == (18, 1, 1)
    assert summary.success_rate == pytest.approx(17 / 18)
    assert summary.avg_ms == pytest.approx((16 * 150 + 40 + 3000) / 18)
    assert summary.p95_ms == pytest.approx(percentile(histogram(b3=1, b5=16, b9=1), 0.95, 3000))
    empty = found[idle]
    assert (empty.requests, empty.success_rate, empty.avg_ms, empty.p95_ms) == (0, None, None, None)
    assert empty.uptime == {"24h": None, "7d": None, "30d": None}
    assert (empty.last_error, empty.checks_24h) == (None, 0)


async def test_a_summary_joins_old_rollups_and_recent_raw_rows_counting_each_call_once(
    services: Services,
) -> None:
    cid = await add_connection(services, "Pay")
    now = NOON + timedelta(seconds=30)
    since = datetime(2025, 1, 29, tzinfo=UTC)  # 40.5 days ago
    calls = []
    for n in range(int((NOON - since) / (10 * MINUTE)) + 1):  # every 10 minutes until noon
        latency = 20.0 + (n % 50) * 10
        error = "http_5xx" if n % 17 == 0 else "breaker_open" if n % 23 == 0 else None
        calls.append(call(cid, since + n * 10 * MINUTE, latency, error, 503 if error else 200))
    await insert_rows(services, RequestLogEntry, calls)
    await roll_up(services.db, now)
    await apply_retention(services.db, now)
    # The raw rows of the first 33 days are gone; they live on in hour and day rollups only.
    assert await count(services, RequestLogEntry) < len(calls) // 5

    summary = (await summaries(services.db, [cid], since, now))[cid]

    refused = [c for c in calls if c["error_class"] == "breaker_open"]
    requests = [c for c in calls if c["error_class"] != "breaker_open"]
    assert summary.requests == len(requests)
    assert summary.refused == len(refused)
    assert summary.failures == sum(1 for c in requests if c["error_class"] == "http_5xx")
    assert summary.avg_ms == pytest.approx(sum(c["latency_ms"] for c in requests) / len(requests))
    expected = [0] * BUCKETS
    for c in requests:
        expected[bucket_of(c["latency_ms"])] += 1
    assert summary.p95_ms == pytest.approx(percentile(expected, 0.95, 510))

    recent = (await summaries(services.db, [cid], now - 3 * DAY, now))[cid]
    assert recent.requests + recent.refused == 3 * 24 * 6  # 12:10 three days ago to noon


async def test_today_in_the_schools_time_zone_counts_the_hours_before_midnight_utc(
    services: Services,
) -> None:
    cid = await add_connection(services, "Pay")
    now = NOON + timedelta(seconds=30)
    # Kolkata is 5:30 ahead: its today began at 18:30 UTC yesterday, inside yesterday's UTC day
    # (a day rollup) and halfway through an hour (an hour rollup).
    today = datetime(2025, 3, 10, tzinfo=ZoneInfo("Asia/Kolkata"))
    first = NOON - 2 * DAY + timedelta(seconds=5)
    calls = [call(cid, first + n * 10 * MINUTE) for n in range(2 * 24 * 6)]
    await insert_rows(services, RequestLogEntry, calls)
    await roll_up(services.db, now)

    summary = (await summaries(services.db, [cid], today, now))[cid]

    assert summary.requests == sum(1 for c in calls if today <= c["at"] < now)


async def test_a_range_that_starts_before_any_finer_level_is_kept_starts_at_a_whole_day(
    services: Services,
) -> None:
    cid = await add_connection(services, "Pay")
    now = NOON + timedelta(seconds=30)
    first = NOON - 45 * DAY
    calls = [call(cid, first + n * HOUR) for n in range(45 * 24)]
    await insert_rows(services, RequestLogEntry, calls)
    await roll_up(services.db, now)
    await apply_retention(services.db, now)
    # Forty days ago only day rollups are left: the part of that day after 10:17 is not known.
    since = NOON - 40 * DAY - 103 * MINUTE

    summary = (await summaries(services.db, [cid], since, now))[cid]

    next_midnight = datetime(2025, 1, 30, tzinfo=UTC)
    assert since < next_midnight
    assert summary.requests == sum(1 for c in calls if next_midnight <= c["at"] < now)


async def test_uptime_is_good_checks_over_each_window(services: Services) -> None:
    cid, other = await add_connection(services, "Pay"), await add_connection(services, "Mail")
    now = NOON + timedelta(seconds=30)
    checks = [
        *[check(cid, now - 12 * HOUR + n * MINUTE, ok=n != 0) for n in range(10)],  # 9 of 10
        *[check(cid, now - 3 * DAY + n * MINUTE, ok=n % 2 == 0) for n in range(10)],  # 5 of 10
        *[check(cid, now - 20 * DAY + n * MINUTE, ok=False) for n in range(10)],  # 0 of 10
        *[check(cid, now - 40 * DAY + n * MINUTE) for n in range(10)],  # outside every window
        check(other, now - 8 * DAY),
    ]
    await insert_rows(services, HealthCheckRow, checks)
    await roll_up(services.db, now)
    await apply_retention(services.db, now)

    found = await summaries(services.db, [cid, other], now - HOUR, now)

    assert found[cid].uptime == {
        "24h": pytest.approx(0.9),
        "7d": pytest.approx(14 / 20),
        "30d": pytest.approx(14 / 30),
    }
    assert found[cid].checks_24h == 10
    assert found[other].uptime == {"24h": None, "7d": None, "30d": 1.0}


async def test_last_error_is_the_latest_failed_check_or_failed_call(services: Services) -> None:
    pay = await add_connection(services, "Pay")
    mail = await add_connection(services, "Mail")
    calm = await add_connection(services, "Calm")
    quiet = await add_connection(services, "Quiet")
    now = NOON + 5 * MINUTE
    await insert_rows(
        services,
        HealthCheckRow,
        [
            check(pay, NOON - 2 * HOUR, ok=False, detail="HTTP 502 from /health", error="http_5xx"),
            check(mail, NOON - 3 * HOUR, ok=False, detail="TLS handshake failed", error="connect"),
            check(mail, NOON - HOUR, ok=False, detail="No answer within 10 s", error="timeout"),
            check(mail, NOON - 30 * MINUTE),
            check(quiet, NOON - 3 * DAY, ok=False, detail="Certificate expired", error="connect"),
            *[check(quiet, NOON - 3 * DAY + n * HOUR) for n in range(1, 72)],
            check(pay, NOON - 8 * DAY, ok=False, detail="Too old to tell", error="connect"),
        ],
    )
    await insert_rows(
        services,
        RequestLogEntry,
        [
            call(pay, NOON - HOUR, 900, "http_5xx", 503),
            call(pay, NOON - 10 * MINUTE, 50, "http_4xx", 404),  # our mistake, not theirs
            call(mail, NOON - 2 * HOUR, 10_000, "timeout", None),
            call(calm, NOON - MINUTE, 1, "breaker_open", None),  # refused: nothing was tried
            call(calm, now - timedelta(seconds=3), 5, "http_429", 429),  # not rolled up yet
        ],
    )
    await roll_up(services.db, now)

    found = await summaries(services.db, [pay, mail, calm, quiet], NOON - DAY, now)

    assert found[pay].last_error == (NOON - HOUR, "http_5xx", "HTTP 503")
    assert found[mail].last_error == (NOON - HOUR, "timeout", "No answer within 10 s")
    assert found[calm].last_error is None
    # Found through the hour rollups: minute rollups are gone after a day.
    await apply_retention(services.db, now)
    quiet_summary = (await summaries(services.db, [quiet], NOON - DAY, now))[quiet]
    assert quiet_summary.last_error == (NOON - 3 * DAY, "connect", "Certificate expired")


async def test_last_error_includes_failures_not_rolled_up_yet(services: Services) -> None:
    cid = await add_connection(services, "Pay")
    await insert_rows(services, RequestLogEntry, [call(cid, NOON - HOUR, 900, "http_5xx", 500)])
    await roll_up(services.db, NOON)
    await insert_rows(
        services, RequestLogEntry, [call(cid, NOON + timedelta(seconds=2), 9000, "timeout", None)]
    )

    found = await summaries(services.db, [cid], NOON - DAY, NOON + timedelta(seconds=5))

    assert found[cid].last_error == (NOON + timedelta(seconds=2), "timeout", "No answer in time")


# --- series --------------------------------------------------------------------------------------


async def test_a_series_per_second_reads_raw_rows_and_shows_gaps_as_gaps(
    services: Services,
) -> None:
    cid = await add_connection(services, "Pay")
    await insert_rows(
        services,
        RequestLogEntry,
        [
            call(cid, NOON + timedelta(seconds=0.2), 10),
            call(cid, NOON + timedelta(seconds=0.7), 30, "http_5xx", 500),
            call(cid, NOON + timedelta(seconds=0.9), 1, "breaker_open", None),
            call(cid, NOON + timedelta(seconds=2.5), 100),
            call(cid, NOON + timedelta(seconds=4), 100),  # the end is not included
        ],
    )

    found = await series(services.db, cid, NOON, NOON + timedelta(seconds=4), 1)

    assert (found.start, found.step_seconds) == (NOON, 1)
    assert found.requests == [2, 0, 1, 0]
    assert found.failures == [1, 0, 0, 0]
    assert found.avg_ms == [20, None, 100, None]
    assert (found.p95_ms[1], found.p95_ms[3]) == (None, None)
    assert found.p95_ms[0] == pytest.approx(percentile(histogram(b2=1, b3=1), 0.95, 30))


async def test_a_series_per_minute_reads_rollups_and_the_minutes_not_rolled_up_yet(
    services: Services,
) -> None:
    cid = await add_connection(services, "Pay")
    await insert_rows(
        services,
        RequestLogEntry,
        [call(cid, NOON + timedelta(seconds=s), 10) for s in (1, 2, 3, 125, 190)],
    )
    await roll_up(services.db, NOON + 3 * MINUTE + timedelta(seconds=30))  # rolls 12:00-12:02

    def forget_rolled_raw_rows(session: Session) -> None:
        session.execute(delete(RequestLogEntry).where(RequestLogEntry.at < NOON + 3 * MINUTE))

    # Rolled minutes must come from their rollups: drop the raw rows they were made of.
    await services.db.write(forget_rolled_raw_rows)
    await insert_rows(
        services, RequestLogEntry, [call(cid, NOON + 4 * MINUTE + timedelta(seconds=1), 20)]
    )

    found = await series(services.db, cid, NOON + timedelta(seconds=20), NOON + 6 * MINUTE, 60)

    assert found.start == NOON  # moved back to a whole minute
    assert found.requests == [3, 0, 1, 1, 1, 0]
    assert found.avg_ms == [10, None, 10, 10, 20, None]

    # A rollup is never split: a step cut short reads what is finer (here 12:02:05 is too late).
    cut_short = await series(services.db, cid, NOON, NOON + 2 * MINUTE + timedelta(seconds=1), 60)
    assert cut_short.requests == [3, 0, 0]


async def test_a_series_per_hour_reads_hours_then_minutes_then_raw_rows(
    services: Services,
) -> None:
    cid = await add_connection(services, "Pay")
    await insert_rows(
        services,
        RequestLogEntry,
        [
            call(cid, NOON - 2 * HOUR + 15 * MINUTE, 10),
            call(cid, NOON - HOUR + 20 * MINUTE, 20),
            call(cid, NOON - HOUR + 21 * MINUTE, 40, "timeout", None),
            call(cid, NOON + 5 * MINUTE, 30),  # rolled into a minute, not yet an hour
            call(cid, NOON + 40 * MINUTE + timedelta(seconds=5), 50),  # still only raw
        ],
    )
    now = NOON + 40 * MINUTE + timedelta(seconds=50)
    await roll_up(services.db, now)
    assert [row["bucket_start"] for row in await rollups(services, "hour")] == [
        NOON - 2 * HOUR,
        NOON - HOUR,
    ]

    found = await series(services.db, cid, NOON - 3 * HOUR, NOON + HOUR, 3600)

    assert found.requests == [0, 1, 2, 2]
    assert found.failures == [0, 0, 1, 0]
    assert found.avg_ms == [None, 10, 30, 40]


async def test_a_series_per_day_reads_days_and_the_tail_of_today(services: Services) -> None:
    cid = await add_connection(services, "Pay")
    midnight = datetime(2025, 3, 10, tzinfo=UTC)
    await insert_rows(
        services,
        RequestLogEntry,
        [
            call(cid, midnight - 2 * DAY + HOUR, 10),
            call(cid, midnight - DAY + 5 * HOUR, 10),
            call(cid, midnight - DAY + 6 * HOUR, 10),
            call(cid, midnight + HOUR, 10),
            call(cid, midnight + 11 * HOUR + 59 * MINUTE + timedelta(seconds=55), 10),
        ],
    )
    await roll_up(services.db, NOON)

    found = await series(services.db, cid, midnight - 3 * DAY, midnight + DAY, 86400)

    assert found.requests == [0, 1, 2, 2]
