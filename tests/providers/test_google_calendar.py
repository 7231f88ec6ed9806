"""Google Calendar as a `CalendarBackend`, and signing in with Google from the desktop, against
the Google OAuth and Calendar fakes over real HTTP on loopback (tests/fakes/google_oauth.py,
tests/fakes/google_calendar.py): the browser is played by an HTTP client that follows Google's
302 to our loopback server, as a browser would."""

from __future__ import annotations

import asyncio
import base64
import hashlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from app.domain.sync import EventContent, EventStatus, event_id
from app.providers import KINDS
from app.providers.calendar import (
    CalendarBackend,
    CalendarGone,
    PreconditionFailed,
    occurrence_id,
)
from app.providers.google_calendar import GOOGLE_CALENDAR, GoogleCalendar
from app.providers.google_oauth import (
    LoopbackRedirect,
    SignInCancelled,
    SignInError,
    SignInRefused,
    SignInRequired,
    SignInTimedOut,
    authorization_url,
    exchange_code,
    pkce_pair,
)
from app.providers.http import (
    CredentialsRefused,
    ProviderError,
    QuotaExceeded,
    RateLimited,
    ResilientClient,
)
from app.providers.spec import RatePolicy, RetryPolicy
from app.providers.webhooks import GoogleChannelVerifier, Rejected, WebhookRequest
from tests.fakes.google_calendar import FakeGoogleCalendar
from tests.fakes.google_oauth import CALENDAR_EVENTS_SCOPE, FakeGoogleOAuth
from tests.support.google import GoogleServers

LONDON = ZoneInfo("Europe/London")
NEW_YORK = ZoneInfo("America/New_York")
EVENTS = ("GET", "events")


# --- servers, fakes and the provider -------------------------------------------------------------


@dataclass
class Google:
    oauth: FakeGoogleOAuth
    calendar: FakeGoogleCalendar
    google_servers: GoogleServers
    sleeps: list[float] = field(default_factory=list)  # every backoff wait, ours and the layer's

    def values(self) -> dict[str, str]:
        return {
            "client_id": self.oauth.client_id,
            "teacher": "teacher@school.example",
            "api_url": self.google_servers.calendar_url,
            "auth_url": self.google_servers.oauth_url + "/o/oauth2/v2/auth",
            "token_url": self.google_servers.oauth_url + "/token",
            "revoke_url": self.google_servers.oauth_url + "/revoke",
        }

    def connect(self, *, refresh_token: str | None = None, **values: str) -> GoogleCalendar:
        """The provider as the app builds it from a connection's settings and secrets."""
        secrets = {"client_secret": self.oauth.client_secret}
        if refresh_token is None:
            refresh_token = self.oauth.issue_tokens(CALENDAR_EVENTS_SCOPE)["refresh_token"]
        if refresh_token:
            secrets["refresh_token"] = refresh_token
        config, kept, errors = GOOGLE_CALENDAR.check({**self.values(), **values}, secrets)
        assert not errors
        policy = replace(
            GOOGLE_CALENDAR.policy,
            rate=RatePolicy(requests=1000.0),
            retry=RetryPolicy(attempts=4, base_delay=0.01, max_delay=0.05),
        )

        async def sleep(seconds: float) -> None:
            self.sleeps.append(seconds)

        client = ResilientClient(
            connection_id=0,
            name=GOOGLE_CALENDAR.name,
            base_url=GOOGLE_CALENDAR.base_url(config),
            policy=policy,
            secrets=list(kept.values()),
            sleep=sleep,
        )
        provider = GOOGLE_CALENDAR.factory(GOOGLE_CALENDAR, client, config, kept)
        assert isinstance(provider, GoogleCalendar)
        provider.sleep = sleep
        return provider

    def requests(self, method: str, kind: str) -> int:
        return self.calendar.count(method, kind)


@pytest.fixture
def google(google_servers: GoogleServers) -> Google:
    oauth = FakeGoogleOAuth()
    calendar = FakeGoogleCalendar(oauth)
    google_servers.oauth.target, google_servers.calendar.target = oauth.app, calendar.app
    return Google(oauth, calendar, google_servers)


@pytest.fixture
async def calendar(google: Google) -> AsyncIterator[GoogleCalendar]:
    provider = google.connect()
    yield provider
    await provider.client.aclose()


