"""The demo school comes with sandbox gateways and traffic, so its dashboard moves at once."""

from __future__ import annotations

from datetime import date

import keyring
from keyring.backends import fail

from app.services import Services
from app.services.demo import seed_demo
from app.services.demo_traffic import DemoTraffic


async def test_the_demo_connects_three_sandbox_gateways_and_turns_traffic_on(
    services: Services,
) -> None:
    summary = await seed_demo(services, today=date(2026, 11, 18))
    assert summary.connections == 3
    records = await services.connections.connections()
    assert all(record.kind == "sandbox-payments" for record in records)
    assert services.settings.state("demo_traffic") is True


async def test_without_a_credential_store_the_demo_says_why_it_has_no_connections(
    services: Services,
) -> None:
    keyring.set_keyring(fail.Keyring())
    summary = await seed_demo(services, today=date(2026, 11, 18))
    assert summary.connections == 0
    assert "No credential store" in summary.note
    assert summary.students > 0  # the school itself is there


async def test_demo_traffic_calls_only_sandbox_providers_and_is_logged(services: Services) -> None:
    await seed_demo(services, today=date(2026, 11, 18))
    traffic = DemoTraffic(services.connections, rate=5.0)
    made = await traffic.tick()
    assert made > 0
    await traffic.settle()
    await services.requests.flush()
    logged = await services.requests.recent(limit=1000)
    assert len(logged) >= made  # each call is logged (retries add attempts)
    assert {entry.url.split("/")[2] for entry in logged} == {"sandbox.switchboard.invalid"}
