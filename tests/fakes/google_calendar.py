"""A fake Google Calendar API v3 (events and push channels), faithful in what Switchboard relies
on, served over loopback. Bearer tokens are the ones a `FakeGoogleOAuth` issued.

- Paths under `/calendar/v3`: `GET|POST /calendars/{calendarId}/events` (list, insert),
  `GET|PUT|PATCH|DELETE /calendars/{calendarId}/events/{eventId}`,
  `GET /calendars/{calendarId}/events/{eventId}/instances`,
  `POST /calendars/{calendarId}/events/watch`, `POST /channels/stop`. `calendarId` is `primary`
  (the owner's calendar) or a calendar's id, an e-mail-like string sent URL-encoded
  (`teacher%40school.example`); others are 404 `notFound`.
- Every call needs `Authorization: Bearer <token>` with a live token of the OAuth fake: 401
  `required` "Login Required." without one, 401 `authError` "Invalid Credentials" for one that
  is unknown, expired or revoked; 403 `insufficientPermissions` when its scopes do not allow the
  call (writes need `calendar` or `calendar.events`; reads also take the `.readonly` ones).
- Events look as Google returns them: `kind` "calendar#event", `id`, `etag` (quoted, new on every
  change), `status`, `htmlLink`, `created`/`updated` (RFC 3339, milliseconds, UTC), `summary`,
  `description`, `location`, `creator`, `organizer`, `start`/`end` (`{dateTime, timeZone}`, the
  dateTime rendered with its offset in the event's time zone, or `{date}`), `recurrence`,
  `recurringEventId` and `originalStartTime` for instances and exceptions, `iCalUID`,
  `sequence` (bumped when the time or the recurrence changes), `extendedProperties`,
  `reminders`, `eventType`, `conferenceData` and `hangoutLink`.
- Insert may carry the client's `id`: base32hex characters (a-v, 0-9), 5 to 1024 of them, else
  400 `invalid`; an id already used in the calendar (even by a deleted event) is 409
  `duplicate`. `start`/`end` are required (400 `required` "Missing end time."), an end not
  after the start is 400 `timeRangeEmpty`, a dateTime without offset needs a `timeZone`, and so
  does the start of a recurring event (400 `required` "Missing time zone definition for start
  time.").
- `conferenceDataVersion=1` with `conferenceData.createRequest` (`requestId`,
  `conferenceSolutionKey.type` "hangoutsMeet") makes a Meet conference: `conferenceData` with
  the request's `status.statusCode` "success", a video entry point
  `https://meet.google.com/<meet_code>`, `conferenceSolution`, `conferenceId`, and
  `hangoutLink`. Without `conferenceDataVersion=1` conference data in the body is ignored; the
  same `requestId` again is ignored too; other solution types are 400 `invalid`.
- `If-Match` on PUT/PATCH/DELETE: an etag that is not the event's current one is 412
  `conditionNotMet`. `If-None-Match` on GET answers 304 while the etag holds.
- DELETE answers 204 and marks the event `cancelled` (a recurring event with its exceptions);
  deleting it again is 410 `deleted`. GET still returns a cancelled event ("The get method
  always returns them"); lists return it only on incremental sync, with `showDeleted=true`, or
  with `updatedMin` before its deletion, and then only with `id`, `status`, `etag` (and, for a
  cancelled exception, `recurringEventId` and `originalStartTime`) - "Deleted events are only
  guaranteed to have the id field populated". Cancelled exceptions of a live recurring event
  are listed when `showDeleted` and `singleEvents` are both false.
- List: `maxResults` (default 250, at most 2500), `pageToken`/`nextPageToken`, `singleEvents`,
  `showDeleted`, `timeMin`/`timeMax` (RFC 3339 with offset; an event is listed if it overlaps;
  `timeMax` not after `timeMin` is 400 `timeRangeEmpty`), `updatedMin`, `orderBy`
  (`startTime` needs `singleEvents=true`, or 400 `badRequest`; `updated`), `q`, `iCalUID`,
  `privateExtendedProperty`, `syncToken`. The last page carries `nextSyncToken`, which stands
  for the calendar as it was when the first page was asked for. With `syncToken` the list is
  every event changed since (cancelled ones included); `timeMin`, `timeMax`, `updatedMin`,
  `orderBy`, `q`, `iCalUID`, `privateExtendedProperty` or `showDeleted=false` with it are
  400 `invalid`; a token that is unknown, of another calendar, or expired
  (`expire_sync_tokens`) is 410 `fullSyncRequired`. The envelope is `kind` "calendar#events",
  `etag`, `summary`, `timeZone`, `updated`, `accessRole`, `defaultReminders`, `items`.
- Recurring events: `RRULE` (any rule python-dateutil expands: FREQ, COUNT, UNTIL, INTERVAL,
  BYDAY, ...), `EXDATE` and `RDATE`, expanded in the start's `timeZone`, so a lesson stays at
  its wall-clock time across daylight saving changes. Instances have ids
  `{masterId}_{YYYYMMDDTHHMMSSZ}` (UTC start; `{masterId}_{YYYYMMDD}` for all-day events);
  `singleEvents=true` and `/instances` expand them (up to `horizon` past now when no `timeMax`
  bounds an endless rule). PUT/PATCH of an instance id makes an exception event with that id,
  `recurringEventId` and `originalStartTime`; DELETE of one makes a cancelled exception. Both
  show up in incremental sync.
- Errors have Google's shape:
  `{"error": {"errors": [{"domain", "reason", "message", ...}], "code", "message"}}`.
  `fail_next` injects some: 403 `usageLimits` `rateLimitExceeded` / `userRateLimitExceeded` /
  `quotaExceeded`, 429 `rateLimitExceeded` (with `Retry-After` if asked), 500/503
  `backendError`, ...
- Push: `events.watch` with `{id, type: "web_hook", address, token?, expiration?}` answers
  `{kind: "api#channel", id, resourceId, resourceUri, token, expiration}` (expiration in ms as
  a string; a week when not asked, at most `max_channel_lifetime`). A channel id must be unique
  (400 `channelIdNotUnique`); the address must be HTTPS (400 `push.webhookUrlNotHttps`) -
  except that this fake also takes `http://` on 127.0.0.1, ::1 and localhost, where tests
  listen. `deliver_notifications` (deterministic: the test calls it) POSTs, with an empty
  body, `X-Goog-Channel-ID`, `X-Goog-Message-Number`, `X-Goog-Resource-ID`,
  `X-Goog-Resource-State` ("sync" first, with message number 1; then "exists"),
  `X-Goog-Resource-URI`, `X-Goog-Channel-Token` (if set) and `X-Goog-Channel-Expiration`
  (RFC 1123), for each channel whose calendar changed since its last delivery; message numbers
  grow but not one by one. A 200, 201, 202, 204 or 102 answer acknowledges; after a 500, 502,
  503, 504 or a failed connection the message is sent again at the next delivery; any other
  answer drops it. `channels.stop` (`{id, resourceId}`) ends a channel (404 `notFound` for an
  unknown one); a channel past its expiration (`expire_channels`) delivers nothing.

"Teacher acts in Google's UI" helpers change the calendar the way a person would, with the
same etags, revisions and notifications as API calls: `teacher_creates`, `teacher_moves`,
`teacher_edits`, `teacher_deletes`. `requests` counts calls per (HTTP method, path kind), the
kinds being "events", "event", "instances", "watch" and "channels.stop"; `seen` records them.

Not reproduced: attendees' notifications (`sendUpdates`), `events.import`/`move`/`quickAdd`,
the `timeZone` query parameter, calendars other than those `add_calendar` makes, ACLs.

Relied on (Google for Developers, Google Calendar API):
the Events resource https://developers.google.com/calendar/api/v3/reference/events (id rules,
status and cancelled events, recurrence, conferenceData, extendedProperties);
events.list https://developers.google.com/calendar/api/v3/reference/events/list (parameters,
maxResults default and cap, syncToken restrictions, showDeleted and updatedMin);
events.insert, events.update, events.patch, events.delete, events.instances and events.watch
under the same reference; "Synchronize resources efficiently"
https://developers.google.com/calendar/api/guides/sync (nextSyncToken on the last page, 410 for
invalid tokens); "Handle API errors" https://developers.google.com/calendar/api/guides/errors
(error shape, 401 authError, 403 usageLimits, 409 duplicate, 410 fullSyncRequired and deleted,
412 conditionNotMet, 429); "Recurring events"
https://developers.google.com/calendar/api/concepts/events-calendars and
https://developers.google.com/calendar/api/guides/recurringevents (instances and exceptions);
"Create events" https://developers.google.com/calendar/api/guides/create-events (Meet
conferences with conferenceDataVersion=1); "Push notifications"
https://developers.google.com/calendar/api/guides/push (watch request and answer, notification
headers, sync message, acknowledging and retries, stopping channels);
"Manage quotas" https://developers.google.com/calendar/api/guides/quota (rate limit errors).
"""

