"""Calendar sync as the office lives it, against the Google Calendar fake over real HTTP: lessons
appear in the teacher's calendar, a move or deletion the teacher makes there comes back as a
proposal, text they edit is set back, a lesson changed on both sides is settled by the
connection's policy or shown side by side, a write refused because the event changed (412) is
decided again, an expired sync token means a full resync that merges, and deletions that look
like a mistake wait for a person."""

from __future__ import annotations

import asyncio
import itertools
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import httpx
import pytest

from app.domain.school import LessonDraft, LessonRecord, LessonStatus, TeacherDraft
from app.domain.sync import event_id
from app.services import Services, calendar_sync
from app.services.calendar_sync import SyncReport
from app.services.inbox import IncomingEvent
from app.services.webhook_intake import webhook_url
from tests.fakes.google_calendar import FakeGoogleCalendar
from tests.fakes.google_oauth import CALENDAR_EVENTS_SCOPE, FakeGoogleOAuth
from tests.support.google import GoogleServers

TEACHER = "moyo@school.example"


@dataclass
class School:
    services: Services
    google: FakeGoogleCalendar
    connection: int
    teacher: int
    lessons: list[LessonRecord]

    async def sync(self, confirm: str = "") -> SyncReport:
        report = await self.services.calendar_sync.sync(self.connection, confirm=confirm)
        assert report.outcome != "failed", report.message
        return report

    def events(self) -> dict[str, dict[str, Any]]:
        """The events in the teacher's calendar that are not deleted, by our key."""
        return {
            event["extendedProperties"]["private"]["switchboardKey"]: event
            for event in self.google.stored_events()
            if event.get("status") != "cancelled"
            and "switchboardKey" in event.get("extendedProperties", {}).get("private", {})
        }

    def event_of(self, lesson: LessonRecord) -> dict[str, Any]:
        [found] = [e for key, e in self.events().items() if key.endswith(f":lesson:{lesson.id}")]
        return found

    async def lesson(self, lesson_id: int) -> LessonRecord:
        return await self.services.school.lesson(lesson_id)

    async def set_policy(self, policy: str) -> None:
        record = await self.services.connections.connection(self.connection)
        await self.services.connections.update(
            self.connection, record.name, {**record.config, "conflicts": policy}, {}
        )


def at(days: int, hour: int) -> datetime:
    base = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    return base + timedelta(days=days, hours=hour)


@pytest.fixture
async def school(services: Services, google_servers: GoogleServers) -> School:
    oauth = FakeGoogleOAuth()
    google = FakeGoogleCalendar(oauth, owner=TEACHER)
    google_servers.oauth.target, google_servers.calendar.target = oauth.app, google.app
    teacher = await services.school.save_teacher(
        TeacherDraft("Rudo", "Moyo", email=TEACHER.upper())  # e-mail matched in any case
    )
    lessons = [
        await services.school.save_lesson(
            LessonDraft(f"Piano {n}", teacher.id, at(n + 1, 15), at(n + 1, 15) + timedelta(hours=1))
        )
        for n in range(4)
    ]
    record = await services.connections.add(
        "google-calendar",
        "Ms Moyo's calendar",
        {
            "client_id": oauth.client_id,
            "teacher": TEACHER,
            "api_url": google_servers.calendar_url,
            "auth_url": google_servers.oauth_url + "/o/oauth2/v2/auth",
            "token_url": google_servers.oauth_url + "/token",
            "revoke_url": google_servers.oauth_url + "/revoke",
        },
        {
            "client_secret": oauth.client_secret,
            "refresh_token": oauth.issue_tokens(CALENDAR_EVENTS_SCOPE)["refresh_token"],
        },
    )
    return School(services, google, record.id, teacher.id, lessons)


