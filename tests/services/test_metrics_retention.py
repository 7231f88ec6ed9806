"""The database stays bounded: more than a year of health checks and their calls, rolled up and
pruned day by day as the engine would, leaves only what retention promises, and the bytes per
row measured on it put a year of 50 connections checked every minute under 200 MB."""

from __future__ import annotations

import sqlite3
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import delete, func, insert, select
from sqlalchemy.orm import Session

from app.services import Services, metrics
from app.services.metrics import (
    CHUNK,
    GRACE,
    KEPT,
    RAW_KEPT,
    apply_retention,
    roll_up,
)
from app.store.integration import HealthCheckRow, MetricRollup, ProviderConnection, RequestLogEntry

CONNECTIONS = 3
DAYS = 400
START = datetime(2024, 1, 1, tzinfo=UTC)
DAY = timedelta(days=1)
MINUTE = timedelta(minutes=1)
# A check every minute for 400 days takes minutes to simulate; one every quarter of an hour
# still fills every level of roll-up and leaves each row's size as it is (only the counts inside
# rollups are smaller). The bytes per row measured here are scaled to the promised load below.
CHECK_EVERY = 15
JOBS_EVERY_DAYS = 5  # DAYS is a multiple: the jobs run after the last day too
# The product's promise (issue: "a year of 50 connections checked every minute stays under
# 200 MB"), in the steady state retention keeps: 7 days raw, 24 h of minutes, 30 days of hours
# and 365 days of days.
TARGET_CONNECTIONS = 50
LIMIT_BYTES = 200_000_000
STEADY_ROWS = {
    "request_log": TARGET_CONNECTIONS * 7 * 24 * 60,
    "health_checks": TARGET_CONNECTIONS * 7 * 24 * 60,
    "minute": TARGET_CONNECTIONS * 24 * 60,
    "hour": TARGET_CONNECTIONS * 30 * 24,
    "day": TARGET_CONNECTIONS * 365,
}


def one_day(connection_ids: list[int], day: datetime) -> tuple[list[Any], list[Any]]:
    """A check every CHECK_EVERY minutes per connection, and the request-log row of the call it
    made; about one in a hundred fails."""
    checks, calls = [], []
    for minute in range(0, 24 * 60, CHECK_EVERY):
        at = day + minute * MINUTE + timedelta(seconds=20)
        for connection_id in connection_ids:
            ok = (minute + connection_id) % 101 != 0
            latency = 60.0 + (minute * 7 + connection_id * 13) % 400
            checks.append(
                {
                    "connection_id": connection_id,
                    "at": at,
                    "ok": ok,
                    "latency_ms": latency,
                    "error_class": None if ok else "http_5xx",
                    "detail": "" if ok else "The provider answered HTTP 503 Service Unavailable",
                }
            )
            calls.append(
                {
                    "at": at,
                    "connection_id": connection_id,
                    "operation": "health_check",
                    "method": "GET",
                    "url": "https://api.sandbox-payments.example/v1/balance",
                    "status_code": 200 if ok else 503,
                    "latency_ms": latency,
                    "error_class": None if ok else "http_5xx",
                    "attempt": 1,
                }
            )
    return checks, calls


def file_bytes(services: Services, *, vacuum: bool = False) -> tuple[int, int]:
    """(size, free) of the database file in bytes, after an optional VACUUM and a checkpoint
    that empties the WAL into it."""
    path = services.db.sqlite_path
    assert path is not None
    # VACUUM cannot run inside a transaction, and the app's engines always begin one.
    connection = sqlite3.connect(path, isolation_level=None)
    try:
        if vacuum:
            connection.execute("VACUUM")
        connection.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        (pages,) = connection.execute("PRAGMA page_count").fetchone()
        (free,) = connection.execute("PRAGMA freelist_count").fetchone()
        (page_size,) = connection.execute("PRAGMA page_size").fetchone()
    finally:
        connection.close()
    assert path.stat().st_size == pages * page_size
    return int(pages * page_size), int(free * page_size)