from __future__ import annotations

import base64
import copy
import email.utils
import hashlib
import json
import re
import secrets
import threading
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from typing import Any
from urllib.parse import quote, urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import httpx
from dateutil.rrule import rrulestr
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from tests.fakes.google_oauth import FakeGoogleOAuth

API = "/calendar/v3"
SCOPE = "https://www.googleapis.com/auth/calendar"
READ_SCOPES = frozenset(
    {
        SCOPE,
        SCOPE + ".readonly",
        SCOPE + ".events",
        SCOPE + ".events.readonly",
        SCOPE + ".events.owned",
        SCOPE + ".events.owned.readonly",
    }
)
WRITE_SCOPES = frozenset({SCOPE, SCOPE + ".events", SCOPE + ".events.owned"})
BASE32HEX = "0123456789abcdefghijklmnopqrstuv"
EVENT_ID = re.compile(r"[a-v0-9]{5,1024}")
CHANNEL_ID = re.compile(r"[A-Za-z0-9\-_+/=]{1,64}")
DEFAULT_MAX_RESULTS, MAX_RESULTS = 250, 2500
MAX_INSTANCES = 5000  # the fake's bound on one expansion
ACKNOWLEDGED = frozenset({102, 200, 201, 202, 204})
RETRIED = frozenset({0, 500, 502, 503, 504})  # 0: the connection failed
# Fields the server owns: what a client sends for them is ignored.
SERVER_FIELDS = frozenset(
    {
        "kind",
        "etag",
        "id",
        "htmlLink",
        "created",
        "updated",
        "iCalUID",
        "sequence",
        "organizer",
        "creator",
        "recurringEventId",
        "originalStartTime",
        "hangoutLink",
        "conferenceData",
    }
)
# Filters that cannot go with a syncToken (events.list reference).
NOT_WITH_SYNC_TOKEN = (
    "timeMin",
    "timeMax",
    "updatedMin",
    "orderBy",
    "q",
    "iCalUID",
    "privateExtendedProperty",
    "sharedExtendedProperty",
)
USAGE_LIMITS = {
    "rateLimitExceeded": "Rate Limit Exceeded",
    "userRateLimitExceeded": "User Rate Limit Exceeded",
    "quotaExceeded": "Calendar usage limits exceeded.",
    "dailyLimitExceeded": "Daily Limit Exceeded",
}
MEET_ICON = (
    "https://fonts.gstatic.com/s/i/productlogos/meet_2020q4/v6/web-512dp/"
    "logo_meet_2020q4_color_2x_web_512dp.png"
)