class Browser:
    """The system browser: opens the sign-in address (returning at once, as the OS does),
    follows Google's 302 to the loopback address and shows the page it gets."""

    def __init__(self) -> None:
        self.pages: list[httpx.Response] = []
        self._visits: list[asyncio.Task[None]] = []

    async def open(self, url: str) -> None:
        self._visits.append(asyncio.create_task(self._visit(url)))

    async def _visit(self, url: str) -> None:
        async with httpx.AsyncClient(follow_redirects=True, timeout=10) as http:
            self.pages.append(await http.get(url))

    async def closed(self) -> None:
        await asyncio.gather(*self._visits)


def lesson(day: int = 7, hour: int = 17, **fields: Any) -> EventContent:
    start = datetime(2030, 1, day, hour, tzinfo=UTC)
    return EventContent(start=start, end=start + timedelta(minutes=45), **fields)


def teacher_lesson(google: Google, summary: str, day: int, hour: int = 17) -> dict[str, Any]:
    start = datetime(2030, 1, day, hour, tzinfo=LONDON)
    return google.calendar.teacher_creates(summary, start, start + timedelta(minutes=45))


# --- the kind ------------------------------------------------------------------------------------


def test_google_calendar_is_a_known_calendar_kind_signed_in_with_oauth_pkce() -> None:
    spec = KINDS["google-calendar"]
    assert spec is GOOGLE_CALENDAR
    assert spec.auth.value == "oauth2_pkce"
    assert spec.capabilities == frozenset({"calendar"})
    assert spec.webhook is not None
    assert spec.webhook.verifier == "google-channel"
    config, secrets, errors = spec.check(
        {"client_id": "123.apps.googleusercontent.com", "teacher": "ana@school.example"},
        {"client_secret": "GOCSPX-x"},
    )
    assert errors == []
    assert config["calendar_id"] == "primary"
    assert config["api_url"] == "https://www.googleapis.com"
    assert config["token_url"] == "https://oauth2.googleapis.com/token"
    assert config["conflicts"] == "ask"
    assert secrets == {"client_secret": "GOCSPX-x"}  # the refresh token comes from signing in
    assert spec.field("refresh_token").secret
    assert not spec.field("refresh_token").required


async def test_the_provider_is_a_calendar_backend(calendar: GoogleCalendar) -> None:
    assert isinstance(calendar, CalendarBackend)


# --- signing in ----------------------------------------------------------------------------------


async def test_signing_in_in_the_browser_comes_back_to_loopback_and_gives_a_refresh_token(
    google: Google,
) -> None:
    provider = google.connect(refresh_token="")
    browser = Browser()
    try:
        tokens = await provider.sign_in(browser.open)
        await browser.closed()
        assert tokens.refresh_token in google.oauth.live_refresh_tokens
        assert provider.secrets["refresh_token"] == tokens.refresh_token
        assert tokens.allows(CALENDAR_EVENTS_SCOPE)
        page = browser.pages[0]
        assert page.status_code == 200
        assert "You can close this window." in page.text
        asked = next(seen for seen in google.oauth.seen if seen.path == "/o/oauth2/v2/auth")
        assert asked.query["code_challenge_method"] == "S256"
        assert asked.query["access_type"] == "offline"
        assert asked.query["prompt"] == "consent"
        assert asked.query["scope"] == CALENDAR_EVENTS_SCOPE
        assert asked.query["redirect_uri"].startswith("http://127.0.0.1:")
        exchanged = next(seen for seen in google.oauth.seen if seen.path == "/token")
        verifier = exchanged.form["code_verifier"]
        digest = hashlib.sha256(verifier.encode()).digest()
        assert (
            base64.urlsafe_b64encode(digest).rstrip(b"=").decode()
            == (asked.query["code_challenge"])
        )
        assert exchanged.form["redirect_uri"] == asked.query["redirect_uri"]
        # The sign-in's access token is used at once: no second trip to the token endpoint.
        await provider.changes()
        assert google.oauth.count("/token") == 1
    finally:
        await provider.client.aclose()


async def test_a_refused_consent_says_to_sign_in_again_and_allow_the_calendar(
    google: Google,
) -> None:
    provider = google.connect(refresh_token="")
    google.oauth.refuse_next_consent()
    browser = Browser()
    try:
        with pytest.raises(SignInRefused) as refused:
            await provider.sign_in(browser.open)
        await browser.closed()
    finally:
        await provider.client.aclose()
    assert str(refused.value) == (
        "Google refused the sign-in (access_denied): sign in again and allow Switchboard to "
        "manage the calendar."
    )
    assert "was not allowed" in browser.pages[0].text
    assert google.oauth.count("/token") == 0
    assert "refresh_token" not in provider.secrets


