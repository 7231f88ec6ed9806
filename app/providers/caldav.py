"""CalDAV: a teacher's calendar on any CalDAV server (Nextcloud, iCloud, Fastmail, Radicale,
Baïkal, ...), spoken directly over WebDAV with a username and an app password.

The connection names one calendar collection by its address. Every path is absolute from the
server's root (the collection's path, or an href the server gave), under a base URL that is the
address's origin alone.

Reading. One PROPFIND (Depth 0) per connection, kept for the provider's life, finds whether the
collection is a calendar, whether it answers the sync-collection REPORT (RFC 6578), and its
time zone (for floating times). With sync-collection, `changes` asks what changed since the
token (an empty token: everything) with each member's DAV:getetag, following truncated answers
(a 507 on the collection itself) with the token that came with them, and a token the server
refuses (DAV:valid-sync-token: 403 or 409, or 400/412 as some servers answer) starts a complete
listing instead. Without it, a PROPFIND (Depth 1) lists every member's etag. Only members whose
etag differs from what the caller says it `known` are read, by calendar-multiget in batches of
`MULTIGET_BATCH` (RFC 4791 7.9); a member removed shows in an incremental answer as a 404.

One resource is one recurring series (or one single event): a master VEVENT and its overrides
(RECURRENCE-ID). The master is an event under the resource's href; each override is one more,
under `occurrence_id(href, recurrence id)`, and an override that is cancelled or an EXDATE reads
as that occurrence gone. They all share the resource's etag.

Writing. Every write is conditional (RFC 4918 / RFC 9110 preconditions): a create is a PUT of
`<calendar>/<event id>.ics` with If-None-Match: * (a 412 means our earlier attempt made it:
it is read and returned); an update or delete carries If-Match with the etag it was decided on,
and a 412 is `PreconditionFailed`. An update changes only what Switchboard writes, so what the
teacher's own calendar app added (alarms, attendees, other properties, moved occurrences that
still belong to the series) survives: it reads the resource first (GET), unless the provider
last saw it, at that very etag, holding nothing but what Switchboard writes (it wrote or read
it since it started); then the conditional PUT alone is enough. Changing one occurrence adds
or changes its override; deleting one removes its override and adds an EXDATE to the master.

Requests (for the sync service's budget): the first read of a provider adds one PROPFIND;
`changes` is one REPORT (or PROPFIND) plus one multiget per `MULTIGET_BATCH` members to read (so
an incremental sync with one change is 2 requests, with none 1); `create` is one PUT (+ a GET
after a 412, or when the server gives no strong etag); `update` is one PUT for an event only
Switchboard wrote and this provider saw at that etag, else a GET and a PUT; an occurrence's
`update` or `delete` is a GET and a PUT; a series' `delete` is one DELETE; `event` is one GET.

Relied on: RFC 4918 (WebDAV: PROPFIND and Depth, DAV:multistatus, DAV:getetag, DAV:error
bodies, 207/404/409/412/507, PUT into a missing collection answers 409), RFC 4791 (CalDAV:
calendar collections and CALDAV:calendar resourcetype, CALDAV:calendar-timezone, 5.3.2 creating
resources and CALDAV:no-uid-conflict, 5.3.4 no strong ETag in a PUT's answer unless the data is
stored as sent, 7.9 calendar-multiget "the Depth header MUST be ignored by the server and
SHOULD NOT be sent by the client", 9.6 calendar-data), RFC 6578 (WebDAV sync: 3.2 the REPORT,
with Depth 0, DAV:sync-level 1, an empty DAV:sync-token for the initial sync, and the
DAV:valid-sync-token precondition; 3.5 changed members with their properties, and a removed one
as a DAV:response with status 404 and no DAV:propstat; 3.6 truncation as a 507 on the
Request-URI), RFC 9110 13.1 (If-Match, If-None-Match: *, 412), RFC 7617 (Basic auth, UTF-8),
RFC 5545 (iCalendar: VEVENT, RECURRENCE-ID, EXDATE/RDATE, DTEND or DURATION or neither,
VALUE=DATE, floating times, TZID and VTIMEZONE, TEXT escaping, X- properties). Servers' ways,
from Net::DAVTalk's change notes (metacpan, 0.26: iCloud lists the collection itself among the
changes, Google truncates syncs, hrefs may come as full URLs) and a SabreDAV-based server's
sync handler (an unknown token is a 400); Radicale's, from running it
(tests/providers/test_caldav.py).
"""

from __future__ import annotations

import base64
import logging
import time as clock
from collections.abc import Collection, Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, date, datetime, time, tzinfo
from typing import Any, Final, NoReturn
from urllib.parse import quote, unquote, urlsplit
from xml.etree.ElementTree import Element
from xml.sax.saxutils import escape
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import httpx
from cachetools import LRUCache
from dateutil.rrule import rrule, rruleset, rrulestr
from defusedxml import ElementTree
from defusedxml.common import DefusedXmlException
from icalendar import Calendar, Component, Event, vRecur
from icalendar.prop import vInline

from app.domain.sync import EventContent, EventStatus, caldav_resource_name
from app.providers.base import HealthResult, Provider
from app.providers.calendar import (
    CALENDAR,
    CONFLICTS_FIELD,
    TEACHER_FIELD,
    CalendarGone,
    ChangeSet,
    PreconditionFailed,
    RemoteEvent,
    occurrence_id,
    split_occurrence_id,
)
from app.providers.http import CredentialsRefused, ProviderError, ResilientClient
from app.providers.spec import (
    AuthKind,
    Category,
    ConfigField,
    FieldKind,
    Operation,
    ProviderSpec,
    RatePolicy,
    ResiliencePolicy,
)

log = logging.getLogger("switchboard.calendar")

DAV: Final = "{DAV:}"
CAL: Final = "{urn:ietf:params:xml:ns:caldav}"
CS: Final = "{http://calendarserver.org/ns/}"
XML_TYPE: Final = "application/xml; charset=utf-8"
ICS_TYPE: Final = "text/calendar; charset=utf-8"
PRODID: Final = "-//Switchboard//CalDAV//EN"
KEY_PROPERTY: Final = "X-SWITCHBOARD-KEY"
ONLINE_PROPERTY: Final = "X-SWITCHBOARD-ONLINE"
MULTIGET_BATCH: Final = 100
# A server that keeps truncating its sync answer this many times is not making progress.
MAX_SYNC_PAGES: Final = 1000

