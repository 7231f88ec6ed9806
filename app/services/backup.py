"""Backups of the SQLite database: taken online while Switchboard runs, checked, kept with
retention, inspected without changing anything (the dry run), and restored; and the settings
exported to and imported from a JSON file that never holds a secret.

A backup is a consistent copy made with SQLite's online backup API from a connection of its
own, a few megabytes at a time, so the engine's writers go on meanwhile (in WAL mode a reader
never blocks a writer). The copy is switched to a rollback journal, so it is one
self-contained file, carries a small `switchboard_backup` table saying when it was taken, and
passes `PRAGMA integrity_check` before it gets its name. Automatic backups are named
`switchboard-auto-<UTC time>.db` and the newest `backup.keep` of them are kept; backups made
on request (`switchboard-manual-...`, or a file named with `--out`) are never deleted.

A restore replaces the database's contents, so nothing may be using it: the command line does
it with no engine running, and the desktop app stops its engine first (`Shell.restore_from`).
Another program still using the database (a second app, `switchboard serve`) is detected by
SQLite's own locks, and the restore is refused. Before anything changes the current database
is copied beside itself (`switchboard-before-restore-<UTC time>.db`), so a restore can be
undone by restoring that file. The restored copy is then migrated if it is older than this
version, and its audit trail gets a "backup.restored" entry.

Secrets are not in a backup and not in an export: they live in the operating system's
credential store, under the database's install id, which a backup carries along.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import re
import shutil
import sqlite3
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from alembic.config import Config as AlembicConfig
from alembic.script import ScriptDirectory
from sqlalchemy.orm import Session

from app import __version__
from app.config import SETTINGS_BY_KEY, Config, ConfigError, sqlite_url
from app.domain.access import Permission
from app.domain.errors import SwitchboardError
from app.providers import KINDS
from app.services import access, audit
from app.services.connections import ConnectionRecord, ConnectionService
from app.services.events import EventHub
from app.services.jobs import JobHistory
from app.services.settings import SettingsService, put_setting
from app.store.database import MIGRATIONS_DIR, Database

log = logging.getLogger("switchboard.backup")

TOPIC = "backups"
JOB_ID = "database-backup"
JOB_NAME = "Back up the database (when due)"
# The job only looks whether a backup is due, so a changed setting, a restart or a laptop
# that slept is caught up with soon, and no backup is taken merely because the app started.
CHECK_EVERY = timedelta(minutes=15)
FOLDER_NAME = "backups"
# 1024 pages of 4 KiB: a step holds SQLite's read lock for a few milliseconds only.
STEP_PAGES = 1024
STEP_PAUSE = 0.05  # seconds to wait when a step finds the database locked
# A write by another connection restarts a stepped backup from the first page. Under a steady
# stream of writes (webhooks) it might never finish, so after a few restarts the copy is
# taken in one step instead: one read transaction, which in WAL mode blocks no writer.
MAX_RESTARTS = 3
IN_USE_WAIT = 2.0  # seconds a restore waits for the database to be free
MARKER_TABLE = "switchboard_backup"
AUTO, MANUAL = "auto", "manual"
NAME = re.compile(r"^switchboard-(auto|manual)-(\d{8}T\d{6}Z)(?:-(\d+))?\.db$")
SAFETY_NAME = "switchboard-before-restore"
STAMP = "%Y%m%dT%H%M%SZ"
SQLITE_HEADER = b"SQLite format 3\x00"
# What a summary counts, in this order, when the backup has the table.
MAIN_TABLES: dict[str, str] = {
    "students": "students",
    "guardians": "guardians",
    "teachers": "teachers",
    "lessons": "lessons",
    "invoices": "invoices",
    "payments": "payments",
    "refunds": "refunds",
    "connections": "provider_connections",
    "webhook events": "webhook_inbox",
    "messages": "messages",
    "users": "users",
    "audit entries": "audit_trail",
}
EXPORT_FORMAT = "switchboard-settings"
EXPORT_VERSION = 1
POSTGRES = (
    "Switchboard's backups are for SQLite databases; this one is on a database server, so back "
    "it up with the server's own tools (pg_dump, and pg_restore to restore)."
)
IN_USE = (
    "Another Switchboard (the app, `switchboard serve` or a command) is using the database "
    "{path}, so it was not restored; close it and try again."
)


class BackupError(SwitchboardError):
    """A backup that cannot be taken, read or restored; the message says why and what to do."""


@dataclass(frozen=True)
class BackupInfo:
    """A backup file: where, when it was taken (UTC), its size, and whether Switchboard took it
    by itself (and may delete it for retention)."""

    path: Path
    taken_at: datetime
    size: int
    automatic: bool

    @property
    def name(self) -> str:
        return self.path.name


@dataclass(frozen=True)
class BackupSummary:
    """What the dry run found in a backup: it is sound, Switchboard's, and holds this."""

    path: Path
    size: int
    taken_at: datetime | None
    revision: str
    current: bool  # at this version's schema; False: it is migrated when restored
    counts: dict[str, int] = field(default_factory=dict)
    newest_audit_seq: int | None = None

    def contents_text(self) -> str:
        """What it holds in words: "3 students, 1 connection, 120 webhook events"."""
        held = [_counted(count, label) for label, count in self.counts.items() if count]
        return ", ".join(held) if held else "no records yet"


