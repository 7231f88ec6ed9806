"""`switchboard database move --to URL` as the IT helper runs it: the school's SQLite database is
copied into an empty PostgreSQL database and verified, the next commands on this computer work
on the shared database (its password from the credential store, not the address), the SQLite
file stays; a password on the command line is bad usage, and a database that holds data is
refused with one sentence."""

from __future__ import annotations

import hashlib
import json
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from app.config import DATABASE_CHOICE_FILE, DATABASE_FILE, without_password
from tests.support.databases import PostgresServer

FAST = ["--set", "latency_ms=1", "--set", "latency_p95_ms=2", "--set", "error_rate=0"]


@pytest.fixture
def with_password(run: Any, postgres_server: PostgresServer) -> Any:
    """The command's environment with the test user's password given the way the IT helper would."""

    def environment(run: Any) -> dict[str, str]:
        return {**run.environment, "SWITCHBOARD_DB_PASSWORD": postgres_server.password}

    return environment


@pytest.fixture
def target(postgres_server: PostgresServer) -> Iterator[str]:
    """A new, empty PostgreSQL database, its address without the password."""
    name = postgres_server.create()
    url = postgres_server.url_of(name)
    yield without_password(url)[0].replace("postgresql+psycopg://", "postgresql://")
    postgres_server.drop(name)


def add(run: Any, name: str) -> None:
    added = run(
        "connection", "add", "sandbox-payments", "--name", name, *FAST,
        "--secret", "api_key=-", "--json", stdin="sk_kept_in_the_store\n",
    )  # fmt: skip
    assert added.returncode == 0, added.stderr


def names(run: Any) -> list[str]:
    listed = run("connection", "list", "--json")
    assert listed.returncode == 0, listed.stderr
    return sorted(item["name"] for item in json.loads(listed.stdout))


def contents(path: Path) -> str:
    connection = sqlite3.connect(path)
    try:
        return hashlib.sha256("\n".join(connection.iterdump()).encode()).hexdigest()
    finally:
        connection.close()


def test_the_move_verifies_the_copy_and_this_computer_then_uses_it(
    run: Any, target: str, tmp_path: Path, with_password: Any
) -> None:
    add(run, "Card payments")
    add(run, "Mobile money")
    sqlite_file = tmp_path / "data" / DATABASE_FILE
    before = contents(sqlite_file)

    moved = run("database", "move", "--to", target, "--json", env=with_password(run))
    assert moved.returncode == 0, moved.stderr
    document = json.loads(moved.stdout)
    assert document["ok"] is True
    assert document["verified"] is True
    assert document["problems"] == []
    tables = {table["table"]: table for table in document["tables"]}
    assert tables["provider_connections"]["source_rows"] == 2
    assert tables["provider_connections"]["target_rows"] == 2
    assert document["audit"]["ok"] is True
    assert "copied" in moved.stderr
    assert f"of {document['rows']:,} rows" in moved.stderr

    choice = tmp_path / "data" / "config" / DATABASE_CHOICE_FILE
    assert document["choice_file"] == str(choice)
    assert json.loads(choice.read_text()) == {"url": target}
    # The old file is the way back: still there, as it was.
    assert document["old_database"] == str(sqlite_file)
    assert contents(sqlite_file) == before

    # From now on this computer works on the shared database, with the password from the store.
    assert names(run) == ["Card payments", "Mobile money"]
    add(run, "Added on the server")
    assert names(run) == ["Added on the server", "Card payments", "Mobile money"]
    assert contents(sqlite_file) == before
    verified = run("audit", "verify", "--json")
    assert verified.returncode == 0, verified.stderr


def test_the_verification_table_is_printed(run: Any, target: str, with_password: Any) -> None:
    add(run, "Card payments")
    moved = run("database", "move", "--to", target, env=with_password(run))
    assert moved.returncode == 0, moved.stderr
    lines = moved.stdout.splitlines()
    assert lines[0].split() == ["Table", "Here", "Shared", "Check"]
    assert any(line.split()[:4] == ["provider_connections", "1", "1", "same"] for line in lines)
    assert lines[-1].startswith("Verified: ")
    assert "delete" in lines[-1]
    assert DATABASE_CHOICE_FILE in lines[-1]


def test_a_password_on_the_command_line_is_bad_usage(run: Any, target: str) -> None:
    with_secret = target.replace("://switchboard@", "://switchboard:switchboard@")
    refused = run("database", "move", "--to", with_secret)
    assert refused.returncode == 2
    assert "SWITCHBOARD_DB_PASSWORD" in refused.stderr
    assert len(refused.stderr.strip().splitlines()) == 1


def test_a_database_that_holds_data_is_refused_with_one_sentence(
    run: Any, target: str, tmp_path: Path, with_password: Any
) -> None:
    add(run, "Card payments")
    assert run("database", "move", "--to", target, env=with_password(run)).returncode == 0
    other_school = ["--data-dir", str(tmp_path / "other")]
    refused = run(
        *other_school, "database", "move", "--to", target, "--json", env=with_password(run)
    )
    assert refused.returncode == 1
    error = refused.stderr.strip().removeprefix("switchboard: ")
    assert json.loads(refused.stdout) == {"ok": False, "error": error}
    [sentence] = refused.stderr.strip().splitlines()
    assert "already holds school data" in sentence
    assert not (tmp_path / "other" / "config" / DATABASE_CHOICE_FILE).exists()
