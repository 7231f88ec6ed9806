"""`backup create|restore` and `settings export|import`.

A restore replaces the database, so it runs with no engine open on it: the command first opens
the services to check that the service user may restore and that the file is a sound backup
(the dry run stops there), closes them, and only then restores. A database too damaged to
open is replaced after the backup alone is checked; the damaged file is kept beside it.
"""

from __future__ import annotations

import argparse
import asyncio
import sqlite3
import sys
from pathlib import Path
from typing import Any

import sqlalchemy.exc

from app.cli import EXIT_OK, CommandFailed, _print_json, _with_services
from app.config import SETTINGS_BY_KEY, Config
from app.services import Services
from app.services.backup import BackupInfo, BackupSummary, inspect_backup, restore

EXIT_USAGE = 2


def add_parser(commands: Any, common: argparse.ArgumentParser) -> None:
    backup = commands.add_parser(
        "backup", parents=[common], help="back up the database, or restore it from a backup"
    )
    actions = backup.add_subparsers(dest="backup_command", metavar="ACTION", required=True)
    create = actions.add_parser(
        "create", parents=[common], help="back up the database now (it may be in use)"
    )
    create.add_argument(
        "--out", metavar="FILE", help="where to write it (default: the backups folder)"
    )
    create.add_argument("--json", action="store_true", help="print one JSON document")
    back = actions.add_parser(
        "restore",
        parents=[common],
        help="replace the database with a backup (Switchboard must be closed)",
    )
    back.add_argument("file", help="the backup file")
    back.add_argument(
        "--dry-run", action="store_true", help="only check the file and say what it holds"
    )
    back.add_argument("--yes", action="store_true", help="do not ask before replacing")
    back.add_argument("--json", action="store_true", help="print one JSON document")

    settings = commands.add_parser(
        "settings", parents=[common], help="the settings, exported or imported (never secrets)"
    )
    moves = settings.add_subparsers(dest="settings_command", metavar="ACTION", required=True)
    export = moves.add_parser(
        "export",
        parents=[common],
        help="write the settings and the connections' settings, without secrets, to a file",
    )
    export.add_argument("--out", required=True, metavar="FILE", help="the JSON file to write")
    export.add_argument("--json", action="store_true", help="print one JSON document")
    load = moves.add_parser(
        "import", parents=[common], help="apply an export; nothing changes if a value is wrong"
    )
    load.add_argument("file", help="a file `settings export` wrote")
    load.add_argument("--json", action="store_true", help="print one JSON document")
    listing = moves.add_parser("list", parents=[common], help="every setting and its value")
    listing.add_argument("--json", action="store_true", help="print one JSON document")
    change = moves.add_parser("set", parents=[common], help="change one setting")
    change.add_argument("key", help="its name, as `settings list` shows it")
    change.add_argument("value")
    change.add_argument("--json", action="store_true", help="print one JSON document")


# --- backup -------------------------------------------------------------------------------------


def backup(args: argparse.Namespace, config: Config) -> int:
    if args.backup_command == "create":
        return _create(args, config)
    return _restore(args, config)


def _create(args: argparse.Namespace, config: Config) -> int:
    out = Path(args.out).expanduser() if args.out else None

    async def run(services: Services) -> int:
        info = await services.backups.create(out)
        if args.json:
            _print_json({"ok": True, **_info_json(info)})
        else:
            print(f"The database was backed up to {info.path} ({_size(info.size)}).")
        return EXIT_OK

    return int(_with_services(config, run))


def _restore(args: argparse.Namespace, config: Config) -> int:
    path = Path(args.file).expanduser()

    async def check(services: Services) -> BackupSummary:
        return await services.backups.inspect(path)

    try:
        summary = _checked(config, check)
    except (sqlalchemy.exc.DatabaseError, sqlite3.DatabaseError) as exc:
        if "not a database" not in str(exc) and "malformed" not in str(exc):
            raise
        # The current database is damaged, and with it the users and roles kept in it: what
        # is left is to check the backup alone and put it in its place (the damaged file is
        # kept beside it).
        summary = inspect_backup(path)
    if args.dry_run:
        if args.json:
            _print_json({"ok": True, "dry_run": True, **_summary_json(summary)})
        else:
            print(_summary_text(summary))
            print("Nothing was changed. Run again without --dry-run to restore it.")
        return EXIT_OK
    if not args.yes:
        if args.json or not sys.stdin.isatty():
            print(
                "switchboard: a restore replaces the database; add --yes to confirm it, or "
                "--dry-run to only check the backup.",
                file=sys.stderr,
            )
            return EXIT_USAGE
        print(_summary_text(summary))
        answer = input("Replace the database with this backup? A copy is kept. [y/N] ")
        if answer.strip().lower() not in ("y", "yes"):
            print("Nothing was changed.")
            return EXIT_OK
    report = asyncio.run(restore(config, path))
    if args.json:
        _print_json(
            {
                "ok": True,
                "restored_from": str(path),
                "database": str(report.database),
                "safety_copy": str(report.safety_copy) if report.safety_copy else None,
                "migrated": report.migrated,
                **{key: value for key, value in _summary_json(summary).items() if key != "file"},
            }
        )
    else:
        print(report.sentence)
    return EXIT_OK