@dataclass(frozen=True)
class RestoreReport:
    backup: BackupSummary
    database: Path
    safety_copy: Path | None  # the database as it was: restore this file to undo
    migrated: bool

    @property
    def sentence(self) -> str:
        taken = (
            f" (taken {self.backup.taken_at:%Y-%m-%d %H:%M} UTC)" if self.backup.taken_at else ""
        )
        undo = (
            f" The database as it was is kept in {self.safety_copy}; restore that file to undo."
            if self.safety_copy
            else ""
        )
        return f"The database was restored from {self.backup.path.name}{taken}.{undo}"


@dataclass(frozen=True)
class ImportReport:
    settings_changed: list[str]
    connections_changed: list[str]
    connections_missing: list[str]  # in the file, not here: add them (and their secrets) first


# --- the service --------------------------------------------------------------------------------


class BackupService:
    """Backs up the open database, lists and inspects backups, and moves settings in and out.
    Publishes `backups` ({"path": ...}) when a backup was made. Restoring is `restore()`, done
    while no engine has the database open."""

    def __init__(
        self,
        config: Config,
        db: Database,
        events: EventHub,
        settings: SettingsService,
        connections: ConnectionService,
        jobs: JobHistory,
    ) -> None:
        self._config = config
        self._db = db
        self._events = events
        self._settings = settings
        self._connections = connections
        self._jobs = jobs

    @property
    def folder(self) -> Path:
        chosen = str(self._settings.get("backup.folder") or "")
        if chosen:
            return Path(chosen).expanduser()
        return self._config.paths.data_dir / FOLDER_NAME

    def _database(self) -> Path:
        return database_path(self._config)

    async def backups(self) -> list[BackupInfo]:
        """The backups in the backups folder, newest first."""
        return await asyncio.to_thread(list_backups, self.folder)

    async def create(self, out: Path | None = None, *, automatic: bool = False) -> BackupInfo:
        """Take a backup now: into `out`, or the backups folder under a timestamped name.
        Automatic backups beyond the newest `backup.keep` are deleted afterwards."""
        access.require(Permission.MANAGE_BACKUPS)
        who = access.actor()
        source = self._database()
        info = await asyncio.to_thread(
            take_backup, source, out, self.folder, automatic, datetime.now(UTC)
        )
        removed: list[Path] = []
        if automatic:
            keep = int(self._settings.get("backup.keep"))
            removed = await asyncio.to_thread(apply_retention, self.folder, keep)

        def write(session: Session) -> None:
            audit.record(
                session,
                who,
                "backup.created",
                "backup",
                info.name[:64],
                None,
                {
                    "file": str(info.path),
                    "size_bytes": info.size,
                    "automatic": automatic,
                    "taken_at": info.taken_at.isoformat(),
                    "old_backups_deleted": [path.name for path in removed],
                },
            )

        await self._db.write(write)
        log.info("backup taken", extra={"file": str(info.path), "size": info.size})
        self._events.publish(TOPIC, {"path": str(info.path)})
        return info

    async def backup_if_due(self, now: datetime | None = None) -> BackupInfo | None:
        """The scheduled job: take an automatic backup, as the service user, if the newest one
        is `backup.every_hours` old (0: never by itself)."""
        hours = int(self._settings.get("backup.every_hours"))
        if hours <= 0 or not self._config.is_sqlite:
            return None
        moment = now or datetime.now(UTC)
        existing = [info for info in await self.backups() if info.automatic]
        if existing and existing[0].taken_at > moment - timedelta(hours=hours):
            return None
        made: list[BackupInfo] = []

        async def job() -> dict[str, Any]:
            with access.acting_as(access.service_user()):
                info = await self.create(automatic=True)
            made.append(info)
            return {"file": info.name, "size_bytes": info.size}

        await self._jobs.run(JOB_ID, job)  # a failure is recorded and logged there
        return made[0] if made else None

    async def inspect(self, path: Path) -> BackupSummary:
        """The dry run of a restore: check the file and say what it holds; nothing changes."""
        access.require(Permission.MANAGE_BACKUPS)
        if not self._config.is_sqlite:
            raise BackupError(POSTGRES)
        return await asyncio.to_thread(inspect_backup, path)

    # --- settings export and import -------------------------------------------------------------

    async def export_settings(self, out: Path) -> Path:
        """Write the settings and the connections' non-secret configuration to `out` (JSON)."""
        access.require(Permission.MANAGE_BACKUPS)
        connections = await self._connections.connections()
        document = {
            "format": EXPORT_FORMAT,
            "version": EXPORT_VERSION,
            "exported_at": datetime.now(UTC).isoformat(timespec="seconds"),
            "switchboard": __version__,
            "settings": self._settings.values(),
            "connections": [_exported(record) for record in connections],
        }
        text = json.dumps(document, indent=2, ensure_ascii=False) + "\n"
        await asyncio.to_thread(_write_text, out, text)
        return out

    async def import_settings(self, path: Path) -> ImportReport:
        """Read a settings export and apply it: every value is checked first, and if any is
        wrong nothing changes. Connections are matched by name; their secrets stay as they
        are, and those in the file but not here are only reported."""
        access.require(Permission.MANAGE_SETTINGS)
        document = await asyncio.to_thread(_read_export, path)
        wanted, problems = _checked_settings(document.get("settings", {}))
        current = {
            record.name.casefold(): record for record in await self._connections.connections()
        }
        changes, missing = _checked_connections(document.get("connections", []), current, problems)
        if problems:
            first = problems[0].rstrip(".")
            more = f" (and {len(problems) - 1} more problems)" if len(problems) > 1 else ""
            raise BackupError(
                f"Nothing was imported from {path.name}: {first}{more}; correct the file and "
                "import it again."
            )
        if changes:
            access.require(Permission.MANAGE_CONNECTIONS)
        who = access.actor()
        before = self._settings.values()
        changed = sorted(key for key, value in wanted.items() if before.get(key) != value)

        def write(session: Session) -> None:
            for key in changed:
                put_setting(session, key, wanted[key])
            audit.record(
                session,
                who,
                "settings.imported",
                "settings",
                path.name[:64],
                {key: before.get(key) for key in changed},
                {key: wanted[key] for key in changed},
            )

        if changed:
            await self._db.write(write)
            await self._settings.reload(announce=changed)
        for record, config, interval in changes:
            await self._connections.update(record.id, record.name, config, {}, interval)
        return ImportReport(changed, [record.name for record, _, _ in changes], missing)


