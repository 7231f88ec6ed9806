"""Firebase Cloud Messaging against the fake FCM and Google token endpoint over loopback
(tests/fakes/fcm.py): the service account's JWT bearer grant, one token for many sends and one
renewal when FCM refuses it, pushes as FCM's HTTP v1 API takes them, FCM's error codes told
apart (a device gone, a bad argument, another project, APNs credentials, permissions), rate
limits, lost answers never sent twice, the validate-only health check, and the key file checked
when the connection is set up."""

from __future__ import annotations

import json
import random
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qsl

import jwt
import pytest

from app.domain.messages import Channel, MessageStatus
from app.providers.fcm import FCM, JWT_BEARER, SCOPE, FirebaseMessaging, service_account
from app.providers.http import (
    CredentialsRefused,
    OutcomeUnknown,
    ProviderError,
    ProviderFailed,
    RateLimited,
    ResilientClient,
)
from app.providers.messaging import CannotTell, MessageChannel, MessageRefused, OutgoingMessage
from app.providers.spec import RetryPolicy
from tests.fakes.fcm import FakeFirebase, pem, rsa_key
from tests.fakes.scripted import Reply, ScriptedServer
from tests.fakes.server import Switch, served


@pytest.fixture(scope="module")
def server() -> Iterator[tuple[Switch, str]]:
    switch = Switch()
    with served(switch) as url:
        yield switch, url


@pytest.fixture
def fake(server: tuple[Switch, str]) -> FakeFirebase:
    switch, url = server
    firebase = FakeFirebase(base_url=url)
    switch.target = firebase.app
    return firebase


@pytest.fixture
async def fcm(fake: FakeFirebase) -> AsyncIterator[FirebaseMessaging]:
    provider = build(fake)
    yield provider
    await provider.client.aclose()


def build(
    fake: FakeFirebase,
    key_file: str | None = None,
    *,
    timeout: float = 5.0,
    attempts: int = 3,
    **config: Any,
) -> FirebaseMessaging:
    """An FCM connection as the connection service makes one. The settings are not passed
    through FCM.check here: it refuses any value over 2,000 characters, and a key file is
    longer (see test_a_real_key_file_passes_the_connection_s_settings_check)."""
    config = {"api_url": fake.base_url, **config}
    secrets = {"service_account": fake.service_account_json() if key_file is None else key_file}
    policy = replace(
        FCM.policy,
        timeout=timeout,
        retry=RetryPolicy(attempts=attempts, base_delay=0.01, max_delay=0.04),
    )
    client = ResilientClient(
        connection_id=0,
        name=FCM.name,
        base_url=FCM.base_url(config),
        policy=policy,
        secrets=list(secrets.values()),
        jitter=random.random,
    )
    provider = FCM.factory(FCM, client, config, secrets)
    assert isinstance(provider, FirebaseMessaging)
    return provider


def push(to: str, **changes: Any) -> OutgoingMessage:
    message = OutgoingMessage(
        key=f"msg_{uuid.uuid4().hex}",
        channel=Channel.PUSH,
        to=to,
        subject="Lesson moved",
        text="Tendai's piano lesson is at 17:00 today.",
        data={"lesson_id": "42", "kind": "lesson_moved"},
    )
    return replace(message, **changes)


def send_path(fake: FakeFirebase) -> str:
    return f"/v1/projects/{fake.project_id}/messages:send"


# --- the service account's token ------------------------------------------------------------------