async def test_the_first_sync_puts_every_lesson_in_the_calendar_under_its_own_id(
    school: School,
) -> None:
    report = await school.sync()

    assert report.counts["created"] == 4
    events = school.events()
    assert len(events) == 4
    namespace = f"{await school.services.settings.install_id()}:{school.connection}"
    for lesson in school.lessons:
        event = school.event_of(lesson)
        assert event["id"] == event_id(namespace, "lesson", lesson.id)
        assert event["summary"] == lesson.title
        assert datetime.fromisoformat(event["start"]["dateTime"]) == lesson.starts_at

    again = await school.sync()  # nothing changed on either side
    assert again.counts.get("created", 0) == again.counts.get("updated", 0) == 0
    assert "already in step" in again.message


async def test_a_lesson_moved_at_school_moves_in_the_calendar(school: School) -> None:
    await school.sync()
    lesson = school.lessons[0]
    moved = await school.services.school.save_lesson(
        replace(lesson.draft(), starts_at=at(9, 10), ends_at=at(9, 11)),
        lesson_id=lesson.id,
        version=lesson.version,
    )
    puts_before = school.google.count("PUT", "event")

    report = await school.sync()

    assert report.counts["updated"] == 1
    assert datetime.fromisoformat(school.event_of(moved)["start"]["dateTime"]) == at(9, 10)
    assert school.google.count("PUT", "event") == puts_before + 1


async def test_a_move_in_the_calendar_is_a_proposal_and_accepting_it_moves_the_lesson(
    school: School,
) -> None:
    await school.sync()
    lesson = school.lessons[1]
    school.google.teacher_moves(school.event_of(lesson)["id"], at(12, 9), at(12, 10))

    report = await school.sync()

    assert report.counts["proposals"] == 1
    assert (await school.lesson(lesson.id)).starts_at == lesson.starts_at  # not yet
    [issue] = await school.services.calendar_sync.issues()
    assert (issue.kind, issue.lesson_id) == ("move", lesson.id)
    assert datetime.fromisoformat(issue.calendar["start"]) == at(12, 9)
    assert datetime.fromisoformat(issue.school["start"]) == lesson.starts_at
    again = await school.sync()  # still waiting: one proposal, not a second
    assert len(await school.services.calendar_sync.issues()) == 1
    assert again.counts.get("updated", 0) == 0

    await school.services.calendar_sync.accept(issue.id, "office")
    assert (await school.lesson(lesson.id)).starts_at == at(12, 9)
    settled = await school.sync()
    assert settled.counts.get("proposals", 0) == 0
    assert await school.services.calendar_sync.issues() == []
    assert datetime.fromisoformat(school.event_of(lesson)["start"]["dateTime"]) == at(12, 9)


async def test_rejecting_a_move_sets_the_calendar_back(school: School) -> None:
    await school.sync()
    lesson = school.lessons[1]
    school.google.teacher_moves(school.event_of(lesson)["id"], at(12, 9), at(12, 10))
    await school.sync()
    [issue] = await school.services.calendar_sync.issues()

    await school.services.calendar_sync.reject(issue.id, "office")
    report = await school.sync()

    assert report.counts["updated"] == 1
    assert (await school.lesson(lesson.id)).starts_at == lesson.starts_at
    assert datetime.fromisoformat(school.event_of(lesson)["start"]["dateTime"]) == (
        lesson.starts_at
    )
    [settled] = await school.services.calendar_sync.issues(open_only=False)
    assert (settled.resolution, settled.resolved_by) == ("school", "office")


async def test_a_move_that_would_double_book_says_so_and_taking_it_is_refused(
    school: School,
) -> None:
    await school.sync()
    first, second = school.lessons[0], school.lessons[1]
    # The teacher drags the second lesson onto the first one's time.
    school.google.teacher_moves(school.event_of(second)["id"], first.starts_at, first.ends_at)
    await school.sync()
    [issue] = await school.services.calendar_sync.issues()
    assert "double-book" in issue.detail
    assert "Piano 0" in issue.detail

    with pytest.raises(Exception, match="already teaches"):
        await school.services.calendar_sync.accept(issue.id, "office")
    assert len(await school.services.calendar_sync.issues()) == 1  # still open