async def test_an_answer_with_another_state_is_refused() -> None:
    async with LoopbackRedirect("the-state-we-sent") as loopback:
        async with httpx.AsyncClient() as browser:
            page = await browser.get(
                loopback.redirect_uri, params={"code": "4/0Aforged", "state": "another"}
            )
        assert page.status_code == 400
        assert "not for the sign-in Switchboard started" in page.text
        with pytest.raises(SignInRefused, match="state did not match"):
            await loopback.wait()


async def test_requests_without_an_answer_do_not_end_the_wait() -> None:
    async with LoopbackRedirect("s-1") as loopback, httpx.AsyncClient() as browser:
        base = loopback.redirect_uri.rstrip("/")
        assert (await browser.get(base + "/favicon.ico")).status_code == 404
        assert (await browser.get(loopback.redirect_uri)).status_code == 404
        assert (await browser.post(loopback.redirect_uri, content=b"x")).status_code == 405
        page = await browser.get(loopback.redirect_uri, params={"code": "c-1", "state": "s-1"})
        assert page.status_code == 200
        assert page.headers["content-type"] == "text/html; charset=utf-8"
        answer = await loopback.wait()
        again = await browser.get(loopback.redirect_uri, params={"code": "c-2", "state": "s-1"})
    assert answer.code == "c-1"
    assert again.status_code == 409  # one answer per sign-in


async def test_the_wait_times_out_or_is_cancelled_and_the_port_is_closed_after() -> None:
    async with LoopbackRedirect("s", timeout=0.05) as loopback:
        with pytest.raises(SignInTimedOut, match="start signing in with Google again"):
            await loopback.wait()
        address = loopback.redirect_uri
    async with LoopbackRedirect("s") as loopback:
        waiting = asyncio.create_task(loopback.wait())
        await asyncio.sleep(0)
        loopback.cancel()
        with pytest.raises(SignInCancelled):
            await waiting
    async with httpx.AsyncClient() as browser:
        with pytest.raises(httpx.ConnectError):
            await browser.get(address, params={"code": "c", "state": "s"})


async def test_the_code_is_exchanged_only_with_its_pkce_verifier(
    google: Google, calendar: GoogleCalendar
) -> None:
    verifier, challenge = pkce_pair()
    assert 43 <= len(verifier) <= 128
    token_url = google.google_servers.oauth_url + "/token"
    async with LoopbackRedirect("st") as loopback:
        url = authorization_url(
            google.google_servers.oauth_url + "/o/oauth2/v2/auth",
            google.oauth.client_id,
            loopback.redirect_uri,
            CALENDAR_EVENTS_SCOPE,
            "st",
            challenge,
        )
        browser = Browser()
        await browser.open(url)
        answer = await loopback.wait()
        await browser.closed()
        redirect_uri = loopback.redirect_uri
    client, secret = google.oauth.client_id, google.oauth.client_secret
    with pytest.raises(SignInError, match="sign in with Google again"):
        await exchange_code(
            calendar.client, token_url, client, secret, answer.code, "x" * 64, redirect_uri
        )
    tokens = await exchange_code(
        calendar.client, token_url, client, secret, answer.code, verifier, redirect_uri
    )
    assert tokens.refresh_token in google.oauth.live_refresh_tokens
    with pytest.raises(CredentialsRefused, match="Desktop app"):
        await exchange_code(
            calendar.client, token_url, client, "wrong", answer.code, verifier, redirect_uri
        )


# --- access tokens -------------------------------------------------------------------------------


async def test_one_access_token_serves_many_calls_and_is_renewed_once_when_refused(
    google: Google, calendar: GoogleCalendar
) -> None:
    await asyncio.gather(calendar.changes(), calendar.changes(), calendar.changes())
    assert google.oauth.count("/token") == 1
    google.oauth.expire_access_tokens()  # Google stops taking it before we expected
    await calendar.changes()
    assert google.oauth.count("/token") == 2
    assert google.requests(*EVENTS) == 5  # three, then one refused (401) and its repeat