async def test_a_push_carries_a_token_got_with_the_service_account_s_signed_jwt(
    fcm: FirebaseMessaging, fake: FakeFirebase
) -> None:
    assert isinstance(fcm, MessageChannel)
    assert fcm.channels == {Channel.PUSH}
    device = fake.device()
    sent = await fcm.send(push(device))
    [accepted] = fake.accepted
    assert (sent.provider_id, sent.status) == (accepted.name, MessageStatus.SENT)
    assert sent.provider_id.startswith(f"projects/{fake.project_id}/messages/")
    [token_request] = fake.sent("POST", "/token")
    assert token_request.headers["content-type"] == "application/x-www-form-urlencoded"
    form = dict(parse_qsl(token_request.body.decode()))
    assert form["grant_type"] == JWT_BEARER
    assertion = form["assertion"]
    assert jwt.get_unverified_header(assertion) == {
        "alg": "RS256",
        "typ": "JWT",
        "kid": fake.private_key_id,
    }
    claims = jwt.decode(
        assertion,
        rsa_key(fake.key_name).public_key(),
        algorithms=["RS256"],
        audience=fake.token_uri,
    )
    assert (claims["iss"], claims["scope"]) == (fake.client_email, SCOPE)
    assert claims["exp"] - claims["iat"] == 3600
    [request] = fake.sent("POST", send_path(fake))
    assert request.headers["authorization"].startswith("Bearer ya29.")
    assert json.loads(request.body) == {
        "message": {
            "token": device,
            "notification": {
                "title": "Lesson moved",
                "body": "Tendai's piano lesson is at 17:00 today.",
            },
            "data": {"lesson_id": "42", "kind": "lesson_moved"},
        }
    }


async def test_a_data_only_push_has_no_notification(
    fcm: FirebaseMessaging, fake: FakeFirebase
) -> None:
    await fcm.send(push(fake.device(), subject="", text=""))
    assert "notification" not in fake.accepted[0].message


async def test_one_token_serves_many_pushes_and_an_expired_one_is_renewed_once(
    fcm: FirebaseMessaging, fake: FakeFirebase
) -> None:
    device = fake.device()
    for _ in range(3):
        await fcm.send(push(device))
    assert fake.count("POST", "/token") == 1
    fake.expire_tokens()  # FCM answers 401 to the token we hold
    await fcm.send(push(device))
    assert fake.count("POST", "/token") == 2
    assert fake.message_count == 4  # the refused try did nothing; nothing went twice
    assert fake.count("POST", send_path(fake)) == 5


async def test_a_key_google_no_longer_knows_is_refused_credentials_saying_what_to_do(
    fcm: FirebaseMessaging, fake: FakeFirebase
) -> None:
    fake.account_deleted = True
    with pytest.raises(CredentialsRefused, match="Generate a new key") as refused:
        await fcm.send(push(fake.device()))
    assert "account not found" in str(refused.value)
    assert fake.count("POST", send_path(fake)) == 0
    health = await fcm.check_health()
    assert (health.ok, health.error_class) == (False, "auth")


async def test_a_key_file_with_another_private_key_is_refused(fake: FakeFirebase) -> None:
    other = fake.service_account_json(private_key=pem(rsa_key("someone else")))
    fcm = build(fake, other)
    try:
        with pytest.raises(CredentialsRefused, match="Invalid JWT Signature"):
            await fcm.send(push(fake.device()))
    finally:
        await fcm.client.aclose()


async def test_a_clock_far_off_is_named_as_the_likely_cause(
    fcm: FirebaseMessaging, fake: FakeFirebase
) -> None:
    fake.clock_skew = 2 * 3600
    with pytest.raises(CredentialsRefused, match="clock may be wrong"):
        await fcm.send(push(fake.device()))


async def test_a_token_refused_even_when_new_is_refused_credentials_after_one_renewal(
    fcm: FirebaseMessaging, fake: FakeFirebase
) -> None:
    fake.token_lifetime = -1  # every token Google gives is dead on arrival at FCM
    with pytest.raises(CredentialsRefused, match="service account"):
        await fcm.send(push(fake.device()))
    assert fake.count("POST", "/token") == 2
    assert fake.message_count == 0


async def test_a_broken_key_file_is_refused_without_calling_anyone(fake: FakeFirebase) -> None:
    fcm = build(fake, "{}")
    try:
        with pytest.raises(CredentialsRefused, match="not a service account"):
            await fcm.send(push(fake.device()))
        assert not (await fcm.check_health()).ok
    finally:
        await fcm.client.aclose()
    assert fake.seen == []


