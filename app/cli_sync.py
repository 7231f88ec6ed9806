"""`sync`: bring each teacher's calendar in step with the school's lessons now, and say what
changed, what the teachers proposed, and what is held back for a person to confirm."""

from __future__ import annotations

import argparse
from typing import Any

from app.cli import EXIT_FAILED, EXIT_OK, CommandFailed, _print_json, _with_services
from app.config import Config
from app.services import Services
from app.services.calendar_sync import SyncReport


def add_parser(commands: Any, common: argparse.ArgumentParser) -> None:
    sync = commands.add_parser(
        "sync",
        parents=[common],
        help="sync the teachers' calendars with the lessons now",
    )
    sync.add_argument("--connection", type=int, metavar="ID", help="only this calendar connection")
    sync.add_argument(
        "--confirm",
        default="",
        metavar="TOKEN",
        help="let deletions a sync held back go ahead (the token it printed)",
    )
    sync.add_argument("--json", action="store_true", help="print one JSON document")


def sync(args: argparse.Namespace, config: Config) -> int:
    async def run(services: Services) -> int:
        service = services.calendar_sync
        if args.connection is not None:
            reports = [await service.sync(args.connection, confirm=args.confirm, trigger="command")]
        else:
            if args.confirm:
                raise CommandFailed("--confirm needs --connection: the calendar it is for.")
            reports = await service.sync_all(trigger="command")
            if not reports:
                raise CommandFailed(
                    "No calendar is connected; add one with `switchboard connection add "
                    "caldav` or `google-calendar`, or in the app."
                )
        if args.json:
            _print_json({"calendars": [report.as_dict() for report in reports]})
        else:
            for report in reports:
                _print_report(report)
        failed = any(report.outcome == "failed" for report in reports)
        return EXIT_FAILED if failed else EXIT_OK

    return _with_services(config, run)


def _print_report(report: SyncReport) -> None:
    print(f"{report.name}: {report.message}")
    if report.held:
        print(
            f"  To let the held-back deletions go ahead: switchboard sync --connection "
            f"{report.connection_id} --confirm {report.confirm}"
        )
