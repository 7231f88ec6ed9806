"""The Google OAuth and Calendar fakes are real peers: these tests talk to them with httpx over
loopback, as the app's Google Calendar provider will."""

from __future__ import annotations

import base64
import hashlib
import re
import secrets
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

from tests.fakes.google_calendar import FakeGoogleCalendar
from tests.fakes.google_oauth import CALENDAR_SCOPE, FakeGoogleOAuth
from tests.fakes.server import served
from tests.support.google import GoogleServers

LONDON = "Europe/London"
RFC3339_MS = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z")
EVENTS = "/calendar/v3/calendars/primary/events"


@dataclass
class Google:
    oauth: FakeGoogleOAuth
    calendar: FakeGoogleCalendar
    auth_url: str
    api: httpx.Client  # the Calendar API, authorized as the school's app

    def events(self, **params: Any) -> httpx.Response:
        return self.api.get(EVENTS, params=params)


@dataclass
class Receiver:
    """The app's webhook receiver, as far as push notifications go."""

    url: str
    status: int = 200
    got: list[dict[str, str]] = field(default_factory=list)
    bodies: list[bytes] = field(default_factory=list)


@pytest.fixture
def google(google_servers: GoogleServers) -> Iterator[Google]:
    oauth = FakeGoogleOAuth()
    calendar = FakeGoogleCalendar(oauth)
    google_servers.oauth.target, google_servers.calendar.target = oauth.app, calendar.app
    token = oauth.issue_tokens(CALENDAR_SCOPE)["access_token"]
    headers = {"Authorization": f"Bearer {token}"}
    with httpx.Client(base_url=google_servers.calendar_url, headers=headers) as api:
        yield Google(oauth, calendar, google_servers.oauth_url, api)


@pytest.fixture
def receiver(google_servers: GoogleServers) -> Receiver:
    made = Receiver(google_servers.receiver_url + "/notifications")

    async def notified(request: Request) -> Response:
        made.got.append(dict(request.headers))
        made.bodies.append(await request.body())
        return Response(status_code=made.status)

    google_servers.receiver.target = Starlette(
        routes=[Route("/notifications", notified, methods=["POST"])]
    )
    return made


def _pkce() -> tuple[str, str]:
    verifier = secrets.token_urlsafe(64)
    digest = hashlib.sha256(verifier.encode()).digest()
    return verifier, base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def _authorize_params(oauth: FakeGoogleOAuth, redirect_uri: str, challenge: str) -> dict[str, str]:
    return {
        "client_id": oauth.client_id,
        "redirect_uri": redirect_uri,
        "response_type": "code",
        "scope": CALENDAR_SCOPE,
        "state": "s-123",
        "code_challenge": challenge,
        "code_challenge_method": "S256",
        "access_type": "offline",
    }


def _code(google: Google, redirect_uri: str, challenge: str) -> str:
    answer = httpx.get(
        google.auth_url + "/o/oauth2/v2/auth",
        params=_authorize_params(google.oauth, redirect_uri, challenge),
    )
    assert answer.status_code == 302
    return parse_qs(urlsplit(answer.headers["location"]).query)["code"][0]


def _exchange(google: Google, **form: str) -> httpx.Response:
    base = {
        "client_id": google.oauth.client_id,
        "client_secret": google.oauth.client_secret,
        "grant_type": "authorization_code",
    }
    return httpx.post(google.auth_url + "/token", data={**base, **form})


def _error(response: httpx.Response) -> tuple[int, str, str]:
    error = response.json()["error"]
    assert error["code"] == response.status_code
    assert error["message"] == error["errors"][0]["message"]
    return response.status_code, error["errors"][0]["domain"], error["errors"][0]["reason"]


def _lesson(summary: str, day: int, hour: int = 17, **extra: Any) -> dict[str, Any]:
    return {
        "summary": summary,
        "start": {"dateTime": f"2030-01-{day:02d}T{hour:02d}:00:00", "timeZone": LONDON},
        "end": {"dateTime": f"2030-01-{day:02d}T{hour:02d}:45:00", "timeZone": LONDON},
        **extra,
    }


