"""`database move --to postgresql://user@server/db`: this computer's SQLite database copied into
an empty shared PostgreSQL database, verified, and made this computer's database.

The password never goes on the command line (where other users of the computer and the shell's
history could read it): it comes from SWITCHBOARD_DB_PASSWORD, or is asked for without echo on
a terminal; none at all leaves it to libpq (PGPASSWORD, ~/.pgpass). Progress goes to stderr,
the verification table to stdout. The SQLite file is only read and stays where it is: it is
the way back.
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import os
import sys
from typing import Any
from urllib.parse import urlsplit

from app.cli import EXIT_OK, CommandFailed, _print_json, _with_services
from app.config import Config
from app.services import Services, database_password
from app.services.database_move import (
    MoveFailed,
    MoveReport,
    move_database,
    shown_url,
    use_shared_database,
)
from app.services.progress import Progress
from app.services.secrets import backend_status

ENV_PASSWORD = "SWITCHBOARD_DB_PASSWORD"  # noqa: S105 - the variable's name, not a password
EXIT_USAGE = 2
PROGRESS_EVERY = 0.5  # seconds between progress lines on stderr


def add_parser(commands: Any, common: argparse.ArgumentParser) -> None:
    database = commands.add_parser(
        "database", parents=[common], help="this computer's database, and moving it to a server"
    )
    actions = database.add_subparsers(dest="database_command", metavar="ACTION", required=True)
    move = actions.add_parser(
        "move",
        parents=[common],
        help="copy this computer's database into an empty shared PostgreSQL database, verify "
        "it, and use it from now on",
    )
    move.add_argument(
        "--to",
        required=True,
        metavar="URL",
        help="the empty database, as postgresql://user@server[:port]/database; the password "
        f"comes from {ENV_PASSWORD} or is asked for",
    )
    move.add_argument("--json", action="store_true", help="print one JSON document")


def database(args: argparse.Namespace, config: Config) -> int:
    target = args.to
    parts = urlsplit(target)
    if parts.password is not None:
        print(
            "switchboard: do not put the password in the address (others can read the command "
            f"line); set {ENV_PASSWORD} or type it when asked.",
            file=sys.stderr,
        )
        return EXIT_USAGE
    if not config.is_sqlite:
        raise CommandFailed(
            f"This computer already works on a shared database ({shown_url(config.db_url)}); "
            "only a SQLite database file can be moved."
        )
    password = _password(parts.username or "", parts.hostname or "")
    if password and not backend_status().available:
        raise CommandFailed(
            f"{backend_status().problem} Or leave {ENV_PASSWORD} empty and give the password "
            "in a ~/.pgpass file instead."
        )
    full = database_password.put_in(target, password) if password else target

    async def run(services: Services) -> int:
        progress = Progress()
        work = asyncio.ensure_future(move_database(config.db_url, full, progress))
        try:
            shown = -1
            while not work.done():
                await asyncio.wait({work}, timeout=PROGRESS_EVERY)
                if progress.total and progress.done != shown:
                    shown = progress.done
                    print(
                        f"copied {progress.done:,} of {progress.total:,} rows",
                        file=sys.stderr,
                        flush=True,
                    )
        except asyncio.CancelledError:  # Ctrl-C: stop the copy, which then keeps nothing
            progress.cancel()
            work.cancel()
            raise
        try:
            report = work.result()
        except MoveFailed as exc:
            if exc.report is not None and not args.json:
                print("\n".join(exc.report.lines()), file=sys.stderr)
            raise
        choice = await use_shared_database(config.paths, target, password)
        _tell(args, config, report, str(choice))
        return EXIT_OK

    return int(_with_services(config, run))


def _password(user: str, host: str) -> str | None:
    from_env = os.environ.get(ENV_PASSWORD)
    if from_env is not None:
        return from_env or None
    if sys.stdin.isatty():
        return getpass.getpass(f"Password of {user or 'the user'} on {host or 'the server'}: ")
    return None


def _tell(args: argparse.Namespace, config: Config, report: MoveReport, choice: str) -> None:
    if args.json:
        _print_json(
            {
                "ok": True,
                **report.as_json(),
                "choice_file": choice,
                "old_database": str(config.sqlite_path),
            }
        )
        return
    print("\n".join(report.lines()))
    print(
        f"Verified: {report.rows:,} rows in {len(report.tables)} tables were copied into "
        f"{report.target}, with the same money totals and an intact audit trail. This computer "
        f"uses the shared database from its next start; the old file {config.sqlite_path} is "
        f"kept as it was (delete {choice} to go back to it)."
    )
