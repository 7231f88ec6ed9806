"""Calendar sync with a real CalDAV server (Radicale, started on 127.0.0.1 by the tests): the
two-way round trip — lessons into the teacher's calendar, the teacher's own calendar app moving
one, the office accepting it, the school changing another — each sync costing requests in
proportion to what changed, counted in the request log."""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import icalendar
import pytest
from dateutil.rrule import rrulestr
from sqlalchemy import func, select

from app.domain.school import LessonDraft, LessonRecord, TeacherDraft
from app.services import Services
from app.services.calendar_sync import SyncReport
from app.store.integration import RequestLogEntry
from tests.support.radicale import TeacherCalendar

TEACHER = "T-07"  # named by reference this time


def at(days: int, hour: int) -> datetime:
    base = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    return base + timedelta(days=days, hours=hour)


@dataclass
class Caldav:
    services: Services
    calendar: TeacherCalendar
    connection: int
    lessons: list[LessonRecord]

    async def sync(self) -> SyncReport:
        report = await self.services.calendar_sync.sync(self.connection)
        assert report.outcome == "ok", report.message
        return report

    async def requests(self) -> int:
        await self.services.requests.flush()

        def count(session: object) -> int:
            return int(
                session.scalar(  # type: ignore[attr-defined]
                    select(func.count())
                    .select_from(RequestLogEntry)
                    .where(RequestLogEntry.connection_id == self.connection)
                )
            )

        return await self.services.db.read(count)

    def resource_at(self, name: str) -> tuple[str, icalendar.Event, str]:
        """A resource's name, its first VEVENT (the master) and its etag."""
        text, etag = self.calendar.get(name)
        return name, icalendar.Calendar.from_ical(text).walk("VEVENT")[0], etag

    def resource_of(self, lesson: LessonRecord) -> tuple[str, icalendar.Event, str]:
        for name in self.calendar.names():
            text, etag = self.calendar.get(name)
            event = icalendar.Calendar.from_ical(text).walk("VEVENT")[0]
            if str(event.get("X-SWITCHBOARD-KEY", "")).endswith(f":lesson:{lesson.id}"):
                return name, event, etag
        raise AssertionError(f"no event for lesson {lesson.id}")


@pytest.fixture
async def caldav(services: Services, radicale: TeacherCalendar) -> Caldav:
    teacher = await services.school.save_teacher(
        TeacherDraft("Tendai", "Ncube", ref=TEACHER, email="ncube@school.example")
    )
    lessons = [
        await services.school.save_lesson(
            LessonDraft(f"Violin {n}", teacher.id, at(n + 2, 14), at(n + 2, 15))
        )
        for n in range(5)
    ]
    record = await services.connections.add(
        "caldav",
        "Mr Ncube's calendar",
        {"calendar_url": radicale.url, "username": radicale.user, "teacher": TEACHER},
        {"password": radicale.password},
    )
    return Caldav(services, radicale, record.id, lessons)


async def test_a_two_way_round_trip_with_a_real_caldav_server(caldav: Caldav) -> None:
    first = await caldav.sync()
    assert first.counts["created"] == 5
    assert len(caldav.calendar.names()) == 5

    # The teacher's own calendar app moves a lesson two hours later.
    lesson = caldav.lessons[2]
    name, event, etag = caldav.resource_of(lesson)
    event["DTSTART"].dt = lesson.starts_at + timedelta(hours=2)
    event["DTEND"].dt = lesson.ends_at + timedelta(hours=2)
    wrapper = icalendar.Calendar()
    wrapper.add("prodid", "-//Teacher's app//EN")
    wrapper.add("version", "2.0")
    wrapper.add_component(event)
    caldav.calendar.put(name, wrapper.to_ical().decode(), etag=etag)

    before = await caldav.requests()
    proposed = await caldav.sync()
    assert proposed.counts["proposals"] == 1
    # What changed is read, nothing else: the sync-collection report, and one multiget.
    assert await caldav.requests() - before == 2
    [issue] = await caldav.services.calendar_sync.issues()
    await caldav.services.calendar_sync.accept(issue.id, "office")
    moved = await caldav.services.school.lesson(lesson.id)
    assert moved.starts_at == lesson.starts_at + timedelta(hours=2)

    # The school changes another lesson; the teacher's calendar follows.
    other = caldav.lessons[0]
    await caldav.services.school.save_lesson(
        replace(other.draft(), title="Violin (exam practice)"),
        lesson_id=other.id,
        version=other.version,
    )
    second = await caldav.sync()
    assert second.counts["updated"] >= 1
    _, written, _ = caldav.resource_of(other)
    assert str(written["SUMMARY"]) == "Violin (exam practice)"
    _, accepted, _ = caldav.resource_of(lesson)
    assert accepted.decoded("DTSTART") == lesson.starts_at + timedelta(hours=2)

    before = await caldav.requests()
    quiet = await caldav.sync()
    assert "already in step" in quiet.message
    assert await caldav.requests() - before == 1  # one report: nothing changed
    assert await caldav.services.calendar_sync.issues() == []


async def test_a_weekly_lesson_is_one_recurring_event_and_a_moved_occurrence_comes_back(
    caldav: Caldav,
) -> None:
    """A series across the start of summer time in New York: one resource, whose rule keeps
    17:00 there; the teacher's app moves one occurrence (an override), which comes back as a
    proposal for that lesson alone."""
    services = caldav.services
    zone = ZoneInfo("America/New_York")
    await services.settings.set("school.timezone", zone.key)
    teacher = caldav.lessons[0].teacher_id
    first = datetime(2027, 3, 1, 17, tzinfo=zone)  # EDT from 14 March
    series = await services.school.save_series(
        LessonDraft("Cello", teacher, first, first + timedelta(minutes=45)), weeks=4
    )

    report = await caldav.sync()

    assert report.counts["created"] == 6  # five single lessons and the series
    [(name, master, etag)] = [
        found for found in map(caldav.resource_at, caldav.calendar.names()) if found[1].get("RRULE")
    ]
    assert str(master["DTSTART"].params["TZID"]) == "America/New_York"
    occurrences = list(
        rrulestr(master["RRULE"].to_ical().decode(), dtstart=master.decoded("DTSTART"))
    )
    assert [moment.astimezone(UTC) for moment in occurrences] == [
        lesson.starts_at for lesson in series
    ]  # 17:00 in New York: 22:00 UTC, then 21:00 UTC

    third = series[2]
    text, _ = caldav.calendar.get(name)
    calendar = icalendar.Calendar.from_ical(text)
    override = icalendar.Event()
    override.add("UID", str(master["UID"]))
    override.add("RECURRENCE-ID", third.starts_at)
    override.add("DTSTAMP", datetime.now(UTC))
    override.add("DTSTART", third.starts_at + timedelta(hours=1))
    override.add("DTEND", third.ends_at + timedelta(hours=1))
    override.add("SUMMARY", str(master["SUMMARY"]))
    calendar.add_component(override)
    caldav.calendar.put(name, calendar.to_ical().decode(), etag=etag)

    proposed = await caldav.sync()

    assert proposed.counts["proposals"] == 1
    [issue] = await services.calendar_sync.issues()
    assert (issue.kind, issue.lesson_id) == ("move", third.id)
    await services.calendar_sync.accept(issue.id, "office")
    assert (await services.school.lesson(third.id)).starts_at == third.starts_at + timedelta(
        hours=1
    )
    await caldav.sync()
    assert "already in step" in (await caldav.sync()).message
