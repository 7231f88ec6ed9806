"""PayPal: the access token, the health check, and webhooks checked by asking PayPal, end to end
through the receiver, against the fake PayPal over loopback (tests/fakes/paypal.py)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from app.providers.paypal import PayPal
from app.services import Services
from app.services.receiver import Receiver
from tests.fakes.paypal import FakePayPal
from tests.fakes.server import served

VERIFY = "/v1/notifications/verify-webhook-signature"
TOKEN = "/v1/oauth2/token"


def captured(amount: str = "120.00") -> dict[str, Any]:
    return {
        "id": "WH-2WR32451HC0233532-67976317FL4543714",
        "create_time": "2026-11-23T09:41:28.000Z",
        "resource_type": "capture",
        "event_type": "PAYMENT.CAPTURE.COMPLETED",
        "summary": f"Payment completed for $ {amount} USD",
        "resource": {
            "id": "42311647XV020574X",
            "status": "COMPLETED",
            "amount": {"currency_code": "USD", "value": amount},
        },
    }


@pytest.fixture
def fake() -> Iterator[FakePayPal]:
    paypal = FakePayPal()
    with served(paypal.app) as url:
        paypal.base_url = url
        yield paypal


@dataclass
class Hooks:
    services: Services
    fake: FakePayPal
    client: httpx.AsyncClient
    connection_id: int
    path: str
    webhook_id: str

    async def deliver(
        self,
        event: dict[str, Any],
        *,
        at: datetime | None = None,
        body: bytes | None = None,
        drop: str = "",
        webhook_id: str | None = None,
    ) -> httpx.Response:
        headers, sent = self.fake.notification(webhook_id or self.webhook_id, event, at=at)
        headers = {name: value for name, value in headers.items() if name != drop}
        return await self.client.post(self.path, content=body or sent, headers=headers)


async def connect(services: Services, fake: FakePayPal, name: str = "PayPal", **config: str) -> int:
    record = await services.connections.add(
        "paypal",
        name,
        {"client_id": fake.client_id, "api_url": fake.base_url, **config},
        {"client_secret": fake.client_secret},
    )
    return record.id


@pytest.fixture
async def hooks(services: Services, fake: FakePayPal) -> AsyncIterator[Hooks]:
    webhook_id = fake.add_webhook("https://office.example/hooks")
    connection_id = await connect(services, fake, webhook_id=webhook_id)
    record = await services.connections.connection(connection_id)
    receiver = Receiver(_ok, "127.0.0.1", 0, intake=services.intake)
    receiver.start()
    async with httpx.AsyncClient(base_url=receiver.address.url, timeout=20) as client:
        yield Hooks(
            services,
            fake,
            client,
            connection_id,
            f"/hooks/{connection_id}/{record.webhook_token}",
            webhook_id,
        )
    await receiver.stop()


async def _ok() -> dict[str, Any]:
    return {"status": "ok"}


# --- the connection ---------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_the_health_check_gets_a_token_and_makes_an_authenticated_call(
    services: Services, fake: FakePayPal
) -> None:
    connection_id = await connect(services, fake)
    result = await services.connections.test(connection_id)
    assert result.ok, result.detail
    assert fake.count(TOKEN) == 1
    assert fake.count("/v1/notifications/webhooks") == 1


@pytest.mark.asyncio
async def test_a_wrong_secret_says_what_to_fix(services: Services, fake: FakePayPal) -> None:
    record = await services.connections.add(
        "paypal",
        "PayPal",
        {"client_id": fake.client_id, "api_url": fake.base_url},
        {"client_secret": "not-the-secret"},
    )
    result = await services.connections.test(record.id)
    assert not result.ok
    assert result.error_class == "auth"
    assert "client ID and secret" in result.detail


@pytest.mark.asyncio
async def test_one_token_serves_many_calls_and_a_revoked_one_is_replaced_once(
    services: Services, fake: FakePayPal
) -> None:
    connection_id = await connect(services, fake)
    for _ in range(3):
        assert (await services.connections.test(connection_id)).ok
    assert fake.count(TOKEN) == 1
    fake.expire_tokens()  # PayPal no longer takes the token we hold
    assert (await services.connections.test(connection_id)).ok
    assert fake.count(TOKEN) == 2


def test_live_and_sandbox_have_paypal_s_own_addresses() -> None:
    from app.providers.paypal import PAYPAL

    assert PAYPAL.base_url({"environment": "live"}) == "https://api-m.paypal.com"
    assert PAYPAL.base_url({"environment": "sandbox"}) == "https://api-m.sandbox.paypal.com"
    _, _, errors = PAYPAL.check({"environment": "production", "client_id": "x"}, {})
    assert {error.field for error in errors} == {"environment", "client_secret"}


# --- webhooks ---------------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_a_genuine_notification_is_checked_with_paypal_and_stored(hooks: Hooks) -> None:
    response = await hooks.deliver(captured())
    assert (response.status_code, response.text) == (200, "accepted")
    [event] = await hooks.services.inbox.recent()
    assert event.provider_event_id == "WH-2WR32451HC0233532-67976317FL4543714"
    assert event.event_type == "PAYMENT.CAPTURE.COMPLETED"
    assert json.loads(event.body) == captured()
    [asked] = [seen for seen in hooks.fake.seen if seen.path == VERIFY]
    question = json.loads(asked.body)
    assert question["webhook_id"] == hooks.webhook_id
    assert question["webhook_event"] == captured()


@pytest.mark.asyncio
async def test_the_event_is_passed_to_paypal_exactly_as_it_arrived(hooks: Hooks) -> None:
    # Spacing and escapes of its own: parsed and written again it would read differently.
    body = b'{ "id" : "WH-1", "event_type": "PAYMENT.CAPTURE.DENIED", "note": "caf\\u00e9" }'
    headers, _ = hooks.fake.notification(hooks.webhook_id, json.loads(body))
    response = await hooks.client.post(hooks.path, content=body, headers=headers)
    assert response.status_code == 200
    [asked] = [seen for seen in hooks.fake.seen if seen.path == VERIFY]
    assert body in asked.body


@pytest.mark.asyncio
async def test_a_tampered_notification_is_refused(hooks: Hooks) -> None:
    headers, body = hooks.fake.notification(hooks.webhook_id, captured("120.00"))
    tampered = body.replace(b"120.00", b"1.00")
    response = await hooks.client.post(hooks.path, content=tampered, headers=headers)
    assert (response.status_code, response.text) == (401, "signature not valid")
    assert await hooks.services.inbox.count() == 0


@pytest.mark.asyncio
async def test_a_notification_for_another_webhook_is_refused(hooks: Hooks) -> None:
    other = hooks.fake.add_webhook("https://elsewhere.example/hooks")
    response = await hooks.deliver(captured(), webhook_id=other)
    assert response.status_code == 401
    assert await hooks.services.inbox.count() == 0


@pytest.mark.asyncio
@pytest.mark.parametrize("minutes", [-10, 10])
async def test_stale_and_future_notifications_are_refused(hooks: Hooks, minutes: int) -> None:
    response = await hooks.deliver(captured(), at=datetime.now(UTC) + timedelta(minutes=minutes))
    assert response.status_code == 401
    assert await hooks.services.inbox.count() == 0


@pytest.mark.asyncio
async def test_a_redelivered_notification_is_acknowledged_and_stored_once(hooks: Hooks) -> None:
    first = await hooks.deliver(captured())
    again = await hooks.deliver(captured())  # PayPal retries with a new transmission
    assert (first.text, again.text) == ("accepted", "duplicate")
    assert await hooks.services.inbox.count() == 1


@pytest.mark.asyncio
@pytest.mark.parametrize(
    "header", ["PAYPAL-TRANSMISSION-SIG", "PAYPAL-TRANSMISSION-ID", "PAYPAL-CERT-URL"]
)
async def test_without_its_signature_headers_paypal_is_not_even_asked(
    hooks: Hooks, header: str
) -> None:
    response = await hooks.deliver(captured(), drop=header)
    assert response.status_code == 401
    assert hooks.fake.count(VERIFY) == 0


@pytest.mark.asyncio
async def test_an_unreadable_time_or_body_is_a_bad_request(hooks: Hooks) -> None:
    headers, body = hooks.fake.notification(hooks.webhook_id, captured())
    bad_time = {**headers, "PAYPAL-TRANSMISSION-TIME": "yesterday"}
    assert (await hooks.client.post(hooks.path, content=body, headers=bad_time)).status_code == 400
    not_json = await hooks.client.post(hooks.path, content=b"[1, 2", headers=headers)
    assert not_json.status_code == 400
    assert hooks.fake.count(VERIFY) == 0


@pytest.mark.asyncio
async def test_without_a_webhook_id_callbacks_are_refused(
    services: Services, fake: FakePayPal, hooks: Hooks
) -> None:
    connection_id = await connect(services, fake, "New PayPal")  # no webhook ID pasted yet
    record = await services.connections.connection(connection_id)
    headers, body = fake.notification("ANY", captured())
    response = await hooks.client.post(
        f"/hooks/{connection_id}/{record.webhook_token}", content=body, headers=headers
    )
    assert response.status_code == 401
    assert fake.count(VERIFY) == 0


@pytest.mark.asyncio
async def test_while_paypal_cannot_be_asked_the_sender_is_told_to_try_later(
    hooks: Hooks,
) -> None:
    # Nothing is stored unverified, and nothing is lost: PayPal delivers again.
    provider = await hooks.services.connections.provider(hooks.connection_id)
    assert isinstance(provider, PayPal)
    hooks.fake.failing = True
    response = await hooks.deliver(captured())
    assert response.status_code == 503
    assert await hooks.services.inbox.count() == 0
    hooks.fake.failing = False
    assert (await hooks.deliver(captured())).text == "accepted"


@pytest.mark.asyncio
async def test_refused_credentials_make_callbacks_wait_rather_than_fail(
    services: Services, fake: FakePayPal, hooks: Hooks
) -> None:
    record = await services.connections.connection(hooks.connection_id)
    await services.connections.update(
        record.id, record.name, record.config, {"client_secret": "rotated-away"}
    )
    response = await hooks.deliver(captured())
    assert response.status_code == 503
    await services.connections.update(
        record.id, record.name, record.config, {"client_secret": fake.client_secret}
    )
    assert (await hooks.deliver(captured())).status_code == 200
