"""Secrets (API keys, OAuth tokens, webhook secrets) in the operating system's credential store.

The database only ever holds a secret's *name*; the value lives in Windows Credential Manager,
the macOS Keychain or the freedesktop Secret Service (GNOME Keyring, KWallet) through `keyring`.
When no such store exists Switchboard refuses to keep secrets at all rather than fall back to a
plain-text file, and says how to get one. Every value read or written is registered with the log
redactor, so it is masked if it ever reaches a log line.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import keyring
import keyring.backend
import keyring.errors
from keyring.backends import chainer, fail

from app.domain.errors import CredentialStoreUnavailable
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
