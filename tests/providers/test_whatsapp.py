"""WhatsApp against the fake WhatsApp Cloud API over loopback (tests/fakes/whatsapp.py):
templates and text sent as the Cloud API takes them, Graph error codes told apart (a refusal of
one message, a rate limit, refused credentials, an account problem), lost answers never sent
twice, the health check, and Meta's signed webhooks — statuses, failures, opt-outs and "STOP"
replies — through the real receiver."""

from __future__ import annotations

import json
import random
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

import pytest

from app.domain.messages import Channel, MessageStatus, reply_intent
from app.providers import KINDS
from app.providers.http import (
    CredentialsRefused,
    OutcomeUnknown,
    ProviderError,
    ProviderFailed,
    RateLimited,
    ResilientClient,
)
from app.providers.messaging import (
    DELIVERY_PARSERS,
    CannotTell,
    Delivery,
    MessageChannel,
    MessageRefused,
    OutgoingMessage,
    Reply,
)
from app.providers.spec import RetryPolicy
from app.providers.whatsapp import DEFAULT_VERSION, WHATSAPP, WhatsApp, deliveries
from app.providers.whatsapp import subscription_answer as answer
from app.services import Services
from app.services.receiver import Receiver
from tests.fakes.server import Switch, served
from tests.fakes.whatsapp import FakeWhatsApp

PARENT = "+263771234567"


@pytest.fixture(scope="module")
def server() -> Iterator[tuple[Switch, str]]:
    switch = Switch()
    with served(switch) as url:
        yield switch, url


@pytest.fixture
def fake(server: tuple[Switch, str]) -> FakeWhatsApp:
    whatsapp = FakeWhatsApp()
    server[0].target = whatsapp.app
    return whatsapp


@pytest.fixture
def url(server: tuple[Switch, str]) -> str:
    return server[1]


@pytest.fixture
async def whatsapp(fake: FakeWhatsApp, url: str) -> AsyncIterator[WhatsApp]:
    provider = build(url, fake)
    yield provider
    await provider.client.aclose()


def build(url: str, fake: FakeWhatsApp, *, timeout: float = 5.0, **changes: Any) -> WhatsApp:
    """A WhatsApp connection as the connection service makes one, from checked settings."""
    values = {"phone_number_id": fake.phone_number_id, "api_url": url}
    secrets = {"access_token": fake.access_token, "app_secret": fake.app_secret}
    config, kept, errors = WHATSAPP.check(
        {**values, **{k: v for k, v in changes.items() if k != "access_token"}},
        {**secrets, **{k: v for k, v in changes.items() if k == "access_token"}},
    )
    assert not errors, errors
    policy = replace(
        WHATSAPP.policy,
        timeout=timeout,
        retry=RetryPolicy(attempts=3, base_delay=0.01, max_delay=0.04),
    )
    client = ResilientClient(
        connection_id=0,
        name=WHATSAPP.name,
        base_url=WHATSAPP.base_url(config),
        policy=policy,
        headers=WHATSAPP.headers(config, kept) if WHATSAPP.headers else None,
        secrets=list(kept.values()),
        jitter=random.random,
    )
    provider = WHATSAPP.factory(WHATSAPP, client, config, kept)
    assert isinstance(provider, WhatsApp)
    return provider


def template(to: str = PARENT, **changes: Any) -> OutgoingMessage:
    message = OutgoingMessage(
        key=f"msg_{uuid.uuid4().hex}",
        channel=Channel.WHATSAPP,
        to=to,
        template_name="lesson_reminder",
        template_language="en",
        parameters=("Tendai", "Thursday 16:00"),
    )
    return replace(message, **changes)


def text(to: str = PARENT, body: str = "See you on Thursday!") -> OutgoingMessage:
    return OutgoingMessage(
        key=f"msg_{uuid.uuid4().hex}", channel=Channel.WHATSAPP, to=to, text=body
    )


def messages_path(fake: FakeWhatsApp) -> str:
    return f"/{DEFAULT_VERSION}/{fake.phone_number_id}/messages"


# --- sending --------------------------------------------------------------------------------------