def _counted(count: int, label: str) -> str:
    if count != 1:
        return f"{count} {label}"
    singular = label[: -len("ies")] + "y" if label.endswith("ies") else label.removesuffix("s")
    return f"1 {singular}"


def _exported(record: ConnectionRecord) -> dict[str, Any]:
    """A connection as an export holds it: only the fields its kind declares not secret."""
    plain = {spec_field.name for spec_field in record.spec.fields if not spec_field.secret}
    return {
        "name": record.name,
        "kind": record.kind,
        "config": {name: value for name, value in record.config.items() if name in plain},
        "health_interval": record.health_interval,
    }


def _write_text(out: Path, text: str) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    partial = out.with_name(out.name + ".partial")
    partial.write_text(text, encoding="utf-8")
    os.replace(partial, out)


def _read_export(path: Path) -> dict[str, Any]:
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise BackupError(f"There is no file {path}; check the name and try again.") from None
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise BackupError(
            f"{path.name} is not a settings export (it is not JSON); choose a file that "
            "Switchboard's Export settings wrote."
        ) from None
    if not isinstance(document, dict) or document.get("format") != EXPORT_FORMAT:
        raise BackupError(
            f"{path.name} is not a Switchboard settings export; choose a file that "
            "Switchboard's Export settings wrote."
        )
    if not isinstance(document.get("version"), int) or document["version"] > EXPORT_VERSION:
        raise BackupError(
            f"{path.name} was exported by a newer version of Switchboard; install that "
            "version (or newer) to import it."
        )
    return document


