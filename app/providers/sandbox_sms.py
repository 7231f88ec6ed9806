"""The SMS sandbox: Twilio's Messages API, simulated, for demo mode, the benchmarks and tests.

`SimulatedTwilio` is an ASGI app that answers what `app.providers.twilio` calls, as Twilio
does: HTTP Basic with the Account SID and Auth Token (401, code 20003, otherwise), `POST
…/Messages.json` (201 with the Message resource; 400 with Twilio's codes for a missing body
(21602), an invalid number (21211) or a number that replied STOP (21610)), `GET
…/Messages.json` with `To`, `DateSent>` and `PageSize`, newest first, paged by `next_page_uri`,
and `GET /2010-04-01/Accounts/{sid}.json`. A throughput limit answers 429 with code 20429
beyond it, as Twilio's API concurrency limit does. Messages then move on their own (queued →
sent → delivered, a few undelivered), and each step is posted to the message's
`StatusCallback`, signed as Twilio signs (X-Twilio-Signature).

The app runs in-process for a sandbox connection (through httpx's ASGI transport, so calls
still pass the whole resilient layer) or on a loopback port (the benchmark and the tests, where
a killed sender must not take the provider's records with it). It counts every message it
accepted per number: the figure that says whether anyone got a message twice.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import secrets
import time
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import format_datetime
from typing import Any
from urllib.parse import parse_qsl, urlencode

import httpx
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from app.domain.messages import AddressError, e164, sms_length
from app.providers.base import Provider
from app.providers.http import ResilientClient
from app.providers.messaging import MESSAGING, reads_deliveries
from app.providers.spec import (
    AuthKind,
    Category,
    ConfigField,
    FieldKind,
    ProviderSpec,
    RatePolicy,
    ResiliencePolicy,
    WebhookSpec,
)
from app.providers.twilio import ACCOUNT, TWILIO_URL, Twilio, basic_auth, deliveries
from app.providers.webhooks import TwilioVerifier

SANDBOX_ACCOUNT = "AC" + "5a" * 16


@dataclass
class SimulatedMessage:
    sid: str
    to: str
    sender: str
    body: str
    status: str
    created: datetime
    callback: str
    segments: int
    error_code: str = ""

    def resource(self, account: str) -> dict[str, Any]:
        return {
            "sid": self.sid,
            "account_sid": account,
            "to": self.to,
            "from": self.sender,
            "body": self.body,
            "status": self.status,
            "direction": "outbound-api",
            "num_segments": str(self.segments),
            "price": None if self.status in ("queued", "accepted") else "-0.00790",
            "price_unit": "USD",
            "error_code": int(self.error_code) if self.error_code else None,
            "date_created": format_datetime(self.created, usegmt=True),
            "date_sent": format_datetime(self.created, usegmt=True),
            "uri": f"/2010-04-01/Accounts/{account}/Messages/{self.sid}.json",
        }


@dataclass
class SimulatedTwilio:
    """One simulated Twilio account. `rate`: messages a second before 429 (None: no limit)."""

    account_sid: str = SANDBOX_ACCOUNT
    auth_token: str = "sandbox-token"  # noqa: S105 - the simulated account's, not a real one
    rate: float | None = None
    delivery_seconds: tuple[float, float] = (0.5, 3.0)
    undelivered_rate: float = 0.02
    seed: int = 0
    messages: dict[str, SimulatedMessage] = field(default_factory=dict)
    received: Counter[str] = field(default_factory=Counter)  # messages accepted per number
    opted_out: set[str] = field(default_factory=set)
    throttled: int = 0  # requests answered 429
    fail_next: int = 0  # answer 503 to this many sends
    callbacks: bool = True

    def __post_init__(self) -> None:
        self._rng = random.Random(self.seed)
        self._bucket = float(self.rate or 0)
        self._filled = time.monotonic()
        self._tasks: set[asyncio.Task[None]] = set()
        base = "/2010-04-01/Accounts/{account}"
        self.app = Starlette(
            routes=[
                Route(base + ".json", self._account, methods=["GET"]),
                Route(base + "/Messages.json", self._create, methods=["POST"]),
                Route(base + "/Messages.json", self._list, methods=["GET"]),
                Route(base + "/Messages/{sid}.json", self._fetch, methods=["GET"]),
                # Not Twilio's: what the simulated account took, for benchmarks and tests.
                Route("/_sandbox/received", self._received, methods=["GET"]),
            ]
        )

    # --- the API --------------------------------------------------------------------------------

    async def _account(self, request: Request) -> Response:
        refused = self._refuse(request)
        if refused is not None:
            return refused
        return JSONResponse(
            {"sid": self.account_sid, "status": "active", "friendly_name": "Sandbox"}
        )

    async def _create(self, request: Request) -> Response:
        refused = self._refuse(request)
        if refused is not None:
            return refused
        if not self._take():
            self.throttled += 1
            return _error(429, 20429, "Too Many Requests")
        if self.fail_next > 0:
            self.fail_next -= 1
            return _error(503, 20500, "Service Unavailable")
        form = dict(parse_qsl((await request.body()).decode("utf-8"), keep_blank_values=True))
        to, body = str(form.get("To") or ""), str(form.get("Body") or "")
        sender = str(form.get("From") or form.get("MessagingServiceSid") or "")
        if not to:
            return _error(400, 21604, "A 'To' phone number is required.")
        if not sender:
            return _error(400, 21603, "A 'From' phone number is required.")
        if not body:
            return _error(400, 21602, "Message body is required.")
        if len(body) > 1600:
            return _error(
                400, 21617, "The concatenated message body exceeds the 1600 character limit."
            )
        try:
            number = e164(to)
        except AddressError:
            return _error(400, 21211, f"The 'To' number {to} is not a valid phone number.")
        if number in self.opted_out:
            return _error(400, 21610, "Attempt to send to unsubscribed recipient")
        message = SimulatedMessage(
            sid="SM" + secrets.token_hex(16),
            to=number,
            sender=sender,
            body=body,
            status="accepted" if "MessagingServiceSid" in form else "queued",
            created=datetime.now(UTC),
            callback=str(form.get("StatusCallback") or ""),
            segments=sms_length(body).segments,
        )
        self.messages[message.sid] = message
        self.received[number] += 1
        self._later(message)
        return JSONResponse(message.resource(self.account_sid), status_code=201)

    async def _list(self, request: Request) -> Response:
        refused = self._refuse(request)
        if refused is not None:
            return refused
        query = request.query_params
        to = query.get("To")
        since = query.get("DateSent>") or query.get("DateSent>=")
        size = min(max(int(query.get("PageSize") or 50), 1), 1000)
        page = max(int(query.get("Page") or 0), 0)
        found = [
            message
            for message in sorted(self.messages.values(), key=lambda m: m.created, reverse=True)
            if (not to or message.to == to)
            and (not since or message.created.date().isoformat() >= since)
        ]
        chunk = found[page * size : (page + 1) * size]
        next_uri = None
        if (page + 1) * size < len(found):
            params = {k: v for k, v in query.items() if k != "Page"}
            params["Page"] = str(page + 1)
            next_uri = f"{request.url.path}?{urlencode(params)}"
        return JSONResponse(
            {
                "messages": [message.resource(self.account_sid) for message in chunk],
                "page": page,
                "page_size": size,
                "next_page_uri": next_uri,
            }
        )

    async def _fetch(self, request: Request) -> Response:
        refused = self._refuse(request)
        if refused is not None:
            return refused
        message = self.messages.get(request.path_params["sid"])
        if message is None:
            return _error(404, 20404, "The requested resource was not found")
        return JSONResponse(message.resource(self.account_sid))

    async def _received(self, _request: Request) -> Response:
        counts = self.received.values()
        return JSONResponse(
            {
                "messages": sum(counts),
                "numbers": len(self.received),
                "most_to_one_number": max(counts, default=0),
                "throttled": self.throttled,
            }
        )

    def _refuse(self, request: Request) -> Response | None:
        if request.path_params.get("account") != self.account_sid:
            return _error(404, 20404, "The requested resource was not found")
        expected = basic_auth(self.account_sid, self.auth_token)["Authorization"]
        if request.headers.get("authorization") != expected:
            return _error(401, 20003, "Authenticate")
        return None

    def _take(self) -> bool:
        """A token bucket of one second's worth of messages."""
        if not self.rate:
            return True
        now = time.monotonic()
        self._bucket = min(self.rate, self._bucket + (now - self._filled) * self.rate)
        self._filled = now
        if self._bucket < 1:
            return False
        self._bucket -= 1
        return True

    # --- what happens next ----------------------------------------------------------------------

    def _later(self, message: SimulatedMessage) -> None:
        task = asyncio.get_running_loop().create_task(self._progress(message))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _progress(self, message: SimulatedMessage) -> None:
        low, high = self.delivery_seconds
        await asyncio.sleep(self._rng.uniform(low, high) / 3)
        await self._move(message, "sent")
        await asyncio.sleep(self._rng.uniform(low, high) * 2 / 3)
        if self._rng.random() < self.undelivered_rate:
            message.error_code = "30003"
            await self._move(message, "undelivered")
        else:
            await self._move(message, "delivered")

    async def _move(self, message: SimulatedMessage, status: str) -> None:
        message.status = status
        if self.callbacks and message.callback:
            await self.post_status(message)

    async def post_status(self, message: SimulatedMessage) -> None:
        """Post the message's status to its callback, signed as Twilio does; a callback that
        fails is not retried (Twilio does not retry status callbacks either)."""
        fields = {
            "AccountSid": self.account_sid,
            "MessageSid": message.sid,
            "SmsSid": message.sid,
            "MessageStatus": message.status,
            "SmsStatus": message.status,
            "To": message.to,
            "From": message.sender,
            "ApiVersion": "2010-04-01",
        }
        if message.error_code:
            fields["ErrorCode"] = message.error_code
        await self.post_form(message.callback, fields)

    async def reply(self, url: str, sender: str, text: str, to: str = "+15005550006") -> None:
        """An SMS a person sends to the number, posted to the number's incoming webhook."""
        sid = "SM" + secrets.token_hex(16)
        await self.post_form(
            url,
            {
                "AccountSid": self.account_sid,
                "MessageSid": sid,
                "SmsSid": sid,
                "SmsStatus": "received",
                "From": sender,
                "To": to,
                "Body": text,
                "NumSegments": "1",
                "ApiVersion": "2010-04-01",
            },
        )

    async def post_form(self, url: str, fields: Mapping[str, str]) -> None:
        body = urlencode(fields).encode()
        headers = TwilioVerifier().sign(self.auth_token, body, url=url, timestamp=0, event_id="")
        headers["Content-Type"] = "application/x-www-form-urlencoded"
        with contextlib.suppress(httpx.HTTPError):
            async with httpx.AsyncClient(timeout=10) as client:
                await client.post(url, content=body, headers=headers)

    async def aclose(self) -> None:
        for task in list(self._tasks):
            task.cancel()