# What Switchboard writes in a VEVENT; everything else in it is the teacher's and is kept.
MANAGED: Final = (
    "DTSTAMP", "DTSTART", "DTEND", "DURATION", "SUMMARY", "LOCATION", "DESCRIPTION", "STATUS",
    "RRULE", "EXRULE", "RDATE", "EXDATE", KEY_PROPERTY, ONLINE_PROPERTY,
)  # fmt: skip
# A resource with nothing else (the server's own bookkeeping aside) can be written over whole.
PLAIN_EVENT: Final = frozenset({*MANAGED, "UID", "SEQUENCE", "CREATED", "LAST-MODIFIED"})
PLAIN_CALENDAR: Final = frozenset({"VERSION", "PRODID", "CALSCALE"})
# How many resources a provider remembers as plain, by href, so updating one needs no GET.
PLAIN_REMEMBERED: Final = 10_000
# The WebDAV and CalDAV preconditions a 403 may name (RFC 4791 5.3.2.1, 7.9; RFC 6578 3.2): a
# refusal of the request, not of the login. Anything else in a 403 (need-privileges, a
# server's own exception) is about the account.
PRECONDITIONS: Final = frozenset(
    {
        "valid-sync-token", "number-of-matches-within-limits", "supported-report",
        "supported-calendar-data", "valid-calendar-data", "valid-calendar-object-resource",
        "supported-calendar-component", "no-uid-conflict", "calendar-collection-location-ok",
        "max-resource-size", "min-date-time", "max-date-time", "max-instances",
        "max-attendees-per-instance",
    }
)  # fmt: skip

# Reading and listing change nothing: safe to repeat. PUT and DELETE always carry a
# precondition, so a repeat after a lost answer meets a 412 or a 404 instead of acting twice.
PROPERTIES = Operation("calendar-properties", "PROPFIND", "{+path}", idempotent=True)
LISTING = Operation("calendar-listing", "PROPFIND", "{+path}", idempotent=True)
SYNC = Operation("sync-collection", "REPORT", "{+path}", idempotent=True)
MULTIGET = Operation("calendar-multiget", "REPORT", "{+path}", idempotent=True)
READ = Operation("get-event", "GET", "{+href}")
WRITE = Operation("put-event", "PUT", "{+href}")
REMOVE = Operation("delete-event", "DELETE", "{+href}")
HEALTH = Operation("calendar", "PROPFIND", "{+path}", idempotent=True, timeout=10.0)

COLLECTION_BODY: Final = (
    '<?xml version="1.0" encoding="utf-8"?>'
    '<D:propfind xmlns:D="DAV:" xmlns:C="urn:ietf:params:xml:ns:caldav">'
    "<D:prop><D:resourcetype/><D:supported-report-set/><D:sync-token/>"
    "<C:calendar-timezone/></D:prop></D:propfind>"
)
HEALTH_BODY: Final = (
    '<?xml version="1.0" encoding="utf-8"?>'
    '<D:propfind xmlns:D="DAV:"><D:prop><D:resourcetype/><D:displayname/></D:prop></D:propfind>'
)
LISTING_BODY: Final = (
    '<?xml version="1.0" encoding="utf-8"?>'
    '<D:propfind xmlns:D="DAV:" xmlns:CS="http://calendarserver.org/ns/">'
    "<D:prop><D:resourcetype/><D:getetag/><CS:getctag/></D:prop></D:propfind>"
)


# --- hrefs ---------------------------------------------------------------------------------------


def canonical_path(href: str) -> str:
    """An href as one spelling of its path: a full URL's path alone, percent-encoded the way
    requests send it, so the same resource always has the same remote id."""
    return quote(unquote(urlsplit(href.strip()).path), safe="/:@")


def _same_collection(href: str, path: str) -> bool:
    return href.rstrip("/") == path.rstrip("/")


# --- multistatus answers -------------------------------------------------------------------------


@dataclass(frozen=True)
class _Member:
    """One DAV:response of a multistatus: its href, its own status (404: removed; 507 on the
    collection: truncated) and the properties found (from 2xx propstats)."""

    href: str
    status: int
    props: Mapping[str, Element]

    def text(self, name: str) -> str:
        element = self.props.get(name)
        return "" if element is None else (element.text or "").strip()


@dataclass(frozen=True)
class _Multistatus:
    members: list[_Member]
    token: str  # DAV:sync-token, when the answer has one


class _Unreadable(ProviderError):
    error_class = "unreadable"


def _status_code(line: str | None) -> int:
    """200 from "HTTP/1.1 200 OK"; 0 when there is none."""
    parts = (line or "").split()
    return int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else 0


def _multistatus(body: bytes) -> _Multistatus:
    try:
        root = ElementTree.fromstring(body)
    except (ElementTree.ParseError, DefusedXmlException) as exc:
        raise _Unreadable("The calendar server's answer was not readable WebDAV XML.") from exc
    if root.tag != f"{DAV}multistatus":
        raise _Unreadable("The calendar server's answer was not a WebDAV multistatus.")
    members: list[_Member] = []
    for response in root.findall(f"{DAV}response"):
        props: dict[str, Element] = {}
        propstats = response.findall(f"{DAV}propstat")
        for propstat in propstats:
            if 200 <= _status_code(propstat.findtext(f"{DAV}status")) < 300:
                for prop in propstat.findall(f"{DAV}prop"):
                    props.update((child.tag, child) for child in prop)
        own = _status_code(response.findtext(f"{DAV}status"))
        status = own or (200 if propstats else 0)
        for href in response.findall(f"{DAV}href"):
            if href.text:
                members.append(_Member(canonical_path(href.text), status, props))
    return _Multistatus(members, (root.findtext(f"{DAV}sync-token") or "").strip())


def _error_conditions(response: httpx.Response) -> list[str]:
    """The precondition names of a DAV:error body (RFC 4918 16), e.g. "valid-sync-token"."""
    if b"error" not in response.content:
        return []
    try:
        root = ElementTree.fromstring(response.content)
    except (ElementTree.ParseError, DefusedXmlException):
        return []
    if root.tag != f"{DAV}error":
        return []
    return [child.tag.rpartition("}")[2] for child in root]


def _error_href(response: httpx.Response) -> str:
    """The DAV:href inside a DAV:error's precondition (CALDAV:no-uid-conflict names the
    resource that already holds the UID)."""
    try:
        root = ElementTree.fromstring(response.content)
    except (ElementTree.ParseError, DefusedXmlException):
        return ""
    text = root.findtext(f".//{DAV}href")
    return canonical_path(text) if text else ""


# --- request bodies ------------------------------------------------------------------------------


def _sync_body(token: str) -> bytes:
    return (
        '<?xml version="1.0" encoding="utf-8"?>'
        '<D:sync-collection xmlns:D="DAV:">'
        f"<D:sync-token>{escape(token)}</D:sync-token><D:sync-level>1</D:sync-level>"
        "<D:prop><D:getetag/></D:prop></D:sync-collection>"
    ).encode()


