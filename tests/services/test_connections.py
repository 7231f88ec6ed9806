"""Connecting providers: settings checked against the kind's spec, secrets kept only in the
credential store, breakers that remember they were open across a restart."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from typing import Any

import keyring
import pytest
from keyring.backends import fail
from sqlalchemy import select, text

from app.domain.errors import SwitchboardError, ValidationFailed
from app.providers import KINDS
from app.providers.breaker import BreakerPolicy, BreakerState
from app.providers.http import ProviderFailed, ProviderPaused, ProviderUnavailable
from app.providers.spec import (
    ProviderSpec,
)
from app.services import Services
from app.store.integration import CircuitStateRow, ProviderConnection, RequestLogEntry
from tests.fakes.scripted import Reply, ScriptedServer
from tests.support.memory_keyring import MemoryKeyring
from tests.support.providers import SCRIPTED

pytestmark = pytest.mark.both_databases  # SQLite, then PostgreSQL

FAST_SANDBOX = {"latency_ms": "1", "latency_p95_ms": "2", "error_rate": "0"}


async def add_sandbox(services: Services, name: str = "Sandbox Pay", **values: str) -> Any:
    return await services.connections.add(
        "sandbox-payments", name, {**FAST_SANDBOX, **values}, {"api_key": "sk_sandbox_123456"}
    )


async def test_settings_go_to_the_database_and_the_secret_to_the_credential_store(
    services: Services, memory_keyring: MemoryKeyring
) -> None:
    record = await add_sandbox(services)
    assert record.secret_fields == ("api_key",)
    assert record.config["latency_ms"] == 1.0
    assert "api_key" not in record.config
    assert memory_keyring.entries[
        (services.secrets.service, f"connection/{record.id}/api_key")
    ] == ("sk_sandbox_123456")

    def raw(session: Any) -> str:
        return str(
            session.execute(text("SELECT config, secret_names FROM provider_connections")).all()
        )

    stored = await services.db.read(raw)
    assert "sk_sandbox_123456" not in stored
    assert record.webhook_token is not None
    assert len(record.webhook_token) >= 24


async def test_bad_settings_are_all_reported_and_nothing_is_saved(services: Services) -> None:
    with pytest.raises(ValidationFailed) as refused:
        await services.connections.add(
            "sandbox-payments",
            " ",
            {"error_rate": "2", "outages": "sometimes", "colour": "blue"},
            {},
        )
    fields = {error.field: error.message for error in refused.value.errors}
    assert set(fields) == {"name", "error_rate", "outages", "colour", "api_key"}
    assert "at most 1" in fields["error_rate"]
    assert "every 30 min for 2 min" in fields["outages"]
    assert await services.connections.connections() == []


async def test_two_connections_cannot_share_a_name(services: Services) -> None:
    await add_sandbox(services, "Sandbox Pay")
    with pytest.raises(ValidationFailed, match="already a connection called"):
        await add_sandbox(services, "sandbox pay")


async def test_without_a_credential_store_a_connection_with_secrets_is_refused(
    services: Services,
) -> None:
    keyring.set_keyring(fail.Keyring())
    with pytest.raises(SwitchboardError, match="No credential store"):
        await add_sandbox(services)
    assert await services.connections.connections() == []


async def test_if_the_credential_store_fails_while_adding_nothing_is_left_behind(
    services: Services, memory_keyring: MemoryKeyring, monkeypatch: pytest.MonkeyPatch
) -> None:
    def refuse(*_args: Any) -> None:
        raise keyring.errors.KeyringLocked("locked")

    monkeypatch.setattr(memory_keyring, "set_password", refuse)
    with pytest.raises(SwitchboardError, match="locked"):
        await add_sandbox(services)
    assert await services.connections.connections() == []


async def test_testing_a_connection_calls_the_provider_and_logs_the_request(
    services: Services,
) -> None:
    record = await add_sandbox(services)
    result = await services.connections.test(record.id)
    assert result.ok, result.detail
    await services.requests.flush()
    logged = await services.requests.recent(record.id)
    assert [(entry.operation, entry.status_code) for entry in logged] == [("account", 200)]
    assert "sk_sandbox_123456" not in logged[0].url


async def test_a_draft_is_tested_before_it_is_saved(services: Services) -> None:
    result = await services.connections.test_draft(
        "sandbox-payments", FAST_SANDBOX, {"api_key": "sk_sandbox_123456"}
    )
    assert result.ok
    assert await services.connections.connections() == []


async def test_wrong_credentials_fail_the_test_with_what_to_do(
    services: Services, scripted_kind: ProviderSpec, scripted_server: ScriptedServer
) -> None:
    scripted_server.script("GET", "/ping", Reply(401, json={"error": "bad token"}))
    result = await services.connections.test_draft(
        "scripted", {"url": scripted_server.url}, {"token": "wrong-token-value"}
    )
    assert not result.ok
    assert result.error_class == "auth"
    assert "check the API key" in result.detail
    assert scripted_server.received()[0].headers["authorization"] == "Bearer wrong-token-value"


async def test_a_paused_connection_calls_nothing_until_resumed(services: Services) -> None:
    record = await add_sandbox(services)
    await services.connections.set_paused(record.id, True)
    provider = await services.connections.provider(record.id)
    with pytest.raises(ProviderPaused):
        await provider.client.call(provider.spec.health)
    assert not (await services.connections.test(record.id)).ok
    await services.connections.set_paused(record.id, False)
    assert (await services.connections.test(record.id)).ok


async def test_removing_a_connection_removes_its_secrets(
    services: Services, memory_keyring: MemoryKeyring
) -> None:
    record = await add_sandbox(services)
    await services.connections.test(record.id)
    await services.connections.remove(record.id)
    assert memory_keyring.entries == {}
    assert await services.connections.connections() == []
    await services.requests.flush()

    def orphans(session: Any) -> list[Any]:
        return list(session.scalars(select(RequestLogEntry.connection_id)))

    assert await services.db.read(orphans) == [None]  # its history stays, unattributed


async def test_an_open_breaker_stays_open_across_a_restart(
    services: Services, scripted_server: ScriptedServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    strict = BreakerPolicy(minimum_calls=3, failure_rate=0.5, open_seconds=600)
    monkeypatch.setitem(
        KINDS, "scripted", replace(SCRIPTED, policy=replace(SCRIPTED.policy, breaker=strict))
    )
    scripted_server.script("GET", "/ping", Reply(500))
    record = await services.connections.add(
        "scripted", "Flaky", {"url": scripted_server.url}, {"token": "t0ken-value"}
    )
    provider = await services.connections.provider(record.id)
    for _ in range(3):
        with pytest.raises(ProviderFailed):
            await provider.client.call(SCRIPTED.health)
    assert provider.client.breaker.state is BreakerState.OPEN  # 3 of 3 failed
    await services.close()  # waits for the breaker's state to be saved

    reopened = await Services.open(services.config)
    try:
        saved = (await reopened.connections.connection(record.id)).breakers[""]
        assert saved.state is BreakerState.OPEN
        again = await reopened.connections.provider(record.id)
        with pytest.raises(ProviderUnavailable):
            await again.client.call(SCRIPTED.health)
        assert len(scripted_server.received()) == 3  # refused without calling
        await reopened.connections.reset_breakers(record.id)
        await asyncio.sleep(0.05)
        assert (await reopened.connections.connection(record.id)).breakers[
            ""
        ].state is BreakerState.CLOSED
    finally:
        await reopened.close()


async def test_maintenance_is_a_breaker_held_open_until_reset(services: Services) -> None:
    record = await add_sandbox(services)
    await services.connections.hold_open(record.id)
    assert not (await services.connections.test(record.id)).ok
    await services.connections.reset_breakers(record.id)
    assert (await services.connections.test(record.id)).ok


async def test_a_damaged_breaker_row_does_not_stop_the_connection_loading(
    services: Services,
) -> None:
    record = await add_sandbox(services)

    def damage(session: Any) -> None:
        session.add(
            CircuitStateRow(connection_id=record.id, endpoint="", state={"state": "melted"})
        )

    await services.db.write(damage)
    loaded = await services.connections.connection(record.id)
    assert loaded.breakers == {}
    assert (await services.connections.test(record.id)).ok


async def test_connections_are_listed_by_name(services: Services) -> None:
    await add_sandbox(services, "Zeta")
    await add_sandbox(services, "Alpha")
    assert [record.name for record in await services.connections.connections()] == ["Alpha", "Zeta"]

    def rows(session: Any) -> int:
        return len(list(session.scalars(select(ProviderConnection))))

    assert await services.db.read(rows) == 2


async def test_changing_settings_keeps_a_secret_left_empty_and_replaces_one_given(
    services: Services, memory_keyring: MemoryKeyring
) -> None:
    record = await add_sandbox(services)
    changed = await services.connections.update(
        record.id, "Sandbox Cards", {**FAST_SANDBOX, "error_rate": "0.5"}, {"api_key": ""}
    )
    assert (changed.name, changed.config["error_rate"]) == ("Sandbox Cards", 0.5)
    key = (services.secrets.service, f"connection/{record.id}/api_key")
    assert memory_keyring.entries[key] == "sk_sandbox_123456"
    await services.connections.update(
        record.id, "Sandbox Cards", FAST_SANDBOX, {"api_key": "sk_new_7890"}
    )
    assert memory_keyring.entries[key] == "sk_new_7890"
    assert (
        await services.connections.test(record.id)
    ).ok  # the client was rebuilt with the new key


async def test_a_stored_secret_is_not_checked_again_when_other_settings_change(
    services: Services,
) -> None:
    # Stripe checks what a secret key looks like; the stored one is not read back to check it.
    record = await services.connections.add(
        "stripe", "Stripe", {}, {"secret_key": "sk_test_123", "webhook_secret": "whsec_1"}
    )
    changed = await services.connections.update(
        record.id, "Stripe cards", {"api_url": "https://stripe.example.org"}, {"secret_key": ""}
    )
    assert changed.name == "Stripe cards"
    assert set(changed.secret_fields) == {"secret_key", "webhook_secret"}
    with pytest.raises(ValidationFailed, match="starts with sk_"):
        await services.connections.update(record.id, "Stripe", {}, {"secret_key": "pk_test_1"})


async def test_each_connection_can_have_its_own_check_interval(services: Services) -> None:
    with pytest.raises(ValidationFailed, match="from every 10 seconds"):
        await services.connections.add(
            "sandbox-payments", "Too often", FAST_SANDBOX, {"api_key": "sk_x_123456"}, 5
        )
    record = await services.connections.add(
        "sandbox-payments", "Sandbox", FAST_SANDBOX, {"api_key": "sk_x_123456"}, 300
    )
    assert record.health_interval == 300
    changed = await services.connections.update(record.id, "Sandbox", FAST_SANDBOX, {}, None)
    assert changed.health_interval is None  # back to the kind's default