async def test_a_template_goes_with_its_language_and_parameters_and_our_key(
    whatsapp: WhatsApp, fake: FakeWhatsApp
) -> None:
    assert isinstance(whatsapp, MessageChannel)
    assert whatsapp.channels == {Channel.WHATSAPP}
    message = template()
    sent = await whatsapp.send(message)
    [accepted] = fake.accepted
    assert (sent.provider_id, sent.status) == (accepted.wamid, MessageStatus.QUEUED)
    assert sent.provider_id.startswith("wamid.")
    [request] = fake.sent("POST", messages_path(fake))
    assert request.headers["authorization"] == f"Bearer {fake.access_token}"
    assert json.loads(request.body) == {
        "messaging_product": "whatsapp",
        "recipient_type": "individual",
        "to": "263771234567",
        "biz_opaque_callback_data": message.key,
        "type": "template",
        "template": {
            "name": "lesson_reminder",
            "language": {"code": "en"},
            "components": [
                {
                    "type": "body",
                    "parameters": [
                        {"type": "text", "text": "Tendai"},
                        {"type": "text", "text": "Thursday 16:00"},
                    ],
                }
            ],
        },
    }


async def test_a_template_without_parameters_or_language_takes_the_connection_s_language(
    fake: FakeWhatsApp, url: str
) -> None:
    whatsapp = build(url, fake, template_language="en_US")
    try:
        await whatsapp.send(template(template_name="concert", template_language="", parameters=()))
    finally:
        await whatsapp.client.aclose()
    sent = json.loads(fake.sent("POST", messages_path(fake))[0].body)
    assert sent["template"] == {"name": "concert", "language": {"code": "en_US"}}


async def test_plain_text_goes_as_a_text_message(whatsapp: WhatsApp, fake: FakeWhatsApp) -> None:
    await whatsapp.send(text())
    sent = json.loads(fake.sent("POST", messages_path(fake))[0].body)
    assert (sent["type"], sent["text"]) == (
        "text",
        {"preview_url": False, "body": "See you on Thursday!"},
    )


async def test_a_message_with_neither_template_nor_text_is_refused_without_asking_meta(
    whatsapp: WhatsApp, fake: FakeWhatsApp
) -> None:
    with pytest.raises(MessageRefused, match="neither"):
        await whatsapp.send(text(body=""))
    assert fake.sent("POST", messages_path(fake)) == []


async def test_a_template_meta_does_not_know_fails_that_message_only(
    whatsapp: WhatsApp, fake: FakeWhatsApp
) -> None:
    # Meta answers 404 for it: about the message, not the connection.
    with pytest.raises(MessageRefused, match="WhatsApp Manager") as unknown:
        await whatsapp.send(template(template_name="no_such_template"))
    assert unknown.value.code == "132001"
    with pytest.raises(MessageRefused) as mismatch:
        await whatsapp.send(template(parameters=("only one",)))
    assert mismatch.value.code == "132000"
    assert (await whatsapp.send(template())).provider_id
    assert fake.message_count == 1


@pytest.mark.parametrize(
    ("code", "opted_out", "words"),
    [
        (131026, False, "could not deliver"),
        (131047, False, "24 hours"),
        (131051, False, "does not support"),
        (131009, False, "not valid"),
        (131050, True, "stop getting marketing"),
    ],
)
async def test_meta_refusing_one_message_fails_it_and_the_next_goes(
    whatsapp: WhatsApp, fake: FakeWhatsApp, code: int, opted_out: bool, words: str
) -> None:
    fake.refuse_next = [code]
    with pytest.raises(MessageRefused, match=words) as refused:
        await whatsapp.send(template())
    assert (refused.value.code, refused.value.opted_out) == (str(code), opted_out)
    assert (await whatsapp.send(template())).provider_id
    assert fake.message_count == 1


async def test_a_number_that_is_not_one_is_refused_by_meta(
    whatsapp: WhatsApp, fake: FakeWhatsApp
) -> None:
    with pytest.raises(MessageRefused) as refused:
        await whatsapp.send(template(to="+12"))
    assert refused.value.code == "131009"


async def test_meta_s_throughput_limit_is_a_rate_limit_though_it_answers_400(
    whatsapp: WhatsApp, fake: FakeWhatsApp
) -> None:
    fake.rate_limit, fake.rate_window = 1, 60.0
    await whatsapp.send(template())
    with pytest.raises(RateLimited, match="throughput") as limited:
        await whatsapp.send(template())
    assert not isinstance(limited.value, MessageRefused)
    assert limited.value.status == 400
    assert fake.message_count == 1


