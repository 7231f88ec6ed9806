"""Connection metrics: rollups of the request log and the health checks, their retention, and the
figures the dashboard and `switchboard health` show.

Raw rows (`request_log`, `health_checks`) are kept for `RAW_KEPT`; `roll_up` folds them into
per-minute rollups, minutes into hours and hours into UTC days (`metric_rollups`), and
`apply_retention` drops each level after its own time (`KEPT`), so a database used for years
stays small. Latencies are kept as histograms over fixed buckets (`LATENCY_EDGES_MS`): they merge
exactly, and percentiles can be estimated from any level.

Every job and query takes `now` as a parameter (never the clock) so tests can simulate a year.
The SQL is SQLAlchemy Core that runs on SQLite and PostgreSQL alike; the one dialect-specific
piece, seconds since the epoch of a timestamp column, is compiled per dialect (`_EpochSeconds`).
"""

from __future__ import annotations

import bisect
import logging
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import (
    ColumnElement,
    Delete,
    Integer,
    and_,
    case,
    delete,
    func,
    insert,
    literal,
    or_,
    select,
    tuple_,
)
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.orm import InstrumentedAttribute, Session
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.functions import FunctionElement

from app.services.settings import get_state, put_state
from app.store.database import Database
from app.store.integration import (
    HealthCheckRow,
    MetricRollup,
    ProviderConnection,
    RequestLogEntry,
)

log = logging.getLogger("switchboard.metrics")

# --- definitions ---------------------------------------------------------------------------------

# Upper edges of the latency buckets, in ms: bucket 0 is [0, 5), bucket 1 [5, 10), …, bucket 10
# [5000, 10000) and bucket 11 [10000, ∞). Fixed for good: stored histograms depend on them.
LATENCY_EDGES_MS: tuple[int, ...] = (5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10000)
BUCKETS = len(LATENCY_EDGES_MS) + 1

# A call the circuit breaker refused never left: it is counted as refused, not as a request.
REFUSED_CLASS = "breaker_open"
# The provider's fault. 4xx answers (our request was wrong) and 429 (we were too fast) are not.
FAILURE_CLASSES: frozenset[str] = frozenset({"http_5xx", "timeout", "timeout_unknown", "connect"})

MINUTE, HOUR, DAY = "minute", "hour", "day"
# Rollup resolutions, finest first, with the length of one bucket.
RESOLUTIONS: dict[str, timedelta] = {
    MINUTE: timedelta(minutes=1),
    HOUR: timedelta(hours=1),
    DAY: timedelta(days=1),
}
# How long each level is kept (rollups counted by the start of their bucket).
RAW_KEPT = timedelta(days=7)
KEPT: dict[str, timedelta] = {
    MINUTE: timedelta(hours=24),
    HOUR: timedelta(days=30),
    DAY: timedelta(days=365),
}
# A minute is rolled up this long after it ended: request-log rows are written in batches every
# half second and stamped when the call finished, so a few seconds' lateness is normal.
GRACE = timedelta(seconds=10)
# At most this much time per roll-up transaction, so a backlog (a week of raw rows after an
# upgrade) never holds the write lock for long.
CHUNK: dict[str, timedelta] = {
    MINUTE: timedelta(hours=3),
    HOUR: timedelta(days=1),
    DAY: timedelta(days=31),
}
# At most about this many request-log rows per minute roll-up transaction, for a busy provider.
CHUNK_ROWS = 50_000
# Rows deleted per retention transaction.
DELETE_CHUNK = 20_000
UPTIME_WINDOWS: dict[str, timedelta] = {
    "24h": timedelta(hours=24),
    "7d": timedelta(days=7),
    "30d": timedelta(days=30),
}
# Watermarks (app state): rollups of this resolution exist for every bucket before the time.
WATERMARK = {res: f"metrics.{res}_until" for res in RESOLUTIONS}

RAW = "raw"  # the raw rows, as a source next to the rollup resolutions
LEVELS: tuple[str, ...] = (RAW, *RESOLUTIONS)  # finest first: each is rolled into the next
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_FAILURE_TEXT = {
    "timeout": "No answer in time",
    "timeout_unknown": "No answer; the outcome is unknown",
    "connect": "Could not connect",
}


def bucket_of(ms: float) -> int:
    """The histogram bucket of a latency."""
    return bisect.bisect_right(LATENCY_EDGES_MS, ms)


def is_request(error_class: str | None) -> bool:
    """Whether a request-log row is a call that left (anything the breaker did not refuse)."""
    return error_class != REFUSED_CLASS


def is_failure(error_class: str | None) -> bool:
    """Whether a request-log row is a failure of the provider."""
    return error_class in FAILURE_CLASSES