def _checked_settings(raw: Any) -> tuple[dict[str, Any], list[str]]:
    if not isinstance(raw, dict):
        return {}, ["its settings are not a list of names and values."]
    wanted: dict[str, Any] = {}
    problems: list[str] = []
    for key, value in raw.items():
        spec = SETTINGS_BY_KEY.get(key)
        if spec is None:
            problems.append(f"there is no setting called {key!r}.")
            continue
        try:
            wanted[key] = spec.coerce(value)
        except ConfigError as exc:
            problems.append(str(exc))
    return wanted, problems


def _checked_connections(
    raw: Any, current: Mapping[str, ConnectionRecord], problems: list[str]
) -> tuple[list[tuple[ConnectionRecord, dict[str, Any], int | None]], list[str]]:
    """The connections whose configuration changes, with it checked; the names not here."""
    if not isinstance(raw, list):
        problems.append("its connections are not a list.")
        return [], []
    changes: list[tuple[ConnectionRecord, dict[str, Any], int | None]] = []
    missing: list[str] = []
    for item in raw:
        if not isinstance(item, dict) or not isinstance(item.get("name"), str):
            problems.append("a connection in it has no name.")
            continue
        name, kind_key = item["name"], item.get("kind")
        values, interval = item.get("config", {}), item.get("health_interval")
        record = current.get(name.casefold())
        if record is None:
            missing.append(name)
            continue
        if kind_key != record.kind:
            problems.append(f"{name} is a {kind_key} connection there but a {record.kind} here.")
            continue
        if not isinstance(values, dict) or not (interval is None or isinstance(interval, int)):
            problems.append(f"the settings of {name} are not names and values.")
            continue
        spec = KINDS[record.kind]
        secret = sorted(f.name for f in spec.fields if f.secret and f.name in values)
        if secret:
            problems.append(
                f"{name} has secrets in it ({', '.join(secret)}), which are never imported."
            )
            continue
        config, _kept, errors = spec.check(values, {}, stored=record.secret_fields)
        if errors:
            problems.extend(f"{name}: {error.message}" for error in errors)
            continue
        if config != dict(record.config) or interval != record.health_interval:
            changes.append((record, config, interval))
    return changes, missing


# --- restore ------------------------------------------------------------------------------------


async def restore(config: Config, path: Path) -> RestoreReport:
    """Replace the database's contents with the backup at `path`, keeping a safety copy of the
    database as it was. Nothing in this process may have the database open (stop the engine
    first); another program that has is detected and the restore refused."""
    access.require(Permission.MANAGE_BACKUPS)
    if not config.is_sqlite:
        raise BackupError(POSTGRES)
    who = access.actor()
    return await asyncio.to_thread(restore_database, database_path(config), path, who)


def restore_database(database: Path, backup: Path, who: str) -> RestoreReport:
    summary = inspect_backup(backup)
    if _same_file(database, backup):
        raise BackupError(
            f"{backup.name} is the database itself, not a backup of it; choose a backup file."
        )
    database.parent.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(UTC).strftime(STAMP)
    safety = _free_name(database.parent, SAFETY_NAME, stamp)
    try:
        kept = _restore_over(database, backup, safety)
    except sqlite3.DatabaseError as exc:
        if not _unreadable(exc):
            raise BackupError(
                f"The database {database} could not be restored ({exc}); it is as it was. "
                "Try again, and if it keeps failing send the log file to your IT helper."
            ) from exc
        # SQLite cannot read the current file at all, so no Switchboard can be working in it:
        # keep it as it is and put the backup in its place.
        kept = _replace_unreadable(database, backup, safety)
    log.info("database restored", extra={"backup": str(backup), "safety_copy": str(kept)})
    migrated = _finish_restore(database, summary, kept, who)
    return RestoreReport(summary, database, kept, migrated)


