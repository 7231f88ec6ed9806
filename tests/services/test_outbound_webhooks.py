"""Outbound webhooks as a consumer sees them, over real HTTP on loopback: each event arrives
signed so the official Standard Webhooks library verifies it, failures are retried on Svix's
schedule (measured under a simulated clock) with the same webhook-id, Retry-After is honoured,
410 Gone and five days of failures switch an endpoint off (the latter with an alert), dead
letters and time ranges can be replayed, a disabled endpoint gets nothing, and the signing
secret never reaches the database."""

from __future__ import annotations

import asyncio
import base64
import logging
import random
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from pathlib import Path

import pytest
from sqlalchemy import select
from standardwebhooks.webhooks import Webhook, WebhookVerificationError
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from app.config import Config
from app.domain.errors import NotFound, ValidationFailed
from app.services.events import EngineEvent, EventHub
from app.services.outbound_webhooks import (
    Delivery,
    OutboundWebhookError,
    OutboundWebhooks,
)
from app.services.secrets import SecretStore
from app.store.database import Database
from app.store.integration import AlertRow
from tests.fakes.server import Switch, served
from tests.support.memory_keyring import MemoryKeyring

pytestmark = pytest.mark.both_databases  # the workers' claims differ by database

# Svix's schedule, in seconds after each failed try: what the tests hold the service to.
SCHEDULE = [5, 5 * 60, 30 * 60, 2 * 3600, 5 * 3600, 10 * 3600, 10 * 3600]
WAITING = ["pending", "failed"]


# --- a webhook consumer on loopback ------------------------------------------------------------


@dataclass(frozen=True)
class Answer:
    status: int = 200
    headers: Mapping[str, str] = field(default_factory=dict)
    hang: bool = False  # no answer until the sender gives up and disconnects


@dataclass(frozen=True)
class Received:
    path: str
    headers: Mapping[str, str]  # lower-case names
    body: bytes

    @property
    def webhook_id(self) -> str:
        return self.headers["webhook-id"]

    @property
    def timestamp(self) -> int:
        return int(self.headers["webhook-timestamp"])


class Consumer:
    """Any webhook consumer: records every request and answers as the test scripts."""

    def __init__(self, base_url: str) -> None:
        self.url = base_url + "/hooks/school?tenant=music"
        self.received: list[Received] = []
        self._script: deque[Answer] = deque()
        self._then = Answer(200)
        self._decide: Callable[[Received], Answer] | None = None
        self.app = Starlette(routes=[Route("/{path:path}", self._receive, methods=["POST"])])

    def answer(self, *answers: Answer, then: Answer | None = None) -> None:
        """The next requests get `answers` in order, then `then` (200 unless given) for ever."""
        self._script = deque(answers)
        self._then = then or Answer(200)

    def answer_with(self, decide: Callable[[Received], Answer]) -> None:
        """Every request gets what `decide` says for it."""
        self._decide = decide

    async def _receive(self, request: Request) -> Response:
        body = await request.body()
        path = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        received = Received(path, dict(request.headers), body)
        self.received.append(received)
        if self._decide is not None:
            answer = self._decide(received)
        else:
            answer = self._script.popleft() if self._script else self._then
        if answer.hang:
            for _ in range(600):
                if await request.is_disconnected():
                    break
                await asyncio.sleep(0.05)
        return Response(status_code=answer.status, headers=dict(answer.headers))


class SimulatedClock:
    """The service's clock and sleep. Time moves only when the test moves it; a sleep waits
    until it has, and is recorded, so the loop's naps can be read."""

    def __init__(self) -> None:
        # Near real time, so the library's 5-minute timestamp check passes on first tries.
        self.now = datetime.now(UTC).replace(microsecond=0)
        self.naps: list[float] = []
        self._moved = asyncio.Event()

    def __call__(self) -> datetime:
        return self.now

    def advance(self, delta: timedelta) -> None:
        self.advance_to(self.now + delta)

    def advance_to(self, when: datetime) -> None:
        self.now = max(self.now, when)
        self._moved.set()

    async def sleep(self, seconds: float) -> None:
        self.naps.append(seconds)
        until = self.now + timedelta(seconds=seconds)
        while self.now < until:
            self._moved.clear()
            await self._moved.wait()


