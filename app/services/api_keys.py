"""API keys for other apps calling Switchboard (Zapier): made with a name, shown once, kept as
a hash, checked in constant time, rotated with an overlap, revoked for good.

Rotating a key makes a new one with the same name; the old one keeps working until the
overlap (`security.rotation_overlap_hours`) has passed, so the other app can be given the new
key without a refused call, and is refused from then on. Making, rotating and revoking keys
is for those who may change connections, and each is on the audit trail (never the key).
"""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from sqlalchemy import select
from sqlalchemy.orm import Session

from app.domain.access import Permission
from app.domain.errors import FieldError, NotFound, SwitchboardError, ValidationFailed
from app.services import access, audit, rotation
from app.store.base import utcnow
from app.store.database import Database
from app.store.zapier import ApiKeyRow

PREFIX = "sbk_"
KeyState = Literal["active", "rotating", "expired", "revoked"]


@dataclass(frozen=True)
class ApiKey:
    """A key as listed (never its value). `expires_at`: when a rotated key stops working;
    `replaced_by`: the key its rotation made."""

    id: int
    name: str
    prefix: str
    created_at: datetime
    last_used_at: datetime | None
    revoked_at: datetime | None
    expires_at: datetime | None = None
    replaced_by: int | None = None

    def state(self, now: datetime) -> KeyState:
        """active; rotating (replaced, still working until `expires_at`); expired; revoked."""
        if self.revoked_at is not None:
            return "revoked"
        if self.expires_at is not None:
            return "rotating" if now < self.expires_at else "expired"
        return "active"

    @property
    def active(self) -> bool:
        return self.revoked_at is None


class KeyNotRotatable(SwitchboardError):
    """The key asked for cannot be rotated (revoked, expired, or rotated already)."""


def _hash(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8", "surrogatepass")).hexdigest()


def _record(row: ApiKeyRow) -> ApiKey:
    return ApiKey(
        row.id,
        row.name,
        row.prefix,
        row.created_at,
        row.last_used_at,
        row.revoked_at,
        row.expires_at,
        row.replaced_by,
    )


def _new_value() -> str:
    return PREFIX + secrets.token_urlsafe(32)


def _audited(row: ApiKeyRow, now: datetime) -> dict[str, Any]:
    """What the audit trail keeps of a key: its name, the prefix a person tells it by, and its
    state; never the key (nor its hash)."""
    return {
        "name": row.name,
        "prefix": row.prefix,
        "state": _record(row).state(now),
        "valid_until": row.expires_at,
    }


def _get(session: Session, key_id: int) -> ApiKeyRow:
    row = session.get(ApiKeyRow, key_id)
    if row is None:
        raise NotFound(f"There is no API key {key_id}; `switchboard api-key list` shows them.")
    return row


class ApiKeys:
    """`clock` is injectable so tests can step past an overlap."""

    def __init__(self, db: Database, clock: Callable[[], datetime] = utcnow) -> None:
        self._db = db
        self._clock = clock

    async def create(self, name: str) -> tuple[ApiKey, str]:
        """A new key and its value, which is never shown again."""
        access.require(Permission.MANAGE_CONNECTIONS)
        who = access.actor()
        clean = " ".join(name.split())
        if not clean or len(clean) > 100:
            raise ValidationFailed(
                [FieldError("name", "Give the key a name of 1 to 100 characters.")]
            )
        value = _new_value()
        now = self._clock()

        def insert(session: Session) -> ApiKey:
            row = ApiKeyRow(name=clean, prefix=value[:12], key_hash=_hash(value), created_at=now)
            session.add(row)
            session.flush()
            audit.record(
                session,
                who,
                "api_key.created",
                "api_key",
                row.id,
                None,
                _audited(row, now),
                secret_values=[value],
            )
            return _record(row)

        return await self._db.write(insert), value

    async def rotate(self, key_id: int) -> tuple[ApiKey, str]:
        """A new key with the old one's name, and its value (shown once). The old key keeps
        working until now + the rotation overlap, then is refused."""
        access.require(Permission.MANAGE_CONNECTIONS)
        who = access.actor()
        value = _new_value()
        now = self._clock()

        def write(session: Session) -> ApiKey:
            old = _get(session, key_id)
            state = _record(old).state(now)
            if state == "revoked":
                raise KeyNotRotatable(
                    f"API key {key_id} is revoked, so it cannot be rotated; make a new key "
                    "with `switchboard api-key create`."
                )
            if old.replaced_by is not None:
                raise KeyNotRotatable(
                    f"API key {key_id} was rotated already (its replacement is key "
                    f"{old.replaced_by}); rotate that one instead."
                )
            if state == "expired":
                raise KeyNotRotatable(
                    f"API key {key_id} has expired, so it cannot be rotated; make a new key "
                    "with `switchboard api-key create`."
                )
            before = _audited(old, now)
            new = ApiKeyRow(name=old.name, prefix=value[:12], key_hash=_hash(value), created_at=now)
            session.add(new)
            session.flush()
            old.expires_at = now + rotation.overlap(session)
            old.replaced_by = new.id
            audit.record(
                session,
                who,
                "api_key.rotated",
                "api_key",
                old.id,
                before,
                {**_audited(old, now), "replaced_by": new.id, "new_prefix": new.prefix},
                secret_values=[value],
            )
            return _record(new)

        return await self._db.write(write), value

    async def keys(self) -> list[ApiKey]:
        def query(session: Session) -> list[ApiKey]:
            return [
                _record(row) for row in session.scalars(select(ApiKeyRow).order_by(ApiKeyRow.id))
            ]

        return await self._db.read(query)

    async def revoke(self, key_id: int) -> ApiKey:
        """Stop the key working, at once and for good (a rotated key still in its overlap
        too)."""
        access.require(Permission.MANAGE_CONNECTIONS)
        who = access.actor()
        now = self._clock()

        def write(session: Session) -> ApiKey:
            row = _get(session, key_id)
            if row.revoked_at is None:
                before = _audited(row, now)
                row.revoked_at = now
                audit.record(
                    session, who, "api_key.revoked", "api_key", row.id, before, _audited(row, now)
                )
            return _record(row)

        return await self._db.write(write)

    def now(self) -> datetime:
        """The service's clock, for showing keys' states."""
        return self._clock()

    async def check(self, value: str) -> ApiKey | None:
        """The key `value` is, if it is one, not revoked and not past its overlap. The lookup
        is by the value's hash, so timing says nothing about how close a guess was."""
        if not value.startswith(PREFIX) or len(value) > 200:
            return None
        digest = _hash(value)
        now = self._clock()

        def write(session: Session) -> ApiKey | None:
            row = session.scalars(select(ApiKeyRow).where(ApiKeyRow.key_hash == digest)).first()
            if row is None or _record(row).state(now) not in ("active", "rotating"):
                return None
            row.last_used_at = now
            return _record(row)

        return await self._db.write(write)