# --- OAuth for installed apps -----------------------------------------------------------------


def test_the_browser_follows_the_consent_redirect_to_loopback_and_pkce_exchanges_the_code(
    google: Google,
) -> None:
    landed: list[dict[str, list[str]]] = []

    async def callback(request: Request) -> Response:
        landed.append(parse_qs(request.url.query))
        return PlainTextResponse("You may close this window.")

    loopback = Starlette(routes=[Route("/oauth2callback", callback)])
    verifier, challenge = _pkce()
    with served(loopback) as app_url:
        redirect_uri = app_url + "/oauth2callback"
        page = httpx.get(
            google.auth_url + "/o/oauth2/v2/auth",
            params=_authorize_params(google.oauth, redirect_uri, challenge),
            follow_redirects=True,
        )
    assert page.text == "You may close this window."
    assert landed[0]["state"] == ["s-123"]
    tokens = _exchange(
        google, code=landed[0]["code"][0], redirect_uri=redirect_uri, code_verifier=verifier
    )
    assert tokens.status_code == 200
    body = tokens.json()
    assert body["token_type"] == "Bearer"
    assert body["scope"] == CALENDAR_SCOPE
    assert body["expires_in"] == 3599
    assert body["refresh_token"]
    assert google.oauth.accepts(body["access_token"])


def test_a_code_works_once_and_only_with_its_verifier_and_redirect_uri(google: Google) -> None:
    verifier, challenge = _pkce()
    redirect_uri = "http://127.0.0.1:53682/"
    code = _code(google, redirect_uri, challenge)
    missing = _exchange(google, code=code, redirect_uri=redirect_uri)
    wrong = _exchange(google, code=code, redirect_uri=redirect_uri, code_verifier=verifier + "x")
    elsewhere = _exchange(
        google, code=code, redirect_uri="http://127.0.0.1:9/", code_verifier=verifier
    )
    good = _exchange(google, code=code, redirect_uri=redirect_uri, code_verifier=verifier)
    again = _exchange(google, code=code, redirect_uri=redirect_uri, code_verifier=verifier)
    assert missing.json() == {
        "error": "invalid_grant",
        "error_description": "Missing code verifier.",
    }
    assert wrong.json() == {"error": "invalid_grant", "error_description": "Invalid code verifier."}
    assert elsewhere.json()["error"] == "redirect_uri_mismatch"
    assert good.status_code == 200
    assert (again.status_code, again.json()["error"]) == (400, "invalid_grant")


def test_a_redirect_that_is_not_loopback_is_an_error_page_not_a_redirect(google: Google) -> None:
    _, challenge = _pkce()
    params = _authorize_params(google.oauth, "https://evil.example/cb", challenge)
    page = httpx.get(google.auth_url + "/o/oauth2/v2/auth", params=params)
    assert page.status_code == 400
    assert "redirect_uri_mismatch" in page.text
    assert "location" not in page.headers


def test_a_refused_consent_comes_back_as_access_denied_with_the_state(google: Google) -> None:
    _, challenge = _pkce()
    google.oauth.refuse_next_consent()
    answer = httpx.get(
        google.auth_url + "/o/oauth2/v2/auth",
        params=_authorize_params(google.oauth, "http://[::1]:8765/cb", challenge),
    )
    assert answer.status_code == 302
    query = parse_qs(urlsplit(answer.headers["location"]).query)
    assert query == {"error": ["access_denied"], "state": ["s-123"]}


def test_a_wrong_client_secret_is_invalid_client(google: Google) -> None:
    answer = _exchange(google, client_secret="nope", code="x", redirect_uri="http://127.0.0.1:1/")
    assert answer.status_code == 401
    assert answer.json()["error"] == "invalid_client"


