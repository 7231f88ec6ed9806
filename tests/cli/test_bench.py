"""`switchboard bench ui-stall` runs and reports its figures (the figures themselves are for
people to read: speed targets live in benchmarks, not in tests)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

SWITCHBOARD = Path(sys.executable).with_name("switchboard")


def switchboard(*arguments: str, timeout: float = 240) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(SWITCHBOARD), *arguments],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


@pytest.mark.slow
def test_bench_ui_stall_reports_the_dashboard_and_the_reference() -> None:
    completed = subprocess.run(
        [
            str(SWITCHBOARD),
            "bench",
            "ui-stall",
            "--seconds",
            "2",
            "--connections",
            "3",
            "--rate",
            "30",
            "--json",
        ],
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    assert completed.returncode == 0, completed.stderr
    figures = json.loads(completed.stdout)
    assert figures["benchmark"] == "ui-stall"
    assert figures["parameters"]["connections"] == 3
    assert figures["calls_recorded"] > 0
    for part in ("dashboard", "reference"):
        assert figures[part]["beats"] > 0
        assert figures[part]["worst_ms"] >= figures[part]["p99_ms"] >= figures[part]["p50_ms"]
    assert figures["targets"] == {"p99_ms": 16.0, "worst_ms": 50.0}
    assert isinstance(figures["met"], bool)


@pytest.mark.slow
def test_bench_webhooks_reports_the_receiver_the_reference_and_no_loss(tmp_path: Path) -> None:
    completed = subprocess.run(
        [
            str(SWITCHBOARD),
            "--data-dir",
            str(tmp_path),
            "bench",
            "webhooks",
            "--seconds",
            "1",
            "--connections",
            "8",
            "--rate",
            "100",
            "--json",
        ],
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    assert completed.returncode == 0, completed.stderr
    figures = json.loads(completed.stdout)
    assert figures["benchmark"] == "webhooks"
    receiver, reference = figures["receiver"], figures["reference"]
    assert receiver["throughput"]["accepted"] > 0
    assert receiver["steady"]["accepted"] > 0
    assert reference["throughput"]["accepted"] > 0
    assert receiver["throughput"]["refused"] == reference["throughput"]["refused"] == 0
    assert receiver["lost"] == reference["lost"] == 0
    assert receiver["acknowledged"] >= receiver["throughput"]["accepted"]
    assert isinstance(figures["met"], bool)
    assert [path.name for path in tmp_path.iterdir() if path.name.startswith("bench-")] == []


SMALL_DRIFT = {
    "name": "small drift",
    "seed": 3,
    "currency": "USD",
    "home_country": "US",
    "minutes": 600,
    "payments": 3000,
    "mix": [{"method": "card", "share": 1, "amount_minor": [1000, 50000]}],
    "gateways": [
        # The administrator's favourite falls from 97 % to 80 % approvals a third of the way in.
        {
            "name": "A",
            "priority": 1,
            "fees": [{"percent": 2.9, "fixed_minor": 30}],
            "approval": [[0, 0.97], [200, 0.97], [260, 0.8]],
        },
        {
            "name": "B",
            "priority": 2,
            "fees": [{"percent": 2.9, "fixed_minor": 30}],
            "approval": [[0, 0.95]],
            "outages": [[400, 430]],
        },
    ],
}


def test_bench_routing_replays_a_scenario_for_every_strategy(tmp_path: Path) -> None:
    scenario = tmp_path / "drift.json"
    scenario.write_text(json.dumps(SMALL_DRIFT))
    completed = switchboard("bench", "routing", "--scenario", str(scenario), "--json")
    assert completed.returncode == 0, completed.stderr
    figures = json.loads(completed.stdout)
    assert figures["parameters"]["scenario"] == "small drift"
    strategies = figures["strategies"]
    assert set(strategies) == {
        "router",
        "static_priority",
        "round_robin",
        "cheapest_first",
        "oracle",
    }
    # Static priority keeps sending payments to A after it degrades; the router moves to B.
    assert figures["router_vs"]["static_priority_points"] > 3
    assert (
        strategies["oracle"]["success_rate_percent"] >= strategies["router"]["success_rate_percent"]
    )
    assert strategies["oracle"]["timeouts"] == 0
    assert strategies["router"]["timeouts"] < strategies["round_robin"]["timeouts"]
    assert isinstance(figures["met"], bool)


def test_the_shipped_scenarios_load() -> None:
    from app.benchmarks.routing import load, shipped

    for name in ("drifting", "outages"):
        scenario = load(shipped(name))
        assert scenario.payments
        assert len(scenario.gateways) >= 2


def test_a_scenario_that_cannot_be_read_is_one_clear_sentence(tmp_path: Path) -> None:
    broken = tmp_path / "broken.json"
    broken.write_text(json.dumps({**SMALL_DRIFT, "gateways": [{"name": "A"}]}))
    completed = switchboard("bench", "routing", "--scenario", str(broken), timeout=60)
    assert completed.returncode == 1
    assert completed.stderr.startswith(f"switchboard: {broken} is not a valid scenario:")
    assert completed.stderr.count("\n") == 1


def test_bench_reconcile_reports_speed_the_floor_and_accuracy_against_the_truth() -> None:
    completed = switchboard("bench", "reconcile", "--rows", "20000", "--json", timeout=120)

    assert completed.returncode == 0, completed.stderr
    figures = json.loads(completed.stdout)
    engine = figures["engine"]
    assert engine["rows"] == 20_000
    assert engine["records"] > 40_000  # ledger, gateway, payouts and bank together
    assert (engine["precision"], engine["recall"], engine["statuses_wrong"]) == (1.0, 1.0, 0)
    assert engine["floor_seconds"] > 0
    assert engine["exceptions"] > 0
    assert figures["tenth"]["rows"] == 2_000
    assert {"growth_ratio", "peak_memory_mb", "targets", "met"} <= figures.keys()


def test_bench_reconcile_refuses_too_few_rows() -> None:
    completed = switchboard("bench", "reconcile", "--rows", "10", timeout=60)

    assert completed.returncode != 0
    assert "at least 1000" in completed.stderr


def test_bench_calendar_sync_reports_both_sides_on_one_server_with_its_own_time() -> None:
    completed = switchboard("bench", "calendar-sync", "--events", "30", "--json", timeout=180)

    assert completed.returncode == 0, completed.stderr
    figures = json.loads(completed.stdout)
    ours, theirs = figures["switchboard"], figures["vdirsyncer"]
    # Every lesson written once, then its changes read back once at the end of that sync.
    assert ours["initial_requests"] == 30 + 3
    assert ours["incremental_requests"] == 2  # what changed since, and the one change
    assert theirs["initial_requests"] >= 30
    for side in (ours, theirs):
        assert 0 < side["incremental_server_seconds"] < side["incremental_seconds"]
    assert 0 < figures["incremental_server_ratio"] < figures["incremental_ratio"]
    assert figures["parameters"] == {"events": 30, "server": "Radicale (loopback)"}
