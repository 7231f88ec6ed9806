"""Calendar sync: each teacher's lessons mirrored into their calendar (a Google calendar, a
CalDAV collection), and what the teacher changes there brought back for the office to decide.

One sync of one connection:

1. read the teacher's lessons (from a month back) and what the calendar says changed since the
   last sync (all of it the first time, or when the calendar no longer honours its token);
2. pair each lesson with its event (by the id we keep, else by the key written into the event,
   so an event created just before a crash is found, not made again) and decide each pair
   three ways against what both sides held at the last sync (`app.domain.sync.decide`);
3. hold back deletions that look like a mistake (a calendar that suddenly shows nothing) until
   a person confirms them (`check_deletions`);
4. apply each decision on its own: a failure stops that lesson only; a write the calendar
   refuses because the event changed meanwhile (412) is decided again on what it holds now;
   each lesson's new agreed state is stored as soon as its write is done, so a sync killed
   midway resumes where it was.

The school owns what a lesson is: the teacher's edits to its text are written over. A move or a
deletion made in the calendar is a proposal (`SyncIssue`) the office accepts or rejects, unless
the connection says the calendar wins; a lesson changed on both sides is a conflict, settled by
the connection's policy or shown side by side.

Signing in and out, syncing, and settling proposals and conflicts need SYNC_CALENDARS. The audit
trail notes sign-ins and sign-outs, each proposal or conflict settled, and held-back deletions
a person let go ahead; routine syncs are in the job history, not the trail.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
import uuid
import webbrowser
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import ColumnElement, delete, func, or_, select
from sqlalchemy.orm import Session

from app.domain.access import Permission, Principal
from app.domain.errors import NotFound, SwitchboardError
from app.domain.lesson_events import (
    LESSON,
    SERIES,
    Times,
    lesson_content,
    moved,
    series_content,
    slot_content,
    version,
)
from app.domain.school import LessonRecord, LessonStatus, SeriesRecord
from app.domain.sync import (
    Action,
    Baseline,
    Change,
    ConflictPolicy,
    Contents,
    Decision,
    EventContent,
    EventStatus,
    LocalItem,
    RemoteItem,
    Side,
    check_deletions,
    decide,
    event_id,
    settle,
)
from app.providers.calendar import (
    CALENDAR,
    OCCURRENCE_SEPARATOR,
    CalendarBackend,
    ChangeSet,
    PreconditionFailed,
    RemoteEvent,
    occurrence_id,
)
from app.providers.google_calendar import GoogleCalendar
from app.providers.http import ProviderError
from app.services import access, audit
from app.services.connections import ConnectionRecord, ConnectionService
from app.services.domain_events import record_sync_issue
from app.services.events import EventHub
from app.services.school import SchoolService, lesson_records, series_records
from app.services.settings import SettingsService
from app.services.webhook_intake import webhook_url
from app.store.calendar_sync import BusyRow, SyncIssueRow, SyncItemRow, SyncStateRow
from app.store.database import Database
from app.store.school import Lesson, LessonSeries, Teacher

log = logging.getLogger("switchboard.calendar_sync")

TOPIC = "calendar_sync"
PAST = timedelta(days=31)  # lessons that ended longer ago than this are left as they are
AHEAD = timedelta(days=400)  # ... and so are lessons further ahead than this
RETRIES_AFTER_412 = 2  # a lesson whose event keeps changing under us waits for the next sync
WRITES_AT_ONCE = 4
# A sync that wrote this many events reads the calendar's changes once more at its end, so
# the next sync is not handed its own writes back (a first sync writes a whole year).
SETTLE_AFTER = 25
CHANNEL_LIFETIME = timedelta(days=7)  # Google's default for a calendar's channel
CHANNEL_RENEW_BEFORE = timedelta(days=1)
MOVE, CANCEL, CONFLICT, DOUBLE_BOOKING = "move", "cancel", "conflict", "double_booking"
GONE, REVIVE = "gone", "revive"  # an occurrence's agreed state: cancelled; to bring back
CALENDAR_SIDE = frozenset({Action.UPDATE_LOCAL, Action.DELETE_LOCAL, Action.CONFLICT})


@dataclass(frozen=True)
class SyncReport:
    """What one sync did, in counts and a sentence; `confirm` is the token that lets held-back
    deletions go ahead (with `held` saying why they were held)."""

    connection_id: int
    name: str
    outcome: str  # ok | partial | held | failed
    counts: dict[str, int]
    message: str
    complete: bool = False
    held: str = ""
    confirm: str = ""
    seconds: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        return {
            "connection": self.connection_id,
            "name": self.name,
            "outcome": self.outcome,
            "counts": self.counts,
            "message": self.message,
            "complete": self.complete,
            "held": self.held,
            "confirm": self.confirm,
            "seconds": round(self.seconds, 3),
        }


@dataclass(frozen=True)
class CalendarLink:
    """A calendar connection as the Calendar sync page lists it."""

    connection_id: int
    name: str
    kind: str
    teacher: str  # as configured
    teacher_name: str  # "" when no teacher has that e-mail or reference
    paused: bool
    finished_at: datetime | None
    outcome: str
    counts: dict[str, Any]
    message: str
    held: str
    issues: int  # open proposals and conflicts
    signed_in: bool = True  # False: a Google calendar no one has signed in to yet


@dataclass(frozen=True)
class SyncIssue:
    """A proposal (a move or cancellation made in the calendar) or a conflict, for a person."""

    id: int
    connection_id: int | None
    kind: str
    lesson_id: int
    lesson_title: str
    school: dict[str, Any]
    calendar: dict[str, Any]
    detail: str
    found_at: datetime
    resolved_at: datetime | None
    resolution: str
    resolved_by: str


@dataclass(frozen=True)
class _Kept:
    """What a connection holds in the calendar as a sync starts: its items, and the token
    its last sync reached; `left_alone` the lessons out of the window that have items."""

    teacher_id: int
    token: str
    items: dict[int, _Item]
    series_items: dict[int, _Item]
    left_alone: set[int]


@dataclass(frozen=True)
class _Held:
    """Deletions held back until a person confirms them with `token`."""

    lessons: frozenset[int]
    reason: str
    token: str


@dataclass
class _Item:
    """A sync item as this run holds it (a row, or one about to be made). A lesson of a
    series is an occurrence of the series' recurring event (`occurrence`: the series and the
    start the lesson has there); until it is changed on its own, both sides hold it as the
    series makes it (`implied`), and it needs no row."""

    id: int | None
    local_id: int
    event_id: str
    remote_id: str = ""
    remote_etag: str = ""
    local_hash: str = ""
    remote_hash: str = ""
    kind: str = LESSON
    occurrence: tuple[int, datetime] | None = None
    implied: Baseline | None = None

    @property
    def baseline(self) -> Baseline | None:
        if not self.local_hash:
            return self.implied
        return Baseline(self.local_hash, self.remote_etag, self.remote_hash)


@dataclass
class _Run:
    """One sync's working state."""

    connection: ConnectionRecord
    backend: CalendarBackend
    teacher_id: int
    namespace: str
    policy: ConflictPolicy
    lessons: dict[int, LessonRecord]  # in the window and this teacher's
    items: dict[int, _Item]  # by lesson id
    series: dict[int, SeriesRecord] = field(default_factory=dict)  # of those lessons
    series_items: dict[int, _Item] = field(default_factory=dict)  # by series id
    counts: dict[str, int] = field(default_factory=dict)
    failures: list[str] = field(default_factory=list)
    _contents: dict[int, tuple[LessonRecord, EventContent | None]] = field(default_factory=dict)

    def count(self, what: str, n: int = 1) -> None:
        self.counts[what] = self.counts.get(what, 0) + n

    def key(self, item: _Item) -> str:
        """What an event is written for: the lesson, or the series an occurrence is of."""
        if item.occurrence is not None:
            return f"{self.namespace}:{SERIES}:{item.occurrence[0]}"
        return f"{self.namespace}:{item.kind}:{item.local_id}"

    def local(self, item: _Item) -> EventContent | None:
        if item.kind == SERIES:
            series = self.series.get(item.local_id)
            return series_content(series) if series is not None else None
        lesson = self.lessons.get(item.local_id)
        return None if lesson is None else self.lesson_content(lesson)

    def lesson_content(self, lesson: LessonRecord) -> EventContent | None:
        """Made once a run for each version of a lesson: a teacher's year is a few thousand."""
        known = self._contents.get(lesson.id)
        if known is None or known[0] is not lesson:
            known = (lesson, lesson_content(lesson))
            self._contents[lesson.id] = known
        return known[1]