class ApiError(Exception):
    """An answer in Google's error shape."""

    def __init__(
        self,
        status: int,
        reason: str,
        message: str,
        *,
        domain: str = "global",
        location: str = "",
        location_type: str = "parameter",
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.reason = reason
        self.message = message
        self.domain = domain
        self.location = location
        self.location_type = location_type
        self.headers = headers or {}

    def response(self) -> Response:
        detail: dict[str, str] = {
            "domain": self.domain,
            "reason": self.reason,
            "message": self.message,
        }
        if self.location:
            detail["locationType"] = self.location_type
            detail["location"] = self.location
        return JSONResponse(
            {"error": {"errors": [detail], "code": self.status, "message": self.message}},
            status_code=self.status,
            headers=self.headers,
        )


@dataclass
class Seen:
    method: str
    path: str
    kind: str
    query: dict[str, str]
    headers: dict[str, str]
    body: bytes


@dataclass
class Stored:
    """An event as the calendar keeps it: Google's resource, its revision and list position."""

    resource: dict[str, Any]
    rev: int
    order: int


@dataclass
class Calendar:
    id: str
    time_zone: str
    summary: str
    created: datetime
    events: dict[str, Stored] = field(default_factory=dict)
    rev: int = 0  # revision of its latest change


@dataclass
class Channel:
    id: str
    resource_id: str
    resource_uri: str
    calendar_id: str
    address: str
    token: str
    expiration: int  # milliseconds since the epoch
    since_rev: int  # the calendar's revision its last "exists" (or the watch) covered
    synced: bool = False  # the "sync" message went out
    stopped: bool = False
    message_number: int = 0


@dataclass
class Delivery:
    channel_id: str
    state: str
    message_number: int
    status_code: int  # 0 when the connection failed
    headers: dict[str, str]

    @property
    def acknowledged(self) -> bool:
        return self.status_code in ACKNOWLEDGED


@dataclass
class Fault:
    status: int
    reason: str
    times: int
    retry_after: int | None
    on: tuple[str, str] | None  # (method, kind), or every call


@dataclass(frozen=True)
class Occurrence:
    """One instance of a recurring event: its id suffix, start, end, and start instant."""

    suffix: str
    start: dict[str, str]
    end: dict[str, str]
    instant: datetime


@dataclass
class Query:
    max_results: int = DEFAULT_MAX_RESULTS
    single_events: bool = False
    show_deleted: bool | None = None
    time_min: datetime | None = None
    time_max: datetime | None = None
    updated_min: datetime | None = None
    order_by: str = ""
    q: str = ""
    ical_uid: str = ""
    private: list[tuple[str, str]] = field(default_factory=list)
    sync_token: str = ""
    page_token: str = ""


def _utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass
class FakeGoogleCalendar:
    oauth: FakeGoogleOAuth
    owner: str = "teacher@school.example"
    time_zone: str = "Europe/London"
    meet_code: str = "abc-defg-hij"
    horizon: timedelta = timedelta(days=366)
    default_channel_lifetime: timedelta = timedelta(days=7)
    max_channel_lifetime: timedelta = timedelta(days=30)
    clock: Callable[[], datetime] = _utcnow
    project: str = "1071234567890"
    delivery_timeout: float = 5.0  # seconds a receiver has to answer a notification
    seen: list[Seen] = field(default_factory=list)
    requests: Counter[tuple[str, str]] = field(default_factory=Counter)
    calendars: dict[str, Calendar] = field(default_factory=dict)
    channels: dict[str, Channel] = field(default_factory=dict)
    deliveries: list[Delivery] = field(default_factory=list)
    _faults: list[Fault] = field(default_factory=list)
    _rev: int = 0
    _order: int = 0
    _sync_epoch: int = 1
    _lock: threading.RLock = field(default_factory=threading.RLock)

    def __post_init__(self) -> None:
        if self.owner not in self.calendars:
            self.add_calendar(self.owner, time_zone=self.time_zone, summary=self.owner)

    # --- what tests use -------------------------------------------------------------------------

    @property
    def app(self) -> Starlette:
        calendar = API + "/calendars/{calendar_id}/events"
        return Starlette(
            routes=[
                Route(calendar + "/watch", self._endpoint("watch", self._watch), methods=["POST"]),
                Route(
                    calendar + "/{event_id}/instances",
                    self._endpoint("instances", self._instances),
                    methods=["GET"],
                ),
                Route(
                    calendar + "/{event_id}",
                    self._endpoint("event", self._event),
                    methods=["GET", "PUT", "PATCH", "DELETE"],
                ),
                Route(calendar, self._endpoint("events", self._events), methods=["GET", "POST"]),
                Route(
                    API + "/channels/stop",
                    self._endpoint("channels.stop", self._stop),
                    methods=["POST"],
                ),
            ]
        )

    def add_calendar(
        self, calendar_id: str, *, time_zone: str | None = None, summary: str = ""
    ) -> None:
        """Another calendar the account can write to (a teacher's or a room's)."""
        with self._lock:
            self.calendars[calendar_id] = Calendar(
                calendar_id, time_zone or self.time_zone, summary or calendar_id, self.clock()
            )

    def count(self, method: str, kind: str) -> int:
        return self.requests[(method, kind)]

    def fail_next(
        self,
        status: int,
        reason: str,
        times: int = 1,
        retry_after: int | None = None,
        *,
        on: tuple[str, str] | None = None,
    ) -> None:
        """The next `times` calls (of `on` = (method, kind) only, if given) fail with `status`
        and `reason`, after authentication and before doing anything."""
        with self._lock:
            self._faults.append(Fault(status, reason, times, retry_after, on))

    def expire_sync_tokens(self) -> None:
        """Every sync and page token issued so far is now invalid (410 fullSyncRequired)."""
        with self._lock:
            self._sync_epoch += 1

    def expire_channels(self) -> None:
        """Every notification channel is past its expiration."""
        with self._lock:
            past = int(self.clock().timestamp() * 1000) - 1
            for channel in self.channels.values():
                channel.expiration = min(channel.expiration, past)

    def event(self, event_id: str, calendar: str = "primary") -> dict[str, Any]:
        """What `GET` would show of an event (stored, or an instance of a recurring one)."""
        with self._lock:
            cal = self._calendar(calendar)
            stored, _ = self._find(cal, event_id)
            return copy.deepcopy(stored.resource)

    def stored_events(self, calendar: str = "primary") -> list[dict[str, Any]]:
        """Every event the calendar keeps, cancelled ones and exceptions included."""
        with self._lock:
            cal = self._calendar(calendar)
            ordered = sorted(cal.events.values(), key=lambda stored: stored.order)
            return [copy.deepcopy(stored.resource) for stored in ordered]

    def teacher_creates(
        self,
        summary: str,
        start: datetime | date,
        end: datetime | date,
        *,
        calendar: str = "primary",
        time_zone: str | None = None,
        recurrence: list[str] | None = None,
        description: str | None = None,
        location: str | None = None,
    ) -> dict[str, Any]:
        """The teacher makes an event in Google Calendar: a `date` makes an all-day one."""
        with self._lock:
            cal = self._calendar(calendar)
            zone = time_zone or cal.time_zone
            body: dict[str, Any] = {
                "summary": summary,
                "start": _when_of(start, zone),
                "end": _when_of(end, zone),
            }
            if recurrence:
                body["recurrence"] = list(recurrence)
            if description is not None:
                body["description"] = description
            if location is not None:
                body["location"] = location
            return copy.deepcopy(self._insert(cal, body, conference_version=0))

    def teacher_moves(
        self,
        event_id: str,
        start: datetime | date,
        end: datetime | date,
        *,
        calendar: str = "primary",
    ) -> dict[str, Any]:
        """The teacher drags an event (or one instance of a recurring one) to another time."""
        with self._lock:
            cal = self._calendar(calendar)
            current, _ = self._find(cal, event_id)
            zone = current.resource["start"].get("timeZone") or cal.time_zone
            body = {"start": _when_of(start, zone), "end": _when_of(end, zone)}
            return copy.deepcopy(self._update(cal, event_id, body, patch=True))

    def teacher_edits(
        self, event_id: str, *, calendar: str = "primary", **fields: Any
    ) -> dict[str, Any]:
        """The teacher edits fields of an event (as a PATCH would; None removes a field)."""
        with self._lock:
            cal = self._calendar(calendar)
            return copy.deepcopy(self._update(cal, event_id, dict(fields), patch=True))

    def teacher_deletes(self, event_id: str, *, calendar: str = "primary") -> None:
        """The teacher deletes an event (or one instance of a recurring one)."""
        with self._lock:
            self._delete(self._calendar(calendar), event_id)

    def deliver_notifications(self) -> list[Delivery]:
        """POST what Google would have sent since the last delivery, from the calling thread."""
        planned = self._plan()
        done: list[tuple[Channel, str, int, dict[str, str], int]] = []
        with httpx.Client(timeout=self.delivery_timeout) as client:
            for channel, state, number, headers in planned:
                try:
                    status = client.post(channel.address, headers=headers, content=b"").status_code
                except httpx.TransportError:
                    status = 0
                done.append((channel, state, number, headers, status))
        return self._settle(done)

    async def deliver_notifications_async(self) -> list[Delivery]:
        """`deliver_notifications` for a test whose receiver runs on the test's own loop."""
        planned = self._plan()
        done: list[tuple[Channel, str, int, dict[str, str], int]] = []
        async with httpx.AsyncClient(timeout=self.delivery_timeout) as client:
            for channel, state, number, headers in planned:
                try:
                    response = await client.post(channel.address, headers=headers, content=b"")
                    status = response.status_code
                except httpx.TransportError:
                    status = 0
                done.append((channel, state, number, headers, status))
        return self._settle(done)

    # --- the HTTP layer -------------------------------------------------------------------------

    def _endpoint(
        self, kind: str, handler: Callable[[Request, bytes], Response]
    ) -> Callable[[Request], Any]:
        async def endpoint(request: Request) -> Response:
            body = await request.body()
            with self._lock:
                self.requests[(request.method, kind)] += 1
                self.seen.append(
                    Seen(
                        request.method,
                        request.url.path,
                        kind,
                        dict(request.query_params),
                        dict(request.headers),
                        body,
                    )
                )
                try:
                    self._authenticate(request, kind)
                    self._inject(request.method, kind)
                    return handler(request, body)
                except ApiError as error:
                    return error.response()

        return endpoint

    def _authenticate(self, request: Request, kind: str) -> None:
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise ApiError(
                401,
                "required",
                "Login Required.",
                location="Authorization",
                location_type="header",
                headers={"WWW-Authenticate": 'Bearer realm="https://accounts.google.com/"'},
            )
        token = token.strip()
        if not self.oauth.accepts(token):
            raise ApiError(
                401,
                "authError",
                "Invalid Credentials",
                location="Authorization",
                location_type="header",
                headers={
                    "WWW-Authenticate": 'Bearer realm="https://accounts.google.com/", '
                    'error="invalid_token"'
                },
            )
        writes = request.method != "GET" and kind not in ("watch", "channels.stop")
        if not self.oauth.scopes_of(token) & (WRITE_SCOPES if writes else READ_SCOPES):
            raise ApiError(
                403,
                "insufficientPermissions",
                "Request had insufficient authentication scopes.",
            )

    def _inject(self, method: str, kind: str) -> None:
        for fault in self._faults:
            if fault.on is not None and fault.on != (method, kind):
                continue
            fault.times -= 1
            if fault.times <= 0:
                self._faults.remove(fault)
            headers = {} if fault.retry_after is None else {"Retry-After": str(fault.retry_after)}
            if fault.reason in USAGE_LIMITS:
                message, domain = USAGE_LIMITS[fault.reason], "usageLimits"
            elif fault.reason == "backendError":
                message, domain = "Backend Error", "global"
            else:
                message, domain = fault.reason, "global"
            raise ApiError(fault.status, fault.reason, message, domain=domain, headers=headers)

    def _events(self, request: Request, body: bytes) -> Response:
        cal = self._calendar(request.path_params["calendar_id"])
        if request.method == "POST":
            version = _conference_version(request)
            return JSONResponse(self._insert(cal, _json_object(body), conference_version=version))
        return JSONResponse(self._list(cal, _query(request)))

    def _event(self, request: Request, body: bytes) -> Response:
        cal = self._calendar(request.path_params["calendar_id"])
        event_id = request.path_params["event_id"]
        if request.method == "GET":
            stored, _ = self._find(cal, event_id)
            etag = stored.resource["etag"]
            if request.headers.get("if-none-match") == etag:
                return Response(status_code=304, headers={"ETag": etag})
            return JSONResponse(stored.resource, headers={"ETag": etag})
        if_match = request.headers.get("if-match")
        if request.method == "DELETE":
            self._delete(cal, event_id, if_match=if_match)
            return Response(status_code=204)
        updated = self._update(
            cal,
            event_id,
            _json_object(body),
            patch=request.method == "PATCH",
            if_match=if_match,
            conference_version=_conference_version(request),
        )
        return JSONResponse(updated, headers={"ETag": updated["etag"]})

    def _instances(self, request: Request, body: bytes) -> Response:
        cal = self._calendar(request.path_params["calendar_id"])
        master_id = request.path_params["event_id"]
        stored = cal.events.get(master_id)
        if stored is None:
            raise _not_found()
        if stored.resource["status"] == "cancelled":
            raise ApiError(410, "deleted", "Resource has been deleted")
        query = _query(request)
        rows: list[tuple[Any, dict[str, Any]]] = []
        if "recurrence" in stored.resource:
            for occurrence in self._occurrences(
                cal, stored.resource, query.time_min, query.time_max
            ):
                exception = cal.events.get(f"{master_id}_{occurrence.suffix}")
                if exception is None:
                    rows.append((occurrence.instant, self._instance(cal, stored, occurrence)))
                elif exception.resource["status"] != "cancelled" or query.show_deleted:
                    rows.append((occurrence.instant, _listed(exception.resource)))
        rows.sort(key=lambda row: row[0])
        items = [resource for _, resource in rows]
        offset, snapshot = self._page_start(query, cal)
        page = items[offset : offset + query.max_results]
        envelope = self._envelope(cal, page)
        if offset + query.max_results < len(items):
            envelope["nextPageToken"] = self._page_token(offset + query.max_results, snapshot)
        return JSONResponse(envelope)

    def _watch(self, request: Request, body: bytes) -> Response:
        calendar_param = request.path_params["calendar_id"]
        cal = self._calendar(calendar_param)
        asked = _json_object(body)
        channel_id = asked.get("id")
        if not isinstance(channel_id, str) or not channel_id:
            raise ApiError(400, "required", "Required", location="id")
        if not CHANNEL_ID.fullmatch(channel_id):
            raise ApiError(400, "invalid", f"Invalid channel id: {channel_id}", location="id")
        if asked.get("type") not in ("web_hook", "webhook"):
            raise ApiError(400, "invalid", f"Invalid value for channel type: {asked.get('type')}")
        address = asked.get("address")
        if not isinstance(address, str) or not address:
            raise ApiError(400, "required", "Required", location="address")
        if not _deliverable(address):
            raise ApiError(
                400, "push.webhookUrlNotHttps", f"WebHook callback must be HTTPS: {address}"
            )
        if channel_id in self.channels:
            raise ApiError(400, "channelIdNotUnique", f"Channel id {channel_id} not unique")
        now_ms = int(self.clock().timestamp() * 1000)
        longest = now_ms + int(self.max_channel_lifetime.total_seconds() * 1000)
        try:
            asked_expiration = int(str(asked.get("expiration") or 0))
        except ValueError as error:
            raise ApiError(400, "invalid", "Invalid expiration", location="expiration") from error
        expiration = asked_expiration or now_ms + int(
            self.default_channel_lifetime.total_seconds() * 1000
        )
        token = asked.get("token")
        channel = Channel(
            id=channel_id,
            resource_id=_resource_id(cal.id),
            resource_uri=str(request.base_url).rstrip("/")
            + f"{API}/calendars/{quote(calendar_param, safe='')}/events?alt=json",
            calendar_id=cal.id,
            address=address,
            token=token if isinstance(token, str) else "",
            expiration=min(expiration, longest),
            since_rev=cal.rev,
        )
        self.channels[channel_id] = channel
        answer = {
            "kind": "api#channel",
            "id": channel.id,
            "resourceId": channel.resource_id,
            "resourceUri": channel.resource_uri,
            "expiration": str(channel.expiration),
        }
        if channel.token:
            answer["token"] = channel.token
        return JSONResponse(answer)

    def _stop(self, request: Request, body: bytes) -> Response:
        asked = _json_object(body)
        channel = self.channels.get(str(asked.get("id", "")))
        if channel is None or channel.stopped or channel.resource_id != asked.get("resourceId"):
            raise ApiError(
                404,
                "notFound",
                f"Channel '{asked.get('id')}' not found for project '{self.project}'",
            )
        channel.stopped = True
        return Response(status_code=204)

    # --- events ---------------------------------------------------------------------------------

    def _calendar(self, calendar_id: str) -> Calendar:
        cal = self.calendars.get(self.owner if calendar_id == "primary" else calendar_id)
        if cal is None:
            raise _not_found()
        return cal

    def _find(self, cal: Calendar, event_id: str) -> tuple[Stored, bool]:
        """The event with this id, and whether it is an instance made up from its master."""
        stored = cal.events.get(event_id)
        if stored is not None:
            return stored, False
        master_id, _, suffix = event_id.rpartition("_")
        master = cal.events.get(master_id)
        if master is None or "recurrence" not in master.resource:
            raise _not_found()
        around = _suffix_instant(suffix)
        if around is None:
            raise _not_found()
        for occurrence in self._occurrences(
            cal, master.resource, around - timedelta(days=2), around + timedelta(days=2)
        ):
            if occurrence.suffix == suffix:
                instance = self._instance(cal, master, occurrence)
                return Stored(instance, master.rev, master.order), True
        raise _not_found()

    def _insert(
        self, cal: Calendar, body: dict[str, Any], *, conference_version: int
    ) -> dict[str, Any]:
        event_id = body.get("id")
        if event_id is None:
            event_id = "".join(secrets.choice(BASE32HEX) for _ in range(26))
        elif not isinstance(event_id, str) or not EVENT_ID.fullmatch(event_id):
            raise ApiError(400, "invalid", "Invalid resource id value.")
        if event_id in cal.events:
            raise ApiError(409, "duplicate", "The requested identifier already exists.")
        now = self.clock()
        resource: dict[str, Any] = {
            "kind": "calendar#event",
            "etag": "",
            "id": event_id,
            "status": "confirmed",
            "htmlLink": _html_link(event_id, cal.id),
            "created": _rfc3339(now),
            "updated": _rfc3339(now),
            "creator": {"email": self.owner, "self": True},
            "organizer": {"email": cal.id, "self": True}
            if cal.id == self.owner
            else {"email": cal.id, "displayName": cal.summary, "self": True},
        }
        resource.update(_writable(body))
        resource["status"] = resource.get("status") or "confirmed"
        ical_uid = body.get("iCalUID")
        resource["iCalUID"] = ical_uid if isinstance(ical_uid, str) else f"{event_id}@google.com"
        resource["sequence"] = 0
        resource.setdefault("reminders", {"useDefault": True})
        resource.setdefault("eventType", "default")
        self._shape(cal, resource)
        self._confer(resource, None, body, conference_version)
        self._order += 1
        stored = Stored(resource, 0, self._order)
        cal.events[event_id] = stored
        self._touch(cal, stored)
        return resource

    def _update(
        self,
        cal: Calendar,
        event_id: str,
        body: dict[str, Any],
        *,
        patch: bool,
        if_match: str | None = None,
        conference_version: int = 0,
    ) -> dict[str, Any]:
        stored, made_up = self._find(cal, event_id)
        current = stored.resource
        _check_if_match(if_match, current)
        writable = _writable(body)
        if patch:
            updated = _merged(copy.deepcopy(current), writable)
            for which in ("start", "end"):
                given = writable.get(which)
                if isinstance(given, dict) and "date" in given:
                    updated[which].pop("dateTime", None)
                elif isinstance(given, dict) and "dateTime" in given:
                    updated[which].pop("date", None)
        else:
            kept = {
                key: copy.deepcopy(value) for key, value in current.items() if key in SERVER_FIELDS
            }
            updated = {**kept, **copy.deepcopy(writable)}
            updated.setdefault("reminders", {"useDefault": True})
            updated.setdefault("eventType", "default")
        updated["status"] = updated.get("status") or "confirmed"
        if "recurringEventId" in current:
            updated.pop("recurrence", None)
        self._shape(cal, updated)
        self._confer(updated, current, body, conference_version)
        if any(current.get(key) != updated.get(key) for key in ("start", "end", "recurrence")):
            updated["sequence"] = int(current.get("sequence", 0)) + 1
        if made_up:
            stored = Stored(updated, stored.rev, stored.order)
            cal.events[event_id] = stored
        else:
            stored.resource = updated
        self._touch(cal, stored)
        return updated

    def _delete(self, cal: Calendar, event_id: str, *, if_match: str | None = None) -> None:
        stored, made_up = self._find(cal, event_id)
        _check_if_match(if_match, stored.resource)
        if stored.resource["status"] == "cancelled":
            raise ApiError(410, "deleted", "Resource has been deleted")
        if made_up:
            cal.events[event_id] = stored
        stored.resource["status"] = "cancelled"
        self._touch(cal, stored)
        if "recurrence" in stored.resource:
            for other in cal.events.values():
                if (
                    other.resource.get("recurringEventId") == event_id
                    and other.resource["status"] != "cancelled"
                ):
                    other.resource["status"] = "cancelled"
                    self._touch(cal, other)

    def _touch(self, cal: Calendar, stored: Stored) -> None:
        self._rev += 1
        stored.rev = self._rev
        stored.resource["etag"] = f'"{3_400_000_000_000_000 + self._rev}"'
        stored.resource["updated"] = _rfc3339(self.clock())
        cal.rev = self._rev

    def _shape(self, cal: Calendar, resource: dict[str, Any]) -> None:
        """Check and normalise what a client may write, as Google's validation would."""
        start = _normalised_when(resource.get("start"), "start", cal.time_zone)
        end = _normalised_when(resource.get("end"), "end", cal.time_zone)
        if ("date" in start) != ("date" in end):
            raise ApiError(
                400, "invalid", "Start and end times must either both be date or both be dateTime."
            )
        resource["start"], resource["end"] = start, end
        if _instant(end, cal.time_zone) <= _instant(start, cal.time_zone):
            raise ApiError(
                400, "timeRangeEmpty", "The specified time range is empty.", domain="calendar"
            )
        if resource.get("status") not in ("confirmed", "tentative", "cancelled"):
            raise ApiError(400, "invalid", "Invalid value for: status", location="status")
        recurrence = resource.get("recurrence")
        if recurrence in (None, []):
            resource.pop("recurrence", None)
        else:
            if not isinstance(recurrence, list) or not all(isinstance(r, str) for r in recurrence):
                raise ApiError(400, "invalid", "Invalid recurrence rule.")
            if "dateTime" in start and "timeZone" not in start:
                raise ApiError(400, "required", "Missing time zone definition for start time.")
            try:
                first = _instant(start, cal.time_zone)
                _occurrences(resource, cal.time_zone, first, first + timedelta(days=1))
            except (ValueError, TypeError) as error:
                raise ApiError(400, "invalid", "Invalid recurrence rule.") from error
        extended = resource.get("extendedProperties")
        if extended is not None:
            valid = isinstance(extended, dict) and all(
                key in ("private", "shared")
                and isinstance(values, dict)
                and all(isinstance(v, str) for v in values.values())
                for key, values in extended.items()
            )
            if not valid:
                raise ApiError(400, "invalid", "Invalid extended property value.")

    def _confer(
        self,
        resource: dict[str, Any],
        current: dict[str, Any] | None,
        body: dict[str, Any],
        version: int,
    ) -> None:
        """Conference data: the current one, unless a version-1 client asks for another."""
        for key in ("conferenceData", "hangoutLink"):
            resource.pop(key, None)
            if current is not None and key in current:
                resource[key] = copy.deepcopy(current[key])
        if version < 1 or "conferenceData" not in body:
            return
        asked = body["conferenceData"]
        if asked is None:
            resource.pop("conferenceData", None)
            resource.pop("hangoutLink", None)
            return
        if not isinstance(asked, dict):
            raise ApiError(400, "invalid", "Invalid conference data.")
        create = asked.get("createRequest")
        if not isinstance(create, dict):
            resource["conferenceData"] = copy.deepcopy(asked)  # copied from another event
            return
        request_id = create.get("requestId")
        if not isinstance(request_id, str) or not request_id:
            raise ApiError(400, "invalid", "Invalid conference create request.")
        previous = (resource.get("conferenceData") or {}).get("createRequest", {})
        if previous.get("requestId") == request_id:
            # "If an ID provided is the same as for the previous request, the request is ignored."
            return
        solution = (create.get("conferenceSolutionKey") or {}).get("type")
        if solution != "hangoutsMeet":
            raise ApiError(400, "invalid", "Invalid conference type value.")
        uri = f"https://meet.google.com/{self.meet_code}"
        resource["conferenceData"] = {
            "createRequest": {
                "requestId": request_id,
                "conferenceSolutionKey": {"type": "hangoutsMeet"},
                "status": {"statusCode": "success"},
            },
            "entryPoints": [
                {
                    "entryPointType": "video",
                    "uri": uri,
                    "label": uri.removeprefix("https://"),
                }
            ],
            "conferenceSolution": {
                "key": {"type": "hangoutsMeet"},
                "name": "Google Meet",
                "iconUri": MEET_ICON,
            },
            "conferenceId": self.meet_code,
        }
        resource["hangoutLink"] = uri

    def _occurrences(
        self,
        cal: Calendar,
        master: dict[str, Any],
        lo: datetime | None,
        hi: datetime | None,
    ) -> list[Occurrence]:
        if hi is None:
            first = _instant(master["start"], cal.time_zone)
            hi = max(self.clock(), first) + self.horizon
        return _occurrences(master, cal.time_zone, lo, hi)

    def _instance(self, cal: Calendar, master: Stored, occurrence: Occurrence) -> dict[str, Any]:
        instance = copy.deepcopy(master.resource)
        instance.pop("recurrence", None)
        instance["id"] = f"{master.resource['id']}_{occurrence.suffix}"
        instance["htmlLink"] = _html_link(instance["id"], cal.id)
        instance["start"], instance["end"] = dict(occurrence.start), dict(occurrence.end)
        instance["recurringEventId"] = master.resource["id"]
        instance["originalStartTime"] = dict(occurrence.start)
        return instance

    # --- listing --------------------------------------------------------------------------------

    def _list(self, cal: Calendar, query: Query) -> dict[str, Any]:
        since: int | None = None
        if query.sync_token:
            since = self._sync_point(query.sync_token, cal)
        offset, snapshot = self._page_start(query, cal)
        rows = self._select(cal, query, since)
        page = [resource for _, resource in rows[offset : offset + query.max_results]]
        envelope = self._envelope(cal, page)
        if offset + query.max_results < len(rows):
            envelope["nextPageToken"] = self._page_token(offset + query.max_results, snapshot)
        else:
            envelope["nextSyncToken"] = self._sync_token(cal, snapshot)
        return envelope

    def _select(
        self, cal: Calendar, query: Query, since: int | None
    ) -> list[tuple[Any, dict[str, Any]]]:
        rows: list[tuple[tuple[Any, ...], Stored, dict[str, Any]]] = []
        for stored in sorted(cal.events.values(), key=lambda s: s.order):
            resource = stored.resource
            if since is not None and stored.rev <= since:
                continue
            cancelled = resource["status"] == "cancelled"
            recurring = "recurrence" in resource
            if query.single_events and recurring and not cancelled:
                lo = None if since is not None else query.time_min
                hi = None if since is not None else query.time_max
                for occurrence in self._occurrences(cal, resource, lo, hi):
                    if f"{resource['id']}_{occurrence.suffix}" in cal.events:
                        continue  # the exception speaks for itself
                    instance = self._instance(cal, stored, occurrence)
                    rows.append(((stored.order, occurrence.instant), stored, instance))
                continue
            if cancelled and not self._shows_cancelled(cal, resource, query, since):
                continue
            if since is None and not self._in_window(cal, resource, query):
                continue
            start = resource.get("originalStartTime") or resource["start"]
            rows.append(((stored.order, _instant(start, cal.time_zone)), stored, resource))
        rows = [row for row in rows if _matches(row[2], query)]
        if query.order_by == "startTime":
            rows.sort(key=lambda row: _instant(row[2]["start"], cal.time_zone))
        elif query.order_by == "updated":
            rows.sort(key=lambda row: row[2]["updated"])
        else:
            rows.sort(key=lambda row: row[0])
        return [(key, _listed(resource)) for key, _, resource in rows]

    def _shows_cancelled(
        self, cal: Calendar, resource: dict[str, Any], query: Query, since: int | None
    ) -> bool:
        if since is not None or query.show_deleted:
            return True
        if query.updated_min is not None and _parse_time(resource["updated"]) >= query.updated_min:
            return True
        master = cal.events.get(str(resource.get("recurringEventId", "")))
        return (
            not query.single_events
            and master is not None
            and master.resource["status"] != "cancelled"
        )

    def _in_window(self, cal: Calendar, resource: dict[str, Any], query: Query) -> bool:
        if query.time_min is None and query.time_max is None:
            return True
        if "recurrence" in resource and resource["status"] != "cancelled":
            return bool(self._occurrences(cal, resource, query.time_min, query.time_max))
        start = _instant(resource["start"], cal.time_zone)
        end = _instant(resource["end"], cal.time_zone)
        return (query.time_min is None or end > query.time_min) and (
            query.time_max is None or start < query.time_max
        )

    def _envelope(self, cal: Calendar, items: list[dict[str, Any]]) -> dict[str, Any]:
        latest = max(
            (stored.resource["updated"] for stored in cal.events.values()),
            default=_rfc3339(cal.created),
        )
        return {
            "kind": "calendar#events",
            "etag": f'"p3{cal.rev:016d}"',
            "summary": cal.summary,
            "description": "",
            "updated": latest,
            "timeZone": cal.time_zone,
            "accessRole": "owner",
            "defaultReminders": [{"method": "popup", "minutes": 10}],
            "items": items,
        }

    def _sync_token(self, cal: Calendar, rev: int) -> str:
        raw = json.dumps([self._sync_epoch, cal.id, rev]).encode()
        return "CP" + base64.b64encode(raw).decode()

    def _sync_point(self, token: str, cal: Calendar) -> int:
        try:
            epoch, calendar_id, rev = json.loads(base64.b64decode(token.removeprefix("CP")))
        except (ValueError, TypeError):
            epoch = calendar_id = rev = None
        if epoch != self._sync_epoch or calendar_id != cal.id or not isinstance(rev, int):
            raise ApiError(
                410,
                "fullSyncRequired",
                "Sync token is no longer valid, a full sync is required.",
            )
        return rev

    def _page_token(self, offset: int, snapshot: int) -> str:
        raw = json.dumps([self._sync_epoch, offset, snapshot]).encode()
        return base64.urlsafe_b64encode(raw).decode().rstrip("=")

    def _page_start(self, query: Query, cal: Calendar) -> tuple[int, int]:
        """Where the page starts, and the calendar revision the whole listing stands for."""
        if not query.page_token:
            return 0, cal.rev
        try:
            padded = query.page_token + "=" * (-len(query.page_token) % 4)
            epoch, offset, snapshot = json.loads(base64.urlsafe_b64decode(padded))
            offset, snapshot = int(offset), int(snapshot)
        except (ValueError, TypeError) as error:
            raise ApiError(
                400, "invalid", "Invalid page token value.", location="pageToken"
            ) from error
        if epoch != self._sync_epoch:
            raise ApiError(
                410, "fullSyncRequired", "Sync token is no longer valid, a full sync is required."
            )
        return offset, snapshot

    # --- push -----------------------------------------------------------------------------------

    def _plan(self) -> list[tuple[Channel, str, int, dict[str, str]]]:
        planned: list[tuple[Channel, str, int, dict[str, str]]] = []
        with self._lock:
            now_ms = int(self.clock().timestamp() * 1000)
            for channel in self.channels.values():
                if channel.stopped or channel.expiration <= now_ms:
                    continue
                cal = self.calendars[channel.calendar_id]
                if not channel.synced:
                    planned.append((channel, "sync", 1, self._headers(channel, "sync", 1)))
                if cal.rev > channel.since_rev:
                    number = max(channel.message_number, 1) + 1 + (cal.rev - channel.since_rev)
                    planned.append(
                        (channel, "exists", number, self._headers(channel, "exists", number))
                    )
        return planned

    def _headers(self, channel: Channel, state: str, number: int) -> dict[str, str]:
        headers = {
            "X-Goog-Channel-ID": channel.id,
            "X-Goog-Message-Number": str(number),
            "X-Goog-Resource-ID": channel.resource_id,
            "X-Goog-Resource-State": state,
            "X-Goog-Resource-URI": channel.resource_uri,
            "X-Goog-Channel-Expiration": email.utils.format_datetime(
                datetime.fromtimestamp(channel.expiration / 1000, UTC), usegmt=True
            ),
            "User-Agent": "APIs-Google; (+https://developers.google.com/webmasters/APIs-Google.html)",
        }
        if channel.token:
            headers["X-Goog-Channel-Token"] = channel.token
        return headers

    def _settle(self, done: list[tuple[Channel, str, int, dict[str, str], int]]) -> list[Delivery]:
        made: list[Delivery] = []
        with self._lock:
            for channel, state, number, headers, status in done:
                made.append(Delivery(channel.id, state, number, status, headers))
                channel.message_number = max(channel.message_number, number)
                if status in RETRIED:
                    continue  # sent again at the next delivery
                if state == "sync":
                    channel.synced = True
                else:
                    channel.since_rev = self.calendars[channel.calendar_id].rev
            self.deliveries.extend(made)
        return made


# --- times ------------------------------------------------------------------------------------


def _rfc3339(moment: datetime) -> str:
    moment = moment.astimezone(UTC)
    return f"{moment:%Y-%m-%dT%H:%M:%S}.{moment.microsecond // 1000:03d}Z"


def _rendered(moment: datetime) -> str:
    text = moment.isoformat(timespec="seconds")
    return text[:-6] + "Z" if text.endswith("+00:00") else text


def _parse_time(text: str) -> datetime:
    return datetime.fromisoformat(text)


def _zone(name: str, which: str) -> ZoneInfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError) as error:
        raise ApiError(400, "invalid", f"Invalid time zone definition for {which} time.") from error