@pytest.fixture(scope="module")
def server() -> Iterator[tuple[Switch, str]]:
    switch = Switch()
    with served(switch) as url:
        yield switch, url


@pytest.fixture
def consumer(server: tuple[Switch, str]) -> Consumer:
    switch, url = server
    fresh = Consumer(url)
    switch.target = fresh.app
    return fresh


@pytest.fixture
def clock() -> SimulatedClock:
    return SimulatedClock()


@pytest.fixture
async def db(config: Config) -> AsyncIterator[Database]:
    database = Database(config.db_url)
    yield database
    await asyncio.to_thread(database.close)


@pytest.fixture
def hub() -> Iterator[tuple[EventHub, list[EngineEvent]]]:
    events = EventHub()  # no loop bound: events are delivered at once
    heard: list[EngineEvent] = []
    unsubscribe = events.subscribe(heard.append)
    yield events, heard
    unsubscribe()


@pytest.fixture
async def hooks(
    db: Database, clock: SimulatedClock, hub: tuple[EventHub, list[EngineEvent]]
) -> AsyncIterator[OutboundWebhooks]:
    service = OutboundWebhooks(
        db,
        hub[0],
        SecretStore("tests"),
        clock=clock,
        sleep=clock.sleep,
        jitter=random.random,
        timeout=2.0,
    )
    yield service
    await service.close()


# --- helpers -------------------------------------------------------------------------------------


def signed_by(secret: str, request: Received) -> bool:
    """Whether one of the request's signatures is the official library's for this secret, at
    the request's own timestamp (for tries long after real time, where `verify` would call the
    timestamp stale)."""
    expected = Webhook(secret).sign(
        request.webhook_id,
        datetime.fromtimestamp(request.timestamp, UTC),
        request.body.decode(),
    )
    return expected in request.headers["webhook-signature"].split(" ")


async def only_delivery(hooks: OutboundWebhooks, message_id: str) -> Delivery:
    [delivery] = await hooks.deliveries(message_id=message_id)
    return delivery


async def run_out(hooks: OutboundWebhooks, clock: SimulatedClock, limit: int = 200) -> None:
    """Make every try until nothing waits, moving the clock to each next due moment."""
    for _ in range(limit):
        await hooks.deliver_due()
        waiting = await hooks.deliveries(status=WAITING, limit=1000)
        if not waiting:
            return
        clock.advance_to(min(d.next_attempt_at for d in waiting if d.next_attempt_at))
    raise AssertionError("deliveries were still waiting after the limit")


async def eventually(check: Callable[[], bool], seconds: float = 5.0) -> None:
    deadline = asyncio.get_running_loop().time() + seconds
    while not check():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("the condition did not come true in time")
        await asyncio.sleep(0.01)


# --- signing and fan-out -------------------------------------------------------------------------


async def test_an_event_reaches_each_subscribed_endpoint_signed_so_the_official_library_verifies_it(
    hooks: OutboundWebhooks, consumer: Consumer
) -> None:
    everything = await hooks.add_endpoint(consumer.url, description="School CRM")
    lessons_only = await hooks.add_endpoint(
        consumer.url.replace("/hooks/school", "/hooks/lessons"), event_types=["lesson.created"]
    )
    secret = await hooks.secret(everything.id)
    assert secret.startswith("whsec_")
    assert len(base64.b64decode(secret.removeprefix("whsec_"))) == 24

    message_id = await hooks.emit("payment.succeeded", {"payment": 42, "amount": "10.00"})
    counts = await hooks.deliver_due()

    assert (counts.attempted, counts.delivered) == (1, 1)
    [request] = consumer.received
    assert request.path == "/hooks/school?tenant=music"
    assert request.webhook_id == message_id
    assert message_id.startswith("msg_")
    assert request.headers["content-type"] == "application/json"
    event = Webhook(secret).verify(request.body, dict(request.headers))
    assert event["type"] == "payment.succeeded"
    assert event["data"] == {"payment": 42, "amount": "10.00"}
    assert datetime.fromisoformat(event["timestamp"].replace("Z", "+00:00"))
    with pytest.raises(WebhookVerificationError):
        Webhook(await hooks.secret(lessons_only.id)).verify(request.body, dict(request.headers))

    delivery = await only_delivery(hooks, message_id)
    assert (delivery.endpoint_id, delivery.status, delivery.attempts) == (
        everything.id,
        "delivered",
        1,
    )
    assert delivery.last_status_code == 200


