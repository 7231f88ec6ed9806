"""Fixtures every test can use: offscreen Qt, an in-memory credential store, and a fresh,
migrated database in a temporary data folder per test; tests marked `alone` run while no other
test does."""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

# Before anything imports Qt: there is no screen in CI.
os.environ["QT_QPA_PLATFORM"] = "offscreen"
os.environ.pop("SWITCHBOARD_DATA_DIR", None)
os.environ.pop("SWITCHBOARD_DB_URL", None)

import keyring
import pytest

from app.config import DATABASE_FILE, Config, resolve_config
from app.services import Services
from app.store.database import Database
from tests.support.databases import PostgresServer, emptied, migrated_database, server_or_skip
from tests.support.memory_keyring import MemoryKeyring

# A real HTTP server on loopback that tests script reply by reply (tests/fakes/scripted.py).
pytest_plugins = [
    "tests.fakes.scripted",
    "tests.support.providers",
    "tests.support.localstripe",
    "tests.support.radicale",  # a real CalDAV server, and a fresh calendar in it
    "tests.support.google",  # servers for Google's fakes
]


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item: pytest.Item, nextitem: pytest.Item | None) -> Iterator[None]:
    """A test marked `alone` measures how late the window's heartbeat is: another test busy on
    the other cores would be measured with it. Every test holds a shared lock from its setup
    (a worker's first test sets up the session's fixtures too) to its teardown, and an `alone`
    test an exclusive one; the gate keeps new tests from starting while an `alone` test waits
    for the running ones to end (so it is not starved)."""
    run_id = os.environ.get("PYTEST_XDIST_TESTRUNUID")
    if not run_id or sys.platform == "win32":
        yield  # one test at a time anyway (or no flock): nothing to arrange
        return
    import fcntl

    alone = item.get_closest_marker("alone") is not None
    folder = Path(tempfile.gettempdir())
    with (
        open(folder / f"switchboard-tests-{run_id}.gate", "a") as gate,
        open(folder / f"switchboard-tests-{run_id}.run", "a") as run,
    ):
        fcntl.flock(gate, fcntl.LOCK_EX)
        fcntl.flock(run, fcntl.LOCK_EX if alone else fcntl.LOCK_SH)
        if not alone:
            fcntl.flock(gate, fcntl.LOCK_UN)
        try:
            yield
        finally:
            fcntl.flock(run, fcntl.LOCK_UN)
            if alone:
                fcntl.flock(gate, fcntl.LOCK_UN)


@pytest.fixture(autouse=True)
def light_password_hashes(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    """Argon2id at its real cost (64 MiB, 3 passes) takes a fifth of a second a hash; tests
    that are not about the cost use a light one. Tests marked `real_password_cost` (and every
    command-line test: a process of its own) keep the real one."""
    if request.node.get_closest_marker("real_password_cost"):
        return
    from argon2 import PasswordHasher

    from app.services import users

    monkeypatch.setattr(users, "_passwords", PasswordHasher(time_cost=1, memory_cost=1024))
    monkeypatch.setattr(users, "KEY_COST", {"time_cost": 1, "memory_cost": 1024, "parallelism": 1})


@pytest.fixture(autouse=True)
def memory_keyring() -> Iterator[MemoryKeyring]:
    """Every test gets an empty in-memory credential store unless it asks for the real one."""
    previous = keyring.get_keyring()
    store = MemoryKeyring()
    keyring.set_keyring(store)
    yield store
    keyring.set_keyring(previous)


@pytest.fixture(scope="session")
def migrated_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One migrated database, copied for each test: migrating per test would cost seconds."""
    path = tmp_path_factory.mktemp("template") / DATABASE_FILE
    db = Database(f"sqlite:///{path}")
    db.migrate()
    db.close()
    return path


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    return tmp_path / "data"


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    server = server_or_skip()
    yield server
    server.admin.dispose()


@pytest.fixture(scope="session")
def postgres_database(postgres_server: PostgresServer) -> Iterator[str]:
    """One migrated PostgreSQL database per worker, emptied for each test."""
    name = migrated_database(postgres_server)
    yield name
    postgres_server.drop(name)


@pytest.fixture
def database_kind(request: pytest.FixtureRequest) -> str:
    """ "sqlite", or "postgresql" for a test of a module marked `both_databases` in its
    PostgreSQL run (see pytest_generate_tests)."""
    return str(getattr(request, "param", "sqlite"))


@pytest.fixture
def config(data_dir: Path, database_kind: str, request: pytest.FixtureRequest) -> Iterator[Config]:
    data_dir.mkdir(parents=True, exist_ok=True)
    if database_kind == "postgresql":
        server: PostgresServer = request.getfixturevalue("postgres_server")
        url = emptied(server, request.getfixturevalue("postgres_database"))
        yield resolve_config(str(data_dir), url, environ={})
        return
    shutil.copyfile(request.getfixturevalue("migrated_template"), data_dir / DATABASE_FILE)
    yield resolve_config(str(data_dir), environ={})


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Tests marked `both_databases` that use a database run twice: on SQLite and PostgreSQL."""
    if (
        "database_kind" in metafunc.fixturenames
        and metafunc.definition.get_closest_marker("both_databases") is not None
    ):
        metafunc.parametrize("database_kind", ["sqlite", "postgresql"], indirect=True)


@pytest.fixture
async def services(config: Config) -> AsyncIterator[Services]:
    opened = await Services.open(config)
    try:
        yield opened
    finally:
        await opened.close()


def pytest_xdist_auto_num_workers(config: pytest.Config) -> int:
    """`-n auto`: one worker more than the cores (at most four). Many tests wait on servers and
    processes of their own rather than compute, and a worker waiting leaves its core to another."""
    return min(4, (os.cpu_count() or 1) + 1)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The long tests first (those marked slow, then the command-line tests, each a process of
    its own), so that the workers finish together: a long test handed out last keeps one core
    busy while the other has nothing left to do."""
    cli = Path(__file__).parent / "cli"

    def late(item: pytest.Item) -> tuple[bool, bool, bool]:
        # The `alone` tests first of all, while the other workers are still starting.
        return (
            item.get_closest_marker("alone") is None,
            item.get_closest_marker("slow") is None,
            cli not in item.path.parents,
        )

    items.sort(key=late)