def _restore_over(database: Path, backup: Path, safety: Path) -> Path | None:
    """Copy the backup over the database through SQLite, holding its exclusive lock from the
    check that nobody else uses it to the end of the copy. The copy is one write transaction:
    if it fails part way the database is unchanged."""
    live = sqlite3.connect(database, timeout=IN_USE_WAIT, isolation_level=None)
    try:
        # In WAL mode every open connection holds a lock on the shared-memory index; an
        # exclusive-mode connection cannot start while one does, so this fails while any
        # other program (or another connection of ours) has the database open.
        live.execute("PRAGMA locking_mode=EXCLUSIVE")
        try:
            live.execute("BEGIN EXCLUSIVE")
            live.execute("COMMIT")
        except sqlite3.OperationalError as exc:
            if "locked" in str(exc).lower() or "busy" in str(exc).lower():
                raise BackupError(IN_USE.format(path=database)) from exc
            raise
        kept: Path | None = None
        if _page_count(live) > 0:
            _copy_to_file(live, safety)
            kept = safety
        source = _open_read_only(backup)
        try:
            source.backup(live, pages=STEP_PAGES, sleep=STEP_PAUSE)
        finally:
            source.close()
        live.execute(f"DROP TABLE IF EXISTS {MARKER_TABLE}")
        return kept
    finally:
        live.close()


def _replace_unreadable(database: Path, backup: Path, safety: Path) -> Path:
    shutil.copy2(database, safety)
    partial = database.with_name(database.name + ".restoring")
    shutil.copyfile(backup, partial)
    for suffix in ("-wal", "-shm", "-journal"):
        side = database.with_name(database.name + suffix)
        if side.exists():
            side.unlink()
    os.replace(partial, database)
    with sqlite3.connect(database, isolation_level=None) as connection:
        connection.execute(f"DROP TABLE IF EXISTS {MARKER_TABLE}")
    connection.close()
    return safety


def _finish_restore(database: Path, summary: BackupSummary, kept: Path | None, who: str) -> bool:
    """Bring the restored copy to this version's schema and write the restore into its audit
    trail."""
    db = Database(sqlite_url(database))
    try:
        migrated = not summary.current
        try:
            db.migrate()
        except SwitchboardError as exc:
            undo = f" Restore {kept} to go back." if kept else ""
            raise BackupError(
                f"The backup was restored but could not be brought up to date: {exc}{undo}"
            ) from exc
        with db.writing() as session:
            audit.record(
                session,
                who,
                "backup.restored",
                "backup",
                summary.path.name[:64],
                None,
                {
                    "file": str(summary.path),
                    "taken_at": summary.taken_at.isoformat() if summary.taken_at else None,
                    "schema_before": summary.revision,
                    "migrated": migrated,
                    "safety_copy": str(kept) if kept else None,
                },
            )
        return migrated
    finally:
        db.close()


# --- taking, listing, inspecting ------------------------------------------------------------------


def database_path(config: Config) -> Path:
    if not config.is_sqlite:
        raise BackupError(POSTGRES)
    path = config.sqlite_path
    if path is None:
        raise BackupError("An in-memory database cannot be backed up or restored.")
    return path


def take_backup(
    source: Path, out: Path | None, folder: Path, automatic: bool, now: datetime
) -> BackupInfo:
    """Copy the database at `source` online to `out` (or a new name in `folder`), checked."""
    now = now.astimezone(UTC).replace(microsecond=0)  # as the name records it
    if out is None:
        target = _free_name(
            folder, f"switchboard-{AUTO if automatic else MANUAL}", now.strftime(STAMP)
        )
    else:
        target = out
    if target.exists() and _same_file(target, source):
        raise BackupError(f"{target} is the database itself; name another file for the backup.")
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise BackupError(
            f"The backups folder {target.parent} cannot be made ({exc.strerror or exc}); choose "
            "another folder in Settings → Backups."
        ) from exc
    partial = target.with_name(target.name + ".partial")
    partial.unlink(missing_ok=True)
    try:
        live = _open_live(source)
        try:
            _copy_to_file(live, partial, taken_at=now, automatic=automatic)
        finally:
            live.close()
        os.replace(partial, target)
    except sqlite3.Error as exc:
        partial.unlink(missing_ok=True)
        raise BackupError(
            f"The database could not be backed up ({exc}); check that there is room in "
            f"{target.parent} and try again."
        ) from exc
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    return BackupInfo(target, now, target.stat().st_size, automatic and out is None)


