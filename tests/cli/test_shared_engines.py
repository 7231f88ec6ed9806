"""Two office computers' engines on one PostgreSQL database: signed webhooks flood both
receivers while the scheduled jobs tick; the leader is killed with SIGKILL midway. Every event
either receiver acknowledged is stored and processed exactly once, every scheduled job started
at most once per half interval across both engines (and kept its rhythm), and the survivor took
the lead within 30 seconds."""

from __future__ import annotations

import asyncio
import itertools
import json
import signal
import subprocess
import time
from collections import defaultdict
from datetime import timedelta
from pathlib import Path

import httpx
import pytest
from sqlalchemy import create_engine, text

from app.domain.inbox import RECEIVED, SKIPPED
from app.engine import HEALTH_DISPATCH
from app.providers.webhooks import new_standard_webhooks_secret
from tests.cli.test_cli import SWITCHBOARD, switchboard
from tests.cli.test_webhook_crash import environment
from tests.support.databases import PostgresServer, emptied
from tests.support.polling import wait_for
from tests.support.signed_flood import flood_and_kill

pytestmark = pytest.mark.slow

TAKE_OVER_LIMIT = 30.0


class ServedEngine:
    """`switchboard serve` on the shared database, with a folder of its own (its logs)."""

    def __init__(self, url: str, data: Path, env: dict[str, str]) -> None:
        self.process = subprocess.Popen(
            [str(SWITCHBOARD), "--data-dir", str(data), "--db-url", url, "serve", "--port", "0"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        assert self.process.stdout is not None
        line = self.process.stdout.readline()
        assert line.startswith("listening on "), (
            self.process.stderr.read() if self.process.stderr else line
        )
        self.base = line.removeprefix("listening on ").strip()

    def leads(self) -> bool:
        try:
            return bool(httpx.get(f"{self.base}/health", timeout=2).json()["leader"])
        except httpx.HTTPError:
            return False


def test_two_engines_share_the_work_and_the_survivor_of_a_kill_takes_the_lead(
    tmp_path: Path, postgres_server: PostgresServer, postgres_database: str
) -> None:
    url = emptied(postgres_server, postgres_database)
    env = environment(tmp_path)
    secret = new_standard_webhooks_secret()
    env["HOOK_SECRET"] = secret
    added = switchboard(
        "--db-url", url, "connection", "add", "sandbox-payments", "--name", "Gateway",
        "--secret", "api_key=env:HOOK_SECRET", "--secret", "webhook_secret=env:HOOK_SECRET",
        "--json", data_dir=tmp_path / "admin", env=env,
    )  # fmt: skip
    assert added.returncode == 0, added.stderr
    connection_id = json.loads(added.stdout)["id"]
    found = switchboard(
        "--db-url", url, "webhook-url", str(connection_id), "--json",
        data_dir=tmp_path / "admin", env=env,
    )  # fmt: skip
    assert found.returncode == 0, found.stderr
    path = json.loads(found.stdout)["url"].split("/hooks/", 1)[1]

    first = ServedEngine(url, tmp_path / "office-1", env)
    second = ServedEngine(url, tmp_path / "office-2", env)
    engines = (first, second)
    try:
        leader = wait_for(lambda: next((e for e in engines if e.leads()), None), 30)
        survivor = second if leader is first else first
        assert not survivor.leads()
        time.sleep(HEALTH_DISPATCH.total_seconds() * 2)  # the leader's jobs tick a while

        to_leader: list[str] = []
        to_survivor: list[str] = []
        killed_at = asyncio.run(
            flood_and_kill(
                [
                    (f"{leader.base}/hooks/{path}", to_leader),
                    (f"{survivor.base}/hooks/{path}", to_survivor),
                ],
                secret,
                seconds=8.0,
                kill_at=3.0,
                victim=leader.process,
                senders=8,
            )
        )
        assert leader.process.wait(10) == -signal.SIGKILL
        wait_for(survivor.leads, TAKE_OVER_LIMIT)
        took_over = time.monotonic() - killed_at
        assert took_over < TAKE_OVER_LIMIT
        assert to_leader, "the leader acknowledged nothing before it was killed"
        assert to_survivor, "the survivor acknowledged nothing"

        database = create_engine(url)
        try:

            def inbox() -> dict[str, tuple[str, int]]:
                with database.connect() as connection:
                    rows = connection.execute(
                        text("SELECT provider_event_id, status, attempts FROM webhook_inbox")
                    ).all()
                events = {event_id: (status, attempts) for event_id, status, attempts in rows}
                assert len(events) == len(rows), "an event was stored twice"
                return events

            # The survivor processes everything, the dead engine's unfinished share included.
            wait_for(lambda: all(status != RECEIVED for status, _ in inbox().values()), 60)
            time.sleep(HEALTH_DISPATCH.total_seconds() * 3)  # the new leader's jobs tick a while
            stored = inbox()
            acknowledged = to_leader + to_survivor
            missing = set(acknowledged) - set(stored)
            assert not missing, (
                f"{len(missing)} acknowledged events lost, e.g. {sorted(missing)[:3]}"
            )
            # Nothing acts on a sandbox gateway's events: each was set aside once, by one engine.
            assert {stored[event_id] for event_id in acknowledged} == {(SKIPPED, 1)}

            with database.connect() as connection:
                ticks = connection.execute(
                    text("SELECT job_id, at, engine FROM schedule_ticks ORDER BY job_id, at")
                ).all()
        finally:
            database.dispose()
    finally:
        for engine in engines:
            if engine.process.poll() is None:
                engine.process.send_signal(signal.SIGTERM)
        for engine in engines:
            engine.process.wait(30)
    assert survivor.process.returncode == 0

    by_job: dict[str, list[tuple[object, str]]] = defaultdict(list)
    for job_id, at, engine in ticks:
        by_job[job_id].append((at, engine))
    dispatch = by_job["health-checks"]
    runners = [engine for _at, engine in dispatch]
    # Both engines ran the health checks, one after the other, never together.
    assert len(set(runners)) == 2
    assert runners == sorted(runners, key=runners.index)
    every = HEALTH_DISPATCH
    # (The dispatcher's five seconds is the shortest interval: a bound every job must keep.)
    for job_id, runs in by_job.items():
        gaps = [later - earlier for (earlier, _), (later, _) in itertools.pairwise(runs)]
        too_close = [gap for gap in gaps if gap < every / 2]
        assert not too_close, f"{job_id} started twice within half an interval: {too_close}"
    gaps = [later - earlier for (earlier, _), (later, _) in itertools.pairwise(dispatch)]
    # Its rhythm held, the take-over's pause aside.
    assert max(gaps) < every + timedelta(seconds=took_over + 2 * every.total_seconds())
    print(
        f"\nacknowledged {len(to_leader)} by the leader before the kill and {len(to_survivor)} by "
        f"the survivor; the lead passed {took_over:.1f} s after the kill; ticks per job: "
        + ", ".join(f"{job_id} {len(runs)}" for job_id, runs in sorted(by_job.items()))
    )