def test_refreshing_gives_a_new_access_token_until_the_user_revokes_the_app(
    google: Google,
) -> None:
    tokens = google.oauth.issue_tokens()
    form = {
        "client_id": google.oauth.client_id,
        "client_secret": google.oauth.client_secret,
        "grant_type": "refresh_token",
        "refresh_token": tokens["refresh_token"],
    }
    google.oauth.expire_access_tokens()
    assert not google.oauth.accepts(tokens["access_token"])
    fresh = httpx.post(google.auth_url + "/token", data=form)
    assert fresh.status_code == 200
    assert "refresh_token" not in fresh.json()
    assert google.oauth.accepts(fresh.json()["access_token"])
    google.oauth.revoke_refresh_tokens()
    refused = httpx.post(google.auth_url + "/token", data=form)
    assert refused.status_code == 400
    assert refused.json() == {
        "error": "invalid_grant",
        "error_description": "Token has been expired or revoked.",
    }
    assert not google.oauth.accepts(fresh.json()["access_token"])


def test_revoking_an_access_token_ends_its_refresh_token_too(google: Google) -> None:
    tokens = google.oauth.issue_tokens()
    revoked = httpx.post(google.auth_url + "/revoke", data={"token": tokens["access_token"]})
    again = httpx.post(google.auth_url + "/revoke", data={"token": tokens["refresh_token"]})
    assert revoked.status_code == 200
    assert (again.status_code, again.json()["error"]) == (400, "invalid_token")
    assert tokens["refresh_token"] not in google.oauth.live_refresh_tokens


def test_the_oldest_refresh_token_goes_past_the_limit_per_client() -> None:
    oauth = FakeGoogleOAuth(refresh_token_limit=2)
    first, second, third = (oauth.issue_tokens()["refresh_token"] for _ in range(3))
    assert oauth.live_refresh_tokens == [second, third]
    assert first not in oauth.live_refresh_tokens


# --- Calendar: authorization, events, errors ---------------------------------------------------


def test_calendar_calls_need_a_live_bearer_token(google: Google) -> None:
    anonymous = httpx.get(str(google.api.base_url) + EVENTS)
    forged = httpx.get(
        str(google.api.base_url) + EVENTS, headers={"Authorization": "Bearer ya29.forged"}
    )
    assert _error(anonymous) == (401, "global", "required")
    assert _error(forged) == (401, "global", "authError")
    assert google.events().status_code == 200
    google.oauth.expire_access_tokens()
    assert _error(google.events()) == (401, "global", "authError")
    assert google.calendar.count("GET", "events") == 4


def test_a_read_only_token_reads_but_cannot_write(google: Google) -> None:
    token = google.oauth.issue_tokens(CALENDAR_SCOPE + ".readonly")["access_token"]
    headers = {"Authorization": f"Bearer {token}"}
    base = str(google.api.base_url)
    assert httpx.get(base + EVENTS, headers=headers).status_code == 200
    written = httpx.post(base + EVENTS, headers=headers, json=_lesson("Piano", 7))
    assert _error(written) == (403, "global", "insufficientPermissions")


def test_an_inserted_event_looks_as_google_returns_it(google: Google) -> None:
    body = _lesson(
        "Piano with Ada",
        7,
        id="lesson0042abc",
        description="Grade 3",
        location="Room 2",
        extendedProperties={"private": {"switchboardLessonId": "42"}},
    )
    made = google.api.post(EVENTS, json=body)
    assert made.status_code == 200
    event = made.json()
    assert event["kind"] == "calendar#event"
    assert event["id"] == "lesson0042abc"
    assert re.fullmatch(r'"\d+"', event["etag"])
    assert event["status"] == "confirmed"
    assert event["htmlLink"].startswith("https://www.google.com/calendar/event?eid=")
    assert RFC3339_MS.fullmatch(event["created"])
    assert RFC3339_MS.fullmatch(event["updated"])
    assert event["start"] == {"dateTime": "2030-01-07T17:00:00Z", "timeZone": LONDON}
    assert event["iCalUID"] == "lesson0042abc@google.com"
    assert event["sequence"] == 0
    assert event["extendedProperties"]["private"] == {"switchboardLessonId": "42"}
    assert "conferenceData" not in event
    assert google.api.get(f"{EVENTS}/lesson0042abc").json() == event


