"""The webhook inbox: every event a provider sent and we acknowledged, kept until processed.

An event is committed to disk before its sender hears "200" (SQLite with `synchronous=FULL`),
so an acknowledged event survives a crash or a power cut. Paying one disk flush per request
would cap the receiver at a few hundred events a second, so requests that arrive while a write
is under way wait and go to disk together in the next transaction (group commit): one flush
for many events, and at low rates no added delay at all.

Events are deduplicated on (connection, the provider's event id): providers deliver at least
once and repeat whatever they did not see acknowledged, and a repeat is answered "200" again
but stored and processed only once.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import func, insert, select, tuple_
from sqlalchemy.orm import Session

from app.domain.inbox import RECEIVED
from app.services.events import EventHub
from app.store.base import utcnow
from app.store.database import Database
from app.store.integration import ProviderConnection, WebhookInboxEntry

log = logging.getLogger("switchboard.inbox")

TOPIC = "inbox"
BATCH_MAX = 1000  # events in one transaction at most


@dataclass(frozen=True)
class IncomingEvent:
    connection_id: int
    provider_event_id: str
    event_type: str
    headers: Mapping[str, str]
    body: bytes
    received_at: datetime = field(default_factory=utcnow)


@dataclass(frozen=True)
class InboxEvent:
    id: int
    connection_id: int
    provider_event_id: str
    event_type: str
    received_at: datetime
    status: str
    attempts: int
    last_error: str | None
    processed_at: datetime | None
    headers: dict[str, Any]
    body: bytes


@dataclass(frozen=True)
class EventRow:
    """An event as a list shows it (without its body and headers)."""

    id: int
    connection_id: int
    provider_event_id: str
    event_type: str
    received_at: datetime
    status: str
    attempts: int
    last_error: str | None


@dataclass(frozen=True)
class EventFilter:
    connection_id: int | None = None
    status: str | None = None
    type_contains: str = ""
    since: datetime | None = None


@dataclass(frozen=True)
class EventPage:
    rows: list[EventRow]
    total: int  # events matching the filter, all pages
    offset: int


class ConnectionGone(Exception):
    """The event's connection was removed before the event could be stored."""


class InboxUnavailable(Exception):
    """The events could not be written: nothing was acknowledged, the sender will retry."""


class Inbox:
    """Publishes `inbox` ({"count": events newly stored}) after each batch."""

    def __init__(self, db: Database, events: EventHub, batch_max: int = BATCH_MAX) -> None:
        self._db = db
        self._events = events
        self._batch_max = batch_max
        self._waiting: list[tuple[IncomingEvent, asyncio.Future[bool]]] = []
        self._writer: asyncio.Task[None] | None = None
        self._stored_listeners: list[Callable[[], None]] = []

    def on_stored(self, listener: Callable[[], None]) -> None:
        """Be told (on the loop) when new events are on disk."""
        self._stored_listeners.append(listener)

    async def store(self, event: IncomingEvent) -> bool:
        """Commit the event to disk; True when it was new, False for a repeat of one already
        stored. Raises InboxUnavailable when it could not be written (answer with an error so
        the provider sends it again)."""
        future: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self._waiting.append((event, future))
        if self._writer is None:
            self._writer = asyncio.get_running_loop().create_task(self._write_all())
        # Shielded: a sender that hangs up must not cancel the write its neighbours wait on.
        return await asyncio.shield(future)

    async def _write_all(self) -> None:
        try:
            while self._waiting:
                batch = self._waiting[: self._batch_max]
                del self._waiting[: self._batch_max]
                try:
                    fresh = await self._db.write(_insert, [event for event, _ in batch])
                except Exception as exc:
                    log.exception("inbox write failed", extra={"events": len(batch)})
                    for _, future in batch:
                        if not future.done():
                            future.set_exception(InboxUnavailable(str(exc)))
                    continue
                for (_, future), new in zip(batch, fresh, strict=True):
                    if future.done():
                        continue
                    if new is None:
                        future.set_exception(ConnectionGone())
                    else:
                        future.set_result(new)
                stored = sum(1 for new in fresh if new)
                if stored:
                    self._events.publish(TOPIC, {"count": stored})
                    for listener in self._stored_listeners:
                        listener()
        finally:
            self._writer = None

    async def drain(self) -> None:
        """Wait until every event handed in so far is on disk (shutdown, tests)."""
        while self._writer is not None:
            await asyncio.shield(self._writer)

    # --- reading --------------------------------------------------------------------------------

    async def count(self, connection_id: int | None = None, status: str | None = None) -> int:
        def query(session: Session) -> int:
            statement = select(func.count()).select_from(WebhookInboxEntry)
            if connection_id is not None:
                statement = statement.where(WebhookInboxEntry.connection_id == connection_id)
            if status is not None:
                statement = statement.where(WebhookInboxEntry.status == status)
            return int(session.scalar(statement) or 0)

        return await self._db.read(query)

    async def recent(
        self, connection_id: int | None = None, status: str | None = None, limit: int = 100
    ) -> list[InboxEvent]:
        """The latest events, newest first."""

        def query(session: Session) -> list[InboxEvent]:
            statement = select(WebhookInboxEntry).order_by(WebhookInboxEntry.id.desc())
            if connection_id is not None:
                statement = statement.where(WebhookInboxEntry.connection_id == connection_id)
            if status is not None:
                statement = statement.where(WebhookInboxEntry.status == status)
            return [inbox_event(row) for row in session.scalars(statement.limit(limit))]

        return await self._db.read(query)

    async def page(self, where: EventFilter, offset: int = 0, limit: int = 500) -> EventPage:
        """One page of the events matching `where`, newest first, and how many match in all:
        a list of 100 000 events is read a page at a time, never whole."""

        def query(session: Session) -> EventPage:
            conditions = _conditions(where)
            total = session.scalar(
                select(func.count()).select_from(WebhookInboxEntry).where(*conditions)
            )
            rows = session.execute(
                select(
                    WebhookInboxEntry.id,
                    WebhookInboxEntry.connection_id,
                    WebhookInboxEntry.provider_event_id,
                    WebhookInboxEntry.event_type,
                    WebhookInboxEntry.received_at,
                    WebhookInboxEntry.status,
                    WebhookInboxEntry.attempts,
                    WebhookInboxEntry.last_error,
                )
                .where(*conditions)
                .order_by(WebhookInboxEntry.id.desc())
                .offset(max(offset, 0))
                .limit(limit)
            )
            return EventPage([EventRow(*row) for row in rows], int(total or 0), max(offset, 0))

        return await self._db.read(query)

    async def per_minute(
        self, since: datetime, connection_id: int | None = None
    ) -> list[tuple[datetime, int]]:
        """Events received in each minute since `since` (minutes without any left out)."""

        def query(session: Session) -> list[tuple[datetime, int]]:
            # Stored as ISO text in SQLite: its first 16 characters name the minute.
            minute = func.substr(WebhookInboxEntry.received_at, 1, 16)
            statement = (
                select(minute, func.count())
                .where(WebhookInboxEntry.received_at >= since)
                .group_by(minute)
                .order_by(minute)
            )
            if connection_id is not None:
                statement = statement.where(WebhookInboxEntry.connection_id == connection_id)
            return [
                (datetime.fromisoformat(f"{text}:00").replace(tzinfo=UTC), int(count))
                for text, count in session.execute(statement)
            ]

        return await self._db.read(query)

    async def event(self, event_id: int) -> InboxEvent | None:
        def query(session: Session) -> InboxEvent | None:
            row = session.get(WebhookInboxEntry, event_id)
            return inbox_event(row) if row is not None else None

        return await self._db.read(query)