class CalendarSyncService:
    def __init__(
        self,
        db: Database,
        events: EventHub,
        connections: ConnectionService,
        school: SchoolService,
        settings: SettingsService,
    ) -> None:
        self._db = db
        self._events = events
        self._connections = connections
        self._school = school
        self._settings = settings
        self._locks: dict[int, asyncio.Lock] = {}
        self._on_notice: Callable[[int], object] | None = None
        self._loop = asyncio.get_running_loop()
        self.open_browser: Callable[[str], Awaitable[object]] = _system_browser

    def on_notice(self, listener: Callable[[int], object] | None) -> None:
        """Who hears that a calendar said it changed (the engine, to sync it soon)."""
        self._on_notice = listener

    def notified(self, connection_id: int) -> bool:
        """A calendar said it changed (a push notification): sync it soon, where something
        schedules syncs; whether anything will. Safe from any thread (the inbox's handlers run
        on the database's)."""
        listener = self._on_notice
        if listener is None:
            return False
        self._loop.call_soon_threadsafe(listener, connection_id)
        return True

    # --- reading --------------------------------------------------------------------------------

    async def calendars(self) -> list[CalendarLink]:
        records = [
            record
            for record in await self._connections.connections()
            if CALENDAR in record.spec.capabilities
        ]

        def query(session: Session) -> list[CalendarLink]:
            states = {
                row.connection_id: row
                for row in session.scalars(
                    select(SyncStateRow).where(
                        SyncStateRow.connection_id.in_([record.id for record in records])
                    )
                )
            }
            open_issues = dict(
                session.execute(
                    select(SyncIssueRow.connection_id, func.count())
                    .where(SyncIssueRow.resolved_at.is_(None))
                    .group_by(SyncIssueRow.connection_id)
                ).all()
            )
            links = []
            for record in records:
                wanted = str(record.config.get("teacher") or "")
                teacher = _teacher(session, wanted)
                state = states.get(record.id)
                links.append(
                    CalendarLink(
                        record.id,
                        record.name,
                        record.kind,
                        wanted,
                        f"{teacher.first_name} {teacher.last_name}" if teacher else "",
                        record.paused,
                        state.finished_at if state else None,
                        state.outcome if state else "",
                        dict(state.counts) if state else {},
                        state.message if state else "",
                        str((state.held or {}).get("reason", "")) if state else "",
                        int(open_issues.get(record.id, 0)),
                        record.kind != "google-calendar" or "refresh_token" in record.secret_fields,
                    )
                )
            return links

        return await self._db.read(query)

    async def held_token(self, connection_id: int) -> str:
        """The token that lets the deletions the last sync held back go ahead ("" if none)."""

        def query(session: Session) -> str:
            state = session.get(SyncStateRow, connection_id)
            return str((state.held or {}).get("token", "")) if state is not None else ""

        return await self._db.read(query)

    async def issues(self, open_only: bool = True, limit: int = 500) -> list[SyncIssue]:
        def query(session: Session) -> list[SyncIssue]:
            statement = select(SyncIssueRow).order_by(SyncIssueRow.id.desc()).limit(limit)
            if open_only:
                statement = statement.where(SyncIssueRow.resolved_at.is_(None))
            rows = list(session.scalars(statement))
            titles = dict(
                session.execute(
                    select(Lesson.id, Lesson.title).where(
                        Lesson.id.in_([row.local_id for row in rows])
                    )
                ).all()
            )
            return [_issue(row, titles.get(row.local_id, "")) for row in rows]

        return await self._db.read(query)

    # --- signing in -----------------------------------------------------------------------------

    async def sign_in(self, connection_id: int) -> None:
        """Sign the connection in with Google in the browser (the system's, through
        `open_browser`) and keep the refresh token in the credential store. The address to open
        is also published (`{"sign_in": url}` on this topic) for a window to show, in case the
        browser does not open; cancelling the call gives up."""
        access.require(Permission.SYNC_CALENDARS)
        who = access.actor()
        record = await self._connections.connection(connection_id)
        provider = await self._connections.provider(connection_id)
        if not isinstance(provider, GoogleCalendar):
            raise SwitchboardError(
                f"{record.name} does not sign in with Google; its settings hold its password."
            )

        async def opened(url: str) -> None:
            self._events.publish(TOPIC, {"connection": connection_id, "sign_in": url})
            await self.open_browser(url)

        tokens = await provider.sign_in(opened)
        # The token this sign-in gave, kept on the connection as part of the sign-in (which
        # SYNC_CALENDARS allows), not as a change of the connection's settings.
        await self._connections.renew_secret(connection_id, "refresh_token", tokens.refresh_token)
        await self._db.write(_trail_sign_in, who, connection_id, record.name, True)
        log.info("signed in with Google", extra={"connection": connection_id})
        self._events.publish(TOPIC, {"connection": connection_id, "state": "signed_in"})

    async def sign_out(self, connection_id: int) -> None:
        """End Switchboard's access to the teacher's Google account (Google revokes the
        permission) and forget it; the calendar is no longer synced until signed in again."""
        access.require(Permission.SYNC_CALENDARS)
        who = access.actor()
        record = await self._connections.connection(connection_id)
        provider = await self._connections.provider(connection_id)
        if not isinstance(provider, GoogleCalendar):
            raise SwitchboardError("Only a Google calendar is signed in to and out of.")
        current = await self._db.read(_channel, connection_id)
        if current.get("id") and current.get("resource_id"):
            try:
                await provider.stop_channel(str(current["id"]), str(current["resource_id"]))
            except ProviderError as exc:
                log.info("a notification channel was not stopped", extra={"error": str(exc)})
            await self._db.write(_save_channel, connection_id, {})
        await provider.sign_out()
        with _on_switchboards_behalf():
            await self._connections.forget_secret(connection_id, "refresh_token")
        await self._db.write(_trail_sign_in, who, connection_id, record.name, False)
        log.info("signed out of Google", extra={"connection": connection_id})
        self._events.publish(TOPIC, {"connection": connection_id, "state": "signed_out"})

    # --- push notifications ---------------------------------------------------------------------

    async def keep_channel(self, connection_id: int) -> str:
        """Where the receiver has a public address, keep a Google calendar watched (a channel,
        renewed a day before it ends), so it is synced as soon as it changes; without one, stop
        watching (the calendar is polled). What was done, in a sentence ("" for nothing)."""
        access.require(Permission.SYNC_CALENDARS)
        record = await self._connections.connection(connection_id)
        if record.kind != "google-calendar" or "refresh_token" not in record.secret_fields:
            return ""
        public = str(self._settings.get("receiver.public_url") or "")
        current = await self._db.read(_channel, connection_id)
        now = datetime.now(UTC)
        address = webhook_url(record.id, record.webhook_token or "", public) if public else ""
        ends = current.get("expiration")
        fresh = (
            current.get("address") == address
            and ends is not None
            and datetime.fromisoformat(ends) - now > CHANNEL_RENEW_BEFORE
        )
        tried = current.get("tried_at")
        refused_lately = (
            current.get("error")
            and current.get("address") == address
            and tried is not None
            and now - datetime.fromisoformat(tried) < CHANNEL_RENEW_BEFORE
        )
        if (address and (fresh or refused_lately)) or (not address and not current):
            return ""
        provider = await self._connections.provider(connection_id)
        assert isinstance(provider, GoogleCalendar)
        done = ""
        if address:
            token = secrets.token_urlsafe(24)
            await self._connections.renew_secret(record.id, "channel_token", token)
            provider = await self._connections.provider(connection_id)
            assert isinstance(provider, GoogleCalendar)
            try:
                opened = await provider.watch(
                    address, uuid.uuid4().hex, token, CHANNEL_LIFETIME.total_seconds()
                )
            except ProviderError as exc:
                message = f"Google is not telling of changes ({_sentence(exc)}); polling instead."
                refused = {"error": message, "address": address, "tried_at": now.isoformat()}
                await self._db.write(_save_channel, connection_id, refused)
                return message
            await self._db.write(
                _save_channel,
                connection_id,
                {
                    "id": opened.id,
                    "resource_id": opened.resource_id,
                    "expiration": (opened.expiration or now + CHANNEL_LIFETIME).isoformat(),
                    "address": address,
                },
            )
            done = "Google tells Switchboard of changes as they happen."
        else:
            await self._db.write(_save_channel, connection_id, {})
        if current.get("id") and current.get("resource_id"):
            try:  # the old channel, replaced or no longer wanted
                await provider.stop_channel(str(current["id"]), str(current["resource_id"]))
            except ProviderError as exc:
                log.info("an old notification channel was not stopped", extra={"error": str(exc)})
        return done

    # --- syncing --------------------------------------------------------------------------------

    async def sync_all(self, trigger: str = "scheduled") -> list[SyncReport]:
        """Every calendar connection that is not paused, one after another."""
        access.require(Permission.SYNC_CALENDARS)
        reports = []
        for link in await self.calendars():
            if link.paused:
                continue
            try:
                reports.append(await self.sync(link.connection_id, trigger=trigger))
            except SwitchboardError as exc:
                reports.append(SyncReport(link.connection_id, link.name, "failed", {}, str(exc)))
        return reports

    async def sync(
        self, connection_id: int, *, confirm: str = "", trigger: str = "manual"
    ) -> SyncReport:
        """Sync one calendar connection now (one at a time per connection). `confirm` is the
        token a held-back sync gave, to let its deletions go ahead."""
        access.require(Permission.SYNC_CALENDARS)
        who = access.actor()
        lock = self._locks.setdefault(connection_id, asyncio.Lock())
        async with lock:
            started = time.monotonic()
            record = await self._connections.connection(connection_id)
            await self._db.write(_started, connection_id)
            self._events.publish(TOPIC, {"connection": connection_id, "state": "running"})
            try:
                report = await self._sync(record, confirm)
            except (SwitchboardError, ProviderError) as exc:
                report = SyncReport(connection_id, record.name, "failed", {}, _sentence(exc))
            except Exception as exc:
                log.exception("calendar sync failed", extra={"connection": connection_id})
                report = SyncReport(
                    connection_id,
                    record.name,
                    "failed",
                    {},
                    f"The sync stopped on an unexpected error ({type(exc).__name__}); it will "
                    "be tried again at the next sync.",
                )
            report = replace(report, seconds=time.monotonic() - started)
            await self._db.write(_finished, report, confirm, who)
        log.info(
            "calendar sync",
            extra={
                "connection": connection_id,
                "trigger": trigger,
                "outcome": report.outcome,
                "counts": report.counts,
            },
        )
        self._events.publish(TOPIC, {"connection": connection_id, "state": report.outcome})
        return report

    async def _sync(self, record: ConnectionRecord, confirm: str) -> SyncReport:
        provider = await self._connections.provider(record.id)
        if not isinstance(provider, CalendarBackend):
            raise SwitchboardError(
                f"{record.name} is not a calendar; choose a calendar connection."
            )
        wanted = str(record.config.get("teacher") or "")
        namespace = f"{await self._settings.install_id()}:{record.id}"
        now = datetime.now(UTC)

        def holding(session: Session) -> _Kept:
            """What this connection holds in the calendar, and the token it last reached."""
            teacher = _teacher(session, wanted)
            if teacher is None:
                raise SwitchboardError(
                    f"No teacher has the e-mail address or reference “{wanted}” that "
                    f"{record.name} names; correct it in the connection's settings, or add the "
                    "teacher on the Teachers page."
                )
            state = session.get(SyncStateRow, record.id)
            items: dict[int, _Item] = {}
            series_items: dict[int, _Item] = {}
            rows = session.execute(
                select(
                    SyncItemRow.id, SyncItemRow.local_id, SyncItemRow.event_id,
                    SyncItemRow.remote_id, SyncItemRow.remote_etag, SyncItemRow.local_hash,
                    SyncItemRow.remote_hash, SyncItemRow.local_kind,
                ).where(SyncItemRow.connection_id == record.id)
            )  # fmt: skip
            for row_id, local_id, event, remote_id, etag, local_hash, remote_hash, kind in rows:
                item = _Item(
                    row_id, local_id, event, remote_id, etag, local_hash, remote_hash, kind=kind
                )
                (series_items if kind == SERIES else items)[local_id] = item
            in_window = session.execute(
                select(Lesson.id, Lesson.series_id).where(*_window(teacher.id, now))
            ).all()
            left_alone = _leave_alone(
                session,
                teacher.id,
                items,
                series_items,
                {lesson_id for lesson_id, _series in in_window},
                {series_id for _lesson, series_id in in_window if series_id},
            )
            return _Kept(teacher.id, state.token if state else "", items, series_items, left_alone)

        def read(session: Session, kept: _Kept) -> _Run:
            """The teacher's lessons in the window (and their series), as the school has them."""
            lessons = {
                lesson.id: lesson
                for lesson in lesson_records(session, *_window(kept.teacher_id, now))
                if lesson.id not in kept.left_alone
            }
            wanted_series = {lesson.series_id for lesson in lessons.values() if lesson.series_id}
            series = {
                found.id: found
                for found in series_records(session, LessonSeries.id.in_(wanted_series))
            }
            # A lesson that left the window since the first look is left alone too.
            _leave_alone(
                session, kept.teacher_id, kept.items, kept.series_items, set(lessons), set(series)
            )
            policy = ConflictPolicy(str(record.config.get("conflicts") or ConflictPolicy.ASK))
            return _Run(
                record, provider, kept.teacher_id, namespace, policy, lessons, kept.items,
                series, kept.series_items,
            )  # fmt: skip

        kept = await self._db.read(holding)
        # The calendar answers while the lessons are read and their events made here (the
        # server works on its answer meanwhile); each event is made once a run.
        asked = asyncio.ensure_future(
            provider.changes(
                kept.token, _known([*kept.items.values(), *kept.series_items.values()])
            )
        )
        try:
            run = await self._db.read(read, kept)
            for n, lesson in enumerate(run.lessons.values()):
                if n % 50 == 0:
                    await asyncio.sleep(0)  # the request goes on meanwhile, as does the loop
                content = run.lesson_content(lesson)
                if content is not None:
                    content.content_hash()
        except BaseException:
            asked.cancel()
            raise
        changes = await asked
        run.count("read", len(changes.events))
        remote = self._pair(run, changes)
        # 1. Each series' recurring event, before the occurrences it holds.
        for series_id in run.series:
            run.series_items.setdefault(
                series_id,
                _Item(None, series_id, event_id(namespace, SERIES, series_id), kind=SERIES),
            )
        for series_id, item in list(run.series_items.items()):
            await self._apply(
                run,
                item,
                self._decision(run, item, remote.series.get(series_id, _UNCHANGED)),
                remote.series.get(series_id),
            )
        # 2. The lessons: single ones, and occurrences as the series holds them.
        for lesson_id, lesson in run.lessons.items():
            if lesson_id not in run.items:
                run.items[lesson_id] = _Item(
                    None, lesson_id, event_id(namespace, LESSON, lesson_id)
                )
            self._occurrence(run, run.items[lesson_id], lesson, remote, changes.complete)
        decisions = {
            lesson_id: self._decision(run, item, remote.lessons.get(lesson_id, _UNCHANGED))
            for lesson_id, item in run.items.items()
            if item.occurrence is None or item.remote_id
        }
        held = self._hold(run, decisions, remote.lessons, confirm)
        # Single lessons are independent: a few are written at once, so the calendar's answer
        # time is not paid once per lesson in turn (a first sync writes every lesson). The
        # occurrences of one series share its event: they are written one after another.
        gate = asyncio.Semaphore(WRITES_AT_ONCE)

        async def apply(lesson_ids: list[int]) -> None:
            async with gate:
                for lesson_id in lesson_ids:
                    item = run.items[lesson_id]
                    await self._apply(
                        run, item, decisions[lesson_id], remote.lessons.get(lesson_id)
                    )

        groups: dict[object, list[int]] = {}
        for lesson_id, decision in decisions.items():
            if decision.action is Action.NOTHING or (
                held is not None and lesson_id in held.lessons
            ):
                continue
            occurrence = run.items[lesson_id].occurrence
            groups.setdefault(occurrence[0] if occurrence else ("lesson", lesson_id), []).append(
                lesson_id
            )
        finished = await asyncio.gather(
            *(apply(lesson_ids) for lesson_ids in groups.values()),
            return_exceptions=True,  # the others finish before an unexpected error is raised
        )
        for result in finished:
            if isinstance(result, BaseException):
                raise result
        if held is None and not run.failures:
            # Only once every change read is settled: what was held back or failed is read
            # again next time, rather than lost behind the new token.
            written = sum(run.counts.get(what, 0) for what in ("created", "updated", "deleted"))
            new_token = changes.token
            if written >= SETTLE_AFTER:
                new_token = await self._past_own_writes(run, new_token)
            await self._db.write(_save_token, record.id, new_token)
        unchanged = frozenset(changes.unchanged)
        await self._db.write(_keep_busy, record.id, remote.busy, changes.complete, unchanged)
        found = await self._db.write(_double_bookings, record.id, list(run.lessons.values()))
        if found:
            run.count("double_bookings", found)
            self._events.publish(TOPIC, {"issue": DOUBLE_BOOKING})
        if record.kind == "google-calendar":
            pushed = await self.keep_channel(record.id)
            if pushed:
                run.count("channel")
                log.info("calendar notifications", extra={"connection": record.id, "what": pushed})
        outcome = "held" if held else ("partial" if run.failures else "ok")
        return SyncReport(
            record.id,
            record.name,
            outcome,
            dict(run.counts),
            _summary(run, held),
            complete=changes.complete,
            held=held.reason if held else "",
            confirm=held.token if held else "",
        )

    async def _past_own_writes(self, run: _Run, token: str) -> str:
        """The calendar's token after this sync's own writes, when what changed since `token`
        is only those writes (each event's etag the one its write answered): the next sync
        then does not read a first sync's thousands of events back. `token` otherwise, and
        the next sync tells them apart as it always does."""
        known = _known([*run.items.values(), *run.series_items.values()])
        try:
            since = await run.backend.changes(token, known)
        except (ProviderError, SwitchboardError) as exc:
            log.info(
                "calendar sync: own writes not read back",
                extra={"connection": run.connection.id, "error": str(exc)},
            )
            return token
        if since.complete or not since.token:
            return token  # the calendar listed everything: nothing says what is new
        for event in since.events:
            if not event.etag or known.get(event.remote_id) != event.etag:
                return token  # someone else's change (or a deletion) among ours
        return since.token

    # --- pairing and deciding -------------------------------------------------------------------

    def _pair(self, run: _Run, changes: ChangeSet) -> _Found:
        """Each lesson's and each series' event as the calendar holds it now, where that is
        known to differ from what we last saw: an event listed, or (in a complete listing) one
        gone. What the answer does not mention is unchanged there."""
        found = _Found({}, {}, {})
        by_remote = {item.remote_id: item for item in run.items.values() if item.remote_id}
        series_by_remote = {
            item.remote_id: item for item in run.series_items.values() if item.remote_id
        }
        starts = {
            (lesson.series_id, lesson.original_start): lesson.id
            for lesson in run.lessons.values()
            if lesson.series_id and lesson.original_start
        }
        prefixes = {kind: f"{run.namespace}:{kind}:" for kind in (LESSON, SERIES)}
        for event in changes.events:
            if event.series:
                # An occurrence changed on its own: the lesson of its series at that start.
                master = series_by_remote.get(event.series)
                start = event.original_start
                lesson_id = starts.get((master.local_id, start)) if master and start else None
                if lesson_id is None:
                    run.count("others")  # of the teacher's own recurring events
                    continue
                found.lessons[lesson_id] = event
                continue
            if event.remote_id in series_by_remote or event.key.startswith(prefixes[SERIES]):
                series_id = (
                    series_by_remote[event.remote_id].local_id
                    if event.remote_id in series_by_remote
                    else _number(event.key.removeprefix(prefixes[SERIES]))
                )
                if series_id is None or (
                    series_id not in run.series and series_id not in run.series_items
                ):
                    run.count("orphans")
                    continue
                master = run.series_items.setdefault(
                    series_id,
                    _Item(None, series_id, event_id(run.namespace, SERIES, series_id), kind=SERIES),
                )
                if master.remote_id and master.remote_id != event.remote_id:
                    continue  # a stray copy; the recorded one counts
                master.remote_id = event.remote_id
                found.series[series_id] = event
                continue
            item = by_remote.get(event.remote_id)
            if item is None and event.key.startswith(prefixes[LESSON]):
                # Ours, but not recorded: created just before a crash, or by an earlier link.
                lesson_id = _number(event.key.removeprefix(prefixes[LESSON]))
                if lesson_id is None:
                    continue
                item = run.items.get(lesson_id)
                if item is None:
                    if lesson_id not in run.lessons:
                        run.count("orphans")  # its lesson is gone or out of the window
                        continue
                    item = _Item(None, lesson_id, event_id(run.namespace, LESSON, lesson_id))
                    run.items[lesson_id] = item
                if item.remote_id and item.remote_id != event.remote_id:
                    continue
                item.remote_id = event.remote_id
            if item is None:
                run.count("others")  # the teacher's own events: when they are busy
                if not event.key and (event.content is None or not event.content.recurrence):
                    found.busy[event.remote_id] = event.content
                continue
            found.lessons[item.local_id] = event
        if changes.complete:
            there = {event.remote_id for event in changes.events} | set(changes.unchanged)
            for item in run.items.values():
                # An occurrence is not listed unless changed on its own: it is the series'.
                gone = item.remote_id and OCCURRENCE_SEPARATOR not in item.remote_id
                if gone and item.local_id not in found.lessons and item.remote_id not in there:
                    found.lessons[item.local_id] = None  # gone from the calendar
            for series_id, item in run.series_items.items():
                if item.remote_id and series_id not in found.series and item.remote_id not in there:
                    found.series[series_id] = None
        return found

    def _occurrence(
        self, run: _Run, item: _Item, lesson: LessonRecord, found: _Found, complete: bool
    ) -> None:
        """Make a lesson of a series an occurrence of the series' event: addressed by its start
        there, and, until it was changed on its own, held on both sides as the series makes
        it. Nothing while the series' event does not exist yet (it failed to be made)."""
        series = run.series.get(lesson.series_id or 0)
        master = run.series_items.get(lesson.series_id or 0)
        if series is None or master is None or lesson.original_start is None:
            return
        item.occurrence = (series.id, lesson.original_start)
        item.event_id = ""
        if not master.remote_id:
            item.remote_id = ""
            return
        item.remote_id = occurrence_id(master.remote_id, lesson.original_start)
        slot = slot_content(series, lesson.original_start).content_hash()
        item.implied = Baseline(slot, master.remote_etag, slot)
        if found.series.get(series.id, _UNCHANGED) is None:
            found.lessons[lesson.id] = None  # the whole series is gone there
        elif lesson.id not in found.lessons and (complete or not item.local_hash):
            # Not changed on its own there: as the series makes it.
            found.lessons[lesson.id] = RemoteEvent(
                item.remote_id,
                master.remote_etag,
                slot_content(series, lesson.original_start),
                series=master.remote_id,
                original_start=lesson.original_start,
            )

    def _decision(
        self, run: _Run, item: _Item, remote: RemoteEvent | _Unchanged | None
    ) -> Decision:
        content = run.local(item)
        there = not (remote is None or (isinstance(remote, RemoteEvent) and remote.content is None))
        if item.local_hash in (GONE, REVIVE) and (isinstance(remote, _Unchanged) or not there):
            # An occurrence cancelled on both sides, or to be brought back in the calendar.
            if content is None:
                return Decision(Action.NOTHING, Change.DELETED, Change.DELETED, Contents.UNPAIRED)
            return Decision(Action.UPDATE_REMOTE, Change.CHANGED, Change.DELETED, Contents.UNPAIRED)
        local = LocalItem(_hash(item, content)) if content is not None else None
        if isinstance(remote, _Unchanged):
            now = (
                RemoteItem(item.remote_etag, item.remote_hash)
                if item.remote_id and item.remote_hash
                else None
            )
        else:
            now = (
                RemoteItem(remote.etag, _hash(item, remote.content))
                if remote is not None and remote.content is not None
                else None
            )
        return decide(item.baseline, local, now)

    def _hold(
        self,
        run: _Run,
        decisions: dict[int, Decision],
        remote: Mapping[int, RemoteEvent | None],
        confirm: str,
    ) -> _Held | None:
        """Deletions that look like a mistake (either side suddenly empty, or most of it
        going), held back with the reason and the token that confirms them; the lessons they
        concern are left alone this time."""
        agreed = sum(1 for item in run.items.values() if item.baseline is not None)
        in_calendar = sum(1 for item in run.items.values() if item.remote_id)
        present_here = sum(
            1 for item in run.items.values() if item.kind == LESSON and run.local(item) is not None
        )
        present_there = sum(
            1
            for lesson_id, item in run.items.items()
            if item.remote_id and _present(remote.get(lesson_id, _UNCHANGED))
        )
        checks = (
            (Side.REMOTE, Action.DELETE_REMOTE, in_calendar, present_here),
            (Side.LOCAL, Action.DELETE_LOCAL, present_here, present_there),
        )
        for target, action, target_items, source_present in checks:
            deleting = {lesson_id for lesson_id, d in decisions.items() if d.action is action}
            check = check_deletions(
                target,
                deletions=len(deleting),
                target_items=target_items,
                source_known=agreed,
                source_present=source_present,
                confirmation=confirm,
            )
            if not check.allowed:
                return _Held(frozenset(deleting), check.reason, check.token)
        return None

    # --- applying -------------------------------------------------------------------------------

    async def _apply(
        self, run: _Run, item: _Item, decision: Decision, remote: RemoteEvent | None
    ) -> None:
        """Carry out one lesson's decision; a failure is counted and stops this lesson only."""
        for attempt in range(RETRIES_AFTER_412 + 1):
            try:
                await self._carry_out(run, item, decision, remote)
                return
            except PreconditionFailed:
                if attempt == RETRIES_AFTER_412:
                    break
                # The event changed since we read it: read it again and decide again.
                remote = await run.backend.event(item.remote_id) if item.remote_id else None
                decision = self._decision(run, item, remote)
                run.count("reread")
            except (ProviderError, SwitchboardError) as exc:
                self._failed(run, item, exc)
                return
        self._failed(run, item, SwitchboardError("its event kept changing while we wrote it"))

    def _failed(self, run: _Run, item: _Item, exc: Exception) -> None:
        run.count("failed")
        lesson = run.lessons.get(item.local_id)
        title = f"“{lesson.title}”" if lesson else f"lesson {item.local_id}"
        run.failures.append(f"{title}: {_sentence(exc)}")
        log.warning(
            "calendar sync of a lesson failed",
            extra={"connection": run.connection.id, "lesson": item.local_id, "error": str(exc)},
        )

    async def _carry_out(
        self, run: _Run, item: _Item, decision: Decision, remote: RemoteEvent | None
    ) -> None:
        content = run.local(item)
        action = decision.action
        if item.kind == SERIES and action in CALENDAR_SIDE:
            # A series' event is the school's: changed or deleted as a whole in the calendar,
            # it is set back (a teacher moves or cancels single lessons instead).
            run.count("series_set_back")
            if remote is None or remote.content is None:
                action = Action.CREATE_REMOTE
                await self._db.write(_forget_occurrences, run.connection.id, item.remote_id)
            else:
                action = Action.UPDATE_REMOTE
        elif action is Action.CONFLICT:
            action = await self._conflict(run, item, decision, content, remote)
        elif action is Action.UPDATE_LOCAL:
            action = await self._from_calendar(run, item, content, remote)
        elif action is Action.DELETE_LOCAL:
            action = await self._deleted_in_calendar(run, item, content, remote)
        if item.occurrence is not None and action is Action.CREATE_REMOTE:
            action = Action.UPDATE_REMOTE  # an occurrence is written through its series
        backend = run.backend
        if action is Action.CREATE_REMOTE:
            assert content is not None
            written = await backend.create(item.event_id, run.key(item), content)
            await self._agreed(run, item, content, written)
            run.count("created")
        elif action is Action.UPDATE_REMOTE:
            assert content is not None
            etag = remote.etag if remote is not None else item.remote_etag
            written = await backend.update(item.remote_id, etag, run.key(item), content)
            await self._agreed(run, item, content, written)
            run.count("updated")
        elif action is Action.DELETE_REMOTE:
            etag = remote.etag if remote is not None else item.remote_etag
            await backend.delete(item.remote_id, etag)
            if item.occurrence is not None:
                # Cancelled on both sides now; kept, so the series' event is not read as
                # holding it again.
                item.local_hash, item.remote_hash = GONE, ""
                item.id = await self._db.write(_store_item, run.connection.id, item, None)
            else:
                await self._forget(run, item)
            run.count("deleted")
        elif action in (Action.ADOPT, Action.REFRESH_BASELINE):
            if item.occurrence is not None and (
                action is Action.REFRESH_BASELINE or _as_the_series_makes_it(item, content)
            ):
                return  # an occurrence is kept only where it was changed on its own
            await self._agreed(run, item, content, remote)
            run.count("agreed")
        elif action is Action.FORGET:
            await self._forget(run, item)

    async def _conflict(
        self,
        run: _Run,
        item: _Item,
        decision: Decision,
        content: EventContent | None,
        remote: RemoteEvent | None,
    ) -> Action:
        """Changed on both sides. Only the calendar's times and its deletion are the
        teacher's to change; the rest is the school's, written back."""
        calendar = remote.content if remote is not None else None
        if content is not None and calendar is not None and not moved(content, calendar):
            return Action.UPDATE_REMOTE
        settled = settle(decision, run.policy)
        if settled.action is Action.UPDATE_LOCAL:
            return await self._take_calendar(run, item, content, remote, MOVE)
        if settled.action is Action.DELETE_LOCAL:
            return await self._take_calendar(run, item, content, remote, CANCEL)
        if settled.action is Action.CREATE_LOCAL:
            # The school deleted the lesson, the teacher changed it: a deleted lesson stays
            # deleted (nothing is made from a calendar), and its event goes.
            return Action.DELETE_REMOTE
        if settled.action is not Action.CONFLICT:
            return settled.action
        await self._issue(run, item, CONFLICT, content, remote, "Changed on both sides.")
        return Action.NOTHING

    async def _from_calendar(
        self, run: _Run, item: _Item, content: EventContent | None, remote: RemoteEvent | None
    ) -> Action:
        """Changed in the calendar only: a move is a proposal (taken at once when the
        calendar wins), other edits are written over."""
        calendar = remote.content if remote is not None else None
        if content is None or calendar is None or not moved(content, calendar):
            return Action.UPDATE_REMOTE
        if run.policy is ConflictPolicy.CALENDAR_WINS:
            return await self._take_calendar(run, item, content, remote, MOVE)
        await self._issue(run, item, MOVE, content, remote, "Moved in the calendar.")
        return Action.NOTHING

    async def _deleted_in_calendar(
        self, run: _Run, item: _Item, content: EventContent | None, remote: RemoteEvent | None
    ) -> Action:
        if run.policy is ConflictPolicy.CALENDAR_WINS:
            return await self._take_calendar(run, item, content, remote, CANCEL)
        await self._issue(run, item, CANCEL, content, remote, "Deleted in the calendar.")
        return Action.NOTHING

    async def _take_calendar(
        self,
        run: _Run,
        item: _Item,
        content: EventContent | None,
        remote: RemoteEvent | None,
        kind: str,
    ) -> Action:
        """The calendar's move or deletion applied to the lesson (the calendar wins); a move
        that would double-book becomes a proposal instead."""
        lesson = run.lessons.get(item.local_id)
        if lesson is None:
            return Action.FORGET
        calendar = remote.content if remote is not None else None
        try:
            if kind == MOVE and calendar is not None:
                saved = await self._school.save_lesson(
                    replace(lesson.draft(), starts_at=calendar.start, ends_at=calendar.end),
                    lesson_id=lesson.id,
                    version=lesson.version,
                )
            else:
                saved = await self._school.save_lesson(
                    replace(lesson.draft(), status=LessonStatus.CANCELLED),
                    lesson_id=lesson.id,
                    version=lesson.version,
                )
        except SwitchboardError as exc:
            detail = f"Taking the calendar's version was refused: {exc}"
            await self._issue(run, item, kind, content, remote, detail)
            return Action.NOTHING
        run.lessons[lesson.id] = saved
        run.count("taken_from_calendar")
        new = lesson_content(saved)
        if new is None:  # cancelled: the event is already gone
            await self._forget(run, item)
            return Action.NOTHING
        await self._agreed(run, item, new, remote)
        # Its text may still differ from the school's: the next sync writes it.
        return Action.NOTHING

    # --- records --------------------------------------------------------------------------------

    async def _agreed(
        self, run: _Run, item: _Item, content: EventContent | None, remote: RemoteEvent | None
    ) -> None:
        """Both sides hold this lesson as shown (the event as last recorded when `remote` is
        None): store it as the baseline at once."""
        if remote is not None:
            item.remote_id, item.remote_etag = remote.remote_id, remote.etag
            item.remote_hash = remote.content.content_hash() if remote.content else ""
        item.local_hash = content.content_hash() if content is not None else ""
        item.id = await self._db.write(_store_item, run.connection.id, item, remote)

    async def _forget(self, run: _Run, item: _Item) -> None:
        if item.id is not None:
            await self._db.write(_delete_item, item.id)
        run.items.pop(item.local_id, None)

    async def _issue(
        self,
        run: _Run,
        item: _Item,
        kind: str,
        content: EventContent | None,
        remote: RemoteEvent | None,
        detail: str,
    ) -> None:
        calendar = remote.content if remote is not None else None
        lesson = run.lessons.get(item.local_id)
        if kind == MOVE and lesson is not None and calendar is not None:
            clashes = await self._clashes(lesson, Times.of(calendar))
            if clashes:
                detail += " Accepting it would double-book: " + " ".join(clashes)
        if item.id is None and item.remote_id:
            # Keep the pairing, with no agreed state yet, so the issue's lesson stays linked.
            item.id = await self._db.write(_store_pairing, run.connection.id, item)
        theirs = version(calendar)
        if calendar is not None:
            theirs["hash"] = calendar.content_hash()  # what resolving takes as agreed there
        new = await self._db.write(
            _upsert_issue,
            run.connection.id,
            kind,
            item.local_id,
            remote.remote_id if remote is not None else item.remote_id,
            remote.etag if remote is not None else "",
            version(content),
            theirs,
            detail,
        )
        run.count("proposals" if kind in (MOVE, CANCEL) else "conflicts")
        if new:
            self._events.publish(TOPIC, {"issue": kind, "lesson": item.local_id})

    async def _clashes(self, lesson: LessonRecord, times: Times) -> list[str]:
        problems = await self._school.clashes(
            replace(lesson.draft(), starts_at=times.start, ends_at=times.end), lesson.id
        )
        return [problem.message for problem in problems]

    # --- the office's decisions -----------------------------------------------------------------

    async def accept(self, issue_id: int, by: str = "") -> SyncIssue:
        """Take the calendar's version: the lesson moves (refused, with the reason, if it would
        double-book) or is cancelled. For a conflict, the same as keeping the calendar's.
        `by`: who decided, if not the person acting."""
        access.require(Permission.SYNC_CALENDARS)
        return await self._resolve(issue_id, by or access.actor(), take_calendar=True)

    async def reject(self, issue_id: int, by: str = "") -> SyncIssue:
        """Keep the school's version: it is written back to the calendar at the next sync."""
        access.require(Permission.SYNC_CALENDARS)
        return await self._resolve(issue_id, by or access.actor(), take_calendar=False)

    async def _resolve(self, issue_id: int, by: str, *, take_calendar: bool) -> SyncIssue:
        who = access.actor()
        issue = await self._db.read(_open_issue, issue_id)
        lesson = await self._school.lesson(issue.lesson_id)
        if issue.kind == DOUBLE_BOOKING:
            # The teacher is busy then: cancel the lesson (the calendar's side), or keep both.
            if take_calendar:
                await self._school.save_lesson(
                    replace(lesson.draft(), status=LessonStatus.CANCELLED),
                    lesson_id=lesson.id,
                    version=lesson.version,
                )
            resolution = "calendar" if take_calendar else "school"
            resolved = await self._db.write(_resolve_issue, issue_id, resolution, by, who)
            self._events.publish(TOPIC, {"issue": issue_id, "resolved": resolution})
            return resolved
        if take_calendar:
            if issue.kind == CANCEL or not issue.calendar:
                draft = replace(lesson.draft(), status=LessonStatus.CANCELLED)
            else:
                times = Times.from_dict(issue.calendar)
                draft = replace(
                    lesson.draft(),
                    starts_at=times.start,
                    ends_at=times.end,
                    status=LessonStatus.SCHEDULED,  # the teacher still gives it
                )
            await self._school.save_lesson(draft, lesson_id=lesson.id, version=lesson.version)
        # Whichever side was chosen, the next sync makes the calendar say what the school now
        # holds: the pairing's agreed state is dropped so the lesson counts as changed here.
        resolution = "calendar" if take_calendar else "school"
        resolved = await self._db.write(_resolve_issue, issue_id, resolution, by, who)
        self._events.publish(TOPIC, {"issue": issue_id, "resolved": resolution})
        return resolved


