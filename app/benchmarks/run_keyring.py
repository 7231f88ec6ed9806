"""The benchmarks' own sandbox keys, held in memory for one run."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import keyring
from keyring.backend import KeyringBackend
from keyring.errors import PasswordDeleteError


class RunKeyring(KeyringBackend):
    """Gone with the run: never a substitute for the computer's credential store."""

    priority = 1

    def __init__(self) -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        self.entries: dict[tuple[str, str], str] = {}

    def get_password(self, service: str, username: str) -> str | None:
        return self.entries.get((service, username))

    def set_password(self, service: str, username: str, password: str) -> None:
        self.entries[(service, username)] = password

    def delete_password(self, service: str, username: str) -> None:
        if self.entries.pop((service, username), None) is None:
            raise PasswordDeleteError(username)


@contextlib.contextmanager
def run_keyring() -> Iterator[None]:
    previous = keyring.get_keyring()
    keyring.set_keyring(RunKeyring())
    try:
        yield
    finally:
        keyring.set_keyring(previous)