@pytest.mark.parametrize("bad_id", ["abcd", "lessonw0042", "Lesson0042", "lesson_0042", "a" * 1025])
def test_a_client_id_must_be_base32hex_of_5_to_1024_characters(google: Google, bad_id: str) -> None:
    answer = google.api.post(EVENTS, json=_lesson("Piano", 7, id=bad_id))
    assert _error(answer) == (400, "global", "invalid")


def test_inserting_an_id_twice_is_a_duplicate(google: Google) -> None:
    assert google.api.post(EVENTS, json=_lesson("Piano", 7, id="dup00001")).status_code == 200
    assert _error(google.api.post(EVENTS, json=_lesson("Piano", 8, id="dup00001"))) == (
        409,
        "global",
        "duplicate",
    )


def test_a_meet_conference_is_made_only_for_conference_data_version_1(google: Google) -> None:
    create = {
        "createRequest": {"requestId": "req-1", "conferenceSolutionKey": {"type": "hangoutsMeet"}}
    }
    ignored = google.api.post(EVENTS, json=_lesson("Piano", 7, conferenceData=create)).json()
    made = google.api.post(
        EVENTS,
        params={"conferenceDataVersion": 1},
        json=_lesson("Piano", 8, conferenceData=create),
    ).json()
    assert "conferenceData" not in ignored
    assert "hangoutLink" not in ignored
    conference = made["conferenceData"]
    assert conference["createRequest"]["status"] == {"statusCode": "success"}
    assert conference["createRequest"]["requestId"] == "req-1"
    assert conference["entryPoints"][0] == {
        "entryPointType": "video",
        "uri": "https://meet.google.com/abc-defg-hij",
        "label": "meet.google.com/abc-defg-hij",
    }
    assert made["hangoutLink"] == "https://meet.google.com/abc-defg-hij"


def test_missing_end_and_empty_range_are_refused(google: Google) -> None:
    no_end = _lesson("Piano", 7)
    del no_end["end"]
    backwards = _lesson("Piano", 7)
    backwards["end"] = {"dateTime": "2030-01-07T16:00:00Z"}
    assert _error(google.api.post(EVENTS, json=no_end)) == (400, "global", "required")
    assert _error(google.api.post(EVENTS, json=backwards)) == (400, "calendar", "timeRangeEmpty")


def test_if_match_guards_updates_and_deletes(google: Google) -> None:
    event = google.api.post(EVENTS, json=_lesson("Piano", 7)).json()
    url = f"{EVENTS}/{event['id']}"
    patched = google.api.patch(url, json={"summary": "Violin"}, headers={"If-Match": event["etag"]})
    assert patched.status_code == 200
    assert patched.json()["etag"] != event["etag"]
    assert patched.json()["start"] == event["start"]
    stale = {"If-Match": event["etag"]}
    assert _error(google.api.put(url, json=_lesson("Cello", 7), headers=stale)) == (
        412,
        "global",
        "conditionNotMet",
    )
    assert _error(google.api.delete(url, headers=stale)) == (412, "global", "conditionNotMet")
    assert google.api.delete(url, headers={"If-Match": patched.json()["etag"]}).status_code == 204


def test_put_replaces_what_the_client_writes_and_keeps_what_google_owns(google: Google) -> None:
    event = google.api.post(EVENTS, json=_lesson("Piano", 7, description="Grade 3")).json()
    replaced = google.api.put(f"{EVENTS}/{event['id']}", json=_lesson("Piano", 7, hour=18)).json()
    assert "description" not in replaced
    assert (replaced["id"], replaced["created"]) == (event["id"], event["created"])
    assert replaced["sequence"] == 1


