"""Several engines on one PostgreSQL database: exactly one leads the scheduled work, another
takes over within seconds when it goes, and a job starts at most once per half interval
across them. On SQLite the one engine always leads."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from datetime import timedelta

import pytest
from sqlalchemy import text

from app.config import Config
from app.services.leadership import Leadership, claim_tick, current_leader, last_ticks
from app.store.base import utcnow
from app.store.database import Database
from tests.support.databases import PostgresServer, emptied
from tests.support.polling import until

CHECK = 0.1


@pytest.fixture
def pg_url(postgres_server: PostgresServer, postgres_database: str) -> str:
    return emptied(postgres_server, postgres_database)


@pytest.fixture
async def databases(pg_url: str) -> AsyncIterator[Callable[[], Database]]:
    opened: list[Database] = []

    def open_one() -> Database:
        db = Database(pg_url)
        opened.append(db)
        return db

    yield open_one
    for db in opened:
        db.close()


class Engine:
    """What an engine does with its lead, for the test to watch."""

    def __init__(self, db: Database, name: str) -> None:
        self.changes: list[bool] = []
        self.leadership = Leadership(db, self.changed, name=name, check_every=CHECK)

    async def changed(self, leader: bool) -> None:
        self.changes.append(leader)


async def test_one_engine_leads_and_another_takes_over_when_it_stops(
    databases: Callable[[], Database],
) -> None:
    first, second = Engine(databases(), "office-1"), Engine(databases(), "office-2")
    await first.leadership.start()
    await second.leadership.start()
    await asyncio.sleep(CHECK * 5)
    assert (first.leadership.leader, second.leadership.leader) == (True, False)
    assert await current_leader(databases()) == "office-1"

    await first.leadership.stop()
    await until(lambda: second.leadership.leader, limit=5)
    assert first.changes == [True]
    assert second.changes == [True]
    assert await current_leader(databases()) == "office-2"
    await second.leadership.stop()
    assert await current_leader(databases()) is None


async def test_a_leader_cut_off_from_the_server_steps_down_and_the_other_leads(
    databases: Callable[[], Database],
) -> None:
    first, second = Engine(databases(), "office-1"), Engine(databases(), "office-2")
    await first.leadership.start()
    await second.leadership.start()
    admin = databases()

    def cut(session: object) -> None:  # what a dead network does: the server ends the session
        session.execute(  # type: ignore[attr-defined]
            text(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE application_name = 'Switchboard engine office-1'"
            )
        )

    await admin.write(cut)
    await until(lambda: second.leadership.leader and not first.leadership.leader, limit=5)
    assert first.changes == [True, False]
    # Back on the network, the first engine follows: the lead is not taken back.
    await asyncio.sleep(CHECK * 5)
    assert (first.leadership.leader, second.leadership.leader) == (False, True)
    for engine in (first, second):
        await engine.leadership.stop()


async def test_a_job_starts_at_most_once_per_half_interval_across_engines(
    databases: Callable[[], Database],
) -> None:
    every = timedelta(minutes=1)
    now = utcnow()
    engines = [databases() for _ in range(4)]
    # Four engines that all believe they lead try the same tick at the same moment: one runs it.
    won = await asyncio.gather(
        *(claim_tick(db, "rollup", every, f"e{n}", now) for n, db in enumerate(engines))
    )
    assert sorted(won) == [False, False, False, True]
    assert not await claim_tick(engines[0], "rollup", every, "e0", now + every / 3)
    assert await claim_tick(engines[1], "rollup", every, "e1", now + every)
    assert await claim_tick(engines[1], "other", every, "e1", now)
    assert (await last_ticks(engines[2]))["rollup"] == now + every


async def test_on_sqlite_the_engine_always_leads(config: Config) -> None:
    db = Database(config.db_url)
    try:
        engine = Engine(db, "office-1")
        await engine.leadership.start()
        assert engine.leadership.leader
        assert engine.changes == [True]
        assert await current_leader(db) is None
        await engine.leadership.stop()
    finally:
        db.close()
