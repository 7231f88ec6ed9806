"""API keys for other apps calling Switchboard (Zapier): made with a name, shown once, kept as
a hash, checked in constant time, revoked for good."""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from app.domain.errors import FieldError, NotFound, ValidationFailed
from app.store.base import utcnow
from app.store.database import Database
from app.store.zapier import ApiKeyRow

PREFIX = "sbk_"


@dataclass(frozen=True)
class ApiKey:
    id: int
    name: str
    prefix: str
    created_at: datetime
    last_used_at: datetime | None
    revoked_at: datetime | None

    @property
    def active(self) -> bool:
        return self.revoked_at is None


def _hash(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8", "surrogatepass")).hexdigest()


def _record(row: ApiKeyRow) -> ApiKey:
    return ApiKey(row.id, row.name, row.prefix, row.created_at, row.last_used_at, row.revoked_at)


class ApiKeys:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def create(self, name: str) -> tuple[ApiKey, str]:
        """A new key and its value, which is never shown again."""
        clean = " ".join(name.split())
        if not clean or len(clean) > 100:
            raise ValidationFailed(
                [FieldError("name", "Give the key a name of 1 to 100 characters.")]
            )
        value = PREFIX + secrets.token_urlsafe(32)

        def insert(session: Session) -> ApiKey:
            row = ApiKeyRow(name=clean, prefix=value[:12], key_hash=_hash(value))
            session.add(row)
            session.flush()
            return _record(row)

        return await self._db.write(insert), value

    async def keys(self) -> list[ApiKey]:
        def query(session: Session) -> list[ApiKey]:
            return [
                _record(row) for row in session.scalars(select(ApiKeyRow).order_by(ApiKeyRow.id))
            ]

        return await self._db.read(query)

    async def revoke(self, key_id: int) -> ApiKey:
        def write(session: Session) -> ApiKey:
            row = session.get(ApiKeyRow, key_id)
            if row is None:
                raise NotFound(f"There is no API key {key_id}.")
            row.revoked_at = row.revoked_at or utcnow()
            return _record(row)

        return await self._db.write(write)

    async def check(self, value: str) -> ApiKey | None:
        """The key `value` is, if it is one and not revoked. The lookup is by the value's
        hash, so timing says nothing about how close a guess was."""
        if not value.startswith(PREFIX) or len(value) > 200:
            return None
        digest = _hash(value)

        def write(session: Session) -> ApiKey | None:
            row = session.scalars(select(ApiKeyRow).where(ApiKeyRow.key_hash == digest)).first()
            if row is None or row.revoked_at is not None:
                return None
            row.last_used_at = utcnow()
            return _record(row)

        return await self._db.write(write)
