"""Secrets live in the credential store only: never in the database, never in the log."""

from __future__ import annotations

import logging
from pathlib import Path

import keyring
import pytest
from keyring.backends import fail

from app.domain.errors import CredentialStoreUnavailable
from app.logs import setup_logging
from app.services import Services
from app.services.secrets import SecretStore, backend_status
from app.store.integration import ProviderConnection
from tests.support.memory_keyring import MemoryKeyring

# Shaped like no known credential, so only the redactor's memory of secret values can hide it.
PLANTED = "Q7v-planted-Kx93-mz41"


async def test_a_secret_round_trips_through_the_credential_store(
    services: Services, memory_keyring: MemoryKeyring
) -> None:
    await services.secrets.aset("connection/1/api_key", "abc-123-secret")
    assert await services.secrets.aget("connection/1/api_key") == "abc-123-secret"
    assert services.secrets.service.startswith("Switchboard:")
    assert await services.secrets.adelete("connection/1/api_key") is True
    assert await services.secrets.aget("connection/1/api_key") is None
    assert await services.secrets.adelete("connection/1/api_key") is False


def test_without_a_credential_store_secrets_are_refused_with_the_fix() -> None:
    keyring.set_keyring(fail.Keyring())
    store = SecretStore("test")
    with pytest.raises(CredentialStoreUnavailable, match="GNOME Keyring or KWallet"):
        store.set("x", "value-123456")
    assert backend_status().available is False


def test_a_plaintext_keyring_is_never_used() -> None:
    class PlaintextKeyring(MemoryKeyring):
        pass

    PlaintextKeyring.__module__ = "keyrings.alt.file"
    status = backend_status(PlaintextKeyring())
    assert status.available is False
    assert "plain file" in status.problem


async def test_a_planted_secret_reaches_neither_the_database_file_nor_the_log(
    services: Services, tmp_path: Path
) -> None:
    log_path = setup_logging(tmp_path / "logs", "DEBUG")
    secret_name = "connection/1/api_key"
    await services.secrets.aset(secret_name, PLANTED)

    def add_connection(session) -> None:  # type: ignore[no-untyped-def]
        session.add(
            ProviderConnection(
                kind="stripe", name="Stripe", config={"mode": "live"}, secret_names=[secret_name]
            )
        )

    await services.db.write(add_connection)
    value = await services.secrets.aget(secret_name)
    log = logging.getLogger("switchboard.providers")
    log.warning("provider refused key %s", value, extra={"api_key": value})
    try:
        raise ValueError(f"bad credentials {value}")
    except ValueError:
        log.exception("call failed")
    await services.close()
    for handler in logging.getLogger().handlers:
        handler.flush()

    database_bytes = b"".join(
        path.read_bytes() for path in services.config.paths.data_dir.glob("switchboard.db*")
    )
    assert secret_name.encode() in database_bytes  # the name is there: the scan does see the data
    assert PLANTED.encode() not in database_bytes
    log_text = log_path.read_text()
    assert "provider refused key" in log_text
    assert PLANTED not in log_text