def _checked(config: Config, check: Any) -> BackupSummary:
    """The dry run, with the services open (they load the service user's role). A backup
    cannot be inspected against a database on a server, nor restored into one."""
    result: list[BackupSummary] = []

    async def run(services: Services) -> int:
        result.append(await check(services))
        return EXIT_OK

    _with_services(config, run)
    return result[0]


def _info_json(info: BackupInfo) -> dict[str, Any]:
    return {
        "file": str(info.path),
        "size_bytes": info.size,
        "taken_at": info.taken_at.isoformat(),
        "automatic": info.automatic,
    }


def _summary_json(summary: BackupSummary) -> dict[str, Any]:
    return {
        "file": str(summary.path),
        "size_bytes": summary.size,
        "taken_at": summary.taken_at.isoformat() if summary.taken_at else None,
        "schema": summary.revision,
        "up_to_date": summary.current,
        "counts": summary.counts,
        "newest_audit_seq": summary.newest_audit_seq,
    }


def _summary_text(summary: BackupSummary) -> str:
    taken = f"taken {summary.taken_at:%Y-%m-%d %H:%M} UTC" if summary.taken_at else "undated"
    held = summary.contents_text()
    older = (
        ""
        if summary.current
        else " It is from an older version and is brought up to date when restored."
    )
    return f"{summary.path.name} is a sound backup, {taken} ({_size(summary.size)}): {held}.{older}"


def _size(size: int) -> str:
    if size < 1024 * 1024:
        return f"{size / 1024:.0f} KB"
    return f"{size / (1024 * 1024):.1f} MB"


# --- settings -----------------------------------------------------------------------------------


def settings(args: argparse.Namespace, config: Config) -> int:
    if args.settings_command in ("list", "set"):
        return _list_or_set(args, config)
    path = Path(args.out if args.settings_command == "export" else args.file).expanduser()

    async def run(services: Services) -> int:
        if args.settings_command == "export":
            out = await services.backups.export_settings(path)
            if args.json:
                _print_json({"ok": True, "file": str(out)})
            else:
                print(f"The settings were written to {out}; secrets are not in it.")
            return EXIT_OK
        report = await services.backups.import_settings(path)
        if args.json:
            _print_json(
                {
                    "ok": True,
                    "settings_changed": report.settings_changed,
                    "connections_changed": report.connections_changed,
                    "connections_missing": report.connections_missing,
                }
            )
            return EXIT_OK
        values, connections = len(report.settings_changed), len(report.connections_changed)
        if values or connections:
            print(
                f"Imported {values} changed setting{'' if values == 1 else 's'} and "
                f"{connections} changed connection{'' if connections == 1 else 's'}."
            )
        else:
            print("Everything was already as in the file: nothing changed.")
        if report.connections_missing:
            print(
                "Not here, so not imported: "
                + ", ".join(report.connections_missing)
                + ". Add them (with their secrets) and import again."
            )
        return EXIT_OK

    return int(_with_services(config, run))


def _list_or_set(args: argparse.Namespace, config: Config) -> int:
    async def run(services: Services) -> int:
        settings = services.settings
        if args.settings_command == "set":
            if args.key not in SETTINGS_BY_KEY:
                raise CommandFailed(
                    f"There is no setting {args.key}; `switchboard settings list` shows them."
                )
            value = await settings.set(args.key, args.value)
            if args.json:
                _print_json({"ok": True, "key": args.key, "value": value})
            else:
                print(f"{SETTINGS_BY_KEY[args.key].label}: {value}")
            return EXIT_OK
        values = settings.values()
        if args.json:
            _print_json({"settings": values})
            return EXIT_OK
        for key, value in values.items():
            print(f"{key} = {value}\t{SETTINGS_BY_KEY[key].label}")
        return EXIT_OK

    return int(_with_services(config, run))
