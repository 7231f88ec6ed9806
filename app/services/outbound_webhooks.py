"""Outbound webhooks: Switchboard's own events (payment.succeeded, lesson.created, …) posted to
the endpoints a school registers, signed as Standard Webhooks (standardwebhooks.com) so that any
consumer's library can check them.

Delivery is at least once: every event is stored first (a message, `msg_…`), then tried at each
subscribed endpoint on Svix's schedule — at once, then 5 s, 5 min, 30 min, 2 h, 5 h, 10 h and
10 h after each failure, each wait ±10 % so that many retries do not arrive in step — until a
2xx answer, or it is a dead letter a person can replay. Every try and every replay carries the
same `webhook-id`, so a consumer that deduplicates on it (as the specification asks) does each
event once. A 429 or 503 that says Retry-After waits at least that long; a 410 Gone means the
consumer wants nothing more, so the endpoint is disabled at once; an endpoint with no success
for five days since a try first failed is disabled (as Svix does) and the administrator is
told with an alert.

Signing secrets live in the credential store (`SecretStore`), never in the database. After a
rotation the old secret signs too, for the rotation overlap (`security.rotation_overlap_hours`,
a day unless changed), so the consumer can change over without missing anything (the
specification allows several signatures in the header).

Changing endpoints, rotating their secrets, cancelling and replaying deliveries are for those
whose role allows it (`app.services.access`), and each change is on the audit trail (never a
secret, and addresses with their secret-looking query values masked). Emitting events is not
guarded: it is what taking a payment or adding a lesson does.

Every request goes through the resilient HTTP layer, one `ResilientClient` per endpoint, with a
single attempt (the schedule above is the retry), a 10 s timeout, no redirects followed, and
the circuit breaker: while an endpoint fails most calls, tries are refused at once rather
than each waiting for a timeout, and such a refusal counts as a failed try on the schedule.
The attempts are logged in webhook_attempts, not the providers' request log (whose rows
belong to provider connections).

Topics published on the EventHub: "outbound_webhooks" (endpoints or deliveries changed) and
"alerts" (an endpoint was disabled because it failed or went away).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import json
import logging
import random
import re
import secrets as random_secrets
import time
import uuid
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Literal, get_args
from urllib.parse import urlsplit

import httpx
from sqlalchemy import Select, delete, exists, func, select
from sqlalchemy.orm import Session

from app import __version__
from app.domain.access import Permission
from app.domain.errors import FieldError, NotFound, SwitchboardError, ValidationFailed
from app.providers.breaker import BreakerPolicy
from app.providers.http import (
    ProviderError,
    ProviderFailed,
    ProviderUnavailable,
    RateLimited,
    ResilientClient,
    redact_url,
)
from app.providers.spec import Operation, ResiliencePolicy, RetryPolicy
from app.providers.webhooks import StandardWebhooksVerifier, new_standard_webhooks_secret
from app.services import access, audit, rotation
from app.services.events import EventHub
from app.services.health import TOPIC_ALERTS
from app.services.secrets import SecretStore
from app.store.database import Database
from app.store.integration import AlertRow
from app.store.outbound import (
    WebhookAttemptRow,
    WebhookDeliveryRow,
    WebhookEndpointRow,
    WebhookMessageRow,
)

log = logging.getLogger("switchboard.webhooks")

TOPIC = "outbound_webhooks"

# Svix's schedule: the wait after the 1st, 2nd, … failed try. Eight tries in all, over about
# 28 hours, long enough to ride out a consumer's weekend deploy or a night's outage.
RETRY_DELAYS: tuple[timedelta, ...] = (
    timedelta(seconds=5),
    timedelta(minutes=5),
    timedelta(minutes=30),
    timedelta(hours=2),
    timedelta(hours=5),
    timedelta(hours=10),
    timedelta(hours=10),
)
MAX_ATTEMPTS = len(RETRY_DELAYS) + 1
JITTER = 0.1  # each wait is its delay ±10 %
DISABLE_AFTER = timedelta(days=5)  # failing without a single success this long: disabled
# A Retry-After beyond this is read as this: a consumer's typo must not park a delivery forever.
MAX_RETRY_AFTER = timedelta(hours=24)
DELIVERY_TIMEOUT = 10.0
# A claimed delivery is not claimed again (here or by another engine on the same database) for
# this long after the tries of its batch could all have timed out; if the process dies mid-try,
# the delivery is tried again after it. At least once, never lost.
CLAIM_LEASE = timedelta(minutes=2)
# The loop looks at least this often, for events another process (the CLI) emitted.
IDLE_WAIT = 60.0
BATCH = 50
MAX_BODY_BYTES = 1 << 20
MAX_REPLAY = 10_000
SECRET_PREFIX = "outbound-webhook/"  # noqa: S105 - the start of a name, not a secret

DeliveryStatus = Literal["pending", "failed", "delivered", "dead", "cancelled"]
STATUSES: tuple[str, ...] = get_args(DeliveryStatus)
WAITING = ("pending", "failed")  # a try is still to come

ALERT_KIND = "webhook_endpoint_disabled"
GONE = (
    "The endpoint answered 410 Gone, which means it wants no more webhooks, so Switchboard "
    "stopped sending to it. If that was a mistake, enable it again and replay what it missed."
)
FAILING = (
    "Every delivery to this endpoint has failed for {days} days (since {since}), so "
    "Switchboard stopped sending to it. Check that the address is right and the receiving "
    "service is running, then enable it again and replay what it missed."
)

_EVENT_TYPE = re.compile(r"[A-Za-z0-9_\-]+(\.[A-Za-z0-9_\-]+)*")


class OutboundWebhookError(SwitchboardError):
    """An outbound-webhook request that cannot be done, said in one sentence."""


# --- what the service hands out ----------------------------------------------------------------


@dataclass(frozen=True)
class Endpoint:
    """A registered endpoint. `event_types` empty: every event. `secret_rotating_until` is when
    the previous secret stops signing, while a rotation is under way."""

    id: int
    url: str
    description: str
    event_types: tuple[str, ...]
    enabled: bool
    disabled_reason: str
    disabled_at: datetime | None
    created_at: datetime
    failing_since: datetime | None
    last_success_at: datetime | None
    secret_rotating_until: datetime | None
    subscription: bool = False  # made by another app's API (Zapier): removed by its 410

    def wants(self, event_type: str) -> bool:
        return not self.event_types or event_type in self.event_types


@dataclass(frozen=True)
class EndpointHealth:
    """An endpoint as its list shows it: `state` is healthy (green), failing (amber) or
    disabled (grey); the counts are deliveries waiting and dead, and tries of the last day."""

    endpoint: Endpoint
    state: Literal["healthy", "failing", "disabled"]
    waiting: int
    dead: int
    attempts_last_day: int
    failures_last_day: int
    last_attempt_at: datetime | None
    last_status_code: int | None


@dataclass(frozen=True)
class Message:
    """One emitted event, the same on every try: its id is the `webhook-id`."""

    id: str
    event_type: str
    created_at: datetime
    payload: Mapping[str, Any]


@dataclass(frozen=True)
class Delivery:
    """One message on its way to one endpoint (see `WebhookDeliveryRow` for the statuses)."""

    id: int
    message_id: str
    event_type: str
    endpoint_id: int
    endpoint_url: str
    status: str
    attempts: int
    next_attempt_at: datetime | None
    last_status_code: int | None
    last_error: str
    last_attempt_at: datetime | None
    delivered_at: datetime | None
    created_at: datetime
    replay_of: int | None


@dataclass(frozen=True)
class Emission:
    """An event checked and ready to store: `message_id` is its `webhook-id`."""

    message_id: str
    event_type: str
    payload: dict[str, Any]
    created_at: datetime


@dataclass(frozen=True)
class Attempt:
    """One try: `status_code` None when no answer came."""

    at: datetime
    status_code: int | None
    latency_ms: int
    error: str


@dataclass
class DeliveryCounts:
    """What one `deliver_due` did: tries made, and how the deliveries tried now stand."""

    attempted: int = 0
    delivered: int = 0
    retrying: int = 0
    dead: int = 0
    cancelled: int = 0

    def add(self, outcome: str) -> None:
        if outcome == "skipped":
            return
        self.attempted += 1
        if outcome == "delivered":
            self.delivered += 1
        elif outcome == "failed":
            self.retrying += 1
        elif outcome == "dead":
            self.dead += 1
        elif outcome == "cancelled":
            self.cancelled += 1


# --- pure pieces ---------------------------------------------------------------------------------


def webhook_body(event_type: str, created_at: datetime, payload: Mapping[str, Any]) -> bytes:
    """The body every try of a message sends, byte for byte: Standard Webhooks' suggested
    envelope `{"type", "timestamp", "data"}`."""
    envelope = {"type": event_type, "timestamp": _iso(created_at), "data": payload}
    return json.dumps(envelope, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def retry_delay(failed_attempts: int, jitter: float) -> timedelta:
    """The wait after the `failed_attempts`-th failed try (1-based); `jitter` in [0, 1) moves it
    by up to ±JITTER of itself."""
    base = RETRY_DELAYS[failed_attempts - 1]
    return base * (1 + JITTER * (2 * jitter - 1))


def sign(message_id: str, timestamp: int, body: bytes, secrets: Sequence[str]) -> dict[str, str]:
    """The three Standard Webhooks headers, with one v1 signature per secret (the current one
    first), space-separated as the specification allows during a rotation."""
    verifier = StandardWebhooksVerifier()
    signed = [
        verifier.sign(secret, body, url="", timestamp=timestamp, event_id=message_id)
        for secret in secrets
    ]
    headers = dict(signed[0])
    headers["webhook-signature"] = " ".join(entry["webhook-signature"] for entry in signed)
    return headers


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _new_message_id() -> str:
    return "msg_" + uuid.uuid4().hex


def _aware(moment: datetime, name: str) -> datetime:
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise OutboundWebhookError(f"The {name} time needs a time zone.")
    return moment.astimezone(UTC)


def _origin(url: str) -> tuple[str, str]:
    """(scheme://host[:port], host[:port]) of a checked URL."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}", parts.netloc


def _path(url: str) -> str:
    # Percent-encoded path and query exactly as the URL will be requested; braces are encoded
    # too, so Operation.url_path's {name} templates can never match part of it.
    return httpx.URL(url).raw_path.decode("ascii")


def _shown(url: str, limit: int = 200) -> str:
    """A URL fit for a log line or an alert: secret-looking query values masked, and short."""
    text = redact_url(url)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _check_url(url: str, errors: list[FieldError]) -> str:
    text = url.strip()
    try:
        parts = urlsplit(text)
        host = parts.hostname
        parts.port  # noqa: B018 - raises ValueError on a port that is not a number
    except ValueError:
        parts, host = urlsplit(""), None
    if parts.scheme not in ("http", "https") or not host:
        errors.append(FieldError("url", "Enter a web address like https://example.org/webhooks."))
    elif parts.username is not None or parts.password is not None:
        # It would put a password in the database; the signature is how a consumer knows us.
        errors.append(FieldError("url", "Leave any user name and password out of the address."))
    elif len(text) > 2000:
        errors.append(FieldError("url", "The address is too long (at most 2000 characters)."))
    return text.split("#", 1)[0]


def _check_event_types(event_types: Iterable[str], errors: list[FieldError]) -> list[str]:
    if isinstance(event_types, str):  # one type given where a list was meant
        event_types = [event_types]
    kept: list[str] = []
    for raw in event_types:
        text = raw.strip()
        if not _valid_event_type(text):
            errors.append(
                FieldError(
                    "event_types",
                    f"“{text[:60]}” is not an event type; types look like payment.succeeded.",
                )
            )
        elif text not in kept:
            kept.append(text)
    return kept


def _valid_event_type(text: str) -> bool:
    return len(text) <= 128 and _EVENT_TYPE.fullmatch(text) is not None


def _check_secret(secret: str) -> str:
    """A secret a person brings (to keep an existing consumer's): Standard Webhooks' form."""
    text = secret.strip()
    try:
        key = base64.b64decode(text.removeprefix("whsec_"), validate=True)
    except (binascii.Error, ValueError):
        key = b""
    if not text.startswith("whsec_") or not 24 <= len(key) <= 64:
        raise ValidationFailed(
            [
                FieldError(
                    "secret",
                    "A signing secret is whsec_ followed by 24 to 64 bytes in base64; leave it "
                    "empty to have one made.",
                )
            ]
        )
    return text


def _endpoint(row: WebhookEndpointRow, now: datetime) -> Endpoint:
    rotating = row.previous_secret_expires_at if row.previous_secret_name else None
    return Endpoint(
        id=row.id,
        url=row.url,
        description=row.description,
        event_types=tuple(row.event_types),
        enabled=row.enabled,
        disabled_reason=row.disabled_reason,
        disabled_at=row.disabled_at,
        created_at=row.created_at,
        failing_since=row.failing_since,
        last_success_at=row.last_success_at,
        secret_rotating_until=rotating if rotating is not None and rotating > now else None,
        subscription=row.subscription,
    )


def _delivery(row: WebhookDeliveryRow, event_type: str, url: str) -> Delivery:
    return Delivery(
        id=row.id,
        message_id=row.message_id,
        event_type=event_type,
        endpoint_id=row.endpoint_id,
        endpoint_url=url,
        status=row.status,
        attempts=row.attempts,
        next_attempt_at=row.next_attempt_at,
        last_status_code=row.last_status_code,
        last_error=row.last_error,
        last_attempt_at=row.last_attempt_at,
        delivered_at=row.delivered_at,
        created_at=row.created_at,
        replay_of=row.replay_of,
    )


def _get_endpoint(session: Session, endpoint_id: int) -> WebhookEndpointRow:
    row = session.get(WebhookEndpointRow, endpoint_id)
    if row is None:
        raise NotFound(f"There is no webhook endpoint number {endpoint_id}.")
    return row


def _audited(row: WebhookEndpointRow) -> dict[str, Any]:
    """What the audit trail keeps of an endpoint: never its secrets (only their names are in
    the row, and those are left out too), the address with secret-looking values masked."""
    return {
        "url": _shown(row.url, 500),
        "description": row.description,
        "event_types": list(row.event_types),
        "enabled": row.enabled,
    }


def _stop_endpoint(session: Session, row: WebhookEndpointRow, reason: str, now: datetime) -> int:
    """Disable an endpoint and cancel what waits for it; how many deliveries were cancelled."""
    row.enabled = False
    row.disabled_reason = reason
    row.disabled_at = now
    waiting = session.scalars(
        select(WebhookDeliveryRow)
        .where(WebhookDeliveryRow.endpoint_id == row.id)
        .where(WebhookDeliveryRow.status.in_(WAITING))
    ).all()
    for delivery in waiting:
        delivery.status = "cancelled"
        delivery.next_attempt_at = None
        delivery.last_error = delivery.last_error or "Cancelled: the endpoint was disabled."
    return len(waiting)


# --- one try -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Job:
    """A claimed delivery with all a try needs, read in the claim's transaction."""

    delivery_id: int
    endpoint_id: int
    url: str
    secret_names: tuple[str, ...]  # the current secret, then the previous one during rotation
    message_id: str
    event_type: str
    created_at: datetime
    payload: dict[str, Any]


@dataclass(frozen=True)
class _Result:
    """How one try went."""

    at: datetime
    status_code: int | None = None
    latency_ms: int = 0
    error: str = ""
    retry_after: float | None = None
    gone: bool = False

    @property
    def ok(self) -> bool:
        return self.status_code is not None and 200 <= self.status_code < 300 and not self.error


@dataclass(frozen=True)
class _Recorded:
    outcome: str
    disabled: bool = False
    alert: tuple[int, str] | None = None  # (alert id, message)
    unsubscribed: bool = False  # a subscription's endpoint said 410: remove it


@dataclass
class _Retired:
    names: list[str] = field(default_factory=list)


# --- the service ---------------------------------------------------------------------------------


class OutboundWebhooks:
    """Endpoints, events and their deliveries; `start()` runs the loop that sends them.

    `clock`, `sleep` and `jitter` are injectable so tests run days of the schedule in moments;
    `timeout` is how long one try waits for an answer; `concurrency` how many tries at once;
    `transport` stands in for the network (a sandbox or a benchmark). Call it from the loop
    it runs on (the engine's).
    """

    def __init__(
        self,
        db: Database,
        events: EventHub,
        secrets: SecretStore,
        *,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        jitter: Callable[[], float] = random.random,
        timeout: float = DELIVERY_TIMEOUT,
        concurrency: int = 4,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self._db = db
        self._events = events
        self._secrets = secrets
        self._clock = clock
        self._sleep = sleep
        self._jitter = jitter
        self._transport = transport
        self._policy = ResiliencePolicy(
            timeout=timeout,
            retry=RetryPolicy(attempts=1),
            # A slow consumer is its own business; only failures should open the breaker.
            breaker=BreakerPolicy(slow_call_seconds=max(timeout, 1.0), slow_call_rate=1.0),
        )
        self._limit = asyncio.Semaphore(max(concurrency, 1))
        # A batch's last try may start only after the others before it timed out.
        self._lease = CLAIM_LEASE + timedelta(seconds=timeout * -(-BATCH // max(concurrency, 1)))
        self._clients: dict[int, tuple[str, ResilientClient]] = {}
        # A name is never reused for another value, so what was read once stays right.
        self._secret_values: dict[str, str] = {}
        self._in_flight: set[int] = set()
        # Endpoints disabled while tries for them were claimed: those tries are skipped.
        self._stopped: set[int] = set()
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    # --- endpoints ------------------------------------------------------------------------------

    async def add_endpoint(
        self,
        url: str,
        *,
        description: str = "",
        event_types: Iterable[str] = (),
        secret: str | None = None,
        subscription: bool = False,
    ) -> Endpoint:
        """Register an endpoint, enabled, with a fresh signing secret (or the one given, to keep
        a consumer's existing one); `secret()` shows it to paste into the consumer.
        `subscription`: another app subscribed through its API (Zapier); its 410 removes it."""
        access.require(Permission.MANAGE_CONNECTIONS)
        who = access.actor()
        errors: list[FieldError] = []
        clean_url = _check_url(url, errors)
        types = _check_event_types(event_types, errors)
        if errors:
            raise ValidationFailed(errors)
        value = _check_secret(secret) if secret else new_standard_webhooks_secret()
        name = SECRET_PREFIX + random_secrets.token_hex(8)
        await self._secrets.aset(name, value)  # first: no row ever names a secret not kept
        now = self._clock()

        def insert(session: Session) -> int:
            row = WebhookEndpointRow(
                url=clean_url,
                description=description.strip(),
                event_types=types,
                enabled=True,
                secret_name=name,
                created_at=now,
                subscription=subscription,
            )
            session.add(row)
            session.flush()
            audit.record(
                session,
                who,
                "webhook_endpoint.added",
                "webhook_endpoint",
                row.id,
                None,
                {**_audited(row), "subscription": subscription},
                secret_values=[value],
            )
            return row.id

        try:
            endpoint_id = await self._db.write(insert)
        except BaseException:
            await self._secrets.adelete(name)
            raise
        log.info("webhook endpoint added", extra={"endpoint": endpoint_id, "url": _shown(url)})
        self._events.publish(TOPIC, {"endpoint": endpoint_id})
        return await self.endpoint(endpoint_id)

    async def update_endpoint(
        self,
        endpoint_id: int,
        *,
        url: str | None = None,
        description: str | None = None,
        event_types: Iterable[str] | None = None,
    ) -> Endpoint:
        """Change what is given; deliveries still waiting go to the new address."""
        access.require(Permission.MANAGE_CONNECTIONS)
        who = access.actor()
        errors: list[FieldError] = []
        clean_url = _check_url(url, errors) if url is not None else None
        types = _check_event_types(event_types, errors) if event_types is not None else None
        if errors:
            raise ValidationFailed(errors)

        def write(session: Session) -> None:
            row = _get_endpoint(session, endpoint_id)
            was = _audited(row)
            if clean_url is not None:
                row.url = clean_url
            if description is not None:
                row.description = description.strip()
            if types is not None:
                row.event_types = types
            before, after = audit.changes(was, _audited(row))
            if after:
                audit.record(
                    session,
                    who,
                    "webhook_endpoint.changed",
                    "webhook_endpoint",
                    endpoint_id,
                    before,
                    after,
                )

        await self._db.write(write)
        if clean_url is not None:
            await self._drop_client(endpoint_id)
        self._events.publish(TOPIC, {"endpoint": endpoint_id})
        return await self.endpoint(endpoint_id)

    async def remove_endpoint(self, endpoint_id: int) -> None:
        """Forget an endpoint, its deliveries and its secrets (the events stay, for others)."""
        access.require(Permission.MANAGE_CONNECTIONS)
        await self._remove(endpoint_id, access.actor(), "webhook_endpoint.removed")

    async def _remove(self, endpoint_id: int, who: str, action: str) -> None:
        def write(session: Session) -> list[str]:
            row = _get_endpoint(session, endpoint_id)
            names = [name for name in (row.secret_name, row.previous_secret_name) if name]
            audit.record(session, who, action, "webhook_endpoint", endpoint_id, _audited(row), None)
            session.delete(row)
            return names

        names = await self._db.write(write)
        for name in names:
            await self._forget_secret(name)
        await self._drop_client(endpoint_id)
        self._stopped.discard(endpoint_id)
        log.info("webhook endpoint removed", extra={"endpoint": endpoint_id})
        self._events.publish(TOPIC, {"endpoint": endpoint_id, "removed": True})

    async def enable_endpoint(self, endpoint_id: int) -> Endpoint:
        """Send to it again from now on; its failing record starts afresh. What it missed
        while disabled is sent only if replayed (`replay_range`)."""
        access.require(Permission.MANAGE_CONNECTIONS)
        who = access.actor()

        def write(session: Session) -> None:
            row = _get_endpoint(session, endpoint_id)
            if not row.enabled:
                audit.record(
                    session,
                    who,
                    "webhook_endpoint.enabled",
                    "webhook_endpoint",
                    endpoint_id,
                    {"url": _shown(row.url, 500), "enabled": False},
                    {"url": _shown(row.url, 500), "enabled": True},
                )
            row.enabled = True
            row.disabled_reason = ""
            row.disabled_at = None
            row.failing_since = None

        await self._db.write(write)
        self._stopped.discard(endpoint_id)
        self._events.publish(TOPIC, {"endpoint": endpoint_id})
        return await self.endpoint(endpoint_id)

    async def disable_endpoint(self, endpoint_id: int, reason: str = "") -> Endpoint:
        """Stop sending to it; deliveries waiting for it are cancelled (replayable later)."""
        access.require(Permission.MANAGE_CONNECTIONS)
        who = access.actor()
        why = reason.strip() or "Disabled by a person."
        now = self._clock()

        def write(session: Session) -> None:
            row = _get_endpoint(session, endpoint_id)
            was = row.enabled
            cancelled = _stop_endpoint(session, row, why, now)
            if was:
                audit.record(
                    session,
                    who,
                    "webhook_endpoint.disabled",
                    "webhook_endpoint",
                    endpoint_id,
                    {"url": _shown(row.url, 500), "enabled": True},
                    {
                        "url": _shown(row.url, 500),
                        "enabled": False,
                        "reason": why,
                        "deliveries_cancelled": cancelled,
                    },
                )

        await self._db.write(write)
        self._stopped.add(endpoint_id)
        self._events.publish(TOPIC, {"endpoint": endpoint_id})
        return await self.endpoint(endpoint_id)

    async def secret(self, endpoint_id: int) -> str:
        """The endpoint's current signing secret, to paste into the consumer. Only for those who
        may change endpoints: whoever holds it can sign as Switchboard."""
        access.require(Permission.MANAGE_CONNECTIONS)
        name = await self._db.read(lambda session: _get_endpoint(session, endpoint_id).secret_name)
        value = await self._secrets.aget(name)
        if not value:
            raise OutboundWebhookError(
                f"The signing secret of webhook endpoint {endpoint_id} is missing from the "
                "credential store; rotate the secret to make a new one."
            )
        return value

    async def rotate_secret(self, endpoint_id: int, *, secret: str | None = None) -> str:
        """Make (or take) a new signing secret and return it. For the rotation overlap
        (`security.rotation_overlap_hours`) the old one signs as well, so the consumer can
        switch without a single failed check. A secret still in its overlap from an earlier
        rotation stops signing now: two rotations in a row keep only the last two."""
        access.require(Permission.MANAGE_CONNECTIONS)
        who = access.actor()
        value = _check_secret(secret) if secret else new_standard_webhooks_secret()
        name = SECRET_PREFIX + random_secrets.token_hex(8)
        now = self._clock()
        await self._secrets.aset(name, value)

        def write(session: Session) -> str:
            row = _get_endpoint(session, endpoint_id)
            dropped = row.previous_secret_name
            current = row.secret_name
            until = now + rotation.overlap(session)
            row.previous_secret_name = current
            row.previous_secret_expires_at = until
            row.secret_name = name
            audit.record(
                session,
                who,
                "webhook_endpoint.secret_rotated",
                "webhook_endpoint",
                endpoint_id,
                {"url": _shown(row.url, 500)},
                {"url": _shown(row.url, 500), "old_secret_signs_until": until},
                secret_values=[value],
            )
            return dropped

        try:
            dropped = await self._db.write(write)
        except BaseException:
            await self._secrets.adelete(name)
            raise
        if dropped:
            await self._forget_secret(dropped)
        log.info("webhook secret rotated", extra={"endpoint": endpoint_id})
        self._events.publish(TOPIC, {"endpoint": endpoint_id})
        return value

    async def endpoint(self, endpoint_id: int) -> Endpoint:
        now = self._clock()
        return await self._db.read(
            lambda session: _endpoint(_get_endpoint(session, endpoint_id), now)
        )

    async def endpoints(self) -> list[EndpointHealth]:
        """Every endpoint with how it is doing, oldest first."""
        now = self._clock()
        return await self._db.read(_endpoints_health, now)

    # --- events ---------------------------------------------------------------------------------

    async def emit(self, event_type: str, payload: Mapping[str, Any]) -> str:
        """Store one event and a delivery for each enabled endpoint that wants its type; the
        message id (`msg_…`, the `webhook-id`). Stored even when no endpoint wants it yet, so
        an endpoint added later can be sent it with `replay_range`."""
        emission = self.emission(event_type, payload)
        count = await self._db.write(store_emission, emission)
        self.emitted(emission, count)
        return emission.message_id

    def emission(self, event_type: str, payload: Mapping[str, Any]) -> Emission:
        """An event checked and made ready to store (`store_emission`, in a transaction of the
        caller's); raises OutboundWebhookError for one that can never be sent."""
        if not _valid_event_type(event_type):
            raise OutboundWebhookError(
                f"“{event_type[:60]}” is not an event type; types look like payment.succeeded."
            )
        try:
            data = json.loads(json.dumps(dict(payload), ensure_ascii=False, allow_nan=False))
        except (TypeError, ValueError) as exc:
            raise OutboundWebhookError(
                f"The {event_type} event cannot be sent as JSON ({exc})."
            ) from exc
        now = self._clock()
        if len(webhook_body(event_type, now, data)) > MAX_BODY_BYTES:
            raise OutboundWebhookError(
                f"The {event_type} event is larger than 1 MiB; send a reference to the record "
                "instead of the record itself."
            )
        return Emission(_new_message_id(), event_type, data, now)

    def emitted(self, emission: Emission, endpoints: int) -> None:
        """An emission was stored (committed) with deliveries to `endpoints` endpoints."""
        log.info(
            "webhook event emitted",
            extra={
                "message_id": emission.message_id,
                "type": emission.event_type,
                "endpoints": endpoints,
            },
        )
        if endpoints:
            self.wake()
            self._events.publish(TOPIC, {"message": emission.message_id})

    async def message(self, message_id: str) -> Message:
        def read(session: Session) -> Message:
            row = session.get(WebhookMessageRow, message_id)
            if row is None:
                raise NotFound(f"There is no webhook event {message_id}.")
            return Message(row.id, row.event_type, row.created_at, row.payload)

        return await self._db.read(read)

    async def recent(self, event_type: str, limit: int = 50) -> list[Message]:
        """The newest events of a type first (a polling trigger's answer: Zapier keeps the ids
        it has seen and takes the new ones)."""

        def read(session: Session) -> list[Message]:
            rows = session.scalars(
                select(WebhookMessageRow)
                .where(WebhookMessageRow.event_type == event_type)
                .order_by(WebhookMessageRow.created_at.desc(), WebhookMessageRow.id.desc())
                .limit(max(1, min(limit, 500)))
            )
            return [Message(row.id, row.event_type, row.created_at, row.payload) for row in rows]

        return await self._db.read(read)

    # --- delivering -----------------------------------------------------------------------------

    async def deliver_due(self) -> DeliveryCounts:
        """Make every try that is due now (a few at once) and say how they went."""
        counts = DeliveryCounts()
        await self._retire_previous_secrets()
        while True:
            jobs = await self._db.write(
                _claim, self._clock(), BATCH, frozenset(self._in_flight), self._lease
            )
            if not jobs:
                break
            self._in_flight.update(job.delivery_id for job in jobs)
            try:
                # Each try to its end even if another one's bookkeeping fails (the database
                # busy): that one is simply tried again when its claim lapses.
                outcomes = await asyncio.gather(
                    *(self._deliver(job) for job in jobs), return_exceptions=True
                )
            finally:
                self._in_flight.difference_update(job.delivery_id for job in jobs)
            for job, outcome in zip(jobs, outcomes, strict=True):
                if isinstance(outcome, BaseException):
                    if not isinstance(outcome, Exception):
                        raise outcome  # cancelled: the loop is stopping
                    log.error("webhook try not recorded: %s", outcome, extra=self._log(job))
                else:
                    counts.add(outcome)
        if counts.attempted:
            self._events.publish(
                TOPIC,
                {"delivered": counts.delivered, "retrying": counts.retrying, "dead": counts.dead},
            )
        return counts

    def start(self) -> None:
        """Run the delivery loop on the running event loop until `stop()`."""
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(
                self._run(), name="outbound-webhooks"
            )

    async def stop(self) -> None:
        """Stop the loop. A try cut short is made again after its claim lapses (at least
        once: the consumer may see it twice, under the same webhook-id)."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def close(self) -> None:
        """Stop the loop and close every endpoint's HTTP client."""
        await self.stop()
        for endpoint_id in list(self._clients):
            await self._drop_client(endpoint_id)

    def wake(self) -> None:
        """Look for due tries now rather than at the next planned moment."""
        self._wake.set()

    async def _run(self) -> None:
        while True:
            self._wake.clear()  # before looking: a wake during the look is not lost
            try:
                await self.deliver_due()
                wait = await self._db.read(_seconds_until_due, self._clock())
            except Exception:
                log.exception("outbound webhooks: delivering failed; trying again shortly")
                wait = IDLE_WAIT
            await self._nap(wait)

    async def _nap(self, seconds: float) -> None:
        """Sleep `seconds`, or less if woken."""
        if seconds <= 0 or self._wake.is_set():
            return
        sleeper = asyncio.ensure_future(self._sleep(seconds))
        woken = asyncio.ensure_future(self._wake.wait())
        try:
            await asyncio.wait({sleeper, woken}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for waiter in (sleeper, woken):
                waiter.cancel()
            await asyncio.gather(sleeper, woken, return_exceptions=True)

    async def _deliver(self, job: _Job) -> str:
        async with self._limit:
            if job.endpoint_id in self._stopped:
                return "skipped"  # disabled after the claim: its delivery is cancelled
            try:
                result = await self._send(job)
            except SwitchboardError as error:  # the credential store locked, say
                result = _Result(at=self._clock(), error=str(error))
            except Exception:
                log.exception("webhook try failed inside Switchboard", extra=self._log(job))
                result = _Result(
                    at=self._clock(),
                    error="Switchboard could not send it (an internal error; see the log).",
                )
            factor = self._jitter()
            recorded = await self._db.write(_record, job, result, self._clock(), factor)
        log_fields = {**self._log(job), "status": result.status_code, "outcome": recorded.outcome}
        if result.ok:
            log.info("webhook delivered", extra=log_fields)
        else:
            log.warning("webhook try failed: %s", result.error, extra=log_fields)
        if recorded.disabled:
            self._stopped.add(job.endpoint_id)
            await self._drop_client(job.endpoint_id)
            log.warning("webhook endpoint disabled", extra=log_fields)
            self._events.publish(TOPIC, {"endpoint": job.endpoint_id})
        if recorded.unsubscribed:
            await self._remove(job.endpoint_id, access.actor(), "webhook_endpoint.unsubscribed")
        if recorded.alert is not None:
            alert_id, message = recorded.alert
            self._events.publish(
                TOPIC_ALERTS,
                {"id": alert_id, "kind": ALERT_KIND, "message": message, "connection": None},
            )
        return recorded.outcome

    async def _send(self, job: _Job) -> _Result:
        values = [await self._secret_value(name) for name in job.secret_names]
        keys = [value for value in values if value]
        if not values or not values[0]:
            return _Result(
                at=self._clock(),
                error="The signing secret is missing from the credential store; rotate the "
                "endpoint's secret to make a new one.",
            )
        at = self._clock()
        body = webhook_body(job.event_type, job.created_at, job.payload)
        headers = sign(job.message_id, int(at.timestamp()), body, keys)
        headers["content-type"] = "application/json"
        headers["user-agent"] = f"Switchboard-Webhooks/{__version__}"
        client = await self._client(job.endpoint_id, job.url)
        # Idempotent: the consumer deduplicates on webhook-id, so sending it twice is harmless.
        operation = Operation("deliver webhook", "POST", _path(job.url), idempotent=True)
        started = time.monotonic()
        try:
            response = await client.call(operation, content=body, headers=headers)
        except ProviderError as error:
            return _failure(at, error, started)
        latency = round((time.monotonic() - started) * 1000)
        status = response.status_code
        if 200 <= status < 300:
            return _Result(at, status, latency)
        if status == 410:
            return _Result(at, status, latency, "The endpoint answered 410 Gone.", gone=True)
        if 300 <= status < 400:
            where = response.headers.get("location", "")
            return _Result(
                at,
                status,
                latency,
                f"The endpoint answered HTTP {status}, a redirect"
                + (f" to {_shown(where, 120)}" if where else "")
                + "; webhooks do not follow redirects, so enter the address it points to.",
            )
        return _Result(at, status, latency, f"The endpoint answered HTTP {status}.")

    async def _secret_value(self, name: str) -> str | None:
        if name not in self._secret_values:
            value = await self._secrets.aget(name)
            if not value:
                return None
            self._secret_values[name] = value
        return self._secret_values[name]

    async def _forget_secret(self, name: str) -> None:
        self._secret_values.pop(name, None)
        await self._secrets.adelete(name)

    async def _client(self, endpoint_id: int, url: str) -> ResilientClient:
        origin, host = _origin(url)
        held = self._clients.get(endpoint_id)
        if held is not None:
            if held[0] == origin:
                return held[1]
            await self._drop_client(endpoint_id)
        client = ResilientClient(
            connection_id=endpoint_id,
            name=host,
            base_url=origin,
            policy=self._policy,
            transport=self._transport,
        )
        self._clients[endpoint_id] = (origin, client)
        return client

    async def _drop_client(self, endpoint_id: int) -> None:
        held = self._clients.pop(endpoint_id, None)
        if held is not None:
            await held[1].aclose()

    async def _retire_previous_secrets(self) -> None:
        """Forget secrets whose day of signing alongside a new one has passed."""
        now = self._clock()
        if not await self._db.read(_any_to_retire, now):
            return  # the usual case: no write transaction for nothing
        retired = await self._db.write(_retire, now)
        for name in retired.names:
            await self._forget_secret(name)

    @staticmethod
    def _log(job: _Job) -> dict[str, Any]:
        return {"delivery": job.delivery_id, "endpoint": job.endpoint_id, "type": job.event_type}

    # --- replays and lists ----------------------------------------------------------------------

    async def replay(self, delivery_ids: Iterable[int]) -> list[int]:
        """Send these deliveries' messages to their endpoints again, same webhook-id. A finished
        delivery (delivered, dead, cancelled) gets a fresh one; one still waiting for its next
        try is simply tried now rather than doubled. The ids that will now be tried."""
        access.require(Permission.REPLAY_EVENTS)
        who = access.actor()
        ids = list(dict.fromkeys(delivery_ids))
        now = self._clock()

        def write(session: Session) -> list[int]:
            replayed = _replay(session, ids, now)
            if replayed:
                audit.record(
                    session,
                    who,
                    "webhook_delivery.replayed",
                    "webhook_delivery",
                    ids[0] if len(ids) == 1 else f"{len(ids)} deliveries",
                    {"deliveries": ids[:100]},
                    {"tried_now": replayed[:100], "count": len(replayed)},
                )
            return replayed

        replayed = await self._db.write(write)
        if replayed:
            self.wake()
            self._events.publish(TOPIC, {"replayed": len(replayed)})
        return replayed

    async def replay_range(
        self,
        since: datetime,
        until: datetime,
        endpoint_id: int | None = None,
        *,
        include_delivered: bool = False,
    ) -> list[int]:
        """Send again the events emitted in [since, until) to the endpoint given (or every
        enabled one) that wants them: those it has not received (dead, cancelled, or never sent
        because it was disabled or added later), and with `include_delivered` the ones it has
        too. Nothing is doubled while a delivery of it still waits. The new delivery ids."""
        access.require(Permission.REPLAY_EVENTS)
        who = access.actor()
        start, end = _aware(since, "start"), _aware(until, "end")
        if start >= end:
            raise OutboundWebhookError("The start of the time range must be before its end.")
        now = self._clock()

        def write(session: Session) -> list[int]:
            replayed = _replay_range(session, start, end, endpoint_id, include_delivered, now)
            if replayed:
                audit.record(
                    session,
                    who,
                    "webhook_delivery.replayed",
                    "webhook_endpoint",
                    endpoint_id if endpoint_id is not None else "every endpoint",
                    None,
                    {
                        "since": start,
                        "until": end,
                        "include_delivered": include_delivered,
                        "count": len(replayed),
                    },
                )
            return replayed

        replayed = await self._db.write(write)
        if replayed:
            self.wake()
            self._events.publish(TOPIC, {"replayed": len(replayed)})
        return replayed

    async def cancel(self, delivery_ids: Iterable[int]) -> int:
        """Stop trying these deliveries (those still waiting); how many were cancelled."""
        access.require(Permission.MANAGE_CONNECTIONS)
        who = access.actor()
        ids = list(dict.fromkeys(delivery_ids))

        def write(session: Session) -> int:
            rows = session.scalars(
                select(WebhookDeliveryRow)
                .where(WebhookDeliveryRow.id.in_(ids))
                .where(WebhookDeliveryRow.status.in_(WAITING))
            ).all()
            for row in rows:
                row.status = "cancelled"
                row.next_attempt_at = None
                row.last_error = row.last_error or "Cancelled by a person."
            if rows:
                cancelled = [row.id for row in rows]
                audit.record(
                    session,
                    who,
                    "webhook_delivery.cancelled",
                    "webhook_delivery",
                    cancelled[0] if len(cancelled) == 1 else f"{len(cancelled)} deliveries",
                    None,
                    {"deliveries": cancelled[:100], "count": len(cancelled)},
                )
            return len(rows)

        cancelled = await self._db.write(write)
        if cancelled:
            self._events.publish(TOPIC, {"cancelled": cancelled})
        return cancelled

    async def deliveries(
        self,
        *,
        endpoint_id: int | None = None,
        status: str | Sequence[str] | None = None,
        event_type: str | None = None,
        message_id: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        limit: int = 100,
        before_id: int | None = None,
    ) -> list[Delivery]:
        """Deliveries newest first, filtered; `before_id` pages on from the last one shown.
        `since`/`until` are on when the delivery was made (a replay is made when replayed)."""
        statuses = [status] if isinstance(status, str) else list(status or [])
        unknown = [name for name in statuses if name not in STATUSES]
        if unknown:
            raise OutboundWebhookError(
                f"“{unknown[0]}” is not a delivery status; use one of {', '.join(STATUSES)}."
            )
        statement = (
            select(WebhookDeliveryRow, WebhookMessageRow.event_type, WebhookEndpointRow.url)
            .join(WebhookMessageRow, WebhookMessageRow.id == WebhookDeliveryRow.message_id)
            .join(WebhookEndpointRow, WebhookEndpointRow.id == WebhookDeliveryRow.endpoint_id)
            .order_by(WebhookDeliveryRow.id.desc())
            .limit(max(1, min(limit, 1000)))
        )
        if endpoint_id is not None:
            statement = statement.where(WebhookDeliveryRow.endpoint_id == endpoint_id)
        if statuses:
            statement = statement.where(WebhookDeliveryRow.status.in_(statuses))
        if event_type is not None:
            statement = statement.where(WebhookMessageRow.event_type == event_type)
        if message_id is not None:
            statement = statement.where(WebhookDeliveryRow.message_id == message_id)
        if since is not None:
            statement = statement.where(WebhookDeliveryRow.created_at >= _aware(since, "start"))
        if until is not None:
            statement = statement.where(WebhookDeliveryRow.created_at < _aware(until, "end"))
        if before_id is not None:
            statement = statement.where(WebhookDeliveryRow.id < before_id)
        return await self._db.read(_list_deliveries, statement)

    async def dead_letters(
        self, endpoint_id: int | None = None, limit: int = 100
    ) -> list[Delivery]:
        """Deliveries whose every try failed, newest first: what a person may replay."""
        return await self.deliveries(endpoint_id=endpoint_id, status="dead", limit=limit)

    async def delivery(self, delivery_id: int) -> Delivery:
        found = await self.deliveries(before_id=delivery_id + 1, limit=1)
        if not found or found[0].id != delivery_id:
            raise NotFound(f"There is no webhook delivery number {delivery_id}.")
        return found[0]

    async def attempts(self, delivery_id: int) -> list[Attempt]:
        """Every try of a delivery, oldest first."""

        def read(session: Session) -> list[Attempt]:
            rows = session.scalars(
                select(WebhookAttemptRow)
                .where(WebhookAttemptRow.delivery_id == delivery_id)
                .order_by(WebhookAttemptRow.id)
            )
            return [Attempt(row.at, row.status_code, row.latency_ms, row.error) for row in rows]

        return await self._db.read(read)

    async def forget_before(self, before: datetime) -> int:
        """Delete events emitted before `before`, with their deliveries and tries, unless a
        delivery of theirs still waits; how many events were deleted (retention)."""
        cutoff = _aware(before, "cut-off")

        def write(session: Session) -> int:
            waiting = exists().where(
                WebhookDeliveryRow.message_id == WebhookMessageRow.id,
                WebhookDeliveryRow.status.in_(WAITING),
            )
            result = session.execute(
                delete(WebhookMessageRow)
                .where(WebhookMessageRow.created_at < cutoff)
                .where(~waiting)
                .execution_options(synchronize_session=False)
            )
            return int(getattr(result, "rowcount", 0) or 0)

        return await self._db.write(write)


# --- database work (run on the database threads) -----------------------------------------------


def store_emission(session: Session, emission: Emission) -> int:
    """Store an event and a delivery to each enabled endpoint that wants it; how many."""
    now = emission.created_at
    session.add(
        WebhookMessageRow(
            id=emission.message_id,
            event_type=emission.event_type,
            payload=emission.payload,
            created_at=now,
        )
    )
    endpoints = session.scalars(
        select(WebhookEndpointRow).where(WebhookEndpointRow.enabled.is_(True))
    ).all()
    wanting = [row for row in endpoints if _endpoint(row, now).wants(emission.event_type)]
    session.flush()  # the message first: the deliveries refer to it
    for row in wanting:
        session.add(
            WebhookDeliveryRow(
                message_id=emission.message_id,
                endpoint_id=row.id,
                status="pending",
                next_attempt_at=now,
                created_at=now,
            )
        )
    return len(wanting)


def _claim(
    session: Session, now: datetime, limit: int, busy: frozenset[int], lease: timedelta
) -> list[_Job]:
    """Take due deliveries, pushing each one's next try past the lease so no other loop takes
    it meanwhile. Locked as they are read (FOR UPDATE SKIP LOCKED): another engine claiming at
    the same moment takes other deliveries, and sees these leased once this commits."""
    statement = (
        select(WebhookDeliveryRow, WebhookEndpointRow, WebhookMessageRow)
        .join(WebhookEndpointRow, WebhookEndpointRow.id == WebhookDeliveryRow.endpoint_id)
        .join(WebhookMessageRow, WebhookMessageRow.id == WebhookDeliveryRow.message_id)
        .where(WebhookDeliveryRow.status.in_(WAITING))
        .where(WebhookDeliveryRow.next_attempt_at <= now)
        .where(WebhookEndpointRow.enabled.is_(True))
        .order_by(WebhookDeliveryRow.next_attempt_at, WebhookDeliveryRow.id)
        .limit(limit)
        .with_for_update(skip_locked=True, of=WebhookDeliveryRow)
    )
    if busy:
        statement = statement.where(WebhookDeliveryRow.id.not_in(busy))
    jobs: list[_Job] = []
    for delivery, endpoint, message in session.execute(statement):
        delivery.next_attempt_at = now + lease
        previous = endpoint.previous_secret_name
        expires = endpoint.previous_secret_expires_at
        names = [endpoint.secret_name]
        if previous and expires is not None and expires > now:
            names.append(previous)
        jobs.append(
            _Job(
                delivery_id=delivery.id,
                endpoint_id=endpoint.id,
                url=endpoint.url,
                secret_names=tuple(names),
                message_id=message.id,
                event_type=message.event_type,
                created_at=message.created_at,
                payload=message.payload,
            )
        )
    return jobs


def _failure(at: datetime, error: ProviderError, started: float) -> _Result:
    """A try the resilient layer reported as failed, in the words the delivery list shows."""
    latency = round((time.monotonic() - started) * 1000)
    if isinstance(error, ProviderUnavailable):
        return _Result(
            at,
            error=(
                "Not sent: most recent tries failed, so calls to this endpoint are paused for "
                "a while (its circuit breaker is open)."
            ),
        )
    if isinstance(error, RateLimited | ProviderFailed) and error.status is not None:
        # Retry-After only where the status means "later" (RFC 9110 10.2.3): 429 and 503.
        wait = error.retry_after if error.status in (429, 503) else None
        said = f" and asked to wait {wait:.0f} s" if wait else ""
        return _Result(
            at, error.status, latency, f"The endpoint answered HTTP {error.status}{said}.", wait
        )
    return _Result(at, latency_ms=latency, error=str(error))


def _record(
    session: Session, job: _Job, result: _Result, now: datetime, jitter: float
) -> _Recorded:
    """Log a try and move its delivery (and perhaps its endpoint) on."""
    delivery = session.get(WebhookDeliveryRow, job.delivery_id)
    endpoint = session.get(WebhookEndpointRow, job.endpoint_id)
    if delivery is None or endpoint is None:
        return _Recorded("skipped")  # the endpoint was removed meanwhile
    session.add(
        WebhookAttemptRow(
            delivery_id=delivery.id,
            at=result.at,
            status_code=result.status_code,
            latency_ms=result.latency_ms,
            error=result.error,
        )
    )
    delivery.attempts += 1
    delivery.last_attempt_at = result.at
    delivery.last_status_code = result.status_code
    delivery.last_error = result.error
    if result.ok:
        delivery.status = "delivered"
        delivery.delivered_at = now
        delivery.next_attempt_at = None
        endpoint.failing_since = None
        endpoint.last_success_at = now
        return _Recorded("delivered")
    if delivery.status not in WAITING:  # cancelled while the try was on its way
        delivery.next_attempt_at = None
        return _Recorded(delivery.status)
    if endpoint.failing_since is None:
        endpoint.failing_since = result.at
    if result.gone:
        _stop_endpoint(session, endpoint, GONE, now)
        if endpoint.subscription:
            return _Recorded("cancelled", disabled=True, unsubscribed=True)
        return _Recorded("cancelled", disabled=True, alert=_alert(session, endpoint, now, GONE))
    if delivery.attempts >= MAX_ATTEMPTS:
        delivery.status = "dead"
        delivery.next_attempt_at = None
    else:
        wait = retry_delay(delivery.attempts, jitter)
        if result.retry_after is not None:
            wait = max(wait, min(timedelta(seconds=result.retry_after), MAX_RETRY_AFTER))
        delivery.status = "failed"
        delivery.next_attempt_at = now + wait
    outcome = delivery.status
    if endpoint.enabled and now - endpoint.failing_since >= DISABLE_AFTER:
        since = endpoint.failing_since.strftime("%Y-%m-%d %H:%M UTC")
        reason = FAILING.format(days=DISABLE_AFTER.days, since=since)
        _stop_endpoint(session, endpoint, reason, now)
        return _Recorded(
            "dead" if outcome == "dead" else "cancelled",
            disabled=True,
            alert=_alert(session, endpoint, now, reason),
        )
    return _Recorded(outcome)


def _alert(
    session: Session, endpoint: WebhookEndpointRow, now: datetime, reason: str
) -> tuple[int, str]:
    message = f"Webhooks to {_shown(endpoint.url)} are switched off. {reason}"
    row = AlertRow(at=now, connection_id=None, kind=ALERT_KIND, message=message[:500])
    session.add(row)
    session.flush()
    return row.id, row.message


def _expired_previous_secrets(now: datetime) -> Select[WebhookEndpointRow]:
    return (
        select(WebhookEndpointRow)
        .where(WebhookEndpointRow.previous_secret_name != "")
        .where(WebhookEndpointRow.previous_secret_expires_at <= now)
    )


def _any_to_retire(session: Session, now: datetime) -> bool:
    return session.scalar(_expired_previous_secrets(now).limit(1)) is not None


def _retire(session: Session, now: datetime) -> _Retired:
    rows = session.scalars(_expired_previous_secrets(now)).all()
    retired = _Retired()
    for row in rows:
        retired.names.append(row.previous_secret_name)
        row.previous_secret_name = ""
        row.previous_secret_expires_at = None
    return retired


def _seconds_until_due(session: Session, now: datetime) -> float:
    due = session.scalar(
        select(WebhookDeliveryRow.next_attempt_at)
        .join(WebhookEndpointRow, WebhookEndpointRow.id == WebhookDeliveryRow.endpoint_id)
        .where(WebhookDeliveryRow.status.in_(WAITING))
        .where(WebhookEndpointRow.enabled.is_(True))
        .order_by(WebhookDeliveryRow.next_attempt_at)
        .limit(1)
    )
    if due is None:
        return IDLE_WAIT
    return max(0.0, min(IDLE_WAIT, (due - now).total_seconds()))


def _fresh(
    session: Session, message_id: str, endpoint_id: int, now: datetime, replay_of: int | None
) -> int:
    row = WebhookDeliveryRow(
        message_id=message_id,
        endpoint_id=endpoint_id,
        status="pending",
        next_attempt_at=now,
        created_at=now,
        replay_of=replay_of,
    )
    session.add(row)
    session.flush()
    return row.id


def _refuse_disabled(endpoints: Iterable[WebhookEndpointRow]) -> None:
    for row in endpoints:
        if not row.enabled:
            raise OutboundWebhookError(
                f"The webhook endpoint {_shown(row.url, 120)} is disabled; enable it first, "
                "then replay."
            )


def _replay(session: Session, ids: list[int], now: datetime) -> list[int]:
    rows = {
        row.id: row
        for row in session.scalars(select(WebhookDeliveryRow).where(WebhookDeliveryRow.id.in_(ids)))
    }
    missing = [delivery_id for delivery_id in ids if delivery_id not in rows]
    if missing:
        raise NotFound(f"There is no webhook delivery number {missing[0]}.")
    endpoint_ids = {row.endpoint_id for row in rows.values()}
    _refuse_disabled(
        session.scalars(select(WebhookEndpointRow).where(WebhookEndpointRow.id.in_(endpoint_ids)))
    )
    # What already waits, per (message, endpoint): replaying brings it forward, never doubles.
    waiting: dict[tuple[str, int], WebhookDeliveryRow] = {
        (row.message_id, row.endpoint_id): row
        for row in session.scalars(
            select(WebhookDeliveryRow)
            .where(WebhookDeliveryRow.message_id.in_({row.message_id for row in rows.values()}))
            .where(WebhookDeliveryRow.endpoint_id.in_(endpoint_ids))
            .where(WebhookDeliveryRow.status.in_(WAITING))
        )
    }
    replayed: list[int] = []
    for delivery_id in ids:
        row = rows[delivery_id]
        pair = (row.message_id, row.endpoint_id)
        if pair in waiting:
            waiting[pair].next_attempt_at = now
            chosen = waiting[pair].id
        else:
            chosen = _fresh(session, row.message_id, row.endpoint_id, now, row.id)
            waiting[pair] = session.get_one(WebhookDeliveryRow, chosen)
        if chosen not in replayed:
            replayed.append(chosen)
    return replayed


def _replay_range(
    session: Session,
    start: datetime,
    end: datetime,
    endpoint_id: int | None,
    include_delivered: bool,
    now: datetime,
) -> list[int]:
    if endpoint_id is not None:
        targets = [_get_endpoint(session, endpoint_id)]
        _refuse_disabled(targets)
    else:
        targets = list(
            session.scalars(
                select(WebhookEndpointRow)
                .where(WebhookEndpointRow.enabled.is_(True))
                .order_by(WebhookEndpointRow.id)
            )
        )
    in_range = (WebhookMessageRow.created_at >= start, WebhookMessageRow.created_at < end)
    messages = session.execute(
        select(WebhookMessageRow.id, WebhookMessageRow.event_type)
        .where(*in_range)
        .order_by(WebhookMessageRow.created_at, WebhookMessageRow.id)
        .limit(MAX_REPLAY + 1)
    ).all()
    if len(messages) > MAX_REPLAY:
        raise OutboundWebhookError(
            f"More than {MAX_REPLAY:,} events were emitted in that time; replay a shorter "
            "range at a time."
        )
    # What each endpoint already has of each message: statuses, and the latest delivery.
    statuses: dict[tuple[str, int], set[str]] = {}
    latest: dict[tuple[str, int], int] = {}
    target_ids = [row.id for row in targets]
    for delivery_id, message_id, target, status in session.execute(
        select(
            WebhookDeliveryRow.id,
            WebhookDeliveryRow.message_id,
            WebhookDeliveryRow.endpoint_id,
            WebhookDeliveryRow.status,
        )
        .join(WebhookMessageRow, WebhookMessageRow.id == WebhookDeliveryRow.message_id)
        .where(*in_range)
        .where(WebhookDeliveryRow.endpoint_id.in_(target_ids))
    ):
        statuses.setdefault((message_id, target), set()).add(status)
        latest[(message_id, target)] = max(delivery_id, latest.get((message_id, target), 0))
    replayed: list[int] = []
    for message_id, event_type in messages:
        for endpoint in targets:
            if not _endpoint(endpoint, now).wants(event_type):
                continue
            had = statuses.get((message_id, endpoint.id), set())
            if had & set(WAITING) or ("delivered" in had and not include_delivered):
                continue
            replayed.append(
                _fresh(session, message_id, endpoint.id, now, latest.get((message_id, endpoint.id)))
            )
    return replayed


def _list_deliveries(
    session: Session, statement: Select[WebhookDeliveryRow, str, str]
) -> list[Delivery]:
    return [_delivery(row, event_type, url) for row, event_type, url in session.execute(statement)]


def _endpoints_health(session: Session, now: datetime) -> list[EndpointHealth]:
    rows = session.scalars(select(WebhookEndpointRow).order_by(WebhookEndpointRow.id)).all()
    counts: dict[tuple[int, str], int] = {
        (endpoint_id, status): count
        for endpoint_id, status, count in session.execute(
            select(WebhookDeliveryRow.endpoint_id, WebhookDeliveryRow.status, func.count())
            .where(WebhookDeliveryRow.status.in_((*WAITING, "dead")))
            .group_by(WebhookDeliveryRow.endpoint_id, WebhookDeliveryRow.status)
        )
    }
    day: dict[int, tuple[int, int]] = {}
    recent = session.execute(
        select(WebhookDeliveryRow.endpoint_id, WebhookAttemptRow.status_code)
        .join(WebhookDeliveryRow, WebhookDeliveryRow.id == WebhookAttemptRow.delivery_id)
        .where(WebhookAttemptRow.at >= now - timedelta(days=1))
    )
    for endpoint_id, code in recent:
        tries, failures = day.get(endpoint_id, (0, 0))
        failed = code is None or not 200 <= code < 300
        day[endpoint_id] = (tries + 1, failures + int(failed))
    health: list[EndpointHealth] = []
    for row in rows:
        last = session.execute(
            select(WebhookAttemptRow.at, WebhookAttemptRow.status_code)
            .join(WebhookDeliveryRow, WebhookDeliveryRow.id == WebhookAttemptRow.delivery_id)
            .where(WebhookDeliveryRow.endpoint_id == row.id)
            .order_by(WebhookAttemptRow.id.desc())
            .limit(1)
        ).first()
        tries, failures = day.get(row.id, (0, 0))
        state: Literal["healthy", "failing", "disabled"] = (
            "disabled" if not row.enabled else "failing" if row.failing_since else "healthy"
        )
        health.append(
            EndpointHealth(
                endpoint=_endpoint(row, now),
                state=state,
                waiting=sum(counts.get((row.id, status), 0) for status in WAITING),
                dead=counts.get((row.id, "dead"), 0),
                attempts_last_day=tries,
                failures_last_day=failures,
                last_attempt_at=last[0] if last else None,
                last_status_code=last[1] if last else None,
            )
        )
    return health
