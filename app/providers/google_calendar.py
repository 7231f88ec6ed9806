"""Google Calendar: a teacher's calendar as a `CalendarBackend`, over the Calendar API v3 with
an OAuth 2.0 token for installed apps (app/providers/google_oauth.py).

Signing in (`GoogleCalendar.sign_in`) leaves a refresh token in the connection's
`refresh_token` secret. Access tokens are made from it when needed, kept in memory only until
a minute before Google says they expire, and made again once if Google answers 401. Every
call, the token endpoint's included, goes through the resilient HTTP layer.

Reading (`changes`): `events.list` with `singleEvents=false`, so a recurring event comes as
its master (with its RRULE) and an occurrence changed on its own (moved, edited, cancelled) as
an event of its own with `recurringEventId` and `originalStartTime`; `showDeleted=true`, so
deletions are seen on a first listing too; `maxResults=2500`, Google's largest page, every page
until the last one's `nextSyncToken`. Next time that token asks for what changed since, and
costs a request per 2500 changes whatever the size of the calendar. A token Google no longer
honours (410 fullSyncRequired) is answered with a complete listing, which the caller merges.
An occurrence is addressed as `occurrence_id(series, original start)` (as CalDAV's are); its
Google id, `<master id>_<UTC start as YYYYMMDDTHHMMSSZ>` (`_<YYYYMMDD>` for all-day events), is
what the API is called with.

Writing: a create sends our own id (`events.insert` with `id`), so a create repeated after a lost
answer meets the first (409 duplicate) and returns it. An update is Google's own advice, a
`get` and then an `update` (PUT) with `If-Match` (a `patch` costs three quota units and cannot
see whether a Meet conference is already there): the fields Switchboard keeps are written over
the event as it is, so what the teacher added (guests, reminders, colour) stays. A delete is
`DELETE` with `If-Match`. A stale etag is `PreconditionFailed` (412 conditionNotMet). Writing an
occurrence id writes that instance (Google makes it an exception); deleting it cancels it.

Quota: 429, and 403 with reason rateLimitExceeded or userRateLimitExceeded (domain
usageLimits), are retried with exponential backoff and full jitter, Retry-After first when
Google sends one; other 403s (a daily limit, a calendar the account may only read, a sign-in
without the calendar permission) are errors that say what to do.

Push: `watch` opens a notification channel (events.watch, type web_hook) and `stop_channel`
ends it. Google delivers only to an https address reachable from the internet, with a valid
certificate (not a self-signed one): a school whose receiver is only on the office network
syncs on a schedule instead. The channel token (our `channel_token` secret) comes back in
`X-Goog-Channel-Token` and is what the receiver checks (`GoogleChannelVerifier`).

Relied on (Google for Developers, Google Calendar API): the Events resource
(https://developers.google.com/calendar/api/v3/reference/events: id rules, start/end with
dateTime/timeZone or date, status, recurrence, recurringEventId, originalStartTime,
extendedProperties.private, conferenceData and hangoutLink); events.list (maxResults at most
2500, singleEvents, showDeleted "Cancelled instances of recurring events (but not the underlying
recurring event) will still be included if showDeleted and singleEvents are both False",
syncToken and the filters it refuses); events.insert, get, update, patch ("each patch request
consumes three quota units; prefer using a get followed by an update"), delete, watch;
"Synchronize resources efficiently" (https://developers.google.com/calendar/api/guides/sync:
nextSyncToken on the last page only, 410 for a token no longer valid, then a full sync);
"Handle API errors" (https://developers.google.com/calendar/api/guides/errors: 401 authError,
403 usageLimits rateLimitExceeded and userRateLimitExceeded with exponential backoff, 403
quotaExceeded, 409 duplicate, 410 fullSyncRequired and deleted, 412 conditionNotMet, 429);
"Manage quotas" (https://developers.google.com/calendar/api/guides/quota: 600 requests per
minute per user per project, by default); "Recurring events"
(https://developers.google.com/calendar/api/guides/recurringevents: instances and exceptions,
a recurring event's start needs its timeZone); "Create events"
(https://developers.google.com/calendar/api/guides/create-events: conferenceDataVersion=1 and
conferenceData.createRequest with a requestId and conferenceSolutionKey type hangoutsMeet);
"Push notifications" (https://developers.google.com/calendar/api/guides/push: the watch request
and answer, HTTPS with a valid certificate, the channel token, stopping channels).
"""