def _error(status: int, code: int, message: str) -> JSONResponse:
    return JSONResponse(
        {
            "code": code,
            "message": message,
            "more_info": f"https://www.twilio.com/docs/errors/{code}",
            "status": status,
        },
        status_code=status,
    )


# --- the sandbox connection ---------------------------------------------------------------------

_SIMULATORS: dict[int, SimulatedTwilio] = {}


def simulator_of(
    connection_id: int, config: Mapping[str, Any], secrets: Mapping[str, str]
) -> SimulatedTwilio:
    """The simulated account behind a sandbox connection, one per connection in a process."""
    simulator = _SIMULATORS.get(connection_id)
    if simulator is None:
        simulator = SimulatedTwilio(
            auth_token=secrets.get("auth_token") or SimulatedTwilio.auth_token,
            rate=float(config.get("rate_per_second") or 50),
            undelivered_rate=float(config.get("undelivered_rate", 0.03)),
            seed=connection_id,
        )
        _SIMULATORS[connection_id] = simulator
    return simulator


def _transport(
    connection_id: int, config: Mapping[str, Any], secrets: Mapping[str, str]
) -> httpx.AsyncBaseTransport:
    return httpx.ASGITransport(app=simulator_of(connection_id, config, secrets).app)


def _token(secrets: Mapping[str, str]) -> str:
    return secrets.get("auth_token") or SimulatedTwilio.auth_token