def test_a_deleted_event_is_cancelled_kept_for_sync_and_gone_on_a_second_delete(
    google: Google,
) -> None:
    event = google.api.post(EVENTS, json=_lesson("Piano", 7)).json()
    url = f"{EVENTS}/{event['id']}"
    assert google.api.delete(url).status_code == 204
    shown = google.api.get(url)
    assert (shown.status_code, shown.json()["status"]) == (200, "cancelled")
    assert _error(google.api.delete(url)) == (410, "global", "deleted")
    assert google.events().json()["items"] == []
    listed = google.events(showDeleted="true").json()["items"]
    assert listed == [
        {
            "kind": "calendar#event",
            "etag": shown.json()["etag"],
            "id": event["id"],
            "status": "cancelled",
        }
    ]


def test_an_event_of_another_calendar_is_reached_by_its_url_encoded_id(google: Google) -> None:
    google.calendar.add_calendar("room2@school.example", time_zone="Europe/Paris")
    body = _lesson("Piano", 7)
    body["start"], body["end"] = (
        {"dateTime": "2030-01-07T17:00:00Z"},
        {"dateTime": "2030-01-07T18:00:00Z"},
    )
    made = google.api.post("/calendar/v3/calendars/room2%40school.example/events", json=body)
    assert made.json()["organizer"]["email"] == "room2@school.example"
    assert made.json()["start"]["dateTime"] == "2030-01-07T18:00:00+01:00"
    unknown = google.api.get("/calendar/v3/calendars/nobody%40school.example/events")
    assert _error(unknown) == (404, "global", "notFound")


# --- Calendar: listing and incremental sync ---------------------------------------------------


def test_pages_end_with_a_sync_token_and_never_hold_more_than_asked(google: Google) -> None:
    for day in range(1, 6):
        google.calendar.teacher_creates(
            "Lesson", datetime(2030, 1, day, 17, tzinfo=UTC), datetime(2030, 1, day, 18, tzinfo=UTC)
        )
    seen: list[str] = []
    page = google.events(maxResults=2).json()
    pages = 1
    while "nextPageToken" in page:
        assert "nextSyncToken" not in page
        seen += [item["id"] for item in page["items"]]
        page = google.events(maxResults=2, pageToken=page["nextPageToken"]).json()
        pages += 1
    seen += [item["id"] for item in page["items"]]
    assert pages == 3
    assert len(set(seen)) == 5
    assert page["nextSyncToken"]
    assert page["kind"] == "calendar#events"
    assert page["timeZone"] == LONDON
    assert _error(google.events(maxResults=0)) == (400, "global", "invalid")


def test_incremental_sync_returns_only_the_changes_including_deletions(google: Google) -> None:
    kept = google.api.post(EVENTS, json=_lesson("Piano", 7)).json()
    edited = google.api.post(EVENTS, json=_lesson("Violin", 8)).json()
    deleted = google.api.post(EVENTS, json=_lesson("Cello", 9)).json()
    full = google.events().json()
    assert len(full["items"]) == 3
    google.calendar.teacher_edits(edited["id"], summary="Violin (moved room)")
    google.calendar.teacher_deletes(deleted["id"])
    created = google.calendar.teacher_creates(
        "Flute", datetime(2030, 1, 10, 17, tzinfo=UTC), datetime(2030, 1, 10, 18, tzinfo=UTC)
    )
    changes = google.events(syncToken=full["nextSyncToken"]).json()
    by_id = {item["id"]: item for item in changes["items"]}
    assert set(by_id) == {edited["id"], deleted["id"], created["id"]}
    assert kept["id"] not in by_id
    assert by_id[deleted["id"]]["status"] == "cancelled"
    assert by_id[edited["id"]]["summary"] == "Violin (moved room)"
    quiet = google.events(syncToken=changes["nextSyncToken"]).json()
    assert quiet["items"] == []


def test_a_sync_token_refuses_filters_and_expires_into_a_full_sync(google: Google) -> None:
    token = google.events().json()["nextSyncToken"]
    with_filter = google.events(syncToken=token, timeMin="2030-01-01T00:00:00Z")
    assert _error(with_filter) == (400, "global", "invalid")
    assert _error(google.events(syncToken="CPDAlvWDx70CEPDAlvWDx70CGAU=")) == (
        410,
        "global",
        "fullSyncRequired",
    )
    google.calendar.expire_sync_tokens()
    assert _error(google.events(syncToken=token)) == (410, "global", "fullSyncRequired")