from __future__ import annotations

import asyncio
import copy
import hashlib
import json
import logging
import random
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime
from datetime import time as clock_time
from typing import Any, Final
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import httpx

from app.domain.sync import EventContent, EventStatus
from app.logs import REDACTOR
from app.providers import google_oauth
from app.providers.base import BearerProvider, HealthResult, Provider
from app.providers.calendar import (
    CALENDAR,
    CONFLICTS_FIELD,
    TEACHER_FIELD,
    CalendarGone,
    ChangeSet,
    PreconditionFailed,
    RemoteEvent,
    SyncTokenExpired,
    occurrence_id,
    split_occurrence_id,
)
from app.providers.google_oauth import (
    AUTH_URL,
    CALENDAR_EVENTS_SCOPE,
    REVOKE_URL,
    SIGN_IN_SECONDS,
    TOKEN_URL,
    SignInRequired,
    Tokens,
)
from app.providers.http import (
    CredentialsRefused,
    ProviderError,
    QuotaExceeded,
    RateLimited,
    ResilientClient,
    retry_after_seconds,
)
from app.providers.spec import (
    AuthKind,
    Category,
    ConfigField,
    FieldKind,
    Operation,
    ProviderSpec,
    RatePolicy,
    ResiliencePolicy,
    WebhookSpec,
)

log = logging.getLogger("switchboard.providers.google")

API_URL: Final = "https://www.googleapis.com"
SCOPE: Final = CALENDAR_EVENTS_SCOPE
KEY_PROPERTY: Final = "switchboardKey"  # extendedProperties.private: the record we wrote it for
PAGE_SIZE: Final = 2500  # events.list's largest page
RENEW_SECONDS: Final = 60.0  # renew an access token this long before Google says it expires
FULL_LISTING_TRIES: Final = 3  # a complete listing whose page token expires midway starts again
RATE_REASONS: Final = frozenset({"rateLimitExceeded", "userRateLimitExceeded"})
DAILY_REASONS: Final = frozenset({"quotaExceeded", "dailyLimitExceeded"})

_CALENDAR_PATH = "/calendar/v3/calendars/{calendar}"
EVENTS = Operation("events.list", "GET", _CALENDAR_PATH + "/events")
EVENT = Operation("events.get", "GET", _CALENDAR_PATH + "/events/{event}")
# Our own id makes a repeated insert a 409, never a second event: safe to repeat.
INSERT = Operation("events.insert", "POST", _CALENDAR_PATH + "/events", idempotent=True)
UPDATE = Operation("events.update", "PUT", _CALENDAR_PATH + "/events/{event}")
DELETE = Operation("events.delete", "DELETE", _CALENDAR_PATH + "/events/{event}")
WATCH = Operation("events.watch", "POST", _CALENDAR_PATH + "/events/watch")
STOP = Operation("channels.stop", "POST", "/calendar/v3/channels/stop", idempotent=True)
HEALTH = Operation("events.probe", "GET", _CALENDAR_PATH + "/events", timeout=10.0)


@dataclass(frozen=True)
class Channel:
    """A push notification channel Google opened: stop it with `id` and `resource_id`; it
    ends by itself at `expiration`, so open a new one before then."""

    id: str
    resource_id: str
    expiration: datetime | None
    resource_uri: str = ""


