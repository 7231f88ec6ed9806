"""Rotating secrets with an overlap, and secrets the headless engine reads from where the
operator named them.

- API keys: a rotated key keeps working beside its replacement until the overlap
  (`security.rotation_overlap_hours`) ends, then is refused; only hashes are kept; who may
  rotate is checked; the audit trail records it without the key.
- Outbound webhooks: during the overlap each request carries both signatures, so a receiver
  that knows only the old or only the new secret accepts it (checked with the official
  standardwebhooks library).
- Inbound webhooks: after a provider's signing secret is rotated, callbacks signed with the
  old one are accepted for the overlap, then refused.
- References: with no credential store at all, a connection whose secrets are `env:` / `file:`
  references works, and the values never reach the database.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import keyring
import pytest
from keyring.backends import fail
from standardwebhooks.webhooks import Webhook, WebhookVerificationError
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from app.domain.access import NotAllowed, Principal, Role
from app.providers.webhooks import new_standard_webhooks_secret
from app.services import Services, access
from app.services.api_keys import ApiKeys, KeyNotRotatable
from app.services.events import EventHub
from app.services.outbound_webhooks import OutboundWebhooks
from app.services.receiver import Receiver
from app.services.rotation import OVERLAP_SETTING
from app.services.secrets import SecretReferenceError, SecretStore
from app.store.integration import ProviderConnection
from tests.fakes.server import served
from tests.support.memory_keyring import MemoryKeyring

START = datetime(2026, 12, 7, 9, 0, tzinfo=UTC)


class FixedClock:
    """Time moves only when the test moves it."""

    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


def database_bytes(services: Services) -> bytes:
    path = services.db.sqlite_path
    assert path is not None
    files = [p for p in Path(path).parent.iterdir() if p.name.startswith(Path(path).name)]
    return b"".join(p.read_bytes() for p in files)


async def audit_text(services: Services, **filters: Any) -> str:
    entries = await services.audit.entries(**filters)
    return json.dumps([[e.action, e.actor, e.before, e.after] for e in entries], default=str)


# --- API keys -----------------------------------------------------------------------------------


@pytest.fixture
def clock() -> FixedClock:
    return FixedClock(START)


@pytest.fixture
def keys(services: Services, clock: FixedClock) -> ApiKeys:
    return ApiKeys(services.db, clock=clock)


async def test_a_rotated_key_works_beside_the_new_one_until_the_overlap_ends(
    services: Services, keys: ApiKeys, clock: FixedClock
) -> None:
    await services.settings.set(OVERLAP_SETTING, 6)
    old, old_value = await keys.create("Zapier")

    clock.now = START + timedelta(minutes=5)
    new, new_value = await keys.rotate(old.id)

    assert new_value != old_value
    assert new.id != old.id
    assert new.name == "Zapier"
    listed = {key.id: key for key in await keys.keys()}
    assert listed[old.id].state(clock.now) == "rotating"
    assert listed[old.id].expires_at == START + timedelta(minutes=5, hours=6)
    assert listed[old.id].replaced_by == new.id
    assert listed[new.id].state(clock.now) == "active"

    clock.now = START + timedelta(minutes=5, hours=6) - timedelta(seconds=1)
    assert await keys.check(old_value) is not None
    assert await keys.check(new_value) is not None

    clock.now = START + timedelta(minutes=5, hours=6)
    assert await keys.check(old_value) is None
    assert await keys.check(new_value) is not None
    listed = {key.id: key for key in await keys.keys()}
    assert listed[old.id].state(clock.now) == "expired"


async def test_with_no_overlap_the_old_key_is_refused_at_once(
    services: Services, keys: ApiKeys
) -> None:
    await services.settings.set(OVERLAP_SETTING, 0)
    old, old_value = await keys.create("Zapier")
    _new, new_value = await keys.rotate(old.id)
    assert await keys.check(old_value) is None
    assert await keys.check(new_value) is not None


async def test_a_key_is_rotated_once_and_never_after_it_is_revoked(keys: ApiKeys) -> None:
    first, _ = await keys.create("Zapier")
    second, _ = await keys.rotate(first.id)
    with pytest.raises(KeyNotRotatable, match="rotate that one instead"):
        await keys.rotate(first.id)
    await keys.revoke(second.id)
    with pytest.raises(KeyNotRotatable, match="is revoked"):
        await keys.rotate(second.id)


async def test_revoking_a_key_in_its_overlap_stops_it_at_once(keys: ApiKeys) -> None:
    old, old_value = await keys.create("Zapier")
    await keys.rotate(old.id)
    assert await keys.check(old_value) is not None
    await keys.revoke(old.id)
    assert await keys.check(old_value) is None


async def test_keys_are_kept_as_hashes_and_audited_without_the_key(
    services: Services, keys: ApiKeys
) -> None:
    key, value = await keys.create("Zapier")
    new, new_value = await keys.rotate(key.id)
    await keys.revoke(key.id)
    await services.db.read(lambda _s: None)

    contents = database_bytes(services)
    assert b"api_keys" in contents  # the scan reads the real database
    for secret in (value, new_value):
        assert secret.encode() not in contents
        assert secret[12:].encode() not in contents  # not even the part after the prefix

    actions = [entry.action for entry in await services.audit.entries(record_kind="api_key")]
    assert actions == ["api_key.revoked", "api_key.rotated", "api_key.created"]
    text = await audit_text(services, record_kind="api_key")
    for secret in (value, new_value):
        assert secret not in text
        assert secret[12:] not in text
    [rotated] = await services.audit.entries(action="api_key.rotated")
    assert rotated.record_id == str(key.id)
    assert rotated.after["replaced_by"] == new.id
    assert (await services.audit.verify()).ok


@pytest.mark.parametrize("role", [Role.FINANCE, Role.STAFF, Role.VIEWER])
async def test_only_those_who_may_change_connections_manage_keys(
    services: Services, keys: ApiKeys, role: Role
) -> None:
    key, value = await keys.create("Zapier")
    before = await keys.keys()
    with access.acting_as(Principal("pat", role)):
        with pytest.raises(NotAllowed, match="may not change connections"):
            await keys.create("Another")
        with pytest.raises(NotAllowed):
            await keys.rotate(key.id)
        with pytest.raises(NotAllowed):
            await keys.revoke(key.id)
        assert await keys.check(value) is not None  # using a key is not managing it
    assert [k.id for k in await keys.keys()] == [k.id for k in before]
    assert [e.action for e in await services.audit.entries(record_kind="api_key")] == [
        "api_key.created"
    ]


async def test_an_administrator_acting_is_named_in_the_trail(
    services: Services, keys: ApiKeys
) -> None:
    with access.acting_as(Principal("ada", Role.ADMINISTRATOR, user_id=1)):
        key, _ = await keys.create("Zapier")
        await keys.rotate(key.id)
    assert {e.actor for e in await services.audit.entries(record_kind="api_key")} == {"ada"}


# --- outbound webhooks --------------------------------------------------------------------------


@dataclass
class Consumer:
    received: list[tuple[dict[str, str], bytes]] = field(default_factory=list)

    async def receive(self, request: Request) -> Response:
        self.received.append((dict(request.headers), await request.body()))
        return Response(status_code=204)


@pytest.fixture
def consumer() -> Iterator[tuple[Consumer, str]]:
    fresh = Consumer()
    app = Starlette(routes=[Route("/hooks", fresh.receive, methods=["POST"])])
    with served(app) as url:
        yield fresh, url + "/hooks"


@pytest.fixture
async def outbound(services: Services, clock: FixedClock) -> AsyncIterator[OutboundWebhooks]:
    clock.now = datetime.now(UTC).replace(microsecond=0)  # the library checks timestamps
    hooks = OutboundWebhooks(services.db, EventHub(), SecretStore("rotation-tests"), clock=clock)
    yield hooks
    await hooks.close()


def signed_with(secret: str, headers: dict[str, str], body: bytes) -> bool:
    """Whether one of the request's signatures is the library's for `secret` (at the request's
    own timestamp, so a request from a moved clock can be judged)."""
    expected = Webhook(secret).sign(
        headers["webhook-id"],
        datetime.fromtimestamp(int(headers["webhook-timestamp"]), UTC),
        body.decode(),
    )
    return expected in headers["webhook-signature"].split(" ")


async def test_outbound_rotation_signs_with_both_secrets_for_the_overlap_from_the_setting(
    services: Services,
    outbound: OutboundWebhooks,
    clock: FixedClock,
    consumer: tuple[Consumer, str],
) -> None:
    receiver, url = consumer
    await services.settings.set(OVERLAP_SETTING, 2)
    endpoint = await outbound.add_endpoint(url)
    old = await outbound.secret(endpoint.id)

    new = await outbound.rotate_secret(endpoint.id)
    rotating = await outbound.endpoint(endpoint.id)
    assert rotating.secret_rotating_until == clock.now + timedelta(hours=2)
    await outbound.emit("lesson.created", {"lesson": 1})
    await outbound.deliver_due()

    headers, body = receiver.received[-1]
    assert len(headers["webhook-signature"].split(" ")) == 2
    for secret in (old, new):  # a receiver that knows only one of them accepts it
        assert Webhook(secret).verify(body, headers)["data"] == {"lesson": 1}
    with pytest.raises(WebhookVerificationError):
        Webhook(new_standard_webhooks_secret()).verify(body, headers)

    clock.now += timedelta(hours=2)
    await outbound.emit("lesson.created", {"lesson": 2})
    await outbound.deliver_due()
    headers, body = receiver.received[-1]
    assert signed_with(new, headers, body)
    assert not signed_with(old, headers, body)
    assert headers["webhook-signature"].count("v1,") == 1


async def test_outbound_rotation_with_no_overlap_signs_with_the_new_secret_only(
    services: Services, outbound: OutboundWebhooks, consumer: tuple[Consumer, str]
) -> None:
    receiver, url = consumer
    await services.settings.set(OVERLAP_SETTING, 0)
    endpoint = await outbound.add_endpoint(url)
    old = await outbound.secret(endpoint.id)
    new = await outbound.rotate_secret(endpoint.id)
    assert (await outbound.endpoint(endpoint.id)).secret_rotating_until is None
    await outbound.emit("lesson.created", {"lesson": 3})
    await outbound.deliver_due()
    headers, body = receiver.received[-1]
    assert Webhook(new).verify(body, headers)["data"] == {"lesson": 3}
    with pytest.raises(WebhookVerificationError):
        Webhook(old).verify(body, headers)


async def test_outbound_changes_are_audited_without_secrets(
    services: Services, outbound: OutboundWebhooks, consumer: tuple[Consumer, str]
) -> None:
    _receiver, url = consumer
    endpoint = await outbound.add_endpoint(url + "?token=abc123secretvalue")
    secrets = [await outbound.secret(endpoint.id), await outbound.rotate_secret(endpoint.id)]
    await outbound.update_endpoint(endpoint.id, description="School website")
    await outbound.disable_endpoint(endpoint.id, "maintenance")
    await outbound.enable_endpoint(endpoint.id)
    await outbound.remove_endpoint(endpoint.id)

    entries = await services.audit.entries(record_kind="webhook_endpoint")
    assert [entry.action for entry in reversed(entries)] == [
        "webhook_endpoint.added",
        "webhook_endpoint.secret_rotated",
        "webhook_endpoint.changed",
        "webhook_endpoint.disabled",
        "webhook_endpoint.enabled",
        "webhook_endpoint.removed",
    ]
    text = await audit_text(services, record_kind="webhook_endpoint")
    for secret in secrets:
        assert secret not in text
        assert secret.removeprefix("whsec_") not in text
    assert "abc123secretvalue" not in text  # a secret-looking query value is masked
    assert (await services.audit.verify()).ok


@pytest.mark.parametrize("role", [Role.FINANCE, Role.STAFF, Role.VIEWER])
async def test_outbound_endpoints_are_changed_only_by_those_allowed(
    services: Services, outbound: OutboundWebhooks, consumer: tuple[Consumer, str], role: Role
) -> None:
    _receiver, url = consumer
    endpoint = await outbound.add_endpoint(url)
    secret = await outbound.secret(endpoint.id)
    with access.acting_as(Principal("pat", role)):
        for refused in (
            outbound.add_endpoint(url),
            outbound.update_endpoint(endpoint.id, description="x"),
            outbound.rotate_secret(endpoint.id),
            outbound.disable_endpoint(endpoint.id),
            outbound.enable_endpoint(endpoint.id),
            outbound.remove_endpoint(endpoint.id),
            outbound.secret(endpoint.id),
            outbound.replay([1]),
            outbound.cancel([1]),
        ):
            with pytest.raises(NotAllowed):
                await refused
        message_id = await outbound.emit("payment.succeeded", {"payment": 1})  # not guarded
    assert message_id.startswith("msg_")
    assert await outbound.secret(endpoint.id) == secret
    assert (await outbound.endpoint(endpoint.id)).enabled


# --- inbound webhooks ---------------------------------------------------------------------------


@dataclass
class Inbound:
    services: Services
    client: httpx.AsyncClient
    connection_id: int
    path: str

    async def post(self, event_id: str, secret: str) -> int:
        body = json.dumps({"type": "payment.succeeded"})
        now = datetime.now(UTC)
        headers = {
            "content-type": "application/json",
            "webhook-id": event_id,
            "webhook-timestamp": str(int(now.timestamp())),
            "webhook-signature": Webhook(secret).sign(event_id, now, body),
        }
        return (await self.client.post(self.path, content=body, headers=headers)).status_code


async def _ok() -> dict[str, Any]:
    return {"status": "ok"}


@asynccontextmanager
async def receiving(services: Services, connection_id: int) -> AsyncIterator[Inbound]:
    record = await services.connections.connection(connection_id)
    receiver = Receiver(_ok, "127.0.0.1", 0, intake=services.intake)
    receiver.start()
    assert receiver.address is not None
    try:
        async with httpx.AsyncClient(base_url=receiver.address.url, timeout=10) as client:
            path = f"/hooks/{connection_id}/{record.webhook_token}"
            yield Inbound(services, client, connection_id, path)
    finally:
        await receiver.stop()


async def end_the_overlap(services: Services, connection_id: int) -> None:
    """As if the overlap had passed: its end moved to a moment ago."""

    def write(session: Any) -> None:
        row = session.get(ProviderConnection, connection_id)
        row.secret_rotation = {
            **row.secret_rotation,
            "until": (datetime.now(UTC) - timedelta(seconds=1)).isoformat(),
        }

    await services.db.write(write)
    services.intake.forget(connection_id)


async def test_inbound_rotation_accepts_the_old_secret_for_the_overlap_then_refuses_it(
    services: Services, memory_keyring: MemoryKeyring
) -> None:
    await services.settings.set(OVERLAP_SETTING, 3)
    old, new = new_standard_webhooks_secret(), new_standard_webhooks_secret()
    record = await services.connections.add(
        "sandbox-payments", "Gateway", {}, {"api_key": "sk_test", "webhook_secret": old}
    )
    async with receiving(services, record.id) as inbound:
        assert await inbound.post("msg_before", old) == 200

        started = datetime.now(UTC)
        rotated = await services.connections.rotate_webhook_secret(record.id, new)
        finished = datetime.now(UTC)
        assert rotated.current == (new,)
        assert rotated.old == (old,)
        assert rotated.old_until is not None
        assert started + timedelta(hours=3) <= rotated.old_until <= finished + timedelta(hours=3)

        assert await inbound.post("msg_new", new) == 200
        assert await inbound.post("msg_old", old) == 200  # still inside the overlap
        assert await inbound.post("msg_other", new_standard_webhooks_secret()) == 401

        await end_the_overlap(services, record.id)
        assert await inbound.post("msg_old_late", old) == 401
        assert await inbound.post("msg_new_again", new) == 200
    # The old secret is gone from the credential store once the overlap ended.
    assert old not in " ".join(memory_keyring.entries.values())
    assert new in memory_keyring.entries.values()
    text = await audit_text(services, action="connection.webhook_secret_rotated")
    assert "connection.webhook_secret_rotated" in text
    assert old not in text
    assert new not in text


async def test_inbound_rotation_with_no_overlap_refuses_the_old_secret_at_once(
    services: Services,
) -> None:
    await services.settings.set(OVERLAP_SETTING, 0)
    old, new = new_standard_webhooks_secret(), new_standard_webhooks_secret()
    record = await services.connections.add(
        "sandbox-payments", "Gateway", {}, {"api_key": "sk_test", "webhook_secret": old}
    )
    rotated = await services.connections.rotate_webhook_secret(record.id, new)
    assert rotated.old == ()
    assert rotated.old_until is None
    async with receiving(services, record.id) as inbound:
        assert await inbound.post("msg_old", old) == 401
        assert await inbound.post("msg_new", new) == 200


@pytest.mark.parametrize("role", [Role.FINANCE, Role.STAFF, Role.VIEWER])
async def test_inbound_rotation_is_refused_to_other_roles(services: Services, role: Role) -> None:
    old = new_standard_webhooks_secret()
    record = await services.connections.add(
        "sandbox-payments", "Gateway", {}, {"api_key": "sk_test", "webhook_secret": old}
    )
    with access.acting_as(Principal("pat", role)), pytest.raises(NotAllowed):
        await services.connections.rotate_webhook_secret(record.id, new_standard_webhooks_secret())
    assert (await services.connections.signing_secrets(record.id, "webhook_secret")).current == (
        old,
    )


# --- secrets by reference, with no credential store ---------------------------------------------


@pytest.fixture
def no_credential_store() -> Iterator[None]:
    previous = keyring.get_keyring()
    keyring.set_keyring(fail.Keyring())
    yield
    keyring.set_keyring(previous)


async def test_with_no_credential_store_secrets_are_read_from_the_named_variable_and_file(
    services: Services,
    no_credential_store: None,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    api_key = "sk_sandbox_from_the_environment_4f9a"
    hook_secret = new_standard_webhooks_secret()
    secret_file = tmp_path / "hook-secret"
    secret_file.write_text(hook_secret + "\n")
    monkeypatch.setenv("SWITCHBOARD_TEST_GATEWAY_KEY", api_key)
    assert not services.secrets.status().available

    record = await services.connections.add(
        "sandbox-payments",
        "Gateway",
        {"latency_ms": 1, "latency_p95_ms": 2, "error_rate": 0},
        {},
        references={
            "api_key": "env:SWITCHBOARD_TEST_GATEWAY_KEY",
            "webhook_secret": f"file:{secret_file}",
        },
    )
    assert set(record.secret_fields) == {"api_key", "webhook_secret"}
    assert record.secret_refs["api_key"] == "env:SWITCHBOARD_TEST_GATEWAY_KEY"
    assert (await services.connections.test(record.id)).ok
    async with receiving(services, record.id) as inbound:
        assert await inbound.post("msg_ref", hook_secret) == 200
        assert await inbound.post("msg_forged", new_standard_webhooks_secret()) == 401

    await services.db.read(lambda _s: None)
    contents = database_bytes(services)
    assert b"SWITCHBOARD_TEST_GATEWAY_KEY" in contents  # the reference is kept
    assert api_key.encode() not in contents
    assert hook_secret.encode() not in contents


async def test_a_missing_variable_is_named_when_the_secret_is_needed(
    services: Services, no_credential_store: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("SWITCHBOARD_TEST_UNSET_KEY", raising=False)
    record = await services.connections.add(
        "sandbox-payments",
        "Gateway",
        {},
        {},
        references={"api_key": "env:SWITCHBOARD_TEST_UNSET_KEY"},
    )
    with pytest.raises(SecretReferenceError, match=r"SWITCHBOARD_TEST_UNSET_KEY .* is not set"):
        await services.connections.test(record.id)
    await services.connections.remove(record.id)  # nothing to remove from a store it lacks
    assert await services.connections.connections() == []


@pytest.mark.parametrize(
    ("references", "message"),
    [
        ({"api_key": "vault:stripe"}, "not a reference"),
        ({"api_key": "env:"}, "not a reference"),
        ({"api_key": "env:NOT A NAME"}, "not an environment variable name"),
        ({"colour": "env:X"}, "has no secret called"),
    ],
)
async def test_bad_references_are_refused_before_anything_is_saved(
    services: Services, references: dict[str, str], message: str
) -> None:
    from app.domain.errors import ValidationFailed

    with pytest.raises(ValidationFailed) as refused:
        await services.connections.add("sandbox-payments", "Gateway", {}, {}, references=references)
    assert any(message in error.message for error in refused.value.errors)
    assert await services.connections.connections() == []


async def test_a_secret_given_both_ways_is_refused(services: Services) -> None:
    from app.domain.errors import ValidationFailed

    with pytest.raises(ValidationFailed) as refused:
        await services.connections.add(
            "sandbox-payments", "Gateway", {}, {"api_key": "k"}, references={"api_key": "env:K"}
        )
    assert [error.message for error in refused.value.errors] == [
        "Give this secret either as a value or by reference, not both."
    ]
