"""Fixtures every test can use: offscreen Qt, an in-memory credential store, and a fresh,
migrated database in a temporary data folder per test."""

from __future__ import annotations

import os
import shutil
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
from tests.support.memory_keyring import MemoryKeyring

# A real HTTP server on loopback that tests script reply by reply (tests/fakes/scripted.py).
pytest_plugins = [
    "tests.fakes.scripted",
    "tests.support.providers",
    "tests.support.localstripe",
    "tests.support.radicale",  # a real CalDAV server, and a fresh calendar in it
    "tests.support.google",  # servers for Google's fakes
]


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


@pytest.fixture
def config(data_dir: Path, migrated_template: Path) -> Config:
    data_dir.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(migrated_template, data_dir / DATABASE_FILE)
    return resolve_config(str(data_dir), environ={})


@pytest.fixture
async def services(config: Config) -> AsyncIterator[Services]:
    opened = await Services.open(config)
    try:
        yield opened
    finally:
        await opened.close()