def _copy_to_file(
    live: sqlite3.Connection,
    target: Path,
    *,
    taken_at: datetime | None = None,
    automatic: bool = False,
) -> None:
    """A checked, self-contained copy of the database `live` is connected to."""
    copy = sqlite3.connect(target, isolation_level=None)
    try:
        _online_copy(live, copy)
        copy.execute("PRAGMA journal_mode=DELETE")
        copy.execute(f"DROP TABLE IF EXISTS {MARKER_TABLE}")
        copy.execute(
            f"CREATE TABLE {MARKER_TABLE} (taken_at TEXT, automatic INTEGER, switchboard TEXT)"
        )
        copy.execute(
            f"INSERT INTO {MARKER_TABLE} VALUES (?, ?, ?)",  # noqa: S608 - our own table's name
            ((taken_at or datetime.now(UTC)).isoformat(), int(automatic), __version__),
        )
        problems = _integrity_problems(copy)
        if problems:
            raise BackupError(
                f"The copy failed its integrity check ({problems[0]}); the database itself "
                "may be damaged: run `switchboard doctor` and restore an earlier backup."
            )
    finally:
        copy.close()


def _online_copy(source: sqlite3.Connection, target: sqlite3.Connection) -> None:
    restarts = 0
    last: int | None = None

    def progress(status: int, remaining: int, _total: int) -> None:
        nonlocal restarts, last
        if status != sqlite3.SQLITE_OK:
            return  # busy or locked: the step is tried again after a pause
        if last is not None and remaining >= last:
            restarts += 1
            if restarts > MAX_RESTARTS:
                raise _KeepsChanging
        last = remaining

    try:
        source.backup(target, pages=STEP_PAGES, progress=progress, sleep=STEP_PAUSE)
    except _KeepsChanging:
        log.info("database busy: backing up in one step")
        source.backup(target, pages=-1, sleep=STEP_PAUSE)


class _KeepsChanging(Exception):
    """The stepped copy was restarted too often by other writers."""


def list_backups(folder: Path) -> list[BackupInfo]:
    """Backups in `folder` by their names, newest first (other files are left alone)."""
    try:
        entries = list(folder.iterdir())
    except FileNotFoundError:
        return []
    found: list[tuple[datetime, int, BackupInfo]] = []
    for path in entries:
        match = NAME.match(path.name)
        if match is None or not path.is_file():
            continue
        taken = datetime.strptime(match.group(2), STAMP).replace(tzinfo=UTC)
        info = BackupInfo(path, taken, path.stat().st_size, match.group(1) == AUTO)
        found.append((taken, int(match.group(3) or 1), info))  # -2, -3: later in that second
    return [info for *_, info in sorted(found, key=lambda item: item[:2], reverse=True)]


def apply_retention(folder: Path, keep: int) -> list[Path]:
    """Delete automatic backups beyond the newest `keep`; the paths deleted."""
    automatic = [info for info in list_backups(folder) if info.automatic]
    removed: list[Path] = []
    for info in automatic[max(keep, 1) :]:
        try:
            info.path.unlink()
        except FileNotFoundError:
            continue
        removed.append(info.path)
    if removed:
        log.info("old backups deleted", extra={"count": len(removed)})
    return removed


def inspect_backup(path: Path) -> BackupSummary:
    """Check a backup without changing it: SQLite's integrity check, that it is a Switchboard
    database this version can open, and what it holds."""
    try:
        with path.open("rb") as file:
            header = file.read(100)
        size = path.stat().st_size
    except FileNotFoundError:
        raise BackupError(f"There is no file {path}; check the name and try again.") from None
    except IsADirectoryError:
        raise BackupError(f"{path} is a folder; choose a backup file in it.") from None
    if not header.startswith(SQLITE_HEADER):
        raise BackupError(
            f"{path.name} is not a Switchboard backup (not a SQLite database); choose a file "
            "that `switchboard backup create` or Back up now made."
        )
    try:
        connection = _open_read_only(path)
    except sqlite3.Error as exc:
        raise BackupError(f"{path.name} cannot be opened ({exc}); choose another backup.") from exc
    try:
        problems = _integrity_problems(connection)
        if problems:
            raise BackupError(
                f"{path.name} failed its integrity check ({problems[0]}), so it cannot be "
                "restored; choose another backup."
            )
        tables = _tables(connection)
        if "alembic_version" not in tables:
            raise BackupError(
                f"{path.name} is a SQLite database but not Switchboard's; choose a file that "
                "`switchboard backup create` or Back up now made."
            )
        row = connection.execute("SELECT version_num FROM alembic_version").fetchone()
        revision = str(row[0]) if row else ""
        known, head = _revisions()
        if revision not in known:
            raise BackupError(
                f"{path.name} was made by a newer version of Switchboard; install that version "
                "(or newer) to restore it."
            )
        counts = {
            label: _count(connection, table)
            for label, table in MAIN_TABLES.items()
            if table in tables
        }
        newest_seq = None
        if "audit_trail" in tables:
            newest_seq = connection.execute("SELECT max(seq) FROM audit_trail").fetchone()[0]
        return BackupSummary(
            path=path,
            size=size,
            taken_at=_taken_at(connection, tables, path),
            revision=revision,
            current=revision == head,
            counts=counts,
            newest_audit_seq=int(newest_seq) if newest_seq is not None else None,
        )
    except sqlite3.DatabaseError as exc:
        raise BackupError(
            f"{path.name} failed its integrity check ({exc}), so it cannot be restored; choose "
            "another backup."
        ) from exc
    finally:
        connection.close()


