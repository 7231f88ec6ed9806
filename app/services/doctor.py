"""`switchboard doctor`: can Switchboard run here, and if not, what to do about it.

Each check answers with ok, warning (works, but something is missing) or error (Switchboard
cannot work until it is fixed), a detail and, when not ok, a fix in plain words. Doctor never
changes anything: it creates no folder, database or secret, and migrates nothing.
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import socket
import sqlite3
import subprocess
import sys
import threading
from dataclasses import asdict, dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any

from app import __version__
from app.config import SETTINGS_BY_KEY, Config, redact_url
from app.services.database_password import with_password
from app.services.secrets import SecretStore, backend_status
from app.store.database import Database

LOW_DISK_BYTES = 200 * 1024 * 1024
QT_CHECK_TIMEOUT = 30
KEYRING_TIMEOUT = 10.0

# The Qt check runs app/ui/qt_probe.py in a child process: Qt aborts the whole process when it
# cannot reach a display, and Qt stays out of the services.
QT_PROBE = "app.ui.qt_probe"


class Status(StrEnum):
    OK = "ok"
    WARNING = "warning"
    ERROR = "error"


@dataclass(frozen=True)
class Check:
    name: str
    status: Status
    detail: str
    fix: str = ""


@dataclass(frozen=True)
class Report:
    version: str
    checks: tuple[Check, ...]

    @property
    def ok(self) -> bool:
        return all(check.status is not Status.ERROR for check in self.checks)

    def as_json(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "version": self.version,
            "python": platform.python_version(),
            "platform": platform.platform(),
            "checks": [asdict(check) for check in self.checks],
        }

    def to_text(self) -> str:
        marks = {Status.OK: "ok  ", Status.WARNING: "warn", Status.ERROR: "FAIL"}
        lines = [f"Switchboard {self.version}"]
        for check in self.checks:
            lines.append(f"[{marks[check.status]}] {check.name}: {check.detail}")
            if check.fix:
                lines.append(f"       what to do: {check.fix}")
        return "\n".join(lines)


def _existing_ancestor(folder: Path) -> Path:
    return next((c for c in (folder, *folder.parents) if c.exists()), Path.cwd())


def check_folder(name: str, folder: Path) -> Check:
    """Can Switchboard write there (or create it there)? Looked at, not tried: doctor writes
    nothing."""
    target = folder if folder.exists() else _existing_ancestor(folder)
    if not target.is_dir() or not os.access(target, os.W_OK | os.X_OK):
        return Check(
            name,
            Status.ERROR,
            f"{folder} cannot be written ({target} is not a folder you may write to)",
            "Give your user permission to write there, or choose another folder with --data-dir.",
        )
    free = shutil.disk_usage(target).free
    created = "" if folder.exists() else ", created on first start"
    detail = f"{folder} ({free / 1024**3:.1f} GB free{created})"
    if free < LOW_DISK_BYTES:
        return Check(name, Status.WARNING, detail, "Free some disk space: less than 200 MB left.")
    return Check(name, Status.OK, detail)


def check_database(config: Config) -> Check:
    path = config.sqlite_path
    if path is not None and not path.exists():
        return Check("database", Status.OK, f"{path} will be created on first start")
    db = Database(with_password(config.db_url), readers=1)
    try:
        current, head = db.current_revision(), db.head_revision()
        integrity = "ok"
        if db.is_sqlite:
            with db.read_engine.connect() as connection:
                integrity = str(connection.exec_driver_sql("PRAGMA quick_check").scalar())
    except Exception as exc:
        return Check(
            "database",
            Status.ERROR,
            f"{redact_url(config.db_url)} cannot be read ({type(exc).__name__}: {exc})",
            "Check the path and permissions, or restore the database from a backup.",
        )
    finally:
        db.close()
    if integrity != "ok":
        return Check(
            "database",
            Status.ERROR,
            f"{db.display_name} is damaged: {integrity}",
            "Restore the database from a backup.",
        )
    if current == head:
        return Check("database", Status.OK, f"{db.display_name}, schema {current}")
    if current is None:
        return Check("database", Status.OK, f"{db.display_name} is empty; set up on first start")
    return Check(
        "database",
        Status.OK,
        f"{db.display_name}, schema {current}; upgraded to {head} on next start",
    )


def check_credential_store() -> Check:
    status = backend_status()
    if not status.available:
        return Check(
            "credential store",
            Status.WARNING,
            f"none usable ({status.backend}); provider connections cannot keep their secrets",
            status.problem,
        )
    # Reading a name that does not exist changes nothing, yet tells a locked or broken store.
    # A locked store may wait for someone to unlock it: never longer than the timeout.
    outcome: list[str] = []
    probe = SecretStore("doctor")

    def read() -> None:
        try:
            probe.get(f"probe-{os.getpid()}")
            outcome.append("")
        except Exception as exc:
            outcome.append(str(exc))

    worker = threading.Thread(target=read, name="doctor-keyring", daemon=True)
    worker.start()
    worker.join(KEYRING_TIMEOUT)
    if not outcome:
        return Check(
            "credential store",
            Status.WARNING,
            f"{status.backend} did not answer within {KEYRING_TIMEOUT:.0f} seconds",
            "It may be waiting for you to unlock it; unlock your keyring and try again.",
        )
    if outcome[0]:
        return Check(
            "credential store", Status.WARNING, f"{status.backend}: {outcome[0]}", outcome[0]
        )
    return Check("credential store", Status.OK, status.backend)


def check_qt() -> Check:
    try:
        completed = subprocess.run(  # noqa: S603 - our own interpreter and module
            [sys.executable, "-m", QT_PROBE],
            capture_output=True,
            text=True,
            timeout=QT_CHECK_TIMEOUT,
            check=False,
        )
    except subprocess.TimeoutExpired:
        return Check(
            "display",
            Status.WARNING,
            "Qt did not start within 30 seconds",
            "The desktop window may not open here; `switchboard serve` works without one.",
        )
    headless = sys.platform.startswith("linux") and not (
        os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")
    )
    if completed.returncode != 0 and headless:
        return Check(
            "display",
            Status.WARNING,
            "there is no desktop display here (DISPLAY and WAYLAND_DISPLAY are not set)",
            "Open the desktop app on a computer with a desktop; here, `switchboard serve` runs "
            "the engine without one.",
        )
    if completed.returncode != 0:
        lines = completed.stderr.strip().splitlines() or ["no output"]
        telling = [line for line in lines if "display" in line.lower() or "plugin" in line.lower()]
        last = (telling or lines)[0].strip()
        return Check(
            "display",
            Status.WARNING,
            f"the desktop window cannot open here ({last})",
            "Run Switchboard on a computer with a desktop, or use `switchboard serve` "
            "headless; on Linux also install the Qt system libraries (libegl1, libxkbcommon0, "
            "libxcb-cursor0).",
        )
    info = json.loads(completed.stdout.strip().splitlines()[-1])
    tray = "with a system tray" if info["tray"] else "no system tray (the window stays open)"
    detail = f"Qt {info['pyside']} on the {info['platform']} platform, {tray}"
    return Check("display", Status.OK, detail)


def check_port(host: str, port: int) -> Check:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        try:
            sock.bind((host, port))
        except OSError as exc:
            return Check(
                "receiver port",
                Status.WARNING,
                f"{host}:{port} is not free ({exc.strerror or exc})",
                "Another program (or a running Switchboard) uses it; choose another port in "
                "Settings or with `serve --port`.",
            )
    return Check("receiver port", Status.OK, f"{host}:{port} is free")


def _stored_setting(config: Config, key: str) -> Any:
    """A setting read straight from the file, without opening (or creating) the database."""
    default = SETTINGS_BY_KEY[key].default_value()
    path = config.sqlite_path
    if path is None or not path.exists():
        return default
    try:
        with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as connection:
            row = connection.execute("SELECT value FROM settings WHERE key = ?", (key,)).fetchone()
    except sqlite3.Error:
        return default
    return json.loads(row[0]) if row else default


def diagnose(config: Config) -> Report:
    host = str(_stored_setting(config, "receiver.host"))
    port = int(_stored_setting(config, "receiver.port"))
    checks = (
        check_folder("data folder", config.paths.data_dir),
        check_folder("log folder", config.paths.log_dir),
        check_database(config),
        check_credential_store(),
        check_qt(),
        check_port(host, port),
    )
    return Report(__version__, checks)
