"""The CalDAV calendar backend against a real Radicale server over loopback HTTP
(tests/support/radicale.py): conditional writes, incremental sync and its request counts,
recurring series with occurrences changed on their own, and content that reads back as it was
written."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import httpx
import pytest

from app.domain.sync import EventContent, EventStatus, caldav_resource_name, event_id
from app.providers import KINDS
from app.providers.caldav import CALDAV, CalDAV
from app.providers.calendar import (
    CalendarBackend,
    CalendarGone,
    PreconditionFailed,
    RemoteEvent,
    occurrence_id,
)
from app.providers.http import CredentialsRefused, RequestRecord, ResilientClient
from app.providers.spec import RatePolicy, ResiliencePolicy, RetryPolicy
from app.services import Services
from tests.support.radicale import Radicale, TeacherCalendar, running_radicale

MONDAY = datetime(2026, 3, 2, 10, 0, tzinfo=UTC)
HOUR = timedelta(hours=1)
# Quick for tests: Radicale on loopback needs no pacing, and a failure should not be retried.
FAST = ResiliencePolicy(timeout=10.0, retry=RetryPolicy(attempts=1), rate=RatePolicy(1000.0))


def lesson(number: int = 1, **changes: Any) -> EventContent:
    fields: dict[str, Any] = {
        "start": MONDAY + number * timedelta(days=1),
        "end": MONDAY + number * timedelta(days=1) + HOUR,
        "summary": f"Piano lesson {number}",
        "location": "Room 3",
    }
    fields.update(changes)
    return EventContent(**fields)


def our_id(number: int = 1) -> str:
    return event_id("school:test", "lesson", number)


@dataclass
class Connected:
    """A CalDAV provider on the test's calendar, and every request its client made."""

    provider: CalDAV
    calendar: TeacherCalendar
    requests: list[RequestRecord] = field(default_factory=list)

    def mark(self) -> int:
        return len(self.requests)

    def since(self, mark: int) -> list[tuple[str, int | None]]:
        return [(record.operation, record.status_code) for record in self.requests[mark:]]


Connect = Callable[..., Awaitable[Connected]]