@pytest.mark.parametrize("code", [4, 80007, 131048, 131056])
async def test_meta_s_other_rate_limits_stop_the_send_too(
    whatsapp: WhatsApp, fake: FakeWhatsApp, code: int
) -> None:
    fake.refuse_next = [code]
    with pytest.raises(RateLimited):
        await whatsapp.send(template())
    assert fake.message_count == 0


async def test_an_expired_token_is_refused_credentials_for_sends_and_health(
    whatsapp: WhatsApp, fake: FakeWhatsApp
) -> None:
    fake.expire_token()
    with pytest.raises(CredentialsRefused, match="System User") as refused:
        await whatsapp.send(template())
    assert "Session has expired" in str(refused.value)
    health = await whatsapp.check_health()
    assert (health.ok, health.error_class) == (False, "auth")


async def test_a_token_meta_does_not_know_is_refused_credentials(
    fake: FakeWhatsApp, url: str
) -> None:
    whatsapp = build(url, fake, access_token="EAAG-not-the-token")
    try:
        with pytest.raises(CredentialsRefused):
            await whatsapp.send(template())
    finally:
        await whatsapp.client.aclose()
    assert fake.message_count == 0


async def test_a_wrong_phone_number_id_stops_the_send_and_says_where_to_find_it(
    fake: FakeWhatsApp, url: str
) -> None:
    whatsapp = build(url, fake, phone_number_id="999999")
    try:
        with pytest.raises(ProviderError, match="phone number ID 999999") as wrong:
            await whatsapp.send(template())
        health = await whatsapp.check_health()
    finally:
        await whatsapp.client.aclose()
    assert not isinstance(wrong.value, MessageRefused)
    assert not health.ok
    assert "API Setup" in health.detail


@pytest.mark.parametrize("code", [131031, 131042, 368, 133010])
async def test_an_account_problem_stops_the_send_instead_of_failing_every_message(
    whatsapp: WhatsApp, fake: FakeWhatsApp, code: int
) -> None:
    fake.refuse_next = [code]
    with pytest.raises(ProviderError, match="Meta Business Suite") as stopped:
        await whatsapp.send(template())
    assert not isinstance(stopped.value, MessageRefused | RateLimited | CredentialsRefused)


async def test_meta_down_stops_the_send_and_the_message_is_not_sent_again(
    whatsapp: WhatsApp, fake: FakeWhatsApp
) -> None:
    fake.failing = True
    with pytest.raises(ProviderFailed):
        await whatsapp.send(template())
    assert len(fake.sent("POST", messages_path(fake))) == 1


async def test_a_lost_answer_is_unknown_and_cannot_be_looked_up(
    fake: FakeWhatsApp, url: str
) -> None:
    whatsapp = build(url, fake, timeout=0.5)
    fake.hang_after_accept = 1
    message = template()
    try:
        with pytest.raises(OutcomeUnknown):
            await whatsapp.send(message)
        with pytest.raises(CannotTell):
            await whatsapp.find(message, datetime.now(UTC))
    finally:
        await whatsapp.client.aclose()
    assert len(fake.sent("POST", messages_path(fake))) == 1
    assert fake.message_count == 1


async def test_the_health_check_reads_the_number_and_its_quality(
    whatsapp: WhatsApp, fake: FakeWhatsApp
) -> None:
    health = await whatsapp.check_health()
    assert health.ok, health.detail
    assert "+1 555-0100" in health.detail
    assert "quality GREEN" in health.detail
    [request] = fake.sent("GET", f"/{DEFAULT_VERSION}/{fake.phone_number_id}")
    assert request.headers["authorization"] == f"Bearer {fake.access_token}"


def test_the_settings_say_what_is_wrong_with_them() -> None:
    config, _, errors = WHATSAPP.check({"phone_number_id": "+1 555 0100"}, {})
    assert {error.field for error in errors} == {"phone_number_id", "access_token"}
    _, _, errors = WHATSAPP.check(
        {"phone_number_id": "106540352242922", "api_version": "21"}, {"access_token": "EAAG"}
    )
    assert [error.field for error in errors] == ["api_version"]
    config, _, errors = WHATSAPP.check(
        {"phone_number_id": "106540352242922"}, {"access_token": "EAAG"}
    )
    assert not errors
    assert config["api_version"] == DEFAULT_VERSION
    assert WHATSAPP.base_url(config) == "https://graph.facebook.com"
    assert WHATSAPP.webhook is not None
    assert (WHATSAPP.webhook.verifier, WHATSAPP.webhook.secret_field) == (
        "hub-signature-256",
        "app_secret",
    )