def percentile(histogram: Sequence[int], q: float, max_ms: float) -> float | None:
    """The q-quantile (0 ≤ q ≤ 1) of the latencies in a histogram, interpolating linearly inside
    the bucket it falls in; None for an empty histogram. The open last bucket ends at `max_ms`,
    and no estimate exceeds `max_ms`, the slowest latency seen."""
    if not 0 <= q <= 1:
        raise ValueError(f"a quantile is between 0 and 1, not {q}")
    counts = _padded(histogram)
    total = sum(counts)
    if total == 0:
        return None
    rank = q * total
    below = 0
    for index, count in enumerate(counts):
        if count and below + count >= rank:
            lower = float(LATENCY_EDGES_MS[index - 1]) if index else 0.0
            upper = float(LATENCY_EDGES_MS[index]) if index < len(LATENCY_EDGES_MS) else max_ms
            upper = max(lower, min(upper, max_ms))
            return lower + (upper - lower) * max(0.0, rank - below) / count
        below += count
    return max_ms  # unreachable: the loop ends at the last non-empty bucket


# --- results -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ConnectionSummary:
    """One connection's traffic over a period, its uptime and its latest error."""

    requests: int
    failures: int
    refused: int
    success_rate: float | None  # (requests - failures) / requests; None without requests
    avg_ms: float | None
    p50_ms: float | None  # estimated from the latency histogram, like p95
    p95_ms: float | None
    # (when, error_class, detail) of the latest failed check or failed request in the raw rows.
    last_error: tuple[datetime, str, str] | None
    # checks_ok / checks over the last 24 h, 7 days and 30 days; None without checks.
    uptime: dict[str, float | None]
    checks_24h: int


@dataclass(frozen=True)
class Series:
    """A connection's traffic per step from `start`. A step without requests has zeros and
    None, so a plot shows a gap rather than a made-up value."""

    start: datetime
    step_seconds: int
    requests: list[int]
    failures: list[int]
    avg_ms: list[float | None]
    p95_ms: list[float | None]


# --- jobs ----------------------------------------------------------------------------------------


async def roll_up(db: Database, now: datetime) -> dict[str, int]:
    """Fold complete minutes of raw rows into minute rollups, complete hours of those into hour
    rollups and complete UTC days of those into day rollups; rows written per resolution.

    Idempotent: each resolution has a watermark (app state `metrics.<res>_until`) and a period is
    rolled once, by deleting and inserting its rollups in one transaction with the watermark.
    A minute is rolled `GRACE` after it ended; rows arriving later than that stay out of the
    rollups (they still count in `summaries` while they are raw)."""
    now = _utc(now)
    written = dict.fromkeys(RESOLUTIONS, 0)
    for res in RESOLUTIONS:
        while True:
            rows, done = await db.write(_roll_chunk, res, now)
            written[res] += rows
            if done:
                break
    if any(written.values()):
        log.debug("metrics rolled up", extra={"rows": written})
    return written


async def apply_retention(db: Database, now: datetime) -> dict[str, int]:
    """Delete raw rows older than `RAW_KEPT` and rollups older than their `KEPT`, a chunk per
    transaction; rows deleted per table or resolution.

    Nothing is deleted before it is rolled up: a cut-off never passes the next level's watermark,
    so a roll-up that fell behind keeps its rows until it catches up."""
    now = _utc(now)
    deleted: dict[str, int] = {}
    for target in ("request_log", "health_checks", *RESOLUTIONS):
        total = 0
        while True:
            count = await db.write(_delete_chunk, target, now)
            total += count
            if count < DELETE_CHUNK:
                break
        deleted[target] = total
    if any(deleted.values()):
        log.info("metrics retention", extra={"deleted": deleted})
    return deleted


# --- queries -------------------------------------------------------------------------------------


async def summaries(
    db: Database, connection_ids: Sequence[int], since: datetime, now: datetime
) -> dict[int, ConnectionSummary]:
    """Each connection's traffic over [since, now) (the caller's "today" starts in the school's
    time zone), its uptime over the last 24 h, 7 and 30 days and its latest error within the
    raw rows' 7 days. Rollups where they cover the range, raw rows for the rest: see "where
    figures come from" below."""
    since, now = _utc(since), _utc(now)
    ids = sorted(set(connection_ids))
    if not ids:
        return {}
    return await db.read(_summaries, ids, since, now)


