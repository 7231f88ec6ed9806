"""API keys other apps use to call Switchboard (Zapier's actions, triggers and REST hooks).

Only a key's SHA-256 is kept: the key itself is shown once, when it is made, and a stolen
database cannot be used to call the school's API. (A key is 256 random bits, so a plain hash
is enough; a slow password hash buys nothing against a key no one can guess.)

A rotated key is not revoked at once: it keeps working until `expires_at` (the rotation's
overlap), beside the key that replaced it (`replaced_by`), so the other app can switch over.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import String
from sqlalchemy.orm import Mapped, mapped_column

from app.store.base import Base, BigId, utcnow


class ApiKeyRow(Base):
    __tablename__ = "api_keys"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    name: Mapped[str] = mapped_column(String(100))
    prefix: Mapped[str] = mapped_column(String(16))  # shown, so a person can tell keys apart
    key_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    last_used_at: Mapped[datetime | None]
    revoked_at: Mapped[datetime | None]
    expires_at: Mapped[datetime | None]  # refused from then on (set when it is rotated)
    replaced_by: Mapped[int | None]  # the key made when this one was rotated