@pytest.fixture
async def connect() -> AsyncIterator[Connect]:
    """Connect a CalDAV provider to a calendar (as its owner unless told otherwise), with a
    client that records every request and is closed after the test."""
    clients: list[ResilientClient] = []

    async def make(
        calendar: TeacherCalendar,
        *,
        username: str | None = None,
        password: str | None = None,
        url: str | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> Connected:
        config = {
            "calendar_url": url or calendar.url,
            "username": calendar.user if username is None else username,
            "teacher": "jane@example.org",
        }
        secrets = {"password": calendar.password if password is None else password}
        requests: list[RequestRecord] = []
        client = ResilientClient(
            connection_id=1,
            name="Jane's calendar",
            base_url=CALDAV.base_url(config),
            policy=FAST,
            headers=CALDAV.headers(config, secrets) if CALDAV.headers else None,
            transport=transport,
            on_request=requests.append,
            secrets=list(secrets.values()),
        )
        clients.append(client)
        provider = CALDAV.factory(CALDAV, client, config, secrets)
        assert isinstance(provider, CalDAV)
        return Connected(provider, calendar, requests)

    yield make
    for client in clients:
        await client.aclose()


@pytest.fixture
async def jane(radicale: TeacherCalendar, connect: Connect) -> Connected:
    return await connect(radicale)


def by_id(events: Sequence[RemoteEvent]) -> dict[str, RemoteEvent]:
    return {event.remote_id: event for event in events}


# --- the kind ------------------------------------------------------------------------------------


def test_caldav_is_a_calendar_kind_with_basic_auth_and_the_calendar_settings() -> None:
    spec = KINDS["caldav"]
    assert spec is CALDAV
    assert spec.name == "CalDAV calendar"
    assert [field.name for field in spec.fields] == [
        "calendar_url",
        "username",
        "password",
        "teacher",
        "conflicts",
    ]
    assert spec.field("password").secret
    assert not spec.field("username").required
    help_text = spec.field("calendar_url").help
    assert "Nextcloud" in help_text
    assert "iCloud" in help_text
    assert "Fastmail" in help_text
    assert "app password" in spec.field("password").help


def test_the_base_url_is_the_origin_and_basic_auth_is_sent_only_with_a_username() -> None:
    config = {"calendar_url": "https://cloud.example.org:8443/remote.php/dav/calendars/jane/l/"}
    assert CALDAV.base_url(config) == "https://cloud.example.org:8443"
    assert CALDAV.headers is not None
    assert CALDAV.headers(config, {}) == {}
    headers = CALDAV.headers({**config, "username": "jané"}, {"password": "pw"})
    assert headers == {"Authorization": "Basic amFuw6k6cHc="}  # "jané:pw" in UTF-8


# --- creating ------------------------------------------------------------------------------------


async def test_a_created_event_is_listed_with_its_key_and_content(jane: Connected) -> None:
    created = await jane.provider.create(our_id(), "lesson:1", lesson())
    assert created.remote_id == jane.provider.path + caldav_resource_name(our_id())
    assert created.etag.startswith('"')
    assert created.content == lesson()

    listed = await jane.provider.changes()

    assert listed.complete
    assert listed.token.startswith("http://radicale.org/ns/sync/")
    [event] = listed.events
    assert event == RemoteEvent(created.remote_id, created.etag, lesson(), key="lesson:1")


async def test_a_repeated_create_returns_the_first_and_makes_no_second_resource(
    jane: Connected,
) -> None:
    first = await jane.provider.create(our_id(), "lesson:1", lesson())
    mark = jane.mark()

    again = await jane.provider.create(our_id(), "lesson:1", lesson(summary="Written twice"))

    assert again == first  # the first one, as it was: the repeat changed nothing
    assert jane.since(mark) == [
        ("put-event", 412),
        ("calendar-properties", 207),  # the first read of this provider describes the calendar
        ("get-event", 200),
    ]
    assert jane.calendar.names() == [caldav_resource_name(our_id())]


async def test_a_create_is_one_request(jane: Connected) -> None:
    await jane.provider.changes()  # the collection has been described already
    mark = jane.mark()
    await jane.provider.create(our_id(), "lesson:1", lesson())
    assert jane.since(mark) == [("put-event", 201)]


# --- conditional updates and deletes -------------------------------------------------------------


async def test_an_update_with_a_stale_etag_is_refused_and_with_the_current_one_gives_a_new_etag(
    jane: Connected,
) -> None:
    created = await jane.provider.create(our_id(), "lesson:1", lesson())
    text, _etag = jane.calendar.get(caldav_resource_name(our_id()))
    changed_by_teacher = jane.calendar.put(
        caldav_resource_name(our_id()), text.replace("Room 3", "Room 4")
    )

    with pytest.raises(PreconditionFailed):
        await jane.provider.update(created.remote_id, created.etag, "lesson:1", lesson(number=2))

    moved = lesson(number=2)
    updated = await jane.provider.update(created.remote_id, changed_by_teacher, "lesson:1", moved)

    assert updated.etag not in (created.etag, changed_by_teacher)
    assert updated.content == moved
    assert await jane.provider.event(created.remote_id) == updated


async def test_updating_an_event_only_switchboard_wrote_is_one_conditional_put(
    jane: Connected,
) -> None:
    created = await jane.provider.create(our_id(), "lesson:1", lesson())
    mark = jane.mark()

    updated = await jane.provider.update(created.remote_id, created.etag, "lesson:1", lesson(2))
    await jane.provider.update(updated.remote_id, updated.etag, "lesson:1", lesson(3))

    assert jane.since(mark) == [("put-event", 204), ("put-event", 204)]
    with pytest.raises(PreconditionFailed):  # still conditional: the first etag is stale
        await jane.provider.update(created.remote_id, created.etag, "lesson:1", lesson(4))


async def test_updating_an_event_the_teachers_app_changed_reads_it_first(
    radicale: TeacherCalendar, connect: Connect
) -> None:
    jane = await connect(radicale)
    created = await jane.provider.create(our_id(), "lesson:1", lesson())
    text, _etag = radicale.get(caldav_resource_name(our_id()))
    radicale.put(
        caldav_resource_name(our_id()),
        text.replace("END:VEVENT", "CATEGORIES:Music\r\nEND:VEVENT"),
    )
    [seen] = (await jane.provider.changes()).events
    mark = jane.mark()

    updated = await jane.provider.update(created.remote_id, seen.etag, "lesson:1", lesson(2))

    assert jane.since(mark) == [("get-event", 200), ("put-event", 204)]
    assert updated.content == lesson(2)
    assert "CATEGORIES:Music" in radicale.get(caldav_resource_name(our_id()))[0]
    # A provider that has seen nothing of it (after a restart) reads it first too.
    fresh = await connect(radicale)
    mark = fresh.mark()
    await fresh.provider.update(updated.remote_id, updated.etag, "lesson:1", lesson(3))
    assert fresh.since(mark) == [
        ("calendar-properties", 207),  # the first read of this provider describes the calendar
        ("get-event", 200),
        ("put-event", 204),
    ]


async def test_a_delete_with_a_stale_etag_is_refused(jane: Connected) -> None:
    created = await jane.provider.create(our_id(), "lesson:1", lesson())
    await jane.provider.update(created.remote_id, created.etag, "lesson:1", lesson(number=2))

    with pytest.raises(PreconditionFailed):
        await jane.provider.delete(created.remote_id, created.etag)

    assert jane.calendar.names() == [caldav_resource_name(our_id())]


async def test_deleting_twice_is_no_error(jane: Connected) -> None:
    created = await jane.provider.create(our_id(), "lesson:1", lesson())
    mark = jane.mark()

    await jane.provider.delete(created.remote_id, created.etag)
    await jane.provider.delete(created.remote_id, created.etag)

    assert jane.since(mark) == [("delete-event", 200), ("delete-event", 404)]
    assert jane.calendar.names() == []
    gone = await jane.provider.event(created.remote_id)
    assert gone.content is None


# --- incremental sync ----------------------------------------------------------------------------


async def test_an_incremental_sync_after_one_change_reads_only_that_event(
    jane: Connected,
) -> None:
    created = [await jane.provider.create(our_id(n), f"lesson:{n}", lesson(n)) for n in range(5)]
    first = await jane.provider.changes()
    assert len(first.events) == 5
    known = {event.remote_id: event.etag for event in first.events}
    changed = await jane.provider.update(
        created[2].remote_id, created[2].etag, "lesson:2", lesson(2, summary="Moved to Friday")
    )
    known[changed.remote_id] = changed.etag  # what the sync service stores after its write
    text, _etag = jane.calendar.get(caldav_resource_name(our_id(4)))
    jane.calendar.put(caldav_resource_name(our_id(4)), text.replace("Room 3", "Hall"))
    mark = jane.mark()

    later = await jane.provider.changes(first.token, known)

    # One REPORT for what changed, one multiget for the one event not known at its etag.
    assert jane.since(mark) == [("sync-collection", 207), ("calendar-multiget", 207)]
    assert not later.complete
    assert later.token != first.token
    [event] = later.events
    assert event.remote_id == created[4].remote_id
    assert event.content == lesson(4, location="Hall")
    assert later.unchanged == {changed.remote_id}  # our own write, not read again


async def test_an_incremental_sync_with_no_change_is_one_request(jane: Connected) -> None:
    await jane.provider.create(our_id(), "lesson:1", lesson())
    first = await jane.provider.changes()
    mark = jane.mark()

    later = await jane.provider.changes(first.token)

    assert jane.since(mark) == [("sync-collection", 207)]
    assert later.events == []
    assert not later.complete
    assert later.token == first.token


async def test_a_deleted_event_shows_as_gone_in_the_incremental_answer(jane: Connected) -> None:
    kept = await jane.provider.create(our_id(1), "lesson:1", lesson(1))
    dropped = await jane.provider.create(our_id(2), "lesson:2", lesson(2))
    first = await jane.provider.changes()
    jane.calendar.delete(caldav_resource_name(our_id(2)))

    later = await jane.provider.changes(first.token, {kept.remote_id: kept.etag})

    assert later.events == [RemoteEvent(dropped.remote_id, "", None)]


async def test_a_refused_sync_token_gives_a_complete_listing(jane: Connected) -> None:
    one = await jane.provider.create(our_id(1), "lesson:1", lesson(1))
    two = await jane.provider.create(our_id(2), "lesson:2", lesson(2))
    mark = jane.mark()

    answer = await jane.provider.changes(
        "http://radicale.org/ns/sync/garbage", {one.remote_id: one.etag}
    )

    assert answer.complete
    assert answer.token.startswith("http://radicale.org/ns/sync/")
    assert [event.remote_id for event in answer.events] == [two.remote_id]
    assert answer.unchanged == {one.remote_id}
    # Radicale refuses it with 403 and DAV:valid-sync-token; then the initial sync.
    assert jane.since(mark) == [
        ("calendar-properties", 207),
        ("sync-collection", 403),
        ("sync-collection", 207),
        ("calendar-multiget", 207),
    ]


async def test_a_complete_listing_reads_nothing_the_caller_knows_at_its_etag(
    jane: Connected,
) -> None:
    created = [await jane.provider.create(our_id(n), f"lesson:{n}", lesson(n)) for n in range(3)]
    mark = jane.mark()

    answer = await jane.provider.changes("", {event.remote_id: event.etag for event in created})

    assert answer.complete
    assert answer.events == []
    assert answer.unchanged == {event.remote_id for event in created}
    assert jane.since(mark) == [("calendar-properties", 207), ("sync-collection", 207)]


class NoSyncCollection(httpx.AsyncBaseTransport):
    """The network, except that the calendar no longer says it answers sync-collection: an
    older CalDAV server."""

    def __init__(self) -> None:
        self._network = httpx.AsyncHTTPTransport()

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        request.headers["Accept-Encoding"] = "identity"
        response = await self._network.handle_async_request(request)
        if request.method != "PROPFIND" or request.headers.get("Depth") != "0":
            return response
        body = (await response.aread()).replace(b"<sync-collection />", b"")
        headers = [(k, v) for k, v in response.headers.items() if k.lower() != "content-length"]
        return httpx.Response(response.status_code, headers=headers, content=body)

    async def aclose(self) -> None:
        await self._network.aclose()


async def test_a_server_without_sync_collection_is_listed_whole_and_read_only_where_changed(
    radicale: TeacherCalendar, connect: Connect
) -> None:
    older = await connect(radicale, transport=NoSyncCollection())
    one = await older.provider.create(our_id(1), "lesson:1", lesson(1))
    two = await older.provider.create(our_id(2), "lesson:2", lesson(2))
    mark = older.mark()

    answer = await older.provider.changes("whatever", {one.remote_id: one.etag})

    assert answer.complete
    assert [event.remote_id for event in answer.events] == [two.remote_id]
    assert answer.unchanged == {one.remote_id}
    assert older.since(mark) == [
        ("calendar-properties", 207),
        ("calendar-listing", 207),
        ("calendar-multiget", 207),
    ]


async def test_an_address_with_an_at_sign_and_a_space_gives_one_id_per_event(
    radicale_server: Radicale, connect: Connect
) -> None:
    calendar = radicale_server.calendar("jane@example.org", "Piano lessons")
    jane = await connect(calendar)
    assert jane.provider.path.endswith("/jane@example.org/Piano%20lessons/")

    created = await jane.provider.create(our_id(), "lesson:1", lesson())
    [listed] = (await jane.provider.changes()).events

    assert listed.remote_id == created.remote_id
    assert (await jane.provider.event(created.remote_id)).content == lesson()
    updated = await jane.provider.update(created.remote_id, listed.etag, "lesson:1", lesson(2))
    await jane.provider.delete(updated.remote_id, updated.etag)
    assert calendar.names() == []


async def test_tasks_in_the_calendar_are_not_events(jane: Connected) -> None:
    jane.calendar.put(
        "task.ics",
        "BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:-//Teacher//EN\r\nBEGIN:VTODO\r\n"
        "UID:task-1\r\nDTSTAMP:20260101T000000Z\r\nSUMMARY:Buy strings\r\nEND:VTODO\r\n"
        "END:VCALENDAR\r\n",
    )
    created = await jane.provider.create(our_id(), "lesson:1", lesson())

    answer = await jane.provider.changes()

    assert [event.remote_id for event in answer.events] == [created.remote_id]


# --- recurring series ----------------------------------------------------------------------------

TEACHERS_SERIES = """BEGIN:VCALENDAR
VERSION:2.0
PRODID:-//Teacher's calendar app//EN
BEGIN:VTIMEZONE
TZID:Europe/London
BEGIN:STANDARD
DTSTART:19701025T020000
TZOFFSETFROM:+0100
TZOFFSETTO:+0000
RRULE:FREQ=YEARLY;BYMONTH=10;BYDAY=-1SU
END:STANDARD
BEGIN:DAYLIGHT
DTSTART:19700329T010000
TZOFFSETFROM:+0000
TZOFFSETTO:+0100
RRULE:FREQ=YEARLY;BYMONTH=3;BYDAY=-1SU
END:DAYLIGHT
END:VTIMEZONE
BEGIN:VEVENT
UID:violin-tuesdays
DTSTAMP:20260101T000000Z
DTSTART;TZID=Europe/London:20260303T170000
DTEND;TZID=Europe/London:20260303T174500
RRULE:FREQ=WEEKLY;COUNT=8
EXDATE;TZID=Europe/London:20260317T170000
SUMMARY:Violin with Sam
BEGIN:VALARM
ACTION:DISPLAY
DESCRIPTION:Violin soon
TRIGGER:-PT15M
END:VALARM
END:VEVENT
BEGIN:VEVENT
UID:violin-tuesdays
DTSTAMP:20260101T000000Z
RECURRENCE-ID;TZID=Europe/London:20260310T170000
DTSTART;TZID=Europe/London:20260312T180000
DTEND;TZID=Europe/London:20260312T184500
SUMMARY:Violin with Sam (moved to Thursday)
END:VEVENT
BEGIN:VEVENT
UID:violin-tuesdays
DTSTAMP:20260101T000000Z
RECURRENCE-ID;TZID=Europe/London:20260407T170000
DTSTART;TZID=Europe/London:20260407T170000
DTEND;TZID=Europe/London:20260407T174500
STATUS:CANCELLED
SUMMARY:Violin with Sam
END:VEVENT
END:VCALENDAR
""".replace("\n", "\r\n")

LONDON = ZoneInfo("Europe/London")


def london(day: int, month: int = 3, hour: int = 17, minute: int = 0) -> datetime:
    return datetime(2026, month, day, hour, minute, tzinfo=LONDON)


async def test_a_series_with_a_moved_and_a_cancelled_occurrence_is_a_master_and_overrides(
    jane: Connected,
) -> None:
    jane.calendar.put("violin.ics", TEACHERS_SERIES)
    href = jane.provider.path + "violin.ics"

    events = by_id((await jane.provider.changes()).events)

    moved_id = occurrence_id(href, london(10))
    cancelled_id = occurrence_id(href, london(7, 4))  # after the clocks went forward
    excluded_id = occurrence_id(href, london(17))
    assert set(events) == {href, moved_id, cancelled_id, excluded_id}
    master = events[href]
    assert master.content is not None
    assert master.key == ""
    assert master.content.start == london(3).astimezone(UTC)
    assert master.content.timezone == "Europe/London"
    assert master.content.recurrence == ("RRULE:FREQ=WEEKLY;COUNT=8", "EXDATE:20260317T170000Z")
    moved = events[moved_id]
    assert moved.series == href
    assert moved.original_start == london(10).astimezone(UTC)
    assert moved.content is not None
    assert moved.content.start == london(12, hour=18).astimezone(UTC)
    assert moved.content.summary == "Violin with Sam (moved to Thursday)"
    assert events[cancelled_id].content is None
    assert events[cancelled_id].original_start == datetime(2026, 4, 7, 16, tzinfo=UTC)
    assert events[excluded_id].content is None
    assert {event.etag for event in events.values()} == {master.etag}


async def test_an_occurrence_is_moved_and_cancelled_on_its_own(jane: Connected) -> None:
    series = lesson(
        0,
        start=london(2, hour=10),
        end=london(2, hour=11),
        recurrence=("RRULE:FREQ=WEEKLY;COUNT=10",),
        timezone="Europe/London",
    )
    created = await jane.provider.create(our_id(), "series:1", series)
    fourth = occurrence_id(created.remote_id, london(23, hour=10))
    fifth = occurrence_id(created.remote_id, london(30, hour=10))  # British Summer Time

    untouched = await jane.provider.event(fifth)
    assert untouched.content is not None
    assert untouched.content.start == london(30, hour=10).astimezone(UTC)
    assert untouched.series == created.remote_id

    moved_content = lesson(0, start=london(24, hour=15), end=london(24, hour=16))
    moved = await jane.provider.update(fourth, created.etag, "series:1:4", moved_content)
    assert moved.content == moved_content
    await jane.provider.delete(fifth, moved.etag)

    events = by_id((await jane.provider.changes()).events)
    assert events[fourth].content == moved_content
    assert events[fourth].key == "series:1:4"
    assert events[fourth].original_start == london(23, hour=10).astimezone(UTC)
    assert events[fifth].content is None
    master = events[created.remote_id]
    assert master.content is not None
    assert "EXDATE:20260330T090000Z" in master.content.recurrence
    assert master.content.start == series.start

    with pytest.raises(PreconditionFailed):  # the series moved on since `created`
        await jane.provider.delete(
            occurrence_id(created.remote_id, london(16, hour=10)), created.etag
        )


async def test_a_cancelled_occurrence_comes_back_when_it_is_written_again(
    jane: Connected,
) -> None:
    series = lesson(
        0,
        start=datetime(2026, 3, 2, tzinfo=UTC),
        end=datetime(2026, 3, 3, tzinfo=UTC),
        all_day=True,
        recurrence=("RRULE:FREQ=WEEKLY;COUNT=5",),
    )
    created = await jane.provider.create(our_id(), "series:1", series)
    second = occurrence_id(created.remote_id, datetime(2026, 3, 9, tzinfo=UTC))
    await jane.provider.delete(second, created.etag)
    cancelled = await jane.provider.event(second)
    assert cancelled.content is None

    back = replace(
        series,
        start=datetime(2026, 3, 10, tzinfo=UTC),
        end=datetime(2026, 3, 11, tzinfo=UTC),
        recurrence=(),
    )
    revived = await jane.provider.update(second, cancelled.etag, "series:1:2", back)

    assert revived.content == back
    events = by_id((await jane.provider.changes()).events)
    assert events[second].content == back
    assert events[created.remote_id].content == series  # its EXDATE went again


async def test_an_update_keeps_what_the_teachers_app_added(jane: Connected) -> None:
    jane.calendar.put("violin.ics", TEACHERS_SERIES)
    href = jane.provider.path + "violin.ics"
    master = by_id((await jane.provider.changes()).events)[href]
    assert master.content is not None

    renamed = replace(master.content, summary="Violin with Sam and Alex")
    updated = await jane.provider.update(href, master.etag, "series:7", renamed)

    assert updated.content == renamed
    assert updated.key == "series:7"
    text, _etag = jane.calendar.get("violin.ics")
    assert "BEGIN:VALARM" in text
    assert "TRIGGER:-PT15M" in text
    events = by_id((await jane.provider.changes()).events)
    moved = events[occurrence_id(href, london(10))]
    assert moved.content is not None
    assert moved.content.summary == "Violin with Sam (moved to Thursday)"


async def test_moving_the_series_drops_overrides_of_occurrences_it_no_longer_has(
    jane: Connected,
) -> None:
    jane.calendar.put("violin.ics", TEACHERS_SERIES)
    href = jane.provider.path + "violin.ics"
    first = await jane.provider.changes()
    master = by_id(first.events)[href]
    assert master.content is not None
    known = {event.remote_id: event.etag for event in first.events}

    wednesdays = replace(
        master.content,
        start=master.content.start + timedelta(days=1),
        end=master.content.end + timedelta(days=1),
        recurrence=("RRULE:FREQ=WEEKLY;COUNT=8",),
    )
    await jane.provider.update(href, master.etag, "", wednesdays)
    later = await jane.provider.changes(first.token, known)

    events = by_id(later.events)
    assert events[href].content == wednesdays
    moved_id = occurrence_id(href, london(10))
    assert events[moved_id] == RemoteEvent(
        moved_id, "", None, series=href, original_start=london(10).astimezone(UTC)
    )


# --- content round trips -------------------------------------------------------------------------

NEW_YORK = ZoneInfo("America/New_York")

ROUND_TRIPS = {
    "text with accents, newlines and commas": lesson(
        summary="Leçon de piano, Zoë; niveau 2",
        location="Salle 3, 1er étage",
        description=(
            "Bring the Czerny book,\nthe metronome; and a pencil.\n\nÀ bientôt — Mme Dvořák"
        ),
    ),
    "an all-day event": lesson(
        start=datetime(2026, 3, 14, tzinfo=UTC), end=datetime(2026, 3, 16, tzinfo=UTC), all_day=True
    ),
    "a tentative online lesson": lesson(status=EventStatus.TENTATIVE, online_meeting=True),
    "a cancelled lesson": lesson(status=EventStatus.CANCELLED),
    "a weekly series across the clocks going forward in London": lesson(
        start=datetime(2026, 3, 16, 17, 30, tzinfo=LONDON),
        end=datetime(2026, 3, 16, 18, 15, tzinfo=LONDON),
        recurrence=(
            "RRULE:FREQ=WEEKLY;COUNT=6;BYDAY=MO",
            "EXDATE;TZID=Europe/London:20260406T173000",
        ),
        timezone="Europe/London",
    ),
    "a weekly series across the clocks going back in New York": lesson(
        start=datetime(2026, 10, 20, 16, 0, tzinfo=NEW_YORK),
        end=datetime(2026, 10, 20, 17, 0, tzinfo=NEW_YORK),
        recurrence=(
            "RRULE:FREQ=WEEKLY;UNTIL=20261201T000000Z;BYDAY=TU,TH",
            "EXDATE:20261105T210000Z",
            "RDATE;TZID=America/New_York:20261107T100000",
        ),
        timezone="America/New_York",
    ),
    "an all-day series": lesson(
        start=datetime(2026, 3, 2, tzinfo=UTC),
        end=datetime(2026, 3, 3, tzinfo=UTC),
        all_day=True,
        recurrence=("RRULE:FREQ=MONTHLY;UNTIL=20261231", "EXDATE;VALUE=DATE:20260502"),
    ),
    "a series in UTC": lesson(recurrence=("RRULE:FREQ=DAILY;COUNT=3",), timezone="UTC"),
}


@pytest.mark.parametrize("content", ROUND_TRIPS.values(), ids=ROUND_TRIPS.keys())
async def test_content_reads_back_as_it_was_written(jane: Connected, content: EventContent) -> None:
    created = await jane.provider.create(our_id(), "lesson:1", content)
    assert created.content == content

    listed = by_id((await jane.provider.changes()).events)[created.remote_id]
    assert listed.content == content
    assert listed.content is not None
    assert listed.content.content_hash() == content.content_hash()

    updated = await jane.provider.update(created.remote_id, created.etag, "lesson:1", content)
    assert updated.content == content
    assert (await jane.provider.event(created.remote_id)).content == content


async def test_the_dst_series_is_written_in_its_zone_with_a_vtimezone(jane: Connected) -> None:
    content = ROUND_TRIPS["a weekly series across the clocks going forward in London"]
    await jane.provider.create(our_id(), "lesson:1", content)

    text, _etag = jane.calendar.get(caldav_resource_name(our_id()))

    assert "DTSTART;TZID=Europe/London:20260316T173000" in text
    assert "EXDATE;TZID=Europe/London:20260406T173000" in text
    assert "BEGIN:VTIMEZONE" in text
    assert "TZID:Europe/London" in text.replace("\r\n", "\n").split("BEGIN:VTIMEZONE")[1]
    assert "X-SWITCHBOARD-KEY:lesson:1" in text


async def test_a_teachers_event_without_an_end_or_with_a_floating_time_is_read_by_rfc_5545(
    jane: Connected,
) -> None:
    jane.calendar.put(
        "floating.ics",
        "BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:-//Teacher//EN\r\nBEGIN:VEVENT\r\n"
        "UID:floating-1\r\nDTSTAMP:20260101T000000Z\r\nDTSTART:20260302T100000\r\n"
        "DURATION:PT45M\r\nSUMMARY:Theory\r\nEND:VEVENT\r\nEND:VCALENDAR\r\n",
    )
    jane.calendar.put(
        "holiday.ics",
        "BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:-//Teacher//EN\r\nBEGIN:VEVENT\r\n"
        "UID:holiday-1\r\nDTSTAMP:20260101T000000Z\r\nDTSTART;VALUE=DATE:20260406\r\n"
        "SUMMARY:Easter Monday\r\nEND:VEVENT\r\nEND:VCALENDAR\r\n",
    )

    events = by_id((await jane.provider.changes()).events)

    floating = events[jane.provider.path + "floating.ics"].content
    assert floating is not None
    assert (floating.start, floating.end) == (MONDAY, MONDAY + timedelta(minutes=45))
    holiday = events[jane.provider.path + "holiday.ics"].content
    assert holiday is not None
    assert holiday.all_day
    assert (holiday.start, holiday.end) == (
        datetime(2026, 4, 6, tzinfo=UTC),
        datetime(2026, 4, 7, tzinfo=UTC),
    )


async def test_floating_times_are_read_in_the_calendars_own_zone(
    radicale: TeacherCalendar, connect: Connect
) -> None:
    radicale.set_timezone("America/New_York")
    radicale.put(
        "floating.ics",
        "BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:-//Teacher//EN\r\nBEGIN:VEVENT\r\n"
        "UID:floating-2\r\nDTSTAMP:20260101T000000Z\r\nDTSTART:20260302T100000\r\n"
        "DTEND:20260302T110000\r\nSUMMARY:Theory\r\nEND:VEVENT\r\nEND:VCALENDAR\r\n",
    )
    jane = await connect(radicale)

    [event] = (await jane.provider.changes()).events

    assert event.content is not None
    assert event.content.start == datetime(2026, 3, 2, 10, tzinfo=NEW_YORK)


# --- errors and connecting -----------------------------------------------------------------------


async def test_a_calendar_deleted_after_connecting_is_gone(jane: Connected) -> None:
    first = await jane.provider.changes()
    jane.calendar.remove()

    with pytest.raises(CalendarGone, match="calendar address is wrong"):
        await jane.provider.changes(first.token)
    with pytest.raises(CalendarGone):
        await jane.provider.create(our_id(), "lesson:1", lesson())


async def test_a_wrong_password_is_a_clear_error(tmp_path: Path, connect: Connect) -> None:
    # A Radicale of its own that checks passwords (about a second to start).
    with running_radicale(tmp_path / "radicale", users={"jane": "right", "sam": "pw"}) as server:
        calendar = server.calendar("jane")
        wrong = await connect(calendar, password="wrong")
        with pytest.raises(CredentialsRefused, match="username or app password"):
            await wrong.provider.changes()
        health = await wrong.provider.check_health()
        assert not health.ok
        assert health.error_class == "auth"
        assert "app password" in health.detail

        someone_else = await connect(calendar, username="sam", password="pw")
        with pytest.raises(CredentialsRefused, match="HTTP 403"):
            await someone_else.provider.create(our_id(), "lesson:1", lesson())

        right = await connect(calendar)
        health = await right.provider.check_health()
        assert health.ok
        assert health.detail.startswith(f"The calendar “{calendar.url.split('/')[-2]}” answered")
        await right.provider.create(our_id(), "lesson:1", lesson())


async def test_a_wrong_calendar_address_says_so(
    radicale: TeacherCalendar, connect: Connect
) -> None:
    lost = await connect(radicale, url=radicale.url.rstrip("/") + "-typo/")

    with pytest.raises(CalendarGone, match="calendar address is wrong"):
        await lost.provider.changes()
    health = await lost.provider.check_health()
    assert not health.ok
    assert health.error_class == "not_found"

    account = await connect(radicale, url=radicale.url.rsplit("/", 2)[0] + "/")
    with pytest.raises(CalendarGone, match="not a calendar"):
        await account.provider.changes()


async def test_a_connection_added_through_the_services_is_a_caldav_calendar(
    services: Services, radicale: TeacherCalendar
) -> None:
    record = await services.connections.add(
        "caldav",
        "Jane's lessons",
        {
            "calendar_url": radicale.url,
            "username": radicale.user,
            "teacher": "jane@example.org",
            "conflicts": "school_wins",
        },
        {"password": radicale.password},
    )

    provider = await services.connections.provider(record.id)

    assert isinstance(provider, CalDAV)
    assert isinstance(provider, CalendarBackend)
    assert (await services.connections.test(record.id)).ok
    created = await provider.create(our_id(), "lesson:1", lesson())
    assert (await provider.changes()).events == [created]
