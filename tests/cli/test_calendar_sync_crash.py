"""`switchboard sync` killed with SIGKILL in the middle of writing 60 lessons into a teacher's
CalDAV calendar (a real Radicale), then run again: every lesson is in the calendar exactly
once, counted on the server, and the second run finds what the first made rather than making
it again."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import time
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import icalendar
from sqlalchemy.orm import Session

from app.config import resolve_config
from app.services import Services
from app.store.school import Lesson, Teacher
from tests.cli.conftest import SWITCHBOARD
from tests.support.radicale import Radicale

LESSONS = 60


def school(data: Path) -> None:
    """A teacher with 60 lessons in the days ahead."""

    async def build() -> None:
        services = await Services.open(resolve_config(str(data), environ={}))
        try:

            def write(session: Session) -> None:
                teacher = Teacher(ref="T-1", first_name="Rudo", last_name="Moyo")
                session.add(teacher)
                session.flush()
                base = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
                for n in range(LESSONS):
                    start = base + timedelta(days=1, hours=n)
                    session.add(
                        Lesson(
                            ref=f"L-{n}",
                            title=f"Lesson {n}",
                            teacher_id=teacher.id,
                            starts_at=start,
                            ends_at=start + timedelta(minutes=45),
                        )
                    )

            await services.db.write(write)
        finally:
            await services.close()

    asyncio.run(build())


def keys(calendar: Any) -> Counter[str]:
    """The lesson each resource in the calendar was written for."""
    found: Counter[str] = Counter()
    for name in calendar.names():
        text, _ = calendar.get(name)
        for event in icalendar.Calendar.from_ical(text).walk("VEVENT"):
            found[str(event["X-SWITCHBOARD-KEY"]).rsplit(":", 1)[-1]] += 1
    return found


def test_a_sync_killed_midway_then_run_again_puts_every_lesson_in_once(
    run: Any, tmp_path: Path, radicale_server: Radicale
) -> None:
    calendar = radicale_server.calendar("jane")
    data = tmp_path / "data"
    added = run(
        "connection", "add", "caldav", "--name", "Ms Moyo's calendar",
        "--set", f"calendar_url={calendar.url}", "--set", "username=jane",
        "--set", "teacher=T-1", "--secret", "password=env:SANDBOX_KEY", "--json",
    )  # fmt: skip
    assert added.returncode == 0, added.stderr
    connection = json.loads(added.stdout)["id"]
    school(data)

    command = [str(SWITCHBOARD), "--data-dir", str(data), "sync", "--connection"]
    syncing = subprocess.Popen(
        [*command, str(connection), "--json"],
        env=run.environment,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    deadline = time.monotonic() + 120
    while len(calendar.names()) < LESSONS * 0.3:
        assert syncing.poll() is None, syncing.stderr.read() if syncing.stderr else ""
        assert time.monotonic() < deadline, "the sync made no progress"
        time.sleep(0.05)
    os.kill(syncing.pid, signal.SIGKILL)
    syncing.wait(timeout=30)
    written_before = len(calendar.names())
    assert written_before < LESSONS

    resumed = run("sync", "--connection", str(connection), "--json")

    assert resumed.returncode == 0, resumed.stderr
    [report] = json.loads(resumed.stdout)["calendars"]
    assert report["outcome"] == "ok", report["message"]
    per_lesson = keys(calendar)
    assert len(per_lesson) == LESSONS
    assert set(per_lesson.values()) == {1}  # no lesson twice
    # What the first run wrote was found (and adopted), not written again.
    assert report["counts"]["created"] <= LESSONS - written_before + 1
    again = run("sync", "--connection", str(connection), "--json")
    [quiet] = json.loads(again.stdout)["calendars"]
    assert "already in step" in quiet["message"]