# --- webhooks -------------------------------------------------------------------------------------


def notification(value: dict[str, Any]) -> bytes:
    return json.dumps(
        {
            "object": "whatsapp_business_account",
            "entry": [{"id": "1", "changes": [{"value": value, "field": "messages"}]}],
        }
    ).encode()


def test_statuses_say_what_became_of_each_message() -> None:
    body = notification(
        {
            "statuses": [
                {"id": "wamid.A", "status": "sent", "recipient_id": "263771234567"},
                {"id": "wamid.A", "status": "delivered", "recipient_id": "263771234567"},
                {"id": "wamid.A", "status": "read", "recipient_id": "263771234567"},
                {"id": "wamid.B", "status": "deleted", "recipient_id": "263771234567"},
                {"id": "wamid.C", "status": "something_new"},
                {"status": "delivered"},
            ]
        }
    )
    assert deliveries("messages", body) == [
        Delivery("wamid.A", MessageStatus.SENT, address=PARENT),
        Delivery("wamid.A", MessageStatus.DELIVERED, address=PARENT),
        Delivery("wamid.A", MessageStatus.DELIVERED, address=PARENT),
    ]
    assert DELIVERY_PARSERS["whatsapp"] is deliveries


def test_a_failed_status_carries_meta_s_reason_and_an_opt_out_when_it_is_one() -> None:
    body = notification(
        {
            "statuses": [
                {
                    "id": "wamid.A",
                    "status": "failed",
                    "recipient_id": "263771234567",
                    "errors": [
                        {
                            "code": 131026,
                            "title": "Message undeliverable",
                            "error_data": {"details": "Message Undeliverable."},
                        }
                    ],
                },
                {
                    "id": "wamid.B",
                    "status": "failed",
                    "recipient_id": "263771234568",
                    "errors": [{"code": 131050, "title": "Stopped marketing"}],
                },
                {"id": "wamid.C", "status": "failed", "errors": "odd"},
            ]
        }
    )
    undeliverable, stopped, odd = deliveries("messages", body)
    assert isinstance(undeliverable, Delivery)
    assert undeliverable.status is MessageStatus.FAILED
    assert "could not deliver" in undeliverable.error
    assert undeliverable.error.endswith("(Message Undeliverable.) [131026]")
    assert not undeliverable.opted_out
    assert isinstance(stopped, Delivery)
    assert (stopped.provider_id, stopped.status, stopped.opted_out, stopped.address) == (
        "wamid.B",
        MessageStatus.FAILED,
        True,
        "+263771234568",
    )
    assert "stop getting marketing" in stopped.error
    assert isinstance(odd, Delivery)
    assert (odd.status, odd.error) == (MessageStatus.FAILED, "WhatsApp reported the message failed")


def test_what_people_write_are_replies_and_stop_is_an_opt_out() -> None:
    body = notification(
        {
            "contacts": [{"wa_id": "263771234567"}],
            "messages": [
                {"from": "263771234567", "id": "wamid.X", "type": "text", "text": {"body": "STOP"}},
                {
                    "from": "263771234567",
                    "id": "wamid.Y",
                    "type": "button",
                    "button": {"text": "Stop promotions", "payload": "stop"},
                },
                {
                    "from": "263771234567",
                    "id": "wamid.Z",
                    "type": "interactive",
                    "interactive": {"type": "button_reply", "button_reply": {"title": "Yes"}},
                },
                {"from": "263771234567", "id": "wamid.P", "type": "image", "image": {}},
                {"id": "wamid.Q", "type": "text", "text": {"body": "who?"}},
            ],
        }
    )
    replies = deliveries("messages", body)
    assert replies == [
        Reply(PARENT, "STOP", "wamid.X"),
        Reply(PARENT, "Stop promotions", "wamid.Y"),
        Reply(PARENT, "Yes", "wamid.Z"),
    ]
    first = replies[0]
    assert isinstance(first, Reply)
    assert reply_intent(first.text) == "stop"


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"[]",
        b"not json",
        b'{"object": "whatsapp_business_account", "entry": "x"}',
        b'{"entry": [{"changes": [{"field": "message_template_status_update", "value": '
        b'{"statuses": [{"id": "wamid.A", "status": "delivered"}]}}]}]}',
        b'{"entry": [{"changes": [{"field": "messages", "value": {"statuses": "x"}}]}]}',
    ],
)
def test_notifications_about_nothing_we_sent_report_nothing(body: bytes) -> None:
    assert deliveries("messages", body) == []