def _headers(_config: Mapping[str, Any], secrets: Mapping[str, str]) -> dict[str, str]:
    return basic_auth(SANDBOX_ACCOUNT, _token(secrets))


def _sandbox(
    spec: ProviderSpec,
    client: ResilientClient,
    config: Mapping[str, Any],
    secrets: Mapping[str, str],
) -> Provider:
    return Twilio(
        spec,
        client,
        {**config, "account_sid": SANDBOX_ACCOUNT, "from_number": "+15005550006"},
        {**secrets, "auth_token": _token(secrets)},
    )


SANDBOX_SMS = ProviderSpec(
    key="sandbox-sms",
    name="Sandbox SMS",
    category=Category.MESSAGING,
    description="A simulated SMS provider for trying Switchboard out: messages are accepted, "
    "move to delivered (a few fail) and report back, and nobody's phone rings.",
    fields=(
        ConfigField(
            "rate_per_second",
            "Messages per second",
            FieldKind.NUMBER,
            required=False,
            default=50,
            minimum=1,
            maximum=1000,
        ),
        ConfigField(
            "undelivered_rate",
            "Share undelivered (0 to 1)",
            FieldKind.NUMBER,
            required=False,
            default=0.03,
            minimum=0,
            maximum=1,
        ),
        ConfigField(
            "price_per_segment",
            "Price per SMS part (USD)",
            FieldKind.NUMBER,
            required=False,
            default=0.0079,
            minimum=0,
            maximum=10,
        ),
        ConfigField(
            "auth_token",
            "Signing secret",
            FieldKind.SECRET,
            required=False,
            help="Signs the sandbox's delivery reports as Twilio signs its own; any text.",
        ),
    ),
    auth=AuthKind.NONE,
    capabilities=frozenset({MESSAGING}),
    health=ACCOUNT,
    base_url=lambda _config: TWILIO_URL,
    factory=_sandbox,
    policy=ResiliencePolicy(timeout=10.0, rate=RatePolicy(requests=50, per_seconds=1)),
    headers=_headers,
    transport=_transport,
    sandbox=True,
    webhook=WebhookSpec("twilio", "auth_token", "application/x-www-form-urlencoded"),
    rate_field="rate_per_second",
)

# The sandbox reports as Twilio does.
reads_deliveries(SANDBOX_SMS.key)(deliveries)
