"""The command line keeps DESIGN.md's contract: one JSON document with --json, exit 0/1/2,
errors as one sentence on stderr."""

from __future__ import annotations

import atexit
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from PySide6.QtGui import QImage

from app import __version__
from tests.support.forked_cli import ForkedCli

SWITCHBOARD = Path(sys.executable).with_name("switchboard")
PAGES = (
    "overview",
    "dashboard",
    "requests",
    "events",
    "students",
    "guardians",
    "teachers",
    "lessons",
    "calendar-sync",
    "conflicts",
    "messages",
    "templates",
    "automations",
    "invoices",
    "payments",
    "billing",
    "routing-rules",
    "gateway-analytics",
    "reconciliation",
    "reconciliation-exceptions",
    "jobs",
    "audit",
    "outbound-webhooks",
    "backups",
    "approvals",
    "users",
    "settings",
)


# Commands run in processes forked from one that imported the app (tests/support/forked_cli.py);
# the console script itself is started for real below.
FORKED = ForkedCli()
atexit.register(FORKED.close)


def switchboard(
    *args: str,
    data_dir: Path | None = None,
    timeout: float = 120,
    env: dict[str, str] | None = None,
) -> subprocess.CompletedProcess[str]:
    command = [] if data_dir is None else ["--data-dir", str(data_dir)]
    return FORKED.run(
        [*command, *args], env=os.environ if env is None else env, timeout=timeout, cwd=Path.cwd()
    )


def test_the_console_script_prints_its_version() -> None:
    completed = subprocess.run(
        [str(SWITCHBOARD), "--version"], capture_output=True, text=True, timeout=60, check=False
    )
    assert completed.returncode == 0
    assert completed.stdout.strip() == f"switchboard {__version__}"


def test_python_dash_m_app_is_the_same_program() -> None:
    completed = subprocess.run(
        [sys.executable, "-m", "app", "--version"], capture_output=True, text=True, check=False
    )
    assert completed.stdout.strip() == f"switchboard {__version__}"


def test_bad_usage_exits_with_two() -> None:
    completed = switchboard("frobnicate")
    assert completed.returncode == 2
    assert "invalid choice" in completed.stderr


def test_an_unusable_database_address_is_one_sentence_and_exit_one(tmp_path: Path) -> None:
    completed = switchboard("--db-url", "mysql://school@db/school", "doctor", data_dir=tmp_path)
    assert completed.returncode == 1
    lines = completed.stderr.strip().splitlines()
    assert len(lines) == 1
    assert "SQLite" in lines[0]


def test_a_data_folder_that_cannot_be_made_is_one_sentence_and_exit_one(tmp_path: Path) -> None:
    (tmp_path / "taken").write_text("a file where the folder should be")
    completed = switchboard("demo", "seed", data_dir=tmp_path / "taken" / "school")
    assert completed.returncode == 1
    assert completed.stderr.startswith("switchboard: Switchboard cannot create its folder")
    assert "Traceback" not in completed.stderr


def test_doctor_prints_one_json_document_and_changes_nothing(tmp_path: Path) -> None:
    completed = switchboard("doctor", "--json", data_dir=tmp_path / "data")
    assert completed.returncode == 0, completed.stderr
    report = json.loads(completed.stdout)
    names = [check["name"] for check in report["checks"]]
    assert names == [
        "data folder",
        "log folder",
        "database",
        "credential store",
        "display",
        "receiver port",
    ]
    assert report["ok"] is True
    assert report["version"] == __version__
    database = next(check for check in report["checks"] if check["name"] == "database")
    assert "will be created" in database["detail"]
    assert not (tmp_path / "data").exists()  # no folder, no database: doctor only looks
    display = next(check for check in report["checks"] if check["name"] == "display")
    assert display["status"] == "ok"
    assert "offscreen" in display["detail"]


def test_serve_announces_its_address_answers_health_and_stops_on_sigterm(tmp_path: Path) -> None:
    process = start_serve(tmp_path)
    try:
        first_line = process.stdout.readline().strip()  # type: ignore[union-attr]
        assert first_line.startswith("listening on http://127.0.0.1:"), first_line
        url = first_line.removeprefix("listening on ")
        health = httpx.get(f"{url}/health", timeout=5)
        assert health.status_code == 200
        assert health.json()["status"] == "ok"
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=20) == 0
    finally:
        if process.poll() is None:
            process.kill()
    stderr = process.stderr.read()  # type: ignore[union-attr]
    assert "Traceback" not in stderr
    assert "stopped" in stderr


def test_serve_on_a_busy_port_says_so_and_exits_one(tmp_path: Path) -> None:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        completed = switchboard("serve", "--port", str(port), data_dir=tmp_path, timeout=60)
    assert completed.returncode == 1
    assert f"Cannot listen on 127.0.0.1:{port}" in completed.stderr


