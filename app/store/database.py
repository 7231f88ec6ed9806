"""The Database: engines, sessions, migrations, and the threads database work runs on.

Services are asyncio code; SQLAlchemy sessions are blocking. `Database.read` and `Database.write`
run a function with a session on a small thread pool so neither the engine loop nor the GUI loop
ever waits on disk. Writes go through a single writer thread: in-process writers never contend.

Two databases are spoken, through the same models and migrations:
- SQLite, one file per school on one computer: each write transaction starts with
  `BEGIN IMMEDIATE`, so a write never fails half way with "database is locked" when another
  process (the CLI, a second engine) writes too.
- PostgreSQL (psycopg 3), shared by several office computers: READ COMMITTED transactions, queue
  work claimed with `FOR UPDATE SKIP LOCKED`, and migrations run under an advisory lock so two
  computers starting together do not both migrate.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

from alembic import command
from alembic.config import Config as AlembicConfig
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine, create_engine, event, func, pool, select
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session

from app.config import redact_url
from app.domain.errors import SwitchboardError
from app.store import integration, school  # noqa: F401 - registers every table on Base.metadata

log = logging.getLogger("switchboard.store")

T = TypeVar("T")

MIGRATIONS_DIR = Path(__file__).with_name("migrations")
# How long a write waits for another program's write to finish. The longest write is an
# all-or-nothing import of the largest file allowed (50 000 rows, about 20 s measured), so a
# second office PC or a CLI command waits for it rather than failing.
BUSY_TIMEOUT_MS = 30_000
BUSY = (
    "The database is busy with another program's or computer's work (perhaps a large import). "
    "Try again in a minute."
)


class DatabaseError(SwitchboardError):
    """The database cannot be opened or brought up to date."""


def _sqlite_engine(url: str, *, begin: str, foreign_keys: bool, poolclass: Any = None) -> Engine:
    engine = create_engine(
        url,
        connect_args={"check_same_thread": False, "timeout": BUSY_TIMEOUT_MS / 1000},
        poolclass=poolclass,
    )

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: sqlite3.Connection, _record: object) -> None:
        # Take transaction control away from pysqlite so BEGIN is ours (SQLAlchemy's documented
        # recipe for pysqlite), then set the pragmas every connection needs.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
        # FULL: a row acknowledged to a provider (a webhook) must survive a power cut.
        cursor.execute("PRAGMA synchronous=FULL")
        cursor.execute(f"PRAGMA foreign_keys={'ON' if foreign_keys else 'OFF'}")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(connection: Any) -> None:
        connection.exec_driver_sql(begin)

    return engine


@contextmanager
def _plain_errors() -> Iterator[None]:
    """ "database is locked" (another program held the write lock past the busy timeout) as a
    sentence a user can act on; everything else unchanged."""
    try:
        yield
    except OperationalError as exc:
        if "locked" in str(exc.orig).lower() or "busy" in str(exc.orig).lower():
            raise DatabaseError(BUSY) from exc
        raise


def _postgres_engine(url: str, *, poolclass: Any = None) -> Engine:
    return create_engine(
        url,
        pool_pre_ping=True,  # a server restarted overnight: reconnect, do not fail the first call
        poolclass=poolclass,
        connect_args={"connect_timeout": 10, "application_name": "Switchboard"},
    )


def postgres_url(url: str) -> str:
    """`postgresql://…` (as people and libpq write it) spoken through psycopg 3."""
    scheme, rest = url.split("://", 1)
    return f"postgresql+psycopg://{rest}" if scheme in {"postgresql", "postgres"} else url


# Migrations take this advisory lock (a number of our own) for their transaction, so a second
# computer starting at the same moment waits and then finds the schema up to date.
MIGRATION_LOCK = 0x5357_4D49  # "SWMI"


class Database:
    """One database, opened for the life of a process (the engine, the CLI, a test)."""

    def __init__(self, url: str, *, readers: int = 4) -> None:
        self.is_sqlite = url.startswith("sqlite")
        self.is_postgres = url.split("://", 1)[0].split("+", 1)[0] in {"postgresql", "postgres"}
        if not (self.is_sqlite or self.is_postgres):
            raise DatabaseError(
                f"{redact_url(url)} is neither a SQLite file nor a PostgreSQL database; "
                "write sqlite:///path/to/file.db or postgresql://user@server/database."
            )
        self.url = postgres_url(url) if self.is_postgres else url
        path = self.sqlite_path
        if path is not None:
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise DatabaseError(
                    f"Switchboard cannot create the folder {path.parent} for its database "
                    f"({exc.strerror or exc}); choose another folder with --data-dir."
                ) from exc
        if self.is_sqlite:
            self.read_engine = _sqlite_engine(url, begin="BEGIN", foreign_keys=True)
            self.write_engine = _sqlite_engine(url, begin="BEGIN IMMEDIATE", foreign_keys=True)
        else:
            self.read_engine = _postgres_engine(self.url)
            self.write_engine = self.read_engine
        self._readers = ThreadPoolExecutor(readers, thread_name_prefix="switchboard-db-read")
        self._writer = ThreadPoolExecutor(1, thread_name_prefix="switchboard-db-write")

    @property
    def sqlite_path(self) -> Path | None:
        location = self.url.split(":///", 1)[1] if ":///" in self.url else ""
        return Path(location) if location and location != ":memory:" else None

    @property
    def display_name(self) -> str:
        path = self.sqlite_path
        return f"SQLite · {path}" if path else redact_url(self.url)

    # --- sessions -------------------------------------------------------------------------------

    @contextmanager
    def reading(self) -> Iterator[Session]:
        with Session(self.read_engine, expire_on_commit=False) as session, session.begin():
            yield session

    @contextmanager
    def writing(self) -> Iterator[Session]:
        with Session(self.write_engine, expire_on_commit=False) as session, session.begin():
            yield session

    def _read(self, fn: Callable[..., T], args: tuple[Any, ...]) -> T:
        with _plain_errors(), self.reading() as session:
            return fn(session, *args)

    def _write(self, fn: Callable[..., T], args: tuple[Any, ...]) -> T:
        with _plain_errors(), self.writing() as session:
            return fn(session, *args)

    async def read(self, fn: Callable[..., T], *args: Any) -> T:
        """Run `fn(session, *args)` in a read transaction on a reader thread."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._readers, self._read, fn, args)

    async def write(self, fn: Callable[..., T], *args: Any) -> T:
        """Run `fn(session, *args)` in a write transaction on the writer thread; commit if it
        returns, roll back if it raises."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._writer, self._write, fn, args)

    async def data_version(self) -> tuple[int, int]:
        """SQLite: (which connection, its `PRAGMA data_version`) on the connection this process
        writes with. The version changes only when another connection (another program) has
        committed since it was last asked, so polling it hears other programs' writes."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._writer, self._data_version)

    def _data_version(self) -> tuple[int, int]:
        with self.write_engine.connect() as connection:
            raw = connection.connection.dbapi_connection
            assert raw is not None
            # On the DB-API connection itself: no transaction begins, so no lock is taken.
            (version,) = raw.execute("PRAGMA data_version").fetchone()
            return id(raw), int(version)

    # --- schema ---------------------------------------------------------------------------------

    def _alembic_config(self) -> AlembicConfig:
        cfg = AlembicConfig()
        cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
        cfg.set_main_option("sqlalchemy.url", self.url.replace("%", "%%"))
        return cfg

    def head_revision(self) -> str | None:
        return ScriptDirectory.from_config(self._alembic_config()).get_current_head()

    def current_revision(self) -> str | None:
        with self.read_engine.connect() as connection:
            return MigrationContext.configure(connection).get_current_revision()

    def migrate(self) -> None:
        """Bring the schema up to the newest revision; refuse a database from a newer release."""
        cfg = self._alembic_config()
        scripts = ScriptDirectory.from_config(cfg)
        try:
            current = self.current_revision()
        except OperationalError as exc:
            advice = (
                "Check that the folder exists and that you may write to it."
                if self.is_sqlite
                else "Check the server's address, the user name and password, and that the "
                "server is running and lets this computer in."
            )
            raise DatabaseError(
                f"Switchboard cannot open its database ({self.display_name}): "
                f"{str(exc.orig).strip().splitlines()[0].rstrip('.?')}. {advice}"
            ) from exc
        if current is not None and current not in {
            rev.revision for rev in scripts.walk_revisions()
        }:
            raise DatabaseError(
                f"The database {self.display_name} was last used by a newer version of "
                "Switchboard; install that version (or newer) to open it."
            )
        if current == scripts.get_current_head():
            return
        if self.is_sqlite:
            self._migrate_sqlite(cfg)
        else:
            self._migrate_postgres(cfg)
        log.info("database migrated", extra={"from_revision": current, "to": self.head_revision()})

    def _migrate_sqlite(self, cfg: AlembicConfig) -> None:
        # Foreign keys off while migrating: SQLite's batch "copy and move" drops tables, and a
        # DROP with foreign keys on would cascade deletes into the children.
        engine = _sqlite_engine(
            self.url, begin="BEGIN IMMEDIATE", foreign_keys=False, poolclass=pool.NullPool
        )
        try:
            with engine.begin() as connection:
                cfg.attributes["connection"] = connection
                command.upgrade(cfg, "head")
                broken = connection.exec_driver_sql("PRAGMA foreign_key_check").fetchall()
                if broken:
                    raise DatabaseError(
                        f"Upgrading the database left {len(broken)} broken references; "
                        "nothing was changed. Please report this with the log file."
                    )
        finally:
            engine.dispose()

    def _migrate_postgres(self, cfg: AlembicConfig) -> None:
        # PostgreSQL's DDL is transactional: the whole upgrade commits or none of it does.
        engine = _postgres_engine(self.url, poolclass=pool.NullPool)
        try:
            with engine.begin() as connection:
                connection.execute(select(func.pg_advisory_xact_lock(MIGRATION_LOCK)))
                cfg.attributes["connection"] = connection
                command.upgrade(cfg, "head")
        finally:
            engine.dispose()

    def close(self) -> None:
        """Finish queued work, stop the database threads and close every connection."""
        self._writer.shutdown(wait=True)
        self._readers.shutdown(wait=True)
        self.read_engine.dispose()
        if self.write_engine is not self.read_engine:
            self.write_engine.dispose()
