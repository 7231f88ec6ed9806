"""Processing the inbox: each stored event handed to its handler, exactly once.

A handler runs inside the same database transaction that marks its event processed (the
transactional inbox): either both happen or neither, so a crash between "done" and "marked"
cannot make an event count twice. A handler that needs the outside world (a calendar to sync,
a message to send) records that in the same transaction, for the outbox to deliver. Engines
sharing one database each lock the batch they take (`FOR UPDATE SKIP LOCKED`), so two never
handle one event; a process that dies mid-batch holds nothing afterwards (its transaction is
rolled back and its locks go with its connection), so nothing waits for a lease.

A handler that fails is tried again later, waiting longer each time (exponential backoff with
jitter, up to an hour); after `MAX_ATTEMPTS` the event is dead and waits for a person, who can
replay it once the cause is fixed. Handlers are idempotent and must tolerate events out of
order: providers promise neither once-only nor in-order delivery.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import or_, select, update
from sqlalchemy.orm import Session

from app.domain.access import Permission
from app.domain.inbox import DEAD, FAILED, PROCESSED, RECEIVED, SKIPPED
from app.services import access, audit
from app.services.events import EventHub
from app.services.inbox import TOPIC, InboxEvent, inbox_event
from app.store.base import utcnow
from app.store.database import Database
from app.store.integration import ProviderConnection, WebhookInboxEntry

log = logging.getLogger("switchboard.inbox")

MAX_ATTEMPTS = 8
FIRST_RETRY_SECONDS = 5.0
LONGEST_RETRY_SECONDS = 3600.0
BATCH = 500
NOTHING_ACTS = "nothing in Switchboard acts on this event"
POLL_SECONDS = 5.0
GATHER_SECONDS = 0.2  # retries come due without anyone waking the worker

# (session, event): runs inside the transaction that marks the event processed.
Handler = Callable[[Session, InboxEvent], None]


@dataclass(frozen=True)
class Outcome:
    processed: int = 0
    skipped: int = 0
    failed: int = 0
    dead: int = 0


def retry_delay(attempts: int, rng: random.Random | None = None) -> float:
    """Seconds before attempt `attempts + 1`: doubling from 5 s, capped at an hour, with up to
    a quarter of jitter so events that failed together do not all come back together."""
    base = min(LONGEST_RETRY_SECONDS, FIRST_RETRY_SECONDS * 2.0 ** max(attempts - 1, 0))
    return base * (1 - 0.25 * (rng or random).random())


class InboxWorker:
    def __init__(self, db: Database, events: EventHub) -> None:
        self._db = db
        self._events = events
        self._handlers: dict[tuple[str, str], Handler] = {}
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def register(self, provider_kind: str, event_type: str, handler: Handler) -> None:
        """Handle a provider kind's events of one type ("*": every type without its own)."""
        self._handlers[(provider_kind, event_type)] = handler

    def wake(self) -> None:
        """New events are in the inbox (call on the services' loop)."""
        self._wake.set()

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name="inbox-worker")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _run(self) -> None:
        while True:
            try:
                outcome = await self.process_due()
            except Exception:
                log.exception("inbox processing failed; trying again shortly")
                outcome = Outcome()
            if outcome.processed + outcome.skipped + outcome.failed + outcome.dead >= BATCH:
                continue  # more may be waiting
            # A short pause before looking again, so a stream of arrivals is taken in batches
            # rather than a database round trip for every few events.
            await asyncio.sleep(GATHER_SECONDS)
            if self._wake.is_set():
                self._wake.clear()
                continue
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), POLL_SECONDS)
            self._wake.clear()

    async def process_due(self, now: datetime | None = None) -> Outcome:
        """Process a batch of the events that are due (new, or failed and waiting long
        enough) in one transaction: one handler failing rolls back only its own event's work.
        Several engines on one database each take a different batch (the rows are claimed
        with FOR UPDATE SKIP LOCKED), so no event is handled twice."""
        statuses = await self._db.write(_process, now or utcnow(), BATCH, dict(self._handlers))
        if not statuses:
            return Outcome()
        for event_id, status in statuses.items():
            if status in (FAILED, DEAD):
                log.warning("event handler failed", extra={"event": event_id, "status": status})
        self._events.publish(TOPIC, {"processed": len(statuses)})
        found = list(statuses.values())
        return Outcome(*(found.count(status) for status in (PROCESSED, SKIPPED, FAILED, DEAD)))

    async def replay(self, event_ids: Iterable[int]) -> int:
        """Process these events again (a dead one after its cause was fixed, or any to check
        what it does; handlers are idempotent). How many were found. A person's decision (the
        events arriving from providers are not: they are processed without asking)."""
        access.require(Permission.REPLAY_EVENTS)
        who = access.actor()
        count = await self._db.write(_replay, list(event_ids), who)
        self.wake()
        return count