async def test_an_event_nobody_subscribed_to_is_kept_but_not_sent(
    hooks: OutboundWebhooks, consumer: Consumer
) -> None:
    await hooks.add_endpoint(consumer.url, event_types=["lesson.created"])

    message_id = await hooks.emit("payment.refunded", {"payment": 7})
    await hooks.deliver_due()

    assert consumer.received == []
    assert (await hooks.message(message_id)).payload == {"payment": 7}
    assert await hooks.deliveries(message_id=message_id) == []


# --- the retry schedule --------------------------------------------------------------------------


async def test_a_failing_delivery_follows_the_schedule_within_jitter_then_is_a_dead_letter(
    hooks: OutboundWebhooks, consumer: Consumer, clock: SimulatedClock
) -> None:
    consumer.answer(then=Answer(500))
    endpoint = await hooks.add_endpoint(consumer.url)
    secret = await hooks.secret(endpoint.id)
    message_id = await hooks.emit("lesson.created", {"lesson": 1})

    waits: list[float] = []
    await hooks.deliver_due()
    for _ in SCHEDULE:
        delivery = await only_delivery(hooks, message_id)
        assert delivery.status == "failed"
        assert delivery.next_attempt_at is not None
        assert delivery.last_attempt_at is not None
        waits.append((delivery.next_attempt_at - delivery.last_attempt_at).total_seconds())
        # A moment before it is due, nothing is tried.
        clock.advance_to(delivery.next_attempt_at - timedelta(seconds=1))
        assert (await hooks.deliver_due()).attempted == 0
        clock.advance_to(delivery.next_attempt_at)
        assert (await hooks.deliver_due()).attempted == 1

    for wait, planned in zip(waits, SCHEDULE, strict=True):
        assert planned * 0.9 <= wait <= planned * 1.1, (wait, planned)
    dead = await only_delivery(hooks, message_id)
    assert (dead.status, dead.attempts, dead.next_attempt_at) == ("dead", 8, None)
    assert [d.id for d in await hooks.dead_letters()] == [dead.id]
    attempts = await hooks.attempts(dead.id)
    assert [a.status_code for a in attempts] == [500] * 8
    assert "HTTP 500" in attempts[0].error

    # Every try carries the same webhook-id, the time of that try, and a valid signature.
    assert len(consumer.received) == 8
    assert {r.webhook_id for r in consumer.received} == {message_id}
    assert [r.timestamp for r in consumer.received] == [int(a.at.timestamp()) for a in attempts]
    assert all(signed_by(secret, r) for r in consumer.received)
    assert len({r.body for r in consumer.received}) == 1


async def test_a_retry_that_succeeds_ends_the_delivery_with_the_same_webhook_id(
    hooks: OutboundWebhooks, consumer: Consumer, clock: SimulatedClock
) -> None:
    consumer.answer(Answer(503), Answer(204))
    endpoint = await hooks.add_endpoint(consumer.url)
    message_id = await hooks.emit("invoice.paid", {"invoice": 9})

    await hooks.deliver_due()
    failing = (await hooks.endpoint(endpoint.id)).failing_since
    assert failing == clock.now
    await run_out(hooks, clock)

    first, second = consumer.received
    assert first.webhook_id == second.webhook_id == message_id
    assert second.timestamp > first.timestamp
    secret = await hooks.secret(endpoint.id)
    assert signed_by(secret, first)
    assert signed_by(secret, second)
    delivered = await only_delivery(hooks, message_id)
    assert (delivered.status, delivered.attempts, delivered.last_status_code) == (
        "delivered",
        2,
        204,
    )
    healthy = await hooks.endpoint(endpoint.id)
    assert healthy.failing_since is None
    assert healthy.last_success_at == clock.now


