"""`switchboard backup create|restore` and `settings export|import` as a person runs them: a
backup is made and listed, the dry run says what a backup holds and changes nothing, a restore
brings it back and names the copy that undoes it, a bad file exits 1 with one sentence, and bad
usage exits 2."""

from __future__ import annotations

import hashlib
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


def names(run: Any) -> list[str]:
    listed = run("connection", "list", "--json")
    assert listed.returncode == 0, listed.stderr
    return sorted(item["name"] for item in json.loads(listed.stdout))


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_a_backup_is_made_in_the_backups_folder_or_where_asked(run: Any, tmp_path: Path) -> None:
    made = run("backup", "create")
    assert made.returncode == 0, made.stderr
    [backup] = (tmp_path / "data" / "backups").iterdir()
    assert made.stdout.startswith(f"The database was backed up to {backup} (")

    out = tmp_path / "term-end.db"
    document = run("backup", "create", "--out", str(out), "--json")
    assert document.returncode == 0, document.stderr
    shown = json.loads(document.stdout)
    assert shown["ok"] is True
    assert shown["file"] == str(out)
    assert shown["size_bytes"] == out.stat().st_size
    assert shown["automatic"] is False


def test_the_dry_run_says_what_a_backup_holds_and_changes_nothing(run: Any, tmp_path: Path) -> None:
    add(run, "Card payments")
    out = tmp_path / "backup.db"
    assert run("backup", "create", "--out", str(out)).returncode == 0
    add(run, "Added after the backup")
    database = tmp_path / "data" / DATABASE_FILE
    before = (digest(database), digest(out))

    checked = run("backup", "restore", str(out), "--dry-run")

    assert checked.returncode == 0, checked.stderr
    first, second = checked.stdout.strip().splitlines()
    assert first.startswith("backup.db is a sound backup, taken ")
    assert "1 connection," in first
    assert second == "Nothing was changed. Run again without --dry-run to restore it."
    assert (digest(database), digest(out)) == before
    assert names(run) == ["Added after the backup", "Card payments"]
    document = json.loads(run("backup", "restore", str(out), "--dry-run", "--json").stdout)
    assert document["dry_run"] is True
    assert document["counts"]["connections"] == 1
    assert document["up_to_date"] is True


def test_a_restore_brings_the_backup_back_and_names_the_copy_that_undoes_it(
    run: Any, tmp_path: Path
) -> None:
    add(run, "Card payments")
    out = tmp_path / "backup.db"
    assert run("backup", "create", "--out", str(out)).returncode == 0
    add(run, "Added after the backup")

    asked = run("backup", "restore", str(out))  # no terminal to answer on
    assert asked.returncode == 2
    assert "add --yes to confirm it" in asked.stderr
    assert names(run) == ["Added after the backup", "Card payments"]

    restored = run("backup", "restore", str(out), "--yes", "--json")

    assert restored.returncode == 0, restored.stderr
    document = json.loads(restored.stdout)
    safety = Path(document["safety_copy"])
    assert safety.parent == tmp_path / "data"
    assert document["migrated"] is False
    assert names(run) == ["Card payments"]
    verified = json.loads(run("audit", "verify", "--json").stdout)
    assert verified["ok"] is True

    undone = run("backup", "restore", str(safety), "--yes")
    assert undone.returncode == 0, undone.stderr
    assert undone.stdout.startswith(f"The database was restored from {safety.name}")
    assert "restore that file to undo." in undone.stdout
    assert names(run) == ["Added after the backup", "Card payments"]


def test_a_bad_file_exits_1_with_one_sentence_and_changes_nothing(run: Any, tmp_path: Path) -> None:
    add(run, "Card payments")
    database = tmp_path / "data" / DATABASE_FILE
    before = digest(database)
    notes = tmp_path / "notes.db"
    notes.write_text("term dates\n")

    refused = run("backup", "restore", str(notes), "--yes")

    assert refused.returncode == 1
    assert refused.stdout == ""
    assert refused.stderr == (
        "switchboard: notes.db is not a Switchboard backup (not a SQLite database); choose a "
        "file that `switchboard backup create` or Back up now made.\n"
    )
    assert digest(database) == before
    missing = run("backup", "restore", str(tmp_path / "missing.db"), "--json")
    assert missing.returncode == 1
    assert json.loads(missing.stdout)["ok"] is False
    assert missing.stderr.count("\n") == 1


def test_bad_usage_exits_2(run: Any) -> None:
    for args in (("backup",), ("backup", "restore"), ("backup", "shred"), ("settings",)):
        result = run(*args)
        assert result.returncode == 2, args
        assert "usage: switchboard" in result.stderr


def test_settings_are_exported_without_secrets_and_imported(run: Any, tmp_path: Path) -> None:
    add(run, "Card payments")
    out = tmp_path / "settings.json"
    exported = run("settings", "export", "--out", str(out))
    assert exported.returncode == 0, exported.stderr
    assert "sk_sandbox_from_env" not in out.read_text("utf-8")
    document = json.loads(out.read_text("utf-8"))
    document["settings"]["school.name"] = "Harare Music School"
    out.write_text(json.dumps(document))

    imported = run("settings", "import", str(out), "--json")

    assert imported.returncode == 0, imported.stderr
    assert json.loads(imported.stdout)["settings_changed"] == ["school.name"]
    document["settings"]["receiver.port"] = "eighty"
    out.write_text(json.dumps(document))
    refused = run("settings", "import", str(out))
    assert refused.returncode == 1
    assert refused.stderr.startswith("switchboard: Nothing was imported from settings.json: ")


def test_a_restore_is_refused_while_another_program_has_the_database_open(
    run: Any, tmp_path: Path
) -> None:
    out = tmp_path / "backup.db"
    assert run("backup", "create", "--out", str(out)).returncode == 0
    database = tmp_path / "data" / DATABASE_FILE
    other = sqlite3.connect(database)  # as a running Switchboard holds it
    try:
        other.execute("SELECT count(*) FROM settings").fetchone()
        refused = run("backup", "restore", str(out), "--yes")
    finally:
        other.close()
    assert refused.returncode == 1
    assert "is using the database" in refused.stderr
    assert "close it and try again." in refused.stderr


def test_a_damaged_database_is_replaced_by_a_sound_backup_and_kept(
    run: Any, tmp_path: Path
) -> None:
    add(run, "Card payments")
    out = tmp_path / "backup.db"
    assert run("backup", "create", "--out", str(out)).returncode == 0
    database = tmp_path / "data" / DATABASE_FILE
    database.write_bytes(b"the disk failed here" * 100)
    for side in ("-wal", "-shm"):
        database.with_name(database.name + side).unlink(missing_ok=True)

    restored = run("backup", "restore", str(out), "--yes", "--json")

    assert restored.returncode == 0, restored.stderr
    safety = Path(json.loads(restored.stdout)["safety_copy"])
    assert safety.read_bytes().startswith(b"the disk failed here")
    assert names(run) == ["Card payments"]