def _taken_at(connection: sqlite3.Connection, tables: set[str], path: Path) -> datetime | None:
    if MARKER_TABLE in tables:
        row = connection.execute(f"SELECT taken_at FROM {MARKER_TABLE}").fetchone()  # noqa: S608
        if row and row[0]:
            try:
                return datetime.fromisoformat(str(row[0])).astimezone(UTC)
            except ValueError:
                pass
    match = NAME.match(path.name)
    if match:
        return datetime.strptime(match.group(2), STAMP).replace(tzinfo=UTC)
    return None


def _revisions() -> tuple[set[str], str | None]:
    cfg = AlembicConfig()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    scripts = ScriptDirectory.from_config(cfg)
    return {rev.revision for rev in scripts.walk_revisions()}, scripts.get_current_head()


def _count(connection: sqlite3.Connection, table: str) -> int:
    # `table` is one of MAIN_TABLES, never input.
    return int(connection.execute(f'SELECT count(*) FROM "{table}"').fetchone()[0])  # noqa: S608


def _tables(connection: sqlite3.Connection) -> set[str]:
    rows = connection.execute("SELECT name FROM sqlite_master WHERE type = 'table'")
    return {str(row[0]) for row in rows}


def _integrity_problems(connection: sqlite3.Connection) -> list[str]:
    rows = [str(row[0]) for row in connection.execute("PRAGMA integrity_check")]
    return [] if rows == ["ok"] else rows


def _page_count(connection: sqlite3.Connection) -> int:
    return int(connection.execute("PRAGMA page_count").fetchone()[0])


def _open_live(path: Path) -> sqlite3.Connection:
    """The running database, opened for reading by a connection of the backup's own; a
    database that is not there is not made."""
    if not path.exists():
        raise BackupError(f"There is no database at {path} to back up yet.")
    return sqlite3.connect(f"{path.resolve().as_uri()}?mode=rw", uri=True, timeout=30)


def _open_read_only(path: Path) -> sqlite3.Connection:
    """A backup opened so that nothing can change it. A file in WAL mode without its -wal
    beside it is read as immutable, so opening it leaves no -wal and -shm files behind."""
    with path.open("rb") as file:
        header = file.read(20)
    wal_mode = len(header) >= 20 and header[18] == 2
    wal = path.with_name(path.name + "-wal")
    options = "mode=ro&immutable=1" if wal_mode and not wal.exists() else "mode=ro"
    return sqlite3.connect(f"{path.resolve().as_uri()}?{options}", uri=True)


def _unreadable(error: sqlite3.DatabaseError) -> bool:
    text = str(error).lower()
    return "not a database" in text or "malformed" in text


def _same_file(one: Path, other: Path) -> bool:
    try:
        return one.exists() and other.exists() and one.samefile(other)
    except OSError:
        return False


def _free_name(folder: Path, prefix: str, stamp: str) -> Path:
    """`<prefix>-<stamp>.db` in `folder`, or -2, -3... after the highest taken in that second
    (never a lower number freed by retention, so the numbers keep their order)."""
    pattern = re.compile(rf"^{re.escape(prefix)}-{stamp}(?:-(\d+))?\.db$")
    taken = [
        int(match.group(1) or 1)
        for path in (folder.iterdir() if folder.is_dir() else ())
        if (match := pattern.match(path.name))
    ]
    if not taken:
        return folder / f"{prefix}-{stamp}.db"
    return folder / f"{prefix}-{stamp}-{max(taken) + 1}.db"