async def test_a_429_with_retry_after_in_seconds_waits_at_least_that_long(
    hooks: OutboundWebhooks, consumer: Consumer
) -> None:
    consumer.answer(Answer(429, {"Retry-After": "120"}))
    await hooks.add_endpoint(consumer.url)
    message_id = await hooks.emit("lesson.created", {"lesson": 2})

    await hooks.deliver_due()

    delivery = await only_delivery(hooks, message_id)
    assert delivery.status == "failed"
    assert delivery.last_status_code == 429
    assert delivery.next_attempt_at
    assert delivery.last_attempt_at
    assert (delivery.next_attempt_at - delivery.last_attempt_at).total_seconds() >= 120
    assert "asked to wait 120 s" in delivery.last_error


async def test_a_503_with_retry_after_as_a_date_waits_until_then(
    hooks: OutboundWebhooks, consumer: Consumer
) -> None:
    later = datetime.now(UTC) + timedelta(hours=3)
    consumer.answer(Answer(503, {"Retry-After": format_datetime(later, usegmt=True)}))
    await hooks.add_endpoint(consumer.url)
    message_id = await hooks.emit("lesson.created", {"lesson": 3})

    await hooks.deliver_due()

    delivery = await only_delivery(hooks, message_id)
    assert delivery.next_attempt_at is not None
    # The simulated clock started at real time, so the date is about 3 h after this try.
    assert delivery.next_attempt_at >= later - timedelta(seconds=5)


async def test_a_short_retry_after_never_shortens_the_schedule(
    hooks: OutboundWebhooks, consumer: Consumer
) -> None:
    consumer.answer(Answer(429, {"Retry-After": "1"}))
    await hooks.add_endpoint(consumer.url)
    message_id = await hooks.emit("lesson.created", {"lesson": 4})

    await hooks.deliver_due()

    delivery = await only_delivery(hooks, message_id)
    assert delivery.next_attempt_at
    assert delivery.last_attempt_at
    assert (delivery.next_attempt_at - delivery.last_attempt_at).total_seconds() >= 5 * 0.9


async def test_an_endpoint_that_hangs_is_given_up_on_and_tried_again_later(
    hooks: OutboundWebhooks, consumer: Consumer, clock: SimulatedClock
) -> None:
    consumer.answer(Answer(hang=True))
    await hooks.add_endpoint(consumer.url)
    message_id = await hooks.emit("lesson.created", {"lesson": 5})

    await hooks.deliver_due()
    delivery = await only_delivery(hooks, message_id)
    assert delivery.status == "failed"
    assert delivery.last_status_code is None
    assert "did not answer within 2 s" in delivery.last_error

    await run_out(hooks, clock)
    assert (await only_delivery(hooks, message_id)).status == "delivered"
    assert {r.webhook_id for r in consumer.received} == {message_id}


async def test_a_redirect_is_a_failure_and_is_not_followed(
    hooks: OutboundWebhooks, consumer: Consumer
) -> None:
    consumer.answer(Answer(307, {"Location": "/elsewhere"}))
    await hooks.add_endpoint(consumer.url)
    message_id = await hooks.emit("lesson.created", {"lesson": 6})

    await hooks.deliver_due()

    assert [r.path for r in consumer.received] == ["/hooks/school?tenant=music"]
    delivery = await only_delivery(hooks, message_id)
    assert delivery.status == "failed"
    assert delivery.last_status_code == 307
    assert "do not follow redirects" in delivery.last_error


# --- switching endpoints off ---------------------------------------------------------------------