def test_time_bounds_select_overlapping_events(google: Google) -> None:
    for day in (6, 7, 8):
        google.api.post(EVENTS, json=_lesson(f"Day {day}", day))
    bounded = google.events(timeMin="2030-01-07T00:00:00Z", timeMax="2030-01-08T00:00:00Z").json()
    assert [item["summary"] for item in bounded["items"]] == ["Day 7"]
    empty = google.events(timeMin="2030-01-08T00:00:00Z", timeMax="2030-01-07T00:00:00Z")
    assert _error(empty) == (400, "calendar", "timeRangeEmpty")
    assert _error(google.events(orderBy="startTime")) == (400, "global", "badRequest")


def test_private_extended_properties_find_the_apps_own_events(google: Google) -> None:
    tagged = _lesson("Piano", 7, extendedProperties={"private": {"switchboard": "lesson-1"}})
    google.api.post(EVENTS, json=tagged)
    google.api.post(EVENTS, json=_lesson("Teacher's dentist", 8))
    found = google.events(privateExtendedProperty="switchboard=lesson-1").json()["items"]
    assert [item["summary"] for item in found] == ["Piano"]


# --- Calendar: recurring lessons ---------------------------------------------------------------


def _weekly(google: Google, rule: str) -> dict[str, Any]:
    body = {
        "summary": "Weekly piano",
        "start": {"dateTime": "2025-03-17T17:00:00", "timeZone": LONDON},
        "end": {"dateTime": "2025-03-17T17:45:00", "timeZone": LONDON},
        "recurrence": [rule],
    }
    made = google.api.post(EVENTS, json=body)
    assert made.status_code == 200, made.text
    event: dict[str, Any] = made.json()
    return event


def test_a_weekly_lesson_keeps_its_wall_clock_time_across_the_change_to_summer_time(
    google: Google,
) -> None:
    master = _weekly(google, "RRULE:FREQ=WEEKLY;BYDAY=MO;COUNT=4")
    instances = google.api.get(f"{EVENTS}/{master['id']}/instances").json()["items"]
    assert [item["id"].removeprefix(master["id"] + "_") for item in instances] == [
        "20250317T170000Z",
        "20250324T170000Z",
        "20250331T160000Z",  # British Summer Time began on 30 March
        "20250407T160000Z",
    ]
    assert instances[2]["start"] == {"dateTime": "2025-03-31T17:00:00+01:00", "timeZone": LONDON}
    assert instances[2]["recurringEventId"] == master["id"]
    assert instances[2]["originalStartTime"] == instances[2]["start"]
    single = google.events(singleEvents="true", orderBy="startTime").json()["items"]
    assert [item["id"] for item in single] == [item["id"] for item in instances]


def test_interval_byday_and_until_bound_the_series(google: Google) -> None:
    master = _weekly(google, "RRULE:FREQ=WEEKLY;INTERVAL=2;BYDAY=MO,WE;UNTIL=20250416T000000Z")
    instances = google.api.get(f"{EVENTS}/{master['id']}/instances").json()["items"]
    assert [item["start"]["dateTime"][:10] for item in instances] == [
        "2025-03-17",
        "2025-03-19",
        "2025-03-31",
        "2025-04-02",
        "2025-04-14",
    ]


