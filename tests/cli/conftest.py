"""The command line run as a user runs it: `switchboard` in a process of its own, with its own
data folder and a credential store in a file. The process is forked from one that imported
the app already (tests/support/forked_cli.py), so each command skips the imports' seconds."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.forked_cli import ForkedCli

SWITCHBOARD = Path(sys.executable).with_name("switchboard")
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def forked_cli() -> Iterator[ForkedCli]:
    cli = ForkedCli()
    yield cli
    cli.close()


@pytest.fixture
def run(tmp_path: Path, forked_cli: ForkedCli):  # type: ignore[no-untyped-def]
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
        return forked_cli.run(
            ["--data-dir", str(tmp_path / "data"), *args],
            env=env or environment,
            stdin=stdin,
            timeout=120,
            cwd=Path.cwd(),
        )

    switchboard.keyring_file = keyring_file  # type: ignore[attr-defined]
    switchboard.environment = environment  # type: ignore[attr-defined]
    return switchboard
