"""Which engine runs the scheduled work when several computers share one database.

Every engine receives webhooks and works its queues (the workers claim rows with
`FOR UPDATE SKIP LOCKED`), but scheduled jobs (health checks, calendar syncs, roll-ups,
reconciliation) run on one engine only: the leader.

On PostgreSQL the leader is whoever holds a session-level advisory lock, taken on a connection of
its own that does nothing else. The server lets go of the lock the moment that connection ends, so
when the leader's process dies (even by SIGKILL) or its computer drops off the network (TCP
keepalives, a few seconds), another engine's next try takes it: each follower tries every
`CHECK_EVERY` seconds. The leader checks its connection as often and steps down if it broke.

Scheduled jobs also leave a tick in the database each time they start (`ScheduleTick`). A new
leader starts each job one interval after its last tick anywhere, and a job never starts twice
within half an interval, which keeps the schedule once per interval across a change of leader
(and through the few seconds in which an old leader cut off from the server still believes it
leads).

On SQLite (one computer) the engine always leads.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
import zlib
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta
from typing import Any

import psycopg
from sqlalchemy import column, delete, func, select, table
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session

from app.store.base import utcnow
from app.store.database import Database
from app.store.integration import ScheduleTick

log = logging.getLogger("switchboard.leadership")

LEADER_LOCK = 0x5357_4C44  # "SWLD": the advisory lock whose holder leads
TICK_LOCK = 0x5357_544B  # "SWTK": serialises the tick check of one job across engines
CHECK_EVERY = 2.0
CONNECT_TIMEOUT = 5
TICKS_KEPT = timedelta(days=7)


def engine_name() -> str:
    """How this engine is named to the others: its computer and process."""
    return f"{socket.gethostname()[:120] or 'unknown'} (process {os.getpid()})"


def conninfo(url: str) -> str:
    """The SQLAlchemy URL as libpq connection info (no driver name)."""
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


class Leadership:
    """Takes and keeps the lead for this engine; tells `on_change` when that changes."""

    def __init__(
        self,
        db: Database,
        on_change: Callable[[bool], Awaitable[None]],
        *,
        name: str | None = None,
        check_every: float = CHECK_EVERY,
    ) -> None:
        self._db = db
        self._on_change = on_change
        self.name = name or engine_name()
        self._check_every = check_every
        self.leader = False
        self._connection: psycopg.Connection[Any] | None = None
        # One thread: the lock's connection is used by one thread at a time.
        self._thread = ThreadPoolExecutor(1, thread_name_prefix="switchboard-leadership")
        self._task: asyncio.Task[None] | None = None
        self._yield_until = 0.0

    @property
    def shared(self) -> bool:
        """Whether other engines may share this database (and so whether leading is a question)."""
        return self._db.is_postgres

    async def start(self) -> None:
        """Lead at once on SQLite; on PostgreSQL try now, then keep trying (or keep checking)."""
        if not self.shared:
            await self._become(True)
            return
        await self._step()
        self._task = asyncio.get_running_loop().create_task(self._run(), name="leadership")

    async def stop(self) -> None:
        """Give the lead up (the connection's end releases the lock) and stop trying."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        if self.shared:
            await asyncio.get_running_loop().run_in_executor(self._thread, self._disconnect)
        self.leader = False
        self._thread.shutdown(wait=True)

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self._check_every)
            try:
                await self._step()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("checking the lead failed; trying again shortly")

    async def _step(self) -> None:
        if not self.leader and time.monotonic() < self._yield_until:
            return
        loop = asyncio.get_running_loop()
        holds = await loop.run_in_executor(self._thread, self._holds_or_takes)
        if holds != self.leader:
            if not holds:
                # A leader whose connection broke lets the others take the lead first.
                self._yield_until = time.monotonic() + 3 * self._check_every
            await self._become(holds)

    async def _become(self, leader: bool) -> None:
        self.leader = leader
        log.info(
            "this engine now leads the scheduled work" if leader else "this engine follows",
            extra={"engine": self.name},
        )
        await self._on_change(leader)

    # --- on the lock's own thread ---------------------------------------------------------------

    def _holds_or_takes(self) -> bool:
        """Leader: is the lock's connection still alive? Follower: is the lock free now?"""
        try:
            if self._connection is None or self._connection.closed:
                self._connection = psycopg.connect(
                    conninfo(self._db.url),
                    autocommit=True,
                    connect_timeout=CONNECT_TIMEOUT,
                    application_name=f"Switchboard engine {self.name}"[:63],
                    # A leader whose computer vanished (no FIN) is noticed within seconds.
                    keepalives=1,
                    keepalives_idle=5,
                    keepalives_interval=2,
                    keepalives_count=3,
                )
                self._connection.execute("SET tcp_keepalives_idle = 5")
                self._connection.execute("SET tcp_keepalives_interval = 2")
                self._connection.execute("SET tcp_keepalives_count = 3")
            if self.leader:
                self._connection.execute("SELECT 1")
                return True
            row = self._connection.execute(
                "SELECT pg_try_advisory_lock(%s)", (LEADER_LOCK,)
            ).fetchone()
            return bool(row and row[0])
        except psycopg.Error as exc:
            log.warning("the database did not answer the lead check: %s", type(exc).__name__)
            self._disconnect()
            return False

    def _disconnect(self) -> None:
        if self._connection is not None:
            with contextlib.suppress(psycopg.Error):
                self._connection.close()
            self._connection = None