def test_changing_one_instance_makes_an_exception_that_incremental_sync_sees(
    google: Google,
) -> None:
    master = _weekly(google, "RRULE:FREQ=DAILY;COUNT=3")
    token = google.events().json()["nextSyncToken"]
    second = f"{master['id']}_20250318T170000Z"
    moved = google.api.patch(
        f"{EVENTS}/{second}",
        json={
            "start": {"dateTime": "2025-03-18T18:00:00+00:00"},
            "end": {"dateTime": "2025-03-18T18:45:00+00:00"},
        },
    ).json()
    assert moved["id"] == second
    assert moved["recurringEventId"] == master["id"]
    assert moved["originalStartTime"]["dateTime"] == "2025-03-18T17:00:00Z"
    assert moved["start"]["dateTime"] == "2025-03-18T18:00:00Z"
    google.calendar.teacher_deletes(f"{master['id']}_20250319T170000Z")
    changes = google.events(syncToken=token).json()["items"]
    assert [(item["id"], item["status"]) for item in changes] == [
        (second, "confirmed"),
        (f"{master['id']}_20250319T170000Z", "cancelled"),
    ]
    instances = google.api.get(f"{EVENTS}/{master['id']}/instances").json()["items"]
    assert [item["start"]["dateTime"] for item in instances] == [
        "2025-03-17T17:00:00Z",
        "2025-03-18T18:00:00Z",
    ]


def test_a_recurring_event_needs_a_time_zone_and_a_valid_rule(google: Google) -> None:
    body = _lesson("Weekly", 7, recurrence=["RRULE:FREQ=WEEKLY;COUNT=2"])
    body["start"] = {"dateTime": "2030-01-07T17:00:00Z"}
    assert _error(google.api.post(EVENTS, json=body)) == (400, "global", "required")
    broken = _lesson("Weekly", 7, recurrence=["RRULE:FREQ=SOMETIMES"])
    assert _error(google.api.post(EVENTS, json=broken)) == (400, "global", "invalid")


def test_the_teacher_moving_a_lesson_changes_its_etag_and_sequence(google: Google) -> None:
    made = google.calendar.teacher_creates(
        "Piano", datetime(2030, 1, 7, 17, tzinfo=UTC), datetime(2030, 1, 7, 18, tzinfo=UTC)
    )
    moved = google.calendar.teacher_moves(
        made["id"], datetime(2030, 1, 8, 17, tzinfo=UTC), datetime(2030, 1, 8, 18, tzinfo=UTC)
    )
    assert moved["etag"] != made["etag"]
    assert moved["sequence"] == 1
    assert google.api.get(f"{EVENTS}/{made['id']}").json()["start"]["dateTime"] == (
        "2030-01-08T17:00:00Z"
    )
    all_day = google.calendar.teacher_creates("Holiday", date(2030, 1, 9), date(2030, 1, 10))
    assert all_day["start"] == {"date": "2030-01-09"}


# --- Calendar: faults -------------------------------------------------------------------------


def test_injected_quota_errors_come_in_googles_shape_and_then_pass(google: Google) -> None:
    google.calendar.fail_next(429, "rateLimitExceeded", retry_after=7)
    google.calendar.fail_next(403, "rateLimitExceeded", on=("POST", "events"))
    throttled = google.events()
    assert _error(throttled) == (429, "usageLimits", "rateLimitExceeded")
    assert throttled.headers["retry-after"] == "7"
    assert google.events().status_code == 200
    limited = google.api.post(EVENTS, json=_lesson("Piano", 7))
    assert _error(limited) == (403, "usageLimits", "rateLimitExceeded")
    assert limited.json()["error"]["message"] == "Rate Limit Exceeded"
    assert google.api.post(EVENTS, json=_lesson("Piano", 7)).status_code == 200
    assert google.calendar.requests[("POST", "events")] == 2
    assert google.calendar.requests[("GET", "events")] == 2


def test_a_fault_can_repeat(google: Google) -> None:
    google.calendar.fail_next(503, "backendError", times=2)
    assert [google.events().status_code for _ in range(3)] == [503, 503, 200]


# --- Calendar: push notifications -------------------------------------------------------------


def _watch(google: Google, receiver: Receiver, channel_id: str = "chan-1") -> dict[str, Any]:
    answer = google.api.post(
        f"{EVENTS}/watch",
        json={
            "id": channel_id,
            "type": "web_hook",
            "address": receiver.url,
            "token": "target=switchboard",
        },
    )
    assert answer.status_code == 200, answer.text
    channel: dict[str, Any] = answer.json()
    return channel