def _multiget_body(hrefs: Sequence[str]) -> bytes:
    listed = "".join(f"<D:href>{escape(href)}</D:href>" for href in hrefs)
    return (
        '<?xml version="1.0" encoding="utf-8"?>'
        '<C:calendar-multiget xmlns:D="DAV:" xmlns:C="urn:ietf:params:xml:ns:caldav">'
        f"<D:prop><D:getetag/><C:calendar-data/></D:prop>{listed}</C:calendar-multiget>"
    ).encode()


def _batches(items: Sequence[str], size: int) -> Iterator[Sequence[str]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


# --- reading iCalendar ---------------------------------------------------------------------------


def _values(component: Component, name: str) -> list[Any]:
    """A property's values: icalendar gives one value, or a list when it occurs more than once."""
    value = component.get(name)
    if value is None:
        return []
    return list(value) if isinstance(value, list) else [value]


def _text(component: Component, name: str) -> str:
    values = _values(component, name)
    return str(values[0]) if values else ""


def _zone_name(zone: tzinfo) -> str:
    return zone.key if isinstance(zone, ZoneInfo) else "UTC"


def _instant(value: date | datetime, floating: tzinfo) -> datetime:
    """A DATE or DATE-TIME as a UTC moment: a date is its midnight UTC (as an all-day event's
    start is kept), a floating time is read in `floating`."""
    if not isinstance(value, datetime):
        return datetime.combine(value, time(), UTC)
    if value.tzinfo is None:
        value = value.replace(tzinfo=floating)
    return value.astimezone(UTC)


def _stamp(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y%m%dT%H%M%SZ")


def _recurrence_lines(vevent: Component, floating: tzinfo) -> list[str]:
    """RRULE, EXRULE, RDATE and EXDATE as lines; dates and times in UTC, whatever zone they
    were written in (a zone named only by the resource's own VTIMEZONE included)."""
    lines: list[str] = []
    for name in ("RRULE", "EXRULE"):
        lines.extend(f"{name}:{value.to_ical().decode()}" for value in _values(vevent, name))
    for name in ("RDATE", "EXDATE"):
        for value in _values(vevent, name):
            for item in getattr(value, "dts", ()):
                moment = item.dt
                if isinstance(moment, tuple):  # a PERIOD: kept as written
                    lines.append(f"{name};VALUE=PERIOD:{item.to_ical().decode()}")
                elif isinstance(moment, datetime):
                    lines.append(f"{name}:{_stamp(_instant(moment, floating))}")
                elif isinstance(moment, date):
                    lines.append(f"{name};VALUE=DATE:{moment:%Y%m%d}")
    return lines


def _excluded(vevent: Component, floating: tzinfo) -> list[datetime]:
    """The moments the master's EXDATEs take out of the series."""
    moments = []
    for value in _values(vevent, "EXDATE"):
        for item in getattr(value, "dts", ()):
            if isinstance(item.dt, date):
                moments.append(_instant(item.dt, floating))
    return moments


def _status(vevent: Component) -> EventStatus:
    try:
        return EventStatus(_text(vevent, "STATUS").strip().lower() or "confirmed")
    except ValueError:
        return EventStatus.CONFIRMED  # a status no event has (NEEDS-ACTION is a task's)


def _series_zone(vevent: Component, start: datetime, floating: tzinfo) -> str:
    """The zone a series repeats in: the start's zone (its IANA name when known, else the
    TZID as written), the floating zone, or UTC for a start written in UTC."""
    if start.tzinfo is None:
        return _zone_name(floating)
    if isinstance(start.tzinfo, ZoneInfo):
        return start.tzinfo.key
    tzid = vevent["DTSTART"].params.get("TZID")
    return str(tzid) if tzid else "UTC"


@dataclass(frozen=True)
class _Read:
    content: EventContent
    key: str
    meet_link: str


def _read_vevent(vevent: Event, floating: tzinfo, *, recurring: bool) -> _Read:
    """A VEVENT's normalized content (RFC 5545 3.6.1: no DTEND means DURATION, or one day for
    a date, or no length at all for a time)."""
    start: date | datetime = vevent.start
    end: date | datetime = vevent.end
    all_day = not isinstance(start, datetime)
    zone = ""
    recurrence: list[str] = []
    if recurring:
        recurrence = _recurrence_lines(vevent, floating)
        if isinstance(start, datetime):
            zone = _series_zone(vevent, start, floating)
    if all_day:
        begins = datetime.combine(start, time(), UTC)
        ends = datetime.combine(end if not isinstance(end, datetime) else end.date(), time(), UTC)
    else:
        begins, ends = _instant(start, floating), _instant(end, floating)
    conference = _text(vevent, "CONFERENCE")
    content = EventContent(
        start=begins,
        end=max(ends, begins),
        all_day=all_day,
        summary=_text(vevent, "SUMMARY"),
        location=_text(vevent, "LOCATION"),
        description=_text(vevent, "DESCRIPTION"),
        status=_status(vevent),
        recurrence=tuple(recurrence),
        timezone=zone,
        online_meeting=_text(vevent, ONLINE_PROPERTY).strip().upper() == "TRUE",
    )
    return _Read(content, _text(vevent, KEY_PROPERTY).strip(), conference)


def _parse(text: str | bytes) -> Calendar | None:
    try:
        calendar = Calendar.from_ical(text)
    except Exception:  # icalendar raises ValueError and its own errors for broken data
        return None
    return calendar if isinstance(calendar, Calendar) else None


def _vevents(calendar: Calendar) -> tuple[Event | None, list[Event]]:
    """The resource's master VEVENT (None when it holds only overrides) and its overrides."""
    master: Event | None = None
    overrides: list[Event] = []
    for component in calendar.subcomponents:
        if not isinstance(component, Event):
            continue
        if "RECURRENCE-ID" in component:
            overrides.append(component)
        elif master is None:
            master = component
    return master, overrides


def _recurrence_id(vevent: Component, floating: tzinfo) -> datetime:
    value: Any = vevent["RECURRENCE-ID"]
    return _instant(value.dt, floating)


def events_of(href: str, etag: str, text: str | bytes, floating: tzinfo = UTC) -> list[RemoteEvent]:
    """The events one calendar resource holds: its master (remote id: the href), one per
    override, and an occurrence that is cancelled or EXDATE'd as content None. Nothing for a
    resource that is not an event (a task, a journal) or cannot be read."""
    calendar = _parse(text)
    if calendar is None:
        log.warning("unreadable calendar resource skipped", extra={"href": href})
        return []
    return _events_in(href, etag, calendar, floating)


def _events_in(href: str, etag: str, calendar: Calendar, floating: tzinfo) -> list[RemoteEvent]:
    master, overrides = _vevents(calendar)
    found: dict[str, RemoteEvent] = {}
    try:
        for override in overrides:
            moment = _recurrence_id(override, floating)
            remote_id = occurrence_id(href, moment)
            cancelled = _status(override) is EventStatus.CANCELLED
            read = None if cancelled else _read_vevent(override, floating, recurring=False)
            found[remote_id] = RemoteEvent(
                remote_id,
                etag,
                None if read is None else read.content,
                key=_text(override, KEY_PROPERTY).strip(),
                meet_link="" if read is None else read.meet_link,
                series=href,
                original_start=moment,
            )
        if master is not None:
            read = _read_vevent(master, floating, recurring=True)
            for moment in _excluded(master, floating):
                remote_id = occurrence_id(href, moment)
                found[remote_id] = RemoteEvent(
                    remote_id,
                    etag,
                    None,
                    key=found[remote_id].key if remote_id in found else read.key,
                    series=href,
                    original_start=moment,
                )
            master_event = RemoteEvent(
                href, etag, read.content, key=read.key, meet_link=read.meet_link
            )
            return [master_event, *found.values()]
    except (KeyError, ValueError, TypeError) as exc:  # no DTSTART, a broken time, ...
        log.warning("calendar resource skipped: %s", exc, extra={"href": href})
        return []
    return list(found.values())


def plain_uid(calendar: Calendar) -> str:
    """The UID of a resource holding one single event and nothing Switchboard does not write
    ("" for any other): writing a new one over it whole loses nothing of the teacher's."""
    components = [item for item in calendar.subcomponents if item.name != "VTIMEZONE"]
    if len(components) != 1 or not isinstance(components[0], Event):
        return ""
    vevent = components[0]
    if vevent.subcomponents or set(vevent) - PLAIN_EVENT or set(calendar) - PLAIN_CALENDAR:
        return ""  # an alarm, an attendee, an override, another app's property...
    return str(vevent.get("UID", ""))


def _first(master: Event, floating: tzinfo) -> datetime:
    """The series' first start as dateutil expands it: all-day series in naive midnights."""
    start = master.start
    if not isinstance(start, datetime):
        return datetime.combine(start, time())
    return start if start.tzinfo is not None else start.replace(tzinfo=floating)


def _aligned(value: date | datetime, first: datetime, floating: tzinfo) -> datetime:
    if first.tzinfo is None:  # an all-day series
        if isinstance(value, datetime):
            return value.replace(tzinfo=None)
        return datetime.combine(value, time())
    if not isinstance(value, datetime):
        return datetime.combine(value, first.timetz())
    return value if value.tzinfo is not None else value.replace(tzinfo=floating)


def occurs(master: Event, moment: datetime, floating: tzinfo = UTC) -> bool:
    """Whether the series has an occurrence starting at `moment` (its RRULEs, RDATEs and
    EXDATEs expanded with dateutil). A rule dateutil cannot read counts as yes."""
    try:
        first = _first(master, floating)
        target = moment.astimezone(UTC)
        if first.tzinfo is None:
            target = target.replace(tzinfo=None)
        rules = rruleset()
        rules.rdate(first)
        for value in _values(master, "RRULE"):
            rule = rrulestr(value.to_ical().decode(), dtstart=first)
            if isinstance(rule, rrule):
                rules.rrule(rule)
        for name, add in (("RDATE", rules.rdate), ("EXDATE", rules.exdate)):
            for value in _values(master, name):
                for item in getattr(value, "dts", ()):
                    if isinstance(item.dt, date):
                        add(_aligned(item.dt, first, floating))
        return target in rules
    except (KeyError, ValueError, TypeError):
        return True


# --- writing iCalendar ---------------------------------------------------------------------------


def _zone(name: str) -> ZoneInfo | None:
    """The wall-clock zone a series is written in; None writes it in UTC."""
    if not name or name == "UTC":
        return None
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        return None


def _moment_of(text: str) -> date | datetime:
    """A canonical recurrence date ("20260309") or time ("20260309T100000Z", or floating)."""
    text = text.strip()
    if len(text) == 8:
        return datetime.strptime(text, "%Y%m%d").date()
    if text.endswith("Z"):
        return datetime.strptime(text, "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC)
    return datetime.strptime(text, "%Y%m%dT%H%M%S")


def _add_recurrence(vevent: Event, lines: Sequence[str], zone: ZoneInfo | None) -> None:
    """The content's recurrence lines, RDATE and EXDATE times in the series' own zone (as
    calendar apps write them; RRULE's UNTIL stays in UTC, RFC 5545 3.3.10)."""
    for line in lines:
        head, _colon, value = line.partition(":")
        name, *parts = head.split(";")
        params = dict(part.partition("=")[::2] for part in parts)
        kind = params.get("VALUE", "").upper()
        if name in ("RRULE", "EXRULE"):
            vevent.add(name, vRecur.from_ical(value))
        elif name in ("RDATE", "EXDATE") and kind in ("", "DATE", "DATE-TIME"):
            moments = [_moment_of(item) for item in value.split(",")]
            if zone is not None:
                moments = [
                    moment.astimezone(zone)
                    if isinstance(moment, datetime) and moment.tzinfo
                    else moment
                    for moment in moments
                ]
            vevent.add(name, moments)
        else:
            vevent.add(name, vInline(value), parameters=params)


def _put_content(
    vevent: Event, key: str, content: EventContent, now: datetime, *, master: bool
) -> None:
    """Write what Switchboard owns of a VEVENT over whatever it held; the rest stays."""
    for name in MANAGED:
        vevent.pop(name, None)
    if "SEQUENCE" in vevent:
        try:
            sequence = int(str(vevent["SEQUENCE"])) + 1
        except (TypeError, ValueError):
            sequence = 1
        vevent.pop("SEQUENCE")
        vevent.add("SEQUENCE", sequence)
    vevent.add("DTSTAMP", now)
    zone = _zone(content.timezone) if master and content.recurrence else None
    if content.all_day:
        vevent.add("DTSTART", content.start.date())
        vevent.add("DTEND", content.end.date())
    elif zone is not None:
        vevent.add("DTSTART", content.start.astimezone(zone))
        vevent.add("DTEND", content.end.astimezone(zone))
    else:
        vevent.add("DTSTART", content.start)
        vevent.add("DTEND", content.end)
    for name, text in (
        ("SUMMARY", content.summary),
        ("LOCATION", content.location),
        ("DESCRIPTION", content.description),
    ):
        if text:
            vevent.add(name, text)
    vevent.add("STATUS", content.status.value.upper())
    if master:
        _add_recurrence(vevent, content.recurrence, zone)
    if key:
        vevent.add(KEY_PROPERTY, key)
    if content.online_meeting:
        vevent.add(ONLINE_PROPERTY, "TRUE")


def _tidy_timezones(calendar: Calendar, since: date) -> None:
    """A VTIMEZONE for every TZID used, and none for a zone no longer used."""
    used = calendar.get_used_tzids()
    calendar.subcomponents = [
        component
        for component in calendar.subcomponents
        if component.name != "VTIMEZONE" or str(component.get("TZID", "")) in used
    ]
    # From a year before the first use: a shorter VTIMEZONE than the default 1970 to 2038.
    calendar.add_missing_timezones(first_date=date(max(since.year - 1, 1970), 1, 1))


def new_resource(uid: str, key: str, content: EventContent, now: datetime) -> Calendar:
    """The resource Switchboard writes for a new event: one VEVENT, UID `uid`."""
    calendar = Calendar()
    calendar.add("VERSION", "2.0")
    calendar.add("PRODID", PRODID)
    vevent = Event()
    vevent.add("UID", uid)
    _put_content(vevent, key, content, now, master=True)
    calendar.add_component(vevent)
    _tidy_timezones(calendar, content.start.date())
    return calendar


def _in_form_of(master: Event | None, moment: datetime, floating: tzinfo) -> date | datetime:
    """An occurrence's start written the way the series' DTSTART is (a date, in its zone,
    floating, or UTC), as RECURRENCE-ID and EXDATE must match it (RFC 5545 3.8.4.4)."""
    if master is None:
        return moment
    start = master.start
    if not isinstance(start, datetime):
        return moment.astimezone(UTC).date()
    if start.tzinfo is None:
        return moment.astimezone(floating).replace(tzinfo=None)
    return moment.astimezone(start.tzinfo)


def with_master(
    calendar: Calendar, uid: str, key: str, content: EventContent, now: datetime, floating: tzinfo
) -> None:
    """Write the series (or single event) over the resource's master. Overrides of
    occurrences the new series no longer has go; the others, and the master's own extras,
    stay."""
    master, overrides = _vevents(calendar)
    if master is None:
        master = Event()
        master.add("UID", str(overrides[0].get("UID", uid)) if overrides else uid)
        calendar.add_component(master)
    _put_content(master, key, content, now, master=True)
    for override in overrides:
        if not content.recurrence or not occurs(
            master, _recurrence_id(override, floating), floating
        ):
            calendar.subcomponents.remove(override)
    _tidy_timezones(calendar, content.start.date())


def _drop_exdate(master: Event, moment: datetime, floating: tzinfo) -> None:
    kept: list[list[date | datetime]] = []
    for value in _values(master, "EXDATE"):
        items = [
            item.dt
            for item in getattr(value, "dts", ())
            if not (isinstance(item.dt, date) and _instant(item.dt, floating) == moment)
        ]
        if items:
            kept.append(items)
    master.pop("EXDATE", None)
    for items in kept:
        master.add("EXDATE", items)  # its VALUE=DATE or TZID as the values say


def with_override(
    calendar: Calendar,
    original_start: datetime,
    key: str,
    content: EventContent,
    now: datetime,
    floating: tzinfo,
) -> None:
    """Write one occurrence on its own: its override changed, or added (an occurrence taken
    out by an EXDATE comes back). ValueError when the series has no such occurrence."""
    master, overrides = _vevents(calendar)
    if master is not None:
        _drop_exdate(master, original_start, floating)
    override = next(
        (item for item in overrides if _recurrence_id(item, floating) == original_start), None
    )
    if override is None:
        if master is None or not occurs(master, original_start, floating):
            raise ValueError("the series has no occurrence starting then")
        override = Event()
        override.add("UID", str(master.get("UID", "")))
        override.add("RECURRENCE-ID", _in_form_of(master, original_start, floating))
        calendar.add_component(override)
    _put_content(override, key, replace(content, recurrence=()), now, master=False)
    _tidy_timezones(calendar, content.start.date())


def without_occurrence(
    calendar: Calendar, original_start: datetime, now: datetime, floating: tzinfo
) -> bool:
    """Take one occurrence out of the series: its override goes and the master gets an
    EXDATE (an override with no master is marked cancelled). False when it was not there."""
    master, overrides = _vevents(calendar)
    changed = False
    for override in overrides:
        if _recurrence_id(override, floating) != original_start:
            continue
        if master is None:
            override.pop("STATUS", None)
            override.add("STATUS", "CANCELLED")
        else:
            calendar.subcomponents.remove(override)
        changed = True
    if master is not None and occurs(master, original_start, floating):
        master.add("EXDATE", [_in_form_of(master, original_start, floating)])
        master.pop("DTSTAMP", None)
        master.add("DTSTAMP", now)
        changed = True
    return changed


# --- the provider --------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Collection:
    """What the calendar collection says of itself, asked once per provider."""

    sync: bool  # answers the sync-collection REPORT
    floating: tzinfo  # the zone of floating times: the calendar's, or UTC


@dataclass
class _Listing:
    members: dict[str, str]  # href → etag of the members listed (changed, or all)
    removed: set[str]
    token: str
    complete: bool


@dataclass(frozen=True)
class _Resource:
    etag: str
    calendar: Calendar


class CalDAV(Provider):
    """A CalDAV calendar collection as a `CalendarBackend` (see the module docstring)."""

    def __init__(
        self,
        spec: ProviderSpec,
        client: ResilientClient,
        config: Mapping[str, Any],
        secrets: Mapping[str, str],
    ) -> None:
        super().__init__(spec, client, config, secrets)
        self.calendar_url = str(config["calendar_url"])
        path = canonical_path(self.calendar_url)
        self.path = path if path.endswith("/") else path + "/"
        self._collection: _Collection | None = None
        # href → (etag, UID) of resources last seen holding only what Switchboard writes: an
        # update of one still at that etag is a plain conditional PUT, with no GET first.
        self._plain: LRUCache[str, tuple[str, str]] = LRUCache(maxsize=PLAIN_REMEMBERED)

    # --- errors ---------------------------------------------------------------------------------

    def _fail(self, response: httpx.Response, doing: str, *, collection: bool = False) -> NoReturn:
        """Raise what an answer that is not a success means, in a sentence for the office."""
        status = response.status_code
        name = self.client.name
        conditions = _error_conditions(response)
        if status == 401:
            raise CredentialsRefused(
                f"{name} refused the username or app password (HTTP 401). Check them in the "
                "connection's settings: Nextcloud, iCloud and Fastmail want an app password, "
                "not the account's own password.",
                status=status,
            )
        if status == 403 and not set(conditions) & PRECONDITIONS:
            raise CredentialsRefused(
                f"{name} refused access to the calendar (HTTP 403): the username or app "
                "password was refused, or this account may not change this calendar.",
                status=status,
            )
        if status in (404, 410) and collection:
            raise self._no_calendar(status)
        if 300 <= status < 400:
            moved = response.headers.get("Location", "another address")
            raise ProviderError(
                f"{name} sent Switchboard to {moved} when asked to {doing}; use that as the "
                "calendar address.",
                status=status,
            )
        why = f" ({', '.join(conditions)})" if conditions else ""
        raise ProviderError(
            f"{name} answered HTTP {status}{why} when asked to {doing}.", status=status
        )

    def _no_calendar(self, status: int) -> CalendarGone:
        return CalendarGone(
            f"There is no calendar at {self.calendar_url} (HTTP {status}): the calendar "
            "address is wrong, or the calendar was deleted. Copy the calendar's address again "
            "from the calendar app's settings.",
            status=status,
        )

    # --- the collection -------------------------------------------------------------------------

    async def _about(self) -> _Collection:
        if self._collection is not None:
            return self._collection
        response = await self.call(
            PROPERTIES,
            path_params={"path": self.path},
            content=COLLECTION_BODY.encode(),
            headers={"Depth": "0", "Content-Type": XML_TYPE},
        )
        if response.status_code != 207:
            self._fail(response, "describe the calendar", collection=True)
        answer = _multistatus(response.content)
        member = next(
            (item for item in answer.members if _same_collection(item.href, self.path)),
            answer.members[0] if answer.members else None,
        )
        if member is None or member.status == 404:
            raise self._no_calendar(404)
        kinds = member.props.get(f"{DAV}resourcetype")
        if kinds is None or kinds.find(f"{CAL}calendar") is None:
            raise CalendarGone(
                f"{self.calendar_url} is not a calendar (it may be the account's list of "
                "calendars): give the address of one calendar, as the calendar app's settings "
                "show it.",
            )
        reports = member.props.get(f"{DAV}supported-report-set")
        sync = (
            reports.find(f".//{DAV}sync-collection") is not None
            if reports is not None
            else f"{DAV}sync-token" in member.props
        )
        self._collection = _Collection(
            sync=sync,
            floating=_calendar_zone(member.text(f"{CAL}calendar-timezone")),
        )
        return self._collection

    def _floating(self) -> tzinfo:
        """The zone floating times are read in, once the collection has said it (writes of our
        own, which never hold floating times, need not ask)."""
        return UTC if self._collection is None else self._collection.floating

    # --- reading --------------------------------------------------------------------------------

    async def changes(self, token: str = "", known: Mapping[str, str] | None = None) -> ChangeSet:
        known = known or {}
        about = await self._about()
        listing = await self._sync(token) if about.sync else await self._list()
        by_series: dict[str, set[str]] = {}
        occurrences: dict[str, list[str]] = {}
        for remote_id, etag in known.items():
            series, original = split_occurrence_id(remote_id)
            by_series.setdefault(series, set()).add(etag)
            if original is not None:
                occurrences.setdefault(series, []).append(remote_id)
        unchanged: set[str] = set()
        to_read: list[str] = []
        for href, etag in listing.members.items():
            if etag and etag in by_series.get(href, ()):
                unchanged.add(href)
                unchanged.update(occurrences.get(href, ()))
            else:
                to_read.append(href)
        events: list[RemoteEvent] = []
        removed = set(listing.removed)
        for batch in _batches(to_read, MULTIGET_BATCH):
            read, gone = await self._multiget(batch, about.floating)
            events.extend(self._with_vanished(read, occurrences))
            removed.update(gone)
        if not listing.complete:
            for href in sorted(removed):
                events.append(RemoteEvent(href, "", None))
                events.extend(self._vanished(href, (), occurrences))
        return ChangeSet(events, listing.token, listing.complete, frozenset(unchanged))

    def _with_vanished(
        self, read: Mapping[str, list[RemoteEvent]], occurrences: Mapping[str, list[str]]
    ) -> Iterator[RemoteEvent]:
        for href, events in read.items():
            yield from events
            yield from self._vanished(href, {event.remote_id for event in events}, occurrences)

    def _vanished(
        self, href: str, present: Collection[str], occurrences: Mapping[str, list[str]]
    ) -> Iterator[RemoteEvent]:
        """The occurrences the caller knew of a series that it no longer has on their own."""
        for remote_id in occurrences.get(href, ()):
            if remote_id not in present:
                _series, original = split_occurrence_id(remote_id)
                yield RemoteEvent(remote_id, "", None, series=href, original_start=original)

    async def _sync(self, token: str) -> _Listing:
        listing = _Listing({}, set(), token, complete=not token)
        for _page in range(MAX_SYNC_PAGES):
            response = await self.call(
                SYNC,
                path_params={"path": self.path},
                content=_sync_body(listing.token),
                headers={"Depth": "0", "Content-Type": XML_TYPE},
            )
            if response.status_code != 207:
                if listing.token and self._token_refused(response):
                    log.info(
                        "sync token refused; listing the whole calendar",
                        extra={"connection": self.client.connection_id},
                    )
                    listing = _Listing({}, set(), "", complete=True)
                    continue
                self._fail(response, "list what changed in the calendar", collection=True)
            answer = _multistatus(response.content)
            truncated = False
            for member in answer.members:
                if _same_collection(member.href, self.path):
                    truncated = truncated or member.status == 507
                    continue
                if member.href.endswith("/"):
                    continue  # a collection inside the calendar, not an event
                if member.status == 404:
                    listing.members.pop(member.href, None)
                    listing.removed.add(member.href)
                elif 200 <= member.status < 300:
                    listing.members[member.href] = member.text(f"{DAV}getetag")
                    listing.removed.discard(member.href)
            listing.token = answer.token or listing.token
            if not truncated:
                return listing
        raise ProviderError(
            f"{self.client.name} kept answering the calendar's changes in parts without end."
        )

    @staticmethod
    def _token_refused(response: httpx.Response) -> bool:
        """RFC 6578 3.2: DAV:valid-sync-token (403 or 409); SabreDAV-based servers answer an
        unknown token with 400, and some with 412."""
        if "valid-sync-token" in _error_conditions(response):
            return True
        return response.status_code in (400, 409, 412)

    async def _list(self) -> _Listing:
        """Every member and its etag, for a server without sync-collection; the token is the
        collection's CTag, when it has one."""
        response = await self.call(
            LISTING,
            path_params={"path": self.path},
            content=LISTING_BODY.encode(),
            headers={"Depth": "1", "Content-Type": XML_TYPE},
        )
        if response.status_code != 207:
            self._fail(response, "list the calendar's events", collection=True)
        listing = _Listing({}, set(), "", complete=True)
        for member in _multistatus(response.content).members:
            if _same_collection(member.href, self.path):
                listing.token = member.text(f"{CS}getctag")
                continue
            kinds = member.props.get(f"{DAV}resourcetype")
            if member.href.endswith("/") or (
                kinds is not None and kinds.find(f"{DAV}collection") is not None
            ):
                continue
            if 200 <= member.status < 300:
                listing.members[member.href] = member.text(f"{DAV}getetag")
        return listing

    async def _multiget(
        self, hrefs: Sequence[str], floating: tzinfo
    ) -> tuple[dict[str, list[RemoteEvent]], set[str]]:
        """The events of these resources, by href, and the hrefs no longer there."""
        response = await self.call(
            MULTIGET,
            path_params={"path": self.path},
            content=_multiget_body(hrefs),
            headers={"Content-Type": XML_TYPE},
        )
        if response.status_code != 207:
            self._fail(response, "read the calendar's events", collection=True)
        read: dict[str, list[RemoteEvent]] = {}
        gone: set[str] = set()
        for member in _multistatus(response.content).members:
            if member.status == 404:
                gone.add(member.href)
                continue
            data = member.props.get(f"{CAL}calendar-data")
            calendar = None if data is None or not data.text else _parse(data.text)
            if calendar is None:
                log.warning("unreadable calendar resource skipped", extra={"href": member.href})
                continue
            etag = member.text(f"{DAV}getetag")
            self._remember(member.href, etag, calendar)
            read[member.href] = _events_in(member.href, etag, calendar, floating)
        return read, gone

    def _remember(self, href: str, etag: str, calendar: Calendar | None) -> None:
        uid = "" if calendar is None or etag.startswith("W/") else plain_uid(calendar)
        if etag and uid:
            self._plain[href] = (etag, uid)
        else:
            self._plain.pop(href, None)

    async def _get(self, href: str) -> _Resource | None:
        """The resource as it is now; None when it is not there."""
        response = await self.call(READ, path_params={"href": href})
        if response.status_code in (404, 410):
            return None
        if response.status_code != 200:
            self._fail(response, "read an event")
        calendar = _parse(response.content)
        if calendar is None:
            raise _Unreadable(f"{self.client.name} holds an event Switchboard cannot read.")
        etag = response.headers.get("ETag", "")
        self._remember(href, etag, calendar)
        return _Resource(etag, calendar)

    async def event(self, remote_id: str) -> RemoteEvent:
        href, _original = split_occurrence_id(remote_id)
        floating = (await self._about()).floating
        resource = await self._get(href)
        if resource is None:
            return _gone(remote_id)
        events = _events_in(href, resource.etag, resource.calendar, floating)
        return _pick(remote_id, events, resource.calendar, floating)

    # --- writing --------------------------------------------------------------------------------

    async def create(self, event_id: str, key: str, content: EventContent) -> RemoteEvent:
        href = self.path + caldav_resource_name(event_id)
        body = new_resource(event_id, key, content, _now()).to_ical()
        response = await self.call(
            WRITE,
            path_params={"href": href},
            content=body,
            headers={"If-None-Match": "*", "Content-Type": ICS_TYPE},
        )
        if response.status_code == 412:
            # Already there: our earlier attempt made it, and its answer was lost.
            return await self.event(href)
        conditions = _error_conditions(response)
        if "no-uid-conflict" in conditions:
            # Another resource holds the UID (RFC 4791 5.3.2.1): the event is already there.
            holder = _error_href(response)
            if holder:
                return await self.event(holder)
            raise ProviderError(
                f"{self.client.name} already holds this event under another name.",
                status=response.status_code,
            )
        if response.status_code == 409 and not conditions:
            # RFC 4918 9.7.1: a PUT into a collection that is not there.
            raise self._no_calendar(409)
        if not 200 <= response.status_code < 300:
            self._fail(response, "add an event")
        return await self._written(href, href, response, body)

    async def update(
        self, remote_id: str, etag: str, key: str, content: EventContent
    ) -> RemoteEvent:
        href, original = split_occurrence_id(remote_id)
        plain = self._plain.get(href)
        if original is None and plain is not None and etag and plain[0] == etag:
            # Nothing in it but ours: written over whole, on the condition it is unchanged.
            body = new_resource(plain[1], key, content, _now()).to_ical()
            response = await self._put(href, body, etag)
            return await self._written(remote_id, href, response, body)
        floating = (await self._about()).floating
        resource = await self._get(href)
        if resource is None:
            raise PreconditionFailed(
                "The event is no longer in the calendar; read it again.", status=404
            )
        calendar = resource.calendar
        if original is None:
            uid = href.rsplit("/", 1)[-1].removesuffix(".ics")
            with_master(calendar, uid, key, content, _now(), floating)
        else:
            try:
                with_override(calendar, original, key, content, _now(), floating)
            except ValueError:
                raise PreconditionFailed(
                    "That occurrence is no longer in the series; read it again.", status=412
                ) from None
        body = calendar.to_ical()
        response = await self._put(href, body, etag or resource.etag)
        return await self._written(remote_id, href, response, body)

    async def delete(self, remote_id: str, etag: str) -> None:
        href, original = split_occurrence_id(remote_id)
        self._plain.pop(href, None)
        if original is None:
            response = await self.call(
                REMOVE, path_params={"href": href}, headers={"If-Match": etag} if etag else None
            )
            if response.status_code == 412:
                raise _changed()
            if response.status_code in (404, 410) or 200 <= response.status_code < 300:
                return
            self._fail(response, "delete an event")
        floating = (await self._about()).floating
        resource = await self._get(href)
        if resource is None:
            return
        if without_occurrence(resource.calendar, original, _now(), floating):
            await self._put(href, resource.calendar.to_ical(), etag or resource.etag)

    async def _put(self, href: str, body: bytes, etag: str) -> httpx.Response:
        response = await self.call(
            WRITE,
            path_params={"href": href},
            content=body,
            headers={"If-Match": etag, "Content-Type": ICS_TYPE},
        )
        if response.status_code == 412:
            self._plain.pop(href, None)
            raise _changed()
        if not 200 <= response.status_code < 300:
            self._fail(response, "change an event")
        return response

    async def _written(
        self, remote_id: str, href: str, response: httpx.Response, body: bytes
    ) -> RemoteEvent:
        """The event as written: from what we sent when the server gives its strong etag
        (RFC 4791 5.3.4: then it stored it as sent), else read back."""
        etag = response.headers.get("ETag", "")
        if not etag or etag.startswith("W/"):
            return await self.event(remote_id)
        floating = self._floating()
        calendar = _parse(body)
        self._remember(href, etag, calendar)
        events = [] if calendar is None else _events_in(href, etag, calendar, floating)
        return _pick(remote_id, events, calendar, floating)

    # --- health ---------------------------------------------------------------------------------

    async def check_health(self) -> HealthResult:
        """PROPFIND (Depth 0) on the calendar: it answers, takes the login, and is a calendar."""
        started = clock.monotonic()
        try:
            response = await self.call(
                HEALTH,
                path_params={"path": self.path},
                content=HEALTH_BODY.encode(),
                headers={"Depth": "0", "Content-Type": XML_TYPE},
            )
            elapsed = (clock.monotonic() - started) * 1000
            if response.status_code != 207:
                self._fail(response, "describe the calendar", collection=True)
            member = next(iter(_multistatus(response.content).members), None)
            kinds = None if member is None else member.props.get(f"{DAV}resourcetype")
            if kinds is None or kinds.find(f"{CAL}calendar") is None:
                return HealthResult(
                    False,
                    elapsed,
                    f"{self.calendar_url} is not a calendar: give the address of one calendar.",
                    CalendarGone.error_class,
                )
        except ProviderError as exc:
            elapsed = (clock.monotonic() - started) * 1000
            return HealthResult(False, elapsed, str(exc), exc.error_class)
        name = member.text(f"{DAV}displayname") if member is not None else ""
        which = f"The calendar “{name}”" if name else "The calendar"
        return HealthResult(True, elapsed, f"{which} answered in {elapsed:.0f} ms.")


def _now() -> datetime:
    return datetime.now(UTC).replace(microsecond=0)


def _changed() -> PreconditionFailed:
    return PreconditionFailed(
        "The event changed in the calendar since it was read; read it again.", status=412
    )


def _gone(remote_id: str) -> RemoteEvent:
    series, original = split_occurrence_id(remote_id)
    if original is None:
        return RemoteEvent(remote_id, "", None)
    return RemoteEvent(remote_id, "", None, series=series, original_start=original)


def _pick(
    remote_id: str, events: Sequence[RemoteEvent], calendar: Calendar | None, floating: tzinfo
) -> RemoteEvent:
    """The event `remote_id` among a resource's events. An occurrence not changed on its own
    is the series' occurrence as it is (the master's content at that start), or gone."""
    for event in events:
        if event.remote_id == remote_id:
            return event
    href, original = split_occurrence_id(remote_id)
    master = next((event for event in events if event.remote_id == href), None)
    if original is None or master is None or master.content is None:
        return _gone(remote_id)
    vevent = None if calendar is None else _vevents(calendar)[0]
    if vevent is None or not occurs(vevent, original, floating):
        return replace(_gone(remote_id), etag=master.etag)
    content = master.content
    length = content.end - content.start
    occurrence = replace(content, start=original, end=original + length, recurrence=(), timezone="")
    return RemoteEvent(
        remote_id,
        master.etag,
        occurrence,
        key=master.key,
        meet_link=master.meet_link,
        series=href,
        original_start=original,
    )


def _calendar_zone(text: str) -> tzinfo:
    """The zone named by a CALDAV:calendar-timezone (a VCALENDAR holding one VTIMEZONE), when
    it is one zoneinfo knows; UTC otherwise."""
    calendar = _parse(text) if text else None
    if calendar is not None:
        for component in calendar.walk("VTIMEZONE"):
            zone = _zone(str(component.get("TZID", "")))
            if zone is not None:
                return zone
    return UTC


# --- the spec ------------------------------------------------------------------------------------


def _origin(config: Mapping[str, Any]) -> str:
    parts = urlsplit(str(config["calendar_url"]))
    host = parts.netloc.rpartition("@")[2]  # never a user:password written into the address
    return f"{parts.scheme}://{host}"


def _headers(config: Mapping[str, Any], secrets: Mapping[str, str]) -> dict[str, str]:
    username = str(config.get("username") or "")
    if not username:
        return {}
    pair = f"{username}:{secrets.get('password', '')}".encode()  # RFC 7617: UTF-8
    return {"Authorization": f"Basic {base64.b64encode(pair).decode('ascii')}"}


def _calendar_address(value: str) -> None:
    parts = urlsplit(value)
    if not parts.path or parts.path == "/":
        raise ValueError(
            "Give the address of one calendar, including its path, e.g. "
            "https://cloud.example.org/remote.php/dav/calendars/jane/lessons/."
        )


def _caldav(
    spec: ProviderSpec,
    client: ResilientClient,
    config: Mapping[str, Any],
    secrets: Mapping[str, str],
) -> Provider:
    return CalDAV(spec, client, config, secrets)


CALDAV = ProviderSpec(
    key="caldav",
    name="CalDAV calendar",
    category=Category.CALENDAR,
    description=(
        "A teacher's calendar on a CalDAV server (Nextcloud, iCloud, Fastmail, Radicale, "
        "Baïkal, ...), with the calendar's address, a username and an app password."
    ),
    fields=(
        ConfigField(
            "calendar_url",
            "Calendar address",
            FieldKind.URL,
            help="The address of one calendar. Nextcloud: Calendar → the calendar's ⋯ menu → "
            "Copy private link (https://cloud.example.org/remote.php/dav/calendars/jane/"
            "lessons/); iCloud: https://pNN-caldav.icloud.com/… as a CalDAV app shows it; "
            "Fastmail: https://caldav.fastmail.com/dav/calendars/user/jane@fastmail.com/….",
            check=_calendar_address,
        ),
        ConfigField(
            "username",
            "Username",
            required=False,
            help="The account's login (often the e-mail address). Leave empty for a calendar "
            "that needs none.",
        ),
        ConfigField(
            "password",
            "App password",
            FieldKind.SECRET,
            required=False,
            help="Use an app password made for Switchboard (Nextcloud: Settings → Security; "
            "iCloud: appleid.apple.com; Fastmail: Settings → Privacy & Security), not the "
            "account's own password.",
        ),
        TEACHER_FIELD,
        CONFLICTS_FIELD,
    ),
    auth=AuthKind.BASIC,
    capabilities=frozenset({CALENDAR}),
    health=HEALTH,
    base_url=_origin,
    factory=_caldav,
    # Calendar servers publish no rate limits; a first sync writes every lesson (thousands for
    # a busy teacher), so the pace is the server's answers, up to 100 a second; a multiget of
    # a hundred events can take a while.
    policy=ResiliencePolicy(timeout=30.0, rate=RatePolicy(requests=100.0)),
    headers=_headers,
)
