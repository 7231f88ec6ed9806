"""`audit verify`: check that the audit trail is as it was written (no entry changed, removed,
inserted or moved since)."""

from __future__ import annotations

import argparse
from typing import Any

from app.cli import EXIT_FAILED, EXIT_OK, _print_json, _with_services
from app.config import Config
from app.services import Services


def add_parser(commands: Any, common: argparse.ArgumentParser) -> None:
    trail = commands.add_parser(
        "audit", parents=[common], help="the audit trail of every change made"
    )
    actions = trail.add_subparsers(dest="audit_command", metavar="ACTION", required=True)
    check = actions.add_parser(
        "verify", parents=[common], help="check that no entry was changed or removed"
    )
    check.add_argument("--json", action="store_true", help="print one JSON document")


def audit(args: argparse.Namespace, config: Config) -> int:
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