@pytest.mark.slow
async def test_a_year_of_checks_stays_within_retention_and_50_connections_under_200_mb(
    services: Services, monkeypatch: pytest.MonkeyPatch
) -> None:
    db = services.db
    # The engine rolls a few hours to a transaction, to keep each one short beside the live
    # work; here every transaction's commit (a disk flush) would be most of the time, so
    # the jobs take the days since their last run in one.
    for resolution in (metrics.MINUTE, metrics.HOUR):
        monkeypatch.setitem(CHUNK, resolution, JOBS_EVERY_DAYS * DAY)

    def add_connections(session: Session) -> list[int]:
        rows = [
            ProviderConnection(kind="sandbox-payments", name=f"Provider {n}")
            for n in range(CONNECTIONS)
        ]
        session.add_all(rows)
        session.flush()
        return [row.id for row in rows]

    connection_ids = await db.write(add_connections)
    health_table = HealthCheckRow.metadata.tables[HealthCheckRow.__tablename__]
    log_table = RequestLogEntry.metadata.tables[RequestLogEntry.__tablename__]
    spent = {"insert": 0.0, "roll_up": 0.0, "retention": 0.0}
    began = time.perf_counter()
    now = START
    for day in range(DAYS):
        checks, calls = one_day(connection_ids, START + day * DAY)

        def write(session: Session, checks: Any = checks, calls: Any = calls) -> None:
            session.execute(insert(health_table), checks)
            session.execute(insert(log_table), calls)

        clock = time.perf_counter()
        await db.write(write)
        spent["insert"] += time.perf_counter() - clock
        # The engine runs these jobs every minute; every few days is enough to prove the bounds
        # (each run takes up where the last stopped), just after the last day's last minute is
        # due (GRACE after midnight).
        if (day + 1) % JOBS_EVERY_DAYS:
            continue
        now = START + (day + 1) * DAY + GRACE
        clock = time.perf_counter()
        await roll_up(db, now)
        spent["roll_up"] += time.perf_counter() - clock
        clock = time.perf_counter()
        await apply_retention(db, now)
        spent["retention"] += time.perf_counter() - clock
    simulated = time.perf_counter() - began

    def extent(session: Session) -> dict[str, tuple[int, datetime | None]]:
        found: dict[str, tuple[int, datetime | None]] = {}
        for name, column in (
            ("request_log", RequestLogEntry.at),
            ("health_checks", HealthCheckRow.at),
        ):
            found[name] = tuple(session.execute(select(func.count(), func.min(column))).one())
        for resolution in KEPT:
            found[resolution] = tuple(
                session.execute(
                    select(func.count(), func.min(MetricRollup.bucket_start)).where(
                        MetricRollup.resolution == resolution
                    )
                ).one()
            )
        return found

    found = await db.read(extent)

    # `now` is 10 s past midnight after day 400: a bucket that began exactly 24 h, 30 days or
    # 365 days ago is 10 s too old, so each level holds one bucket fewer than a whole period.
    checks_a_day = 24 * 60 // CHECK_EVERY
    expected = {
        "request_log": CONNECTIONS * 7 * checks_a_day,
        "health_checks": CONNECTIONS * 7 * checks_a_day,
        "minute": CONNECTIONS * (checks_a_day - 1),
        "hour": CONNECTIONS * (30 * 24 - 1),
        "day": CONNECTIONS * (365 - 1),
    }
    assert {name: rows for name, (rows, _oldest) in found.items()} == expected
    oldest = {name: first for name, (_rows, first) in found.items()}
    kept = {"request_log": RAW_KEPT, "health_checks": RAW_KEPT, **KEPT}
    too_old = {
        name: first for name, first in oldest.items() if not first or first < now - kept[name]
    }
    assert too_old == {}

    # The file as the simulation left it: pages freed by retention are reused, not returned.
    as_used, free = file_bytes(services)
    # What each kind of row costs on disk (its share of table and indexes): delete the rows of
    # one kind at a time and see how much smaller the vacuumed file gets.
    total, _ = file_bytes(services, vacuum=True)
    remaining = total
    per_row: dict[str, float] = {}
    for name in ("request_log", "health_checks", *KEPT):

        def drop(session: Session, name: str = name) -> None:
            if name == "request_log":
                session.execute(delete(RequestLogEntry))
            elif name == "health_checks":
                session.execute(delete(HealthCheckRow))
            else:
                session.execute(delete(MetricRollup).where(MetricRollup.resolution == name))

        await db.write(drop)
        smaller, _ = file_bytes(services, vacuum=True)
        per_row[name] = (remaining - smaller) / expected[name]
        remaining = smaller
    rest = remaining

    compact = rest + sum(per_row[name] * rows for name, rows in STEADY_ROWS.items())
    # A live file is bigger than a vacuumed one: B-tree pages split by inserts are not full.
    # Scale by what this simulation measured; pages freed by retention are left out, as the
    # engine's every-minute jobs reuse them at once (here a whole day's worth sits free).
    in_use = compact * (as_used - free) / total
    print(
        f"\nsimulated {DAYS} days × {CONNECTIONS} connections, a check every {CHECK_EVERY} "
        f"minutes, in {simulated:.1f} s (insert {spent['insert']:.1f} s, roll-up "
        f"{spent['roll_up']:.1f} s, retention {spent['retention']:.1f} s)"
        f"\nkept rows: {expected}"
        f"\nfile {as_used / 1e6:.2f} MB ({free / 1e6:.2f} MB of it free pages), "
        f"vacuumed {total / 1e6:.2f} MB: metrics {(total - rest) / 1e6:.2f} MB, "
        f"everything else {rest / 1e6:.2f} MB"
        "\nbytes per row (table and indexes, vacuumed): "
        + ", ".join(f"{name} {value:.0f}" for name, value in per_row.items())
        + f"\nsteady state for {TARGET_CONNECTIONS} connections checked every minute: "
        + ", ".join(f"{name} {rows}" for name, rows in STEADY_ROWS.items())
        + f" rows → {compact / 1e6:.1f} MB vacuumed, {in_use / 1e6:.1f} MB in use "
        f"(limit {LIMIT_BYTES / 1e6:.0f} MB)"
    )
    assert in_use < LIMIT_BYTES