def _on_switchboards_behalf() -> AbstractContextManager[Principal]:
    """Drop a calendar's own token from its connection as the service user: part of a
    sign-out someone was allowed to do (SYNC_CALENDARS) though their role may not change
    connections otherwise. The trail names them in the sign-out's own entry."""
    return access.acting_as(access.service_user())


def _trail_sign_in(
    session: Session, who: str, connection_id: int, name: str, signed_in: bool
) -> None:
    audit.record(
        session,
        who,
        "calendar.signed_in" if signed_in else "calendar.signed_out",
        "connection",
        connection_id,
        {"name": name, "signed_in": not signed_in},
        {"name": name, "signed_in": signed_in},
    )


# --- database work ------------------------------------------------------------------------------


class _Unchanged:
    """The calendar did not mention the lesson's event: it is as we last saw it."""


_UNCHANGED = _Unchanged()


async def _system_browser(url: str) -> None:
    """Open `url` in the person's own browser (it returns once the browser is asked)."""
    await asyncio.get_running_loop().run_in_executor(None, webbrowser.open, url)


@dataclass(frozen=True)
class _Found:
    """What the calendar's answer says of each lesson's and each series' event, and of the
    teacher's own events (by remote id; None: gone)."""

    lessons: dict[int, RemoteEvent | None]
    series: dict[int, RemoteEvent | None]
    busy: dict[str, EventContent | None] = field(default_factory=dict)