async def test_a_revoked_refresh_token_says_to_sign_in_again(
    google: Google, calendar: GoogleCalendar
) -> None:
    google.oauth.revoke_refresh_tokens()  # the teacher removed Switchboard in their account
    with pytest.raises(SignInRequired, match="sign in with Google again") as refused:
        await calendar.changes()
    assert refused.value.error_class == "auth"
    health = await calendar.check_health()
    assert not health.ok
    assert health.error_class == "auth"
    assert "sign in with Google again" in health.detail


async def test_without_a_refresh_token_it_says_to_sign_in_first(google: Google) -> None:
    provider = google.connect(refresh_token="")
    try:
        with pytest.raises(SignInRequired, match="on the Calendar sync page first"):
            await provider.changes()
    finally:
        await provider.client.aclose()
    assert google.oauth.count("/token") == 0
    assert google.requests(*EVENTS) == 0


async def test_the_health_check_is_one_cheap_authenticated_read(
    google: Google, calendar: GoogleCalendar
) -> None:
    health = await calendar.check_health()
    assert health.ok, health.detail
    assert google.requests(*EVENTS) == 1
    assert google.calendar.seen[-1].query["maxResults"] == "1"


async def test_a_calendar_that_is_not_there_says_to_check_its_id(google: Google) -> None:
    provider = google.connect(calendar_id="nobody@school.example")
    try:
        with pytest.raises(CalendarGone, match="check the calendar ID"):
            await provider.changes()
    finally:
        await provider.client.aclose()


async def test_signing_out_revokes_the_grant(google: Google, calendar: GoogleCalendar) -> None:
    refresh_token = calendar.secrets["refresh_token"]
    await calendar.sign_out()
    assert refresh_token not in google.oauth.live_refresh_tokens
    with pytest.raises(SignInRequired):
        await calendar.changes()


# --- reading what changed ------------------------------------------------------------------------


async def test_incremental_sync_after_one_teacher_change_lists_only_it_in_one_request(
    google: Google, calendar: GoogleCalendar
) -> None:
    made = [teacher_lesson(google, f"Lesson {n}", 1 + n % 28, 9 + n % 8) for n in range(40)]
    full = await calendar.changes()
    assert full.complete
    assert len(full.events) == 40
    assert google.requests(*EVENTS) == 1
    moved = made[7]
    start = datetime(2030, 2, 3, 10, tzinfo=LONDON)
    google.calendar.teacher_moves(moved["id"], start, start + timedelta(hours=1))
    later = await calendar.changes(full.token)
    assert not later.complete
    assert [event.remote_id for event in later.events] == [moved["id"]]
    assert later.events[0].content is not None
    assert later.events[0].content.start == start.astimezone(UTC)
    assert google.requests(*EVENTS) == 2
    quiet = await calendar.changes(later.token)
    assert quiet.events == []
    assert google.requests(*EVENTS) == 3
    asked = google.calendar.seen[-1].query
    assert asked["syncToken"] == later.token
    assert asked["singleEvents"] == "false"
    assert asked["showDeleted"] == "true"
    assert asked["maxResults"] == "2500"


async def test_a_deleted_event_comes_as_gone(google: Google, calendar: GoogleCalendar) -> None:
    made = teacher_lesson(google, "Cello", 9)
    full = await calendar.changes()
    google.calendar.teacher_deletes(made["id"])
    later = await calendar.changes(full.token)
    assert [(e.remote_id, e.content) for e in later.events] == [(made["id"], None)]


async def test_every_page_is_read_and_the_token_comes_from_the_last(
    google: Google, calendar: GoogleCalendar
) -> None:
    for n in range(25):
        teacher_lesson(google, f"Lesson {n}", 1 + n)
    calendar.page_size = 10
    full = await calendar.changes()
    assert len({event.remote_id for event in full.events}) == 25
    assert full.token
    assert google.requests(*EVENTS) == 3