def _normalised_when(value: Any, which: str, calendar_zone: str) -> dict[str, str]:
    if not isinstance(value, dict) or not (value.get("date") or value.get("dateTime")):
        raise ApiError(400, "required", f"Missing {which} time.")
    if value.get("date") and value.get("dateTime"):
        raise ApiError(400, "invalid", f"Invalid {which} time.")
    zone_name = value.get("timeZone")
    if zone_name is not None and not isinstance(zone_name, str):
        raise ApiError(400, "invalid", f"Invalid time zone definition for {which} time.")
    zone = _zone(zone_name, which) if zone_name else None
    if value.get("date"):
        try:
            day = date.fromisoformat(str(value["date"]))
        except ValueError as error:
            raise ApiError(400, "invalid", f"Invalid {which} time.") from error
        return {"date": day.isoformat()}
    try:
        moment = datetime.fromisoformat(str(value["dateTime"]))
    except ValueError as error:
        raise ApiError(400, "invalid", f"Invalid {which} time.") from error
    if moment.tzinfo is None:
        if zone is None:
            raise ApiError(400, "required", f"Missing time zone definition for {which} time.")
        moment = moment.replace(tzinfo=zone)
    shown: dict[str, str] = {
        "dateTime": _rendered(moment.astimezone(zone or _zone(calendar_zone, which)))
    }
    if zone_name:
        shown["timeZone"] = zone_name
    return shown


