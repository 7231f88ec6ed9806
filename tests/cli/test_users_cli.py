"""`switchboard user …` and the service user: the command line acts as a user of its own, and
its role is what it may do."""

from __future__ import annotations

import json
from typing import Any

FAST = ["--set", "latency_ms=1", "--set", "latency_p95_ms=2", "--set", "error_rate=0"]


def test_the_first_person_added_is_the_administrator(run: Any) -> None:
    refused = run(
        "user", "add", "Ada", "--role", "staff", "--password", "-", stdin="a long password\n"
    )
    assert refused.returncode == 1
    assert "first person must be an administrator" in refused.stderr
    added = run(
        "user", "add", "Ada", "--role", "administrator", "--password", "-", "--json",
        stdin="a long password\n",
    )  # fmt: skip
    assert added.returncode == 0, added.stderr
    assert json.loads(added.stdout)["role"] == "administrator"
    bob = run(
        "user", "add", "Bob", "--role", "finance", "--password", "env:BOB_PASSWORD",
        env={**run.environment, "BOB_PASSWORD": "bob's long password"},
    )  # fmt: skip
    assert bob.returncode == 0, bob.stderr
    assert bob.stdout.strip() == "Bob: Finance."
    listed = json.loads(run("user", "list", "--json").stdout)["users"]
    assert [(u["name"], u["role"], u["service"]) for u in listed] == [
        ("Ada", "administrator", False),
        ("Bob", "finance", False),
        ("service", "administrator", True),
    ]
    assert "a long password" not in run("user", "list").stdout


def test_a_password_is_never_taken_from_the_command_line(run: Any) -> None:
    typed = run("user", "add", "Ada", "--role", "administrator", "--password", "hunter2hunter2")
    assert typed.returncode == 1
    assert "never appears on the command line" in typed.stderr
    weak = run("user", "add", "Ada", "--role", "administrator", "--password", "-", stdin="short\n")
    assert weak.returncode == 1
    assert "at least 10 characters" in weak.stderr


def test_a_bad_role_is_bad_usage(run: Any) -> None:
    bad = run("user", "add", "Ada", "--role", "boss", "--password", "-")
    assert bad.returncode == 2
    assert "'boss' is not a role" in bad.stderr


def test_the_command_line_obeys_the_service_users_role(run: Any) -> None:
    lowered = run("user", "set-role", "service", "viewer")
    assert lowered.returncode == 0, lowered.stderr
    refused = run(
        "connection", "add", "sandbox-payments", "--name", "Pay", *FAST,
        "--secret", "api_key=env:SANDBOX_KEY",
    )  # fmt: skip
    assert refused.returncode == 1
    assert "The service user (Viewer) may not change connections" in refused.stderr
    assert json.loads(run("connection", "list", "--json").stdout) == []  # reading still works
    # Nor can it give itself its rights back: an administrator does that in the app.
    again = run("user", "set-role", "service", "administrator")
    assert again.returncode == 1
    assert "may not manage users" in again.stderr
    audit = json.loads(run("audit", "verify", "--json").stdout)
    assert audit["ok"]


def test_an_unknown_user_is_named(run: Any) -> None:
    missing = run("user", "disable", "Nobody")
    assert missing.returncode == 1
    assert "There is no user called Nobody" in missing.stderr


def test_nothing_waits_for_approval_at_first(run: Any) -> None:
    listed = run("approvals", "list")
    assert listed.returncode == 0, listed.stderr
    assert listed.stdout.strip() == "Nothing waits for approval."


def test_settings_are_listed_and_changed_from_the_command_line(run: Any) -> None:
    listed = json.loads(run("settings", "list", "--json").stdout)["settings"]
    assert listed["approvals.refund_above"] == 0
    changed = run("settings", "set", "approvals.refund_above", "250", "--json")
    assert changed.returncode == 0, changed.stderr
    assert json.loads(changed.stdout)["value"] == 250
    bad = run("settings", "set", "approvals.refund_above", "lots")
    assert bad.returncode == 1
    assert "must be a whole number" in bad.stderr
    unknown = run("settings", "set", "approvals.everything", "1")
    assert unknown.returncode == 1
    assert "There is no setting approvals.everything" in unknown.stderr
