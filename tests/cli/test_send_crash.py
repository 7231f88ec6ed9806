"""`switchboard send` killed with SIGKILL in the middle of a 5 000-recipient SMS send, then
resumed: every recipient got exactly one message, counted on the (simulated) Twilio account
that outlives the killed process."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from app.config import resolve_config
from app.services import Services
from tests.cli.conftest import SWITCHBOARD
from tests.support.messaging import ACCOUNT, add_families, e164_of, twilio_served

RECIPIENTS = 5_000
RATE = 400  # messages a second the account allows


def school(data: Path) -> None:
    async def build() -> None:
        services = await Services.open(resolve_config(str(data), environ={}))
        try:
            await services.settings.set("school.locale", "en_ZW")
            add_families(services.db, RECIPIENTS)
        finally:
            await services.close()

    asyncio.run(build())


@pytest.mark.slow
def test_a_send_killed_midway_then_resumed_gives_everyone_exactly_one_message(
    run: Any, tmp_path: Path
) -> None:
    data = tmp_path / "data"
    with twilio_served(rate=RATE, undelivered_rate=0.0) as (twilio, url):
        added = run(
            "connection", "add", "twilio", "--name", "Twilio",
            "--set", f"account_sid={ACCOUNT}", "--set", "from_number=+15005550006",
            "--set", f"api_url={url}", "--set", f"rate_per_second={RATE}",
            "--secret", "auth_token=env:TWILIO_TOKEN", "--json",
            env={**run.environment, "TWILIO_TOKEN": "twilio-test-token"},
        )  # fmt: skip
        assert added.returncode == 0, added.stderr
        school(data)

        command = [
            str(SWITCHBOARD), "--data-dir", str(data), "send",
            "--template", "Lesson reminder", "--to", "guardians", "--channel", "sms",
            "--set", "lesson.title=Violin", "--set", "lesson.starts=tomorrow at 15:00",
            "--set", "lesson.room=", "--yes", "--json",
        ]  # fmt: skip
        sending = subprocess.Popen(
            command, env=run.environment, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
        )
        deadline = time.monotonic() + 120
        while sum(twilio.received.values()) < RECIPIENTS * 0.3:
            assert sending.poll() is None, sending.stderr.read() if sending.stderr else ""
            assert time.monotonic() < deadline, "the send made no progress"
            time.sleep(0.02)
        os.kill(sending.pid, signal.SIGKILL)
        sending.wait(timeout=30)
        before = sum(twilio.received.values())
        assert before < RECIPIENTS

        resumed = run("send", "--resume", "1", "--json")

        assert resumed.returncode == 0, resumed.stderr
        summary = json.loads(resumed.stdout)
        assert summary["status"] == "done", summary
        assert twilio.received == {e164_of(n): 1 for n in range(RECIPIENTS)}
        # Each is with the provider: accepted, or further along by now.
        assert sum(summary["counts"].values()) == RECIPIENTS
        assert set(summary["counts"]) <= {"queued", "sent", "delivered"}