# The server's views of held locks and of connections (pg_catalog), for `current_leader`.
_locks = table(
    "pg_locks",
    column("locktype"),
    column("classid"),
    column("objid"),
    column("objsubid"),
    column("granted"),
    column("pid"),
    schema="pg_catalog",
)
_activity = table(
    "pg_stat_activity",
    column("pid"),
    column("datname"),
    column("application_name"),
    schema="pg_catalog",
)


async def current_leader(db: Database) -> str | None:
    """The engine that leads now, as it names itself (None when none does; "this computer"
    on SQLite, where the running engine always leads)."""
    if not db.is_postgres:
        return None

    def query(session: Session) -> str | None:
        name = session.execute(
            select(func.max(_activity.c.application_name))
            .select_from(
                _locks.join(_activity, _locks.c.pid == _activity.c.pid),
            )
            .where(
                # Advisory locks belong to one database; the server may hold other schools'.
                _activity.c.datname == func.current_database(),
                _locks.c.locktype == "advisory",
                _locks.c.classid == 0,
                _locks.c.objid == LEADER_LOCK,
                _locks.c.objsubid == 1,  # the one-number form of the lock
                _locks.c.granted,
            )
        ).scalar()
        return str(name).removeprefix("Switchboard engine ") if name else None

    return await db.read(query)


# --- once per interval ---------------------------------------------------------------------------


def _job_key(job_id: str) -> int:
    return zlib.crc32(job_id.encode()) & 0x7FFF_FFFF


async def claim_tick(
    db: Database, job_id: str, every: timedelta, engine: str, now: datetime | None = None
) -> bool:
    """Record that `job_id` starts now, unless it started less than half an interval ago on
    any engine (then it must not run now)."""
    at = now or utcnow()

    def write(session: Session) -> bool:
        if db.is_postgres:
            session.execute(select(func.pg_advisory_xact_lock(TICK_LOCK, _job_key(job_id))))
        last = session.scalar(
            select(func.max(ScheduleTick.at)).where(ScheduleTick.job_id == job_id)
        )
        if last is not None and at - last < every / 2:
            return False
        session.add(ScheduleTick(job_id=job_id, at=at, engine=engine[:160]))
        return True

    return await db.write(write)


async def last_ticks(db: Database) -> dict[str, datetime]:
    """When each scheduled job last started, on any engine."""

    def read(session: Session) -> dict[str, datetime]:
        rows = session.execute(
            select(ScheduleTick.job_id, func.max(ScheduleTick.at)).group_by(ScheduleTick.job_id)
        )
        return {job_id: at for job_id, at in rows if at is not None}

    return await db.read(read)


async def prune_ticks(db: Database, now: datetime | None = None) -> int:
    """Forget ticks older than a week (the last of each job is all the schedule needs)."""
    cutoff = (now or utcnow()) - TICKS_KEPT

    def write(session: Session) -> int:
        kept = select(func.max(ScheduleTick.id)).group_by(ScheduleTick.job_id).scalar_subquery()
        result = session.execute(
            delete(ScheduleTick).where(ScheduleTick.at < cutoff, ScheduleTick.id.not_in(kept))
        )
        return int(getattr(result, "rowcount", 0) or 0)

    return await db.write(write)