async def test_an_expired_sync_token_gives_a_complete_listing_that_skips_what_is_known(
    google: Google, calendar: GoogleCalendar
) -> None:
    made = [teacher_lesson(google, f"Lesson {n}", 1 + n) for n in range(5)]
    gone = teacher_lesson(google, "Gone", 20)
    full = await calendar.changes()
    known = {event.remote_id: event.etag for event in full.events}
    start = datetime(2030, 1, 30, 12, tzinfo=LONDON)
    google.calendar.teacher_moves(made[0]["id"], start, start + timedelta(hours=1))
    google.calendar.teacher_deletes(gone["id"])
    google.calendar.teacher_deletes(teacher_lesson(google, "Never seen", 21)["id"])
    google.calendar.expire_sync_tokens()
    again = await calendar.changes(full.token, known)
    assert again.complete  # the caller merges it: nothing is wiped
    assert {event.remote_id: event.content is None for event in again.events} == {
        made[0]["id"]: False,
        gone["id"]: True,  # known, and now deleted
    }
    assert again.unchanged == frozenset(event["id"] for event in made[1:])
    assert google.requests(*EVENTS) == 3  # the full listing, 410, the full listing again
    assert google.calendar.seen[-1].query.get("syncToken") is None


# --- writing -------------------------------------------------------------------------------------


async def test_a_create_repeated_with_the_same_id_makes_one_event(
    google: Google, calendar: GoogleCalendar
) -> None:
    eid = event_id("school-1/google-7", "lesson", 42)
    first = await calendar.create(eid, "lesson:42", lesson(summary="Piano"))
    again = await calendar.create(eid, "lesson:42", lesson(summary="Piano"))
    assert first.remote_id == again.remote_id == eid
    assert first.etag == again.etag
    assert first.key == "lesson:42"
    assert first.link.startswith("https://www.google.com/calendar/event?eid=")
    assert [event["id"] for event in google.calendar.stored_events()] == [eid]
    assert google.requests("POST", "events") == 2
    assert google.requests("GET", "event") == 1  # the 409 is answered by reading it


async def test_a_create_after_a_delete_brings_the_event_back(
    google: Google, calendar: GoogleCalendar
) -> None:
    eid = event_id("school-1/google-7", "lesson", 43)
    made = await calendar.create(eid, "lesson:43", lesson(summary="Flute"))
    await calendar.delete(made.remote_id, made.etag)
    back = await calendar.create(eid, "lesson:43", lesson(summary="Flute, again"))
    assert back.content == lesson(summary="Flute, again")
    assert google.calendar.event(eid)["status"] == "confirmed"


async def test_a_stale_etag_is_refused_and_a_fresh_one_writes_in_two_requests(
    google: Google, calendar: GoogleCalendar
) -> None:
    eid = event_id("school-1/google-7", "lesson", 44)
    made = await calendar.create(eid, "lesson:44", lesson(summary="Violin"))
    google.calendar.teacher_edits(eid, summary="Violin (teacher's note)", colorId="5")
    with pytest.raises(PreconditionFailed):
        await calendar.update(eid, made.etag, "lesson:44", lesson(summary="Violin, room 2"))
    with pytest.raises(PreconditionFailed):
        await calendar.delete(eid, made.etag)
    assert google.requests("PUT", "event") == 0
    assert google.calendar.event(eid)["status"] == "confirmed"
    now = await calendar.event(eid)
    before = google.calendar.count("GET", "event"), google.calendar.count("PUT", "event")
    written = await calendar.update(eid, now.etag, "lesson:44", lesson(summary="Violin, room 2"))
    assert written.content == lesson(summary="Violin, room 2")
    assert written.etag != now.etag
    after = google.calendar.count("GET", "event"), google.calendar.count("PUT", "event")
    assert (after[0] - before[0], after[1] - before[1]) == (1, 1)
    put = next(seen for seen in reversed(google.calendar.seen) if seen.method == "PUT")
    assert put.headers["if-match"] == now.etag
    stored = google.calendar.event(eid)
    assert stored["colorId"] == "5"  # what the teacher added and we do not keep stays
    assert stored["extendedProperties"]["private"]["switchboardKey"] == "lesson:44"


async def test_deleting_is_conditional_and_an_event_already_gone_is_no_error(
    google: Google, calendar: GoogleCalendar
) -> None:
    eid = event_id("school-1/google-7", "lesson", 45)
    made = await calendar.create(eid, "lesson:45", lesson())
    await calendar.delete(eid, made.etag)
    await calendar.delete(eid, made.etag)  # 412 on a deleted event: gone is what was asked
    await calendar.delete(eid, "")  # 410
    await calendar.delete("nosuchevent1", "")  # 404
    gone = await calendar.event(eid)
    assert gone.content is None


# --- quota and errors ----------------------------------------------------------------------------


