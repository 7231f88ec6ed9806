"""The `CalendarBackend` capability: what Switchboard asks of a teacher's calendar (Google
Calendar, a CalDAV collection), so the sync service is the same for every kind.

A backend reads what changed since a token it gave, and creates, updates and deletes single
events, each write conditional on what it last saw: a create carries an id made from our own
record (`app.domain.sync.event_id`), so a create repeated after a lost answer finds the first
one instead of making a second; an update or delete carries the etag it was decided on, and a
calendar that changed since answers `PreconditionFailed` (HTTP 412): the caller reads the event
again and decides again.

Events are compared by their normalized content (`EventContent`), never by their bytes. The
events Switchboard writes carry a `key` naming the record they were written for; the teacher's
own events have none. An occurrence of a recurring event changed on its own (moved, cancelled)
is an event of its own, addressed by `occurrence_id(series, original_start)`: updating one that
was never changed on its own changes that occurrence alone; deleting one cancels it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Protocol, runtime_checkable

from app.domain.sync import EventContent
from app.providers.http import ProviderError
from app.providers.spec import ConfigField, FieldKind

CALENDAR = "calendar"  # the capability's name in a spec's `capabilities`
OCCURRENCE_SEPARATOR = "#"


class PreconditionFailed(ProviderError):
    """The event changed (or was created) since the etag the write was decided on (HTTP 412):
    read it again and decide again."""

    error_class = "precondition"


class CalendarGone(ProviderError):
    """The calendar itself is not there (deleted, or the address is wrong): nothing to sync."""

    error_class = "not_found"


class SyncTokenExpired(ProviderError):
    """The token no longer says what changed (Google 410, CalDAV valid-sync-token): the
    backend answers with a full listing instead, so callers rarely see this."""

    error_class = "sync_token"


@dataclass(frozen=True)
class RemoteEvent:
    """One event as the calendar holds it. `content` is None when it is gone (deleted, or
    cancelled: Google keeps cancelled events, and an occurrence cancelled on its own)."""

    remote_id: str  # the calendar's id: Google's event id, the CalDAV resource's href
    etag: str  # what the next write sends as If-Match ("" when the calendar gives none)
    content: EventContent | None
    key: str = ""  # the record Switchboard wrote it for; "" for the teacher's own events
    meet_link: str = ""  # the online meeting's address, when the calendar made one
    series: str = ""  # an occurrence changed on its own: its recurring event's remote id
    original_start: datetime | None = None  # ... and the start it has in the series
    link: str = ""  # where a person can open it (Google's htmlLink), if the calendar says


@dataclass(frozen=True)
class ChangeSet:
    """What changed since a token, or everything (`complete`: the first read, and the answer
    to a token the calendar no longer honours).

    In a complete listing an event is either in `events`, or in `unchanged` (the caller said
    it knew it at that etag, so it was not read again), or gone. An occurrence changed on its
    own is unchanged when its series is."""

    events: Sequence[RemoteEvent]
    token: str  # pass it next time to read only what changed after this
    complete: bool
    unchanged: frozenset[str] = frozenset()


@runtime_checkable
class CalendarBackend(Protocol):
    async def changes(self, token: str = "", known: Mapping[str, str] | None = None) -> ChangeSet:
        """What changed since `token` ("" or a token the calendar refuses: everything).
        `known` (remote id → etag, as the caller holds them) lets a complete listing skip
        reading again what has not changed."""
        ...

    async def event(self, remote_id: str) -> RemoteEvent:
        """One event as it is now (content None when it is gone)."""
        ...

    async def create(self, event_id: str, key: str, content: EventContent) -> RemoteEvent:
        """Create an event under our own id (`app.domain.sync.event_id`). If one with that id
        is already there (a create repeated after a lost answer), it is returned as it is."""
        ...

    async def update(
        self, remote_id: str, etag: str, key: str, content: EventContent
    ) -> RemoteEvent:
        """Write `content` over the event if it is still at `etag` (else PreconditionFailed);
        an occurrence id changes that occurrence alone."""
        ...

    async def delete(self, remote_id: str, etag: str) -> None:
        """Delete the event if it is still at `etag` (else PreconditionFailed); an event
        already gone is no error. An occurrence id cancels that occurrence alone."""
        ...


# Every calendar connection says whose lessons it holds and what to do when both sides changed.
TEACHER_FIELD = ConfigField(
    "teacher",
    "Teacher",
    FieldKind.TEXT,
    help="Whose lessons this calendar holds: the teacher's e-mail address or reference, as on "
    "the Teachers page.",
)
CONFLICTS_FIELD = ConfigField(
    "conflicts",
    "When a lesson changed on both sides",
    FieldKind.SELECT,
    required=False,
    default="ask",
    choices=("ask", "school_wins", "calendar_wins"),
    help="ask: show both versions on the Conflicts page; school_wins: the school's version is "
    "written back to the calendar; calendar_wins: the teacher's version is taken.",
)


def occurrence_id(series: str, original_start: datetime) -> str:
    """The id of one occurrence of a recurring event, by the start it has in the series."""
    moment = original_start.astimezone(UTC)
    return f"{series}{OCCURRENCE_SEPARATOR}{moment:%Y%m%dT%H%M%SZ}"


def split_occurrence_id(remote_id: str) -> tuple[str, datetime | None]:
    """(series, original start) of an occurrence id; (remote_id, None) for any other id."""
    series, separator, stamp = remote_id.rpartition(OCCURRENCE_SEPARATOR)
    if not separator:
        return remote_id, None
    try:
        moment = datetime.strptime(stamp, "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC)
    except ValueError:
        return remote_id, None
    return series, moment
