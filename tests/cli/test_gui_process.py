"""`switchboard` (the desktop app) as a real process: one per data folder, and a clean stop."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

SWITCHBOARD = Path(sys.executable).with_name("switchboard")


def wait_for_line(path: Path, text: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists() and text in path.read_text():
            return
        time.sleep(0.1)
    raise AssertionError(f"{text!r} never appeared in {path}")


def test_a_second_launch_hands_over_and_sigterm_stops_the_app_cleanly(tmp_path: Path) -> None:
    log = tmp_path / "logs" / "switchboard.log"
    first = subprocess.Popen(
        [str(SWITCHBOARD), "--data-dir", str(tmp_path)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        wait_for_line(log, "engine running")
        second = subprocess.run(
            [str(SWITCHBOARD), "--data-dir", str(tmp_path)],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert second.returncode == 0
        assert "already running" in second.stdout
        first.send_signal(signal.SIGTERM)
        assert first.wait(timeout=30) == 0
    finally:
        if first.poll() is None:
            first.kill()
    assert "engine stopped" in log.read_text()
    assert "Traceback" not in first.stderr.read()  # type: ignore[union-attr]
