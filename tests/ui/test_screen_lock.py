"""The desktop session saying the screen locked (freedesktop's ScreenSaver.ActiveChanged on the
session bus) locks Switchboard's window too: a real D-Bus session bus (dbus-run-session), the
signal sent by dbus-send, received by the app's IdleWatch."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

SCRIPT = """
import os, subprocess, sys
os.environ["QT_QPA_PLATFORM"] = "offscreen"
from PySide6.QtCore import QTimer
from PySide6.QtWidgets import QApplication
from app.ui.idle import IdleWatch

app = QApplication([])
watch = IdleWatch(app, minutes=0)
seen = []
watch.screen_locked.connect(lambda: seen.append(True))

def send(active):
    subprocess.run([
        "dbus-send", "--session", "--type=signal", "/org/freedesktop/ScreenSaver",
        "org.freedesktop.ScreenSaver.ActiveChanged", f"boolean:{active}",
    ], check=True)

QTimer.singleShot(300, lambda: send("false"))  # the screen saver going away locks nothing
QTimer.singleShot(600, lambda: send("true"))
QTimer.singleShot(2_000, app.quit)
app.exec()
print(f"locked {len(seen)} time(s)")
"""


def test_the_session_locking_the_screen_locks_the_window() -> None:
    missing = [tool for tool in ("dbus-run-session", "dbus-send") if shutil.which(tool) is None]
    if missing:
        if os.environ.get("CI"):
            pytest.fail(f"CI must install {missing} (dbus-x11): see .ci/run")
        pytest.skip(f"not installed here: {missing}")
    environment = {key: value for key, value in os.environ.items() if not key.startswith("DBUS_")}
    environment.update(PYTHONPATH=str(ROOT), SCRIPT=SCRIPT)
    completed = subprocess.run(
        ["dbus-run-session", "--", "sh", "-c", f'exec "{sys.executable}" -c "$SCRIPT"'],
        capture_output=True,
        text=True,
        timeout=60,
        env=environment,
        cwd=ROOT,
        check=False,
    )
    assert completed.returncode == 0, completed.stderr
    assert completed.stdout.strip().splitlines()[-1] == "locked 1 time(s)", completed.stderr