# --- FCM's answers --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("where", "code", "words"),
    [
        ("unregistered", "UNREGISTERED", "no longer registered"),
        ("other_project", "SENDER_ID_MISMATCH", "another Firebase project"),
        (None, "INVALID_ARGUMENT", "not a valid FCM registration token"),
    ],
)
async def test_a_device_fcm_will_not_reach_fails_that_push_and_the_next_goes(
    fcm: FirebaseMessaging, fake: FakeFirebase, where: str | None, code: str, words: str
) -> None:
    device = "not-a-registration-token"
    if where is not None:
        device = f"{where}-{uuid.uuid4().hex}"
        getattr(fake, where).add(device)
    with pytest.raises(MessageRefused, match=words) as refused:
        await fcm.send(push(device))
    assert refused.value.code == code
    assert (await fcm.send(push(fake.device()))).provider_id
    assert fake.message_count == 1
    assert fake.count("POST", "/token") == 1


async def test_data_fcm_refuses_fails_that_push(fcm: FirebaseMessaging, fake: FakeFirebase) -> None:
    with pytest.raises(MessageRefused, match="Invalid data payload key: from") as refused:
        await fcm.send(push(fake.device(), data={"from": "the school"}))
    assert refused.value.code == "INVALID_ARGUMENT"


async def test_broken_apns_credentials_stop_the_send_without_renewing_our_token(
    fcm: FirebaseMessaging, fake: FakeFirebase
) -> None:
    iphone = "apns-" + uuid.uuid4().hex
    fake.apns_broken.add(iphone)
    with pytest.raises(CredentialsRefused, match="APNs") as refused:
        await fcm.send(push(iphone))
    assert not isinstance(refused.value, MessageRefused)
    assert fake.count("POST", "/token") == 1
    assert fake.count("POST", send_path(fake)) == 1


async def test_a_service_account_without_permission_to_send_is_refused_credentials(
    fcm: FirebaseMessaging, fake: FakeFirebase
) -> None:
    fake.may_send = False
    with pytest.raises(CredentialsRefused, match="Cloud Messaging API Admin"):
        await fcm.send(push(fake.device()))
    health = await fcm.check_health()
    assert (health.ok, health.error_class) == (False, "auth")


async def test_the_project_id_setting_overrides_the_key_file_s(fake: FakeFirebase) -> None:
    fcm = build(fake, project_id="another-project")
    try:
        with pytest.raises(CredentialsRefused, match="another-project"):
            await fcm.send(push(fake.device()))
    finally:
        await fcm.client.aclose()
    assert fake.count("POST", "/v1/projects/another-project/messages:send") == 1


async def test_fcm_s_quota_is_a_rate_limit_and_nothing_is_sent_twice(
    fcm: FirebaseMessaging, fake: FakeFirebase
) -> None:
    fake.rate_limit, fake.rate_window = 1, 60.0
    device = fake.device()
    await fcm.send(push(device))
    with pytest.raises(RateLimited) as limited:
        await fcm.send(push(device))
    assert limited.value.status == 429
    assert fake.message_count == 1


async def test_fcm_down_stops_the_send_and_the_push_is_not_repeated(
    fcm: FirebaseMessaging, fake: FakeFirebase
) -> None:
    await fcm.check_health()  # the token is not the point
    fake.failing = True
    with pytest.raises(ProviderFailed) as failed:
        await fcm.send(push(fake.device()))
    assert not isinstance(failed.value, MessageRefused)
    assert fake.count("POST", send_path(fake)) == 2  # the health check's, and this one


async def test_a_lost_answer_is_unknown_and_cannot_be_looked_up(fake: FakeFirebase) -> None:
    fcm = build(fake, timeout=0.5)
    fake.hang_after_accept = 1
    message = push(fake.device())
    try:
        with pytest.raises(OutcomeUnknown):
            await fcm.send(message)
        with pytest.raises(CannotTell):
            await fcm.find(message, datetime.now(UTC))
    finally:
        await fcm.client.aclose()
    assert fake.count("POST", send_path(fake)) == 1
    assert fake.message_count == 1


