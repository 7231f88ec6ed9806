"""When calendars are synced: one job per calendar connection on the engine's scheduler, under
a fixed id, kept in step with the connections; a notice from a calendar brings its sync
forward; after the computer slept, every calendar is synced shortly."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from apscheduler.schedulers.asyncio import AsyncIOScheduler

from app.services import Services
from app.services.calendar_schedule import (
    MISFIRE_GRACE,
    WAKE_DELAY,
    CalendarSchedule,
    WakeWatch,
    job_id,
)


class Clocks:
    """A wall clock and a monotonic one, moved by hand."""

    def __init__(self) -> None:
        self.wall, self.monotonic = 1_000_000.0, 50.0

    def tick(self, seconds: float, *, slept: float = 0.0) -> None:
        self.wall += seconds + slept  # while asleep only the wall clock moves
        self.monotonic += seconds


def test_a_wall_clock_that_ran_ahead_of_the_monotonic_one_means_the_computer_slept() -> None:
    clocks = Clocks()
    watch = WakeWatch(lambda: clocks.wall, lambda: clocks.monotonic)

    clocks.tick(30)
    assert not watch.slept()
    clocks.tick(30, slept=60)  # a minute's drift: not sleep (an NTP step, say)
    assert not watch.slept()
    clocks.tick(30, slept=45 * 60)
    assert watch.slept()
    clocks.tick(30)
    assert not watch.slept()  # said once


@pytest.fixture
async def scheduler() -> Any:
    running = AsyncIOScheduler(timezone="UTC")
    running.start(paused=True)  # jobs are registered and inspected, never run here
    yield running
    running.shutdown(wait=False)


async def calendar(services: Services, name: str) -> int:
    record = await services.connections.add(
        "caldav",
        name,
        {"calendar_url": "https://dav.example.org/cal/", "teacher": "T-1"},
        {},
    )
    return record.id


async def test_each_calendar_connection_gets_one_job_under_a_fixed_id(
    services: Services, scheduler: AsyncIOScheduler
) -> None:
    first = await calendar(services, "Ms Moyo's calendar")
    second = await calendar(services, "Mr Ncube's calendar")
    await services.connections.add("sandbox-payments", "Cards", {}, {"api_key": "k"})
    ran: list[int] = []

    async def sync(connection_id: int) -> None:
        ran.append(connection_id)

    schedule = CalendarSchedule(scheduler, services.connections, services.settings, sync)

    assert sorted(await schedule.register()) == sorted([first, second])
    jobs = {job.id: job for job in scheduler.get_jobs()}
    assert set(jobs) == {job_id(first), job_id(second)}  # none for the payment gateway
    job = jobs[job_id(first)]
    assert job.trigger.interval == timedelta(minutes=5)
    assert (job.coalesce, job.max_instances) == (True, 1)
    assert job.misfire_grace_time == MISFIRE_GRACE.total_seconds()
    assert job.args == (first,)

    await services.settings.set("calendar.sync_minutes", 15)
    await services.connections.remove(second)
    await schedule.register()  # again, as the engine does when connections change
    jobs = {job.id: job for job in scheduler.get_jobs()}
    assert set(jobs) == {job_id(first)}
    assert jobs[job_id(first)].trigger.interval == timedelta(minutes=15)


async def test_a_notice_brings_the_sync_forward_and_waking_up_brings_every_one(
    services: Services, scheduler: AsyncIOScheduler
) -> None:
    first = await calendar(services, "Ms Moyo's calendar")
    second = await calendar(services, "Mr Ncube's calendar")
    clocks = Clocks()

    async def sync(connection_id: int) -> None:
        return None

    schedule = CalendarSchedule(
        scheduler,
        services.connections,
        services.settings,
        sync,
        watch=WakeWatch(lambda: clocks.wall, lambda: clocks.monotonic),
    )
    await schedule.register()

    assert schedule.nudge(first)
    soon = datetime.now(UTC) + timedelta(seconds=5)
    assert scheduler.get_job(job_id(first)).next_run_time < soon
    assert not schedule.nudge(999)  # no such calendar

    clocks.tick(30, slept=3 * 3600)
    assert schedule.check_wake()
    for connection in (first, second):
        at = scheduler.get_job(job_id(connection)).next_run_time
        assert at <= datetime.now(UTC) + WAKE_DELAY