def _known(items: Iterable[_Item]) -> dict[str, str]:
    """Each event of these items in the calendar, by its id there: its etag."""
    return {item.remote_id: item.remote_etag for item in items if item.remote_id}


def _window(teacher_id: int, now: datetime) -> tuple[ColumnElement[bool], ...]:
    """The teacher's lessons a sync looks after: not long past, not far ahead."""
    return (
        Lesson.teacher_id == teacher_id,
        Lesson.ends_at > now - PAST,
        Lesson.starts_at < now + AHEAD,
    )


def _leave_alone(
    session: Session,
    teacher_id: int,
    items: dict[int, _Item],
    series_items: dict[int, _Item],
    lesson_ids: set[int],
    series_ids: set[int],
) -> set[int]:
    """Take out the items whose lesson (or series) is out of the window (long past, far
    ahead), which are left alone; those deleted, cancelled or now another teacher's stay, to
    be removed from the calendar. The lessons taken out."""
    missing = [local_id for local_id in items if local_id not in lesson_ids]
    left: set[int] = set()
    for start in range(0, len(missing), 900):  # SQLite's limit on bound parameters
        for lesson_id, owner, status in session.execute(
            select(Lesson.id, Lesson.teacher_id, Lesson.status).where(
                Lesson.id.in_(missing[start : start + 900])
            )
        ):
            if owner == teacher_id and status != LessonStatus.CANCELLED:
                items.pop(lesson_id)
                left.add(lesson_id)
    for series_id in [key for key in series_items if key not in series_ids]:
        if session.get(LessonSeries, series_id) is not None:
            series_items.pop(series_id)
    return left