async def test_a_lesson_deleted_in_the_calendar_is_a_cancellation_to_accept_or_refuse(
    school: School,
) -> None:
    await school.sync()
    kept, cancelled = school.lessons[2], school.lessons[3]
    school.google.teacher_deletes(school.event_of(kept)["id"])
    school.google.teacher_deletes(school.event_of(cancelled)["id"])

    report = await school.sync()

    assert report.counts["proposals"] == 2
    issues = {issue.lesson_id: issue for issue in await school.services.calendar_sync.issues()}
    assert {issue.kind for issue in issues.values()} == {"cancel"}
    await school.services.calendar_sync.reject(issues[kept.id].id, "office")
    await school.services.calendar_sync.accept(issues[cancelled.id].id, "office")
    await school.sync()

    assert (await school.lesson(cancelled.id)).status is LessonStatus.CANCELLED
    assert (await school.lesson(kept.id)).status is LessonStatus.SCHEDULED
    assert school.event_of(kept)["status"] == "confirmed"  # made again under the same id
    assert not [k for k in school.events() if k.endswith(f":lesson:{cancelled.id}")]
    assert await school.services.calendar_sync.issues() == []


async def test_text_a_teacher_edits_is_set_back_to_the_school_s(school: School) -> None:
    await school.sync()
    lesson = school.lessons[0]
    school.google.teacher_edits(school.event_of(lesson)["id"], summary="My own title")

    report = await school.sync()

    assert report.counts["updated"] == 1
    assert report.counts.get("proposals", 0) == 0
    assert school.event_of(lesson)["summary"] == lesson.title


@pytest.mark.parametrize(
    ("policy", "lesson_at", "calendar_at"),
    [
        ("school_wins", (20, 8), (20, 8)),
        ("calendar_wins", (21, 8), (21, 8)),
    ],
)
async def test_a_lesson_changed_on_both_sides_is_settled_by_the_policy(
    school: School, policy: str, lesson_at: tuple[int, int], calendar_at: tuple[int, int]
) -> None:
    await school.set_policy(policy)
    await school.sync()
    lesson = school.lessons[0]
    await school.services.school.save_lesson(
        replace(lesson.draft(), starts_at=at(20, 8), ends_at=at(20, 9)),
        lesson_id=lesson.id,
        version=lesson.version,
    )
    school.google.teacher_moves(school.event_of(lesson)["id"], at(21, 8), at(21, 9))

    report = await school.sync()
    await school.sync()  # and the side that lost is brought in step

    assert report.counts.get("conflicts", 0) == 0
    assert (await school.lesson(lesson.id)).starts_at == at(*lesson_at)
    event = school.event_of(lesson)
    assert datetime.fromisoformat(event["start"]["dateTime"]) == at(*calendar_at)
    assert await school.services.calendar_sync.issues() == []


async def test_a_lesson_changed_on_both_sides_is_shown_side_by_side_when_asked(
    school: School,
) -> None:
    await school.sync()
    lesson = school.lessons[0]
    await school.services.school.save_lesson(
        replace(lesson.draft(), starts_at=at(20, 8), ends_at=at(20, 9)),
        lesson_id=lesson.id,
        version=lesson.version,
    )
    school.google.teacher_moves(school.event_of(lesson)["id"], at(21, 8), at(21, 9))

    report = await school.sync()

    assert report.counts["conflicts"] == 1
    [issue] = await school.services.calendar_sync.issues()
    assert issue.kind == "conflict"
    assert datetime.fromisoformat(issue.school["start"]) == at(20, 8)
    assert datetime.fromisoformat(issue.calendar["start"]) == at(21, 8)
    await school.services.calendar_sync.reject(issue.id, "office")  # keep the school's
    await school.sync()
    assert datetime.fromisoformat(school.event_of(lesson)["start"]["dateTime"]) == at(20, 8)


