"""`switchboard bench ui-stall` runs and reports its figures (the figures themselves are for
people to read: speed targets live in benchmarks, not in tests)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

SWITCHBOARD = Path(sys.executable).with_name("switchboard")


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