def _insert(session: Session, events: Sequence[IncomingEvent]) -> list[bool | None]:
    """Insert the batch, skipping events already stored or repeated within it; for each, in
    order, whether it was new (None: its connection was removed meanwhile, so it cannot be
    kept, and one such event must not fail the others). The write transaction holds the
    database's write lock, so no other writer can change anything between look and insert."""
    wanted = {event.connection_id for event in events}
    present = set(
        session.scalars(select(ProviderConnection.id).where(ProviderConnection.id.in_(wanted)))
    )
    keys = [(event.connection_id, event.provider_event_id) for event in events]
    stored: set[tuple[int, str]] = {
        (connection_id, event_id)
        for connection_id, event_id in session.execute(
            select(WebhookInboxEntry.connection_id, WebhookInboxEntry.provider_event_id).where(
                tuple_(WebhookInboxEntry.connection_id, WebhookInboxEntry.provider_event_id).in_(
                    set(keys)
                )
            )
        )
    }
    new: list[bool | None] = []
    rows: list[dict[str, Any]] = []
    for key, event in zip(keys, events, strict=True):
        if event.connection_id not in present:
            new.append(None)
            continue
        fresh = key not in stored
        new.append(fresh)
        if fresh:
            stored.add(key)
            rows.append(
                {
                    "connection_id": event.connection_id,
                    "provider_event_id": event.provider_event_id,
                    "event_type": event.event_type,
                    "received_at": event.received_at,
                    "headers": dict(event.headers),
                    "body": event.body,
                    "status": RECEIVED,
                    "attempts": 0,
                    "next_attempt_at": event.received_at,
                }
            )
    if rows:
        session.execute(insert(WebhookInboxEntry), rows)
    return new


def _conditions(where: EventFilter) -> list[Any]:
    conditions: list[Any] = []
    if where.connection_id is not None:
        conditions.append(WebhookInboxEntry.connection_id == where.connection_id)
    if where.status is not None:
        conditions.append(WebhookInboxEntry.status == where.status)
    if where.type_contains.strip():
        pattern = where.type_contains.strip().replace("\\", "\\\\").replace("%", "\\%")
        pattern = pattern.replace("_", "\\_")
        conditions.append(WebhookInboxEntry.event_type.ilike(f"%{pattern}%", escape="\\"))
    if where.since is not None:
        conditions.append(WebhookInboxEntry.received_at >= where.since)
    return conditions


def inbox_event(row: WebhookInboxEntry) -> InboxEvent:
    return InboxEvent(
        id=row.id,
        connection_id=row.connection_id,
        provider_event_id=row.provider_event_id,
        event_type=row.event_type,
        received_at=row.received_at,
        status=row.status,
        attempts=row.attempts,
        last_error=row.last_error,
        processed_at=row.processed_at,
        headers=dict(row.headers),
        body=row.body,
    )