async def test_rate_limits_403_and_429_are_retried_with_backoff_then_succeed(
    google: Google, calendar: GoogleCalendar
) -> None:
    await calendar.changes()  # the token is in hand
    google.calendar.fail_next(403, "rateLimitExceeded", on=EVENTS)
    google.calendar.fail_next(403, "userRateLimitExceeded", retry_after=2, on=EVENTS)
    google.calendar.fail_next(429, "rateLimitExceeded", retry_after=1, on=EVENTS)
    listed = await calendar.changes()
    assert listed.complete
    assert google.requests(*EVENTS) == 1 + 4
    assert len(google.sleeps) == 3
    assert 0 <= google.sleeps[0] <= 0.01  # full jitter under the first cap
    assert google.sleeps[1:] == [2.0, 1.0]  # Google's Retry-After, ours then the layer's


async def test_a_rate_limit_that_lasts_fails_saying_it_will_be_tried_later(
    google: Google, calendar: GoogleCalendar
) -> None:
    google.calendar.fail_next(403, "userRateLimitExceeded", times=10, on=EVENTS)
    with pytest.raises(RateLimited, match="slow down"):
        await calendar.changes()
    assert google.requests(*EVENTS) == 4


async def test_a_used_up_daily_quota_and_other_refusals_are_not_retried(
    google: Google, calendar: GoogleCalendar
) -> None:
    google.calendar.fail_next(403, "quotaExceeded", on=EVENTS)
    with pytest.raises(QuotaExceeded, match="usage limit"):
        await calendar.changes()
    google.calendar.fail_next(403, "forbidden", on=EVENTS)
    with pytest.raises(ProviderError, match="allowed to make changes to events"):
        await calendar.changes()
    assert google.requests(*EVENTS) == 2
    assert google.sleeps == []


async def test_a_sign_in_without_the_calendar_permission_says_to_allow_it(
    google: Google,
) -> None:
    read_only = google.oauth.issue_tokens("https://www.googleapis.com/auth/calendar.readonly")
    provider = google.connect(refresh_token=read_only["refresh_token"])
    try:
        with pytest.raises(CredentialsRefused, match="allow Switchboard to manage"):
            await provider.create("abcdefghij", "k", lesson())
    finally:
        await provider.client.aclose()


# --- content -------------------------------------------------------------------------------------


def _series(zone: ZoneInfo, start: datetime, *rules: str) -> EventContent:
    return EventContent(
        start=start,
        end=start + timedelta(minutes=45),
        summary="Weekly lesson",
        recurrence=rules,
        timezone=str(zone),
    )


ROUND_TRIPS = {
    "accents and lines": lesson(
        summary="  Élodie — piano (débutante)  ",
        location="Salle 3,  École de musique",
        description="Apporter :\r\n- le cahier Czerny  \n- un crayon ✏️\n\nMerci !",
        status=EventStatus.TENTATIVE,
    ),
    "all day": EventContent(
        start=datetime(2030, 1, 12, tzinfo=UTC),
        end=datetime(2030, 1, 14, tzinfo=UTC),
        all_day=True,
        summary="Exam weekend",
    ),
    "London series over summer time": _series(
        LONDON,
        datetime(2030, 3, 18, 17, tzinfo=LONDON),
        "RRULE:FREQ=WEEKLY;COUNT=5",
        "EXDATE;TZID=Europe/London:20300325T170000",
    ),
    "New York series over winter time": _series(
        NEW_YORK,
        datetime(2030, 10, 21, 16, 30, tzinfo=NEW_YORK),
        "RRULE:FREQ=WEEKLY;BYDAY=MO;UNTIL=20301125T000000Z",
    ),
    "online": lesson(summary="Theory, online", online_meeting=True),
}


@pytest.mark.parametrize("content", ROUND_TRIPS.values(), ids=ROUND_TRIPS.keys())
async def test_content_written_and_read_back_is_equal(
    calendar: GoogleCalendar, content: EventContent
) -> None:
    eid = event_id("school-1/google-7", "lesson", 1)
    made = await calendar.create(eid, "lesson:1", content)
    read = await calendar.event(eid)
    listed = await calendar.changes()
    assert made.content == content
    assert read.content == content
    assert [event.content for event in listed.events] == [content]
    assert read.content.content_hash() == content.content_hash()