def _hash(item: _Item, content: EventContent) -> str:
    """A series' recurring event is compared by its rule, not by the occurrences cancelled
    from it (EXDATE, RDATE): each of those is an occurrence of its own."""
    if item.kind == SERIES:
        rules = tuple(line for line in content.recurrence if line.startswith(("RRULE", "EXRULE")))
        content = replace(content, recurrence=rules)
    return content.content_hash()


def _as_the_series_makes_it(item: _Item, content: EventContent | None) -> bool:
    implied = item.implied
    return (
        item.id is None
        and content is not None
        and implied is not None
        and implied.local_hash == _hash(item, content)
    )


def _present(remote: RemoteEvent | _Unchanged | None) -> bool:
    """Whether the calendar still has the event (unchanged, or listed and not deleted)."""
    return isinstance(remote, _Unchanged) or (remote is not None and remote.content is not None)


def _number(text: str) -> int | None:
    return int(text) if text.isdigit() else None


def _teacher(session: Session, wanted: str) -> Teacher | None:
    cleaned = wanted.strip()
    if not cleaned:
        return None
    return session.scalars(
        select(Teacher)
        .where(
            or_(
                func.lower(Teacher.email) == cleaned.lower(),
                func.lower(Teacher.ref) == cleaned.lower(),
            )
        )
        .order_by(Teacher.id)
    ).first()