def test_meta_s_verification_request_is_answered_with_its_challenge_only_for_our_token() -> None:
    fake = FakeWhatsApp()
    request = fake.verification_request("riverside-verify-2026")
    assert answer(request, ["riverside-verify-2026"]) == request["hub.challenge"]
    assert answer(request, ["new-token", "riverside-verify-2026"]) == request["hub.challenge"]
    assert answer(request, ["another-token"]) is None
    assert answer(request, []) is None
    assert answer(request, [""]) is None
    assert answer({**request, "hub.mode": "unsubscribe"}, ["riverside-verify-2026"]) is None
    assert answer({**request, "hub.challenge": ""}, ["riverside-verify-2026"]) is None
    assert answer(fake.verification_request(""), [""]) is None


async def test_signed_notifications_arrive_through_the_receiver_and_report_every_message(
    services: Services, fake: FakeWhatsApp, url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(KINDS, WHATSAPP.key, WHATSAPP)
    record = await services.connections.add(
        "whatsapp",
        "School WhatsApp",
        {"phone_number_id": fake.phone_number_id, "api_url": url},
        {"access_token": fake.access_token, "app_secret": fake.app_secret},
    )
    provider = await services.connections.provider(record.id)
    assert isinstance(provider, WhatsApp)
    fake.readers.add("263771234567")
    fake.not_on_whatsapp.add("263771111111")
    fake.stopped_marketing.add("263772222222")
    sent = {
        to: await provider.send(template(to)) for to in (PARENT, "+263771111111", "+263772222222")
    }
    fake.process()
    stop = fake.incoming("263773333333", "Stop")
    receiver = Receiver(_ok, "127.0.0.1", 0, intake=services.intake)
    receiver.start()
    hook = f"{receiver.address.url}/hooks/{record.id}/{record.webhook_token}"
    try:
        answers = await fake.post_notifications(hook)
        assert answers == [200] * 6  # sent, delivered, read; failed; failed; the reply
        fake.incoming("263773333333", "START")
        assert await fake.post_notifications(hook, secret="not-the-app-secret") == [401]
    finally:
        await receiver.stop()
    await services.inbox.drain()
    stored = list(reversed(await services.inbox.recent(record.id)))
    assert len(stored) == 6
    assert {event.event_type for event in stored} == {"messages"}
    assert len({event.provider_event_id for event in stored}) == 6
    reports = [r for event in stored for r in DELIVERY_PARSERS["whatsapp"]("messages", event.body)]
    by_id: dict[str, list[Delivery]] = {}
    for report in reports:
        if isinstance(report, Delivery):
            by_id.setdefault(report.provider_id, []).append(report)
    read = by_id[sent[PARENT].provider_id]
    assert [r.status for r in read] == [
        MessageStatus.SENT,
        MessageStatus.DELIVERED,
        MessageStatus.DELIVERED,
    ]
    [gone] = by_id[sent["+263771111111"].provider_id]
    assert (gone.status, gone.opted_out) == (MessageStatus.FAILED, False)
    assert "[131026]" in gone.error
    [stopped] = by_id[sent["+263772222222"].provider_id]
    assert (stopped.status, stopped.opted_out, stopped.address) == (
        MessageStatus.FAILED,
        True,
        "+263772222222",
    )
    assert [r for r in reports if isinstance(r, Reply)] == [Reply("+263773333333", "Stop", stop)]
    # Our key comes back with every status, so a message whose answer was lost can be found.
    keys = {
        status.get("biz_opaque_callback_data")
        for event in stored
        for entry in json.loads(event.body)["entry"]
        for change in entry["changes"]
        for status in change["value"].get("statuses", [])
    }
    assert keys == {message.body["biz_opaque_callback_data"] for message in fake.accepted}


async def _ok() -> dict[str, Any]:
    return {"status": "ok"}
