"""`reconcile`: bring in a gateway's records (through its API) or a file, then match everything
and print the counts and amounts per status."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from app.cli import EXIT_OK, CommandFailed, _print_json, _with_services
from app.config import Config
from app.domain.money import Money, MoneyError
from app.domain.reconciliation import Side, Status
from app.services import Services
from app.services.reconciliation.service import Imported, RunSummary
from app.services.statement_files import FORMATS

GATEWAY_FORMATS = ("stripe-csv", "paypal-csv")


def add_parser(commands: Any, common: argparse.ArgumentParser) -> None:
    reconcile = commands.add_parser(
        "reconcile",
        parents=[common],
        help="match the ledger, the gateways and the bank, and count what differs",
    )
    reconcile.add_argument(
        "--connection",
        type=int,
        metavar="ID",
        help="read this gateway's records through its API first (with --file: the gateway the "
        "settlement report is from)",
    )
    reconcile.add_argument("--file", type=Path, metavar="F", help="import this file first")
    reconcile.add_argument(
        "--format",
        choices=[key for key, _ in FORMATS],
        help="the file's format (found from its content when left out)",
    )
    reconcile.add_argument(
        "--account",
        default="Bank",
        help="the bank account a statement is from, by name (Bank)",
    )
    reconcile.add_argument(
        "--currency", default="", help="the account's currency, for files that do not say it"
    )
    reconcile.add_argument("--json", action="store_true", help="print one JSON document")


def reconcile(args: argparse.Namespace, config: Config) -> int:
    async def run(services: Services) -> int:
        service = services.reconciliation
        imported: list[Imported] = []
        if args.file is not None:
            if not args.file.is_file():
                raise CommandFailed(f"There is no file at {args.file}.")
            from app.services.statement_files import detect_format

            fmt = args.format or detect_format(args.file) or ""
            if not fmt and args.file.suffix.lower() in (".csv", ".txt"):
                fmt = "bank-csv"  # any other CSV: a bank statement, its columns guessed
            if not fmt:
                raise CommandFailed(
                    f"Switchboard cannot tell what kind of file {args.file.name} is; give --format."
                )
            if fmt in GATEWAY_FORMATS:
                if args.connection is None:
                    raise CommandFailed(
                        "A gateway's settlement report needs --connection: the gateway it is from."
                    )
                source = await service.source_for_connection(args.connection)
            else:
                source = await service.source_for_bank(args.account)
            imported.append(
                await service.import_file(
                    args.file, fmt, source=source, currency=args.currency.upper()
                )
            )
        elif args.connection is not None:
            imported.append(await service.pull(args.connection))
        summary = await service.run("command")
        if args.json:
            _print_json(
                {
                    "run": summary.id,
                    "imported": [
                        {"source": i.source, "name": i.name, "rows": i.rows, "added": i.added}
                        for i in imported
                    ],
                    "records": summary.counts.get("records", 0),
                    "exceptions": summary.exceptions,
                    "statuses": _statuses(summary),
                    "sources": summary.counts.get("sources", {}),
                    "seconds": summary.seconds,
                }
            )
        else:
            for done in imported:
                print(done.sentence)
            _print_summary(summary, str(services.settings.get("school.locale")))
        return EXIT_OK

    return _with_services(config, run)


def _amount(minor: int, currency: str, locale: str | None = None) -> str:
    try:
        money = Money(minor, currency)
    except MoneyError:
        return f"{minor} {currency}".strip()
    return money.format(locale) if locale else money.for_input()


def _statuses(summary: RunSummary) -> dict[str, Any]:
    found = summary.counts.get("statuses", {})
    return {
        status.value: {
            "count": found.get(status.value, {}).get("n", 0),
            "amounts": {
                currency: _amount(minor, currency)
                for currency, minor in found.get(status.value, {}).get("amounts", {}).items()
            },
        }
        for status in Status
    }


def _print_summary(summary: RunSummary, locale: str) -> None:
    records = summary.counts.get("records", 0)
    print(
        f"Run {summary.id}: {records} records ({summary.inputs.get(Side.LEDGER.value, 0)} in the "
        f"ledger), {summary.exceptions} to look at."
    )
    for status, figures in _statuses(summary).items():
        if not figures["count"]:
            continue
        amounts = ", ".join(
            _amount(minor, currency, locale)
            for currency, minor in summary.counts["statuses"][status]["amounts"].items()
        )
        print(f"  {status.replace('_', ' '):<18} {figures['count']:>8}  {amounts}")
