"""How long an old secret keeps working after it is rotated: API keys, the signing secrets
providers call back with, and outbound webhooks' signing secrets all use the one setting
`security.rotation_overlap_hours`, so the other side can switch over without a failed call.

The setting is read inside the write transaction of the rotation, from the settings table
itself, so a rotation always uses the value as saved (whichever process saved it).
"""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy.orm import Session

from app.config import SETTINGS_BY_KEY, ConfigError
from app.store.integration import SettingRow

OVERLAP_SETTING = "security.rotation_overlap_hours"


def overlap(session: Session) -> timedelta:
    """The overlap as saved, or the default when it was never set (or was hand-edited into
    something that is not a number of hours)."""
    spec = SETTINGS_BY_KEY[OVERLAP_SETTING]
    row = session.get(SettingRow, OVERLAP_SETTING)
    try:
        hours = spec.coerce(row.value) if row is not None else spec.default_value()
    except ConfigError:
        hours = spec.default_value()
    return timedelta(hours=int(hours))
