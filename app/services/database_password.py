"""The shared database's password, kept in this computer's credential store.

`database.json` and `--db-url` name a PostgreSQL database without its password; the password
is kept in the credential store under the service `Switchboard:database`, by the address
without it, and put back into the address only where the app opens its database. A store that
does not exist (a headless server) is no error: libpq then reads `PGPASSWORD` or `~/.pgpass`
itself.
"""

from __future__ import annotations

import logging
from urllib.parse import quote, urlsplit, urlunsplit

from app.config import without_password
from app.services.secrets import SecretStore

log = logging.getLogger("switchboard.secrets")

# Not a school database's install id: the password is needed before any database is open.
STORE = SecretStore("database")


def _is_postgres(url: str) -> bool:
    return url.split("://", 1)[0].split("+", 1)[0] in {"postgresql", "postgres"}


def remember(url: str, password: str) -> None:
    """Keep the password for `url` (whose own password, if any, is ignored)."""
    STORE.set(without_password(url)[0], password)


def forget(url: str) -> bool:
    return STORE.delete(without_password(url)[0])


def with_password(url: str) -> str:
    """`url` with the password the credential store keeps for it; unchanged when the URL has
    a password already, is not PostgreSQL, or nothing is kept for it."""
    parts = urlsplit(url)
    if not _is_postgres(url) or parts.password is not None or not parts.username:
        return url
    if not STORE.status().available:
        return url
    password = STORE.get(url)
    return put_in(url, password) if password else url


def put_in(url: str, password: str) -> str:
    """`url` with `password` in it (quoted as a URL needs it), in place of any it had."""
    parts = urlsplit(without_password(url)[0])
    user, _, host = parts.netloc.rpartition("@")
    netloc = f"{user}:{quote(password, safe='')}@{host}"
    return urlunsplit(parts._replace(netloc=netloc))