async def test_a_410_disables_the_endpoint_at_once_and_cancels_what_waits_for_it(
    hooks: OutboundWebhooks, consumer: Consumer, clock: SimulatedClock
) -> None:
    consumer.answer(Answer(500), then=Answer(410))
    endpoint = await hooks.add_endpoint(consumer.url)
    waiting_id = await hooks.emit("lesson.created", {"lesson": 7})
    await hooks.deliver_due()  # 500: waits for its next try
    gone_id = await hooks.emit("lesson.created", {"lesson": 8})

    await hooks.deliver_due()  # 410

    disabled = await hooks.endpoint(endpoint.id)
    assert not disabled.enabled
    assert "410 Gone" in disabled.disabled_reason
    assert disabled.disabled_at == clock.now
    assert (await only_delivery(hooks, waiting_id)).status == "cancelled"
    assert (await only_delivery(hooks, gone_id)).status == "cancelled"
    clock.advance(timedelta(days=2))
    await hooks.emit("lesson.created", {"lesson": 9})
    assert (await hooks.deliver_due()).attempted == 0
    assert len(consumer.received) == 2
    [health] = await hooks.endpoints()
    assert health.state == "disabled"


async def test_five_days_of_failures_disable_the_endpoint_and_tell_the_administrator(
    hooks: OutboundWebhooks,
    consumer: Consumer,
    clock: SimulatedClock,
    db: Database,
    hub: tuple[EventHub, list[EngineEvent]],
) -> None:
    consumer.answer(then=Answer(500))
    endpoint = await hooks.add_endpoint(consumer.url)
    started = clock.now

    # Two events a day, every try failing, until the endpoint is switched off.
    emitted_at = clock.now - timedelta(days=1)
    for _ in range(500):
        if clock.now - emitted_at >= timedelta(hours=12):
            await hooks.emit("lesson.created", {"at": clock.now.isoformat()})
            emitted_at = clock.now
        await hooks.deliver_due()
        if not (await hooks.endpoint(endpoint.id)).enabled:
            break
        waiting = await hooks.deliveries(status=WAITING)
        due = min((d.next_attempt_at for d in waiting if d.next_attempt_at), default=None)
        clock.advance_to(min(due or clock.now, emitted_at + timedelta(hours=12)))
    else:
        raise AssertionError("the endpoint was never disabled")

    disabled = await hooks.endpoint(endpoint.id)
    assert disabled.failing_since == started
    assert disabled.disabled_at is not None
    assert timedelta(days=5) <= disabled.disabled_at - started <= timedelta(days=5, hours=11)
    assert "failed for 5 days" in disabled.disabled_reason
    assert await hooks.deliveries(status=WAITING) == []
    assert await hooks.deliveries(status="cancelled")

    alerts = await db.read(lambda s: list(s.scalars(select(AlertRow))))
    [alert] = alerts
    assert alert.kind == "webhook_endpoint_disabled"
    assert alert.connection_id is None
    assert "127.0.0.1" in alert.message
    assert "enable it again" in alert.message
    heard = [e for e in hub[1] if e.topic == "alerts"]
    assert heard
    assert heard[-1].payload["id"] == alert.id

    # Enabled again, it starts with a clean record and gets new events.
    consumer.answer(then=Answer(200))
    enabled = await hooks.enable_endpoint(endpoint.id)
    assert enabled.enabled
    assert enabled.failing_since is None
    assert not enabled.disabled_reason
    fresh = await hooks.emit("lesson.created", {"lesson": 10})
    await hooks.deliver_due()
    assert (await only_delivery(hooks, fresh)).status == "delivered"


async def test_a_disabled_endpoint_gets_nothing(
    hooks: OutboundWebhooks, consumer: Consumer, clock: SimulatedClock
) -> None:
    endpoint = await hooks.add_endpoint(consumer.url)
    await hooks.disable_endpoint(endpoint.id, "Moving to a new CRM.")

    message_id = await hooks.emit("payment.succeeded", {"payment": 1})
    clock.advance(timedelta(hours=1))
    counts = await hooks.deliver_due()

    assert counts.attempted == 0
    assert consumer.received == []
    assert await hooks.deliveries(message_id=message_id) == []
    assert (await hooks.endpoint(endpoint.id)).disabled_reason == "Moving to a new CRM."
    with pytest.raises(OutboundWebhookError, match="is disabled; enable it first"):
        await hooks.replay_range(clock.now - timedelta(days=1), clock.now, endpoint.id)


