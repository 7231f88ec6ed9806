"""`switchboard api-key` as an operator runs it: a key is rotated, the new one printed once,
both listed with their state, the old one refused once its overlap ends; and a connection whose
secrets are references works with no credential store at all."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any

from app.config import DATABASE_FILE
from app.providers.webhooks import new_standard_webhooks_secret


def make_key(run: Any) -> dict[str, Any]:
    made = run("api-key", "create", "Zapier", "--json")
    assert made.returncode == 0, made.stderr
    return dict(json.loads(made.stdout))


def keys(run: Any) -> dict[int, dict[str, Any]]:
    listed = run("api-key", "list", "--json")
    assert listed.returncode == 0, listed.stderr
    return {key["id"]: key for key in json.loads(listed.stdout)["keys"]}


def test_rotate_prints_the_new_key_once_and_lists_both_with_their_state(
    run: Any, tmp_path: Path
) -> None:
    old = make_key(run)

    rotated = run("api-key", "rotate", str(old["id"]), "--json")
    assert rotated.returncode == 0, rotated.stderr
    document = json.loads(rotated.stdout)
    assert document["name"] == "Zapier"
    assert document["state"] == "active"
    assert document["key"].startswith("sbk_")
    assert document["key"] != old["key"]
    assert document["replaces"]["id"] == old["id"]
    assert document["replaces"]["state"] == "rotating"
    assert document["replaces"]["replaced_by"] == document["id"]
    assert document["replaces"]["expires_at"] is not None

    listed = keys(run)
    assert listed[old["id"]]["state"] == "rotating"
    assert listed[document["id"]]["state"] == "active"
    assert all("key" not in key for key in listed.values())  # never shown again
    text = run("api-key", "list")
    assert f"{old['id']}  {old['prefix']}…  Zapier  rotated, works until" in text.stdout

    database = (tmp_path / "data" / DATABASE_FILE).read_bytes()
    assert document["key"].encode() not in database
    assert old["key"].encode() not in database
    verified = run("audit", "verify", "--json")
    assert json.loads(verified.stdout)["entries"] == 2  # created, rotated


def test_the_old_key_is_refused_once_the_overlap_has_passed(run: Any, tmp_path: Path) -> None:
    old = make_key(run)
    rotated = run("api-key", "rotate", str(old["id"]))
    assert rotated.returncode == 0, rotated.stderr
    assert "Copy it now: it is not shown again. The old key works until" in rotated.stdout
    with sqlite3.connect(tmp_path / "data" / DATABASE_FILE) as database:
        database.execute(
            "UPDATE api_keys SET expires_at = '2000-01-01 00:00:00.000000' WHERE id = ?",
            (old["id"],),
        )
    assert keys(run)[old["id"]]["state"] == "expired"
    again = run("api-key", "rotate", str(old["id"]))
    assert again.returncode == 1
    assert "was rotated already" in again.stderr


def test_rotating_a_revoked_or_unknown_key_fails_plainly(run: Any) -> None:
    key = make_key(run)
    assert run("api-key", "revoke", str(key["id"])).returncode == 0
    refused = run("api-key", "rotate", str(key["id"]))
    assert refused.returncode == 1
    assert refused.stderr.strip().endswith(
        f"API key {key['id']} is revoked, so it cannot be rotated; make a new key with "
        "`switchboard api-key create`."
    )
    missing = run("api-key", "rotate", "999")
    assert missing.returncode == 1
    assert "There is no API key 999" in missing.stderr


def test_a_connection_secret_by_reference_needs_no_credential_store(run: Any) -> None:
    no_store = {**run.environment, "PYTHON_KEYRING_BACKEND": "keyring.backends.fail.Keyring"}
    added = run(
        "connection", "add", "sandbox-payments", "--name", "Gateway",
        "--set", "latency_ms=1", "--set", "latency_p95_ms=2", "--set", "error_rate=0",
        "--secret-ref", "api_key=env:SANDBOX_KEY", "--json",
        env=no_store,
    )  # fmt: skip
    assert added.returncode == 0, added.stderr
    record = json.loads(added.stdout)
    assert record["secret_refs"] == {"api_key": "env:SANDBOX_KEY"}

    tested = run("connection", "test", str(record["id"]), env=no_store)
    assert tested.returncode == 0, tested.stderr
    assert tested.stdout.startswith("ok")

    without = {key: value for key, value in no_store.items() if key != "SANDBOX_KEY"}
    failed = run("connection", "test", str(record["id"]), env=without)
    assert failed.returncode == 1
    assert "The environment variable SANDBOX_KEY" in failed.stderr
    assert "is not set" in failed.stderr


def test_a_webhook_signing_secret_is_rotated_with_the_old_one_kept_for_the_overlap(
    run: Any,
) -> None:
    old, new = new_standard_webhooks_secret(), new_standard_webhooks_secret()
    added = run(
        "connection", "add", "sandbox-payments", "--name", "Gateway",
        "--secret", "api_key=env:SANDBOX_KEY", "--secret", "webhook_secret=-", "--json",
        stdin=old + "\n",
    )  # fmt: skip
    assert added.returncode == 0, added.stderr
    connection = json.loads(added.stdout)["id"]
    rotated = run(
        "connection", "rotate-secret", str(connection), "--secret", "-", "--json", stdin=new + "\n"
    )
    assert rotated.returncode == 0, rotated.stderr
    answer = json.loads(rotated.stdout)
    assert answer["rotated"] is True
    assert answer["old_accepted_until"] is not None  # 24 hours from now by default
    assert old not in rotated.stdout + rotated.stderr
    assert new not in rotated.stdout + rotated.stderr
    typed = run("connection", "rotate-secret", str(connection), "--secret", new)
    assert typed.returncode == 1
    assert "never appears on the command line" in typed.stderr