async def test_a_write_refused_because_the_event_changed_is_decided_again(
    school: School,
) -> None:
    await school.sync()
    lesson = school.lessons[0]
    await school.services.school.save_lesson(
        replace(lesson.draft(), title="Piano (grade 3)"), lesson_id=lesson.id,
        version=lesson.version,
    )  # fmt: skip
    # The teacher changes the event between our reading it and our writing it.
    school.google.fail_next(412, "conditionNotMet", on=("PUT", "event"))

    report = await school.sync()

    assert report.counts.get("reread") == 1
    assert report.counts["updated"] == 1
    assert school.event_of(lesson)["summary"] == "Piano (grade 3)"


async def test_an_expired_sync_token_means_a_full_resync_that_merges(school: School) -> None:
    await school.sync()
    school.google.expire_sync_tokens()
    new = await school.services.school.save_lesson(
        LessonDraft("Violin", school.teacher, at(5, 12), at(5, 13))
    )

    report = await school.sync()

    assert report.complete
    assert report.counts["created"] == 1
    assert report.counts.get("deleted", 0) == 0
    assert len(school.events()) == 5
    assert school.event_of(new)["summary"] == "Violin"


async def add_lessons(school: School, count: int) -> None:
    for n in range(count):
        await school.services.school.save_lesson(
            LessonDraft(f"Flute {n}", school.teacher, at(40 + n, 11), at(40 + n, 12))
        )


@pytest.fixture
def settle_after_five(monkeypatch: pytest.MonkeyPatch) -> None:
    """A sync reads its own writes back from five on (a year's worth in use; five here)."""
    monkeypatch.setattr(calendar_sync, "SETTLE_AFTER", 5)


@pytest.mark.usefixtures("settle_after_five")
async def test_a_sync_that_wrote_many_events_is_not_handed_them_back_by_the_next(
    school: School,
) -> None:
    await add_lessons(school, 3)

    first = await school.sync()
    assert first.counts["created"] == 7

    again = await school.sync()
    assert again.counts.get("read", 0) == 0  # the calendar's changes since: none
    assert len(school.events()) == 7


