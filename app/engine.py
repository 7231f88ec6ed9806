"""The Engine: a background thread with its own asyncio loop that hosts the services, the
scheduler and, when asked, the HTTP receiver.

The GUI and `switchboard serve` run the same Engine. Other threads talk to it only through
`submit()` (run a coroutine on the engine loop) and `events` (what changed, coalesced).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import functools
import logging
import threading
import time
from collections.abc import Awaitable, Callable, Coroutine
from datetime import timedelta
from enum import StrEnum
from typing import Any, ParamSpec, TypeVar

from apscheduler.schedulers.asyncio import AsyncIOScheduler
from sqlalchemy import text

from app.config import Config
from app.domain.errors import SwitchboardError
from app.services import Services
from app.services.backup import CHECK_EVERY as BACKUP_CHECK_EVERY
from app.services.backup import JOB_ID as BACKUP_JOB
from app.services.backup import JOB_NAME as BACKUP_JOB_NAME
from app.services.calendar_schedule import WAKE_CHECK, CalendarSchedule
from app.services.calendar_schedule import job_id as calendar_job_id
from app.services.demo_traffic import DemoTraffic
from app.services.events import EventHub
from app.services.leadership import Leadership, claim_tick, last_ticks, prune_ticks
from app.services.metrics import apply_retention, roll_up
from app.services.receiver import Address, Receiver
from app.services.shared_changes import SharedChanges
from app.services.upkeep import JOB_ID as UPKEEP_JOB
from app.services.upkeep import database_upkeep
from app.store.base import utcnow

log = logging.getLogger("switchboard.engine")

T = TypeVar("T")
P = ParamSpec("P")

TOPIC_STATE = "engine.state"
UPKEEP_EVERY = timedelta(hours=6)
UPKEEP_FIRST_AFTER = timedelta(minutes=5)
# Not while the app is still opening: a backup due then waits a few minutes.
BACKUP_FIRST_AFTER = timedelta(minutes=3)
# Each connection has its own check interval; this is how often the engine looks for one due.
HEALTH_DISPATCH = timedelta(seconds=5)
RETENTION_EVERY = timedelta(minutes=10)
# Invoices become overdue at midnight, lessons come within 24 hours by the minute: looked for
# this often.
AUTOMATION_SCAN_EVERY = timedelta(minutes=5)
# A laptop that slept through a run should still do it on waking, once (coalesce), not skip it.
MISFIRE_GRACE = timedelta(hours=12)
# Scheduled jobs that leave no tick: the demo's traffic (every second, demo schools only).
UNTICKED = frozenset({"demo-traffic"})
WORK_CANCEL_TIMEOUT = 10.0


class EngineState(StrEnum):
    STOPPED = "stopped"
    STARTING = "starting"
    RUNNING = "running"
    PAUSED = "paused"
    STOPPING = "stopping"
    FAILED = "failed"


class EngineError(SwitchboardError):
    """The engine could not start, or is not running to take work; the message says why."""


class Engine:
    """Publishes `engine.state` ({"state": ...}) on its event hub when it changes.

    `listen=(host, port)` also starts the HTTP receiver; a None host or port is taken from the
    receiver settings, port 0 picks a free port (see `address`).
    """

    def __init__(
        self,
        config: Config,
        *,
        listen: tuple[str | None, int | None] | None = None,
        scheduler: bool = True,
    ) -> None:
        self.config = config
        self.events = EventHub()
        self._listen = listen
        self._use_scheduler = scheduler
        self._state = EngineState.STOPPED
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._ready = threading.Event()
        self._stop_requested: asyncio.Event | None = None
        self._startup_error: BaseException | None = None
        self._services: Services | None = None
        self._scheduler: AsyncIOScheduler | None = None
        self._leadership: Leadership | None = None
        self._changes: SharedChanges | None = None
        self._receiver: Receiver | None = None
        self._background: set[asyncio.Task[Any]] = set()  # kept until done (the loop holds weakly)
        # Guards `_closing`: once stop() begins, submit() takes no new work.
        self._lock = threading.Lock()
        self._closing = False

    # --- state ----------------------------------------------------------------------------------

    @property
    def state(self) -> EngineState:
        return self._state

    def _set_state(self, state: EngineState) -> None:
        self._state = state
        self.events.publish(TOPIC_STATE, {"state": state.value})
        log.info("engine %s", state.value)

    @property
    def services(self) -> Services:
        if self._services is None:
            raise EngineError("the engine is not running")
        return self._services

    @property
    def address(self) -> Address | None:
        """Where the receiver listens, once started with `listen`."""
        return self._receiver.address if self._receiver else None

    # --- life cycle -----------------------------------------------------------------------------

    def start(self, timeout: float = 60) -> None:
        """Start the engine thread and return once the services are up; raise if they fail."""
        if self._thread is not None:
            raise EngineError("the engine was already started")
        self._set_state(EngineState.STARTING)
        self._thread = threading.Thread(target=self._run, name="switchboard-engine")
        self._thread.start()
        if not self._ready.wait(timeout):
            raise EngineError(f"the engine did not start within {timeout:.0f} seconds")
        if self._startup_error is not None:
            self._thread.join()
            error = self._startup_error
            raise EngineError(str(error)) from error

    def stop(self, timeout: float = 30) -> None:
        """Stop the receiver, the scheduler and running work, close the database, and wait for
        the thread to end."""
        with self._lock:
            self._closing = True
        thread, loop, stop = self._thread, self._loop, self._stop_requested
        if thread is None:
            return
        if loop is not None and stop is not None and not loop.is_closed():
            with contextlib.suppress(RuntimeError):  # the loop already closed on its own
                loop.call_soon_threadsafe(stop.set)
        thread.join(timeout)
        if thread.is_alive():
            raise EngineError(f"the engine did not stop within {timeout:.0f} seconds")
        self._thread = None

    def submit(self, coroutine: Coroutine[Any, Any, T]) -> concurrent.futures.Future[T]:
        """Run a coroutine on the engine loop from any thread. Work submitted before stop()
        is cancelled by it; after stop() began, nothing is taken."""
        with self._lock:
            loop = self._loop
            running = self._state in (EngineState.RUNNING, EngineState.PAUSED)
            if self._closing or loop is None or not running:
                coroutine.close()
                raise EngineError(
                    "Switchboard's engine is not running, so this was not done; "
                    "restart Switchboard and try again."
                )
            return asyncio.run_coroutine_threadsafe(coroutine, loop)

    def pause(self) -> None:
        """Hold scheduled background work (running work finishes); `resume()` continues it."""
        self._call_in_loop(self._pause)

    def resume(self) -> None:
        self._call_in_loop(self._resume)

    def _call_in_loop(self, callback: Any) -> None:
        if self._loop is None:
            raise EngineError("the engine is not running")
        self._loop.call_soon_threadsafe(callback)

    def _pause(self) -> None:
        if self._state is EngineState.RUNNING:
            if self._scheduler is not None:
                self._scheduler.pause()
            self._set_state(EngineState.PAUSED)

    def _resume(self) -> None:
        if self._state is EngineState.PAUSED:
            if self._scheduler is not None:
                self._scheduler.resume()
            self._set_state(EngineState.RUNNING)

    # --- the thread -----------------------------------------------------------------------------

    def _run(self) -> None:
        loop = asyncio.new_event_loop()
        loop.set_exception_handler(_log_loop_exception)
        self._loop = loop
        asyncio.set_event_loop(loop)
        try:
            loop.run_until_complete(self._main())
        finally:
            try:
                _cancel_remaining(loop)
                loop.run_until_complete(loop.shutdown_asyncgens())
                loop.run_until_complete(loop.shutdown_default_executor())
            finally:
                asyncio.set_event_loop(None)
                loop.close()
                self._set_state(EngineState.FAILED if self._startup_error else EngineState.STOPPED)
                self._ready.set()

    async def _main(self) -> None:
        self._stop_requested = asyncio.Event()
        self.events.bind(asyncio.get_running_loop())
        try:
            await self._start_services()
        except BaseException as exc:
            self._startup_error = exc
            log.error("engine failed to start: %s", exc)
            await self._shutdown()
            return
        self._set_state(EngineState.RUNNING)
        self._ready.set()
        await self._stop_requested.wait()
        self._set_state(EngineState.STOPPING)
        await self._shutdown()

    async def _start_services(self) -> None:
        self._services = await Services.open(self.config, self.events)
        if self._use_scheduler:
            self._scheduler = self._make_scheduler(self._services)
            for job in self._scheduler.get_jobs():
                job.modify(func=self._led(job.id, job.func))
            self._scheduler.start()
            self._services.jobs.attach(self._scheduler)
            await self._schedule_calendars(self._services, self._scheduler)
            self._leadership = Leadership(self._services.db, self._lead_changed)
            await self._leadership.start()
        asyncio.get_running_loop().create_task(self._tick_live(self._services), name="live")
        self._changes = SharedChanges(self._services.db, self.events)
        self._changes.start()
        self._services.inbox_worker.start()  # events acknowledged before a restart, first
        self._services.outbound.start()
        self._services.automations.start()
        await self._services.messaging.recover()
        if self._listen is not None:
            host, port = self._listen
            settings = self._services.settings
            certificate = settings.get("receiver.tls_certificate")
            key = settings.get("receiver.tls_key")
            if bool(certificate) != bool(key):
                raise EngineError(
                    "The receiver needs both a TLS certificate and its key, or neither; set "
                    "both in Settings → Receiver."
                )
            self._receiver = Receiver(
                self.health,
                host or settings.get("receiver.host"),
                settings.get("receiver.port") if port is None else port,
                intake=self._services.intake,
                max_body=settings.get("receiver.max_body_kib") * 1024,
                tls=(certificate, key) if certificate else None,
                api=self._services.web(),
            )
            self._receiver.start()

    # --- leading the scheduled work (app/services/leadership.py) -------------------------------

    @property
    def leader(self) -> bool:
        """Whether this engine runs the scheduled jobs (always, on one computer's SQLite)."""
        return self._leadership is not None and self._leadership.leader

    def _led(
        self, job_id: str, job: Callable[[], Awaitable[None]], *, spaced: bool = True
    ) -> Callable[[], Awaitable[None]]:
        """`job` as this engine's scheduler runs it: only while it leads and, on a shared
        database, only if no engine started it within half an interval (`spaced`)."""

        @functools.wraps(job)
        async def run() -> None:
            leadership = self._leadership
            if leadership is None or not leadership.leader:
                return
            if leadership.shared and job_id not in UNTICKED:
                every = self._interval_of(job_id) if spaced else timedelta(0)
                if not await claim_tick(self.services.db, job_id, every, leadership.name):
                    return
            await job()

        return run

    def _interval_of(self, job_id: str) -> timedelta:
        job = self._scheduler.get_job(job_id) if self._scheduler is not None else None
        interval = getattr(job.trigger, "interval", None) if job is not None else None
        return interval if isinstance(interval, timedelta) else timedelta(days=1)

    async def _lead_changed(self, leader: bool) -> None:
        """On taking the lead of a shared database: each job next runs one interval after it
        last started on any engine, and each health check likewise."""
        self.events.publish(TOPIC_STATE, {"state": self._state.value, "leader": leader})
        if not leader or self._scheduler is None or self._leadership is None:
            return
        if not self._leadership.shared:
            return
        ticks = await last_ticks(self.services.db)
        now = utcnow()
        for job in self._scheduler.get_jobs():
            last = ticks.get(job.id)
            if last is not None:
                job.modify(next_run_time=max(now, last + self._interval_of(job.id)))
        await self.services.health.continue_from_history()

    def _make_scheduler(self, services: Services) -> AsyncIOScheduler:
        scheduler = AsyncIOScheduler(
            event_loop=asyncio.get_running_loop(),
            timezone="UTC",
            job_defaults={
                "coalesce": True,
                "max_instances": 1,
                "misfire_grace_time": int(MISFIRE_GRACE.total_seconds()),
            },
        )

        @_ends_quietly_at_shutdown
        async def upkeep() -> None:
            await services.jobs.run(UPKEEP_JOB, lambda: database_upkeep(services.db, services.jobs))
            await prune_ticks(services.db)

        traffic = DemoTraffic(services.connections)

        @_ends_quietly_at_shutdown
        async def demo_traffic() -> None:
            # Only in a demo school's database (the demo seed sets the flag).
            if services.settings.state("demo_traffic"):
                await traffic.tick()

        @_ends_quietly_at_shutdown
        async def metrics_rollup() -> None:
            await roll_up(services.db, utcnow())

        @_ends_quietly_at_shutdown
        async def metrics_retention() -> None:
            await roll_up(services.db, utcnow())  # nothing is deleted before it is rolled up
            await apply_retention(services.db, utcnow())

        @_ends_quietly_at_shutdown
        async def settle_payments() -> None:
            # Payments whose answer was lost, refunds still pending: ask their gateways.
            await services.payments.settle()
            await services.billing.settle_items()

        @_ends_quietly_at_shutdown
        async def exchange_rates() -> None:
            await services.rates.refresh()

        @_ends_quietly_at_shutdown
        async def reconcile_daily() -> None:
            if services.settings.get("reconciliation.daily"):
                await services.reconciliation.daily()

        @_ends_quietly_at_shutdown
        async def health_checks() -> None:
            await services.health.check_due()

        @_ends_quietly_at_shutdown
        async def automation_scan() -> None:
            await services.automations.scan()

        @_ends_quietly_at_shutdown
        async def backup_when_due() -> None:
            await services.backups.backup_if_due()

        # Fixed ids and no persistent job store: jobs are re-registered on every start.
        scheduler.add_job(
            demo_traffic, "interval", seconds=1, id="demo-traffic", replace_existing=True
        )
        scheduler.add_job(
            metrics_rollup, "interval", seconds=60, id="metrics-rollup", replace_existing=True
        )
        scheduler.add_job(
            metrics_retention,
            "interval",
            seconds=RETENTION_EVERY.total_seconds(),
            id="metrics-retention",
            next_run_time=utcnow() + timedelta(minutes=2),
            replace_existing=True,
        )
        scheduler.add_job(
            health_checks,
            "interval",
            seconds=HEALTH_DISPATCH.total_seconds(),
            id="health-checks",
            next_run_time=utcnow() + timedelta(seconds=2),
            replace_existing=True,
        )
        scheduler.add_job(
            automation_scan,
            "interval",
            seconds=AUTOMATION_SCAN_EVERY.total_seconds(),
            id="automations-scan",
            next_run_time=utcnow() + timedelta(seconds=20),
            replace_existing=True,
        )
        scheduler.add_job(
            settle_payments,
            "interval",
            seconds=60,
            id="payments-settle",
            next_run_time=utcnow() + timedelta(seconds=30),
            replace_existing=True,
        )
        scheduler.add_job(
            reconcile_daily,
            "cron",
            hour=int(services.settings.get("reconciliation.hour")),
            timezone=str(services.settings.get("school.timezone")) or "UTC",
            id="reconciliation-daily",
            replace_existing=True,
        )
        scheduler.add_job(
            exchange_rates,
            "interval",
            hours=6,  # the ECB publishes once a working day, around 16:00 CET
            id="exchange-rates",
            next_run_time=utcnow() + timedelta(minutes=1),
            replace_existing=True,
        )
        scheduler.add_job(
            upkeep,
            "interval",
            seconds=UPKEEP_EVERY.total_seconds(),
            id=UPKEEP_JOB,
            next_run_time=utcnow() + UPKEEP_FIRST_AFTER,
            replace_existing=True,
        )
        scheduler.add_job(
            backup_when_due,
            "interval",
            seconds=BACKUP_CHECK_EVERY.total_seconds(),
            id=BACKUP_JOB,
            name=BACKUP_JOB_NAME,
            next_run_time=utcnow() + BACKUP_FIRST_AFTER,
            replace_existing=True,
        )
        return scheduler

    async def _schedule_calendars(self, services: Services, scheduler: AsyncIOScheduler) -> None:
        """A sync job per calendar connection, kept in step with the connections; a calendar's
        notification syncs it soon; a catch-up after the computer slept."""

        @_ends_quietly_at_shutdown
        async def sync(connection_id: int) -> None:
            async def job() -> dict[str, Any]:
                report = await services.calendar_sync.sync(connection_id, trigger="scheduled")
                if report.outcome == "failed":
                    raise EngineError(report.message)
                return {**report.counts, "outcome": report.outcome}

            await services.jobs.run(calendar_job_id(connection_id), job)

        async def led_sync(connection_id: int) -> None:
            # A calendar's notification asks for a sync soon: never held back by spacing.
            await self._led(
                calendar_job_id(connection_id), lambda: sync(connection_id), spaced=False
            )()

        calendars = CalendarSchedule(scheduler, services.connections, services.settings, led_sync)
        await calendars.register()
        loop = asyncio.get_running_loop()

        def connections_changed(_connection_id: int) -> None:
            task = loop.create_task(calendars.register(), name="calendar-jobs")
            self._background.add(task)
            task.add_done_callback(self._background.discard)

        services.connections.on_changed(connections_changed)
        services.calendar_sync.on_notice(calendars.nudge)
        scheduler.add_job(
            self._led("wake-check", _ends_quietly_at_shutdown(_async(calendars.check_wake))),
            "interval",
            seconds=WAKE_CHECK.total_seconds(),
            id="wake-check",
            name="Catch up after sleep",
            replace_existing=True,
        )

    @staticmethod
    async def _tick_live(services: Services) -> None:
        """Close each second of live metrics just after it ends (cancelled at shutdown)."""
        while True:
            now = time.time()
            await asyncio.sleep(1.02 - (now - int(now)))
            services.live.tick()

    async def _shutdown(self) -> None:
        # In this order: let requests in flight finish (a provider must get its answer), put the
        # events they brought on disk, start no new jobs, cancel the work still running, and
        # only then close the database. Each step is isolated, so one failing cannot leave the
        # database open.
        for step in (
            self._stop_receiver,
            self._settle_inbox,
            self._stop_scheduler,
            self._stop_changes,
            self._cancel_work,
            self._close_services,
        ):
            try:
                await step()
            except Exception:
                log.exception("engine shutdown step failed", extra={"step": step.__name__})

    async def _stop_receiver(self) -> None:
        if self._receiver is not None:
            await self._receiver.stop()

    async def _settle_inbox(self) -> None:
        """Events handed in before the receiver stopped go to disk; processing stops between
        batches (what it had not reached waits, on disk, for the next start)."""
        if self._services is not None:
            await self._services.inbox.drain()
            await self._services.inbox_worker.stop()
            await self._services.automations.stop()

    async def _stop_changes(self) -> None:
        if self._changes is not None:
            await self._changes.close()

    async def _stop_scheduler(self) -> None:
        if self._scheduler is not None and self._scheduler.running:
            self._scheduler.shutdown(wait=False)
        if self._leadership is not None:
            await self._leadership.stop()

    async def _cancel_work(self) -> None:
        current = asyncio.current_task()
        work = [task for task in asyncio.all_tasks() if task is not current and not task.done()]
        for task in work:
            task.cancel()
        if work:
            _done, stuck = await asyncio.wait(work, timeout=WORK_CANCEL_TIMEOUT)
            if stuck:
                log.warning("work did not stop when cancelled", extra={"tasks": len(stuck)})

    async def _close_services(self) -> None:
        self.events.flush_all()
        if self._services is not None:
            await self._services.close()

    async def health(self) -> dict[str, Any]:
        """What `GET /health` reports: the engine state and whether the database answers."""
        database = "ok"
        try:
            await self.services.db.read(lambda session: session.execute(text("SELECT 1")))
        except Exception as exc:
            database = f"error: {type(exc).__name__}"
        healthy = database == "ok" and self._state in (EngineState.RUNNING, EngineState.PAUSED)
        return {
            "status": "ok" if healthy else "degraded",
            "engine": self._state.value,
            "database": database,
            "leader": self.leader,
        }


def _ends_quietly_at_shutdown(
    job: Callable[P, Awaitable[None]],
) -> Callable[P, Awaitable[None]]:
    """A job cancelled because the engine stops has not failed: end it without the scheduler
    reporting an error for it. A job that fails is logged with its name and runs again at its
    next time."""

    @functools.wraps(job)
    async def run(*args: P.args, **kwargs: P.kwargs) -> None:
        try:
            await job(*args, **kwargs)
        except asyncio.CancelledError:
            log.debug("background job stopped with the engine", extra={"job": job.__name__})
        except Exception:
            log.exception("background job failed", extra={"job": job.__name__})

    return run


def _async(check: Callable[[], object]) -> Callable[[], Awaitable[None]]:
    async def run() -> None:
        check()

    run.__name__ = getattr(check, "__name__", "check")
    return run


def _cancel_remaining(loop: asyncio.AbstractEventLoop) -> None:
    tasks = [task for task in asyncio.all_tasks(loop) if not task.done()]
    for task in tasks:
        task.cancel()
    if tasks:
        loop.run_until_complete(asyncio.gather(*tasks, return_exceptions=True))


def _log_loop_exception(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
    error = context.get("exception")
    log.error(
        "unhandled error in the engine loop: %s",
        context.get("message", "?"),
        exc_info=(type(error), error, error.__traceback__) if error else None,
    )