def _started(session: Session, connection_id: int) -> None:
    state = session.get(SyncStateRow, connection_id)
    if state is None:
        state = SyncStateRow(connection_id=connection_id)
        session.add(state)
    state.started_at = datetime.now(UTC)


def _finished(session: Session, report: SyncReport, confirm: str = "", who: str = "") -> None:
    """The sync's outcome kept for the page; deletions held back by the last sync that `who`
    let go ahead (with its `confirm` token) are an entry in the audit trail."""
    state = session.get(SyncStateRow, report.connection_id)
    if state is None:
        return
    held = dict(state.held or {})
    if confirm and held.get("token") == confirm and report.outcome != "held":
        audit.record(
            session,
            who,
            "calendar.deletions_confirmed",
            "connection",
            report.connection_id,
            {"name": report.name, "held": held.get("reason", "")},
            {"name": report.name, "outcome": report.outcome, "counts": report.counts},
        )
    state.finished_at = datetime.now(UTC)
    state.outcome, state.counts, state.message = report.outcome, report.counts, report.message
    state.held = {"reason": report.held, "token": report.confirm} if report.held else {}


def _keep_busy(
    session: Session,
    connection_id: int,
    busy: Mapping[str, EventContent | None],
    complete: bool,
    unchanged: frozenset[str],
) -> None:
    """Keep what the calendar said of the teacher's own events (a complete listing replaces
    what was kept)."""
    rows = {
        row.remote_id: row
        for row in session.scalars(select(BusyRow).where(BusyRow.connection_id == connection_id))
    }
    for remote_id, content in busy.items():
        row = rows.get(remote_id)
        if content is None or content.status is EventStatus.CANCELLED:
            if row is not None:
                session.delete(row)
            continue
        if row is None:
            row = BusyRow(connection_id=connection_id, remote_id=remote_id[:1024])
            session.add(row)
        row.starts_at, row.ends_at, row.summary = content.start, content.end, content.summary[:300]
    if complete:
        for remote_id, row in rows.items():
            if remote_id not in busy and remote_id not in unchanged:
                session.delete(row)