class GoogleCalendar(BearerProvider):
    """One Google calendar (the account's own, or one it may change) as a `CalendarBackend`."""

    page_size = PAGE_SIZE

    def __init__(
        self,
        spec: ProviderSpec,
        client: ResilientClient,
        config: Mapping[str, Any],
        secrets: Mapping[str, str],
    ) -> None:
        super().__init__(spec, client, config, secrets)
        # Occurrence ids -> Google's instance ids, as listings showed them (the fallback is
        # Google's documented form, for an occurrence never listed).
        self._instance_ids: dict[str, str] = {}
        # For the 403 rate-limit backoff; tests make them instant.
        self.sleep: Callable[[float], Awaitable[None]] = asyncio.sleep
        self.jitter: Callable[[], float] = random.random
        REDACTOR.add(self.secrets.get("refresh_token"))

    @property
    def calendar_id(self) -> str:
        return str(self.config.get("calendar_id") or "primary")

    def _url(self, name: str, default: str) -> str:
        return str(self.config.get(name) or default)

    # --- authentication -------------------------------------------------------------------------

    async def sign_in(
        self,
        open_browser: Callable[[str], Awaitable[object]],
        *,
        answer_within: float = SIGN_IN_SECONDS,
        login_hint: str = "",
    ) -> Tokens:
        """Sign in with Google in the browser (see `google_oauth.sign_in`) and use the new
        refresh token from now on. The caller keeps `Tokens.refresh_token` in the credential
        store as this connection's `refresh_token` secret."""
        tokens = await google_oauth.sign_in(
            self.client,
            client_id=str(self.config.get("client_id", "")),
            client_secret=self.secrets.get("client_secret", ""),
            open_browser=open_browser,
            auth_url=self._url("auth_url", AUTH_URL),
            token_url=self._url("token_url", TOKEN_URL),
            revoke_url=self._url("revoke_url", REVOKE_URL),
            scope=SCOPE,
            answer_within=answer_within,
            login_hint=login_hint,
        )
        self.adopt(tokens)
        return tokens

    def adopt(self, tokens: Tokens) -> None:
        """Use these tokens (a sign-in's) from now on."""
        if tokens.refresh_token:
            self.secrets["refresh_token"] = tokens.refresh_token
            REDACTOR.add(tokens.refresh_token)
        self._token = tokens.access_token
        self._expires_at = time.monotonic() + max(0.0, tokens.expires_in - RENEW_SECONDS)

    async def sign_out(self) -> None:
        """End Switchboard's access to the Google account (revoke the refresh token) and forget
        it. The caller removes the `refresh_token` secret from the credential store."""
        refresh_token = self.secrets.get("refresh_token", "")
        if refresh_token:
            await google_oauth.revoke(
                self.client, self._url("revoke_url", REVOKE_URL), refresh_token
            )
        self.secrets.pop("refresh_token", None)
        self._token, self._expires_at = "", 0.0

    async def call(self, operation: Operation, **arguments: Any) -> httpx.Response:
        """One call to the Calendar API with a bearer token (renewed once on a 401), on this
        connection's calendar unless `path_params` name another, and retried with backoff
        while Google answers 403 for a rate limit (the resilient layer retries 429 itself)."""
        path_params = {"calendar": self.calendar_id, **(arguments.get("path_params") or {})}
        arguments = {**arguments, "path_params": path_params}
        retry = self.client.policy.retry
        attempt = 1
        while True:
            response = await self._authorized(operation, arguments)
            if response.status_code != 403 or _reason(response) not in RATE_REASONS:
                return response
            wait = retry_after_seconds(response.headers.get("Retry-After"))
            if attempt >= max(retry.attempts, 1) or (
                wait is not None and wait > retry.max_retry_after
            ):
                raise RateLimited(
                    "Google Calendar asked Switchboard to slow down "
                    f"({_reason(response)}); it will be tried again later.",
                    status=403,
                    retry_after=wait,
                )
            if wait is None:
                # Full jitter, as the resilient layer does for 429 (Google: "exponential
                # backoff"), so connections limited together do not retry in step.
                cap = min(retry.max_delay, retry.base_delay * 2.0 ** (attempt - 1))
                wait = self.jitter() * cap
            log.info(
                "Google Calendar rate limit; retrying",
                extra={"operation": operation.name, "wait": round(wait, 3), "attempt": attempt},
            )
            await self.sleep(wait)
            attempt += 1

    async def _authorized(
        self, operation: Operation, arguments: Mapping[str, Any]
    ) -> httpx.Response:
        token = await self._access_token()
        response = await self._bearer_call(token, operation, arguments)
        if response.status_code == 401:
            # Revoked, or expired sooner than Google said: one new token, one more try.
            self._forget(token)
            response = await self._bearer_call(await self._access_token(), operation, arguments)
            if response.status_code == 401:
                raise SignInRequired(
                    "Google refused Switchboard's sign-in for this calendar (HTTP 401): sign in "
                    "with Google again.",
                    status=401,
                )
        return response

    async def _new_token(self) -> tuple[str, float]:
        refresh_token = self.secrets.get("refresh_token", "")
        if not refresh_token:
            raise SignInRequired(
                "Switchboard is not signed in to this Google calendar yet: sign in with "
                "Google on the Calendar sync page first."
            )
        tokens = await google_oauth.refresh(
            self.client,
            self._url("token_url", TOKEN_URL),
            str(self.config.get("client_id", "")),
            self.secrets.get("client_secret", ""),
            refresh_token,
        )
        self.adopt(tokens)
        return self._token, self._expires_at

    async def check_health(self) -> HealthResult:
        """One event of the calendar, asked with a fresh enough token: the sign-in, the
        calendar and the API all answer."""
        started = time.monotonic()
        try:
            response = await self.call(HEALTH, params={"maxResults": 1})
            if response.status_code >= 400:
                raise self._failure(response, "list the calendar's events", calendar=True)
        except ProviderError as error:
            elapsed = (time.monotonic() - started) * 1000
            return HealthResult(False, elapsed, str(error), error.error_class)
        elapsed = (time.monotonic() - started) * 1000
        return HealthResult(True, elapsed, f"Google Calendar answered in {elapsed:.0f} ms.")

    # --- reading --------------------------------------------------------------------------------

    async def changes(self, token: str = "", known: Mapping[str, str] | None = None) -> ChangeSet:
        known = known or {}
        if token:
            try:
                return await self._listing(token, known)
            except SyncTokenExpired:
                log.info("Google sync token expired; listing the whole calendar")
        for _ in range(FULL_LISTING_TRIES):
            try:
                return await self._listing("", known)
            except SyncTokenExpired:
                continue  # a page token expired midway: start the listing again
        raise SyncTokenExpired(
            "Google kept refusing the pages of the calendar's listing; try syncing again later."
        )

    async def _listing(self, sync_token: str, known: Mapping[str, str]) -> ChangeSet:
        """Every page of one listing: what changed since `sync_token`, or everything."""
        complete = not sync_token
        params: dict[str, Any] = {
            "maxResults": self.page_size,
            "singleEvents": "false",
            "showDeleted": "true",
        }
        if sync_token:
            params["syncToken"] = sync_token
        events: list[RemoteEvent] = []
        unchanged: set[str] = set()
        page = ""
        while True:
            response = await self.call(
                EVENTS, params={**params, "pageToken": page} if page else params
            )
            if response.status_code == 410:
                raise SyncTokenExpired(
                    "Google no longer honours the sync token; the whole calendar is read again.",
                    status=410,
                )
            if response.status_code >= 400:
                raise self._failure(response, "list the calendar's events", calendar=True)
            body = _json(response)
            for item in _items(body):
                remote = self._remote(item)
                if complete and remote.etag and known.get(remote.remote_id) == remote.etag:
                    unchanged.add(remote.remote_id)
                elif complete and remote.content is None and not remote.series:
                    # A complete listing leaves out what is gone; Google's tombstones of long
                    # deleted events say nothing more (an occurrence cancelled on its own does).
                    if remote.remote_id in known:
                        events.append(remote)
                else:
                    events.append(remote)
            page = str(body.get("nextPageToken") or "")
            if page:
                continue
            next_token = body.get("nextSyncToken")
            if not isinstance(next_token, str) or not next_token:
                raise ProviderError(
                    "Google ended the calendar's listing without a sync token; try again later."
                )
            return ChangeSet(events, next_token, complete, frozenset(unchanged))

    async def event(self, remote_id: str) -> RemoteEvent:
        for google_id in self._google_ids(remote_id):
            response = await self.call(EVENT, path_params={"event": google_id})
            if response.status_code == 404:
                continue
            if response.status_code >= 400:
                raise self._failure(response, "read an event")
            return self._remote(_json(response))
        return RemoteEvent(remote_id, "", None)

    # --- writing --------------------------------------------------------------------------------

    async def create(self, event_id: str, key: str, content: EventContent) -> RemoteEvent:
        body = resource_of(content, key)
        body["id"] = event_id
        params: dict[str, Any] = {}
        if content.online_meeting:
            params["conferenceDataVersion"] = 1
            body["conferenceData"] = _meet_request(f"switchboard-{event_id}")
        response = await self.call(INSERT, params=params, json=body)
        if response.status_code == 409:
            # Already there: this create was made before (its answer lost), or the event was
            # deleted since and Google keeps its id. A deleted one is brought back.
            current = await self._current(event_id)
            if current is None:
                raise ProviderError(
                    f"Google says event {event_id} exists but does not show it; try again later."
                )
            if current.get("status") != "cancelled":
                return self._remote(current)
            return await self._write(event_id, current, key, content, instance=False)
        if response.status_code >= 400:
            raise self._failure(response, "create an event")
        return self._remote(_json(response))

    async def update(
        self, remote_id: str, etag: str, key: str, content: EventContent
    ) -> RemoteEvent:
        google_id = self._google_ids(remote_id, all_day=content.all_day)[0]
        current = await self._current(google_id)
        if current is None:
            raise PreconditionFailed(
                "The event is no longer in the Google calendar; read it again.", status=404
            )
        if etag and current.get("etag") != etag:
            raise PreconditionFailed(
                "The event changed in the Google calendar since it was read; read it again.",
                status=412,
            )
        instance = google_id != remote_id or bool(current.get("recurringEventId"))
        return await self._write(google_id, current, key, content, instance=instance)

    async def delete(self, remote_id: str, etag: str) -> None:
        for google_id in self._google_ids(remote_id):
            headers = {"If-Match": etag} if etag else {}
            response = await self.call(DELETE, path_params={"event": google_id}, headers=headers)
            if response.status_code in (200, 204, 410):
                return  # 410: deleted already
            if response.status_code == 404:
                continue
            if response.status_code == 412:
                current = await self._current(google_id)
                if current is None or current.get("status") == "cancelled":
                    return  # gone meanwhile: what was asked for
                raise PreconditionFailed(
                    "The event changed in the Google calendar since it was read; read it again.",
                    status=412,
                )
            raise self._failure(response, "delete an event")

    async def _current(self, google_id: str) -> dict[str, Any] | None:
        response = await self.call(EVENT, path_params={"event": google_id})
        if response.status_code == 404:
            return None
        if response.status_code >= 400:
            raise self._failure(response, "read an event")
        return dict(_json(response))

    async def _write(
        self,
        google_id: str,
        current: Mapping[str, Any],
        key: str,
        content: EventContent,
        *,
        instance: bool,
    ) -> RemoteEvent:
        """PUT `content` over the event as it is (`current`), conditional on its etag."""
        body = resource_of(content, key, current=current, instance=instance)
        had_meeting = bool(current.get("conferenceData") or current.get("hangoutLink"))
        if content.online_meeting and not had_meeting:
            stamp = hashlib.sha256(str(current.get("etag", "")).encode()).hexdigest()[:12]
            body["conferenceData"] = _meet_request(f"switchboard-{google_id}-{stamp}")
        elif not content.online_meeting:
            body["conferenceData"] = None  # with conferenceDataVersion=1: remove it
            body.pop("hangoutLink", None)
        headers = {"If-Match": str(current["etag"])} if current.get("etag") else {}
        response = await self.call(
            UPDATE,
            path_params={"event": google_id},
            params={"conferenceDataVersion": 1},
            json=body,
            headers=headers,
        )
        if response.status_code == 412:
            raise PreconditionFailed(
                "The event changed in the Google calendar while it was being written; read it "
                "again.",
                status=412,
            )
        if response.status_code in (404, 410):
            raise PreconditionFailed(
                "The event was deleted from the Google calendar while it was being written; "
                "read it again.",
                status=response.status_code,
            )
        if response.status_code >= 400:
            raise self._failure(response, "change an event")
        return self._remote(_json(response))

    # --- push -----------------------------------------------------------------------------------

    async def watch(self, address: str, channel_id: str, token: str, ttl_seconds: float) -> Channel:
        """Ask Google to POST to `address` whenever the calendar's events change, for about
        `ttl_seconds` (Google may make it shorter). `address` must be https and reachable from
        the internet with a valid certificate; `token` comes back in X-Goog-Channel-Token."""
        body: dict[str, Any] = {
            "id": channel_id,
            "type": "web_hook",
            "address": address,
            "expiration": int((time.time() + ttl_seconds) * 1000),
        }
        if token:
            body["token"] = token
        response = await self.call(WATCH, json=body)
        if response.status_code >= 400:
            if _reason(response) == "push.webhookUrlNotHttps":
                raise ProviderError(
                    f"Google sends change notifications only to an https:// address that the "
                    f"internet can reach, with a valid certificate; {address} is not one, so "
                    "this calendar is synced on a schedule instead.",
                    status=response.status_code,
                )
            raise self._failure(response, "watch the calendar for changes", calendar=True)
        answer = _json(response)
        try:
            expiration: datetime | None = datetime.fromtimestamp(
                int(str(answer.get("expiration"))) / 1000, UTC
            )
        except ValueError:
            expiration = None
        return Channel(
            id=str(answer.get("id") or channel_id),
            resource_id=str(answer.get("resourceId") or ""),
            expiration=expiration,
            resource_uri=str(answer.get("resourceUri") or ""),
        )

    async def stop_channel(self, channel_id: str, resource_id: str) -> None:
        """Stop a channel's notifications; one Google no longer knows is no error."""
        response = await self.call(STOP, json={"id": channel_id, "resourceId": resource_id})
        if response.status_code < 400 or response.status_code == 404:
            return
        raise self._failure(response, "stop a notification channel")

    # --- answers --------------------------------------------------------------------------------

    def _google_ids(self, remote_id: str, *, all_day: bool | None = None) -> list[str]:
        """The Google ids to try for one of our remote ids, likeliest first."""
        known = self._instance_ids.get(remote_id)
        if known is not None:
            return [known]
        series, original = split_occurrence_id(remote_id)
        if original is None:
            return [remote_id]
        timed = f"{series}_{original:%Y%m%dT%H%M%SZ}"
        day = f"{series}_{original:%Y%m%d}"
        if all_day is True:
            return [day]
        if all_day is False or original.time() != clock_time():
            return [timed]
        return [timed, day]  # midnight UTC: an all-day occurrence, or a timed one at 00:00 UTC

    def _remote(self, item: Mapping[str, Any]) -> RemoteEvent:
        """One Google event as a RemoteEvent (and its Google id remembered for an occurrence)."""
        google_id = str(item.get("id") or "")
        if not google_id:
            raise ProviderError("Google listed an event without its id.")
        series = str(item.get("recurringEventId") or "")
        original = _moment(item.get("originalStartTime")) if series else None
        remote_id = google_id
        if series and original is not None:
            remote_id = occurrence_id(series, original)
            self._instance_ids[remote_id] = google_id
        etag = str(item.get("etag") or "")
        if item.get("status") == "cancelled":
            return RemoteEvent(
                remote_id, etag, None, key=_key(item), series=series, original_start=original
            )
        try:
            content = content_of(item)
        except (KeyError, TypeError, ValueError) as error:
            raise ProviderError(
                f"Google's event {google_id} could not be read ({error}); look at it in Google "
                "Calendar."
            ) from error
        return RemoteEvent(
            remote_id=remote_id,
            etag=etag,
            content=content,
            key=_key(item),
            meet_link=meet_link(item),
            series=series,
            original_start=original,
            link=str(item.get("htmlLink") or ""),
        )

    def _failure(
        self, response: httpx.Response, doing: str, *, calendar: bool = False
    ) -> ProviderError:
        """The error for an answer Google refused, in a sentence about what to do."""
        status = response.status_code
        reason, message = _error(response)
        said = f" ({reason}: {message})" if message else f" ({reason or status})"
        if status == 403 and reason in DAILY_REASONS:
            return QuotaExceeded(
                f"Google Calendar's usage limit for this account is used up{said}; syncing "
                "goes on when Google allows it again (usually within a day).",
                status=status,
            )
        if status == 403 and reason == "insufficientPermissions":
            return CredentialsRefused(
                f"Google did not let Switchboard {doing}{said}: sign in with Google again and "
                "allow Switchboard to manage the calendar's events.",
                status=status,
            )
        if status == 403:
            return ProviderError(
                f"Google did not let Switchboard {doing}{said}: the signed-in account must be "
                f"allowed to make changes to events of calendar {self.calendar_id!r} (share it "
                "with that account, or sign in with the teacher's own account).",
                status=status,
            )
        if status == 404 and calendar:
            return CalendarGone(
                f"Google has no calendar {self.calendar_id!r} for the signed-in account: check "
                "the calendar ID in the connection's settings (\"primary\" is the account's "
                "own calendar).",
                status=status,
            )
        return ProviderError(
            f"Google Calendar would not {doing}: HTTP {status}{said}.", status=status
        )


