"""A credential store in a JSON file, for command-line tests that span several processes.

Plain text on purpose and for tests only: never shipped, selected with
PYTHON_KEYRING_BACKEND=tests.support.file_keyring.FileKeyring and SWITCHBOARD_TEST_KEYRING=path.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from keyring.backend import KeyringBackend
from keyring.errors import PasswordDeleteError


class FileKeyring(KeyringBackend):
    priority = 1  # type: ignore[assignment]

    @property
    def path(self) -> Path:
        return Path(os.environ["SWITCHBOARD_TEST_KEYRING"])

    def _load(self) -> dict[str, str]:
        return json.loads(self.path.read_text()) if self.path.exists() else {}

    def _save(self, entries: dict[str, str]) -> None:
        self.path.write_text(json.dumps(entries))

    def get_password(self, service: str, username: str) -> str | None:
        return self._load().get(f"{service}|{username}")

    def set_password(self, service: str, username: str, password: str) -> None:
        entries = self._load()
        entries[f"{service}|{username}"] = password
        self._save(entries)

    def delete_password(self, service: str, username: str) -> None:
        entries = self._load()
        if entries.pop(f"{service}|{username}", None) is None:
            raise PasswordDeleteError(username)
        self._save(entries)
