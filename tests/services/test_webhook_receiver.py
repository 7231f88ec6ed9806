"""The webhook receiver over real HTTP on loopback: what a provider's callback gets back, and
what is in the inbox afterwards. Senders sign with the official Standard Webhooks SDK."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from standardwebhooks.webhooks import Webhook

from app.config import Config
from app.domain.errors import SwitchboardError
from app.domain.inbox import RECEIVED
from app.engine import Engine
from app.providers.webhooks import new_standard_webhooks_secret
from app.services import Services
from app.services.connections import secret_name
from app.services.inbox import ConnectionGone, IncomingEvent
from app.services.receiver import Receiver
from app.services.webhook_intake import SourceLimiter

pytestmark = pytest.mark.both_databases  # SQLite, then PostgreSQL


def new_secret() -> str:
    return new_standard_webhooks_secret()


@dataclass
class Hooks:
    services: Services
    client: httpx.AsyncClient
    connection_id: int
    token: str
    secret: str

    @property
    def path(self) -> str:
        return f"/hooks/{self.connection_id}/{self.token}"

    async def post(
        self,
        event_id: str = "msg_1",
        payload: dict[str, Any] | None = None,
        *,
        secret: str | None = None,
        at: datetime | None = None,
        path: str | None = None,
        headers: dict[str, str] | None = None,
        body: bytes | None = None,
    ) -> httpx.Response:
        raw = body if body is not None else json.dumps(payload or {"type": "payment.succeeded"})
        text = raw.decode() if isinstance(raw, bytes) else raw
        signed = Webhook(secret or self.secret).sign(event_id, at or datetime.now(UTC), text)
        sent = {
            "content-type": "application/json",
            "webhook-id": event_id,
            "webhook-timestamp": str(int((at or datetime.now(UTC)).timestamp())),
            "webhook-signature": signed,
            **(headers or {}),
        }
        return await self.client.post(path or self.path, content=raw, headers=sent)


@pytest.fixture
async def hooks(services: Services) -> AsyncIterator[Hooks]:
    secret = new_secret()
    record = await services.connections.add(
        "sandbox-payments", "Gateway", {}, {"api_key": "sk_test", "webhook_secret": secret}
    )
    assert record.webhook_token
    receiver = Receiver(
        _ok,
        "127.0.0.1",
        0,
        intake=services.intake,
        max_body=64 * 1024,
    )
    receiver.start()
    async with httpx.AsyncClient(base_url=receiver.address.url, timeout=10) as client:
        yield Hooks(services, client, record.id, record.webhook_token, secret)
    await receiver.stop()


async def _ok() -> dict[str, Any]:
    return {"status": "ok"}


@pytest.mark.asyncio
async def test_a_signed_event_is_on_disk_when_the_sender_hears_200(hooks: Hooks) -> None:
    response = await hooks.post("msg_abc", {"type": "payment.succeeded", "amount": 1200})
    assert response.status_code == 200
    assert response.text == "accepted"
    [event] = await hooks.services.inbox.recent()
    assert event.connection_id == hooks.connection_id
    assert event.provider_event_id == "msg_abc"
    assert event.event_type == "payment.succeeded"
    assert event.status == RECEIVED
    assert json.loads(event.body) == {"type": "payment.succeeded", "amount": 1200}
    assert event.headers["webhook-id"] == "msg_abc"


@pytest.mark.asyncio
async def test_a_repeated_event_is_acknowledged_again_but_stored_once(hooks: Hooks) -> None:
    first = await hooks.post("msg_same")
    again = await hooks.post("msg_same")
    assert (first.status_code, first.text) == (200, "accepted")
    assert (again.status_code, again.text) == (200, "duplicate")
    assert await hooks.services.inbox.count() == 1


@pytest.mark.asyncio
async def test_many_events_at_once_are_each_stored_exactly_once(hooks: Hooks) -> None:
    hooks.services.intake.limiter = SourceLimiter(rate=0, burst=0)  # one sender, many calls
    ids = [f"msg_{n % 40}" for n in range(120)]  # every id three times, all at once
    answers = await asyncio.gather(*(hooks.post(event_id) for event_id in ids))
    assert {answer.status_code for answer in answers} == {200}
    assert sum(answer.text == "accepted" for answer in answers) == 40
    assert await hooks.services.inbox.count() == 40


@pytest.mark.asyncio
async def test_credentials_in_headers_are_not_kept(hooks: Hooks) -> None:
    await hooks.post("msg_h", headers={"authorization": "Bearer sk_live_x", "x-note": "kept"})
    [event] = await hooks.services.inbox.recent()
    assert event.headers["authorization"] == "[redacted]"
    assert event.headers["x-note"] == "kept"


@pytest.mark.asyncio
async def test_during_rotation_the_old_and_the_new_secret_are_both_accepted(
    hooks: Hooks,
) -> None:
    new = new_secret()
    await hooks.services.connections.update(
        hooks.connection_id, "Gateway", {}, {"webhook_secret": f"{new} {hooks.secret}"}
    )
    assert (await hooks.post("msg_old", secret=hooks.secret)).status_code == 200
    assert (await hooks.post("msg_new", secret=new)).status_code == 200
    assert (await hooks.post("msg_other", secret=new_secret())).status_code == 401


@pytest.mark.parametrize(
    ("case", "status"),
    [
        ("forged signature", 401),
        ("stale timestamp", 401),
        ("future timestamp", 401),
        ("tampered body", 401),
        ("wrong token", 404),
        ("unknown connection", 404),
        ("not a connection number", 404),
        ("wrong content type", 400),
        ("signature header garbled", 401),
        ("timestamp not a number", 400),
    ],
)
@pytest.mark.asyncio
async def test_bad_callbacks_are_refused_and_nothing_is_stored(
    hooks: Hooks, case: str, status: int
) -> None:
    now = datetime.now(UTC)
    if case == "forged signature":
        response = await hooks.post(secret=new_secret())
    elif case == "stale timestamp":
        response = await hooks.post(at=now - timedelta(seconds=330))  # past the 300 s allowed
    elif case == "future timestamp":
        response = await hooks.post(at=now + timedelta(seconds=330))
    elif case == "tampered body":
        signed = Webhook(hooks.secret).sign("msg_1", now, '{"amount": 1}')
        response = await hooks.post(body=b'{"amount": 1000}', headers={"webhook-signature": signed})
    elif case == "wrong token":
        response = await hooks.post(path=f"/hooks/{hooks.connection_id}/not-the-token")
    elif case == "unknown connection":
        response = await hooks.post(path=f"/hooks/{hooks.connection_id + 99}/{hooks.token}")
    elif case == "not a connection number":
        response = await hooks.post(path=f"/hooks/one/{hooks.token}")
    elif case == "wrong content type":
        response = await hooks.post(headers={"content-type": "text/plain"})
    elif case == "signature header garbled":
        response = await hooks.post(headers={"webhook-signature": "v1,@@@not base64@@@"})
    else:
        response = await hooks.post(headers={"webhook-timestamp": "soon"})
    assert response.status_code == status
    assert hooks.secret not in response.text
    assert await hooks.services.inbox.count() == 0
    assert sum(hooks.services.intake.refusals().values()) == 1


@pytest.mark.asyncio
async def test_a_body_over_the_limit_is_refused_by_its_declared_length(hooks: Hooks) -> None:
    response = await hooks.client.post(
        hooks.path,
        content=b"x" * (64 * 1024 + 1),
        headers={"content-type": "application/json"},
    )
    assert response.status_code == 413
    assert hooks.services.intake.refusals() == {"body too large": 1}


@pytest.mark.asyncio
async def test_a_body_without_a_length_is_cut_off_at_the_limit(hooks: Hooks) -> None:
    async def endless() -> AsyncIterator[bytes]:
        for _ in range(1000):
            yield b"x" * 1024

    response = await hooks.client.post(
        hooks.path, content=endless(), headers={"content-type": "application/json"}
    )
    assert response.status_code == 413
    assert await hooks.services.inbox.count() == 0


@pytest.mark.asyncio
async def test_a_sender_that_calls_too_fast_is_told_to_slow_down(hooks: Hooks) -> None:
    hooks.services.intake.limiter = SourceLimiter(rate=1, burst=3)
    answers = [(await hooks.post(f"msg_{n}")).status_code for n in range(5)]
    assert answers[:3] == [200, 200, 200]
    assert answers[3:] == [429, 429]
    assert hooks.services.intake.refusals() == {"too many requests": 2}


@pytest.mark.asyncio
async def test_a_connection_is_not_removed_while_events_it_sent_wait(hooks: Hooks) -> None:
    assert (await hooks.post("msg_1")).status_code == 200
    with pytest.raises(Exception, match="not processed yet"):
        await hooks.services.connections.remove(hooks.connection_id)
    assert await hooks.services.inbox.count() == 1


HEADER_NAMES = st.sampled_from(
    [
        "content-type",
        "content-encoding",
        "transfer-encoding-x",
        "webhook-id",
        "webhook-timestamp",
        "webhook-signature",
        "svix-signature",
        "stripe-signature",
        "x-hub-signature-256",
        "x-twilio-signature",
        "authorization",
        "x-anything",
    ]
)
HEADER_VALUES = st.one_of(
    # What an HTTP client can send: printable, no surrounding blanks.
    st.text(st.characters(min_codepoint=32, max_codepoint=126), max_size=120).map(str.strip),
    st.sampled_from(["application/json", "v1,", "v1,AAAA", "t=1,v1=00", "sha256=", "0", "-1"]),
)


def test_nothing_a_sender_throws_at_the_receiver_gets_a_server_error(config: Config) -> None:
    engine = Engine(config, listen=("127.0.0.1", 0), scheduler=False)
    engine.start()
    try:
        services = engine.services

        async def prepare() -> str:
            services.intake.limiter = SourceLimiter(rate=0, burst=0)
            record = await services.connections.add(
                "sandbox-payments", "Gateway", {}, {"api_key": "k", "webhook_secret": new_secret()}
            )
            return f"/hooks/{record.id}/{record.webhook_token}"

        good_path = engine.submit(prepare()).result(30)
        assert engine.address is not None
        paths = st.one_of(
            st.just(good_path),
            st.builds(
                lambda a, b: f"/hooks/{a}/{b}",
                st.text(
                    st.characters(min_codepoint=48, max_codepoint=122), min_size=1, max_size=30
                ),
                st.text(
                    st.characters(min_codepoint=48, max_codepoint=122), min_size=1, max_size=40
                ),
            ),
        )
        with httpx.Client(base_url=engine.address.url, timeout=10) as client:

            @settings(max_examples=300, deadline=None)
            @given(
                path=paths,
                headers=st.dictionaries(HEADER_NAMES, HEADER_VALUES, max_size=6),
                body=st.binary(max_size=2048),
            )
            def throw(path: str, headers: dict[str, str], body: bytes) -> None:
                response = client.post(path, content=body, headers=headers)
                assert response.status_code in (200, 400, 401, 404, 413), response.text

            throw()
        assert engine.submit(services.inbox.count()).result(10) == 0
    finally:
        engine.stop()


@pytest.mark.asyncio
async def test_ids_that_differ_only_past_two_hundred_characters_are_two_events(
    hooks: Hooks,
) -> None:
    common = "evt_" + "x" * 220
    assert (await hooks.post(common + "A")).text == "accepted"
    assert (await hooks.post(common + "B")).text == "accepted"
    assert (await hooks.post(common + "B")).text == "duplicate"
    stored = {event.provider_event_id for event in await hooks.services.inbox.recent()}
    assert len(stored) == 2
    assert all(len(event_id) <= 200 for event_id in stored)


@pytest.mark.asyncio
async def test_a_refused_request_is_not_read_at_all(hooks: Hooks) -> None:
    response = await hooks.client.post(
        f"/hooks/{hooks.connection_id}/wrong-token",
        content=b"x" * (64 * 1024 + 1),  # over the limit, but the token is checked first
        headers={"content-type": "application/json"},
    )
    assert response.status_code == 404


@pytest.mark.asyncio
async def test_a_connection_added_after_its_address_was_tried_answers_at_once(
    services: Services,
) -> None:
    receiver = Receiver(_ok, "127.0.0.1", 0, intake=services.intake)
    receiver.start()
    try:
        async with httpx.AsyncClient(base_url=receiver.address.url, timeout=10) as client:
            early = await client.post("/hooks/1/anything", content=b"{}")
            assert early.status_code == 404  # remembered as unknown for a while
            secret = new_standard_webhooks_secret()
            record = await services.connections.add(
                "sandbox-payments", "Gateway", {}, {"api_key": "k", "webhook_secret": secret}
            )
            hooks = Hooks(services, client, record.id, record.webhook_token or "", secret)
            assert (await hooks.post("msg_1")).status_code == 200
    finally:
        await receiver.stop()


@pytest.mark.asyncio
async def test_an_event_for_a_connection_removed_meanwhile_fails_alone(
    services: Services,
) -> None:
    keep = await services.connections.add("sandbox-payments", "Keep", {}, {"api_key": "k"})
    gone = await services.connections.add("sandbox-payments", "Gone", {}, {"api_key": "k"})
    await services.connections.remove(gone.id)
    results = await asyncio.gather(
        services.inbox.store(IncomingEvent(keep.id, "evt_1", "t", {}, b"{}")),
        services.inbox.store(IncomingEvent(gone.id, "evt_2", "t", {}, b"{}")),
        return_exceptions=True,
    )
    assert results[0] is True
    assert isinstance(results[1], ConnectionGone)
    assert await services.inbox.count() == 1


@pytest.mark.asyncio
async def test_a_removal_refused_at_the_last_moment_leaves_the_connection_whole(
    services: Services, monkeypatch: pytest.MonkeyPatch
) -> None:
    record = await services.connections.add(
        "sandbox-payments", "Gateway", {}, {"api_key": "sk_keep", "webhook_secret": "whsec_a"}
    )
    flush = services.requests.flush

    async def event_arrives_then_flush() -> None:  # between the first check and the delete
        await services.inbox.store(IncomingEvent(record.id, "evt_late", "t", {}, b"{}"))
        await flush()

    monkeypatch.setattr(services.requests, "flush", event_arrives_then_flush)
    with pytest.raises(SwitchboardError, match="not processed yet"):
        await services.connections.remove(record.id)
    assert await services.secrets.aget(secret_name(record.id, "api_key")) == "sk_keep"
    assert await services.secrets.aget(secret_name(record.id, "webhook_secret")) == "whsec_a"
    assert (await services.connections.connection(record.id)).name == "Gateway"


@pytest.mark.asyncio
async def test_other_methods_and_deeper_paths_are_refused_plainly(hooks: Hooks) -> None:
    got = await hooks.client.get(hooks.path)
    assert got.status_code == 405
    assert got.headers["allow"] == "POST"
    assert (await hooks.post(path=hooks.path + "/more")).status_code == 404
    assert (await hooks.post(path=f"/hooks/{hooks.connection_id}/")).status_code == 404
    assert (await hooks.client.get("/health")).json()["status"] == "ok"
