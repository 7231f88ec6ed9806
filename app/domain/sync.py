"""Two-way sync decided without I/O: what one item needs given what both sides agreed on at the
last sync and what each side holds now, how a connection's conflict policy settles a conflict,
when a sync must stop and ask before deleting a lot, and the normalized calendar content and
deterministic ids that items are compared and created by.

A sync service (calendar sync with Google Calendar and CalDAV, others later) reads both sides,
calls `decide` for every item, `settle`s the conflicts, runs `check_deletions` over what it would
delete, and only then writes. Nothing here touches the network, the database or Qt.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import unicodedata
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime, time
from enum import StrEnum
from typing import Final
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

# --- the three-way decision ----------------------------------------------------------------------


class Side(StrEnum):
    LOCAL = "local"  # Switchboard's own records: lessons, rooms, ...
    REMOTE = "remote"  # the connected service: a Google calendar, a CalDAV collection, ...


class Change(StrEnum):
    """Where one side's copy of an item stands against the baseline."""

    ABSENT = "absent"  # never synced, and not on this side
    NEW = "new"  # never synced, and on this side
    UNCHANGED = "unchanged"  # synced, and its content is what was agreed
    CHANGED = "changed"  # synced, and its content is no longer what was agreed
    DELETED = "deleted"  # synced, and gone from this side


class Contents(StrEnum):
    """Whether the two sides hold the same content now."""

    SAME = "same"
    DIFFERENT = "different"
    UNPAIRED = "unpaired"  # at most one side holds the item: nothing to compare


class Action(StrEnum):
    NOTHING = "nothing"
    CREATE_REMOTE = "create_remote"  # new locally: create it on the remote side
    CREATE_LOCAL = "create_local"  # new remotely: create it locally
    UPDATE_REMOTE = "update_remote"  # changed locally only: write the local content remotely
    UPDATE_LOCAL = "update_local"  # changed remotely only: write the remote content locally
    DELETE_REMOTE = "delete_remote"  # deleted locally, untouched remotely
    DELETE_LOCAL = "delete_local"  # deleted remotely, untouched locally
    CONFLICT = "conflict"  # moved apart on both sides: the policy or a person decides
    ADOPT = "adopt"  # both sides hold the same content: store it as the baseline, write nothing
    REFRESH_BASELINE = "refresh_baseline"  # only the remote etag moved: store the new etag
    FORGET = "forget"  # deleted on both sides: drop the baseline


@dataclass(frozen=True)
class LocalItem:
    """One item as the local side holds it now."""

    content_hash: str


@dataclass(frozen=True)
class RemoteItem:
    """One item as the remote side holds it now. Whether it changed is judged by
    `content_hash` alone; `etag` is what the next write sends as If-Match."""

    etag: str
    content_hash: str


@dataclass(frozen=True)
class Baseline:
    """What both sides held at the last successful sync of one item.

    The two hashes are kept apart because a side may keep an item a little differently from how
    it was written (a field it cannot hold); each side is only ever compared with its own.
    """

    local_hash: str
    remote_etag: str
    remote_hash: str

    @classmethod
    def agreed(cls, local: LocalItem, remote: RemoteItem) -> Baseline:
        """The baseline to store when both sides are known to agree, as after ADOPT."""
        return cls(local.content_hash, remote.etag, remote.content_hash)


@dataclass(frozen=True)
class Decision:
    """What one item needs, and the states it was decided from (a conflict record shows them)."""

    action: Action
    local: Change
    remote: Change
    contents: Contents
    settled_by: ConflictPolicy | None = None  # the policy that turned a conflict into `action`