def _process(
    session: Session, now: datetime, limit: int, handlers: Mapping[tuple[str, str], Handler]
) -> dict[int, str]:
    """Claim up to `limit` due events and handle each: those nothing acts on are set aside in
    one statement. Each event's status, by id."""
    due = session.execute(
        select(WebhookInboxEntry, ProviderConnection.kind)
        .join(ProviderConnection, ProviderConnection.id == WebhookInboxEntry.connection_id)
        .where(
            WebhookInboxEntry.status.in_((RECEIVED, FAILED)),
            or_(
                WebhookInboxEntry.next_attempt_at.is_(None),
                WebhookInboxEntry.next_attempt_at <= now,
            ),
        )
        .order_by(WebhookInboxEntry.id)
        .limit(limit)
        # Only the events are locked (not their connection, which every other event shares):
        # another engine's worker skips these and takes the next ones.
        .with_for_update(skip_locked=True, of=WebhookInboxEntry)
    ).all()
    statuses: dict[int, str] = {}
    unhandled: list[int] = []
    for row, kind in due:
        handler = handlers.get((kind, row.event_type)) or handlers.get((kind, "*"))
        if handler is None:
            unhandled.append(row.id)
        else:
            statuses[row.id] = _apply(session, row, handler)
    if unhandled:
        session.execute(
            update(WebhookInboxEntry)
            .where(WebhookInboxEntry.id.in_(unhandled))
            .values(
                status=SKIPPED,
                attempts=WebhookInboxEntry.attempts + 1,
                processed_at=utcnow(),
                next_attempt_at=None,
                last_error=NOTHING_ACTS,
            )
            .execution_options(synchronize_session=False)
        )
        statuses.update(dict.fromkeys(unhandled, SKIPPED))
    return statuses


def _apply(session: Session, row: WebhookInboxEntry, handler: Handler) -> str:
    row.attempts += 1
    try:
        with session.begin_nested():  # the handler's work, undone alone if it fails
            handler(session, inbox_event(row))
    except Exception as exc:
        row.status = DEAD if row.attempts >= MAX_ATTEMPTS else FAILED
        row.last_error = f"{type(exc).__name__}: {exc}"[:500]
        delay = timedelta(seconds=retry_delay(row.attempts))
        row.next_attempt_at = None if row.status == DEAD else utcnow() + delay
        return row.status
    row.status, row.last_error = PROCESSED, None
    row.processed_at = utcnow()
    row.next_attempt_at = None
    return row.status


def _replay(session: Session, event_ids: list[int], who: str) -> int:
    rows = session.execute(
        select(
            WebhookInboxEntry.id,
            WebhookInboxEntry.connection_id,
            WebhookInboxEntry.event_type,
            WebhookInboxEntry.status,
            WebhookInboxEntry.attempts,
        )
        .where(WebhookInboxEntry.id.in_(event_ids))
        .order_by(WebhookInboxEntry.id)
    ).all()
    found = [row.id for row in rows]
    for row in rows:
        audit.record(
            session,
            who,
            "event.replayed",
            "event",
            row.id,
            {
                "connection": row.connection_id,
                "event_type": row.event_type,
                "status": row.status,
                "attempts": row.attempts,
            },
            {"status": RECEIVED, "attempts": 0},
        )
    session.execute(
        update(WebhookInboxEntry)
        .where(WebhookInboxEntry.id.in_(found))
        .values(status=RECEIVED, attempts=0, next_attempt_at=utcnow(), processed_at=None)
    )
    return len(found)
