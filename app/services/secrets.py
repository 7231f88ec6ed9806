"""Secrets (API keys, OAuth tokens, webhook secrets) in the operating system's credential store.

The database only ever holds a secret's *name*; the value lives in Windows Credential Manager,
the macOS Keychain or the freedesktop Secret Service (GNOME Keyring, KWallet) through `keyring`.
When no such store exists Switchboard refuses to keep secrets at all rather than fall back to a
plain-text file, and says how to get one. Every value read or written is registered with the log
redactor, so it is masked if it ever reaches a log line.

A headless engine on a server often has no credential store. There the operator may name where
a connection's secret is instead: `env:NAME` (an environment variable of the engine's process)
or `file:PATH` (a file only the engine's user can read, such as a systemd or Docker secret).
The database keeps that reference, which is not a secret, and the value is read each time it
is needed (`resolve_reference`), so it can be changed without touching Switchboard.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import keyring
import keyring.backend
import keyring.errors
from keyring.backends import chainer, fail

from app.domain.errors import CredentialStoreUnavailable, SwitchboardError
from app.logs import REDACTOR

log = logging.getLogger("switchboard.secrets")

SERVICE_PREFIX = "Switchboard"

NO_STORE = (
    "No credential store is available on this computer, so Switchboard cannot keep passwords "
    "and API keys safely. Windows and macOS have one built in; on Linux install and unlock "
    "GNOME Keyring or KWallet (the Secret Service), then start Switchboard again."
)
PLAINTEXT_STORE = (
    "The only credential store found ({backend}) keeps secrets in a plain file, which "
    "Switchboard will not use. Remove the keyrings.alt package or set PYTHON_KEYRING_BACKEND "
    "to a real store."
)
LOCKED_STORE = (
    "The credential store is locked. Unlock it (on Linux: your desktop's keyring) and try again."
)


REFERENCE_KINDS = ("env:", "file:")
MAX_SECRET_FILE = 64 * 1024  # far more than any key or certificate; a mistake beyond it


class SecretReferenceError(SwitchboardError):
    """A secret named by reference (env:NAME, file:PATH) that cannot be read."""


def check_reference(reference: str) -> str | None:
    """What is wrong with a reference, in a sentence; None when it is one Switchboard reads."""
    kind, _, target = reference.partition(":")
    if not reference.startswith(REFERENCE_KINDS) or not target.strip():
        return f"{reference[:40]!r} is not a reference; write env:VARIABLE or file:/path/to/file."
    if kind == "env" and not target.replace("_", "").isalnum():
        return f"{target[:40]!r} is not an environment variable name."
    return None


def is_reference(value: str) -> bool:
    return value.startswith(REFERENCE_KINDS)


def resolve_reference(reference: str, what: str) -> str:
    """The secret a reference names, read now; SecretReferenceError says plainly what is
    missing and where (`what`: which secret, for the sentence)."""
    problem = check_reference(reference)
    if problem:
        raise SecretReferenceError(f"The secret {what} cannot be read: {problem}")
    kind, _, target = reference.partition(":")
    if kind == "env":
        value = os.environ.get(target, "")
        if not value:
            raise SecretReferenceError(
                f"The environment variable {target} that holds {what} is not set (or empty) "
                "for this process; set it where the engine is started, then try again."
            )
    else:
        path = Path(target).expanduser()
        try:
            with path.open("rb") as file:
                raw = file.read(MAX_SECRET_FILE + 1)
        except OSError as exc:
            raise SecretReferenceError(
                f"The file {path} that holds {what} cannot be read ({exc.strerror}); check "
                "that it exists and that the engine's user may read it."
            ) from exc
        if len(raw) > MAX_SECRET_FILE:
            raise SecretReferenceError(
                f"The file {path} that holds {what} is larger than 64 KiB, so it is not a "
                "secret; name the file that holds only the secret."
            )
        value = raw.decode("utf-8", "replace").strip()
        if not value:
            raise SecretReferenceError(f"The file {path} that holds {what} is empty.")
    REDACTOR.add(value)
    return value


@dataclass(frozen=True)
class StoreStatus:
    """Whether secrets can be kept, which backend keeps them, and if not, what to do."""

    available: bool
    backend: str
    problem: str = ""


def backend_status(backend: keyring.backend.KeyringBackend | None = None) -> StoreStatus:
    chosen = backend or keyring.get_keyring()
    name = f"{type(chosen).__module__}.{type(chosen).__name__}"
    if isinstance(chosen, fail.Keyring) or (
        isinstance(chosen, chainer.ChainerBackend) and not chosen.backends
    ):
        return StoreStatus(False, name, NO_STORE)
    if type(chosen).__module__.startswith(("keyrings.alt", "keyring.backends.null")):
        return StoreStatus(False, name, PLAINTEXT_STORE.format(backend=name))
    return StoreStatus(True, name)


class SecretStore:
    """Named secrets of one Switchboard database, kept under the service `Switchboard:<id>`."""

    def __init__(self, namespace: str) -> None:
        self.service = f"{SERVICE_PREFIX}:{namespace}"

    def status(self) -> StoreStatus:
        return backend_status()

    def _require_store(self) -> None:
        status = self.status()
        if not status.available:
            raise CredentialStoreUnavailable(status.problem)

    def set(self, name: str, value: str) -> None:
        if not value:
            raise ValueError(f"refusing to store an empty secret under {name!r}")
        self._require_store()
        REDACTOR.add(value)
        with _store_errors():
            keyring.set_password(self.service, name, value)
        log.info("secret stored", extra={"secret": name})

    def get(self, name: str) -> str | None:
        self._require_store()
        with _store_errors():
            value = keyring.get_password(self.service, name)
        REDACTOR.add(value)
        return value

    def delete(self, name: str) -> bool:
        """Remove a secret; False if there was none by that name."""
        self._require_store()
        try:
            with _store_errors():
                keyring.delete_password(self.service, name)
        except keyring.errors.PasswordDeleteError:
            return False
        log.info("secret removed", extra={"secret": name})
        return True

    # Credential stores can block (a D-Bus round trip, an unlock prompt): async code calls these.

    async def aset(self, name: str, value: str) -> None:
        await asyncio.to_thread(self.set, name, value)

    async def aget(self, name: str) -> str | None:
        return await asyncio.to_thread(self.get, name)

    async def adelete(self, name: str) -> bool:
        return await asyncio.to_thread(self.delete, name)


@contextmanager
def _store_errors() -> Iterator[None]:
    """Turn the credential store's own exceptions into a sentence a user can act on."""
    try:
        yield
    except keyring.errors.PasswordDeleteError:
        raise
    except keyring.errors.KeyringLocked as exc:
        raise CredentialStoreUnavailable(LOCKED_STORE) from exc
    except keyring.errors.NoKeyringError as exc:
        raise CredentialStoreUnavailable(NO_STORE) from exc
    except keyring.errors.KeyringError as exc:
        raise CredentialStoreUnavailable(
            f"The credential store refused the request ({type(exc).__name__}); "
            "make sure it is unlocked and try again."
        ) from exc