# Every state pair that can occur, and only those: NEW and ABSENT exist only without a baseline,
# UNCHANGED, CHANGED and DELETED only with one.
DECISIONS: Final[Mapping[tuple[Change, Change, Contents], Action]] = {
    # Never synced.
    (Change.ABSENT, Change.ABSENT, Contents.UNPAIRED): Action.NOTHING,
    (Change.NEW, Change.ABSENT, Contents.UNPAIRED): Action.CREATE_REMOTE,
    (Change.ABSENT, Change.NEW, Contents.UNPAIRED): Action.CREATE_LOCAL,
    (Change.NEW, Change.NEW, Contents.SAME): Action.ADOPT,
    (Change.NEW, Change.NEW, Contents.DIFFERENT): Action.CONFLICT,
    # Synced before, and on both sides now. SAME after a one-sided edit means the edit brought
    # that side to what the other already holds: writing it would change nothing.
    (Change.UNCHANGED, Change.UNCHANGED, Contents.SAME): Action.NOTHING,
    (Change.UNCHANGED, Change.UNCHANGED, Contents.DIFFERENT): Action.NOTHING,
    (Change.CHANGED, Change.UNCHANGED, Contents.DIFFERENT): Action.UPDATE_REMOTE,
    (Change.CHANGED, Change.UNCHANGED, Contents.SAME): Action.ADOPT,
    (Change.UNCHANGED, Change.CHANGED, Contents.DIFFERENT): Action.UPDATE_LOCAL,
    (Change.UNCHANGED, Change.CHANGED, Contents.SAME): Action.ADOPT,
    (Change.CHANGED, Change.CHANGED, Contents.SAME): Action.ADOPT,
    (Change.CHANGED, Change.CHANGED, Contents.DIFFERENT): Action.CONFLICT,
    # Synced before, and gone from at least one side.
    (Change.DELETED, Change.UNCHANGED, Contents.UNPAIRED): Action.DELETE_REMOTE,
    (Change.DELETED, Change.CHANGED, Contents.UNPAIRED): Action.CONFLICT,
    (Change.UNCHANGED, Change.DELETED, Contents.UNPAIRED): Action.DELETE_LOCAL,
    (Change.CHANGED, Change.DELETED, Contents.UNPAIRED): Action.CONFLICT,
    (Change.DELETED, Change.DELETED, Contents.UNPAIRED): Action.FORGET,
}


def decide(
    baseline: Baseline | None, local: LocalItem | None, remote: RemoteItem | None
) -> Decision:
    """What one item needs, by `DECISIONS`. Where that is nothing but the remote etag moved, the
    baseline's etag is refreshed, so the next sync can tell the item is unchanged from its etag
    alone (Google bumps etags without any change in content)."""
    local_change = _change(None if baseline is None else baseline.local_hash, local)
    remote_change = _change(None if baseline is None else baseline.remote_hash, remote)
    if local is None or remote is None:
        contents = Contents.UNPAIRED
    elif local.content_hash == remote.content_hash:
        contents = Contents.SAME
    else:
        contents = Contents.DIFFERENT
    action = DECISIONS[(local_change, remote_change, contents)]
    if (
        action is Action.NOTHING
        and baseline is not None
        and remote is not None
        and remote.etag != baseline.remote_etag
    ):
        action = Action.REFRESH_BASELINE
    return Decision(action, local_change, remote_change, contents)


def _change(agreed_hash: str | None, now: LocalItem | RemoteItem | None) -> Change:
    if agreed_hash is None:
        return Change.ABSENT if now is None else Change.NEW
    if now is None:
        return Change.DELETED
    return Change.UNCHANGED if now.content_hash == agreed_hash else Change.CHANGED


# --- conflict policy -----------------------------------------------------------------------------


class ConflictPolicy(StrEnum):
    """Who wins when an item moved apart on both sides; chosen per connection."""

    SCHOOL_WINS = "school_wins"  # the local side is written over the remote one
    CALENDAR_WINS = "calendar_wins"  # the remote side is written over the local one
    ASK = "ask"  # the conflict is recorded for a person to decide


def settle(decision: Decision, policy: ConflictPolicy) -> Decision:
    """The action `policy` takes for a conflict: the winning side's state is written to the
    other, re-creating or deleting there as needed. Any other decision comes back as it was."""
    if decision.action is not Action.CONFLICT or policy is ConflictPolicy.ASK:
        return decision
    if policy is ConflictPolicy.SCHOOL_WINS:
        if decision.local is Change.DELETED:
            action = Action.DELETE_REMOTE
        elif decision.remote is Change.DELETED:
            action = Action.CREATE_REMOTE
        else:
            action = Action.UPDATE_REMOTE
    elif decision.remote is Change.DELETED:
        action = Action.DELETE_LOCAL
    elif decision.local is Change.DELETED:
        action = Action.CREATE_LOCAL
    else:
        action = Action.UPDATE_LOCAL
    return replace(decision, action=action, settled_by=policy)


# --- mass-deletion guard -------------------------------------------------------------------------


@dataclass(frozen=True)
class DeletionLimits:
    """When a sync stops to ask before deleting; see `check_deletions`."""

    empty_after: int = 5  # a side that held at least this many items and now shows none
    max_share: float = 0.5  # of the target side's items, ...
    max_count: int = 10  # ... and more than this many of them


