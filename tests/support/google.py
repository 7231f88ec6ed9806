"""Loopback servers for Google's fakes (tests/fakes/google_oauth.py, google_calendar.py) and a
receiver for their push notifications: started once for the session, each test switching its
own fresh fakes in (starting a server costs more than a test). A pytest plugin: tests/conftest.py
lists this module."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from tests.fakes.server import Switch, served


@dataclass
class GoogleServers:
    oauth: Switch
    oauth_url: str
    calendar: Switch
    calendar_url: str
    receiver: Switch
    receiver_url: str


@pytest.fixture(scope="session")
def google_servers() -> Iterator[GoogleServers]:
    oauth, calendar, receiver = Switch(), Switch(), Switch()
    with (
        served(oauth) as oauth_url,
        served(calendar) as calendar_url,
        served(receiver) as receiver_url,
    ):
        yield GoogleServers(oauth, oauth_url, calendar, calendar_url, receiver, receiver_url)
