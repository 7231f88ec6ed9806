"""Who is acting right now, and the check every guarded service call makes first.

The acting principal travels in a context variable, so it follows a call into the tasks it
starts and is never shared between two calls running at once:

- the desktop app's bridge runs each call from the window as the signed-in person
  (`acting_as`);
- everything else (the command line, the headless engine, the engine's own scheduled work and
  workers) acts as the service user, whose role an administrator chooses (Administrator until
  then). `Services.open` loads it from the users table.

Checks live in the services, not in the pages, so the command line and the engine obey them
too: `require(Permission.REFUND)` raises `NotAllowed` with a sentence naming the role needed.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar

from app.domain.access import NotAllowed, Permission, Principal, Role

SERVICE_NAME = "service"
_acting: ContextVar[Principal | None] = ContextVar("switchboard_acting", default=None)
_service = Principal(SERVICE_NAME, Role.ADMINISTRATOR, service=True)


def current() -> Principal:
    """Who is acting: the person the caller acts as, else the service user."""
    return _acting.get() or _service


def actor() -> str:
    """The acting principal's name, for the audit trail."""
    return current().name


def require(permission: Permission) -> Principal:
    """The acting principal, if their role grants `permission`; else NotAllowed."""
    principal = current()
    if not principal.may(permission):
        raise NotAllowed(principal, permission)
    return principal


@contextmanager
def acting_as(principal: Principal) -> Iterator[Principal]:
    """Act as `principal` inside the block (and in tasks started from it)."""
    token = _acting.set(principal)
    try:
        yield principal
    finally:
        _acting.reset(token)


def service_user() -> Principal:
    return _service


def set_service_user(principal: Principal) -> None:
    """The service user as stored (its role chosen by an administrator); process-wide."""
    global _service
    _service = principal