DEFAULT_LIMITS: Final = DeletionLimits()


@dataclass(frozen=True)
class DeletionCheck:
    """Whether the deletions may go ahead. `reason` says why they stopped (kept when a person
    confirmed them); `token` is what to pass back as `confirmation` to go ahead."""

    allowed: bool
    confirmed: bool = False
    reason: str = ""
    token: str = ""


_SIDE_NAMES: Final = {Side.LOCAL: "Switchboard", Side.REMOTE: "the connected service"}


def check_deletions(
    target: Side,
    *,
    deletions: int,
    target_items: int,
    source_known: int,
    source_present: int,
    limits: DeletionLimits = DEFAULT_LIMITS,
    confirmation: str = "",
) -> DeletionCheck:
    """Whether a sync may delete `deletions` of the `target_items` items on `target` because they
    disappeared from the other side (the source), which held `source_known` items at the last
    sync and shows `source_present` now.

    It stops and asks when the source held at least `limits.empty_after` items and now shows
    none — more often an expired account, a wrong calendar or a server's bad answer than a real
    clear-out — or when the deletions are more than `limits.max_share` of the target's items and
    more than `limits.max_count`. The answer's token names these exact counts: passed back as
    `confirmation` it lets them go ahead, while different counts ask again, so a confirmation
    given for a few deletions never covers a larger one.
    """
    if min(deletions, target_items, source_known, source_present) < 0:
        raise ValueError("Item and deletion counts cannot be negative.")
    source = _SIDE_NAMES[Side.REMOTE if target is Side.LOCAL else Side.LOCAL]
    where = _SIDE_NAMES[target]
    if deletions == 0:
        return DeletionCheck(allowed=True)
    if source_present == 0 and source_known >= limits.empty_after:
        reason = (
            f"{source[0].upper()}{source[1:]} shows no items, though it held {source_known} at "
            f"the last sync, so {deletions} would be deleted from {where}. Confirm only if "
            "everything there was really removed."
        )
    elif deletions > limits.max_count and deletions > limits.max_share * target_items:
        reason = (
            f"This sync would delete {deletions} of the {target_items} items in {where}. "
            "Confirm only if they were meant to go."
        )
    else:
        return DeletionCheck(allowed=True)
    token = f"delete-{deletions}-of-{target_items}-{target}"
    confirmed = confirmation == token
    return DeletionCheck(allowed=confirmed, confirmed=confirmed, reason=reason, token=token)


# --- normalized calendar content -----------------------------------------------------------------


class EventStatus(StrEnum):
    CONFIRMED = "confirmed"
    TENTATIVE = "tentative"
    CANCELLED = "cancelled"


@dataclass(frozen=True)
class EventContent:
    """A calendar item's content as both sides understand it, normalized when it is made, so the
    same event read from Google, from a CalDAV server or from our own records is equal and has
    the same `content_hash`, whatever bytes each side wrote it in.

    Times must be aware; they are kept in UTC, truncated to the second. An all-day item's start
    and end are midnight UTC of the dates as written (the end exclusive, as Google and
    iCalendar both write it), whatever zone they came in. `timezone` is the wall-clock zone a
    recurring item repeats in; it is dropped for single and all-day items, where it changes
    nothing. `recurrence` holds RRULE, EXRULE, RDATE and EXDATE lines (see
    `normalize_recurrence`). Text: None reads as "", Unicode is composed (NFC), surrounding
    whitespace goes; summary and location have inner runs of whitespace made one space; the
    description keeps its lines, with \\n endings and no trailing whitespace. A missing status
    reads as confirmed.
    """

    start: datetime
    end: datetime
    all_day: bool = False
    summary: str = ""
    location: str = ""
    description: str = ""
    status: EventStatus = EventStatus.CONFIRMED
    recurrence: tuple[str, ...] = ()
    timezone: str = ""
    online_meeting: bool = False

    def __post_init__(self) -> None:
        all_day = bool(self.all_day)
        zone = _text(self.timezone).strip()
        zone = "UTC" if zone in _UTC_NAMES else zone
        recurrence = normalize_recurrence(self.recurrence, zone)
        fields: dict[str, object] = {
            "start": _utc(self.start, "start", all_day=all_day),
            "end": _utc(self.end, "end", all_day=all_day),
            "all_day": all_day,
            "summary": " ".join(_text(self.summary).split()),
            "location": " ".join(_text(self.location).split()),
            "description": _paragraphs(self.description),
            "status": _status(self.status),
            "recurrence": recurrence,
            "timezone": zone if recurrence and not all_day else "",
            "online_meeting": bool(self.online_meeting),
        }
        for name, value in fields.items():
            object.__setattr__(self, name, value)

    def canonical_json(self) -> str:
        """The text `content_hash` is taken of: sorted keys, no spaces, UTC ISO times."""
        fields = {
            "start": _iso(self.start),
            "end": _iso(self.end),
            "all_day": self.all_day,
            "summary": self.summary,
            "location": self.location,
            "description": self.description,
            "status": self.status.value,
            "recurrence": list(self.recurrence),
            "timezone": self.timezone,
            "online_meeting": self.online_meeting,
        }
        return json.dumps(fields, sort_keys=True, ensure_ascii=False, separators=(",", ":"))

    def content_hash(self) -> str:
        """A stable hex sha256 of the normalized content: equal hashes, same event. Taken
        once (the content cannot change), as a sync compares a teacher's year of lessons."""
        known = self.__dict__.get("_content_hash")
        if known is None:
            known = hashlib.sha256(self.canonical_json().encode("utf-8")).hexdigest()
            object.__setattr__(self, "_content_hash", known)
        return str(known)


