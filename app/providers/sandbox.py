"""Sandbox providers: simulated, in-process, with the latency, errors and outages you set.

They power demo mode and the benchmarks. A sandbox answers through an httpx transport instead of
the network, so its calls still pass through the whole resilient HTTP layer (rate limits,
breaker, retries, request log) exactly as a real provider's do. No real money or message moves.
"""

from __future__ import annotations

import asyncio
import json
import math
import random
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import httpx

from app.providers.base import Provider
from app.providers.gateway import PAYMENTS
from app.providers.http import ResilientClient
from app.providers.sandbox_ledger import Ledger, ledger_of, sandbox_fees
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
from app.providers.stripe import Stripe

SANDBOX_URL = "https://sandbox.switchboard.invalid"
OUTAGE = re.compile(r"^\s*every\s+(\d+)\s*min(?:utes?)?\s+for\s+(\d+)\s*min(?:utes?)?\s*$", re.I)
Z95 = 1.6449  # the 95th percentile of the standard normal distribution


def parse_outages(text: str) -> tuple[int, int] | None:
    """ "every 30 min for 2 min" -> (30, 2); "" -> None; anything else is a ValueError."""
    if not text.strip():
        return None
    match = OUTAGE.match(text)
    if match is None:
        raise ValueError("Outages must be written like “every 30 min for 2 min”, or left empty.")
    every, length = int(match.group(1)), int(match.group(2))
    if not 0 < length < every:
        raise ValueError("An outage must be shorter than the time between outages.")
    return every, length


@dataclass(frozen=True)
class Behaviour:
    """How the simulated provider behaves: latency as a log-normal distribution given by its
    median and 95th percentile, a share of failed answers, and regular outages."""

    median_ms: float = 120.0
    p95_ms: float = 450.0
    error_rate: float = 0.02
    outages: tuple[int, int] | None = None  # every N minutes, for M minutes
    outage_kind: str = "errors"  # errors: 503 at once; timeouts: no answer
    offset_minutes: int = 0  # staggers outages between connections

    def latency(self, rng: random.Random) -> float:
        median = max(self.median_ms, 1.0)
        sigma = max(math.log(max(self.p95_ms, median) / median) / Z95, 1e-6)
        return rng.lognormvariate(math.log(median), sigma) / 1000

    def in_outage(self, now: float) -> bool:
        if self.outages is None:
            return False
        every, length = self.outages
        minute = int(now // 60) + self.offset_minutes
        return minute % every < length


class SimulatedTransport(httpx.AsyncBaseTransport):
    """A payment gateway's API, simulated: `GET /v1/account` answers who the account is, and
    the ledger (when given) answers payments, refunds, balance transactions and payouts."""

    def __init__(
        self,
        behaviour: Behaviour,
        api_key: str,
        *,
        ledger: Ledger | None = None,
        seed: int = 0,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], Any] = asyncio.sleep,
    ) -> None:
        self.behaviour = behaviour
        self.ledger = ledger
        self._api_key = api_key
        self._rng = random.Random(seed)
        self._clock = clock
        self._sleep = sleep

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        behaviour = self.behaviour
        if behaviour.in_outage(self._clock()):
            if behaviour.outage_kind == "timeouts":
                await self._sleep(3600)  # the client's timeout ends the wait
            return self._json(request, 503, {"error": {"message": "Service unavailable"}})
        await self._sleep(behaviour.latency(self._rng))
        if request.headers.get("Authorization") != f"Bearer {self._api_key}":
            return self._json(request, 401, {"error": {"message": "Invalid API key"}})
        if self._rng.random() < behaviour.error_rate:
            status = self._rng.choice((500, 502, 503))
            return self._json(request, status, {"error": {"message": "Internal error"}})
        if request.method == "GET" and request.url.path == "/v1/account":
            return self._json(request, 200, {"id": "acct_sandbox", "status": "active"})
        answer = self.ledger.handle(request) if self.ledger is not None else None
        if answer is not None:
            return self._json(request, *answer)
        return self._json(request, 404, {"error": {"message": "No such endpoint"}})

    @staticmethod
    def _json(request: httpx.Request, status: int, body: Mapping[str, Any]) -> httpx.Response:
        return httpx.Response(
            status,
            content=json.dumps(body).encode(),
            headers={"Content-Type": "application/json"},
            request=request,
        )


def behaviour_of(connection_id: int, config: Mapping[str, Any]) -> Behaviour:
    return Behaviour(
        median_ms=float(config.get("latency_ms", 120.0)),
        p95_ms=float(config.get("latency_p95_ms", 450.0)),
        error_rate=float(config.get("error_rate", 0.02)),
        outages=parse_outages(str(config.get("outages", "") or "")),
        outage_kind=str(config.get("outage_kind", "errors")),
        offset_minutes=connection_id * 7,
    )


