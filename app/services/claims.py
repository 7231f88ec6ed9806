"""Who holds a piece of queue work, and whether that holder has gone.

Several engines (one per office computer) may work the same queues of one PostgreSQL database.
A row is claimed with `FOR UPDATE SKIP LOCKED` inside a transaction, but work done after that
transaction (a call to a provider) needs the claim written in the row: its holder and until
when. Another engine leaves a claimed row alone until the claim's lease runs out, unless it can
tell that the holder is gone: a process of this same computer that no longer runs (a crash, a
power cut, `kill -9`). A holder on another computer is never guessed gone; its lease decides.
"""

from __future__ import annotations

import itertools
import os
import re
import socket
import sys
import zlib

from sqlalchemy import func, select
from sqlalchemy.orm import Session

HOST = (socket.gethostname() or "unknown")[:100]
_HOLDER = re.compile(r"^(?P<host>.*) \(process (?P<pid>\d+)(?:, \d+)?\)$")
_numbers = itertools.count(1)
_live: set[str] = set()  # this process's holders not yet released


def holder() -> str:
    """A name for one service's claims, as other engines (and people) see it: its computer and
    process, and a number of its own (two services in one process are two holders). Live
    until `release`d."""
    name = f"{HOST} (process {os.getpid()}, {next(_numbers)})"
    _live.add(name)
    return name


def release(name: str) -> None:
    """The holder `name` has stopped: what it claimed and did not finish may be taken up."""
    _live.discard(name)


def gone(name: str | None) -> bool:
    """Whether the holder `name` is known to have ended: nobody (a claim released, or made by
    a version that did not name its holder), or a process of this computer that no longer
    runs. Any other holder may be alive: wait for its lease."""
    if not name:
        return True
    found = _HOLDER.match(name)
    if found is None or found["host"] != HOST:
        return False
    pid = int(found["pid"])
    return name not in _live if pid == os.getpid() else not _running(pid)


def _running(pid: int) -> bool:
    if sys.platform == "win32":
        import ctypes

        kernel = ctypes.windll.kernel32
        handle = kernel.OpenProcess(0x1000, False, pid)  # PROCESS_QUERY_LIMITED_INFORMATION
        if not handle:
            return kernel.GetLastError() == 5  # access denied: it exists
        code = ctypes.c_ulong()
        try:
            kernel.GetExitCodeProcess(handle, ctypes.byref(code))
        finally:
            kernel.CloseHandle(handle)
        return code.value == 259  # STILL_ACTIVE
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's process has that number now
    return True


def exclusive(session: Session, name: str) -> None:
    """Hold `name` for the rest of this write transaction against every other engine. SQLite
    needs nothing: its write transactions begin IMMEDIATE, one at a time already."""
    if session.get_bind().dialect.name == "postgresql":
        key = zlib.crc32(f"switchboard:{name}".encode())
        session.execute(select(func.pg_advisory_xact_lock(key)))