def _double_bookings(session: Session, connection_id: int, lessons: list[LessonRecord]) -> int:
    """A lesson at a time the teacher's calendar has them busy is a double booking for the
    office (once: one kept as it is is not raised again for the same times); one no longer
    overlapping is settled by itself. How many were found."""
    busy = list(session.scalars(select(BusyRow).where(BusyRow.connection_id == connection_id)))
    issues = list(
        session.scalars(
            select(SyncIssueRow).where(
                SyncIssueRow.connection_id == connection_id,
                SyncIssueRow.kind == DOUBLE_BOOKING,
            )
        )
    )
    found = 0
    clashing: set[tuple[int, str]] = set()
    for lesson in lessons:
        if lesson.status is LessonStatus.CANCELLED:
            continue
        for event in busy:
            if not (event.starts_at < lesson.ends_at and event.ends_at > lesson.starts_at):
                continue
            clashing.add((lesson.id, event.remote_id))
            start, busy_at = lesson.starts_at.isoformat(), event.starts_at.isoformat()
            seen = [
                issue
                for issue in issues
                if issue.local_id == lesson.id
                and issue.remote_id == event.remote_id
                and (
                    issue.resolved_at is None
                    or (issue.school.get("start"), issue.calendar.get("start")) == (start, busy_at)
                )
            ]
            if seen:
                continue
            session.add(
                raised := SyncIssueRow(
                    connection_id=connection_id,
                    kind=DOUBLE_BOOKING,
                    local_kind=LESSON,
                    local_id=lesson.id,
                    remote_id=event.remote_id,
                    school={
                        "start": start,
                        "end": lesson.ends_at.isoformat(),
                        "summary": lesson.title,
                    },
                    calendar={
                        "start": busy_at,
                        "end": event.ends_at.isoformat(),
                        "summary": event.summary,
                    },
                    detail=f"The teacher's calendar has “{event.summary or 'something'}” then.",
                )
            )
            record_sync_issue(session, raised)
            found += 1
    for issue in issues:
        if issue.resolved_at is None and (issue.local_id, issue.remote_id) not in clashing:
            issue.resolved_at, issue.resolution, issue.resolved_by = (
                datetime.now(UTC),
                "gone",
                "calendar sync",
            )
    return found


