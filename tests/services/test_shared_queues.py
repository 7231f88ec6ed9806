"""Several engines on one PostgreSQL database work the same queues at once: every inbox event is
handled once, every webhook delivered once, every message and every invoice of a send or a run
sent or charged once, counted on the receiving side; nothing is left pending; and an engine
starting up takes up only the work whose engine is gone, never a live engine's."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import threading
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import date, timedelta
from pathlib import Path
from typing import TypeVar

import pytest
from sqlalchemy import func, select, update
from sqlalchemy.orm import Session
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from app.config import resolve_config
from app.domain.errors import SwitchboardError
from app.domain.inbox import PROCESSED
from app.services import Services, inbox_worker
from app.services.audiences import Audience
from app.services.automations import RunStatus
from app.services.billing import FINISHED
from app.services.claims import HOST
from app.services.domain_events import PAYMENT_SUCCEEDED, record_event
from app.services.inbox import InboxEvent
from app.services.messaging import BatchState
from app.store.automations import AutomationRow, AutomationRunRow, DomainEventRow
from app.store.base import utcnow
from app.store.integration import ProviderConnection, WebhookInboxEntry
from app.store.messaging import MessageBatchRow
from app.store.outbound import WebhookDeliveryRow
from app.store.payments import BillingItemRow
from app.store.school import Guardian, Invoice
from tests.fakes.ledger_gateway import LedgerGateway
from tests.fakes.server import served
from tests.support.databases import PostgresServer, emptied
from tests.support.messaging import ACCOUNT, TOKEN, add_families, e164_of, twilio_served
from tests.support.polling import until

Open = Callable[[], Awaitable[Services]]
T = TypeVar("T")


@pytest.fixture
def pg_url(postgres_server: PostgresServer, postgres_database: str) -> str:
    return emptied(postgres_server, postgres_database)


@pytest.fixture
async def engines(pg_url: str, tmp_path: Path) -> AsyncIterator[Open]:
    """Opens the services of one more office computer on the shared database (a data folder of
    its own), each closed after the test."""
    opened: list[Services] = []

    async def open_one() -> Services:
        data = tmp_path / f"office-{len(opened) + 1}"
        services = await Services.open(resolve_config(str(data), pg_url, environ={}))
        opened.append(services)
        return services

    yield open_one
    for services in opened:
        await services.inbox_worker.stop()
        await services.close()


class Gate:
    """An ASGI app in front of another that holds the requests `held` says to hold until
    `open()`: the test knows the work is under way while they wait."""

    def __init__(self, app: ASGIApp, held: Callable[[Scope], bool]) -> None:
        self._app = app
        self._held = held
        self._open = threading.Event()
        self.waiting = 0

    def open(self) -> None:
        self._open.set()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and self._held(scope) and not self._open.is_set():
            self.waiting += 1
            await asyncio.to_thread(self._open.wait)
        await self._app(scope, receive, send)


async def eventually(check: Callable[[], Awaitable[T]], limit: float = 120.0) -> T:
    """Ask `check` every 50 ms until it answers a true value; AssertionError after `limit` s
    (a hang, not a measure)."""
    for _ in range(int(limit / 0.05)):
        if value := await check():
            return value
        await asyncio.sleep(0.05)
    raise AssertionError("the condition never came true")


def _last_pid() -> int:
    """The number of a process of this computer that has ended."""
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


# --- the inbox ----------------------------------------------------------------------------------


async def test_two_engines_handle_a_flood_of_inbox_events_each_exactly_once(
    engines: Open, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(inbox_worker, "BATCH", 40)  # many small batches: the engines interleave
    first, second = await engines(), await engines()
    handled: Counter[int] = Counter()
    by_engine: Counter[str] = Counter()
    lock = threading.Lock()

    def counting(engine: str) -> Callable[[Session, InboxEvent], None]:
        def handle(_session: Session, event: InboxEvent) -> None:
            with lock:
                handled[event.id] += 1
                by_engine[engine] += 1

        return handle

    first.inbox_worker.register("counted", "*", counting("first"))
    second.inbox_worker.register("counted", "*", counting("second"))
    events = 1_200

    def store(session: Session) -> list[int]:
        connection = ProviderConnection(kind="counted", name="Counted")
        session.add(connection)
        session.flush()
        rows = [
            WebhookInboxEntry(
                connection_id=connection.id,
                provider_event_id=f"evt_{n}",
                event_type="thing.happened",
                body=b"{}",
            )
            for n in range(events)
        ]
        session.add_all(rows)
        session.flush()
        return [row.id for row in rows]

    ids = await first.db.write(store)
    first.inbox_worker.start()
    second.inbox_worker.start()

    def processed(session: Session) -> int:
        return int(
            session.scalar(
                select(func.count())
                .select_from(WebhookInboxEntry)
                .where(WebhookInboxEntry.status == PROCESSED)
            )
            or 0
        )

    async def all_processed() -> bool:
        return await first.db.read(processed) == events

    await eventually(all_processed)
    assert sorted(handled) == sorted(ids)
    assert set(handled.values()) == {1}
    assert by_engine["first"] > 0  # both engines took part
    assert by_engine["second"] > 0


# --- outbound webhooks and the automations that forward events to them ------------------------


class Consumer:
    """A webhook consumer counting each webhook-id it was sent."""

    def __init__(self) -> None:
        self.received: Counter[str] = Counter()
        self.app = Starlette(routes=[Route("/hooks", self._receive, methods=["POST"])])

    async def _receive(self, request: Request) -> Response:
        await request.body()
        self.received[request.headers["webhook-id"]] += 1
        return Response(status_code=204)


async def test_two_engines_deliver_each_outbound_webhook_exactly_once(engines: Open) -> None:
    first, second = await engines(), await engines()
    consumer = Consumer()
    with served(consumer.app) as url:
        await first.outbound.add_endpoint(url + "/hooks")
        await second.outbound.add_endpoint(url + "/hooks?copy=2")
        messages = [
            await engine.outbound.emit("payment.succeeded", {"payment": n})
            for n in range(150)
            for engine in (first, second)
        ]
        first.outbound.start()
        second.outbound.start()

        def waiting(session: Session) -> int:
            return int(
                session.scalar(
                    select(func.count())
                    .select_from(WebhookDeliveryRow)
                    .where(WebhookDeliveryRow.status != "delivered")
                )
                or 0
            )

        async def all_delivered() -> bool:
            return not await first.db.read(waiting)

        await eventually(all_delivered)
    # Two endpoints: each message reached each one once, so twice in all, never more.
    assert consumer.received == dict.fromkeys(messages, 2)


async def test_two_engines_forward_each_domain_event_once(engines: Open) -> None:
    first, second = await engines(), await engines()
    consumer = Consumer()
    events = 120
    with served(consumer.app) as url:
        await first.outbound.add_endpoint(url + "/hooks")

        def record(session: Session) -> None:
            for n in range(events):
                record_event(session, PAYMENT_SUCCEEDED, "payment", n, {"payment": {"id": n}})

        await first.db.write(record)
        for engine in (first, second):
            engine.outbound.start()
            engine.automations.start()

        def unfinished(session: Session) -> int:
            forwarded = select(func.count()).select_from(DomainEventRow)
            left = session.scalar(forwarded.where(DomainEventRow.forwarded_at.is_(None))) or 0
            undelivered = (
                session.scalar(
                    select(func.count())
                    .select_from(WebhookDeliveryRow)
                    .where(WebhookDeliveryRow.status != "delivered")
                )
                or 0
            )
            return int(left) + int(undelivered)

        async def settled() -> bool:
            return not await first.db.read(unfinished) and len(consumer.received) >= events

        await eventually(settled)
    assert len(consumer.received) == events
    assert set(consumer.received.values()) == {1}


async def test_an_engine_starting_takes_up_only_the_automation_runs_whose_engine_is_gone(
    engines: Open,
) -> None:
    first = await engines()
    now = utcnow()

    def runs(session: Session) -> dict[str, int]:
        automation = AutomationRow(
            name="Receipt", trigger=PAYMENT_SUCCEEDED, enabled=True, conditions=[], actions=[]
        )
        session.add(automation)
        session.flush()
        holders = {
            "live here": first.automations._holder,  # the live engine's own name
            "other computer": "office-9 (process 4242, 1)",
            "gone": f"{HOST} (process {_last_pid()}, 1)",
            "nobody": None,
        }
        made: dict[str, int] = {}
        for n, (name, holder) in enumerate(holders.items()):
            event = record_event(session, PAYMENT_SUCCEEDED, "payment", n, {"payment": {}})
            assert event is not None
            session.flush()
            event.dispatched_at = event.forwarded_at = now
            run = AutomationRunRow(
                automation_id=automation.id,
                event_id=event.id,
                status=RunStatus.RUNNING,
                attempts=1,
                next_attempt_at=now + timedelta(minutes=10),
                claimed_by=holder,
                steps=[],
            )
            session.add(run)
            session.flush()
            made[name] = run.id
        return made

    made = await first.db.write(runs)
    second = await engines()
    second.automations.start()

    def statuses(session: Session) -> dict[str, str]:
        return {
            name: session.get_one(AutomationRunRow, run_id).status for name, run_id in made.items()
        }

    async def taken_up() -> dict[str, str] | None:
        # Taken up, each is run again to its end (claimed by the second engine meanwhile).
        found = await second.db.read(statuses)
        ended = found["gone"] != RunStatus.RUNNING and found["nobody"] != RunStatus.RUNNING
        return found if ended else None

    found = await eventually(taken_up, 30)
    assert found["live here"] == RunStatus.RUNNING
    assert found["other computer"] == RunStatus.RUNNING
    assert found["gone"] != RunStatus.RUNNING
    assert found["nobody"] != RunStatus.RUNNING


# --- a bulk send --------------------------------------------------------------------------------


async def test_a_send_goes_from_one_engine_while_another_neither_sends_nor_pauses_it(
    engines: Open,
) -> None:
    first = await engines()
    await first.settings.set("school.locale", "en_ZW")
    second = await engines()
    families = 60
    add_families(first.db, families)
    with twilio_served() as (twilio, _direct):
        gate = Gate(twilio.app, lambda scope: scope["method"] == "POST")
        with served(gate) as gated:
            await first.connections.add(
                "twilio",
                "Twilio",
                {"account_sid": ACCOUNT, "from_number": "+15005550006", "api_url": gated},
                {"auth_token": TOKEN},
            )
            batch = await first.messaging.prepare(
                "Lesson reminder",
                Audience(),
                data={"lesson": {"title": "Violin", "starts": "now", "room": ""}},
            )
            sending = asyncio.create_task(first.messaging.send(batch.id))
            await until(lambda: gate.waiting > 0)  # messages are with the provider

            assert await second.messaging.recover() == 0
            with pytest.raises(SwitchboardError, match="going on another computer"):
                await second.messaging.send(batch.id)
            assert (await second.messaging.batch(batch.id)).status == BatchState.SENDING

            gate.open()
            done = await asyncio.wait_for(sending, 60)
    assert done.status == BatchState.DONE, done.message
    assert twilio.received == {e164_of(n): 1 for n in range(families)}


async def test_a_send_whose_engine_is_gone_is_paused_and_resumed_elsewhere_without_doubles(
    engines: Open,
) -> None:
    first = await engines()
    await first.settings.set("school.locale", "en_ZW")
    families = 12
    add_families(first.db, families)
    with twilio_served() as (twilio, url):
        await first.connections.add(
            "twilio",
            "Twilio",
            {"account_sid": ACCOUNT, "from_number": "+15005550006", "api_url": url},
            {"auth_token": TOKEN},
        )
        batch = await first.messaging.prepare(
            "Lesson reminder",
            Audience(),
            data={"lesson": {"title": "Violin", "starts": "now", "room": ""}},
        )
        # Another computer's engine was sending it and its lease is live: left alone. A
        # process of this computer that has ended was: paused, to be resumed.
        lease = utcnow() + timedelta(minutes=2)

        def claimed_by(holder: str) -> Callable[[Session], None]:
            def write(session: Session) -> None:
                session.execute(
                    update(MessageBatchRow)
                    .where(MessageBatchRow.id == batch.id)
                    .values(status=BatchState.SENDING, sending_by=holder, lease_until=lease)
                )

            return write

        await first.db.write(claimed_by("office-9 (process 4242, 1)"))
        second = await engines()
        assert await second.messaging.recover() == 0
        assert (await second.messaging.batch(batch.id)).status == BatchState.SENDING

        await first.db.write(claimed_by(f"{HOST} (process {_last_pid()}, 1)"))
        shown = await second.messaging.batch(batch.id)
        assert shown.status == BatchState.PAUSED  # shown so before anyone recovers it
        assert await second.messaging.recover() == 1
        done = await second.messaging.send(batch.id)
    assert done.status == BatchState.DONE, done.message
    assert twilio.received == {e164_of(n): 1 for n in range(families)}


# --- a billing run ------------------------------------------------------------------------------


class CountedGateway:
    """The ledger gateway behind a gate, counting the charges asked for per idempotency key."""

    def __init__(self) -> None:
        self.gateway = LedgerGateway()
        self.asked: Counter[str] = Counter()
        self.gate = Gate(self._count, lambda scope: scope["path"] == "/v1/payment_intents")

    async def _count(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["method"] == "POST" and scope["path"] == "/v1/payment_intents":
            headers = dict(scope["headers"])
            self.asked[headers.get(b"idempotency-key", b"").decode()] += 1
        await self.gateway.app(scope, receive, send)


async def billing_school(services: Services, url: str, families: int) -> None:
    record = await services.connections.add(
        "stripe", f"Gateway {uuid.uuid4().hex[:6]}", {"api_url": url}, {"secret_key": "sk_test_1"}
    )

    def write(session: Session) -> list[int]:
        guardians = []
        for n in range(families):
            guardian = Guardian(ref=f"G-{n}", first_name="Parent", last_name=str(n))
            session.add(guardian)
            session.flush()
            guardians.append(guardian.id)
            session.add(
                Invoice(
                    number=f"INV-{n}",
                    guardian_id=guardian.id,
                    currency="USD",
                    total_minor=5_000 + n,
                    issued_on=date(2026, 11, 1),
                    due_on=date(2026, 11, 20),
                )
            )
        return guardians

    for n, guardian_id in enumerate(await services.db.write(write)):
        await services.routing.save_method(guardian_id, record.id, "card", f"pm_card_{n}")


async def test_a_billing_run_started_on_two_engines_charges_each_invoice_once(
    engines: Open,
) -> None:
    first, second = await engines(), await engines()
    families = 40
    counted = CountedGateway()
    with served(counted.gate) as url:
        await billing_school(first, url, families)
        run = await first.billing.prepare(date(2026, 11, 30))
        charged_by: Counter[str] = Counter()
        on_first = asyncio.create_task(
            first.billing.run(run.id, concurrency=2, progress=lambda _: charged_by.update(["1"]))
        )
        await until(lambda: counted.gate.waiting >= 2)  # the first engine's charges are begun
        on_second = asyncio.create_task(
            second.billing.run(run.id, concurrency=2, progress=lambda _: charged_by.update(["2"]))
        )
        await until(lambda: counted.gate.waiting >= 4)  # and the second's
        counted.gate.open()
        ended = await asyncio.wait_for(asyncio.gather(on_first, on_second), 120)

        final = await first.billing.run_of(run.id)
        items = await first.billing.items(run.id)
    assert final.status == FINISHED
    assert {item.status for item in items} == {"succeeded"}
    assert len(counted.gateway.charges()) == families
    assert len(counted.asked) == families
    assert set(counted.asked.values()) == {1}  # no invoice asked for twice
    assert charged_by["1"] > 0
    assert charged_by["2"] > 0
    assert sum(charged_by.values()) == families
    assert {result.status for result in ended} <= {FINISHED, "running"}


async def test_two_engines_preparing_at_once_make_one_run(engines: Open) -> None:
    first, second = await engines(), await engines()
    with served(LedgerGateway().app) as url:
        await billing_school(first, url, 3)
        outcomes = await asyncio.gather(
            first.billing.prepare(date(2026, 11, 30)),
            second.billing.prepare(date(2026, 11, 30)),
            return_exceptions=True,
        )
    prepared = [outcome for outcome in outcomes if not isinstance(outcome, BaseException)]
    refused = [outcome for outcome in outcomes if isinstance(outcome, BaseException)]
    assert len(prepared) == 1
    assert len(refused) == 1
    assert isinstance(refused[0], SwitchboardError)
    assert "is not finished" in str(refused[0])


async def test_an_invoice_another_engine_is_charging_is_left_to_it(engines: Open) -> None:
    first, second = await engines(), await engines()
    counted = CountedGateway()
    counted.gate.open()
    with served(counted.gate) as url:
        await billing_school(first, url, 3)
        run = await first.billing.prepare(date(2026, 11, 30))

        def charging_elsewhere(session: Session) -> None:
            row = session.scalars(
                select(BillingItemRow).where(BillingItemRow.run_id == run.id).limit(1)
            ).one()
            row.status, row.charging_by = "charging", "office-9 (process 4242, 1)"
            row.lease_until = utcnow() + timedelta(minutes=10)

        await first.db.write(charging_elsewhere)
        ran = await second.billing.run(run.id)
    # Its engine finishes the run when it has charged that one.
    assert ran.status == "running"
    assert ran.counts == {"succeeded": 2, "charging": 1}
    assert len(counted.asked) == 2
