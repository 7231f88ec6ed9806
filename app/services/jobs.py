"""The history of background jobs: each run's start, end, outcome and counts."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from apscheduler.schedulers.base import STATE_PAUSED, BaseScheduler
from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from app.services.events import EventHub
from app.store.base import utcnow
from app.store.database import Database
from app.store.integration import JobRun

log = logging.getLogger("switchboard.jobs")

TOPIC = "jobs"


@dataclass(frozen=True)
class JobRunRecord:
    id: int
    job_id: str
    started_at: datetime
    finished_at: datetime | None
    outcome: str
    counts: dict[str, Any]
    error: str | None


def _record(row: JobRun) -> JobRunRecord:
    return JobRunRecord(
        row.id,
        row.job_id,
        row.started_at,
        row.finished_at,
        row.outcome,
        dict(row.counts),
        row.error,
    )


@dataclass(frozen=True)
class NextRun:
    """A scheduled job and when it runs next (None while background work is paused)."""

    job_id: str
    name: str
    at: datetime | None


class JobHistory:
    """Runs a job while keeping its record; a failing job is recorded, logged and contained.
    Once the engine attaches its scheduler, it also says what runs next."""

    def __init__(self, db: Database, events: EventHub) -> None:
        self._db = db
        self._events = events
        self._scheduler: BaseScheduler | None = None

    def attach(self, scheduler: BaseScheduler | None) -> None:
        self._scheduler = scheduler

    async def next_runs(self) -> list[NextRun]:
        """Every scheduled job with its next run, soonest first (none without a scheduler:
        the command line, a test)."""
        if self._scheduler is None or not self._scheduler.running:
            return []
        paused = self._scheduler.state == STATE_PAUSED
        runs = [
            NextRun(job.id, job.name, None if paused else job.next_run_time)
            for job in self._scheduler.get_jobs()
        ]
        far = datetime.max.replace(tzinfo=UTC)
        return sorted(runs, key=lambda run: (run.at or far, run.job_id))

    async def history(self, limit: int = 300) -> list[JobRunRecord]:
        """The latest runs of every job, newest first."""

        def query(session: Session) -> list[JobRunRecord]:
            rows = session.scalars(select(JobRun).order_by(JobRun.id.desc()).limit(limit))
            return [_record(row) for row in rows]

        return await self._db.read(query)

    async def last_of(self, job_id: str) -> JobRunRecord | None:
        def query(session: Session) -> JobRunRecord | None:
            row = session.scalars(
                select(JobRun).where(JobRun.job_id == job_id).order_by(JobRun.id.desc())
            ).first()
            return _record(row) if row else None

        return await self._db.read(query)

    async def run(self, job_id: str, job: Callable[[], Awaitable[dict[str, Any]]]) -> JobRunRecord:
        def start(session: Session) -> int:
            row = JobRun(job_id=job_id)
            session.add(row)
            session.flush()
            return row.id

        run_id = await self._db.write(start)
        outcome, counts, error = "ok", {}, None
        try:
            counts = await job()
        except Exception as exc:
            outcome, error = "failed", f"{type(exc).__name__}: {exc}"
            log.exception("background job failed", extra={"job": job_id})

        def finish(session: Session) -> JobRunRecord:
            row = session.get_one(JobRun, run_id)
            row.finished_at = utcnow()
            row.outcome = outcome
            row.counts = counts
            row.error = error
            return _record(row)

        record = await self._db.write(finish)
        self._events.publish(TOPIC, {"job_id": job_id, "outcome": outcome})
        return record

    async def last_finished(self) -> JobRunRecord | None:
        def query(session: Session) -> JobRunRecord | None:
            row = session.scalars(
                select(JobRun).where(JobRun.finished_at.is_not(None)).order_by(JobRun.id.desc())
            ).first()
            return _record(row) if row else None

        return await self._db.read(query)

    async def prune(self, older_than: timedelta) -> int:
        def write(session: Session) -> int:
            cutoff = utcnow() - older_than
            result = session.execute(delete(JobRun).where(JobRun.started_at < cutoff))
            return int(getattr(result, "rowcount", 0) or 0)

        return await self._db.write(write)
