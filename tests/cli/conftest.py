"""The command line run as a user runs it: the installed `switchboard` in a process of its
own, with its own data folder and a credential store in a file."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

SWITCHBOARD = Path(sys.executable).with_name("switchboard")
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def run(tmp_path: Path):  # type: ignore[no-untyped-def]
    keyring_file = tmp_path / "keyring.json"
    environment = {
        **os.environ,
        "PYTHON_KEYRING_BACKEND": "tests.support.file_keyring.FileKeyring",
        "SWITCHBOARD_TEST_KEYRING": str(keyring_file),
        "PYTHONPATH": str(ROOT),
        "SANDBOX_KEY": "sk_sandbox_from_env",
    }

    def switchboard(
        *args: str, stdin: str = "", env: dict[str, str] | None = None
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(SWITCHBOARD), "--data-dir", str(tmp_path / "data"), *args],
            input=stdin,
            capture_output=True,
            text=True,
            timeout=120,
            env=env or environment,
            check=False,
        )

    switchboard.keyring_file = keyring_file  # type: ignore[attr-defined]
    switchboard.environment = environment  # type: ignore[attr-defined]
    return switchboard
