"""The database tests run on both databases Switchboard speaks: SQLite and PostgreSQL.

`SWITCHBOARD_TEST_POSTGRES` names a PostgreSQL server and a user that may create databases
(`postgresql://user:password@127.0.0.1/postgres`; `.ci/run` starts the machine's server and sets
it). Each test worker migrates a database of its own once; each test starts from it emptied
(one TRUNCATE of every table, identities restarted: a copied database per test cost seconds).

Without the variable the PostgreSQL runs are skipped with that reason on a developer's machine;
under CI they fail instead, so a CI that lost its server cannot pass by skipping them.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from sqlalchemy import Engine, create_engine, text
from sqlalchemy.engine import make_url

from app.store.database import Database, postgres_url

ENV = "SWITCHBOARD_TEST_POSTGRES"


@dataclass
class PostgresServer:
    """A server tests may create and drop databases on."""

    admin_url: str
    admin: Engine
    prefix: str
    _numbers: Iterator[int]

    @property
    def password(self) -> str:
        """The test user's password, as the server's address gives it."""
        return str(make_url(self.admin_url).password or "")

    def url_of(self, name: str) -> str:
        return make_url(self.admin_url).set(database=name).render_as_string(hide_password=False)

    def create(self) -> str:
        name = f"{self.prefix}_{next(self._numbers)}"
        with self.admin.connect() as connection:
            connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
            connection.execute(text(f'CREATE DATABASE "{name}"'))
        return name

    def drop(self, name: str) -> None:
        with self.admin.connect() as connection:
            connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


def server_or_skip() -> PostgresServer:
    url = os.environ.get(ENV)
    if not url:
        reason = f"no PostgreSQL server for the tests: set {ENV} (see tests/support/databases.py)"
        if os.environ.get("CI"):
            pytest.fail(reason + "; CI must run the database tests on PostgreSQL too")
        pytest.skip(reason)
    admin_url = postgres_url(url)
    worker = os.environ.get("PYTEST_XDIST_WORKER", "main")
    return PostgresServer(
        admin_url=admin_url,
        admin=create_engine(admin_url, isolation_level="AUTOCOMMIT"),
        prefix=f"sbtest_{os.getpid()}_{worker}",
        _numbers=itertools.count(1),
    )


def migrated_database(server: PostgresServer) -> str:
    name = server.create()
    db = Database(server.url_of(name))
    try:
        db.migrate()
    finally:
        db.close()
    return name


def emptied(server: PostgresServer, name: str) -> str:
    """The worker's database with every table emptied (the schema's version kept); any
    connection a previous test left open is closed first, as it would hold TRUNCATE back."""
    engine = create_engine(server.url_of(name), isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as connection:
            connection.execute(
                text(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                    "WHERE datname = current_database() AND pid <> pg_backend_pid() "
                    "AND usename = current_user"  # the server's autovacuum is not ours to end
                )
            )
            tables = connection.scalars(
                text(
                    "SELECT quote_ident(tablename) FROM pg_tables "
                    "WHERE schemaname = 'public' AND tablename <> 'alembic_version'"
                )
            ).all()
            connection.execute(text(f"TRUNCATE {', '.join(tables)} RESTART IDENTITY CASCADE"))
    finally:
        engine.dispose()
    return server.url_of(name)
