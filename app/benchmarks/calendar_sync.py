"""`switchboard bench calendar-sync --events N`: a teacher's N lessons synced into a fresh
calendar on a real CalDAV server (Radicale, on loopback), then again after one lesson changed;
and in the same run vdirsyncer — what a person would otherwise use to mirror calendars — doing
the same with the same events, from a folder of .ics files into another fresh calendar on the
same server.

Each side's time is measured around the whole sync (ours: the sync service, with its database;
vdirsyncer: its command, as a person runs it). Requests are counted by the server: Radicale logs
each answer with its path and the seconds it took, so both sides are counted the same way, per
calendar, and `incremental_server_ratio` says how much of the incremental ratio is the server's
own time answering our requests (a floor for any client making them). Targets for
N = 2000: the first sync no slower than vdirsyncer's, the incremental one at most a tenth of its
time, and a number of requests that does not grow with N (one change: a handful).

Radicale and vdirsyncer come with the development dependencies; the benchmark says so when
they are missing.
"""

from __future__ import annotations

import asyncio
import importlib.util
import os
import re
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy.orm import Session

from app.benchmarks.radicale import Radicale, running_radicale
from app.config import resolve_config
from app.domain.errors import SwitchboardError
from app.domain.lesson_events import lesson_content
from app.domain.school import LessonRecord
from app.providers.caldav import new_resource
from app.services import Services
from app.store.school import Lesson, Teacher

TARGETS = {"initial_ratio": 1.0, "incremental_ratio": 0.1, "incremental_requests": 10}
SLOTS_A_DAY = 8  # lessons from 09:00, one an hour


def calendar_sync_bench(events: int) -> dict[str, Any]:
    """Run both sides on one Radicale and return the figures (see the module's docstring)."""
    if importlib.util.find_spec("vdirsyncer") is None:
        raise SwitchboardError(
            "vdirsyncer is not installed; it comes with the development dependencies (uv sync)."
        )
    with tempfile.TemporaryDirectory(prefix="switchboard-bench-") as folder:
        root = Path(folder)
        with running_radicale(root / "radicale") as server:
            ours = asyncio.run(_ours(server, root / "switchboard", events))
            theirs = _vdirsyncer(server, root / "vdirsyncer", ours.pop("lessons"))
    initial_ratio = ours["initial_seconds"] / max(theirs["initial_seconds"], 1e-9)
    incremental_ratio = ours["incremental_seconds"] / max(theirs["incremental_seconds"], 1e-9)
    # What the server's own answers to our requests set of that ratio: the floor for any
    # client making those requests.
    server_ratio = ours["incremental_server_seconds"] / max(theirs["incremental_seconds"], 1e-9)
    met = (
        initial_ratio <= TARGETS["initial_ratio"]
        and incremental_ratio <= TARGETS["incremental_ratio"]
        and ours["incremental_requests"] <= TARGETS["incremental_requests"]
    )
    return {
        "benchmark": "calendar-sync",
        "parameters": {"events": events, "server": "Radicale (loopback)"},
        "switchboard": ours,
        "vdirsyncer": theirs,
        "initial_ratio": round(initial_ratio, 3),
        "incremental_ratio": round(incremental_ratio, 4),
        "incremental_server_ratio": round(server_ratio, 4),
        "targets": TARGETS,
        "met": met,
    }