# --- replays -------------------------------------------------------------------------------------


async def test_a_dead_letter_replayed_arrives_with_its_original_webhook_id(
    hooks: OutboundWebhooks, consumer: Consumer, clock: SimulatedClock
) -> None:
    consumer.answer(then=Answer(500))
    await hooks.add_endpoint(consumer.url)
    message_id = await hooks.emit("payment.succeeded", {"payment": 11})
    await run_out(hooks, clock)
    [dead] = await hooks.dead_letters()

    consumer.answer(then=Answer(200))
    [replayed_id] = await hooks.replay([dead.id])
    await hooks.deliver_due()

    replayed = next(d for d in await hooks.deliveries() if d.id == replayed_id)
    assert (replayed.status, replayed.replay_of, replayed.message_id) == (
        "delivered",
        dead.id,
        message_id,
    )
    assert consumer.received[-1].webhook_id == message_id
    assert (await hooks.delivery(dead.id)).status == "dead"


async def test_replaying_many_sends_each_once_and_a_waiting_one_is_tried_now_not_doubled(
    hooks: OutboundWebhooks, consumer: Consumer, clock: SimulatedClock
) -> None:
    await hooks.add_endpoint(consumer.url)
    sent = [await hooks.emit("lesson.created", {"lesson": n}) for n in range(3)]
    await hooks.deliver_due()
    consumer.answer(Answer(500))
    waiting_id = await hooks.emit("lesson.created", {"lesson": 3})
    await hooks.deliver_due()
    consumer.received.clear()
    delivered = [(await only_delivery(hooks, m)).id for m in sent]
    waiting = await only_delivery(hooks, waiting_id)

    replayed = await hooks.replay([*delivered, delivered[0], waiting.id])

    assert len(replayed) == 4
    assert replayed[-1] == waiting.id
    counts = await hooks.deliver_due()  # the clock has not moved: the waiting one was brought on
    assert counts.delivered == 4
    assert sorted(r.webhook_id for r in consumer.received) == sorted([*sent, waiting_id])
    with pytest.raises(NotFound, match="no webhook delivery number 999"):
        await hooks.replay([999])


async def test_replaying_a_time_range_sends_what_each_endpoint_missed_in_it(
    hooks: OutboundWebhooks, consumer: Consumer, clock: SimulatedClock
) -> None:
    crm = await hooks.add_endpoint(consumer.url)
    before = await hooks.emit("lesson.created", {"n": "before"})
    await hooks.deliver_due()
    clock.advance(timedelta(hours=1))
    window_start = clock.now
    delivered_in_window = await hooks.emit("lesson.created", {"n": "delivered"})
    await hooks.deliver_due()
    await hooks.disable_endpoint(crm.id)
    missed = [await hooks.emit("lesson.created", {"n": f"missed {n}"}) for n in range(2)]
    clock.advance(timedelta(hours=1))
    window_end = clock.now
    clock.advance(timedelta(minutes=5))
    await hooks.enable_endpoint(crm.id)
    after = await hooks.emit("lesson.created", {"n": "after"})
    await hooks.deliver_due()
    # Another endpoint that only wants payments: nothing in the window is for it.
    await hooks.add_endpoint(consumer.url + "&other=1", event_types=["payment.succeeded"])
    consumer.received.clear()

    replayed = await hooks.replay_range(window_start, window_end)
    await hooks.deliver_due()

    assert len(replayed) == 2
    assert sorted(r.webhook_id for r in consumer.received) == sorted(missed)
    consumer.received.clear()
    everything = await hooks.replay_range(window_start, window_end, crm.id, include_delivered=True)
    await hooks.deliver_due()
    assert len(everything) == 3
    assert sorted(r.webhook_id for r in consumer.received) == sorted([delivered_in_window, *missed])
    assert before not in {r.webhook_id for r in consumer.received}
    assert after not in {r.webhook_id for r in consumer.received}