@pytest.mark.usefixtures("settle_after_five")
async def test_a_teacher_s_move_made_while_a_sync_writes_is_not_lost_behind_its_token(
    school: School, google_servers: GoogleServers
) -> None:
    await school.sync()
    await add_lessons(school, 6)
    moved = school.lessons[1]
    moved_event = school.event_of(moved)["id"]
    inserts = itertools.count()

    async def teacher_moves_midway(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http" and scope["method"] == "POST" and next(inserts) == 3:
            school.google.teacher_moves(moved_event, at(12, 9), at(12, 10))
        await school.google.app(scope, receive, send)

    google_servers.calendar.target = teacher_moves_midway
    during = await school.sync()
    assert during.counts["created"] == 6
    assert during.counts.get("proposals", 0) == 0  # the sync had read the calendar before

    after = await school.sync()
    assert after.counts["proposals"] == 1
    [issue] = await school.services.calendar_sync.issues()
    assert (issue.kind, issue.lesson_id) == ("move", moved.id)


async def test_a_calendar_that_suddenly_shows_nothing_is_not_mirrored_without_confirmation(
    school: School, services: Services
) -> None:
    more = [
        await services.school.save_lesson(
            LessonDraft(f"Theory {n}", school.teacher, at(30 + n, 9), at(30 + n, 10))
        )
        for n in range(4)
    ]
    await school.sync()
    for event in school.events().values():
        school.google.teacher_deletes(event["id"])  # a wiped calendar, or the wrong one

    held = await school.sync()

    assert held.outcome == "held"
    assert "no items" in held.held
    assert held.confirm
    assert await services.calendar_sync.issues() == []  # nothing proposed yet
    for lesson in [*school.lessons, *more]:
        assert (await school.lesson(lesson.id)).status is LessonStatus.SCHEDULED
    links = await services.calendar_sync.calendars()
    assert links[0].held
    assert await services.calendar_sync.held_token(school.connection) == held.confirm

    confirmed = await school.sync(confirm=held.confirm)
    assert confirmed.outcome == "ok"
    assert confirmed.counts["proposals"] == 8  # each to accept or refuse, still


async def test_a_lesson_cancelled_or_deleted_at_school_leaves_the_calendar(school: School) -> None:
    await school.sync()
    cancelled, deleted = school.lessons[0], school.lessons[1]
    await school.services.school.save_lesson(
        replace(cancelled.draft(), status=LessonStatus.CANCELLED),
        lesson_id=cancelled.id,
        version=cancelled.version,
    )
    await school.services.school.delete_lesson(deleted.id)

    report = await school.sync()

    assert report.counts["deleted"] == 2
    keys = set(school.events())
    assert not [key for key in keys if key.endswith((f":{cancelled.id}", f":{deleted.id}"))]
    assert len(keys) == 2


async def test_most_of_the_school_s_lessons_going_at_once_waits_for_confirmation(
    school: School, services: Services
) -> None:
    more = [
        await services.school.save_lesson(
            LessonDraft(f"Theory {n}", school.teacher, at(30 + n, 9), at(30 + n, 10))
        )
        for n in range(12)
    ]
    await school.sync()
    for lesson in more:
        await services.school.delete_lesson(lesson.id)

    held = await school.sync()

    assert held.outcome == "held"
    assert "delete 12 of the 16" in held.held
    assert len(school.events()) == 16  # nothing deleted yet
    done = await school.sync(confirm=held.confirm)
    assert done.counts["deleted"] == 12
    assert len(school.events()) == 4


async def test_a_teacher_named_that_no_one_has_is_a_clear_failure(
    school: School, services: Services
) -> None:
    record = await services.connections.connection(school.connection)
    await services.connections.update(
        school.connection, record.name, {**record.config, "teacher": "nobody@school.example"}, {}
    )

    report = await services.calendar_sync.sync(school.connection)

    assert report.outcome == "failed"
    assert "nobody@school.example" in report.message
    assert "Teachers page" in report.message
    [link] = await services.calendar_sync.calendars()
    assert (link.outcome, link.teacher_name) == ("failed", "")


# --- lessons that repeat --------------------------------------------------------------------------


def instances(
    school: School, google_servers: GoogleServers, master_id: str
) -> list[dict[str, Any]]:
    """The occurrences Google shows of a recurring event (events.instances)."""
    token = school.google.oauth.issue_tokens(CALENDAR_EVENTS_SCOPE)["access_token"]
    answer = httpx.get(
        f"{google_servers.calendar_url}/calendar/v3/calendars/primary/events/{master_id}/instances",
        headers={"Authorization": f"Bearer {token}"},
        timeout=10,
    )
    assert answer.status_code == 200, answer.text
    return list(answer.json()["items"])


async def weekly(school: School, zone: str, first: datetime, weeks: int) -> list[LessonRecord]:
    await school.services.settings.set("school.timezone", zone)
    start = first.replace(tzinfo=ZoneInfo(zone))
    return await school.services.school.save_series(
        LessonDraft("Cello", school.teacher, start, start + timedelta(minutes=45)), weeks=weeks
    )


def master_of(school: School) -> dict[str, Any]:
    [master] = [e for e in school.google.stored_events() if e.get("recurrence")]
    return master


@pytest.mark.parametrize(
    ("zone", "first"),
    [
        ("Europe/London", datetime(2027, 3, 15, 17, 0)),  # BST from 28 March
        ("America/New_York", datetime(2027, 3, 1, 17, 0)),  # EDT from 14 March
    ],
)
async def test_a_weekly_lesson_is_one_recurring_event_on_the_school_s_wall_clock(
    school: School, google_servers: GoogleServers, zone: str, first: datetime
) -> None:
    lessons = await weekly(school, zone, first, weeks=4)

    report = await school.sync()

    assert report.counts["created"] == 5  # the four single lessons, and the series
    master = master_of(school)
    assert master["recurrence"] == ["RRULE:FREQ=WEEKLY;COUNT=4"]
    assert master["start"]["timeZone"] == zone
    shown = [
        datetime.fromisoformat(i["start"]["dateTime"])
        for i in instances(school, google_servers, master["id"])
    ]
    assert shown == [lesson.starts_at for lesson in lessons]  # 17:00 there, before and after
    assert "already in step" in (await school.sync()).message


async def test_an_occurrence_the_teacher_moves_is_a_proposal_for_that_lesson_alone(
    school: School, google_servers: GoogleServers
) -> None:
    lessons = await weekly(school, "Europe/London", datetime(2027, 3, 15, 17, 0), weeks=4)
    await school.sync()
    master = master_of(school)
    third = lessons[2]
    [instance] = [
        i
        for i in instances(school, google_servers, master["id"])
        if datetime.fromisoformat(i["start"]["dateTime"]) == third.starts_at
    ]
    later = third.starts_at + timedelta(hours=1)
    school.google.teacher_moves(instance["id"], later, later + timedelta(minutes=45))

    report = await school.sync()

    assert report.counts.get("proposals") == 1, (report.counts, report.message)
    [issue] = await school.services.calendar_sync.issues()
    assert (issue.kind, issue.lesson_id) == ("move", third.id)
    await school.services.calendar_sync.accept(issue.id, "office")
    assert (await school.lesson(third.id)).starts_at == later
    settled = await school.sync()
    assert settled.counts.get("proposals", 0) == 0
    again = await school.sync()
    assert "already in step" in again.message
    shown = sorted(
        datetime.fromisoformat(i["start"]["dateTime"])
        for i in instances(school, google_servers, master["id"])
    )
    assert shown == sorted([*(x.starts_at for x in lessons if x.id != third.id), later])


async def test_the_office_moving_or_cancelling_one_occurrence_changes_it_alone_in_the_calendar(
    school: School, google_servers: GoogleServers
) -> None:
    lessons = await weekly(school, "America/New_York", datetime(2027, 3, 1, 17, 0), weeks=4)
    await school.sync()
    moved, cancelled = lessons[1], lessons[3]
    earlier = moved.starts_at - timedelta(hours=2)
    await school.services.school.save_lesson(
        replace(moved.draft(), starts_at=earlier, ends_at=earlier + timedelta(minutes=45)),
        lesson_id=moved.id,
        version=moved.version,
    )
    await school.services.school.save_lesson(
        replace(cancelled.draft(), status=LessonStatus.CANCELLED),
        lesson_id=cancelled.id,
        version=cancelled.version,
    )

    report = await school.sync()

    assert (report.counts["updated"], report.counts["deleted"]) == (1, 1)
    master = master_of(school)
    assert master["recurrence"] == ["RRULE:FREQ=WEEKLY;COUNT=4"]  # the series itself as it was
    shown = [
        datetime.fromisoformat(i["start"]["dateTime"])
        for i in instances(school, google_servers, master["id"])
    ]
    assert shown == [lessons[0].starts_at, earlier, lessons[2].starts_at]
    assert "already in step" in (await school.sync()).message


async def test_an_occurrence_the_teacher_cancels_comes_back_when_the_office_keeps_it(
    school: School, google_servers: GoogleServers
) -> None:
    lessons = await weekly(school, "Europe/London", datetime(2027, 3, 15, 17, 0), weeks=3)
    await school.sync()
    master = master_of(school)
    second = lessons[1]
    [instance] = [
        i
        for i in instances(school, google_servers, master["id"])
        if datetime.fromisoformat(i["start"]["dateTime"]) == second.starts_at
    ]
    school.google.teacher_deletes(instance["id"])

    proposed = await school.sync()

    assert proposed.counts["proposals"] == 1
    [issue] = await school.services.calendar_sync.issues()
    assert (issue.kind, issue.lesson_id) == ("cancel", second.id)
    await school.services.calendar_sync.reject(issue.id, "office")
    await school.sync()
    shown = [
        datetime.fromisoformat(i["start"]["dateTime"])
        for i in instances(school, google_servers, master["id"])
    ]
    assert shown == [lesson.starts_at for lesson in lessons]
    assert "already in step" in (await school.sync()).message


# --- push notifications ---------------------------------------------------------------------------


async def test_with_a_public_receiver_google_is_asked_to_tell_of_changes_and_a_notice_syncs_soon(
    school: School, services: Services
) -> None:
    public = "http://127.0.0.1:9"  # the fake takes loopback http; Google wants public https
    await services.settings.set("receiver.public_url", public)

    await school.sync()

    [channel] = school.google.channels.values()
    record = await services.connections.connection(school.connection)
    assert channel.address == webhook_url(school.connection, record.webhook_token or "", public)
    assert "channel_token" in record.secret_fields  # the token Google sends back, to check
    await school.sync()
    assert len(school.google.channels) == 1  # not opened again while it lasts

    heard: list[int] = []
    services.calendar_sync.on_notice(heard.append)
    for number, state in ((1, "sync"), (2, "exists")):
        await services.inbox.store(
            IncomingEvent(school.connection, f"{channel.id}:{number}", state, {}, b"")
        )
    await services.inbox_worker.process_due()
    await asyncio.sleep(0.05)
    assert heard == [school.connection]  # "sync" only opens the channel; "exists" is a change

    await services.settings.set("receiver.public_url", "")
    await school.sync()
    assert channel.stopped  # polled from now on


async def test_signing_out_revokes_google_s_permission_and_forgets_it(
    school: School, services: Services
) -> None:
    await school.sync()
    assert school.google.oauth.live_refresh_tokens

    await services.calendar_sync.sign_out(school.connection)

    assert not school.google.oauth.live_refresh_tokens  # revoked at Google
    record = await services.connections.connection(school.connection)
    assert "refresh_token" not in record.secret_fields
    [link] = await services.calendar_sync.calendars()
    assert not link.signed_in
    report = await services.calendar_sync.sync(school.connection)
    assert report.outcome == "failed"
    assert "sign in" in report.message.lower()


async def test_a_lesson_when_the_teacher_s_calendar_has_them_busy_is_a_double_booking(
    school: School, services: Services
) -> None:
    await school.sync()
    lesson = school.lessons[0]
    dentist = school.google.teacher_creates(
        "Dentist",
        lesson.starts_at - timedelta(minutes=30),
        lesson.starts_at + timedelta(minutes=30),
    )
    school.google.teacher_creates("Gym", at(40, 6), at(40, 7))  # clashes with nothing

    report = await school.sync()

    assert report.counts["double_bookings"] == 1
    [issue] = await services.calendar_sync.issues()
    assert (issue.kind, issue.lesson_id) == ("double_booking", lesson.id)
    assert "Dentist" in issue.detail
    assert issue.calendar["summary"] == "Dentist"
    await school.sync()
    assert len(await services.calendar_sync.issues()) == 1  # told once

    await services.calendar_sync.reject(issue.id, "office")  # keep both
    await school.sync()
    assert await services.calendar_sync.issues() == []  # not raised again for the same times

    school.google.teacher_moves(dentist["id"], lesson.starts_at, lesson.ends_at)
    await school.sync()
    [again] = await services.calendar_sync.issues()
    school.google.teacher_deletes(dentist["id"])
    await school.sync()
    assert await services.calendar_sync.issues() == []  # gone by itself
    [settled] = [i for i in await services.calendar_sync.issues(False) if i.id == again.id]
    assert settled.resolution == "gone"


async def test_cancelling_a_lesson_the_teacher_is_busy_for_settles_the_double_booking(
    school: School, services: Services
) -> None:
    await school.sync()
    lesson = school.lessons[1]
    school.google.teacher_creates("Hospital", lesson.starts_at, lesson.ends_at)
    await school.sync()
    [issue] = await services.calendar_sync.issues()

    await services.calendar_sync.accept(issue.id, "office")

    assert (await school.lesson(lesson.id)).status is LessonStatus.CANCELLED
    report = await school.sync()
    assert report.counts["deleted"] == 1  # its event leaves the calendar
    assert await services.calendar_sync.issues() == []
