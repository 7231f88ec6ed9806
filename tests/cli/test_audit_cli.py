"""`switchboard audit verify` as a person runs it: intact after ordinary changes, broken (exit 1,
naming the first bad entry) after the database was edited behind Switchboard's back; and
`switchboard audit export`, the trail (filtered) to a CSV file."""

from __future__ import annotations

import csv
import json
import sqlite3
from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from app.config import DATABASE_FILE
from app.services.audit import entry_hash
from app.store.audit import AuditRow

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


def swap_2_and_3(database: sqlite3.Connection) -> None:
    database.execute("UPDATE audit_trail SET seq = -1 WHERE seq = 2")
    database.execute("UPDATE audit_trail SET seq = 2 WHERE seq = 3")
    database.execute("UPDATE audit_trail SET seq = 3 WHERE seq = -1")


def insert_a_copy_of_1_as_2(database: sqlite3.Connection) -> None:
    """A forged entry slipped in after the first: the rest renumbered to leave no gap."""
    database.execute("UPDATE audit_trail SET seq = seq + 10 WHERE seq >= 2")
    database.execute("UPDATE audit_trail SET seq = seq - 9 WHERE seq >= 12")
    database.execute(
        "INSERT INTO audit_trail "
        "(seq, at, actor, machine, action, record_kind, record_id, summary, prev_hash, hash) "
        "SELECT 2, at, actor, machine, action, record_kind, record_id, summary, prev_hash, hash "
        "FROM audit_trail WHERE seq = 1"
    )


def append_a_forged_4_linked_to_3(database: sqlite3.Connection) -> None:
    """A forger who knows the scheme: linked to the last entry, its own hash right."""
    at, last_hash = database.execute("SELECT at, hash FROM audit_trail WHERE seq = 3").fetchone()
    row = AuditRow(
        seq=4,
        at=datetime.fromisoformat(at).replace(tzinfo=UTC),
        actor="someone",
        machine="elsewhere",
        action="connection.removed",
        record_kind="connection",
        record_id="1",
        summary={"before": {"name": "One"}, "after": None},
        prev_hash=last_hash,
    )
    database.execute(
        "INSERT INTO audit_trail "
        "(seq, at, actor, machine, action, record_kind, record_id, summary, prev_hash, hash) "
        "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (
            4, at, row.actor, row.machine, row.action, row.record_kind, row.record_id,
            json.dumps(row.summary), row.prev_hash, entry_hash(row),
        ),
    )  # fmt: skip


@pytest.mark.parametrize(
    ("change", "seq", "row_id", "reason"),
    [
        (swap_2_and_3, 2, 3, "it does not follow the entry before it"),
        (insert_a_copy_of_1_as_2, 2, 4, "it does not follow the entry before it"),
        (append_a_forged_4_linked_to_3, 4, None, "entries after 3 were added outside Switchboard"),
    ],
    ids=["two entries swapped", "a copy inserted", "a forged entry appended"],
)
def test_reordered_and_inserted_entries_are_named(
    run: Any,
    tmp_path: Path,
    change: Callable[[sqlite3.Connection], None],
    seq: int,
    row_id: int | None,
    reason: str,
) -> None:
    for name in ("One", "Two", "Three"):
        add(run, name)
    with sqlite3.connect(tmp_path / "data" / DATABASE_FILE) as database:
        change(database)
    broken = run("audit", "verify")
    assert broken.returncode == 1, broken.stderr
    shown_id = "unknown" if row_id is None else row_id
    assert broken.stdout.startswith(
        f"The audit trail is broken at entry {seq} (id {shown_id}): {reason}"
    ), broken.stdout
    as_json = run("audit", "verify", "--json")
    assert as_json.returncode == 1
    document = json.loads(as_json.stdout)
    assert document["ok"] is False
    assert (document["first_bad"]["seq"], document["first_bad"]["id"]) == (seq, row_id)
    assert document["first_bad"]["reason"].startswith(reason)


