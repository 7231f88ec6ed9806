"""Database upkeep, a background job: keep SQLite's query planner informed and the job history
short, so a database used daily for years stays small and quick."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from sqlalchemy import text
from sqlalchemy.orm import Session

from app.services.jobs import JobHistory
from app.store.database import Database

JOB_ID = "database-upkeep"
JOB_HISTORY_KEPT = timedelta(days=90)


async def database_upkeep(db: Database, jobs: JobHistory) -> dict[str, Any]:
    def optimize(session: Session) -> None:
        # SQLite's advice for long-lived connections: run "PRAGMA optimize" periodically.
        session.execute(text("PRAGMA optimize"))

    await db.write(optimize)
    pruned = await jobs.prune(JOB_HISTORY_KEPT)
    return {"job_runs_pruned": pruned}