# --- EventContent <-> Google's Events resource ---------------------------------------------------


def content_of(item: Mapping[str, Any]) -> EventContent:
    """The normalized content of one Google event (not a cancelled one)."""
    start, all_day = _when(item["start"])
    end, _ = _when(item["end"])
    recurrence = [str(line) for line in item.get("recurrence") or []]
    zone = str(item["start"].get("timeZone") or "") if recurrence and not all_day else ""
    return EventContent(
        start=start,
        end=end,
        all_day=all_day,
        summary=str(item.get("summary") or ""),
        location=str(item.get("location") or ""),
        description=str(item.get("description") or ""),
        status=EventStatus(str(item.get("status") or "confirmed")),
        recurrence=tuple(recurrence),
        timezone=zone,
        online_meeting=bool(item.get("conferenceData") or item.get("hangoutLink")),
    )


def resource_of(
    content: EventContent,
    key: str,
    *,
    current: Mapping[str, Any] | None = None,
    instance: bool = False,
) -> dict[str, Any]:
    """The Events resource to send for `content`: `current` (the event as Google holds it)
    with the fields Switchboard keeps written over it, or a new one. `key` names the record in
    extendedProperties.private ("" leaves what is there). Conference data is left to the caller.

    A recurring event's start and end are written in its zone (`content.timezone`, UTC when it
    has none), so Google repeats it at the same wall-clock time across daylight saving changes.
    A single event keeps the zone it is shown in (the current event's, else the calendar's)."""
    body: dict[str, Any] = copy.deepcopy(dict(current)) if current is not None else {}
    body["summary"] = content.summary
    body["location"] = content.location
    body["description"] = content.description
    body["status"] = content.status.value
    if content.all_day:
        body["start"] = {"date": content.start.date().isoformat()}
        body["end"] = {"date": content.end.date().isoformat()}
    else:
        if content.recurrence and not instance:
            zone = content.timezone or "UTC"
        else:
            zone = str(((current or {}).get("start") or {}).get("timeZone") or "")
        body["start"] = _timed(content.start, zone)
        body["end"] = _timed(content.end, zone)
    if instance:
        body.pop("recurrence", None)  # an occurrence has no rule of its own
    elif content.recurrence:
        body["recurrence"] = list(content.recurrence)
    else:
        body.pop("recurrence", None)
    if key:
        extended = dict(body.get("extendedProperties") or {})
        private = dict(extended.get("private") or {})
        private[KEY_PROPERTY] = key
        extended["private"] = private
        body["extendedProperties"] = extended
    return body