def _lessons_of(count: int) -> list[tuple[datetime, datetime]]:
    start = datetime.now(UTC).replace(hour=9, minute=0, second=0, microsecond=0)
    return [
        (
            start + timedelta(days=1 + n // SLOTS_A_DAY, hours=n % SLOTS_A_DAY),
            start + timedelta(days=1 + n // SLOTS_A_DAY, hours=n % SLOTS_A_DAY, minutes=45),
        )
        for n in range(count)
    ]


async def _ours(server: Radicale, data: Path, events: int) -> dict[str, Any]:
    """Our sync service, with its own data folder, into a fresh calendar."""
    url = server.new_calendar("teacher", "switchboard")
    services = await Services.open(resolve_config(str(data), environ={}))
    try:

        def write(session: Session) -> int:
            teacher = Teacher(ref="T-1", first_name="Rudo", last_name="Moyo")
            session.add(teacher)
            session.flush()
            session.add_all(
                Lesson(
                    ref=f"L-{n}",
                    title=f"Piano lesson {n}",
                    teacher_id=teacher.id,
                    starts_at=start,
                    ends_at=end,
                )
                for n, (start, end) in enumerate(_lessons_of(events))
            )
            return teacher.id

        await services.db.write(write)
        record = await services.connections.add(
            "caldav",
            "Benchmark calendar",
            # Radicale here takes any login; no password, so no credential store is needed.
            {"calendar_url": url, "username": "teacher", "teacher": "T-1"},
            {},
        )
        counted = _RequestCount(server, "/teacher/switchboard/")
        started = time.perf_counter()
        first = await services.calendar_sync.sync(record.id, trigger="bench")
        initial = time.perf_counter() - started
        initial_requests = counted.since()
        if first.outcome != "ok" or first.counts.get("created") != events:
            raise SwitchboardError(f"The first sync did not write every lesson: {first.message}")
        lessons = await services.school.lessons(
            datetime.now(UTC), datetime.now(UTC) + timedelta(days=4000)
        )
        changed = lessons[len(lessons) // 2]
        await services.school.save_lesson(
            replace(changed.draft(), title=changed.title + " (moved room)"),
            lesson_id=changed.id,
            version=changed.version,
        )
        started = time.perf_counter()
        second = await services.calendar_sync.sync(record.id, trigger="bench")
        incremental = time.perf_counter() - started
        incremental_requests = counted.since()
        incremental_server = counted.server_seconds
        if second.counts.get("updated") != 1:
            raise SwitchboardError(f"The second sync did not write the change: {second.message}")
        return {
            "initial_seconds": round(initial, 3),
            "initial_requests": initial_requests,
            "incremental_seconds": round(incremental, 4),
            "incremental_requests": incremental_requests,
            "incremental_server_seconds": incremental_server,
            "events_per_second": round(events / initial, 1),
            "lessons": lessons,
        }
    finally:
        await services.close()


def _vdirsyncer(server: Radicale, folder: Path, lessons: list[LessonRecord]) -> dict[str, Any]:
    """vdirsyncer mirroring a folder of the same events (one .ics each) into a fresh calendar
    on the same server: `discover`, a first `sync`, one file changed, a second `sync`."""
    url = server.new_calendar("teacher", "vdirsyncer")
    local = folder / "events"
    local.mkdir(parents=True)
    written = datetime.now(UTC)
    for lesson in lessons:
        content = lesson_content(lesson)
        if content is None:
            continue
        uid = f"lesson-{lesson.id}"
        resource = new_resource(uid, uid, content, written)
        (local / f"{uid}.ics").write_bytes(resource.to_ical())
    config = folder / "config"
    config.write_text(
        "[general]\n"
        f'status_path = "{folder / "status"}/"\n\n'
        "[pair lessons]\n"
        'a = "folder"\nb = "server"\ncollections = null\nconflict_resolution = "a wins"\n\n'
        "[storage folder]\n"
        f'type = "filesystem"\npath = "{local}/"\nfileext = ".ics"\n\n'
        "[storage server]\n"
        f'type = "caldav"\nurl = "{url}"\nusername = "teacher"\npassword = "any"\n',
        encoding="utf-8",
    )
    environment = {**os.environ, "VDIRSYNCER_CONFIG": str(config)}
    command = [sys.executable, "-m", "vdirsyncer"]
    _run([*command, "discover", "lessons"], environment, "discover")
    counted = _RequestCount(server, "/teacher/vdirsyncer/")
    started = time.perf_counter()
    _run([*command, "sync"], environment, "the first sync")
    initial = time.perf_counter() - started
    initial_requests = counted.since()
    changed = sorted(local.iterdir())[len(lessons) // 2]
    text = changed.read_text(encoding="utf-8")
    changed.write_text(text.replace("SUMMARY:", "SUMMARY:(moved room) ", 1), encoding="utf-8")
    started = time.perf_counter()
    _run([*command, "sync"], environment, "the second sync")
    incremental = time.perf_counter() - started
    return {
        "initial_seconds": round(initial, 3),
        "initial_requests": initial_requests,
        "incremental_seconds": round(incremental, 4),
        "incremental_requests": counted.since(),
        "incremental_server_seconds": counted.server_seconds,
        "version": _version(),
    }


def _run(command: list[str], environment: dict[str, str], what: str) -> None:
    done = subprocess.run(  # noqa: S603 - our own interpreter and module
        command, env=environment, capture_output=True, text=True, input="y\n", check=False
    )
    if done.returncode != 0:
        raise SwitchboardError(f"vdirsyncer failed in {what}: {done.stderr.strip()[-500:]}")


def _version() -> str:
    from importlib.metadata import version

    return version("vdirsyncer")


class _RequestCount:
    """Requests the server logged for one calendar, and the seconds it says it spent on them
    (Radicale logs each answer's time), counted since the last call."""

    PATTERN = re.compile(
        r"(?:GET|PUT|DELETE|PROPFIND|REPORT|MKCALENDAR|OPTIONS|POST) response status for "
        r"'(?P<path>[^']*)'.*? in (?P<seconds>[0-9.]+) seconds"
    )

    def __init__(self, server: Radicale, path: str) -> None:
        self._log, self._path = server.log, path
        self._seen = self._count()
        self.server_seconds = 0.0

    def _count(self) -> tuple[int, float]:
        time.sleep(0.2)  # let the server's log catch up with the last answer
        text = self._log.read_text(encoding="utf-8", errors="replace")
        answers = [
            float(found["seconds"])
            for found in self.PATTERN.finditer(text)
            if found["path"].startswith(self._path)
        ]
        return len(answers), sum(answers)

    def since(self) -> int:
        """Requests since the last call (`server_seconds` then holds the server's time)."""
        now = self._count()
        (counted, seconds), self._seen = (now[0] - self._seen[0], now[1] - self._seen[1]), now
        self.server_seconds = round(seconds, 4)
        return counted