# --- the loop ------------------------------------------------------------------------------------


async def test_the_loop_sleeps_until_the_next_due_try_and_an_event_wakes_it(
    hooks: OutboundWebhooks, consumer: Consumer, clock: SimulatedClock
) -> None:
    consumer.answer(Answer(500))
    await hooks.add_endpoint(consumer.url)
    hooks.start()
    await eventually(lambda: len(clock.naps) == 1)
    assert clock.naps == [60.0]  # nothing to do: it looks again in a minute

    message_id = await hooks.emit("lesson.created", {"lesson": 12})
    await eventually(lambda: len(clock.naps) == 2)  # woken, tried (500), asleep again
    assert len(consumer.received) == 1
    assert 5 * 0.9 <= clock.naps[1] <= 5 * 1.1

    clock.advance(timedelta(seconds=clock.naps[1]))
    await eventually(lambda: len(clock.naps) == 3)
    assert len(consumer.received) == 2
    assert (await only_delivery(hooks, message_id)).status == "delivered"
    await hooks.stop()


# --- secrets -------------------------------------------------------------------------------------


async def test_after_a_rotation_both_secrets_sign_for_a_day_then_only_the_new_one(
    hooks: OutboundWebhooks,
    consumer: Consumer,
    clock: SimulatedClock,
    memory_keyring: MemoryKeyring,
) -> None:
    endpoint = await hooks.add_endpoint(consumer.url)
    old = await hooks.secret(endpoint.id)

    new = await hooks.rotate_secret(endpoint.id)
    await hooks.emit("lesson.created", {"lesson": 13})
    await hooks.deliver_due()

    assert new != old
    assert await hooks.secret(endpoint.id) == new
    during = consumer.received[-1]
    for secret in (old, new):  # a consumer on either secret accepts it
        Webhook(secret).verify(during.body, dict(during.headers))
    assert (await hooks.endpoint(endpoint.id)).secret_rotating_until == clock.now + timedelta(
        hours=24
    )

    clock.advance(timedelta(hours=24, seconds=1))
    await hooks.emit("lesson.created", {"lesson": 14})
    await hooks.deliver_due()
    after = consumer.received[-1]
    assert signed_by(new, after)
    assert not signed_by(old, after)
    assert old not in memory_keyring.entries.values()


async def test_the_signing_secret_is_never_written_to_the_database(
    hooks: OutboundWebhooks, consumer: Consumer, db: Database, memory_keyring: MemoryKeyring
) -> None:
    if db.is_postgres:
        pytest.skip("reads the bytes of the SQLite database's files; PostgreSQL has none here")
    endpoint = await hooks.add_endpoint(consumer.url)
    secrets = [await hooks.secret(endpoint.id), await hooks.rotate_secret(endpoint.id)]
    consumer.answer(Answer(500))
    await hooks.emit("payment.succeeded", {"payment": 15})
    await hooks.deliver_due()
    await hooks.close()
    await asyncio.to_thread(db.close)

    assert set(secrets) <= set(memory_keyring.entries.values())
    path = db.sqlite_path
    assert path is not None
    files = [p for p in Path(path).parent.iterdir() if p.name.startswith(path.name)]
    contents = b"".join(p.read_bytes() for p in files)
    assert b"webhook_endpoints" in contents  # the scan reads the real database
    for secret in secrets:
        key = base64.b64decode(secret.removeprefix("whsec_"))
        assert secret.encode() not in contents
        assert secret.removeprefix("whsec_").encode() not in contents
        assert key not in contents


async def test_removing_an_endpoint_forgets_its_secrets_and_deliveries(
    hooks: OutboundWebhooks, consumer: Consumer, memory_keyring: MemoryKeyring
) -> None:
    endpoint = await hooks.add_endpoint(consumer.url)
    await hooks.rotate_secret(endpoint.id)
    message_id = await hooks.emit("lesson.created", {"lesson": 16})

    await hooks.remove_endpoint(endpoint.id)

    assert memory_keyring.entries == {}
    assert await hooks.deliveries() == []
    assert (await hooks.message(message_id)).event_type == "lesson.created"
    with pytest.raises(NotFound):
        await hooks.endpoint(endpoint.id)


