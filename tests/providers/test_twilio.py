"""Twilio SMS against a simulated Twilio account over loopback (app/providers/sandbox_sms.py):
the Messages API as Twilio documents it, its error codes told apart, a lost answer never sent
again but found by listing, and status callbacks and STOP replies, signed as Twilio signs them
(checked with Twilio's own SDK), through the real receiver into the messages' statuses."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from twilio.request_validator import RequestValidator

from app.domain.messages import Channel, MessageStatus
from app.providers.http import CredentialsRefused, ProviderFailed, ResilientClient
from app.providers.messaging import (
    DELIVERY_PARSERS,
    Delivery,
    MessageRefused,
    OutgoingMessage,
    Reply,
)
from app.providers.sandbox_sms import SimulatedTwilio
from app.providers.twilio import TWILIO, Twilio, deliveries
from app.services import Services
from app.services.audiences import Audience
from app.services.receiver import Receiver
from tests.support.messaging import ACCOUNT, TOKEN, add_families, e164_of, twilio_served

PARENT = "+263771234567"


def sms(to: str = PARENT, text: str = "Lesson tomorrow at 15:00") -> OutgoingMessage:
    return OutgoingMessage(key="sb-1-1", channel=Channel.SMS, to=to, text=text)


async def build(url: str, token: str = TOKEN, **config: Any) -> Twilio:
    values = {"account_sid": ACCOUNT, "from_number": "+15005550006", "api_url": url, **config}
    checked, secrets, errors = TWILIO.check(values, {"auth_token": token})
    assert not errors, errors
    assert TWILIO.headers is not None
    client = ResilientClient(
        connection_id=0,
        name="Twilio",
        base_url=TWILIO.base_url(checked),
        policy=TWILIO.policy_for(checked),
        headers=TWILIO.headers(checked, secrets),
    )
    provider = TWILIO.factory(TWILIO, client, checked, secrets)
    assert isinstance(provider, Twilio)
    return provider


@pytest.fixture
async def twilio() -> AsyncIterator[tuple[SimulatedTwilio, Twilio]]:
    with twilio_served() as (simulated, url):
        provider = await build(url)
        yield simulated, provider
        await provider.client.aclose()


async def test_a_message_is_created_with_its_sender_text_and_callback(
    twilio: tuple[SimulatedTwilio, Twilio],
) -> None:
    simulated, provider = twilio
    sent = await provider.send(
        OutgoingMessage(
            key="k", channel=Channel.SMS, to=PARENT, text="Hello €",
            status_callback="https://hooks.example.org/hooks/1/abc",
        )
    )  # fmt: skip
    assert sent.provider_id.startswith("SM")
    assert sent.status is MessageStatus.QUEUED
    assert sent.segments == 1
    [message] = simulated.messages.values()
    assert (message.to, message.sender, message.body) == (PARENT, "+15005550006", "Hello €")
    assert message.callback == "https://hooks.example.org/hooks/1/abc"


async def test_a_messaging_service_sends_instead_of_one_number() -> None:
    with twilio_served() as (simulated, url):
        provider = await build(url, from_number="", messaging_service_sid="MG" + "1" * 32)
        sent = await provider.send(sms())
        assert simulated.messages[sent.provider_id].sender == "MG" + "1" * 32
        await provider.client.aclose()


async def test_the_price_is_estimated_until_twilio_reports_its_own() -> None:
    with twilio_served() as (_simulated, url):
        provider = await build(url, price_per_segment=0.05)
        sent = await provider.send(sms(text="x" * 200))  # two parts
        assert (sent.cost_minor, sent.currency, sent.segments) == (10, "USD", 2)
        await provider.client.aclose()


async def test_an_invalid_number_fails_that_message_with_twilios_reason(
    twilio: tuple[SimulatedTwilio, Twilio],
) -> None:
    _simulated, provider = twilio
    with pytest.raises(MessageRefused, match="not a valid phone number") as refused:
        await provider.send(sms(to="+2631"))
    assert refused.value.code == "21211"
    assert not refused.value.opted_out


async def test_a_person_who_replied_stop_to_twilio_is_an_opt_out(
    twilio: tuple[SimulatedTwilio, Twilio],
) -> None:
    simulated, provider = twilio
    simulated.opted_out.add(PARENT)
    with pytest.raises(MessageRefused, match="replied STOP") as refused:
        await provider.send(sms())
    assert refused.value.opted_out


async def test_wrong_credentials_stop_the_send() -> None:
    with twilio_served() as (_simulated, url):
        provider = await build(url, token="wrong")
        with pytest.raises(CredentialsRefused, match="Account SID and Auth Token"):
            await provider.send(sms())
        health = await provider.check_health()
        assert not health.ok
        await provider.client.aclose()


async def test_twilio_answering_too_many_requests_is_waited_out_not_failed() -> None:
    with twilio_served(rate=5) as (simulated, url):
        provider = await build(url, rate_per_second=50)  # faster than the account allows
        sent = await asyncio.gather(*(provider.send(sms(to=e164_of(n))) for n in range(7)))
        assert len({s.provider_id for s in sent}) == 7
        assert simulated.throttled > 0
        assert sum(simulated.received.values()) == 7
        await provider.client.aclose()


async def test_twilio_down_is_a_provider_failure_and_the_message_is_not_repeated(
    twilio: tuple[SimulatedTwilio, Twilio],
) -> None:
    simulated, provider = twilio
    simulated.fail_next = 5
    with pytest.raises(ProviderFailed):
        await provider.send(sms())
    assert simulated.fail_next == 4  # one request: a create is never repeated
    assert not simulated.messages


async def test_a_message_that_reached_twilio_is_found_by_listing() -> None:
    with twilio_served() as (simulated, url):
        # An account whose limit is raised: 154 messages at the default 10 a second are 15 s.
        provider = await build(url, rate_per_second=200)
        try:
            await _found_by_listing(simulated, provider)
        finally:
            await provider.client.aclose()


async def _found_by_listing(simulated: SimulatedTwilio, provider: Twilio) -> None:
    for n in range(150):  # more than a page of other messages to the same number
        await provider.send(sms(text=f"Other {n}"))
    sent = await provider.send(sms(text="The one"))
    for n in range(3):
        await provider.send(sms(text=f"Later {n}"))
    since = datetime.now(UTC) - timedelta(minutes=5)
    found = await provider.find(sms(text="The one"), since)
    assert found is not None
    assert found.provider_id == sent.provider_id
    assert await provider.find(sms(text="Never sent"), since) is None
    assert len(simulated.messages) == 154


async def test_the_health_check_reads_the_account(twilio: tuple[SimulatedTwilio, Twilio]) -> None:
    _simulated, provider = twilio
    health = await provider.check_health()
    assert health.ok, health.detail


def test_the_settings_say_what_is_wrong_with_them() -> None:
    _config, _secrets, errors = TWILIO.check({"account_sid": "12345"}, {})
    messages = {error.field: error.message for error in errors}
    assert "starts with AC" in messages["account_sid"]
    assert "required" in messages["auth_token"]


def test_callbacks_are_read_as_deliveries_and_replies() -> None:
    assert DELIVERY_PARSERS["twilio"] is deliveries
    assert DELIVERY_PARSERS["sandbox-sms"] is deliveries
    assert deliveries(
        "message.delivered", b"MessageSid=SM1&MessageStatus=delivered&To=%2B263771234567"
    ) == [Delivery("SM1", MessageStatus.DELIVERED, address="+263771234567")]
    [failed] = deliveries(
        "message.undelivered", b"MessageSid=SM2&MessageStatus=undelivered&ErrorCode=30003"
    )
    assert failed.status is MessageStatus.FAILED
    assert "switched off" in failed.error
    assert deliveries(
        "message.received", b"MessageSid=SM3&SmsStatus=received&From=%2B263771234567&Body=STOP"
    ) == [Reply("+263771234567", "STOP", "SM3")]
    assert deliveries("message.queued", b"nothing=here") == []


async def test_callbacks_are_signed_as_twilio_signs_them() -> None:
    """The simulated account's signature, checked by Twilio's own SDK."""
    posted: list[tuple[str, dict[str, str], dict[str, str]]] = []

    async def capture(scope: Any, receive: Any, send: Any) -> None:
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        headers = {k.decode(): v.decode() for k, v in scope["headers"]}
        from urllib.parse import parse_qsl

        url = f"http://{headers['host']}{scope['path']}"
        posted.append((url, dict(parse_qsl(body.decode())), headers))
        await send({"type": "http.response.start", "status": 204, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    from tests.fakes.server import served

    simulated = SimulatedTwilio(account_sid=ACCOUNT, auth_token=TOKEN)
    with served(capture) as url:
        await simulated.reply(f"{url}/hooks/1/token", PARENT, "STOP")
    [(address, params, headers)] = posted
    assert RequestValidator(TOKEN).validate(address, params, headers["x-twilio-signature"])
    assert not RequestValidator("other").validate(address, params, headers["x-twilio-signature"])


async def test_delivery_reports_and_stop_replies_reach_the_messages_through_the_receiver(
    services: Services,
) -> None:
    await services.settings.set("school.locale", "en_ZW")
    add_families(services.db, 3)
    receiver = Receiver(_ok, "127.0.0.1", 0, intake=services.intake)
    receiver.start()
    try:
        assert receiver.address is not None
        await services.settings.set("receiver.public_url", receiver.address.url)
        with twilio_served(delivery_seconds=(0.05, 0.1), undelivered_rate=0.0) as (simulated, url):
            record = await services.connections.add(
                "twilio",
                "Twilio",
                {"account_sid": ACCOUNT, "from_number": "+15005550006", "api_url": url},
                {"auth_token": TOKEN},
            )
            batch = await services.messaging.prepare(
                "Lesson reminder",
                Audience(),
                channel=Channel.SMS,
                data={"lesson": {"title": "Violin", "starts": "now", "room": ""}},
            )
            await services.messaging.send(batch.id)
            hook = f"{receiver.address.url}/hooks/{record.id}/{record.webhook_token}"
            await simulated.reply(hook, e164_of(1), "Stop")
            deadline = asyncio.get_running_loop().time() + 20
            while True:
                await services.inbox.drain()
                await services.inbox_worker.process_due(datetime.now(UTC) + timedelta(minutes=1))
                views = await services.messaging.messages(batch.id)
                if all(view.status is MessageStatus.DELIVERED for view in views):
                    break
                assert asyncio.get_running_loop().time() < deadline, [v.status for v in views]
                await asyncio.sleep(0.1)
    finally:
        await receiver.stop()
    opted = {address for _channel, address, _source, _at in await services.messaging.opt_outs()}
    assert opted == {e164_of(1)}
    again = await services.messaging.prepare(
        "Lesson reminder",
        Audience(),
        channel=Channel.SMS,
        data={"lesson": {"title": "Violin", "starts": "now", "room": ""}},
    )
    assert again.counts == {"prepared": 2, "opted_out": 1}


async def _ok() -> dict[str, Any]:
    return {"status": "ok"}
