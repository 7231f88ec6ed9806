"""`audit verify`: check that the audit trail is as it was written (no entry changed, removed,
inserted or moved since). `audit export`: the entries, filtered, to a CSV file."""

from __future__ import annotations

import argparse
import asyncio
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from app.cli import EXIT_FAILED, EXIT_OK, _print_json, _with_services
from app.config import Config
from app.services import Services
from app.services.audit import TrailFilter
from app.services.progress import Progress


def _moment(text: str) -> date | datetime:
    """A day (YYYY-MM-DD, in the school's time zone) or a moment (ISO 8601)."""
    try:
        if len(text) == 10:
            return date.fromisoformat(text)
        return datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a date: write it as YYYY-MM-DD (or YYYY-MM-DDTHH:MM)"
        ) from None


def add_parser(commands: Any, common: argparse.ArgumentParser) -> None:
    trail = commands.add_parser(
        "audit", parents=[common], help="the audit trail of every change made"
    )
    actions = trail.add_subparsers(dest="audit_command", metavar="ACTION", required=True)
    check = actions.add_parser(
        "verify", parents=[common], help="check that no entry was changed or removed"
    )
    check.add_argument("--json", action="store_true", help="print one JSON document")
    export = actions.add_parser(
        "export", parents=[common], help="write the entries to a CSV file (oldest first)"
    )
    export.add_argument(
        "--out", type=Path, metavar="F", help="the CSV file (audit-trail-<today>.csv here)"
    )
    export.add_argument(
        "--since", type=_moment, metavar="DATE", help="entries from this day on (YYYY-MM-DD)"
    )
    export.add_argument(
        "--until", type=_moment, metavar="DATE", help="entries up to and including this day"
    )
    export.add_argument("--actor", metavar="A", help="only what this person or program did")
    export.add_argument(
        "--action",
        metavar="A",
        help='only this action ("connection.added") or family of actions ("connection")',
    )
    export.add_argument("--json", action="store_true", help="print one JSON document")


def audit(args: argparse.Namespace, config: Config) -> int:
    if args.audit_command == "export":
        return int(_with_services(config, lambda services: _export(args, services)))

    async def run(services: Services) -> int:
        result = await services.audit.verify()
        bad = result.first_bad
        if args.json:
            _print_json(
                {
                    "ok": result.ok,
                    "entries": result.entries,
                    "first_bad": (
                        {"seq": bad.seq, "id": bad.id, "reason": bad.reason} if bad else None
                    ),
                }
            )
        elif bad is None:
            print(f"The audit trail is intact: {result.entries} entries.")
        else:
            shown_id = bad.id if bad.id is not None else "unknown"
            print(f"The audit trail is broken at entry {bad.seq} (id {shown_id}): {bad.reason}.")
        return EXIT_OK if result.ok else EXIT_FAILED

    return int(_with_services(config, run))


def _start(value: date | datetime | None, zone: ZoneInfo, *, next_day: bool) -> datetime | None:
    """A moment in UTC: a day means its first moment in the school's time zone (the next
    day's, for an `--until` that includes the whole day); a moment without a zone is the
    school's time too."""
    if value is None:
        return None
    if isinstance(value, datetime):
        moment = value if value.tzinfo is not None else value.replace(tzinfo=zone)
        return moment.astimezone(UTC)
    day = value + timedelta(days=1) if next_day else value
    return datetime.combine(day, time(), zone).astimezone(UTC)


async def _export(args: argparse.Namespace, services: Services) -> int:
    zone = ZoneInfo(str(services.settings.get("school.timezone")) or "UTC")
    where = TrailFilter(
        since=_start(args.since, zone, next_day=False),
        until=_start(args.until, zone, next_day=True),
        actor=args.actor,
        action=args.action,
    )
    path = args.out or Path(f"audit-trail-{datetime.now(zone):%Y-%m-%d}.csv")
    progress = Progress()
    try:
        result = await services.audit.export(path.resolve(), where, progress)
    except asyncio.CancelledError:  # Ctrl+C: the reading thread stops and leaves no file
        progress.cancel()
        raise
    if args.json:
        _print_json(
            {
                "ok": True,
                "file": str(result.path),
                "entries": result.entries,
                "filter": where.as_json(),
            }
        )
    else:
        print(f"Exported {result.entries:,} audit entries to {result.path}.")
    return EXIT_OK