def meet_link(item: Mapping[str, Any]) -> str:
    """The Meet (or other video) address of an event, "" when it has none yet."""
    link = item.get("hangoutLink")
    if isinstance(link, str) and link:
        return link
    conference = item.get("conferenceData")
    points = conference.get("entryPoints") if isinstance(conference, dict) else None
    for point in points if isinstance(points, list) else []:
        if isinstance(point, dict) and point.get("entryPointType") == "video":
            return str(point.get("uri") or "")
    return ""


def _meet_request(request_id: str) -> dict[str, Any]:
    # The request id is made from our own ids: a write repeated makes no second conference
    # ("If an ID provided is the same as for the previous request, the request is ignored").
    return {
        "createRequest": {
            "requestId": request_id[:1024],
            "conferenceSolutionKey": {"type": "hangoutsMeet"},
        }
    }


def _timed(moment: datetime, zone: str) -> dict[str, str]:
    """A dateTime with its offset in `zone` (and the zone named), or in UTC without one."""
    if zone:
        try:
            local = moment.astimezone(ZoneInfo(zone))
        except (ZoneInfoNotFoundError, ValueError):
            pass
        else:
            return {"dateTime": local.isoformat(timespec="seconds"), "timeZone": zone}
    return {"dateTime": moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")}


def _when(value: Any) -> tuple[datetime, bool]:
    """A start or end: the moment, and whether it is an all-day date."""
    if not isinstance(value, dict):
        raise ValueError(f"not a start or end: {value!r}")
    if value.get("date"):
        day = date.fromisoformat(str(value["date"]))
        return datetime.combine(day, clock_time(), UTC), True
    moment = datetime.fromisoformat(str(value["dateTime"]).replace("Z", "+00:00"))
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=ZoneInfo(str(value.get("timeZone") or "UTC")))
    return moment, False


