"""`switchboard audit verify` as a person runs it: intact after ordinary changes, broken (exit 1,
naming the first bad entry) after the database was edited behind Switchboard's back."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any

from app.config import DATABASE_FILE

FAST = ["--set", "latency_ms=1", "--set", "latency_p95_ms=2", "--set", "error_rate=0"]


def add(run: Any, name: str) -> int:
    added = run(
        "connection", "add", "sandbox-payments", "--name", name, *FAST,
        "--secret", "api_key=env:SANDBOX_KEY", "--json",
    )  # fmt: skip
    assert added.returncode == 0, added.stderr
    return int(json.loads(added.stdout)["id"])


def tamper(tmp_path: Path, statement: str) -> None:
    with sqlite3.connect(tmp_path / "data" / DATABASE_FILE) as database:
        database.execute(statement)


def test_an_empty_trail_is_intact(run: Any) -> None:
    checked = run("audit", "verify")
    assert checked.returncode == 0, checked.stderr
    assert checked.stdout.strip() == "The audit trail is intact: 0 entries."


def test_the_trail_is_intact_then_an_edited_entry_is_named(run: Any, tmp_path: Path) -> None:
    first = add(run, "Sandbox Pay")
    add(run, "Sandbox Cards")
    assert run("connection", "remove", str(first)).returncode == 0
    checked = run("audit", "verify")
    assert checked.returncode == 0, checked.stderr
    assert checked.stdout.strip() == "The audit trail is intact: 3 entries."
    assert json.loads(run("audit", "verify", "--json").stdout) == {
        "ok": True,
        "entries": 3,
        "first_bad": None,
    }

    tamper(tmp_path, "UPDATE audit_trail SET actor = 'someone else' WHERE seq = 2")
    broken = run("audit", "verify")
    assert broken.returncode == 1
    assert broken.stdout.strip() == (
        "The audit trail is broken at entry 2 (id 2): "
        "its contents were changed after it was written."
    )
    document = json.loads(run("audit", "verify", "--json").stdout)
    assert document["ok"] is False
    assert document["first_bad"] == {
        "seq": 2,
        "id": 2,
        "reason": "its contents were changed after it was written",
    }


def test_a_deleted_entry_is_named(run: Any, tmp_path: Path) -> None:
    for name in ("One", "Two", "Three"):
        add(run, name)
    tamper(tmp_path, "DELETE FROM audit_trail WHERE seq = 2")
    broken = run("audit", "verify", "--json")
    assert broken.returncode == 1
    bad = json.loads(broken.stdout)["first_bad"]
    assert (bad["seq"], bad["id"]) == (3, 3)
    assert "entry 2 before it is missing" in bad["reason"]


def test_a_deleted_last_entry_is_named(run: Any, tmp_path: Path) -> None:
    for name in ("One", "Two"):
        add(run, name)
    tamper(tmp_path, "DELETE FROM audit_trail WHERE seq = 2")
    broken = run("audit", "verify")
    assert broken.returncode == 1
    assert broken.stdout.startswith("The audit trail is broken at entry 2 (id 2): entry 2 is")


def test_bad_usage_exits_2(run: Any) -> None:
    assert run("audit").returncode == 2
    assert run("audit", "rewrite").returncode == 2
