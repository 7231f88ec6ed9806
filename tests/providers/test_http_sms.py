"""The configurable HTTP SMS gateway against a fake gateway over loopback
(tests/fakes/sms_gateway.py): every way of sending the fields and of authenticating, numbers
written as the gateway wants them, the success rules and the message id, prices, the gateway's
pace and its 429s, and the failures after which an SMS must not be sent twice."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qs

import pytest

from app.domain.messages import Channel, MessageStatus
from app.providers import KINDS
from app.providers.http import (
    CredentialsRefused,
    OutcomeUnknown,
    ProviderFailed,
    RateLimited,
    ResilientClient,
    may_have_reached,
)
from app.providers.http_sms import HTTP_SMS, HttpSmsGateway, json_at, status_ranges
from app.providers.messaging import CannotTell, MessageChannel, MessageRefused, OutgoingMessage
from app.services import Services
from tests.fakes.server import Switch, served
from tests.fakes.sms_gateway import HEALTH_PATH, SEND_PATH, FakeSmsGateway

NUMBER = "+263771234567"
AFRICAS_TALKING = {
    "success_json_field": "SMSMessageData.Recipients[0].status",
    "success_json_value": "Success",
    "message_id_json": "SMSMessageData.Recipients[0].messageId",
}
BULKSMS = {"success_text": "IN_PROGRESS", "message_id_regex": r"^0\|IN_PROGRESS\|(\d+)"}


@pytest.fixture(scope="module")
def switch() -> Iterator[tuple[Switch, str]]:
    """One loopback server for the module; each test switches its own fake gateway in."""
    current = Switch()
    with served(current) as url:
        yield current, url


@pytest.fixture
def gateway(switch: tuple[Switch, str]) -> FakeSmsGateway:
    fake = FakeSmsGateway()
    switch[0].target = fake.app
    return fake


@pytest.fixture
def url(switch: tuple[Switch, str]) -> str:
    return switch[1]


Connect = Callable[..., HttpSmsGateway]


@pytest.fixture
async def connect(url: str) -> AsyncIterator[Connect]:
    """Builds gateway connections as the connection service does (spec check, the kind's
    headers, a resilient client that masks the secrets); their clients are closed after."""
    made: list[HttpSmsGateway] = []

    def build(**values: Any) -> HttpSmsGateway:
        secret = values.pop("secret", None)
        config, secrets, errors = HTTP_SMS.check(
            {"url": url + SEND_PATH, **values}, {"secret": secret} if secret else {}
        )
        assert not errors, errors
        assert HTTP_SMS.headers is not None
        client = ResilientClient(
            connection_id=0,
            name="School SMS",
            base_url=HTTP_SMS.base_url(config),
            policy=HTTP_SMS.policy_for(config),
            headers=HTTP_SMS.headers(config, secrets),
            secrets=list(secrets.values()),
        )
        provider = HTTP_SMS.factory(HTTP_SMS, client, config, secrets)
        assert isinstance(provider, HttpSmsGateway)
        made.append(provider)
        return provider

    yield build
    for provider in made:
        await provider.client.aclose()


def sms(text: str = "Piano on Tuesday at 16:00.", to: str = NUMBER) -> OutgoingMessage:
    return OutgoingMessage(
        key=f"msg-{uuid.uuid4().hex[:10]}", channel=Channel.SMS, to=to, text=text
    )


# --- sending ----------------------------------------------------------------------------------


async def test_an_africas_talking_style_send_is_taken_with_its_id_and_cost(
    gateway: FakeSmsGateway, connect: Connect
) -> None:
    gateway.auth = "api-key-header"
    provider = connect(
        auth="api-key-header",
        secret=gateway.secret,
        extra_fields="username=riverside",
        sender_id="RIVERSIDE",
        price_per_part="0.02",
        currency="USD",
        **AFRICAS_TALKING,
    )
    assert isinstance(provider, MessageChannel)

    sent = await provider.send(sms())

    [taken] = gateway.accepted
    assert sent.provider_id == taken.id
    assert sent.provider_id.startswith("ATXid_")
    assert sent.status is MessageStatus.QUEUED
    assert (sent.cost_minor, sent.currency, sent.segments) == (2, "USD", 1)
    assert (taken.to, taken.text, taken.sender) == (
        NUMBER,
        "Piano on Tuesday at 16:00.",
        "RIVERSIDE",
    )
    assert taken.fields["username"] == "riverside"
    [request] = gateway.sends()
    assert request.method == "POST"
    assert request.headers["content-type"] == "application/x-www-form-urlencoded"
    assert request.headers["apikey"] == gateway.secret


@pytest.mark.parametrize(
    ("method", "body_format", "content_type"),
    [
        ("POST", "form", "application/x-www-form-urlencoded"),
        ("POST", "json", "application/json"),
        ("POST", "query", None),
        ("GET", "form", None),  # GET always sends the fields in the address
    ],
)
async def test_each_way_of_sending_the_fields_reaches_the_gateway(
    gateway: FakeSmsGateway,
    connect: Connect,
    method: str,
    body_format: str,
    content_type: str | None,
) -> None:
    text = "Ziyabuya: lesson at 16:00 ✓ & more"
    await connect(method=method, body_format=body_format).send(sms(text))
    [request] = gateway.sends()
    assert request.method == method
    assert request.headers.get("content-type") == content_type
    if body_format == "json":
        assert json.loads(request.body) == {"to": NUMBER, "message": text}
    elif content_type is None:
        assert parse_qs(request.query) == {"to": [NUMBER], "message": [text]}
        assert request.body == b""
    else:
        assert parse_qs(request.body.decode()) == {"to": [NUMBER], "message": [text]}
    assert [(taken.to, taken.text) for taken in gateway.accepted] == [(NUMBER, text)]


async def test_the_send_address_keeps_its_own_query(
    gateway: FakeSmsGateway, connect: Connect, url: str
) -> None:
    provider = connect(url=f"{url}{SEND_PATH}?channel=bulk", body_format="json")
    await provider.send(sms())
    [request] = gateway.sends()
    assert parse_qs(request.query) == {"channel": ["bulk"]}
    assert gateway.accepted[0].fields["channel"] == "bulk"


@pytest.mark.parametrize("auth", ["none", "basic", "bearer", "api-key-header", "api-key-field"])
async def test_each_kind_of_authentication_is_accepted(
    gateway: FakeSmsGateway, connect: Connect, auth: str
) -> None:
    gateway.auth, gateway.key_name = auth, "api_key"
    provider = connect(
        auth=auth, username=gateway.username, secret=gateway.secret, key_name="api_key"
    )
    await provider.send(sms())
    assert len(gateway.accepted) == 1


@pytest.mark.parametrize("auth", ["basic", "bearer", "api-key-header", "api-key-field"])
async def test_refused_credentials_stop_the_send_and_never_echo_the_secret(
    gateway: FakeSmsGateway, connect: Connect, auth: str
) -> None:
    gateway.auth = auth
    provider = connect(auth=auth, username=gateway.username, secret="not-the-secret-42")
    with pytest.raises(CredentialsRefused, match="HTTP 401") as raised:
        await provider.send(sms())
    assert not isinstance(raised.value, MessageRefused)
    assert "not-the-secret-42" not in str(raised.value)
    assert gateway.accepted == []


@pytest.mark.parametrize(
    ("number_format", "written"),
    [("e164", "+263771234567"), ("international", "263771234567"), ("local", "0771234567")],
)
async def test_numbers_are_written_as_the_gateway_wants(
    gateway: FakeSmsGateway, connect: Connect, number_format: str, written: str
) -> None:
    await connect(number_format=number_format).send(sms())
    assert gateway.accepted[0].to == written


async def test_a_number_that_cannot_be_one_is_refused_before_calling(
    gateway: FakeSmsGateway, connect: Connect
) -> None:
    with pytest.raises(MessageRefused) as refused:
        await connect().send(sms(to="12"))
    assert refused.value.code == "address"
    assert gateway.seen == []


async def test_field_names_and_our_reference_follow_the_settings(
    gateway: FakeSmsGateway, connect: Connect
) -> None:
    gateway.to_field, gateway.text_field, gateway.reference_field = "msisdn", "body", "ref"
    gateway.sender_field = "sender"
    message = sms()
    sent = await connect(
        to_field="msisdn",
        text_field="body",
        sender_field="sender",
        sender_id="SCHOOL",
        reference_field="ref",
    ).send(message)
    [taken] = gateway.accepted
    assert (taken.to, taken.sender, taken.reference) == (NUMBER, "SCHOOL", message.key)
    # No id configured: the gateway knows the message by the reference we gave it.
    assert sent.provider_id == message.key


# --- what counts as sent ---------------------------------------------------------------------


async def test_a_bulksms_style_text_answer_is_read_by_its_words_and_a_pattern(
    gateway: FakeSmsGateway, connect: Connect
) -> None:
    gateway.style = "pipe"
    sent = await connect(**BULKSMS).send(sms())
    assert sent.provider_id == gateway.accepted[0].id
    assert sent.provider_id.isdigit()


async def test_a_json_answer_that_says_the_number_is_invalid_refuses_that_message(
    gateway: FakeSmsGateway, connect: Connect
) -> None:
    gateway.invalid_numbers.add(NUMBER)
    provider = connect(**AFRICAS_TALKING)
    with pytest.raises(MessageRefused, match="InvalidPhoneNumber") as refused:
        await provider.send(sms())
    assert "SMSMessageData.Recipients[0].status is 'InvalidPhoneNumber'" in str(refused.value)
    assert refused.value.code == "201"
    await provider.send(sms(to="+263772222222"))  # the next one goes
    assert len(gateway.accepted) == 1


async def test_a_text_answer_without_the_success_words_refuses_that_message(
    gateway: FakeSmsGateway, connect: Connect
) -> None:
    gateway.style, gateway.auth, gateway.key_name = "pipe", "api-key-field", "password"
    gateway.echo_credentials = True
    gateway.invalid_numbers.add(NUMBER)
    provider = connect(auth="api-key-field", key_name="password", secret=gateway.secret, **BULKSMS)
    with pytest.raises(MessageRefused, match=r"invalid msisdn") as refused:
        await provider.send(sms())
    assert gateway.secret not in str(refused.value)
    assert "***" in str(refused.value)


async def test_a_status_outside_the_range_refuses_with_the_gateways_words(
    gateway: FakeSmsGateway, connect: Connect
) -> None:
    gateway.to_field = "recipient"  # the gateway misses its field: 400
    with pytest.raises(MessageRefused, match=r"HTTP 400.*are required") as refused:
        await connect().send(sms())
    assert refused.value.code == "400"


async def test_only_the_listed_statuses_count(gateway: FakeSmsGateway, connect: Connect) -> None:
    with pytest.raises(MessageRefused, match="HTTP 201"):
        await connect(success_status="200").send(sms())
    await connect(success_status="200, 201-202").send(sms())


async def test_a_long_text_costs_each_of_its_parts(
    gateway: FakeSmsGateway, connect: Connect
) -> None:
    sent = await connect(price_per_part="0.0325", currency="USD").send(sms("x" * 200))
    assert (sent.segments, sent.cost_minor, sent.currency) == (2, 7, "USD")  # 6.5 cents, rounded
    unpriced = await connect().send(sms())
    assert (unpriced.cost_minor, unpriced.currency) == (None, "")


# --- pace, faults and never twice ------------------------------------------------------------


async def test_sends_keep_to_the_gateways_pace_without_a_429(
    gateway: FakeSmsGateway, connect: Connect
) -> None:
    gateway.per_second = 5
    provider = connect(rate_per_second=4)
    started = time.monotonic()
    for n in range(6):
        await provider.send(sms(to=f"+26377123450{n}"))
    assert time.monotonic() - started >= 1.1
    assert gateway.refused_for_rate == 0
    assert len(gateway.accepted) == 6


async def test_a_429_is_waited_out_and_the_sms_goes_once(
    gateway: FakeSmsGateway, connect: Connect
) -> None:
    gateway.per_second = 2
    provider = connect(rate_per_second=50)
    for n in range(3):
        await provider.send(sms(to=f"+26377123450{n}"))
    assert gateway.refused_for_rate >= 1
    assert sorted(taken.to for taken in gateway.accepted) == [f"+26377123450{n}" for n in range(3)]


async def test_a_429_asking_for_a_long_wait_stops_the_send_and_says_when(
    gateway: FakeSmsGateway, connect: Connect
) -> None:
    gateway.per_second, gateway.retry_after = 1, 120
    provider = connect(rate_per_second=50)
    await provider.send(sms())
    with pytest.raises(RateLimited) as limited:
        await provider.send(sms(to="+263772222222"))
    assert limited.value.retry_after == 120
    assert len(gateway.accepted) == 1


@pytest.mark.parametrize("status", [500, 503])
async def test_a_gateway_error_is_not_sent_again(
    gateway: FakeSmsGateway, connect: Connect, status: int
) -> None:
    gateway.fail_next = [status]
    with pytest.raises(ProviderFailed) as failed:
        await connect().send(sms())
    assert len(gateway.sends()) == 1
    # A 500 may have been acted on before the gateway failed; a 503 was refused unread.
    assert may_have_reached(failed.value) is (status == 500)


async def test_a_gateway_that_hangs_leaves_the_outcome_unknown_and_gets_no_second_request(
    gateway: FakeSmsGateway, connect: Connect
) -> None:
    gateway.hang_next = 1
    with pytest.raises(OutcomeUnknown, match="not sent again"):
        # GET, which HTTP calls safe to repeat: a send is still never repeated.
        await connect(timeout=1, method="GET").send(sms())
    assert len(gateway.sends()) == 1
    assert len(gateway.accepted) == 1


async def test_email_is_not_carried_and_the_gateway_cannot_be_searched(connect: Connect) -> None:
    provider = connect()
    email = OutgoingMessage(key="k", channel=Channel.EMAIL, to="a@example.com", text="Hi")
    with pytest.raises(MessageRefused, match="carries SMS"):
        await provider.send(email)
    with pytest.raises(CannotTell):
        await provider.find(sms(), datetime.now(UTC))


# --- health -------------------------------------------------------------------------------------


async def test_without_a_health_address_the_check_says_only_that_it_is_reachable(
    gateway: FakeSmsGateway, connect: Connect
) -> None:
    result = await connect().check_health()
    assert result.ok, result.detail
    assert "reachable" in result.detail
    assert "no check of the credentials" in result.detail
    assert [seen.method for seen in gateway.seen] == ["OPTIONS"]
    assert gateway.accepted == []


@pytest.mark.parametrize("auth", ["bearer", "api-key-field"])
async def test_a_health_address_checks_the_credentials(
    gateway: FakeSmsGateway, connect: Connect, url: str, auth: str
) -> None:
    gateway.auth = auth
    health = f"{url}{HEALTH_PATH}?account=riverside"
    good = await connect(auth=auth, secret=gateway.secret, health_url=health).check_health()
    assert good.ok, good.detail
    assert "account=riverside" in gateway.seen[-1].query
    bad = await connect(auth=auth, secret="wrong-token-1", health_url=health).check_health()
    assert (bad.ok, bad.error_class) == (False, "auth")
    assert gateway.accepted == []


async def test_a_gateway_that_is_not_there_is_down(connect: Connect) -> None:
    result = await connect(url="http://127.0.0.1:9/version1/messaging").check_health()
    assert (result.ok, result.error_class) == (False, "connect")


# --- the connection service and the settings ---------------------------------------------------


async def test_a_key_sent_in_the_address_never_reaches_the_request_log(
    services: Services, gateway: FakeSmsGateway, url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(KINDS, HTTP_SMS.key, HTTP_SMS)
    gateway.auth, gateway.key_name = "api-key-field", "token"
    record = await services.connections.add(
        "http-sms",
        "School SMS",
        {"url": url + SEND_PATH, "method": "GET", "auth": "api-key-field", "key_name": "token"},
        {"secret": gateway.secret},
    )
    provider = await services.connections.provider(record.id)
    assert isinstance(provider, HttpSmsGateway)
    await provider.send(sms())
    assert len(gateway.accepted) == 1
    await services.requests.flush()
    [logged] = await services.requests.recent(record.id)
    assert logged.operation == "send-sms"
    assert gateway.secret not in logged.url


@pytest.mark.parametrize(
    ("values", "field_name"),
    [
        ({"success_status": "2xx"}, "success_status"),
        ({"message_id_regex": "(unclosed"}, "message_id_regex"),
        ({"currency": "XYZ"}, "currency"),
        ({"price_per_part": "-1"}, "price_per_part"),
        ({"success_json_field": "a..b"}, "success_json_field"),
        ({"extra_fields": "a=1&&b"}, "extra_fields"),
        ({"auth": "oauth"}, "auth"),
        ({"key_name": "X API Key"}, "key_name"),
    ],
)
def test_settings_that_cannot_work_are_refused_with_the_field_named(
    values: dict[str, str], field_name: str
) -> None:
    _config, _secrets, errors = HTTP_SMS.check(
        {"url": "https://api.gateway.example/sms", **values}, {}
    )
    assert [error.field for error in errors] == [field_name]


def test_json_paths_and_status_ranges_read_as_written() -> None:
    answer = {"data": {"messages": [{"id": 7, "ok": True}]}}
    assert json_at(answer, "data.messages[0].id") == (True, 7)
    assert json_at(answer, "$.data.messages.0.ok") == (True, True)
    assert json_at(answer, "data.messages[1].id") == (False, None)
    assert status_ranges("200-204, 302") == [(200, 204), (302, 302)]