def test_a_watch_answers_a_channel_and_notifications_follow_changes(
    google: Google, receiver: Receiver
) -> None:
    channel = _watch(google, receiver)
    assert channel["kind"] == "api#channel"
    assert channel["id"] == "chan-1"
    assert channel["token"] == "target=switchboard"
    assert channel["resourceUri"].endswith("/calendar/v3/calendars/primary/events?alt=json")
    assert int(channel["expiration"]) > 0
    google.calendar.deliver_notifications()
    sync = receiver.got[-1]
    assert (sync["x-goog-resource-state"], sync["x-goog-message-number"]) == ("sync", "1")
    assert google.calendar.deliver_notifications() == []
    google.calendar.teacher_creates(
        "Piano", datetime(2030, 1, 7, 17, tzinfo=UTC), datetime(2030, 1, 7, 18, tzinfo=UTC)
    )
    [delivery] = google.calendar.deliver_notifications()
    exists = receiver.got[-1]
    assert delivery.status_code == 200
    assert exists["x-goog-resource-state"] == "exists"
    assert int(exists["x-goog-message-number"]) > 1
    assert exists["x-goog-channel-id"] == "chan-1"
    assert exists["x-goog-resource-id"] == channel["resourceId"]
    assert exists["x-goog-resource-uri"] == channel["resourceUri"]
    assert exists["x-goog-channel-token"] == "target=switchboard"
    assert exists["x-goog-channel-expiration"].endswith(" GMT")
    assert receiver.bodies[-1] == b""


def test_a_stopped_or_expired_channel_is_silent(google: Google, receiver: Receiver) -> None:
    first = _watch(google, receiver, "chan-stop")
    _watch(google, receiver, "chan-expire")
    stopped = google.api.post(
        "/calendar/v3/channels/stop", json={"id": "chan-stop", "resourceId": first["resourceId"]}
    )
    assert stopped.status_code == 204
    google.calendar.expire_channels()
    google.calendar.teacher_creates(
        "Piano", datetime(2030, 1, 7, 17, tzinfo=UTC), datetime(2030, 1, 7, 18, tzinfo=UTC)
    )
    assert google.calendar.deliver_notifications() == []
    again = google.api.post(
        "/calendar/v3/channels/stop", json={"id": "chan-stop", "resourceId": first["resourceId"]}
    )
    assert _error(again) == (404, "global", "notFound")


def test_a_failing_receiver_gets_the_notification_again(google: Google, receiver: Receiver) -> None:
    _watch(google, receiver)
    receiver.status = 503
    google.calendar.deliver_notifications()
    receiver.status = 200
    [retried] = google.calendar.deliver_notifications()
    assert (retried.state, retried.status_code) == ("sync", 200)
    receiver.status = 404
    google.calendar.teacher_creates(
        "Piano", datetime(2030, 1, 7, 17, tzinfo=UTC), datetime(2030, 1, 7, 18, tzinfo=UTC)
    )
    [dropped] = google.calendar.deliver_notifications()
    assert dropped.status_code == 404
    assert google.calendar.deliver_notifications() == []


def test_a_watch_needs_https_except_on_loopback_and_a_unique_channel_id(
    google: Google, receiver: Receiver
) -> None:
    plain = google.api.post(
        f"{EVENTS}/watch",
        json={"id": "chan-x", "type": "web_hook", "address": "http://school.example/hook"},
    )
    assert _error(plain) == (400, "global", "push.webhookUrlNotHttps")
    _watch(google, receiver, "chan-dup")
    twice = google.api.post(
        f"{EVENTS}/watch", json={"id": "chan-dup", "type": "web_hook", "address": receiver.url}
    )
    assert _error(twice) == (400, "global", "channelIdNotUnique")


async def test_notifications_can_be_delivered_from_an_async_test(
    google: Google, receiver: Receiver
) -> None:
    _watch(google, receiver)
    [sync] = await google.calendar.deliver_notifications_async()
    assert (sync.state, sync.status_code) == ("sync", 200)
