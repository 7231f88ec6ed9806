"""Radicale, a real CalDAV server (PyPI, GPL; a development dependency, never shipped), run
in a process of its own on 127.0.0.1: the calendar-sync benchmark syncs into it, and the tests
use it as the CalDAV server.

    with running_radicale(folder) as server:         # anyone may read and write
        url = server.new_calendar("jane")             # a fresh, empty calendar collection
    with running_radicale(folder, users={"jane": "app-password"}) as server:  # htpasswd login

Radicale 3 refuses everything unless authentication and rights are set, so both are given on
the command line (and no configuration file is read: `-C` with nothing after it).
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import httpx

MKCALENDAR = """<?xml version="1.0" encoding="utf-8"?>
<C:mkcalendar xmlns:D="DAV:" xmlns:C="urn:ietf:params:xml:ns:caldav">
  <D:set><D:prop><D:displayname>{name}</D:displayname></D:prop></D:set>
</C:mkcalendar>"""


class RadicaleMissing(RuntimeError):
    """Radicale is not installed (it comes with the development dependencies)."""


@dataclass(frozen=True)
class Radicale:
    url: str  # http://127.0.0.1:PORT
    folder: Path
    users: Mapping[str, str]

    @property
    def log(self) -> Path:
        return self.folder / "radicale.log"

    def password(self, user: str) -> str:
        return self.users.get(user, "any password")

    def new_calendar(self, user: str = "jane", name: str | None = None) -> str:
        """A new, empty calendar collection of `user` (MKCALENDAR, RFC 4791 5.3.1): its URL."""
        name = name or f"lessons-{uuid.uuid4().hex[:8]}"
        url = f"{self.url}/{user}/{name}/"
        response = httpx.request(
            "MKCALENDAR",
            url,
            content=MKCALENDAR.format(name=name).encode(),
            headers={"Content-Type": "application/xml; charset=utf-8"},
            auth=(user, self.password(user)),
            timeout=10,
        )
        if response.status_code != 201:
            raise RuntimeError(f"Radicale did not make the calendar: {response.text}")
        return url


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@contextlib.contextmanager
def running_radicale(folder: Path, users: Mapping[str, str] | None = None) -> Iterator[Radicale]:
    """Radicale on a free loopback port while the block runs. Without `users` anyone may read
    and write (any username, any password); with them, only those logins are accepted
    (htpasswd, plain text: a test server) and each user may use their own collections."""
    folder.mkdir(parents=True, exist_ok=True)
    port = _free_port()
    if importlib.util.find_spec("radicale") is None:
        raise RadicaleMissing(
            "Radicale is not installed; it comes with the development dependencies (uv sync)."
        )
    if users:
        htpasswd = folder / "users"
        htpasswd.write_text("".join(f"{user}:{secret}\n" for user, secret in users.items()))
        auth = [
            "--auth-type=htpasswd",
            f"--auth-htpasswd-filename={htpasswd}",
            "--auth-htpasswd-encryption=plain",
            "--rights-type=owner_only",
        ]
    else:
        auth = ["--auth-type=none", "--rights-type=authenticated"]
    command = [
        sys.executable,
        "-m",
        "radicale",
        "-C",  # no configuration file, not even the user's or the system's
        f"--server-hosts=127.0.0.1:{port}",
        f"--storage-filesystem-folder={folder / 'collections'}",
        "--auth-delay=0",  # a refused login answers at once, not after a second
        # Its item cache checked by each file's time and size, not by reading every file at
        # every request: Radicale's own advice for speed, and what a server holding
        # thousands of events would be set to.
        "--storage-use-mtime-and-size-for-item-cache=True",
        "--logging-level=info",
        *auth,
    ]
    server = Radicale(f"http://127.0.0.1:{port}", folder, dict(users or {}))
    log = server.log.open("wb")
    process = subprocess.Popen(  # noqa: S603 - our own interpreter, arguments we built
        command,
        cwd=folder,
        stdout=log,
        stderr=subprocess.STDOUT,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        deadline = time.monotonic() + 20
        while True:
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(server.url + "/.well-known/caldav", timeout=1).status_code < 500:
                    break
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"Radicale did not start; see {server.log}")
            time.sleep(0.05)
        yield server
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)
        log.close()