def _instant(when: dict[str, str], calendar_zone: str) -> datetime:
    """When a start or end happens; an all-day date at midnight in its (or the calendar's) zone."""
    if "dateTime" in when:
        return datetime.fromisoformat(when["dateTime"]).astimezone(UTC)
    zone = ZoneInfo(when.get("timeZone") or calendar_zone)
    return datetime.combine(date.fromisoformat(when["date"]), time(), zone).astimezone(UTC)


def _when_of(moment: datetime | date, zone: str) -> dict[str, str]:
    if isinstance(moment, datetime):
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=ZoneInfo(zone))
        return {"dateTime": _rendered(moment.astimezone(ZoneInfo(zone))), "timeZone": zone}
    return {"date": moment.isoformat()}


def _suffix_instant(suffix: str) -> datetime | None:
    for layout in ("%Y%m%dT%H%M%SZ", "%Y%m%d"):
        try:
            return datetime.strptime(suffix, layout).replace(tzinfo=UTC)
        except ValueError:
            continue
    return None


def _occurrences(
    master: dict[str, Any], calendar_zone: str, lo: datetime | None, hi: datetime
) -> list[Occurrence]:
    """The instances of a recurring event that overlap [lo, hi), expanded in wall-clock time of
    the start's time zone (RFC 5545), so that 17:00 stays 17:00 across DST changes."""
    start, end = master["start"], master["end"]
    all_day = "date" in start
    zone_name = start.get("timeZone") or calendar_zone
    zone = ZoneInfo(zone_name)
    first = _instant(start, calendar_zone)
    duration = _instant(end, calendar_zone) - first
    days = (
        (date.fromisoformat(end["date"]) - date.fromisoformat(start["date"])).days if all_day else 0
    )
    dtstart = (
        datetime.combine(date.fromisoformat(start["date"]), time())
        if all_day
        else first.astimezone(zone).replace(tzinfo=None)
    )
    lo = lo or first
    lo_wall = (lo - duration).astimezone(zone).replace(tzinfo=None) - timedelta(days=1)
    hi_wall = hi.astimezone(zone).replace(tzinfo=None) + timedelta(days=1)
    walls: set[datetime] = set()
    excluded: set[datetime] = set()
    for line in master.get("recurrence", []):
        head, _, value = line.partition(":")
        name, *params = head.split(";")
        name = name.strip().upper()
        if name == "RRULE":
            rule = rrulestr(_wall_until(value, zone, all_day), dtstart=dtstart)
            for wall in rule.between(lo_wall, hi_wall, inc=True):
                walls.add(wall)
                if len(walls) > MAX_INSTANCES:
                    break
        elif name in ("EXDATE", "RDATE"):
            for item in value.split(","):
                wall = _wall(item.strip(), params, zone)
                if name == "EXDATE":
                    excluded.add(wall)
                elif lo_wall <= wall <= hi_wall:
                    walls.add(wall)
        elif name != "EXRULE":
            raise ValueError(f"unsupported recurrence line {line!r}")
    found: list[Occurrence] = []
    for wall in sorted(walls - excluded):
        if all_day:
            day = wall.date()
            instant = datetime.combine(day, time(), zone).astimezone(UTC)
            shown_start = {"date": day.isoformat()}
            shown_end = {"date": (day + timedelta(days=days)).isoformat()}
            suffix = f"{day:%Y%m%d}"
        else:
            moment = wall.replace(tzinfo=zone)
            instant = moment.astimezone(UTC)
            end_zone = end.get("timeZone") or zone_name
            shown_start = {"dateTime": _rendered(moment), "timeZone": zone_name}
            shown_end = {
                "dateTime": _rendered((instant + duration).astimezone(ZoneInfo(end_zone))),
                "timeZone": end_zone,
            }
            suffix = f"{instant:%Y%m%dT%H%M%SZ}"
        if instant + duration <= lo or instant >= hi:
            continue
        found.append(Occurrence(suffix, shown_start, shown_end, instant))
    return found


