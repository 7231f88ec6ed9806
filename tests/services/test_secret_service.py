"""Against a real credential store: GNOME Keyring's Secret Service, unlocked inside a private
D-Bus session (Debian packages gnome-keyring and dbus-x11, installed by .ci/run)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.secret_service

ROOT = Path(__file__).resolve().parents[2]

SCRIPT = r"""
import json, secretstorage
from app.domain.errors import CredentialStoreUnavailable
from app.services.secrets import SecretStore, backend_status

report = {"backend": backend_status().backend, "available": backend_status().available}
store = SecretStore("real-secret-service-test")
store.set("connection/7/api_key", "sk_test_real_store_value_123")
report["read_back"] = store.get("connection/7/api_key")
report["missing"] = store.get("connection/7/nothing")
report["deleted"] = store.delete("connection/7/api_key")
report["after_delete"] = store.get("connection/7/api_key")

store.set("connection/8/api_key", "another-secret-value")
connection = secretstorage.dbus_init()
secretstorage.get_default_collection(connection).lock()
try:
    store.get("connection/8/api_key")
    report["locked"] = "no error"
except CredentialStoreUnavailable as exc:
    report["locked"] = str(exc)
print(json.dumps(report))
"""


def _tools_missing() -> list[str]:
    return [
        tool for tool in ("dbus-run-session", "gnome-keyring-daemon") if shutil.which(tool) is None
    ]


def test_secrets_round_trip_through_a_real_secret_service(tmp_path: Path) -> None:
    missing = _tools_missing()
    if missing:
        if os.environ.get("CI"):
            pytest.fail(f"CI must install {missing} (gnome-keyring, dbus-x11): see .ci/run")
        pytest.skip(f"not installed here: {missing}")
    environment = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("DBUS_", "PYTHON_KEYRING"))
    }
    environment.update(
        HOME=str(tmp_path), XDG_DATA_HOME=str(tmp_path / "data"), PYTHONPATH=str(ROOT)
    )
    command = (
        "echo -n test-password | gnome-keyring-daemon --unlock --components=secrets >/dev/null; "
        f'exec "{sys.executable}" -c "$SCRIPT"'
    )
    environment["SCRIPT"] = SCRIPT
    completed = subprocess.run(
        ["dbus-run-session", "--", "sh", "-c", command],
        capture_output=True,
        text=True,
        timeout=60,
        env=environment,
        cwd=ROOT,
        check=False,
    )
    assert completed.returncode == 0, completed.stderr
    report = json.loads(completed.stdout.strip().splitlines()[-1])
    assert report["available"] is True
    assert "SecretService" in report["backend"]
    assert report["read_back"] == "sk_test_real_store_value_123"
    assert report["missing"] is None
    assert report["deleted"] is True
    assert report["after_delete"] is None
    assert "locked" in report["locked"]
    assert "Unlock it" in report["locked"]
