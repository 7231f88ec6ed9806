"""Connection health: scheduled checks, each connection's status, and alerts when one goes down,
recovers, or has its breaker open.

Statuses are damped so one lost packet does not page anyone: a connection is down after
`DOWN_AFTER` failed checks in a row (or at once when its breaker opens) and healthy again only
after `UP_AFTER` good ones. A "down" alert about one connection comes at most every `ALERT_GAP`;
falls in between are counted and told with the next one, so a flapping provider makes one
notice, not fifty. A recovery is always told when its fall was.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from app.providers.breaker import BreakerSnapshot, BreakerState
from app.services.connections import ConnectionRecord, ConnectionService
from app.services.domain_events import record_alert
from app.services.events import EventHub
from app.services.metrics import ConnectionSummary, summaries
from app.store.database import Database
from app.store.integration import AlertRow, HealthCheckRow

log = logging.getLogger("switchboard.health")

TOPIC_HEALTH = "health"
TOPIC_ALERTS = "alerts"
DOWN_AFTER = 2
UP_AFTER = 2
ALERT_GAP = timedelta(minutes=10)
CONCURRENT_CHECKS = 8


class Status(StrEnum):
    HEALTHY = "healthy"
    DEGRADED = "degraded"
    DOWN = "down"
    PAUSED = "paused"
    UNKNOWN = "unknown"


@dataclass(frozen=True)
class Check:
    connection_id: int
    at: datetime
    ok: bool
    latency_ms: float
    error_class: str | None
    detail: str


@dataclass(frozen=True)
class ConnectionHealth:
    """What the dashboard shows of one connection: its settings, status and traffic figures."""

    record: ConnectionRecord
    status: Status
    summary: ConnectionSummary | None


@dataclass(frozen=True)
class Alert:
    id: int
    at: datetime
    connection_id: int | None
    kind: str
    message: str
    seen: bool


@dataclass
class _Tracker:
    """What the status decision remembers about one connection."""

    status: Status = Status.UNKNOWN
    fails: int = 0
    oks: int = 0
    last_check: float = 0.0  # monotonic
    last_detail: str = ""
    breaker_open: bool = False
    down_since: datetime | None = None
    last_down_alert: datetime | None = None
    down_told: bool = False  # the current fall was alerted, so its recovery will be
    untold: int = 0  # falls inside ALERT_GAP that were not alerted


class HealthService:
    """Publishes `health` ({"id", "status"}) when a connection's status changes, and `alerts`
    ({"id", "kind", "message"}) for each alert raised."""

    def __init__(self, db: Database, events: EventHub, connections: ConnectionService) -> None:
        self._db = db
        self._events = events
        self._connections = connections
        self._trackers: dict[int, _Tracker] = {}
        self._limit = asyncio.Semaphore(CONCURRENT_CHECKS)
        self._running: set[int] = set()
        self._deciding: set[asyncio.Task[None]] = set()
        connections.on_breaker_change(self._breaker_changed)

    async def restore(self) -> None:
        """Take up each connection's status where the last checks left it (after a restart),
        instead of showing every connection as never checked."""

        def latest(session: Session) -> dict[int, list[bool]]:
            recent: dict[int, list[bool]] = {}
            rows = session.execute(
                select(HealthCheckRow.connection_id, HealthCheckRow.ok)
                .where(HealthCheckRow.at >= datetime.now(UTC) - timedelta(hours=1))
                .order_by(HealthCheckRow.id.desc())
            )
            for connection_id, ok in rows:
                found = recent.setdefault(connection_id, [])
                if len(found) < max(DOWN_AFTER, UP_AFTER):
                    found.append(ok)
            return recent

        for connection_id, newest_first in (await self._db.read(latest)).items():
            tracker = self._trackers.setdefault(connection_id, _Tracker())
            for ok in reversed(newest_first):
                tracker.oks, tracker.fails = (tracker.oks + 1, 0) if ok else (0, tracker.fails + 1)
            if tracker.fails >= DOWN_AFTER:
                tracker.status = Status.DOWN
            elif tracker.fails:
                tracker.status = Status.DEGRADED
            else:
                tracker.status = Status.HEALTHY

    # --- checks ---------------------------------------------------------------------------------

    async def check(self, connection_id: int) -> Check:
        """Run one health check now, store it, and update the connection's status."""
        provider = await self._connections.provider(connection_id)
        async with self._limit:
            result = await provider.check_health()
        check = Check(
            connection_id,
            datetime.now(UTC),
            result.ok,
            result.latency_ms,
            result.error_class,
            "" if result.ok else result.detail[:300],
        )

        def store(session: Session) -> None:
            session.add(
                HealthCheckRow(
                    connection_id=connection_id,
                    at=check.at,
                    ok=check.ok,
                    latency_ms=round(check.latency_ms, 3),
                    error_class=check.error_class,
                    detail=check.detail,
                )
            )

        await self._db.write(store)
        tracker = self._trackers.setdefault(connection_id, _Tracker())
        tracker.last_check = time.monotonic()
        if check.ok:
            tracker.oks, tracker.fails = tracker.oks + 1, 0
        else:
            tracker.fails, tracker.oks = tracker.fails + 1, 0
            tracker.last_detail = check.detail
        record = await self._connections.connection(connection_id)
        await self._decide(record, tracker)
        return check

    async def continue_from_history(self) -> None:
        """Take up the checks where the database says they stopped: when this engine becomes
        the leader of several sharing one database, each connection's next check comes one
        interval after its last one anywhere, not at once."""

        def query(session: Session) -> list[tuple[int, datetime]]:
            rows = session.execute(
                select(HealthCheckRow.connection_id, func.max(HealthCheckRow.at)).group_by(
                    HealthCheckRow.connection_id
                )
            )
            return [(connection_id, at) for connection_id, at in rows if at is not None]

        now, clock = datetime.now(UTC), time.monotonic()
        for connection_id, at in await self._db.read(query):
            tracker = self._trackers.setdefault(connection_id, _Tracker())
            tracker.last_check = max(tracker.last_check, clock - (now - at).total_seconds())

    async def check_due(self, records: Sequence[ConnectionRecord] | None = None) -> int:
        """Check every active connection whose interval has passed (the scheduler calls this
        every few seconds); returns how many were checked."""
        records = records if records is not None else await self._connections.connections()
        now = time.monotonic()
        due = []
        for record in records:
            tracker = self._trackers.setdefault(record.id, _Tracker())
            if record.paused:
                await self._decide(record, tracker)
                continue
            interval = record.health_interval or record.spec.health_interval
            if record.id not in self._running and now - tracker.last_check >= interval:
                due.append(record.id)
        await asyncio.gather(*(self._guarded_check(connection_id) for connection_id in due))
        return len(due)

    async def _guarded_check(self, connection_id: int) -> None:
        self._running.add(connection_id)
        try:
            await self.check(connection_id)
        except Exception:
            log.exception("health check could not run", extra={"connection": connection_id})
        finally:
            self._running.discard(connection_id)

    async def check_all(self) -> list[Check]:
        """Check every active connection now (the `health` command)."""
        records = [record for record in await self._connections.connections() if not record.paused]
        return list(await asyncio.gather(*(self.check(record.id) for record in records)))

    # --- status ---------------------------------------------------------------------------------

    async def overview(self, since: datetime) -> list[ConnectionHealth]:
        """Every connection with its status and its traffic since `since` (the start of the
        school's day), in one call for the dashboard."""
        records = await self._connections.connections()
        figures = await summaries(
            self._db, [record.id for record in records], since, datetime.now(UTC)
        )
        return [
            ConnectionHealth(
                record,
                Status.PAUSED if record.paused else self.status(record.id),
                figures.get(record.id),
            )
            for record in records
        ]

    def status(self, connection_id: int) -> Status:
        tracker = self._trackers.get(connection_id)
        return tracker.status if tracker else Status.UNKNOWN

    def statuses(self) -> dict[int, Status]:
        return {connection_id: tracker.status for connection_id, tracker in self._trackers.items()}

    async def _decide(self, record: ConnectionRecord, tracker: _Tracker) -> None:
        if record.paused:
            new = Status.PAUSED
        elif tracker.breaker_open or tracker.fails >= DOWN_AFTER:
            new = Status.DOWN
        elif tracker.status is Status.DOWN and tracker.oks < UP_AFTER:
            new = Status.DOWN  # not trusted again until it has answered UP_AFTER times
        elif tracker.fails:
            new = Status.DEGRADED
        elif tracker.oks:
            new = Status.HEALTHY
        else:
            new = tracker.status
        old = tracker.status
        if new is old:
            return
        tracker.status = new
        self._events.publish(TOPIC_HEALTH, {"id": record.id, "status": new.value})
        now = datetime.now(UTC)
        if new is Status.DOWN:
            tracker.down_since = now
            last = tracker.last_down_alert
            if last is not None and now - last < ALERT_GAP:
                tracker.untold += 1  # flapping: told with the next alert
                tracker.down_told = False
                return
            reason = tracker.last_detail or "its circuit breaker is open"
            message = f"{record.name} is down: {reason}"
            if tracker.untold:
                message += f" (It went down {tracker.untold} more times since the last notice.)"
                tracker.untold = 0
            tracker.last_down_alert, tracker.down_told = now, True
            await self._alert(record, "down", message)
        elif old is Status.DOWN and new is Status.HEALTHY and tracker.down_told:
            tracker.down_told = False
            minutes = (now - tracker.down_since).total_seconds() / 60 if tracker.down_since else 0
            await self._alert(
                record, "recovered", f"{record.name} has recovered after {minutes:.0f} min."
            )

    def _breaker_changed(
        self, connection_id: int, endpoint: str, snapshot: BreakerSnapshot
    ) -> None:
        if endpoint:
            return  # an endpoint's breaker does not make the whole connection down
        tracker = self._trackers.setdefault(connection_id, _Tracker())
        opened = snapshot.state in (BreakerState.OPEN, BreakerState.FORCED_OPEN)
        if opened == tracker.breaker_open:
            return
        tracker.breaker_open = opened
        if opened:
            tracker.last_detail = f"its circuit breaker opened ({snapshot.reason})"

        async def decide() -> None:
            try:
                record = await self._connections.connection(connection_id)
            except Exception:
                return  # removed meanwhile
            await self._decide(record, tracker)

        task = asyncio.get_running_loop().create_task(decide())
        self._deciding.add(task)
        task.add_done_callback(self._deciding.discard)

    # --- alerts ---------------------------------------------------------------------------------

    async def _alert(self, record: ConnectionRecord, kind: str, message: str) -> None:
        now = datetime.now(UTC)

        def store(session: Session) -> int:
            row = AlertRow(at=now, connection_id=record.id, kind=kind, message=message)
            session.add(row)
            session.flush()
            record_alert(session, row, record.name)
            return row.id

        alert_id = await self._db.write(store)
        log.warning("alert: %s", message, extra={"connection": record.id, "kind": kind})
        self._events.publish(
            TOPIC_ALERTS,
            {"id": alert_id, "kind": kind, "message": message, "connection": record.id},
        )

    async def alerts(self, limit: int = 50, unseen_only: bool = False) -> list[Alert]:
        def query(session: Session) -> list[Alert]:
            statement = select(AlertRow).order_by(AlertRow.id.desc()).limit(limit)
            if unseen_only:
                statement = statement.where(AlertRow.seen.is_(False))
            return [
                Alert(row.id, row.at, row.connection_id, row.kind, row.message, row.seen)
                for row in session.scalars(statement)
            ]

        return await self._db.read(query)

    async def mark_seen(self) -> None:
        def write(session: Session) -> None:
            session.execute(update(AlertRow).where(AlertRow.seen.is_(False)).values(seen=True))

        await self._db.write(write)
        self._events.publish(TOPIC_ALERTS, {"seen": True})
