"""Who is at the keyboard, as the computer knows them: kept with the decisions people make
until Switchboard has sign-in of its own."""

from __future__ import annotations

import getpass


def office_user() -> str:
    try:
        return getpass.getuser()
    except (OSError, KeyError):
        return "office"
