"""Health checks decide each connection's status with damping, and alert once per fall."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from sqlalchemy import select

from app.providers.spec import ProviderSpec
from app.services import Services
from app.services.health import Status
from app.store.integration import HealthCheckRow
from tests.fakes.scripted import Reply, ScriptedServer


async def connect(services: Services, server: ScriptedServer, name: str = "Gateway") -> int:
    record = await services.connections.add(
        "scripted", name, {"url": server.url}, {"token": "t0ken-value"}
    )
    return record.id


def heard(services: Services, topic: str) -> list[dict[str, Any]]:
    events: list[dict[str, Any]] = []
    services.events.subscribe(
        lambda event: events.append(dict(event.payload)) if event.topic == topic else None
    )
    return events


async def test_a_good_check_makes_a_connection_healthy(
    services: Services, scripted_kind: ProviderSpec, scripted_server: ScriptedServer
) -> None:
    scripted_server.script("GET", "/ping", Reply(200))
    connection = await connect(services, scripted_server)
    assert services.health.status(connection) is Status.UNKNOWN
    check = await services.health.check(connection)
    assert check.ok
    assert services.health.status(connection) is Status.HEALTHY

    def rows(session: Any) -> list[bool]:
        return [row.ok for row in session.scalars(select(HealthCheckRow))]

    assert await services.db.read(rows) == [True]


async def test_one_failed_check_degrades_two_make_it_down_with_one_alert(
    services: Services, scripted_kind: ProviderSpec, scripted_server: ScriptedServer
) -> None:
    scripted_server.script("GET", "/ping", Reply(200), Reply(503), Reply(503), Reply(503))
    connection = await connect(services, scripted_server)
    await services.health.check(connection)
    await services.health.check(connection)
    assert services.health.status(connection) is Status.DEGRADED
    assert await services.health.alerts() == []
    await services.health.check(connection)
    assert services.health.status(connection) is Status.DOWN
    await services.health.check(connection)
    alerts = await services.health.alerts()
    assert [alert.kind for alert in alerts] == ["down"]
    assert alerts[0].message.startswith(
        "Gateway is down: Gateway had a problem of its own (HTTP 503)"
    )


async def test_recovery_needs_two_good_checks_and_is_told(
    services: Services, scripted_kind: ProviderSpec, scripted_server: ScriptedServer
) -> None:
    scripted_server.script("GET", "/ping", Reply(503), Reply(503), Reply(200))
    connection = await connect(services, scripted_server)
    for _ in range(2):
        await services.health.check(connection)
    await services.health.check(connection)
    assert services.health.status(connection) is Status.DOWN  # one good answer is not trusted yet
    await services.health.check(connection)
    assert services.health.status(connection) is Status.HEALTHY
    assert [alert.kind for alert in await services.health.alerts()] == ["recovered", "down"]


async def test_a_flapping_provider_makes_one_notice_not_many(
    services: Services, scripted_kind: ProviderSpec, scripted_server: ScriptedServer
) -> None:
    scripted_server.script("GET", "/ping", *[Reply(503), Reply(503), Reply(200), Reply(200)] * 3)
    connection = await connect(services, scripted_server)
    for _ in range(12):
        await services.health.check(connection)
    kinds = [alert.kind for alert in reversed(await services.health.alerts())]
    assert kinds == ["down", "recovered"]


async def test_an_opening_breaker_makes_the_connection_down_at_once(
    services: Services, scripted_kind: ProviderSpec, scripted_server: ScriptedServer
) -> None:
    scripted_server.script("GET", "/ping", Reply(200))
    connection = await connect(services, scripted_server)
    await services.health.check(connection)
    alerts = heard(services, "alerts")
    await services.connections.hold_open(connection, "held open while the bank upgrades")
    for _ in range(50):
        if services.health.status(connection) is Status.DOWN:
            break
        await asyncio.sleep(0.01)
    assert services.health.status(connection) is Status.DOWN
    await asyncio.sleep(0.1)
    assert "held open while the bank upgrades" in alerts[0]["message"]


async def test_checks_run_when_due_and_never_for_paused_connections(
    services: Services, scripted_kind: ProviderSpec, scripted_server: ScriptedServer
) -> None:
    scripted_server.script("GET", "/ping", Reply(200))
    first = await connect(services, scripted_server, "First")
    second = await connect(services, scripted_server, "Second")
    await services.connections.set_paused(second, True)
    assert await services.health.check_due() == 1
    assert await services.health.check_due() == 0  # the 60 s interval has not passed
    assert len(scripted_server.received()) == 1
    assert services.health.status(first) is Status.HEALTHY
    assert services.health.status(second) is Status.PAUSED


@pytest.mark.parametrize("status", [401, 403])
async def test_refused_credentials_are_a_failed_check_that_says_what_to_do(
    services: Services, scripted_kind: ProviderSpec, scripted_server: ScriptedServer, status: int
) -> None:
    scripted_server.script("GET", "/ping", Reply(status))
    connection = await connect(services, scripted_server)
    check = await services.health.check(connection)
    assert not check.ok
    assert check.error_class == "auth"
    assert "check the API key" in check.detail


async def test_status_changes_are_published(
    services: Services, scripted_kind: ProviderSpec, scripted_server: ScriptedServer
) -> None:
    scripted_server.script("GET", "/ping", Reply(200))
    changes = heard(services, "health")
    connection = await connect(services, scripted_server)
    await services.health.check(connection)
    await asyncio.sleep(0.06)
    assert {"id": connection, "status": "healthy"} in changes


async def test_alerts_can_be_marked_seen(
    services: Services, scripted_kind: ProviderSpec, scripted_server: ScriptedServer
) -> None:
    scripted_server.script("GET", "/ping", Reply(503))
    connection = await connect(services, scripted_server)
    for _ in range(2):
        await services.health.check(connection)
    assert len(await services.health.alerts(unseen_only=True)) == 1
    await services.health.mark_seen()
    assert await services.health.alerts(unseen_only=True) == []