async def series(
    db: Database, connection_id: int, start: datetime, end: datetime, step_seconds: int
) -> Series:
    """A connection's requests, failures, average and 95th-percentile latency per step over
    [start, end). `start` is moved back to a multiple of the step (UTC, from the epoch); a last
    step cut short by `end` holds what happened before `end` only.

    Sources: a step that is a whole number of days reads day rollups, then hour rollups, minute
    rollups and raw rows for the tail not rolled up yet; a whole number of hours starts with hour
    rollups, of minutes with minute rollups; any other step (1 s) reads raw rows only. Rollups
    are kept for 24 h (minutes), 30 days (hours) and 365 days (days), raw rows for 7 days: ask
    for a step whose source reaches back far enough, older steps read as no traffic."""
    if step_seconds <= 0:
        raise ValueError(f"a step is a positive number of seconds, not {step_seconds}")
    step = timedelta(seconds=step_seconds)
    first = _floor(_utc(start), step)
    count = max(0, math.ceil((_utc(end) - first) / step))
    resolution = next(
        (res for res in reversed(RESOLUTIONS) if step % RESOLUTIONS[res] == timedelta(0)), None
    )
    totals = await db.read(_series, connection_id, first, _utc(end), step, resolution)
    cells = [totals.get(index) or _Totals() for index in range(count)]
    return Series(
        start=first,
        step_seconds=step_seconds,
        requests=[cell.requests for cell in cells],
        failures=[cell.failures for cell in cells],
        avg_ms=[cell.avg_ms for cell in cells],
        p95_ms=[cell.p95_ms for cell in cells],
    )


# --- time ----------------------------------------------------------------------------------------


def _utc(moment: datetime) -> datetime:
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise ValueError(f"refusing a naive datetime {moment!r}; give it a time zone")
    return moment.astimezone(UTC)