async def test_the_health_check_validates_a_push_to_a_topic_and_delivers_nothing(
    fcm: FirebaseMessaging, fake: FakeFirebase
) -> None:
    health = await fcm.check_health()
    assert health.ok, health.detail
    [request] = fake.sent("POST", send_path(fake))
    body = json.loads(request.body)
    assert body["validate_only"] is True
    assert "topic" in body["message"]
    assert fake.message_count == 0


async def test_fcm_s_own_errors_without_a_detail_are_still_classified(
    scripted_server: ScriptedServer,
) -> None:
    fake = FakeFirebase(base_url=scripted_server.url)
    scripted_server.script(
        "POST", "/token", Reply(200, json={"access_token": "ya29.x", "expires_in": 3600})
    )
    fcm = build(fake, attempts=1)
    path = send_path(fake)
    try:
        scripted_server.script("POST", path, Reply(404, json={"error": {"status": "NOT_FOUND"}}))
        with pytest.raises(ProviderError, match="does not know the project") as unknown:
            await fcm.send(push("d"))
        assert not isinstance(unknown.value, MessageRefused | CredentialsRefused)
        scripted_server.script("POST", path, Reply(400, json={"error": "odd"}))
        with pytest.raises(ProviderError, match="HTTP 400") as odd:
            await fcm.send(push("d"))
        assert not isinstance(odd.value, MessageRefused)
        scripted_server.script("POST", path, Reply(200, body=b"not json"))
        assert (await fcm.send(push("d"))).status is MessageStatus.SENT
    finally:
        await fcm.client.aclose()


# --- the key file, when the connection is set up --------------------------------------------------


def test_a_key_file_is_read_for_what_sending_needs() -> None:
    fake = FakeFirebase(base_url="https://oauth2.googleapis.com")
    account = service_account(fake.service_account_json())
    assert (account.project_id, account.client_email, account.private_key_id) == (
        fake.project_id,
        fake.client_email,
        fake.private_key_id,
    )
    assert account.token_uri == "https://oauth2.googleapis.com/token"
    without_uri = json.loads(fake.service_account_json())
    del without_uri["token_uri"]
    assert (
        service_account(json.dumps(without_uri)).token_uri == "https://oauth2.googleapis.com/token"
    )


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("not json", "not JSON"),
        ("[1, 2]", "not a key file"),
        ('{"type": "authorized_user"}', "not a service account"),
        ('{"type": "service_account"}', "no project_id, client_email, private_key"),
    ],
)
def test_what_is_not_a_service_account_key_is_refused_with_a_sentence(
    text: str, words: str
) -> None:
    with pytest.raises(ValueError, match=words) as refused:
        service_account(text)
    assert "Generate new private key" in str(refused.value)
    check = FCM.field("service_account").check
    assert check is not None
    with pytest.raises(ValueError, match=words):
        check(text)


def test_a_key_file_with_an_unreadable_key_or_an_insecure_token_address_is_refused() -> None:
    fake = FakeFirebase(base_url="https://oauth2.googleapis.com")
    broken = fake.service_account_json(private_key="-----BEGIN PRIVATE KEY-----\nAAAA\n")
    with pytest.raises(ValueError, match="private key cannot be read"):
        service_account(broken)
    insecure = fake.service_account_json(token_uri="http://oauth.example.com/token")
    with pytest.raises(ValueError, match="secure web address"):
        service_account(insecure)
    loopback = fake.service_account_json(token_uri="http://127.0.0.1:8080/token")
    assert service_account(loopback).token_uri == "http://127.0.0.1:8080/token"


def test_the_project_id_setting_is_a_firebase_project_id() -> None:
    _, _, errors = FCM.check({"project_id": "My Project"}, {}, stored=("service_account",))
    assert [error.field for error in errors] == ["project_id"]
    assert FCM.base_url({}) == "https://fcm.googleapis.com"
    assert FCM.webhook is None


def test_a_real_key_file_passes_the_connection_s_settings_check() -> None:
    key_file = FakeFirebase(base_url="https://oauth2.googleapis.com").service_account_json()
    assert len(key_file) > 2000
    _, secrets, errors = FCM.check({}, {"service_account": key_file})
    assert not errors, errors
    assert secrets["service_account"] == key_file