def books_of(connection_id: int, config: Mapping[str, Any]) -> Ledger:
    """The books of a sandbox connection, with its approval rate and fees."""
    return ledger_of(connection_id, float(config.get("approval_rate", 0.95)), sandbox_fees(config))


def _transport(
    connection_id: int, config: Mapping[str, Any], secrets: Mapping[str, str]
) -> httpx.AsyncBaseTransport:
    return SimulatedTransport(
        behaviour_of(connection_id, config),
        secrets.get("api_key", ""),
        ledger=books_of(connection_id, config),
        seed=connection_id,
    )


def _headers(config: Mapping[str, Any], secrets: Mapping[str, str]) -> dict[str, str]:
    return {"Authorization": f"Bearer {secrets.get('api_key', '')}"}


class SandboxGateway(Stripe):
    """The sandbox payment gateway: its simulated API speaks Stripe's dialect, so it is driven
    by the Stripe gateway's own code; its fees are the connection's."""

    def __init__(
        self,
        spec: ProviderSpec,
        client: ResilientClient,
        config: Mapping[str, Any],
        secrets: Mapping[str, str],
    ) -> None:
        super().__init__(spec, client, config, secrets)
        self.fees = sandbox_fees(config)


def _sandbox_gateway(
    spec: ProviderSpec,
    client: ResilientClient,
    config: Mapping[str, Any],
    secrets: Mapping[str, str],
) -> Provider:
    return SandboxGateway(spec, client, config, secrets)


SANDBOX_PAYMENTS = ProviderSpec(
    key="sandbox-payments",
    name="Sandbox payment gateway",
    category=Category.PAYMENTS,
    description=(
        "A simulated payment gateway for trying Switchboard and for demonstrations. You choose "
        "how fast it answers, how often it fails and when it is down; no real money moves."
    ),
    fields=(
        ConfigField(
            "api_key",
            "API key",
            FieldKind.SECRET,
            help="Any text: the sandbox checks that calls carry it, as a real gateway would.",
        ),
        ConfigField(
            "latency_ms",
            "Typical answer time (ms)",
            FieldKind.NUMBER,
            required=False,
            default=120.0,
            minimum=1,
            maximum=60_000,
        ),
        ConfigField(
            "latency_p95_ms",
            "Slow answer time, 95th percentile (ms)",
            FieldKind.NUMBER,
            required=False,
            default=450.0,
            minimum=1,
            maximum=60_000,
        ),
        ConfigField(
            "error_rate",
            "Share of failed answers (0 to 1)",
            FieldKind.NUMBER,
            required=False,
            default=0.02,
            minimum=0,
            maximum=1,
        ),
        ConfigField(
            "outages",
            "Outages",
            FieldKind.TEXT,
            required=False,
            default="",
            help="For example “every 30 min for 2 min”; empty for none.",
            check=parse_outages,
        ),
        ConfigField(
            "outage_kind",
            "During an outage",
            FieldKind.SELECT,
            required=False,
            default="errors",
            choices=("errors", "timeouts"),
        ),
        ConfigField(
            "approval_rate",
            "Share of payments approved (0 to 1)",
            FieldKind.NUMBER,
            required=False,
            default=0.95,
            minimum=0,
            maximum=1,
            help="The rest are declined, most for insufficient funds.",
        ),
        ConfigField(
            "fee_percent",
            "Fee (% of each payment)",
            FieldKind.NUMBER,
            required=False,
            default=2.9,
            minimum=0,
            maximum=20,
        ),
        ConfigField(
            "fee_fixed_minor",
            "Fee per payment (cents)",
            FieldKind.NUMBER,
            required=False,
            default=30,
            minimum=0,
            maximum=10_000,
        ),
        ConfigField(
            "webhook_secret",
            "Webhook signing secret",
            FieldKind.SECRET,
            required=False,
            help=(
                "Signs the gateway's callbacks (Standard Webhooks, whsec_…). While replacing "
                "it, give the new and the old one separated by a space."
            ),
        ),
    ),
    auth=AuthKind.API_KEY,
    capabilities=frozenset({PAYMENTS}),
    health=Operation("account", "GET", "/v1/account", timeout=5.0),
    base_url=lambda _config: SANDBOX_URL,
    factory=_sandbox_gateway,
    policy=ResiliencePolicy(timeout=10.0, rate=RatePolicy(requests=100, per_seconds=1)),
    headers=_headers,
    transport=_transport,
    sandbox=True,
    webhook=WebhookSpec("standard-webhooks", "webhook_secret"),
)