def start_serve(data_dir: Path) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [str(SWITCHBOARD), "--data-dir", str(data_dir), "serve", "--port", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def distinct_colours(path: Path) -> int:
    image = QImage(str(path)).scaled(320, 200)
    return len({image.pixel(x, y) for x in range(image.width()) for y in range(image.height())})


@pytest.mark.slow
def test_demo_seed_then_screenshots_renders_every_page_with_the_demo_data(tmp_path: Path) -> None:
    # A credential store for the subprocesses, so the demo connects its sandbox gateways.
    environment = {
        **os.environ,
        "PYTHON_KEYRING_BACKEND": "tests.support.file_keyring.FileKeyring",
        "SWITCHBOARD_TEST_KEYRING": str(tmp_path / "keyring.json"),
        "PYTHONPATH": str(Path(__file__).resolve().parents[2]),
    }
    data = tmp_path / "school"
    seeded = switchboard("demo", "seed", "--json", data_dir=data, env=environment)
    assert seeded.returncode == 0, seeded.stderr
    summary = json.loads(seeded.stdout)
    assert summary["students"] >= 150
    assert sorted(summary["currencies"]) == ["USD", "ZWG"]
    assert summary["connections"] == 3

    again = switchboard("demo", "seed", data_dir=data, env=environment)
    assert again.returncode == 1
    assert "already" in again.stderr

    shots = tmp_path / "shots"
    rendered = switchboard("screenshots", "--out", str(shots), data_dir=data, env=environment)
    assert rendered.returncode == 0, rendered.stderr
    expected = [f"{page}.png" for page in PAGES] + ["connect-dialog.png"]
    assert sorted(path.name for path in shots.iterdir()) == sorted(expected)
    for page in PAGES:
        image = QImage(str(shots / f"{page}.png"))
        assert (image.width(), image.height()) == (1280, 800)
        # An empty page is a few flat colours; a page full of names, numbers and curves has many.
        assert distinct_colours(shots / f"{page}.png") > 60, page


def test_screenshots_of_an_empty_school_show_the_empty_states(tmp_path: Path) -> None:
    rendered = switchboard(
        "screenshots", "--out", str(tmp_path / "shots"), data_dir=tmp_path / "empty"
    )
    assert rendered.returncode == 0, rendered.stderr
    assert len(list((tmp_path / "shots").glob("*.png"))) == len(PAGES) + 1  # and the dialog


def test_environment_variables_choose_the_data_folder(tmp_path: Path) -> None:
    environment = {**os.environ, "SWITCHBOARD_DATA_DIR": str(tmp_path / "from-env")}
    completed = subprocess.run(
        [str(SWITCHBOARD), "doctor", "--json"],
        capture_output=True,
        text=True,
        env=environment,
        timeout=120,
        check=False,
    )
    report = json.loads(completed.stdout)
    assert str(tmp_path / "from-env") in report["checks"][0]["detail"]


def test_serve_stops_on_ctrl_c_too(tmp_path: Path) -> None:
    process = start_serve(tmp_path)
    try:
        assert process.stdout.readline().startswith("listening on")  # type: ignore[union-attr]
        time.sleep(0.2)
        process.send_signal(signal.SIGINT)
        assert process.wait(timeout=20) == 0
    finally:
        if process.poll() is None:
            process.kill()


def test_a_port_out_of_range_is_bad_usage(tmp_path: Path) -> None:
    completed = switchboard("serve", "--port", "99999", data_dir=tmp_path)
    assert completed.returncode == 2
    assert "is not a port" in completed.stderr


def test_an_address_that_is_not_this_computers_is_explained(tmp_path: Path) -> None:
    completed = switchboard(
        "serve", "--host", "192.0.2.1", "--port", "0", data_dir=tmp_path, timeout=60
    )
    assert completed.returncode == 1
    assert "is not an address of this computer" in completed.stderr


def test_a_folder_that_cannot_be_written_is_one_sentence_not_a_traceback(tmp_path: Path) -> None:
    (tmp_path / "taken").write_text("a file where the screenshots folder should be")
    completed = switchboard(
        "screenshots", "--out", str(tmp_path / "taken" / "shots"), data_dir=tmp_path / "d"
    )
    assert completed.returncode == 1
    assert "Traceback" not in completed.stderr
    assert completed.stderr.startswith("switchboard: Cannot use")


def test_a_failed_command_with_json_still_prints_one_json_document(tmp_path: Path) -> None:
    data = tmp_path / "school"
    assert switchboard("demo", "seed", data_dir=data).returncode == 0
    again = switchboard("demo", "seed", "--json", data_dir=data)
    assert again.returncode == 1
    document = json.loads(again.stdout)
    assert document["ok"] is False
    assert "already" in document["error"]