def test_bad_usage_exits_2(run: Any) -> None:
    assert run("audit").returncode == 2
    assert run("audit", "rewrite").returncode == 2


def read_csv(path: Path) -> list[dict[str, str]]:
    with path.open(newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def test_export_writes_the_trail_to_a_csv_file_and_notes_it(run: Any, tmp_path: Path) -> None:
    first = add(run, "Sandbox Pay")
    add(run, "Sandbox Cards")
    assert run("connection", "remove", str(first)).returncode == 0
    out = tmp_path / "trail.csv"
    exported = run("audit", "export", "--out", str(out))
    assert exported.returncode == 0, exported.stderr
    assert exported.stdout.strip() == f"Exported 3 audit entries to {out}."
    rows = read_csv(out)
    assert [row["seq"] for row in rows] == ["1", "2", "3"]
    assert [row["action"] for row in rows] == [
        "connection.added",
        "connection.added",
        "connection.removed",
    ]
    assert json.loads(rows[1]["after"])["name"] == "Sandbox Cards"
    assert "sk_sandbox_from_env" not in out.read_text(encoding="utf-8")
    # The export is an entry of its own, and the trail is still intact.
    checked = run("audit", "verify", "--json")
    assert json.loads(checked.stdout) == {"ok": True, "entries": 4, "first_bad": None}
    again = run("audit", "export", "--out", str(out), "--action", "audit")
    assert [row["action"] for row in read_csv(out)] == ["audit.exported"]
    assert again.returncode == 0, again.stderr


def test_export_filters_by_action_actor_and_days(run: Any, tmp_path: Path) -> None:
    first = add(run, "Sandbox Pay")
    assert run("connection", "remove", str(first)).returncode == 0
    out = tmp_path / "removed.csv"
    document = json.loads(
        run("audit", "export", "--out", str(out), "--action", "connection.removed", "--json").stdout
    )
    assert document == {
        "ok": True,
        "file": str(out),
        "entries": 1,
        "filter": {"action": "connection.removed"},
    }
    actor = read_csv(out)[0]["actor"]
    nobody = json.loads(
        run("audit", "export", "--out", str(out), "--actor", "nobody", "--json").stdout
    )
    assert nobody["entries"] == 0
    assert read_csv(out) == []
    mine = run("audit", "export", "--out", str(out), "--actor", actor, "--json")
    # The two changes and the two exports before this one, all by the command line's user.
    assert json.loads(mine.stdout)["entries"] == 4
    assert {row["action"] for row in read_csv(out)} == {
        "connection.added",
        "connection.removed",
        "audit.exported",
    }
    today = date.today()
    # Days are the school's (UTC by default): today's changes are in "since yesterday", none
    # are in "until the day before yesterday".
    changes = ("--out", str(out), "--action", "connection")
    since = run("audit", "export", *changes, "--since", str(today - timedelta(days=1)))
    assert since.stdout.startswith("Exported 2 audit entries"), since.stderr
    until = run("audit", "export", *changes, "--until", str(today - timedelta(days=2)))
    assert until.stdout.startswith("Exported 0 audit entries"), until.stderr


def test_export_refuses_a_date_it_cannot_read(run: Any, tmp_path: Path) -> None:
    bad = run("audit", "export", "--out", str(tmp_path / "x.csv"), "--since", "last tuesday")
    assert bad.returncode == 2
    assert "is not a date" in bad.stderr
    assert not (tmp_path / "x.csv").exists()


def test_export_to_a_folder_that_does_not_exist_fails_plainly(run: Any, tmp_path: Path) -> None:
    add(run, "Sandbox Pay")
    failed = run("audit", "export", "--out", str(tmp_path / "missing" / "x.csv"), "--json")
    assert failed.returncode == 1
    assert failed.stderr.startswith("switchboard: Cannot use")
    assert json.loads(failed.stdout)["ok"] is False
    checked = json.loads(run("audit", "verify", "--json").stdout)
    assert checked["entries"] == 1  # a failed export is not noted as one
