"""An acknowledged webhook is never lost: senders post signed events while `switchboard serve`
is killed with SIGKILL at a random moment; after a restart, every event that got a 2xx is in
the inbox, once."""

from __future__ import annotations

import asyncio
import json
import os
import random
import signal
import sqlite3
import subprocess
from pathlib import Path

import pytest

from app.domain.inbox import RECEIVED, SKIPPED
from app.providers.webhooks import new_standard_webhooks_secret
from tests.cli.test_cli import SWITCHBOARD, switchboard
from tests.support.polling import wait_for
from tests.support.signed_flood import flood_and_kill

pytestmark = pytest.mark.slow


def environment(tmp_path: Path) -> dict[str, str]:
    return {
        **os.environ,
        "PYTHON_KEYRING_BACKEND": "tests.support.file_keyring.FileKeyring",
        "SWITCHBOARD_TEST_KEYRING": str(tmp_path / "keyring.json"),
        "PYTHONPATH": str(Path(__file__).resolve().parents[2]),
    }


def serve(data: Path, env: dict[str, str]) -> tuple[subprocess.Popen[str], str]:
    process = subprocess.Popen(
        [str(SWITCHBOARD), "--data-dir", str(data), "serve", "--port", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    assert process.stdout is not None
    line = process.stdout.readline()
    assert line.startswith("listening on "), process.stderr.read() if process.stderr else line
    return process, line.removeprefix("listening on ").strip()


def test_every_acknowledged_event_survives_a_kill_and_is_stored_once(tmp_path: Path) -> None:
    env = environment(tmp_path)
    data = tmp_path / "school"
    secret = new_standard_webhooks_secret()
    env["HOOK_SECRET"] = secret
    added = switchboard(
        "connection", "add", "sandbox-payments", "--name", "Gateway",
        "--secret", "api_key=env:HOOK_SECRET", "--secret", "webhook_secret=env:HOOK_SECRET",
        "--json", data_dir=data, env=env,
    )  # fmt: skip
    assert added.returncode == 0, added.stderr
    connection_id = json.loads(added.stdout)["id"]
    rng = random.Random()
    acknowledged: list[str] = []
    for _round in range(2):
        process, base = serve(data, env)
        found = switchboard("webhook-url", str(connection_id), "--json", data_dir=data, env=env)
        assert found.returncode == 0, found.stderr
        path = json.loads(found.stdout)["url"].split("/hooks/", 1)[1]
        url = f"{base}/hooks/{path}"
        before = len(acknowledged)
        after = rng.uniform(0.5, 2.0)
        asyncio.run(
            flood_and_kill(
                [(url, acknowledged)],
                secret,
                seconds=after + 10,
                kill_at=after,
                victim=process,
                senders=16,
            )
        )
        assert process.wait(10) == -signal.SIGKILL
        assert len(acknowledged) > before, "no event was acknowledged before the kill"

    stored = inbox(data)
    missing = set(acknowledged) - set(stored)
    assert not missing, f"{len(missing)} acknowledged events lost, e.g. {sorted(missing)[:3]}"

    # Started once more and left alone, the server processes what the kills interrupted: each
    # event once (nothing acts on a sandbox gateway's events yet, so each is set aside once).
    process, _base = serve(data, env)
    try:
        wait_for(lambda: all(status != RECEIVED for status, _ in inbox(data).values()), 60)
    finally:
        process.send_signal(signal.SIGTERM)
        assert process.wait(30) == 0
    assert {inbox(data)[event_id] for event_id in acknowledged} == {(SKIPPED, 1)}


def inbox(data: Path) -> dict[str, tuple[str, int]]:
    """Every stored event's status and processing attempts, by the provider's id."""
    with sqlite3.connect(data / "switchboard.db") as db:
        rows = list(db.execute("SELECT provider_event_id, status, attempts FROM webhook_inbox"))
    events = {event_id: (status, attempts) for event_id, status, attempts in rows}
    assert len(events) == len(rows), "an event was stored twice"
    return events
