"""Processing the inbox: each event reaches its handler once, its handler's work commits with
the "processed" mark or not at all, failures come back later and finally wait for a person."""

from __future__ import annotations

import random
from datetime import timedelta

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from app.domain.inbox import DEAD, FAILED, PROCESSED, RECEIVED, SKIPPED
from app.services import Services
from app.services.audit import record
from app.services.inbox import InboxEvent, IncomingEvent
from app.services.inbox_worker import MAX_ATTEMPTS, retry_delay
from app.store.audit import AuditRow
from app.store.base import utcnow

pytestmark = pytest.mark.both_databases  # the workers' claims differ by database


async def connection(services: Services) -> int:
    record = await services.connections.add("sandbox-payments", "Gateway", {}, {"api_key": "k"})
    return record.id


async def store(services: Services, connection_id: int, event_id: str, kind: str) -> None:
    await services.inbox.store(IncomingEvent(connection_id, event_id, kind, {}, b'{"ok": true}'))


def audit(session: Session, event: InboxEvent) -> None:
    """A handler with an effect in the database: one audit row per event handled."""
    record(session, "webhook", "event.handled", "event", event.id, None, {"event": event.id})


async def audit_rows(services: Services) -> int:
    def count(session: Session) -> int:
        return int(
            session.scalar(
                select(func.count()).select_from(AuditRow).where(AuditRow.action == "event.handled")
            )
            or 0
        )

    return await services.db.read(count)


async def statuses(services: Services) -> dict[str, str]:
    return {event.provider_event_id: event.status for event in await services.inbox.recent()}


@pytest.mark.asyncio
async def test_each_event_reaches_its_handler_once_and_is_marked_processed(
    services: Services,
) -> None:
    connection_id = await connection(services)
    services.inbox_worker.register("sandbox-payments", "payment.succeeded", audit)
    for number in range(3):
        await store(services, connection_id, f"evt_{number}", "payment.succeeded")
    outcome = await services.inbox_worker.process_due()
    assert outcome.processed == 3
    assert await audit_rows(services) == 3
    again = await services.inbox_worker.process_due()
    assert again.processed == 0
    assert await audit_rows(services) == 3
    assert set((await statuses(services)).values()) == {PROCESSED}


@pytest.mark.asyncio
async def test_an_event_nothing_acts_on_is_set_aside_as_skipped(services: Services) -> None:
    connection_id = await connection(services)
    await store(services, connection_id, "evt_1", "customer.updated")
    outcome = await services.inbox_worker.process_due()
    assert outcome.skipped == 1
    [event] = await services.inbox.recent()
    assert event.status == SKIPPED
    assert event.last_error == "nothing in Switchboard acts on this event"


@pytest.mark.asyncio
async def test_a_failing_handler_leaves_no_trace_and_its_neighbours_still_commit(
    services: Services,
) -> None:
    connection_id = await connection(services)

    def half_done_then_fails(session: Session, event: InboxEvent) -> None:
        audit(session, event)  # work that must not survive the failure
        if event.provider_event_id == "evt_bad":
            raise RuntimeError("the calendar said no")

    services.inbox_worker.register("sandbox-payments", "*", half_done_then_fails)
    for event_id in ("evt_a", "evt_bad", "evt_b"):
        await store(services, connection_id, event_id, "calendar.changed")
    outcome = await services.inbox_worker.process_due()
    assert (outcome.processed, outcome.failed) == (2, 1)
    assert await audit_rows(services) == 2
    assert await statuses(services) == {"evt_a": PROCESSED, "evt_bad": FAILED, "evt_b": PROCESSED}
    [bad] = await services.inbox.recent(status=FAILED)
    assert bad.attempts == 1
    assert bad.last_error == "RuntimeError: the calendar said no"


@pytest.mark.asyncio
async def test_a_failed_event_waits_longer_each_time_then_is_dead(services: Services) -> None:
    connection_id = await connection(services)

    def always_fails(_session: Session, _event: InboxEvent) -> None:
        raise RuntimeError("down")

    services.inbox_worker.register("sandbox-payments", "*", always_fails)
    await store(services, connection_id, "evt_1", "payment.failed")
    await services.inbox_worker.process_due()
    assert (await services.inbox_worker.process_due()).failed == 0  # not due yet
    later = utcnow()
    for _attempt in range(MAX_ATTEMPTS - 1):
        later += timedelta(hours=2)  # past any backoff
        await services.inbox_worker.process_due(now=later)
    [event] = await services.inbox.recent()
    assert event.status == DEAD
    assert event.attempts == MAX_ATTEMPTS
    assert (await services.inbox_worker.process_due(now=later + timedelta(days=30))).dead == 0


@pytest.mark.asyncio
async def test_a_replayed_dead_event_is_processed_once_its_cause_is_fixed(
    services: Services,
) -> None:
    connection_id = await connection(services)
    broken = {"yes": True}

    def fails_while_broken(session: Session, event: InboxEvent) -> None:
        if broken["yes"]:
            raise RuntimeError("down")
        audit(session, event)

    services.inbox_worker.register("sandbox-payments", "*", fails_while_broken)
    await store(services, connection_id, "evt_1", "payment.failed")
    later = utcnow()
    for _attempt in range(MAX_ATTEMPTS):
        await services.inbox_worker.process_due(now=later)
        later += timedelta(hours=2)
    [dead] = await services.inbox.recent(status=DEAD)
    broken["yes"] = False
    assert await services.inbox_worker.replay([dead.id, 999_999]) == 1
    assert (await statuses(services))["evt_1"] == RECEIVED
    assert (await services.inbox_worker.process_due()).processed == 1
    assert await audit_rows(services) == 1


@pytest.mark.asyncio
async def test_replaying_a_processed_event_runs_its_idempotent_handler_again(
    services: Services,
) -> None:
    connection_id = await connection(services)
    seen: list[str] = []
    services.inbox_worker.register(
        "sandbox-payments", "*", lambda _session, event: seen.append(event.provider_event_id)
    )
    await store(services, connection_id, "evt_1", "payment.succeeded")
    await services.inbox_worker.process_due()
    [event] = await services.inbox.recent()
    await services.inbox_worker.replay([event.id])
    await services.inbox_worker.process_due()
    assert seen == ["evt_1", "evt_1"]


def test_the_wait_doubles_from_five_seconds_up_to_an_hour_with_some_jitter() -> None:
    rng = random.Random(1)
    waits = [retry_delay(attempt, rng) for attempt in range(1, 14)]
    assert 3.75 <= waits[0] <= 5
    assert 7.5 <= waits[1] <= 10
    assert all(2700 <= wait <= 3600 for wait in waits[-2:])