def _floor(moment: datetime, step: timedelta) -> datetime:
    return EPOCH + ((moment - EPOCH) // step) * step


def _ceil(moment: datetime, step: timedelta) -> datetime:
    floor = _floor(moment, step)
    return floor if floor == moment else floor + step


class _EpochSeconds(FunctionElement[int]):
    """Whole seconds since 1970 of a UTC timestamp column, for grouping rows by time."""

    type = Integer()
    inherit_cache = True


@compiles(_EpochSeconds, "sqlite")
def _epoch_seconds_sqlite(element: _EpochSeconds, compiler: SQLCompiler, **kw: Any) -> str:
    # SQLite stores the naive UTC text SQLAlchemy writes; strftime('%s') reads it as UTC.
    return f"CAST(strftime('%s', {compiler.process(element.clauses, **kw)}) AS INTEGER)"


@compiles(_EpochSeconds, "postgresql")
def _epoch_seconds_postgresql(element: _EpochSeconds, compiler: SQLCompiler, **kw: Any) -> str:
    return f"CAST(FLOOR(EXTRACT(EPOCH FROM {compiler.process(element.clauses, **kw)})) AS BIGINT)"


def _step_index(column: Any, origin: datetime, step: timedelta) -> ColumnElement[int]:
    """SQL for the index of the step a timestamp falls in, counting from `origin`."""
    seconds = _EpochSeconds(column) - literal(int((origin - EPOCH).total_seconds()))
    return seconds // literal(int(step.total_seconds()))


# --- aggregation ---------------------------------------------------------------------------------


def _finer(level: str) -> str:
    return LEVELS[LEVELS.index(level) - 1]


def _coarser(level: str) -> str | None:
    position = LEVELS.index(level) + 1
    return LEVELS[position] if position < len(LEVELS) else None


def _padded(histogram: Iterable[int] | None) -> list[int]:
    counts = [int(count) for count in histogram or ()][:BUCKETS]
    return counts + [0] * (BUCKETS - len(counts))


@dataclass
class _Totals:
    """Counts over some rows or rollups; merges by addition (and max)."""

    requests: int = 0
    failures: int = 0
    refused: int = 0
    latency_total_ms: float = 0.0
    latency_max_ms: float = 0.0
    histogram: list[int] = field(default_factory=lambda: [0] * BUCKETS)
    checks: int = 0
    checks_ok: int = 0

    def add(self, other: _Totals) -> None:
        self.requests += other.requests
        self.failures += other.failures
        self.refused += other.refused
        self.latency_total_ms += other.latency_total_ms
        self.latency_max_ms = max(self.latency_max_ms, other.latency_max_ms)
        self.histogram = [a + b for a, b in zip(self.histogram, other.histogram, strict=True)]
        self.checks += other.checks
        self.checks_ok += other.checks_ok

    @property
    def avg_ms(self) -> float | None:
        return self.latency_total_ms / self.requests if self.requests else None

    @property
    def p50_ms(self) -> float | None:
        return percentile(self.histogram, 0.5, self.latency_max_ms) if self.requests else None

    @property
    def p95_ms(self) -> float | None:
        return percentile(self.histogram, 0.95, self.latency_max_ms) if self.requests else None

    def as_row(self, connection_id: int, resolution: str, start: datetime) -> dict[str, Any]:
        return {
            "connection_id": connection_id,
            "resolution": resolution,
            "bucket_start": start,
            "requests": self.requests,
            "failures": self.failures,
            "refused": self.refused,
            "latency_total_ms": self.latency_total_ms,
            "latency_max_ms": self.latency_max_ms,
            "histogram": self.histogram,
            "checks": self.checks,
            "checks_ok": self.checks_ok,
        }


def _bucket_expr() -> ColumnElement[int]:
    """SQL for a request-log row's histogram bucket; -1 for a refused call."""
    latency = RequestLogEntry.latency_ms
    return case(
        (RequestLogEntry.error_class == REFUSED_CLASS, -1),
        *((latency < edge, index) for index, edge in enumerate(LATENCY_EDGES_MS)),
        else_=len(LATENCY_EDGES_MS),
    )


def _raw_traffic(
    session: Session,
    keys: Sequence[ColumnElement[Any] | InstrumentedAttribute[Any]],
    where: Sequence[ColumnElement[bool]],
) -> dict[tuple[Any, ...], _Totals]:
    """Request-log rows matching `where`, totalled per value of `keys` in grouped SQL."""
    labelled = [key.label(f"key{n}") for n, key in enumerate(keys)]
    bucket = _bucket_expr().label("bucket")
    failed = case((RequestLogEntry.error_class.in_(FAILURE_CLASSES), 1), else_=0)
    statement = (
        select(
            *labelled,
            bucket,
            func.count(),
            func.sum(failed),
            func.sum(RequestLogEntry.latency_ms),
            func.max(RequestLogEntry.latency_ms),
        )
        .where(*where)
        .group_by(*labelled, bucket)
    )
    width = len(keys)
    totals: dict[tuple[Any, ...], _Totals] = {}
    for row in session.execute(statement):
        group = tuple(row[:width])
        index, count, failures, latency_total, latency_max = row[width:]
        cell = totals.setdefault(group, _Totals())
        if index < 0:
            cell.refused += count
            continue
        cell.requests += count
        cell.failures += int(failures or 0)
        cell.latency_total_ms += float(latency_total or 0.0)
        cell.latency_max_ms = max(cell.latency_max_ms, float(latency_max or 0.0))
        cell.histogram[index] += count
    return totals


def _raw_checks(
    session: Session,
    keys: Sequence[ColumnElement[Any] | InstrumentedAttribute[Any]],
    where: Sequence[ColumnElement[bool]],
) -> dict[tuple[Any, ...], tuple[int, int]]:
    """(checks, checks_ok) of the health checks matching `where`, per value of `keys`."""
    labelled = [key.label(f"key{n}") for n, key in enumerate(keys)]
    statement = (
        select(*labelled, func.count(), func.sum(case((HealthCheckRow.ok, 1), else_=0)))
        .where(*where)
        .group_by(*labelled)
    )
    width = len(keys)
    return {
        tuple(row[:width]): (int(row[width]), int(row[width + 1] or 0))
        for row in session.execute(statement)
    }


def _rollup_totals(
    session: Session,
    resolution: str,
    keys: Sequence[ColumnElement[Any] | InstrumentedAttribute[Any]],
    where: Sequence[ColumnElement[bool]],
) -> dict[tuple[Any, ...], _Totals]:
    """Rollups of one resolution matching `where`, added up per value of `keys`: the counts in
    grouped SQL, the histograms (JSON lists, which SQL cannot add portably) here."""
    r = MetricRollup
    labelled = [key.label(f"key{n}") for n, key in enumerate(keys)]
    matching = [r.resolution == resolution, *where]
    sums = (
        select(
            *labelled,
            func.sum(r.requests),
            func.sum(r.failures),
            func.sum(r.refused),
            func.sum(r.latency_total_ms),
            func.max(r.latency_max_ms),
            func.sum(r.checks),
            func.sum(r.checks_ok),
        )
        .where(*matching)
        .group_by(*labelled)
    )
    width = len(keys)
    totals: dict[tuple[Any, ...], _Totals] = {}
    for row in session.execute(sums):
        requests, failures, refused, latency_total, latency_max, checks, ok = row[width:]
        totals[tuple(row[:width])] = _Totals(
            requests=int(requests or 0),
            failures=int(failures or 0),
            refused=int(refused or 0),
            latency_total_ms=float(latency_total or 0.0),
            latency_max_ms=float(latency_max or 0.0),
            checks=int(checks or 0),
            checks_ok=int(ok or 0),
        )
    histograms = select(*labelled, r.histogram).where(*matching, r.requests > 0)
    for row in session.execute(histograms):
        target = totals[tuple(row[:width])].histogram
        for index, count in enumerate(row[width][:BUCKETS]):
            target[index] += count
    return totals


def _in_range(
    column: InstrumentedAttribute[datetime], start: datetime | None, end: datetime | None
) -> list[ColumnElement[bool]]:
    conditions: list[ColumnElement[bool]] = []
    if start is not None:
        conditions.append(column >= start)
    if end is not None:
        conditions.append(column < end)
    return conditions


def _known_connections() -> ColumnElement[bool]:
    # Rollups are keyed (connection_id, resolution, bucket_start): naming the connections lets
    # the primary key serve a query by resolution and time instead of a scan of the table.
    return MetricRollup.connection_id.in_(select(ProviderConnection.id))


# --- roll-up -------------------------------------------------------------------------------------


def _watermark(session: Session, resolution: str) -> datetime | None:
    value = get_state(session, WATERMARK[resolution])
    return datetime.fromisoformat(value).astimezone(UTC) if isinstance(value, str) else None


def _roll_chunk(session: Session, resolution: str, now: datetime) -> tuple[int, bool]:
    """Roll up the next chunk of `resolution` in one transaction; (rows written, caught up)."""
    width = RESOLUTIONS[resolution]
    if resolution == MINUTE:
        limit = _floor(now - GRACE, width)
    else:
        finer_until = _watermark(session, _finer(resolution))
        if finer_until is None:
            return 0, True
        limit = _floor(finer_until, width)
    start = _watermark(session, resolution)
    if start is not None and start >= limit:
        return 0, True
    # Skip empty stretches (an engine that was off for a week) in one step.
    upcoming = _first_data(session, resolution, start)
    if upcoming is None or upcoming >= limit:
        put_state(session, WATERMARK[resolution], limit.isoformat())
        return 0, True
    begin = _floor(upcoming, width)
    end = min(begin + CHUNK[resolution], limit)
    if resolution == MINUTE:
        end = min(end, _minute_after_rows(session, begin, CHUNK_ROWS))
        cells = _minute_cells(session, begin, end)
    else:
        cells = _coarser_cells(session, resolution, begin, end)
    session.execute(
        delete(MetricRollup).where(
            _known_connections(),
            MetricRollup.resolution == resolution,
            *_in_range(MetricRollup.bucket_start, start or begin, end),
        ),
        execution_options={"synchronize_session": False},
    )
    rows = [
        cell.as_row(connection_id, resolution, bucket_start)
        for (connection_id, bucket_start), cell in sorted(cells.items())
    ]
    if rows:
        # The table, not the mapped class: Core's executemany skips the ORM's bulk bookkeeping.
        session.execute(insert(MetricRollup.metadata.tables[MetricRollup.__tablename__]), rows)
    put_state(session, WATERMARK[resolution], end.isoformat())
    return len(rows), end >= limit


def _first_data(session: Session, resolution: str, start: datetime | None) -> datetime | None:
    """When the first thing to roll into `resolution` at or after `start` happened."""
    if resolution == MINUTE:
        firsts = [
            session.scalar(select(func.min(column)).where(*_in_range(column, start, None)))
            for column in (RequestLogEntry.at, HealthCheckRow.at)
        ]
        found = [first for first in firsts if first is not None]
        return min(found) if found else None
    return session.scalar(
        select(func.min(MetricRollup.bucket_start)).where(
            _known_connections(),
            MetricRollup.resolution == _finer(resolution),
            *_in_range(MetricRollup.bucket_start, start, None),
        )
    )


def _minute_after_rows(session: Session, start: datetime, rows: int) -> datetime:
    """The first minute boundary after `start` with about `rows` request-log rows before it (at
    least one minute, however many calls it had)."""
    later = session.scalar(
        select(RequestLogEntry.at)
        .where(RequestLogEntry.at >= start)
        .order_by(RequestLogEntry.at)
        .offset(rows)
        .limit(1)
    )
    minute = RESOLUTIONS[MINUTE]
    return (
        datetime.max.replace(tzinfo=UTC)
        if later is None
        else max(start + minute, _floor(later, minute))
    )


def _minute_cells(
    session: Session, start: datetime, end: datetime
) -> dict[tuple[int, datetime], _Totals]:
    minute = RESOLUTIONS[MINUTE]
    traffic = _raw_traffic(
        session,
        [RequestLogEntry.connection_id, _step_index(RequestLogEntry.at, EPOCH, minute)],
        [RequestLogEntry.connection_id.is_not(None), *_in_range(RequestLogEntry.at, start, end)],
    )
    checks = _raw_checks(
        session,
        [HealthCheckRow.connection_id, _step_index(HealthCheckRow.at, EPOCH, minute)],
        _in_range(HealthCheckRow.at, start, end),
    )
    cells: dict[tuple[int, datetime], _Totals] = {}
    for (connection_id, index), totals in traffic.items():
        cells[connection_id, EPOCH + index * minute] = totals
    for (connection_id, index), (count, ok) in checks.items():
        cell = cells.setdefault((connection_id, EPOCH + index * minute), _Totals())
        cell.checks, cell.checks_ok = count, ok
    return cells


def _coarser_cells(
    session: Session, resolution: str, start: datetime, end: datetime
) -> dict[tuple[int, datetime], _Totals]:
    width = RESOLUTIONS[resolution]
    found = _rollup_totals(
        session,
        _finer(resolution),
        [MetricRollup.connection_id, _step_index(MetricRollup.bucket_start, EPOCH, width)],
        [_known_connections(), *_in_range(MetricRollup.bucket_start, start, end)],
    )
    return {
        (connection_id, EPOCH + index * width): totals
        for (connection_id, index), totals in found.items()
    }


# --- retention -----------------------------------------------------------------------------------


def _cutoff(level: str, now: datetime, until: dict[str, datetime | None]) -> datetime | None:
    """Rows of `level` (RAW or a resolution) older than this may be deleted: older than the
    level is kept, and already rolled into the next level (whose watermark is in `until`).
    None: nothing may be deleted."""
    kept = RAW_KEPT if level == RAW else KEPT[level]
    coarser = _coarser(level)
    if coarser is None:
        return now - kept
    rolled = until[coarser]
    return None if rolled is None else min(now - kept, rolled)


def _delete_chunk(session: Session, target: str, now: datetime) -> int:
    """Delete up to DELETE_CHUNK rows of `target` (a raw table or a resolution) past retention."""
    level = target if target in RESOLUTIONS else RAW
    cutoff = _cutoff(level, now, {res: _watermark(session, res) for res in RESOLUTIONS})
    if cutoff is None:
        return 0
    statement: Delete
    if target == "request_log":
        statement = delete(RequestLogEntry).where(
            RequestLogEntry.id.in_(
                select(RequestLogEntry.id).where(RequestLogEntry.at < cutoff).limit(DELETE_CHUNK)
            )
        )
    elif target == "health_checks":
        statement = delete(HealthCheckRow).where(
            HealthCheckRow.id.in_(
                select(HealthCheckRow.id).where(HealthCheckRow.at < cutoff).limit(DELETE_CHUNK)
            )
        )
    else:
        key = (MetricRollup.connection_id, MetricRollup.resolution, MetricRollup.bucket_start)
        statement = delete(MetricRollup).where(
            tuple_(*key).in_(
                select(*key)
                .where(
                    _known_connections(),
                    MetricRollup.resolution == target,
                    MetricRollup.bucket_start < cutoff,
                )
                .limit(DELETE_CHUNK)
            )
        )
    # No session synchronization: nothing deleted here is loaded, and fetching the deleted keys
    # to look for it would cost more than the delete.
    result = session.execute(statement, execution_options={"synchronize_session": False})
    return int(getattr(result, "rowcount", 0) or 0)


# --- where figures come from ---------------------------------------------------------------------
#
# Every query reads each stretch of time from exactly one source, so nothing is counted twice:
#
#   day rollups up to the day watermark, hour rollups from there to the hour watermark, minute
#   rollups to the minute watermark, and raw rows from there to now (`_reads`).
#
# Each level is complete over that stretch: retention never deletes rows the next level has not
# taken in (`_cutoff`). The raw tail is the last minute or so, so recent calls are never missed,
# and a week's uptime reads 168 hour rollups per connection instead of 10 000 raw checks.
# A range that starts inside a rollup's bucket (today began at 23:00 UTC) takes that part from
# the finest level still kept for it (`_head`); one that starts before anything finer is kept
# (more than 30 days ago and not on a whole hour) starts at the next whole bucket.
# Rows stamped more than `GRACE` before they were written miss their minute's roll-up and are not
# counted once it is rolled up (the request log stamps a call when it ends and writes within a
# second; a second engine with a clock more than 10 s behind would lose some).


@dataclass(frozen=True)
class _Marks:
    """The watermarks, and from when each level is certain to be complete."""

    until: dict[str, datetime | None]
    now: datetime

    @classmethod
    def read(cls, session: Session, now: datetime) -> _Marks:
        return cls({res: _watermark(session, res) for res in RESOLUTIONS}, now)

    def complete_from(self, level: str) -> datetime | None:
        """Retention deletes nothing newer than its cut-off, and ran at `now` at the latest, so
        a level is complete from that cut-off on; None: nothing was ever deleted."""
        return _cutoff(level, self.now, self.until)


_Read = tuple[str, datetime, datetime]


def _reads(marks: _Marks, start: datetime, end: datetime, coarsest: str | None) -> list[_Read]:
    """(source, start, end) reads that cover [start, end) once, using rollups no coarser than
    `coarsest` (None: raw rows only). Rollups are read by the start of their bucket, and every
    rollup read starts and ends on a whole bucket."""
    levels = [] if coarsest is None else list(LEVELS[1 : LEVELS.index(coarsest) + 1])
    reads: list[_Read] = []
    low = start
    for res in reversed(levels):
        until = marks.until[res]
        if until is None:
            continue
        high = _floor(min(until, end), RESOLUTIONS[res])
        whole = _ceil(low, RESOLUTIONS[res])
        if whole >= high:
            continue
        if whole > low:
            reads.extend(_head(marks, res, low, whole))
        reads.append((res, whole, high))
        low = high
    if low < end:
        reads.append((RAW, low, end))
    return reads


def _head(marks: _Marks, coarser: str, start: datetime, end: datetime) -> list[_Read]:
    """Reads for [start, end), the part of a `coarser` bucket inside a range that starts
    mid-bucket: whole buckets of the finer levels still complete there, raw rows for the rest."""
    reads: list[_Read] = []
    for res in reversed(LEVELS[1 : LEVELS.index(coarser)]):
        until, complete = marks.until[res], marks.complete_from(res)
        whole = _ceil(start, RESOLUTIONS[res])
        if until is None or until < end or whole >= end:
            continue
        if complete is not None and complete > whole:
            continue
        reads.append((res, whole, end))
        end = whole
        if end == start:
            return reads
    reads.append((RAW, start, end))
    return reads


# --- summaries -----------------------------------------------------------------------------------


def _summaries(
    session: Session, ids: list[int], since: datetime, now: datetime
) -> dict[int, ConnectionSummary]:
    marks = _Marks.read(session, now)
    traffic = _traffic(session, ids, _reads(marks, since, now, DAY))
    uptime_checks = {
        name: _checks(session, ids, _reads(marks, now - length, now, DAY))
        for name, length in UPTIME_WINDOWS.items()
    }
    errors = _last_errors(session, ids, marks, now - RAW_KEPT, now)
    result: dict[int, ConnectionSummary] = {}
    for connection_id in ids:
        totals = traffic.get(connection_id) or _Totals()
        uptime: dict[str, float | None] = {}
        for name, found in uptime_checks.items():
            count, ok = found.get(connection_id, (0, 0))
            uptime[name] = ok / count if count else None
        result[connection_id] = ConnectionSummary(
            requests=totals.requests,
            failures=totals.failures,
            refused=totals.refused,
            success_rate=(
                (totals.requests - totals.failures) / totals.requests if totals.requests else None
            ),
            avg_ms=totals.avg_ms,
            p50_ms=totals.p50_ms,
            p95_ms=totals.p95_ms,
            last_error=errors.get(connection_id),
            uptime=uptime,
            checks_24h=uptime_checks["24h"].get(connection_id, (0, 0))[0],
        )
    return result


def _traffic(session: Session, ids: list[int], reads: list[_Read]) -> dict[int, _Totals]:
    totals: dict[int, _Totals] = {}
    for source, start, end in reads:
        if source == RAW:
            found = _raw_traffic(
                session,
                [RequestLogEntry.connection_id],
                [
                    RequestLogEntry.connection_id.in_(ids),
                    *_in_range(RequestLogEntry.at, start, end),
                ],
            )
            for (connection_id,), cell in found.items():
                totals.setdefault(connection_id, _Totals()).add(cell)
            continue
        found = _rollup_totals(
            session,
            source,
            [MetricRollup.connection_id],
            [
                MetricRollup.connection_id.in_(ids),
                *_in_range(MetricRollup.bucket_start, start, end),
            ],
        )
        for (connection_id,), cell in found.items():
            totals.setdefault(connection_id, _Totals()).add(cell)
    return totals


def _checks(session: Session, ids: list[int], reads: list[_Read]) -> dict[int, tuple[int, int]]:
    """(checks, checks_ok) per connection over the reads, in grouped SQL."""
    totals: dict[int, tuple[int, int]] = {}
    for source, start, end in reads:
        if source == RAW:
            found = [
                (connection_id, counts)
                for (connection_id,), counts in _raw_checks(
                    session,
                    [HealthCheckRow.connection_id],
                    [
                        HealthCheckRow.connection_id.in_(ids),
                        *_in_range(HealthCheckRow.at, start, end),
                    ],
                ).items()
            ]
        else:
            statement = (
                select(
                    MetricRollup.connection_id,
                    func.sum(MetricRollup.checks),
                    func.sum(MetricRollup.checks_ok),
                )
                .where(
                    MetricRollup.connection_id.in_(ids),
                    MetricRollup.resolution == source,
                    *_in_range(MetricRollup.bucket_start, start, end),
                )
                .group_by(MetricRollup.connection_id)
            )
            found = [
                (connection_id, (int(count or 0), int(ok or 0)))
                for connection_id, count, ok in session.execute(statement)
            ]
        for connection_id, (count, ok) in found:
            before = totals.get(connection_id, (0, 0))
            totals[connection_id] = (before[0] + count, before[1] + ok)
    return totals


_Windows = dict[tuple[datetime, datetime], list[int]]


def _last_errors(
    session: Session, ids: list[int], marks: _Marks, start: datetime, end: datetime
) -> dict[int, tuple[datetime, str, str]]:
    """The latest failed health check or failed call per connection within [start, end).

    Only raw rows have the details, but searching a week of them is slow: the raw tail not
    rolled up yet is searched first; for the connections without a failure there, the latest
    minute (else hour) rollup that saw one says which minute (hour) of raw rows to search."""
    found: dict[int, tuple[datetime, str, str]] = {}
    minute_until, hour_until = marks.until[MINUTE], marks.until[HOUR]
    tail = start if minute_until is None else max(start, minute_until)
    _find_failures(session, {(tail, end): ids}, found)
    for res, low, high in ((MINUTE, hour_until or start, tail), (HOUR, start, hour_until)):
        remaining = [connection_id for connection_id in ids if connection_id not in found]
        if not remaining or high is None:
            continue
        width = RESOLUTIONS[res]
        statement = (
            select(MetricRollup.connection_id, func.max(MetricRollup.bucket_start))
            .where(
                MetricRollup.connection_id.in_(remaining),
                MetricRollup.resolution == res,
                *_in_range(MetricRollup.bucket_start, _floor(max(low, start), width), high),
                or_(MetricRollup.failures > 0, MetricRollup.checks_ok < MetricRollup.checks),
            )
            .group_by(MetricRollup.connection_id)
        )
        windows: _Windows = {}
        for connection_id, bucket_start in session.execute(statement):
            window = (max(bucket_start, start), min(bucket_start + width, end))
            windows.setdefault(window, []).append(connection_id)
        _find_failures(session, windows, found)
    return found


def _find_failures(
    session: Session, windows: _Windows, found: dict[int, tuple[datetime, str, str]]
) -> None:
    """Put the latest failed check or failed call of each connection within its window of time
    into `found`, where it is later than what is there; two queries for all windows."""
    windows = {(low, high): ids for (low, high), ids in windows.items() if low < high}
    if not windows:
        return

    def keep(connection_id: int, when: datetime, error_class: str, detail: str) -> None:
        if connection_id not in found or when > found[connection_id][0]:
            found[connection_id] = (when, error_class, detail)

    check, call = HealthCheckRow, RequestLogEntry
    for connection_id, when, error_class, detail in _latest(
        session,
        check.connection_id,
        check.at,
        [check.error_class, check.detail],
        _within(windows, check.connection_id, check.at),
        check.ok.is_(False),
    ):
        keep(connection_id, when, error_class or "check_failed", detail)
    for connection_id, when, error_class, status in _latest(
        session,
        call.connection_id,
        call.at,
        [call.error_class, call.status_code],
        _within(windows, call.connection_id, call.at),
        call.error_class.in_(FAILURE_CLASSES),
    ):
        text = f"HTTP {status}" if status else _FAILURE_TEXT.get(error_class, error_class)
        keep(connection_id, when, error_class, text)


def _within(
    windows: _Windows, connection: InstrumentedAttribute[Any], at: InstrumentedAttribute[datetime]
) -> ColumnElement[bool]:
    return or_(
        *(
            and_(connection.in_(ids), *_in_range(at, low, high))
            for (low, high), ids in windows.items()
        )
    )


def _latest(
    session: Session,
    connection: InstrumentedAttribute[Any],
    at: InstrumentedAttribute[datetime],
    columns: list[InstrumentedAttribute[Any]],
    *where: ColumnElement[bool],
) -> list[Any]:
    """Per connection, the row with the greatest `at` among those matching `where`:
    (connection_id, at, *columns)."""
    latest = (
        select(connection.label("connection_id"), func.max(at).label("at"))
        .where(*where)
        .group_by(connection)
        .subquery()
    )
    statement = (
        select(connection, at, *columns)
        .join(latest, and_(connection == latest.c.connection_id, at == latest.c.at))
        .where(*where)
    )
    return list(session.execute(statement))


# --- series --------------------------------------------------------------------------------------


def _series(
    session: Session,
    connection_id: int,
    start: datetime,
    end: datetime,
    step: timedelta,
    resolution: str | None,
) -> dict[int, _Totals]:
    """Totals per step index over [start, end), from the sources `_reads` chooses."""
    cells: dict[int, _Totals] = {}
    for source, low, high in _reads(_Marks.read(session, end), start, end, resolution):
        if source == RAW:
            found = _raw_traffic(
                session,
                [_step_index(RequestLogEntry.at, start, step)],
                [
                    RequestLogEntry.connection_id == connection_id,
                    *_in_range(RequestLogEntry.at, low, high),
                ],
            )
            for (index,), cell in found.items():
                cells.setdefault(int(index), _Totals()).add(cell)
            continue
        found = _rollup_totals(
            session,
            source,
            [_step_index(MetricRollup.bucket_start, start, step)],
            [
                MetricRollup.connection_id == connection_id,
                *_in_range(MetricRollup.bucket_start, low, high),
            ],
        )
        for (index,), cell in found.items():
            cells.setdefault(int(index), _Totals()).add(cell)
    return cells
