"""Radicale for the tests (started by app/benchmarks/radicale.py), with each calendar handed
out as a `TeacherCalendar`: the teacher's own calendar app, writing into it directly.

    with running_radicale(folder) as server:         # anyone may read and write
        calendar = server.calendar("jane")           # a fresh, empty calendar collection
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote

import httpx
import pytest

from app.benchmarks.radicale import Radicale as BenchRadicale
from app.benchmarks.radicale import running_radicale as running_bench_radicale

PROPPATCH_TIMEZONE = """<?xml version="1.0" encoding="utf-8"?>
<D:propertyupdate xmlns:D="DAV:" xmlns:C="urn:ietf:params:xml:ns:caldav">
  <D:set><D:prop><C:calendar-timezone>BEGIN:VCALENDAR
VERSION:2.0
PRODID:-//Teacher//EN
BEGIN:VTIMEZONE
TZID:{tzid}
END:VTIMEZONE
END:VCALENDAR
</C:calendar-timezone></D:prop></D:set>
</D:propertyupdate>"""


@dataclass(frozen=True)
class TeacherCalendar:
    """One calendar collection, and the teacher's own calendar app writing into it directly."""

    url: str  # the collection's address, ending in "/"
    user: str
    password: str

    def _client(self) -> httpx.Client:
        return httpx.Client(auth=(self.user, self.password), timeout=10)

    def put(self, name: str, ics: str, etag: str | None = None) -> str:
        """Write a resource as a calendar app would (If-Match when `etag`); its new etag."""
        headers = {"Content-Type": "text/calendar; charset=utf-8"}
        if etag is not None:
            headers["If-Match"] = etag
        with self._client() as client:
            response = client.put(self.url + name, content=ics.encode("utf-8"), headers=headers)
        assert response.status_code in (201, 204), response.text
        return response.headers["ETag"]

    def get(self, name: str) -> tuple[str, str]:
        """A resource's text and etag, read directly."""
        with self._client() as client:
            response = client.get(self.url + name)
        assert response.status_code == 200, response.text
        return response.text, response.headers["ETag"]

    def names(self) -> list[str]:
        """The resources in the collection, by name."""
        body = '<D:propfind xmlns:D="DAV:"><D:prop><D:getetag/></D:prop></D:propfind>'
        with self._client() as client:
            response = client.request("PROPFIND", self.url, content=body, headers={"Depth": "1"})
        assert response.status_code == 207, response.text
        path = unquote(httpx.URL(self.url).path)
        found = []
        for chunk in response.text.split("<href>")[1:]:
            href = unquote(chunk.split("</href>", 1)[0])
            if href != path:
                found.append(href.rsplit("/", 1)[-1])
        return sorted(found)

    def delete(self, name: str) -> None:
        with self._client() as client:
            response = client.delete(self.url + name)
        assert response.status_code in (200, 204), response.text

    def set_timezone(self, tzid: str) -> None:
        """Give the calendar a zone for floating times (CALDAV:calendar-timezone, RFC 4791
        5.2.2), as a calendar app's settings would."""
        body = PROPPATCH_TIMEZONE.format(tzid=tzid)
        with self._client() as client:
            response = client.request(
                "PROPPATCH",
                self.url,
                content=body.encode(),
                headers={"Content-Type": "application/xml; charset=utf-8"},
            )
        assert response.status_code == 207, response.text
        assert "200 OK" in response.text, response.text

    def remove(self) -> None:
        """Delete the whole calendar, as the teacher might."""
        with self._client() as client:
            response = client.delete(self.url)
        assert response.status_code in (200, 204), response.text


class Radicale(BenchRadicale):
    """The server, handing out calendars as `TeacherCalendar`s for the tests."""

    def calendar(self, user: str = "jane", name: str | None = None) -> TeacherCalendar:
        return TeacherCalendar(self.new_calendar(user, name), user, self.password(user))


@contextlib.contextmanager
def running_radicale(folder: Path, users: Mapping[str, str] | None = None) -> Iterator[Radicale]:
    with running_bench_radicale(folder, users) as server:
        yield Radicale(server.url, server.folder, server.users)


# --- fixtures (a pytest plugin: tests/conftest.py lists this module) ---------------------------


@pytest.fixture(scope="session")
def radicale_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Radicale]:
    """One Radicale for the session, open to any login (auth none, rights authenticated)."""
    with running_radicale(tmp_path_factory.mktemp("radicale")) as server:
        yield server


@pytest.fixture
def radicale(radicale_server: Radicale) -> TeacherCalendar:
    """A new, empty calendar of the teacher "jane" in the session's Radicale."""
    return radicale_server.calendar("jane")
