"""The schema is created and upgraded by Alembic at start-up, on SQLite tuned for safety."""

from __future__ import annotations

import sqlite3
from datetime import datetime
from pathlib import Path

import pytest
from sqlalchemy import inspect, text

from app.store.base import Base
from app.store.database import Database, DatabaseError

SCHOOL_TABLES = {"students", "guardians", "teachers", "rooms", "lessons", "invoices"}
INTEGRATION_TABLES = {
    "provider_connections",
    "request_log",
    "webhook_inbox",
    "outbox",
    "audit_trail",
    "settings",
    "users",
}


@pytest.fixture
def db(tmp_path: Path):
    database = Database(f"sqlite:///{tmp_path / 'school.db'}")
    yield database
    database.close()


def test_migrating_an_empty_file_creates_every_table_at_the_newest_revision(db: Database) -> None:
    db.migrate()
    tables = set(inspect(db.read_engine).get_table_names())
    assert tables >= SCHOOL_TABLES | INTEGRATION_TABLES
    assert db.current_revision() == db.head_revision()


def test_the_migrated_schema_matches_the_models_exactly(db: Database) -> None:
    from alembic.autogenerate import compare_metadata
    from alembic.runtime.migration import MigrationContext

    db.migrate()
    with db.read_engine.connect() as connection:
        differences = compare_metadata(MigrationContext.configure(connection), Base.metadata)
    assert differences == [], (
        "a model changed without a migration: run alembic revision --autogenerate"
    )


def test_migrating_twice_changes_nothing(db: Database) -> None:
    db.migrate()
    first = db.current_revision()
    db.migrate()
    assert db.current_revision() == first


def test_a_database_from_a_newer_release_is_refused_with_a_clear_message(db: Database) -> None:
    db.migrate()
    with db.writing() as session:
        session.execute(text("UPDATE alembic_version SET version_num = 'f00dface'"))
    with pytest.raises(DatabaseError, match="newer version of Switchboard"):
        db.migrate()


def test_sqlite_runs_in_wal_mode_with_foreign_keys_and_a_busy_timeout(db: Database) -> None:
    db.migrate()
    with db.read_engine.connect() as connection:
        assert connection.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert connection.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
        assert connection.exec_driver_sql("PRAGMA busy_timeout").scalar() >= 5000
        assert connection.exec_driver_sql("PRAGMA synchronous").scalar() == 2  # FULL


def test_foreign_keys_are_enforced(db: Database) -> None:
    db.migrate()

    def insert_orphan_lesson() -> None:
        with db.writing() as session:
            session.execute(
                text(
                    "INSERT INTO lessons (ref, title, teacher_id, starts_at, ends_at, status, "
                    "online, notes, created_at, updated_at, version) VALUES ('L-1', 'x', 999, "
                    "'2026-01-01 10:00:00', '2026-01-01 11:00:00', 'scheduled', 0, '', "
                    "'2026-01-01', '2026-01-01', 1)"
                )
            )

    with pytest.raises(Exception, match="FOREIGN KEY"):
        insert_orphan_lesson()


def test_naive_datetimes_are_refused_rather_than_guessed(db: Database) -> None:
    from app.store.integration import JobRun

    db.migrate()

    def store_naive_time() -> None:
        with db.writing() as session:
            session.add(JobRun(job_id="x", started_at=datetime(2026, 1, 1, 10, 0)))
            session.flush()

    with pytest.raises(Exception, match="naive datetime"):
        store_naive_time()


def test_an_unwritable_location_is_reported_in_plain_words(tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where the folder should be")
    with pytest.raises(DatabaseError, match=r"cannot create the folder .* choose another folder"):
        Database(f"sqlite:///{blocker / 'school.db'}")


def test_the_database_file_is_a_real_sqlite_database(db: Database, tmp_path: Path) -> None:
    db.migrate()
    with sqlite3.connect(tmp_path / "school.db") as connection:
        assert connection.execute("PRAGMA integrity_check").fetchone() == ("ok",)