_UTC_NAMES: Final = frozenset({"UTC", "Etc/UTC", "GMT", "Etc/GMT", "UCT", "Etc/UCT", "Z", "Zulu"})


def _text(value: object) -> str:
    if value is None:
        return ""
    if not isinstance(value, str):
        raise TypeError(f"Expected text, got {value!r}.")
    return unicodedata.normalize("NFC", value)


def _paragraphs(value: object) -> str:
    text = _text(value).replace("\r\n", "\n").replace("\r", "\n")
    return "\n".join(line.rstrip() for line in text.split("\n")).strip()


def _status(value: object) -> EventStatus:
    if value is None or value == "":
        return EventStatus.CONFIRMED
    return EventStatus(_text(value).strip().lower())


def _utc(value: datetime, name: str, *, all_day: bool) -> datetime:
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError(f"An event's {name} must carry its time zone: {value!r}.")
    if all_day:
        return datetime.combine(value.date(), time(), UTC)
    return value.astimezone(UTC).replace(microsecond=0)


def _iso(moment: datetime) -> str:
    return moment.replace(tzinfo=None).isoformat() + "Z"


# --- recurrence ----------------------------------------------------------------------------------

_LINE_ORDER: Final = ("RRULE", "EXRULE", "RDATE", "EXDATE")
_RULE_ORDER: Final = (
    "FREQ", "UNTIL", "COUNT", "INTERVAL", "BYSECOND", "BYMINUTE", "BYHOUR", "BYDAY",
    "BYMONTHDAY", "BYYEARDAY", "BYWEEKNO", "BYMONTH", "BYSETPOS", "WKST",
)  # fmt: skip
# RFC 5545's defaults: a rule that states them means the same as one that leaves them out.
_RULE_DEFAULTS: Final = {"INTERVAL": "1", "WKST": "MO"}
_WEEKDAYS: Final = ("MO", "TU", "WE", "TH", "FR", "SA", "SU")


def normalize_recurrence(lines: Iterable[str], timezone: str = "") -> tuple[str, ...]:
    """Recurrence lines in one canonical form, so equal recurrences compare equal.

    Names, keys and values are uppercased; a rule's parts come in RFC 5545's order, without the
    defaults (INTERVAL=1, WKST=MO), with BY… lists sorted; UNTIL, RDATE and EXDATE times are
    in UTC (a floating time is read in `timezone`, or in the line's TZID) and dates stay dates;
    RDATE and EXDATE lines are merged per kind. A time in a zone that cannot be found is kept as
    written. The lines come out rules first, then RDATE, then EXDATE.
    """
    zone = _zone(timezone)
    out: list[str] = []
    dates: dict[tuple[str, bool], set[str]] = {}
    for raw in lines:
        line = raw.strip()
        if not line:
            continue
        head, colon, value = line.partition(":")
        if not colon and line.upper().startswith("FREQ="):  # a bare rule, as some APIs give it
            head, value = "RRULE", line
        name, *param_parts = head.split(";")
        name = name.strip().upper()
        params = {
            key.strip().upper(): param.strip()
            for key, _, param in (part.partition("=") for part in param_parts)
        }
        value = value.strip()
        if name in ("RRULE", "EXRULE"):
            out.append(f"{name}:{_rule(value, zone)}")
        elif name in ("RDATE", "EXDATE") and params.get("VALUE", "").upper() in (
            "",
            "DATE",
            "DATE-TIME",
        ):
            where = _zone(params["TZID"]) if "TZID" in params else zone
            for item in value.split(","):
                moment, is_date = _moment(item, where)
                dates.setdefault((name, is_date), set()).add(moment)
        elif colon:
            listed = "".join(f";{key}={params[key]}" for key in sorted(params))
            out.append(f"{name}{listed}:{value}")
        else:
            out.append(line)
    for (name, is_date), moments in dates.items():
        kind = ";VALUE=DATE" if is_date else ""
        out.append(f"{name}{kind}:{','.join(sorted(moments))}")
    return tuple(sorted(set(out), key=_line_key))


