"""`switchboard provider kinds` and `switchboard connection add|list|test|remove`."""

from __future__ import annotations

import json
import sys
from pathlib import Path

SWITCHBOARD = Path(sys.executable).with_name("switchboard")
ROOT = Path(__file__).resolve().parents[2]
FAST = ["--set", "latency_ms=1", "--set", "latency_p95_ms=2", "--set", "error_rate=0"]


def test_provider_kinds_lists_each_kind_with_its_fields(run) -> None:  # type: ignore[no-untyped-def]
    completed = run("provider", "kinds", "--json")
    assert completed.returncode == 0, completed.stderr
    kinds = {kind["key"]: kind for kind in json.loads(completed.stdout)}
    sandbox = kinds["sandbox-payments"]
    assert sandbox["category"] == "payments"
    fields = {field["name"]: field for field in sandbox["fields"]}
    assert fields["api_key"]["kind"] == "secret"
    assert fields["api_key"]["required"] is True
    assert fields["error_rate"]["required"] is False


def test_a_connection_is_added_tested_listed_and_removed_with_its_secret(run) -> None:  # type: ignore[no-untyped-def]
    added = run(
        "connection",
        "add",
        "sandbox-payments",
        "--name",
        "Sandbox Pay",
        *FAST,
        "--secret",
        "api_key=env:SANDBOX_KEY",
        "--check-every",
        "120",
        "--json",
    )
    assert added.returncode == 0, added.stderr
    connection = json.loads(added.stdout)
    assert connection["secrets"] == ["api_key"]
    assert connection["check_every"] == 120
    assert "sk_sandbox_from_env" not in added.stdout
    assert "sk_sandbox_from_env" in run.keyring_file.read_text()

    tested = run("connection", "test", str(connection["id"]), "--json")
    assert tested.returncode == 0, tested.stderr
    assert json.loads(tested.stdout)["ok"] is True

    listed = json.loads(run("connection", "list", "--json").stdout)
    assert [(c["name"], c["paused"]) for c in listed] == [("Sandbox Pay", False)]
    assert "sk_sandbox_from_env" not in json.dumps(listed)

    removed = run("connection", "remove", str(connection["id"]))
    assert removed.returncode == 0, removed.stderr
    assert json.loads(run.keyring_file.read_text()) == {}
    assert json.loads(run("connection", "list", "--json").stdout) == []


def test_a_secret_can_come_from_standard_input(run) -> None:  # type: ignore[no-untyped-def]
    added = run(
        "connection",
        "add",
        "sandbox-payments",
        "--name",
        "Piped",
        *FAST,
        "--secret",
        "api_key=-",
        stdin="sk_sandbox_piped\n",
    )
    assert added.returncode == 0, added.stderr
    assert "sk_sandbox_piped" in run.keyring_file.read_text()


def test_a_secret_typed_on_the_command_line_is_refused(run) -> None:  # type: ignore[no-untyped-def]
    refused = run(
        "connection",
        "add",
        "sandbox-payments",
        "--name",
        "Leaky",
        "--secret",
        "api_key=sk_live_123",
    )
    assert refused.returncode == 1
    assert "never appears on the command line" in refused.stderr
    assert not run.keyring_file.exists()


def test_bad_settings_are_named_in_one_line(run) -> None:  # type: ignore[no-untyped-def]
    refused = run(
        "connection",
        "add",
        "sandbox-payments",
        "--name",
        "Bad",
        "--set",
        "error_rate=7",
        "--secret",
        "api_key=env:SANDBOX_KEY",
    )
    assert refused.returncode == 1
    assert refused.stderr.strip().splitlines() == [
        "switchboard: error_rate: Share of failed answers (0 to 1) must be at most 1."
    ]


def test_an_unknown_kind_names_the_known_ones(run) -> None:  # type: ignore[no-untyped-def]
    refused = run("connection", "add", "stripe-ish", "--name", "X")
    assert refused.returncode == 1
    assert "sandbox-payments" in refused.stderr


def test_without_a_credential_store_adding_a_secret_is_refused(run) -> None:  # type: ignore[no-untyped-def]
    environment = {**run.environment, "PYTHON_KEYRING_BACKEND": "keyring.backends.fail.Keyring"}
    refused = run(
        "connection",
        "add",
        "sandbox-payments",
        "--name",
        "X",
        *FAST,
        "--secret",
        "api_key=env:SANDBOX_KEY",
        env=environment,
    )
    assert refused.returncode == 1
    assert "No credential store" in refused.stderr


def test_health_checks_every_connection_and_reports_its_figures(run) -> None:  # type: ignore[no-untyped-def]
    run(
        "connection",
        "add",
        "sandbox-payments",
        "--name",
        "Sandbox Pay",
        *FAST,
        "--secret",
        "api_key=env:SANDBOX_KEY",
    )
    checked = run("health", "--json")
    assert checked.returncode == 0, checked.stderr
    (row,) = json.loads(checked.stdout)["connections"]
    assert row["name"] == "Sandbox Pay"
    assert row["status"] == "healthy"
    assert row["check"]["ok"] is True
    assert row["last_24h"]["calls"] >= 1
    assert row["last_24h"]["uptime"]["24h"] == 1.0
    text = run("health")
    assert "Sandbox Pay: healthy" in text.stdout


def test_health_exits_one_when_a_connection_is_down(run) -> None:  # type: ignore[no-untyped-def]
    run(
        "connection",
        "add",
        "sandbox-payments",
        "--name",
        "Broken",
        "--set",
        "error_rate=1",
        "--set",
        "latency_ms=1",
        "--set",
        "latency_p95_ms=2",
        "--secret",
        "api_key=env:SANDBOX_KEY",
    )
    for _ in range(2):  # down after two failed checks; statuses carry over between runs
        checked = run("health", "--json")
    assert json.loads(checked.stdout)["connections"][0]["status"] == "down"
    assert checked.returncode == 1