def _moment(value: Any) -> datetime | None:
    """originalStartTime as a UTC moment (an all-day one at midnight UTC of its date)."""
    try:
        return _when(value)[0].astimezone(UTC)
    except (KeyError, TypeError, ValueError, ZoneInfoNotFoundError):
        return None


def _key(item: Mapping[str, Any]) -> str:
    extended = item.get("extendedProperties")
    private = extended.get("private") if isinstance(extended, dict) else None
    value = private.get(KEY_PROPERTY) if isinstance(private, dict) else None
    return value if isinstance(value, str) else ""


def _items(body: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    items = body.get("items")
    return [item for item in items if isinstance(item, dict)] if isinstance(items, list) else []


def _json(response: httpx.Response) -> Mapping[str, Any]:
    try:
        body = json.loads(response.content or b"{}")
    except ValueError:
        raise ProviderError(
            f"Google Calendar answered HTTP {response.status_code} with something that is not JSON."
        ) from None
    if not isinstance(body, dict):
        raise ProviderError("Google Calendar answered with something other than an object.")
    return body


def _error(response: httpx.Response) -> tuple[str, str]:
    """(reason, message) of Google's `{"error": {"errors": [{reason, message}], ...}}`."""
    try:
        body = json.loads(response.content or b"{}")
    except ValueError:
        return "", ""
    error = body.get("error") if isinstance(body, dict) else None
    if not isinstance(error, dict):
        return "", ""
    message = str(error.get("message") or "")
    details = error.get("errors")
    first = details[0] if isinstance(details, list) and details else None
    if isinstance(first, dict):
        return str(first.get("reason") or ""), str(first.get("message") or message)
    return str(error.get("status") or ""), message


def _reason(response: httpx.Response) -> str:
    return _error(response)[0]


# --- the spec ------------------------------------------------------------------------------------


def _google_calendar(
    spec: ProviderSpec,
    client: ResilientClient,
    config: Mapping[str, Any],
    secrets: Mapping[str, str],
) -> Provider:
    return GoogleCalendar(spec, client, config, secrets)


def _base_url(config: Mapping[str, Any]) -> str:
    return str(config.get("api_url") or API_URL)


GOOGLE_CALENDAR = ProviderSpec(
    key="google-calendar",
    name="Google Calendar",
    category=Category.CALENDAR,
    description=(
        "A teacher's Google calendar kept in step with their lessons, through the Google "
        "Calendar API: sign in with Google once, with the school's own OAuth client (a "
        '"Desktop app" client from Google Cloud console).'
    ),
    fields=(
        ConfigField(
            "client_id",
            "OAuth client ID",
            help=(
                'The OAuth client of type "Desktop app" from Google Cloud console (APIs & '
                "Services, Credentials), in a project with the Google Calendar API enabled."
            ),
        ),
        ConfigField(
            "client_secret",
            "OAuth client secret",
            FieldKind.SECRET,
            help="Shown beside the client ID in Google Cloud console.",
        ),
        ConfigField(
            "refresh_token",
            "Google sign-in",
            FieldKind.SECRET,
            required=False,
            help=(
                "Filled in by signing in with Google from this connection; leave it empty. "
                "Sign in again if Google stops accepting it."
            ),
        ),
        ConfigField(
            "calendar_id",
            "Calendar ID",
            default="primary",
            help=(
                "\"primary\" for the signed-in account's own calendar, or another calendar's ID "
                "(Google Calendar, the calendar's settings, Integrate calendar)."
            ),
        ),
        TEACHER_FIELD,
        CONFLICTS_FIELD,
        ConfigField(
            "channel_token",
            "Change notification token",
            FieldKind.SECRET,
            required=False,
            help=(
                "Made by Switchboard when it asks Google to notify it of changes; leave it "
                "empty. Google notifies only an https address reachable from the internet."
            ),
        ),
        ConfigField(
            "api_url",
            "Calendar API address (advanced)",
            FieldKind.URL,
            required=False,
            default=API_URL,
            help="Leave it as it is.",
        ),
        ConfigField(
            "auth_url",
            "Sign-in page address (advanced)",
            FieldKind.URL,
            required=False,
            default=AUTH_URL,
            help="Leave it as it is.",
        ),
        ConfigField(
            "token_url",
            "Token address (advanced)",
            FieldKind.URL,
            required=False,
            default=TOKEN_URL,
            help="Leave it as it is.",
        ),
        ConfigField(
            "revoke_url",
            "Sign-out address (advanced)",
            FieldKind.URL,
            required=False,
            default=REVOKE_URL,
            help="Leave it as it is.",
        ),
    ),
    auth=AuthKind.OAUTH2_PKCE,
    capabilities=frozenset({CALENDAR}),
    health=HEALTH,
    base_url=_base_url,
    factory=_google_calendar,
    # Google allows 600 requests a minute per user by default; stay under it.
    policy=ResiliencePolicy(timeout=20.0, rate=RatePolicy(requests=8.0, per_seconds=1.0)),
    webhook=WebhookSpec("google-channel", "channel_token"),
)