async def test_a_series_keeps_its_wall_clock_time_across_daylight_saving_changes(
    google: Google, calendar: GoogleCalendar
) -> None:
    for number, (zone, first, after) in enumerate(
        (
            (LONDON, datetime(2030, 3, 18, 17, tzinfo=LONDON), datetime(2030, 4, 1, 17)),
            (
                NEW_YORK,
                datetime(2030, 10, 28, 16, 30, tzinfo=NEW_YORK),
                datetime(2030, 11, 4, 16, 30),
            ),
        )
    ):
        content = _series(zone, first, "RRULE:FREQ=WEEKLY;COUNT=3")
        eid = event_id("school-1/google-7", "series", number)
        await calendar.create(eid, "series:1", content)
        later = after.replace(tzinfo=zone).astimezone(UTC)
        assert later.hour != first.astimezone(UTC).hour  # the offset changed in between
        instance = google.calendar.event(f"{eid}_{later:%Y%m%dT%H%M%SZ}")
        assert datetime.fromisoformat(instance["start"]["dateTime"]).astimezone(zone).time() == (
            first.time()
        )


async def test_an_online_lesson_gets_a_meet_link_that_can_be_removed_and_made_again(
    google: Google, calendar: GoogleCalendar
) -> None:
    eid = event_id("school-1/google-7", "lesson", 46)
    made = await calendar.create(eid, "lesson:46", lesson(online_meeting=True))
    assert made.meet_link == "https://meet.google.com/abc-defg-hij"
    assert made.content is not None
    assert made.content.online_meeting
    insert = next(seen for seen in google.calendar.seen if seen.method == "POST")
    assert insert.query["conferenceDataVersion"] == "1"
    same = await calendar.update(eid, made.etag, "lesson:46", lesson(online_meeting=True))
    assert same.meet_link == made.meet_link
    offline = await calendar.update(eid, same.etag, "lesson:46", lesson())
    assert offline.meet_link == ""
    assert offline.content == lesson()
    online = await calendar.update(eid, offline.etag, "lesson:46", lesson(online_meeting=True))
    assert online.meet_link == "https://meet.google.com/abc-defg-hij"


async def test_a_moved_occurrence_is_listed_with_its_series_and_can_be_written_and_cancelled(
    google: Google, calendar: GoogleCalendar
) -> None:
    first = datetime(2030, 1, 7, 17, tzinfo=LONDON)
    master = google.calendar.teacher_creates(
        "Guitar",
        first,
        first + timedelta(minutes=45),
        time_zone="Europe/London",
        recurrence=["RRULE:FREQ=WEEKLY;COUNT=4"],
    )
    full = await calendar.changes()
    assert [event.remote_id for event in full.events] == [master["id"]]
    assert full.events[0].content is not None
    assert full.events[0].content.recurrence == ("RRULE:FREQ=WEEKLY;COUNT=4",)
    assert full.events[0].content.timezone == "Europe/London"

    second = datetime(2030, 1, 14, 17, tzinfo=UTC)
    moved_to = datetime(2030, 1, 15, 18, tzinfo=LONDON)
    google.calendar.teacher_moves(
        f"{master['id']}_20300114T170000Z", moved_to, moved_to + timedelta(minutes=45)
    )
    later = await calendar.changes(full.token)
    [moved] = later.events
    assert moved.remote_id == occurrence_id(master["id"], second)
    assert (moved.series, moved.original_start) == (master["id"], second)
    assert moved.content is not None
    assert moved.content.start == moved_to.astimezone(UTC)
    assert moved.content.recurrence == ()

    # The occurrence is written through its occurrence id, at Google's instance id.
    changed = replace(moved.content, summary="Guitar (room 4)")
    written = await calendar.update(moved.remote_id, moved.etag, "", changed)
    assert written.remote_id == moved.remote_id
    assert written.content == changed
    put = next(seen for seen in reversed(google.calendar.seen) if seen.method == "PUT")
    assert put.path.endswith(f"/events/{master['id']}_20300114T170000Z")

    # One never changed on its own is read, changed, and cancelled the same way.
    third = occurrence_id(master["id"], datetime(2030, 1, 21, 17, tzinfo=UTC))
    fourth = occurrence_id(master["id"], datetime(2030, 1, 28, 17, tzinfo=UTC))
    shown = await calendar.event(third)
    assert shown.remote_id == third
    assert shown.content is not None
    assert shown.content.start == datetime(2030, 1, 21, 17, tzinfo=UTC)
    await calendar.delete(third, shown.etag)
    unchanged = await calendar.event(fourth)
    assert unchanged.content is not None
    late = replace(unchanged.content, start=unchanged.content.start + timedelta(hours=1))
    late = replace(late, end=late.end + timedelta(hours=1))
    await calendar.update(fourth, unchanged.etag, "", late)
    last = await calendar.changes(later.token)
    by_id = {event.remote_id: event for event in last.events}
    assert set(by_id) == {moved.remote_id, third, fourth}
    assert by_id[third].content is None
    assert by_id[third].series == master["id"]
    assert by_id[fourth].content == late