def _channel(session: Session, connection_id: int) -> dict[str, Any]:
    state = session.get(SyncStateRow, connection_id)
    return dict(state.channel or {}) if state is not None else {}


def _save_channel(session: Session, connection_id: int, channel: dict[str, Any]) -> None:
    state = session.get(SyncStateRow, connection_id)
    if state is None:
        state = SyncStateRow(connection_id=connection_id)
        session.add(state)
    state.channel = channel


def _save_token(session: Session, connection_id: int, token: str) -> None:
    state = session.get(SyncStateRow, connection_id)
    if state is not None:
        state.token = token


def _store_item(
    session: Session, connection_id: int, item: _Item, remote: RemoteEvent | None
) -> int:
    row = session.get(SyncItemRow, item.id) if item.id is not None else None
    if row is None:
        row = session.scalars(
            select(SyncItemRow).where(
                SyncItemRow.connection_id == connection_id,
                SyncItemRow.local_kind == item.kind,
                SyncItemRow.local_id == item.local_id,
            )
        ).first()
    if row is None:
        row = SyncItemRow(connection_id=connection_id, local_kind=item.kind, local_id=item.local_id)
        session.add(row)
    row.event_id, row.remote_id, row.remote_etag = item.event_id, item.remote_id, item.remote_etag
    row.local_hash, row.remote_hash = item.local_hash, item.remote_hash
    if remote is not None:
        row.meet_link, row.link = remote.meet_link[:500], remote.link[:1000]
    row.synced_at = datetime.now(UTC)
    session.flush()
    return row.id


def _store_pairing(session: Session, connection_id: int, item: _Item) -> int:
    row = SyncItemRow(
        connection_id=connection_id,
        local_kind=item.kind,
        local_id=item.local_id,
        event_id=item.event_id,
        remote_id=item.remote_id,
    )
    session.add(row)
    session.flush()
    return row.id


def _forget_occurrences(session: Session, connection_id: int, series_remote_id: str) -> None:
    """What was agreed on the occurrences of a series' event that is made again: they are
    decided afresh against the new one."""
    if series_remote_id:
        session.execute(
            delete(SyncItemRow).where(
                SyncItemRow.connection_id == connection_id,
                SyncItemRow.remote_id.startswith(series_remote_id + OCCURRENCE_SEPARATOR),
            )
        )


def _delete_item(session: Session, item_id: int) -> None:
    session.execute(delete(SyncItemRow).where(SyncItemRow.id == item_id))


def _upsert_issue(
    session: Session,
    connection_id: int,
    kind: str,
    lesson_id: int,
    remote_id: str,
    remote_etag: str,
    school: dict[str, Any],
    calendar: dict[str, Any],
    detail: str,
) -> bool:
    """Record an issue, or bring the open one of this lesson up to date; whether it is new."""
    row = session.scalars(
        select(SyncIssueRow).where(
            SyncIssueRow.connection_id == connection_id,
            SyncIssueRow.local_kind == LESSON,
            SyncIssueRow.local_id == lesson_id,
            SyncIssueRow.kind != DOUBLE_BOOKING,  # those are the calendar's busy times
            SyncIssueRow.resolved_at.is_(None),
        )
    ).first()
    new = row is None
    if row is None:
        row = SyncIssueRow(connection_id=connection_id, local_kind=LESSON, local_id=lesson_id)
        session.add(row)
    row.kind, row.remote_id, row.remote_etag = kind, remote_id, remote_etag
    row.school, row.calendar, row.detail = school, calendar, detail
    if new:
        record_sync_issue(session, row)
    return new


def _open_issue(session: Session, issue_id: int) -> SyncIssue:
    row = session.get(SyncIssueRow, issue_id)
    if row is None or row.resolved_at is not None:
        raise NotFound("That proposal or conflict is already settled.")
    return _issue(row, "")


def _resolve_issue(
    session: Session, issue_id: int, resolution: str, by: str, who: str
) -> SyncIssue:
    row = session.get(SyncIssueRow, issue_id)
    if row is None or row.resolved_at is not None:
        raise NotFound("That proposal or conflict is already settled.")
    lesson = session.get(Lesson, row.local_id) if row.local_kind == LESSON else None
    audit.record(
        session,
        who,
        "calendar_change.accepted" if resolution == "calendar" else "calendar_change.rejected",
        "sync_issue",
        issue_id,
        {
            "kind": row.kind,
            "lesson": row.local_id,
            "title": lesson.title if lesson is not None else None,
            "school": _times(row.school),
            "calendar": _times(row.calendar),
        },
        {"resolution": resolution, "resolved_by": by},
    )
    row.resolved_at, row.resolution, row.resolved_by = datetime.now(UTC), resolution, by
    if row.kind == DOUBLE_BOOKING:
        return _issue(row, "")
    item = session.scalars(
        select(SyncItemRow).where(
            SyncItemRow.connection_id == row.connection_id,
            SyncItemRow.local_kind == row.local_kind,
            SyncItemRow.local_id == row.local_id,
        )
    ).first()
    if item is not None:
        if row.calendar:
            # The calendar's version as found counts as agreed there, and the lesson as changed
            # here: the next sync writes the school's lesson (as it now is) over it, unless the
            # teacher changed the event again meanwhile (then that is a new question).
            item.remote_etag = row.remote_etag or item.remote_etag
            item.remote_hash = str(row.calendar.get("hash", ""))
            item.local_hash = "resolved"
        elif OCCURRENCE_SEPARATOR in (item.remote_id or row.remote_id):
            # An occurrence cancelled in the calendar: brought back there if the lesson stays.
            item.local_hash, item.remote_hash = REVIVE, ""
        else:
            # The event was deleted in the calendar: made again if the lesson stays.
            item.remote_id = item.remote_etag = item.remote_hash = item.local_hash = ""
    return _issue(row, "")


def _times(side: dict[str, Any] | None) -> dict[str, Any]:
    """When one side of an issue holds the lesson (empty: deleted or cancelled there)."""
    return {key: side[key] for key in ("start", "end") if side and key in side}


def _issue(row: SyncIssueRow, title: str) -> SyncIssue:
    return SyncIssue(
        row.id,
        row.connection_id,
        row.kind,
        row.local_id,
        title,
        dict(row.school),
        dict(row.calendar),
        row.detail,
        row.found_at,
        row.resolved_at,
        row.resolution,
        row.resolved_by,
    )


def _summary(run: _Run, held: _Held | None) -> str:
    counts = run.counts
    parts = [
        words.format(n=counts[name], s="" if counts[name] == 1 else "s")
        for name, words in (
            ("created", "{n} lesson{s} added to the calendar"),
            ("updated", "{n} changed there"),
            ("deleted", "{n} removed there"),
            ("taken_from_calendar", "{n} moved or cancelled as the calendar had it"),
            ("proposals", "{n} change{s} by the teacher to decide"),
            ("conflicts", "{n} changed on both sides"),
            ("failed", "{n} failed"),
        )
        if counts.get(name)
    ]
    text = (", ".join(parts) + ".") if parts else "Everything was already in step."
    text = text[0].upper() + text[1:]
    if held is not None:
        text += f" Held back: {held.reason}"
    if run.failures:
        text += " " + "; ".join(run.failures[:3])
    return text


def _sentence(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text if text.endswith((".", "!", "?")) else text + "."


__all__: Sequence[str] = ("TOPIC", "CalendarLink", "CalendarSyncService", "SyncIssue", "SyncReport")