# --- the lists and bad input ---------------------------------------------------------------------


async def test_the_endpoint_list_says_how_each_endpoint_is_doing(
    hooks: OutboundWebhooks, consumer: Consumer, clock: SimulatedClock
) -> None:
    healthy = await hooks.add_endpoint(consumer.url)
    failing = await hooks.add_endpoint(consumer.url + "&failing=1")
    paused = await hooks.add_endpoint(consumer.url + "&paused=1")
    await hooks.disable_endpoint(paused.id)

    consumer.answer_with(lambda r: Answer(500 if "failing" in r.path else 200))
    await hooks.emit("lesson.created", {"lesson": 17})
    await hooks.deliver_due()

    by_id = {h.endpoint.id: h for h in await hooks.endpoints()}
    assert by_id[healthy.id].state == "healthy"
    assert (by_id[healthy.id].attempts_last_day, by_id[healthy.id].failures_last_day) == (1, 0)
    assert by_id[failing.id].state == "failing"
    assert by_id[failing.id].waiting == 1
    assert by_id[failing.id].last_status_code == 500
    assert by_id[paused.id].state == "disabled"
    assert [d.endpoint_id for d in await hooks.deliveries(status="failed")] == [failing.id]
    assert [d.endpoint_id for d in await hooks.deliveries(endpoint_id=healthy.id)] == [healthy.id]
    assert await hooks.deliveries(event_type="payment.succeeded") == []


async def test_bad_input_is_refused_with_a_sentence_saying_what_to_do(
    hooks: OutboundWebhooks,
) -> None:
    with pytest.raises(ValidationFailed, match="web address like https://"):
        await hooks.add_endpoint("ftp://example.org/hooks")
    with pytest.raises(ValidationFailed, match="user name and password"):
        await hooks.add_endpoint("https://admin:hunter2@example.org/hooks")
    with pytest.raises(ValidationFailed, match="not an event type"):
        await hooks.add_endpoint("https://example.org/hooks", event_types=["payments!"])
    with pytest.raises(ValidationFailed, match="whsec_"):
        await hooks.add_endpoint("https://example.org/hooks", secret="hunter2")
    with pytest.raises(OutboundWebhookError, match="cannot be sent as JSON"):
        await hooks.emit("lesson.created", {"when": object()})
    with pytest.raises(OutboundWebhookError, match="not an event type"):
        await hooks.emit("", {})
    assert await hooks.endpoints() == []


async def test_the_log_names_deliveries_but_never_the_secret_or_the_payload(
    hooks: OutboundWebhooks, consumer: Consumer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    endpoint = await hooks.add_endpoint(consumer.url)
    secret = await hooks.secret(endpoint.id)
    consumer.answer(Answer(500))

    await hooks.emit("payment.succeeded", {"card_holder": "Tendai Moyo-Unique"})
    await hooks.deliver_due()

    assert any(r.getMessage().startswith("webhook try failed") for r in caplog.records)
    logged = " ".join(f"{r.getMessage()} {r.__dict__}" for r in caplog.records)
    assert secret not in logged
    assert secret.removeprefix("whsec_") not in logged
    assert "Tendai Moyo-Unique" not in logged


async def test_old_events_are_forgotten_unless_a_delivery_of_theirs_still_waits(
    hooks: OutboundWebhooks, consumer: Consumer, clock: SimulatedClock
) -> None:
    await hooks.add_endpoint(consumer.url)
    delivered = await hooks.emit("lesson.created", {"lesson": 18})
    await hooks.deliver_due()
    consumer.answer(Answer(500))
    waiting = await hooks.emit("lesson.created", {"lesson": 19})
    await hooks.deliver_due()
    clock.advance(timedelta(seconds=1))

    assert await hooks.forget_before(clock.now) == 1

    with pytest.raises(NotFound):
        await hooks.message(delivered)
    assert [d.message_id for d in await hooks.deliveries()] == [waiting]
