"""User settings (declared in app.config) and the app's own small state, kept in the database.

Changing a setting needs the MANAGE_SETTINGS permission, except the ones that only shape a
person's own view (`PERSONAL_PREFIXES`); every change is an entry in the audit trail. The app's
own state (`set_state`) is Switchboard's bookkeeping, not anyone's decision: never guarded.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Iterable
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from app.config import SETTINGS, SETTINGS_BY_KEY, ConfigError, Setting
from app.domain.access import Permission
from app.services import access
from app.services.events import EventHub
from app.store.database import Database
from app.store.integration import SettingRow

log = logging.getLogger("switchboard.settings")

STATE_PREFIX = "state."
# One topic per setting: events are coalesced per topic, so two settings changed in quick
# succession must not share one (the first change would be swallowed).
TOPIC_PREFIX = "settings."
PERSONAL_PREFIXES = ("appearance.", "diagnostics.")  # anyone may change these


def topic(key: str) -> str:
    return TOPIC_PREFIX + key


class SettingsService:
    """Reads come from an in-memory copy loaded at start and may happen on any thread: the copy
    is replaced whole on every change, never changed in place. Writes validate, persist, then
    publish `settings.<key>` with the new value."""

    def __init__(self, db: Database, events: EventHub) -> None:
        self._db = db
        self._events = events
        self._values: dict[str, Any] = {}

    async def load(self) -> None:
        rows = await self._db.read(_all_rows)
        values: dict[str, Any] = {}
        for key, raw in rows.items():
            spec = SETTINGS_BY_KEY.get(key)
            if spec is None:
                values[key] = raw
                continue
            try:
                values[key] = spec.coerce(raw)
            except ConfigError as exc:
                # A hand-edited or older value: fall back to the default, say so once.
                log.warning("ignoring stored setting", extra={"key": key, "reason": str(exc)})
        for spec in SETTINGS:
            values.setdefault(spec.key, spec.default_value())
        self._values = values

    async def reload(self, announce: Iterable[str] = ()) -> None:
        """Read the settings again after they were written in another transaction (the demo
        seed), and announce the keys that changed."""
        await self.load()
        for key in announce:
            self._events.publish(topic(key), {"key": key, "value": self.get(key)})

    def get(self, key: str) -> Any:
        values = self._values
        if key in values:
            return values[key]
        return _spec(key).default_value()

    def values(self) -> dict[str, Any]:
        return {spec.key: self.get(spec.key) for spec in SETTINGS}

    async def set(self, key: str, raw: Any) -> Any:
        """Validate and store a setting; the value as stored."""
        if not key.startswith(PERSONAL_PREFIXES):
            access.require(Permission.MANAGE_SETTINGS)
        who = access.actor()

        def write(session: Session) -> Any:
            # Imported here: the audit trail keeps its anchor with this module's state helpers.
            from app.services import audit

            row = session.get(SettingRow, key)
            was = row.value if row is not None else _spec(key).default_value()
            value = put_setting(session, key, raw)
            if value != was:
                # Keyed by the setting's name, so a secret-looking one is left out of the trail.
                audit.record(
                    session, who, "setting.changed", "setting", key, {key: was}, {key: value}
                )
            return value

        value = await self._db.write(write)
        self._values = {**self._values, key: value}
        self._events.publish(topic(key), {"key": key, "value": value})
        return value

    # --- the app's own state: not user settings, never shown on the settings page -------------

    def state(self, name: str, default: Any = None) -> Any:
        return self._values.get(STATE_PREFIX + name, default)

    async def set_state(self, name: str, value: Any) -> None:
        await self._db.write(_put, STATE_PREFIX + name, value)
        self._values = {**self._values, STATE_PREFIX + name: value}

    async def install_id(self) -> str:
        """A random id for this database, made on first use: it names this school's entries in
        the credential store, so two databases on one computer never share secrets."""
        existing = self.state("install_id")
        if isinstance(existing, str) and existing:
            return existing
        value = await self._db.write(_put_if_absent, STATE_PREFIX + "install_id", uuid.uuid4().hex)
        self._values = {**self._values, STATE_PREFIX + "install_id": value}
        return str(value)


def _spec(key: str) -> Setting[Any]:
    try:
        return SETTINGS_BY_KEY[key]
    except KeyError:
        raise ConfigError(f"There is no setting called {key!r}.") from None


def put_setting(session: Session, key: str, raw: Any) -> Any:
    """Validate and store a setting inside an open transaction; the value as stored. The
    service's copy is refreshed by `SettingsService.reload`."""
    value = _spec(key).coerce(raw)
    _put(session, key, value)
    return value


def get_state(session: Session, name: str, default: Any = None) -> Any:
    """A piece of the app's own state, read inside an open transaction."""
    row = session.get(SettingRow, STATE_PREFIX + name)
    return row.value if row is not None else default


def put_state(session: Session, name: str, value: Any) -> None:
    """Store a piece of the app's own state inside an open transaction (a job's watermark)."""
    _put(session, STATE_PREFIX + name, value)


def _all_rows(session: Session) -> dict[str, Any]:
    return {row.key: row.value for row in session.scalars(select(SettingRow))}


def _put(session: Session, key: str, value: Any) -> None:
    row = session.get(SettingRow, key)
    if row is None:
        session.add(SettingRow(key=key, value=value))
    else:
        row.value = value


def _put_if_absent(session: Session, key: str, value: Any) -> Any:
    row = session.get(SettingRow, key)
    if row is not None:
        return row.value
    session.add(SettingRow(key=key, value=value))
    return value
