"""When calendars are synced: a job per calendar connection on the engine's scheduler (every few
minutes, under a fixed id, re-registered at every start and whenever connections change), a
sync soon after a calendar says it changed, and a catch-up after the computer slept.

A laptop that slept misses its runs; APScheduler runs a missed job once on waking (coalesced)
within its grace time, but only when its loop notices. `WakeWatch` notices sooner and from the
clocks alone: while the computer sleeps the monotonic clock stands still and the wall clock
does not, so a wall clock that moved several minutes more than the monotonic one means it slept.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from apscheduler.schedulers.base import BaseScheduler

from app.providers.calendar import CALENDAR
from app.services.connections import ConnectionService
from app.services.settings import SettingsService

log = logging.getLogger("switchboard.calendar_sync")

JOB_PREFIX = "calendar-sync:"
NUDGE_DELAY = timedelta(seconds=2)  # a calendar's notification: sync just after it
WAKE_JUMP = 180.0  # seconds the wall clock ran ahead of the monotonic one: the computer slept
WAKE_DELAY = timedelta(seconds=20)  # after waking, the network needs a moment
WAKE_CHECK = timedelta(seconds=30)
MISFIRE_GRACE = timedelta(hours=12)


def job_id(connection_id: int) -> str:
    return f"{JOB_PREFIX}{connection_id}"


class WakeWatch:
    """Tells when the computer slept since it was last asked (see the module's docstring)."""

    def __init__(
        self,
        wall: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
        jump: float = WAKE_JUMP,
    ) -> None:
        self._wall, self._monotonic, self._jump = wall, monotonic, jump
        self._last = (wall(), monotonic())

    def slept(self) -> bool:
        wall, monotonic = self._wall(), self._monotonic()
        last_wall, last_monotonic = self._last
        self._last = (wall, monotonic)
        return (wall - last_wall) - (monotonic - last_monotonic) > self._jump


class CalendarSchedule:
    """Keeps one sync job per calendar connection on `scheduler`; `sync(connection_id)` is
    what a job runs."""

    def __init__(
        self,
        scheduler: BaseScheduler,
        connections: ConnectionService,
        settings: SettingsService,
        sync: Callable[[int], Awaitable[Any]],
        *,
        watch: WakeWatch | None = None,
    ) -> None:
        self._scheduler = scheduler
        self._connections = connections
        self._settings = settings
        self._sync = sync
        self._watch = watch or WakeWatch()

    async def register(self) -> list[int]:
        """A job for every calendar connection (none for the others), replacing what was
        there; the ids of the calendar connections."""
        minutes = int(self._settings.get("calendar.sync_minutes"))
        calendars = [
            record
            for record in await self._connections.connections()
            if CALENDAR in record.spec.capabilities
        ]
        wanted = {job_id(record.id): record for record in calendars}
        for job in self._scheduler.get_jobs():
            if job.id.startswith(JOB_PREFIX) and job.id not in wanted:
                job.remove()
        for identifier, record in wanted.items():
            existing = self._scheduler.get_job(identifier)
            first = (
                existing.next_run_time
                if existing is not None and existing.next_run_time is not None
                else datetime.now(UTC) + timedelta(seconds=10 + 7 * (record.id % 6))
            )
            self._scheduler.add_job(
                self._sync,
                "interval",
                args=[record.id],
                minutes=minutes,
                id=identifier,
                name=f"Sync {record.name}",
                next_run_time=first,
                replace_existing=True,
                coalesce=True,
                max_instances=1,
                misfire_grace_time=int(MISFIRE_GRACE.total_seconds()),
            )
        return [record.id for record in calendars]

    def nudge(self, connection_id: int, delay: timedelta = NUDGE_DELAY) -> bool:
        """Sync this calendar soon (it said it changed); False when it has no job."""
        job = self._scheduler.get_job(job_id(connection_id))
        if job is None:
            return False
        job.modify(next_run_time=datetime.now(UTC) + delay)
        return True

    def check_wake(self) -> bool:
        """After the computer slept, every calendar is synced shortly; whether it slept."""
        if not self._watch.slept():
            return False
        log.info("the computer slept: catching up with the calendars")
        for job in self._scheduler.get_jobs():
            if job.id.startswith(JOB_PREFIX):
                job.modify(next_run_time=datetime.now(UTC) + WAKE_DELAY)
        return True
