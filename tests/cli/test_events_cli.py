"""`webhook-url` and `events list|show|replay` on the command line."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from app.config import resolve_config
from app.services import Services
from app.services.inbox import IncomingEvent
from tests.cli.test_cli import switchboard
from tests.cli.test_webhook_crash import environment


def school_with_events(tmp_path: Path) -> tuple[Path, dict[str, str], int]:
    env = environment(tmp_path)
    data = tmp_path / "school"
    env["KEY"] = "sk_test"
    added = switchboard(
        "connection", "add", "sandbox-payments", "--name", "Gateway",
        "--secret", "api_key=env:KEY", "--json", data_dir=data, env=env,
    )  # fmt: skip
    assert added.returncode == 0, added.stderr
    connection_id = int(json.loads(added.stdout)["id"])

    async def store() -> None:
        services = await Services.open(resolve_config(str(data), environ={}))
        try:
            for number, kind in enumerate(("payment.succeeded", "payment.failed")):
                body = json.dumps({"id": f"evt_{number}", "type": kind, "amount": 1200})
                await services.inbox.store(
                    IncomingEvent(
                        connection_id,
                        f"evt_{number}",
                        kind,
                        {"webhook-id": f"evt_{number}"},
                        body.encode(),
                    )
                )
        finally:
            await services.close()

    asyncio.run(store())
    return data, env, connection_id


@pytest.mark.slow
def test_events_are_listed_shown_in_full_and_replayed(tmp_path: Path) -> None:
    data, env, connection_id = school_with_events(tmp_path)

    listed = switchboard("events", "list", "--json", data_dir=data, env=env)
    assert listed.returncode == 0, listed.stderr
    events = json.loads(listed.stdout)
    assert [event["type"] for event in events] == ["payment.failed", "payment.succeeded"]
    assert {event["status"] for event in events} == {"received"}
    assert all(event["connection_id"] == connection_id for event in events)

    shown = switchboard("events", "show", str(events[1]["id"]), data_dir=data, env=env)
    assert shown.returncode == 0, shown.stderr
    assert '"amount": 1200' in shown.stdout  # the body, pretty-printed
    assert "webhook-id: evt_0" in shown.stdout

    replayed = switchboard(
        "events", "replay", str(events[0]["id"]), "9999", "--json", data_dir=data, env=env
    )
    assert replayed.returncode == 0, replayed.stderr
    assert json.loads(replayed.stdout) == {"replayed": 1, "not_found": 1}

    nothing = switchboard("events", "show", "9999", data_dir=data, env=env)
    assert nothing.returncode == 1
    assert "There is no event number 9999." in nothing.stderr


@pytest.mark.slow
def test_webhook_url_uses_the_public_address_once_it_is_set(tmp_path: Path) -> None:
    data, env, connection_id = school_with_events(tmp_path)
    local = switchboard("webhook-url", str(connection_id), "--json", data_dir=data, env=env)
    assert local.returncode == 0, local.stderr
    found = json.loads(local.stdout)
    assert found["url"].startswith(f"http://127.0.0.1:8750/hooks/{connection_id}/")
    assert found["public"] is False

    async def set_public() -> None:
        services = await Services.open(resolve_config(str(data), environ={}))
        try:
            await services.settings.set("receiver.public_url", "https://hooks.example.org/")
        finally:
            await services.close()

    asyncio.run(set_public())
    public = switchboard("webhook-url", str(connection_id), data_dir=data, env=env)
    token = found["url"].rsplit("/", 1)[1]
    assert public.stdout.strip() == f"https://hooks.example.org/hooks/{connection_id}/{token}"

    unknown = switchboard("webhook-url", "77", data_dir=data, env=env)
    assert unknown.returncode == 1
    assert "no connection number 77" in unknown.stderr