# --- push ----------------------------------------------------------------------------------------


@dataclass
class Receiver:
    """The app's receiver as far as Google's channel goes: checks each notification."""

    url: str
    token: str
    verified: list[str] = field(default_factory=list)
    refused: int = 0


@pytest.fixture
def receiver(google_servers: GoogleServers) -> Receiver:
    made = Receiver(google_servers.receiver_url + "/hooks/google", "channel-token-9f2c")
    verifier = GoogleChannelVerifier()

    async def notified(request: Request) -> Response:
        arrived = WebhookRequest(
            str(request.url),
            {name.lower(): value for name, value in request.headers.items()},
            await request.body(),
            datetime.now(UTC).timestamp(),
        )
        try:
            verified = verifier.verify(arrived, [made.token])
        except Rejected:
            made.refused += 1
            return Response(status_code=401)
        made.verified.append(verified.event_type)
        return Response(status_code=200)

    google_servers.receiver.target = Starlette(
        routes=[Route("/hooks/google", notified, methods=["POST"])]
    )
    return made


async def test_a_push_channel_notifies_the_receiver_until_it_is_stopped(
    google: Google, calendar: GoogleCalendar, receiver: Receiver
) -> None:
    channel = await calendar.watch(receiver.url, "switchboard-7-1", receiver.token, 3600)
    assert channel.id == "switchboard-7-1"
    assert channel.resource_id
    assert channel.expiration is not None
    assert abs(channel.expiration - (datetime.now(UTC) + timedelta(hours=1))) < timedelta(minutes=1)
    teacher_lesson(google, "Drums", 10)
    deliveries = await google.calendar.deliver_notifications_async()
    assert [delivery.acknowledged for delivery in deliveries] == [True, True]
    assert receiver.verified == ["sync", "exists"]
    assert receiver.refused == 0
    await calendar.stop_channel(channel.id, channel.resource_id)
    teacher_lesson(google, "Bass", 11)
    assert await google.calendar.deliver_notifications_async() == []
    await calendar.stop_channel(channel.id, channel.resource_id)  # already stopped: no error


async def test_a_watch_on_an_address_google_cannot_reach_says_so(
    calendar: GoogleCalendar,
) -> None:
    with pytest.raises(ProviderError, match="only to an https:// address"):
        await calendar.watch("http://office.school.example/hooks", "c-1", "t", 3600)


async def test_an_all_day_occurrence_is_found_by_its_date(
    google: Google, calendar: GoogleCalendar
) -> None:
    master = google.calendar.teacher_creates(
        "Exam week",
        date(2030, 1, 7),
        date(2030, 1, 8),
        recurrence=["RRULE:FREQ=WEEKLY;COUNT=3"],
    )
    second = occurrence_id(master["id"], datetime(2030, 1, 14, tzinfo=UTC))
    shown = await calendar.event(second)
    assert shown.remote_id == second
    assert shown.content is not None
    assert shown.content.all_day
    assert google.requests("GET", "event") == 2  # the timed form first, then the date form
    await calendar.delete(second, shown.etag)
    assert google.calendar.event(f"{master['id']}_20300114")["status"] == "cancelled"


async def test_a_change_between_reading_and_writing_is_a_precondition_failure(
    google: Google, calendar: GoogleCalendar
) -> None:
    eid = event_id("school-1/google-7", "lesson", 47)
    made = await calendar.create(eid, "lesson:47", lesson())
    google.calendar.fail_next(412, "conditionNotMet", on=("PUT", "event"))
    with pytest.raises(PreconditionFailed):
        await calendar.update(eid, made.etag, "lesson:47", lesson(summary="Later"))
    missing = await calendar.event("nosuchevent1")
    assert (missing.etag, missing.content) == ("", None)