def _wall_until(rule: str, zone: ZoneInfo, all_day: bool) -> str:
    """The rule with UNTIL in the same wall-clock terms as DTSTART (RFC 5545 writes it in UTC)."""
    parts = []
    for part in rule.split(";"):
        key, _, value = part.partition("=")
        if key.strip().upper() == "UNTIL":
            value = value.strip()
            if value.endswith("Z"):
                moment = datetime.strptime(value, "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC)
                wall = moment.astimezone(zone).replace(tzinfo=None)
                value = f"{wall:%Y%m%d}" if all_day else f"{wall:%Y%m%dT%H%M%S}"
            elif len(value) == 8 and not all_day:
                value += "T235959"  # a date UNTIL includes that whole day
            part = f"UNTIL={value}"
        parts.append(part)
    return ";".join(parts)


def _wall(item: str, params: list[str], zone: ZoneInfo) -> datetime:
    """An EXDATE/RDATE value as a naive wall-clock time in the event's zone."""
    if len(item) == 8:
        return datetime.strptime(item, "%Y%m%d")
    if item.endswith("Z"):
        moment = datetime.strptime(item, "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC)
        return moment.astimezone(zone).replace(tzinfo=None)
    named = next((p.split("=", 1)[1] for p in params if p.upper().startswith("TZID=")), None)
    moment = datetime.strptime(item, "%Y%m%dT%H%M%S").replace(
        tzinfo=ZoneInfo(named) if named else zone
    )
    return moment.astimezone(zone).replace(tzinfo=None)


# --- requests and answers ---------------------------------------------------------------------


def _query(request: Request) -> Query:
    params = request.query_params
    query = Query()
    if "maxResults" in params:
        try:
            asked = int(params["maxResults"])
        except ValueError:
            asked = 0
        if asked < 1:
            raise ApiError(
                400, "invalid", f"Invalid value '{params['maxResults']}'.", location="maxResults"
            )
        query.max_results = min(asked, MAX_RESULTS)
    query.single_events = _flag(params.get("singleEvents"), "singleEvents") or False
    query.show_deleted = _flag(params.get("showDeleted"), "showDeleted")
    for name in ("timeMin", "timeMax", "updatedMin"):
        if name in params:
            setattr(query, _snake(name), _time_param(params[name], name))
    query.order_by = params.get("orderBy", "")
    if query.order_by not in ("", "startTime", "updated"):
        raise ApiError(400, "invalid", f"Invalid value '{query.order_by}'.", location="orderBy")
    if query.order_by == "startTime" and not query.single_events:
        raise ApiError(
            400, "badRequest", "The requested ordering is not available for the particular query."
        )
    if query.time_min and query.time_max and query.time_max <= query.time_min:
        raise ApiError(
            400,
            "timeRangeEmpty",
            "The specified time range is empty.",
            domain="calendar",
            location="timeMax",
        )
    query.q = params.get("q", "")
    query.ical_uid = params.get("iCalUID", "")
    for item in params.getlist("privateExtendedProperty"):
        key, equals, value = item.partition("=")
        if not equals:
            raise ApiError(
                400, "invalid", f"Invalid value '{item}'.", location="privateExtendedProperty"
            )
        query.private.append((key, value))
    query.page_token = params.get("pageToken", "")
    query.sync_token = params.get("syncToken", "")
    if query.sync_token:
        clashing = [name for name in NOT_WITH_SYNC_TOKEN if name in params]
        if query.show_deleted is False:
            clashing.append("showDeleted")
        if clashing:
            raise ApiError(
                400,
                "invalid",
                f"The syncToken cannot be used together with {', '.join(clashing)}.",
                location="syncToken",
            )
    return query


def _snake(name: str) -> str:
    return re.sub(r"([A-Z])", lambda m: "_" + m.group(1).lower(), name)


def _flag(value: str | None, name: str) -> bool | None:
    if value is None:
        return None
    if value.lower() in ("true", "false"):
        return value.lower() == "true"
    raise ApiError(400, "invalid", f"Invalid boolean value: '{value}'.", location=name)


def _time_param(value: str, name: str) -> datetime:
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        moment = None
    if moment is None or moment.tzinfo is None:
        raise ApiError(400, "badRequest", "Bad Request", location=name)
    return moment.astimezone(UTC)


def _matches(resource: dict[str, Any], query: Query) -> bool:
    if query.updated_min is not None and _parse_time(resource["updated"]) < query.updated_min:
        return False
    if query.ical_uid and resource.get("iCalUID") != query.ical_uid:
        return False
    private = (resource.get("extendedProperties") or {}).get("private") or {}
    if any(private.get(key) != value for key, value in query.private):
        return False
    if query.q:
        text = " ".join(str(resource.get(k, "")) for k in ("summary", "description", "location"))
        return query.q.lower() in text.lower()
    return True


def _listed(resource: dict[str, Any]) -> dict[str, Any]:
    """An event as a list shows it: a deleted one with hardly more than its id."""
    if resource["status"] != "cancelled":
        return copy.deepcopy(resource)
    shown: dict[str, Any] = {
        key: resource[key] for key in ("kind", "etag", "id", "status") if key in resource
    }
    for key in ("recurringEventId", "originalStartTime"):
        if key in resource:
            shown[key] = copy.deepcopy(resource[key])
    return shown


def _json_object(body: bytes) -> dict[str, Any]:
    try:
        parsed = json.loads(body or b"{}")
    except ValueError as error:
        raise ApiError(400, "parseError", "Parse Error") from error
    if not isinstance(parsed, dict):
        raise ApiError(400, "parseError", "Parse Error")
    return parsed


def _conference_version(request: Request) -> int:
    try:
        return int(request.query_params.get("conferenceDataVersion", "0"))
    except ValueError as error:
        raise ApiError(
            400, "invalid", "Invalid conferenceDataVersion.", location="conferenceDataVersion"
        ) from error


def _writable(body: dict[str, Any]) -> dict[str, Any]:
    return {key: copy.deepcopy(value) for key, value in body.items() if key not in SERVER_FIELDS}


def _merged(target: dict[str, Any], patch: dict[str, Any]) -> dict[str, Any]:
    """PATCH semantics: objects merge key by key, other values (arrays too) replace, null
    removes."""
    for key, value in patch.items():
        if value is None:
            target.pop(key, None)
        elif isinstance(value, dict) and isinstance(target.get(key), dict):
            _merged(target[key], value)
        else:
            target[key] = copy.deepcopy(value)
    return target


def _check_if_match(if_match: str | None, resource: dict[str, Any]) -> None:
    if if_match is None or if_match.strip() == "*":
        return
    if if_match.strip() != resource["etag"]:
        raise ApiError(
            412,
            "conditionNotMet",
            "Precondition Failed",
            location="If-Match",
            location_type="header",
        )


def _not_found() -> ApiError:
    return ApiError(404, "notFound", "Not Found")


def _html_link(event_id: str, calendar_id: str) -> str:
    eid = base64.urlsafe_b64encode(f"{event_id} {calendar_id}".encode()).decode().rstrip("=")
    return f"https://www.google.com/calendar/event?eid={eid}"


def _resource_id(calendar_id: str) -> str:
    digest = hashlib.sha256(calendar_id.encode()).digest()
    return base64.urlsafe_b64encode(digest).decode().rstrip("=")[:27]


def _deliverable(address: str) -> bool:
    try:
        parts = urlsplit(address)
    except ValueError:
        return False
    if parts.scheme == "https" and parts.hostname:
        return True
    # Google takes HTTPS only; tests listen on plain HTTP on loopback.
    return parts.scheme == "http" and parts.hostname in ("127.0.0.1", "::1", "localhost")