def _line_key(line: str) -> tuple[int, str]:
    name = re.split(r"[;:]", line, maxsplit=1)[0]
    rank = _LINE_ORDER.index(name) if name in _LINE_ORDER else len(_LINE_ORDER)
    return rank, line


def _rule(value: str, zone: ZoneInfo | None) -> str:
    parts: dict[str, str] = {}
    for part in value.split(";"):
        key, _, item = part.partition("=")
        key, item = key.strip().upper(), item.strip().upper()
        if not key:
            continue
        if key == "UNTIL":
            item = _moment(item, zone)[0]
        elif key.startswith("BY"):
            item = ",".join(sorted((v.strip() for v in item.split(",")), key=_list_key))
        if _RULE_DEFAULTS.get(key) != item:
            parts[key] = item
    known = len(_RULE_ORDER)
    order = sorted(parts, key=lambda k: (_RULE_ORDER.index(k) if k in _RULE_ORDER else known, k))
    return ";".join(f"{key}={parts[key]}" for key in order)


def _list_key(item: str) -> tuple[int, int, str]:
    """Weekdays (with their ordinal, as in 1MO or -1FR) in week order, numbers in number order."""
    day, ordinal = item[-2:], item[:-2]
    if day in _WEEKDAYS:
        return _WEEKDAYS.index(day), _number(ordinal or "0"), item
    return 0, _number(item), item


def _number(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        return 0


def _moment(text: str, zone: ZoneInfo | None) -> tuple[str, bool]:
    """An iCalendar DATE or DATE-TIME in canonical form, and whether it is a date."""
    text = text.strip().upper()
    try:
        if len(text) == 8:
            datetime.strptime(text, "%Y%m%d")  # only checks that it is a date
            return text, True
        if text.endswith("Z"):
            moment = datetime.strptime(text, "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC)
        elif zone is not None:
            moment = datetime.strptime(text, "%Y%m%dT%H%M%S").replace(tzinfo=zone)
        else:
            return text, False
    except ValueError:
        return text, False
    return moment.astimezone(UTC).strftime("%Y%m%dT%H%M%SZ"), False


def _zone(name: str) -> ZoneInfo | None:
    try:
        return ZoneInfo(name) if name else None
    except (ZoneInfoNotFoundError, ValueError):
        return None


# --- remote ids ----------------------------------------------------------------------------------

_GOOGLE_EVENT_ID: Final = re.compile(r"[a-v0-9]{5,1024}")


def event_id(namespace: str, local_kind: str, local_id: int) -> str:
    """The remote id of one local item, the same every time, so a create retried after a lost
    answer meets its first attempt (Google answers 409) instead of making a second event.

    32 characters of base32hex (a–v, 0–9) from a sha256 of the three inputs: a valid Google
    Calendar event id and CalDAV resource name. `namespace` should name the school and the
    connection, so two installations writing into one calendar never collide.
    """
    # JSON keeps the parts apart: ("a:b", "c") and ("a", "b:c") must not meet.
    key = json.dumps([namespace, local_kind, local_id], ensure_ascii=False)
    digest = hashlib.sha256(key.encode("utf-8")).digest()[:20]  # 160 bits: 32 chars, no padding
    return base64.b32hexencode(digest).decode("ascii").lower()


def is_google_event_id(value: str) -> bool:
    """Whether Google Calendar accepts `value` as an event id: a–v and 0–9, 5 to 1024 long."""
    return _GOOGLE_EVENT_ID.fullmatch(value) is not None


def caldav_resource_name(remote_id: str) -> str:
    """The name of the item's resource in a CalDAV collection: `<id>.ics`."""
    return f"{remote_id}.ics"
