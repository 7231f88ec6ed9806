"""The Calendar sync, Conflicts and Jobs pages, driven as the office drives them, with a teacher's
Google calendar played by the fake over real HTTP: a calendar listed with how its sync stands,
"Sync now" without freezing the window, a move the teacher made taken with one click, and the
background jobs' next runs and history with pause and resume."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from pytestqt.qtbot import QtBot

from app.domain.school import LessonDraft, TeacherDraft
from app.engine import EngineState
from app.ui.tray import tooltip
from app.views.calendar_sync import CalendarSyncPage
from app.views.jobs import JobsPage
from app.views.sync_conflicts import ConflictsPage
from tests.fakes.google_calendar import FakeGoogleCalendar
from tests.fakes.google_oauth import CALENDAR_EVENTS_SCOPE, FakeGoogleOAuth
from tests.support.google import GoogleServers
from tests.ui.conftest import Gui

PAGE_SIZE = (1080, 760)
TEACHER = "moyo@school.example"


def at(days: int, hour: int) -> datetime:
    base = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    return base + timedelta(days=days, hours=hour)


@pytest.fixture
def google(gui: Gui, google_servers: GoogleServers) -> dict[str, Any]:
    """A teacher with three lessons, and their Google calendar connected."""
    oauth_url, calendar_url = google_servers.oauth_url, google_servers.calendar_url
    oauth = FakeGoogleOAuth()
    calendar = FakeGoogleCalendar(oauth, owner=TEACHER)
    google_servers.oauth.target, google_servers.calendar.target = oauth.app, calendar.app
    services = gui.bridge.services
    gui.call(services.settings.set, "school.timezone", "UTC")
    teacher = gui.call(services.school.save_teacher, TeacherDraft("Rudo", "Moyo", email=TEACHER))
    lessons = [
        gui.call(
            services.school.save_lesson,
            LessonDraft(f"Piano {n}", teacher.id, at(n + 1, 15), at(n + 1, 16)),
        )
        for n in range(3)
    ]
    record = gui.call(
        services.connections.add,
        "google-calendar",
        "Ms Moyo's calendar",
        {
            "client_id": oauth.client_id,
            "teacher": TEACHER,
            "api_url": calendar_url,
            "auth_url": oauth_url + "/o/oauth2/v2/auth",
            "token_url": oauth_url + "/token",
            "revoke_url": oauth_url + "/revoke",
        },
        {
            "client_secret": oauth.client_secret,
            "refresh_token": oauth.issue_tokens(CALENDAR_EVENTS_SCOPE)["refresh_token"],
        },
    )
    return {"calendar": calendar, "connection": record.id, "lessons": lessons, "oauth": oauth}


def opened(gui: Gui, qtbot: QtBot, page: Any) -> Any:
    qtbot.addWidget(page)
    page.resize(*PAGE_SIZE)
    page.show()
    gui.run(page.settle())
    return page


def test_without_a_calendar_the_page_says_how_to_connect_one(gui: Gui, qtbot: QtBot) -> None:
    page = opened(gui, qtbot, CalendarSyncPage(gui.bridge))
    assert page.states.state == "empty"
    assert "Connect each teacher's Google Calendar or CalDAV" in page.states._empty_text.text()


def test_sync_now_brings_the_teacher_s_calendar_in_step_and_says_so(
    gui: Gui, qtbot: QtBot, google: dict[str, Any]
) -> None:
    page = opened(gui, qtbot, CalendarSyncPage(gui.bridge))
    assert page.states.state == "content"
    link = page.model.record(0)
    assert (link.teacher_name, page.model.data(page.model.index(0, 3))) == (
        "Rudo Moyo",
        "Not synced yet",
    )
    assert page.sync_button.isEnabled()

    report = gui.run(page.sync_selected())

    assert report is not None
    assert report.counts["created"] == 3
    assert len(google["calendar"].stored_events()) == 3
    gui.wait_until(lambda: page.model.data(page.model.index(0, 3)) == "In step")
    assert page.model.data(page.model.index(0, 6)) == "3 new"
    assert "3 lessons added to the calendar" in page.notice.text()
    gui.save(page, "calendar-sync")


def test_signing_in_with_google_from_the_page_keeps_the_permission_and_syncs(
    gui: Gui, qtbot: QtBot, google: dict[str, Any]
) -> None:
    services = gui.bridge.services
    record = gui.call(services.connections.connection, google["connection"])
    gui.call(services.connections.remove, google["connection"])
    config = dict(record.config)
    secret = {"client_secret": google["oauth"].client_secret}  # not signed in yet
    fresh = gui.call(services.connections.add, "google-calendar", record.name, config, secret)
    visits: list[httpx.Response] = []

    async def browser(url: str) -> None:  # the system browser, following Google's redirect
        async def visit() -> None:
            async with httpx.AsyncClient(follow_redirects=True, timeout=10) as http:
                visits.append(await http.get(url))

        asyncio.get_running_loop().create_task(visit())

    services.calendar_sync.open_browser = browser
    page = opened(gui, qtbot, CalendarSyncPage(gui.bridge))
    assert page.model.data(page.model.index(0, 3)) == "Sign in with Google first"
    assert page.sign_in_button.isVisible()
    assert page.sign_in_button.isEnabled()

    signed = gui.run(page.sign_in_or_out())

    assert signed
    assert "signed in" in visits[0].text.lower() or visits[0].status_code == 200
    stored = gui.call(services.connections.connection, fresh.id)
    assert "refresh_token" in stored.secret_fields
    assert len(google["calendar"].stored_events()) == 3  # synced straight after
    gui.wait_until(lambda: page.model.data(page.model.index(0, 3)) == "In step")


def test_a_move_in_the_calendar_is_taken_with_one_click_on_the_conflicts_page(
    gui: Gui, qtbot: QtBot, google: dict[str, Any]
) -> None:
    services = gui.bridge.services
    gui.call(services.calendar_sync.sync, google["connection"])
    lesson = google["lessons"][0]
    event = next(e for e in google["calendar"].stored_events() if e["summary"] == lesson.title)
    google["calendar"].teacher_moves(event["id"], at(9, 11), at(9, 12))
    gui.call(services.calendar_sync.sync, google["connection"])
    page = opened(gui, qtbot, ConflictsPage(gui.bridge))

    assert page.model.rowCount() == 1
    assert page.model.data(page.model.index(0, 0)) == "Moved in the calendar"
    assert page.model.data(page.model.index(0, 2)) == "Ms Moyo's calendar"
    assert at(9, 11).strftime("%H:%M") in page.calendar.text()
    assert lesson.starts_at.strftime("%H:%M") in page.school.text()
    gui.save(page, "conflicts")

    settled = gui.run(page.resolve(True))

    assert settled is not None
    assert settled.resolution == "calendar"
    assert gui.call(services.school.lesson, lesson.id).starts_at == at(9, 11)
    gui.wait_until(lambda: page.states.state == "empty")


def test_the_jobs_page_lists_how_runs_went_and_pauses_background_work(
    gui: Gui, qtbot: QtBot
) -> None:
    services = gui.bridge.services

    async def sync_done() -> dict[str, Any]:
        return {"created": 3, "outcome": "ok"}

    async def sync_failed() -> dict[str, Any]:
        raise RuntimeError("Google did not answer")

    gui.call(services.jobs.run, "calendar-sync:1", sync_done)
    gui.call(services.jobs.run, "calendar-sync:1", sync_failed)
    page = opened(gui, qtbot, JobsPage(gui.bridge))

    assert page.history_model.rowCount() == 2
    outcomes = {page.history_model.data(page.history_model.index(row, 3)) for row in range(2)}
    assert outcomes == {"done", "failed"}
    texts = {page.history_model.data(page.history_model.index(row, 4)) for row in range(2)}
    assert "created 3" in texts
    assert any("Google did not answer" in text for text in texts)

    page.pause_button.click()
    gui.wait_until(lambda: gui.bridge.engine.state is EngineState.PAUSED)
    gui.wait_until(lambda: page.pause_button.text() == "Resume background work")
    page.pause_button.click()
    gui.wait_until(lambda: gui.bridge.engine.state is EngineState.RUNNING)


def test_the_tray_says_when_calendars_were_last_synced_and_sync_next() -> None:
    zone = UTC
    last = datetime(2026, 12, 7, 9, 5, tzinfo=UTC)
    upcoming = datetime(2026, 12, 7, 9, 10, tzinfo=UTC)

    assert tooltip(last, upcoming, zone, paused=False) == (  # type: ignore[arg-type]
        "Switchboard\nCalendars synced 09:05, next 09:10"
    )
    assert tooltip(None, None, zone, paused=False) == "Switchboard"  # type: ignore[arg-type]
    assert tooltip(last, upcoming, zone, paused=True) == (  # type: ignore[arg-type]
        "Switchboard\nBackground work paused\nCalendars synced 09:05, next paused"
    )
