"""The request log: a row per provider call attempt, written in batches.

Records arrive from every provider call on the engine loop; writing each one in its own
transaction would make a busy provider a busy disk. They are collected and written together
(group commit) every half second or every few hundred rows, whichever comes first.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import func, insert, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from app.providers.http import RequestRecord
from app.services.events import EventHub
from app.store.database import Database
from app.store.integration import ProviderConnection, RequestLogEntry

log = logging.getLogger("switchboard.requests")

TOPIC = "requests"
FLUSH_SECONDS = 0.5
FLUSH_ROWS = 500


@dataclass(frozen=True)
class LoggedRequest:
    id: int
    at: datetime
    connection_id: int | None
    operation: str
    method: str
    url: str
    status_code: int | None
    latency_ms: float
    error_class: str | None
    attempt: int


class RequestLogWriter:
    """Publishes `requests` ({"count": rows written}) after each batch."""

    def __init__(
        self,
        db: Database,
        events: EventHub,
        flush_seconds: float = FLUSH_SECONDS,
        flush_rows: int = FLUSH_ROWS,
    ) -> None:
        self._db = db
        self._events = events
        self._flush_seconds = flush_seconds
        self._flush_rows = flush_rows
        self._pending: list[RequestRecord] = []
        self._timer: asyncio.TimerHandle | None = None
        self._writing: set[asyncio.Task[None]] = set()

    def add(self, record: RequestRecord) -> None:
        """Keep a record for the next batch (call on the engine loop)."""
        self._pending.append(record)
        if len(self._pending) >= self._flush_rows:
            self._start_flush()
        elif self._timer is None:
            self._timer = asyncio.get_running_loop().call_later(
                self._flush_seconds, self._start_flush
            )

    def _start_flush(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if not self._pending:
            return
        batch, self._pending = self._pending, []
        task = asyncio.get_running_loop().create_task(self._write(batch))
        self._writing.add(task)
        task.add_done_callback(self._writing.discard)

    async def _write(self, batch: Sequence[RequestRecord]) -> None:
        rows = [
            {
                "at": record.at,
                "connection_id": record.connection_id or None,
                "operation": record.operation,
                "method": record.method,
                "url": record.url[:2000],
                "status_code": record.status_code,
                "latency_ms": record.latency_ms,
                "error_class": record.error_class,
                "attempt": record.attempt,
            }
            for record in batch
        ]

        def write(session: Session) -> None:
            session.execute(insert(RequestLogEntry), rows)

        def write_known(session: Session) -> None:
            # A connection removed while its rows waited: keep the rows, unattributed.
            known = set(session.scalars(select(ProviderConnection.id)))
            for row in rows:
                if row["connection_id"] not in known:
                    row["connection_id"] = None
            session.execute(insert(RequestLogEntry), rows)

        try:
            try:
                await self._db.write(write)
            except IntegrityError:
                await self._db.write(write_known)
        except Exception:
            log.exception("request log batch lost", extra={"rows": len(rows)})
            return
        self._events.publish(TOPIC, {"count": len(rows)})

    async def flush(self) -> None:
        """Write everything collected so far and wait for it (at shutdown, and in tests)."""
        self._start_flush()
        if self._writing:
            await asyncio.gather(*self._writing)

    async def recent(
        self, connection_id: int | None = None, limit: int = 200, problems_only: bool = False
    ) -> list[LoggedRequest]:
        """The latest calls, newest first; `problems_only` keeps those without a good answer."""

        def query(session: Session) -> list[LoggedRequest]:
            statement = select(RequestLogEntry).order_by(RequestLogEntry.id.desc()).limit(limit)
            if connection_id is not None:
                statement = statement.where(RequestLogEntry.connection_id == connection_id)
            if problems_only:
                statement = statement.where(RequestLogEntry.error_class.is_not(None))
            return [
                LoggedRequest(
                    row.id,
                    row.at,
                    row.connection_id,
                    row.operation,
                    row.method,
                    row.url,
                    row.status_code,
                    row.latency_ms,
                    row.error_class,
                    row.attempt,
                )
                for row in session.scalars(statement)
            ]

        return await self._db.read(query)

    async def count_all(self) -> int:
        def query(session: Session) -> int:
            return int(session.scalar(select(func.count()).select_from(RequestLogEntry)) or 0)

        return await self._db.read(query)

    async def count_since(self, connection_id: int, since: datetime) -> int:
        def query(session: Session) -> int:
            return int(
                session.scalar(
                    select(func.count())
                    .select_from(RequestLogEntry)
                    .where(RequestLogEntry.connection_id == connection_id)
                    .where(RequestLogEntry.at >= since)
                )
                or 0
            )

        return await self._db.read(query)
