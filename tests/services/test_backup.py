"""Backups of the SQLite database and the settings export, through the services: a backup is a
checked copy that says what it holds, a restore brings it back (keeping the database as it was
beside it), a damaged, foreign or newer file is refused with nothing changed, the dry run
changes nothing, automatic backups are kept to the newest few, only a role that may back up
does, and no secret is ever in a backup or an export.

The round trip under load keeps webhooks arriving over real HTTP while the backup is taken:
every event acknowledged before it started is in the restored database, once."""

from __future__ import annotations

import asyncio
import hashlib
import json
import sqlite3
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session
from standardwebhooks.webhooks import Webhook

from app.config import Config, Paths
from app.domain.access import NotAllowed, Principal, Role
from app.engine import Engine
from app.providers.webhooks import new_standard_webhooks_secret
from app.services import Services, access, backup
from app.services.backup import (
    JOB_ID,
    MARKER_TABLE,
    BackupError,
    inspect_backup,
    list_backups,
    restore,
)
from app.services.receiver import Receiver
from app.services.webhook_intake import SourceLimiter
from app.store.integration import WebhookInboxEntry
from tests.support.polling import until

FAST = {"latency_ms": 1, "latency_p95_ms": 2, "error_rate": 0}


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def database(config: Config) -> Path:
    assert config.sqlite_path is not None
    return config.sqlite_path


async def add_gateway(services: Services, name: str) -> int:
    record = await services.connections.add(
        "sandbox-payments", name, FAST, {"api_key": "sk_test_1", "webhook_secret": "whsec_1"}
    )
    return record.id


async def names(services: Services) -> list[str]:
    return [record.name for record in await services.connections.connections()]


def corrupt(path: Path) -> None:
    """Scribble over the middle of the file, as a failing disk would."""
    data = bytearray(path.read_bytes())
    middle = len(data) // 2
    data[middle : middle + 8192] = b"\xa5" * 8192
    path.write_bytes(bytes(data))


class Lifecycle:
    """Services a test closes and opens again: a restore needs the database closed."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self.current: Services | None = None

    async def open(self) -> Services:
        self.current = await Services.open(self.config)
        return self.current

    @property
    def services(self) -> Services:
        assert self.current is not None
        return self.current

    async def close(self) -> None:
        services, self.current = self.current, None
        if services is not None:
            await services.close()


@pytest.fixture
async def life(config: Config) -> AsyncIterator[Lifecycle]:
    lifecycle = Lifecycle(config)
    await lifecycle.open()
    yield lifecycle
    await lifecycle.close()


# --- taking and inspecting ---------------------------------------------------------------------


async def test_a_backup_is_checked_and_says_what_it_holds(services: Services) -> None:
    await add_gateway(services, "Card payments")
    info = await services.backups.create()
    assert info.path.parent == services.config.paths.data_dir / "backups"
    assert info.path.name.startswith("switchboard-manual-")
    assert info.automatic is False
    assert info.size == info.path.stat().st_size > 0

    summary = await services.backups.inspect(info.path)
    assert summary.current is True
    assert summary.counts["connections"] == 1
    assert summary.counts["webhook events"] == 0
    assert summary.newest_audit_seq == 1  # "connection.added"; the backup's own entry is after
    assert summary.taken_at is not None
    assert abs(summary.taken_at - info.taken_at) < timedelta(seconds=1)
    [entry] = await services.audit.entries(action="backup.created")
    assert entry.after["file"] == str(info.path)
    assert [listed.path for listed in await services.backups.backups()] == [info.path]
    # One self-contained file: no -wal or -shm beside it.
    assert sorted(path.name for path in info.path.parent.iterdir()) == [info.path.name]


class WrittenBetweenSteps(sqlite3.Connection):
    """A database that another connection writes to after every step of a stepped backup, as
    a busy receiver would; it notes the step size of each backup asked of it."""

    writer: sqlite3.Connection
    asked: list[int]

    def backup(self, target: sqlite3.Connection, *, pages: int = -1, **options: Any) -> None:
        self.asked.append(pages)
        progress = options.pop("progress", None)

        def after_step(status: int, remaining: int, total: int) -> None:
            if pages > 0:
                self.writer.execute("INSERT INTO pupils VALUES (randomblob(600))")
            if progress is not None:
                progress(status, remaining, total)

        super().backup(target, pages=pages, progress=after_step, **options)


def test_a_backup_that_writers_keep_restarting_is_taken_whole_in_one_step(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(backup, "STEP_PAGES", 4)
    path = tmp_path / "busy.db"
    source = sqlite3.connect(path, isolation_level=None, factory=WrittenBetweenSteps)
    source.execute("PRAGMA journal_mode=WAL")
    source.execute("CREATE TABLE pupils (photo BLOB)")
    source.executemany("INSERT INTO pupils VALUES (randomblob(600))", [()] * 300)
    source.writer = sqlite3.connect(path, isolation_level=None)
    source.asked = []
    copy = sqlite3.connect(tmp_path / "copy.db")

    backup._online_copy(source, copy)

    assert source.asked == [4, -1]  # restarted by every write, then taken in one step
    written = source.execute("SELECT count(*) FROM pupils").fetchone()[0]
    assert written > 300
    assert copy.execute("SELECT count(*) FROM pupils").fetchone()[0] == written
    assert copy.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    for connection in (copy, source.writer, source):
        connection.close()


async def test_a_backup_can_be_written_to_a_chosen_file(services: Services, tmp_path: Path) -> None:
    out = tmp_path / "elsewhere" / "before-term.db"
    info = await services.backups.create(out)
    assert info.path == out
    assert inspect_backup(out).counts["connections"] == 0
    assert await services.backups.backups() == []  # only the backups folder is listed


async def test_the_dry_run_changes_nothing(services: Services) -> None:
    await add_gateway(services, "Card payments")
    info = await services.backups.create()
    live = database(services.config)
    before = (digest(info.path), sorted(p.name for p in info.path.parent.iterdir()))
    live_before = digest(live)
    summary = await services.backups.inspect(info.path)
    assert summary.counts["connections"] == 1
    assert (digest(info.path), sorted(p.name for p in info.path.parent.iterdir())) == before
    assert digest(live) == live_before
    assert await names(services) == ["Card payments"]


# --- restoring ---------------------------------------------------------------------------------


async def test_a_restore_brings_the_backup_back_and_can_be_undone(
    config: Config, life: Lifecycle
) -> None:
    services = life.services
    await add_gateway(services, "Card payments")
    info = await services.backups.create()
    await add_gateway(services, "Added after the backup")
    await life.close()

    report = await restore(config, info.path)

    assert report.migrated is False
    assert report.safety_copy is not None
    assert report.safety_copy.parent == database(config).parent
    assert "restore that file to undo" in report.sentence
    services = await life.open()
    assert await names(services) == ["Card payments"]
    newest = (await services.audit.entries(limit=1))[0]
    assert (newest.action, newest.actor) == ("backup.restored", access.SERVICE_NAME)
    assert newest.after["safety_copy"] == str(report.safety_copy)
    assert (await services.audit.verify()).ok
    # The restored database carries no mark of having been a backup.
    raw = sqlite3.connect(database(config))
    tables = {row[0] for row in raw.execute("SELECT name FROM sqlite_master")}
    raw.close()
    assert MARKER_TABLE not in tables
    await life.close()

    undone = await restore(config, report.safety_copy)
    assert undone.safety_copy is not None
    services = await life.open()
    assert sorted(await names(services)) == ["Added after the backup", "Card payments"]
    assert (await services.audit.verify()).ok
    await life.close()


async def test_a_damaged_backup_is_refused_and_nothing_changes(
    config: Config, life: Lifecycle
) -> None:
    services = life.services
    for number in range(40):  # enough rows that the damage lands in them
        await add_gateway(services, f"Gateway {number}")
    info = await services.backups.create()
    await life.close()
    corrupt(info.path)
    live = database(config)
    before = digest(live)

    with pytest.raises(BackupError, match="failed its integrity check") as refused:
        await restore(config, info.path)

    assert "cannot be restored; choose another backup." in str(refused.value)
    assert digest(live) == before
    assert sorted(p.name for p in live.parent.glob("switchboard-before-restore-*")) == []


async def test_a_file_that_is_not_a_switchboard_backup_is_refused(
    config: Config, tmp_path: Path
) -> None:
    text = tmp_path / "notes.db"
    text.write_text("term dates\n")
    with pytest.raises(BackupError, match=r"notes\.db is not a Switchboard backup"):
        await restore(config, text)
    other = tmp_path / "other.db"
    with sqlite3.connect(other) as raw:
        raw.execute("CREATE TABLE pupils (name TEXT)")
    raw.close()
    with pytest.raises(BackupError, match="a SQLite database but not Switchboard's"):
        await restore(config, other)
    with pytest.raises(BackupError, match="There is no file"):
        await restore(config, tmp_path / "missing.db")


async def test_a_backup_from_a_newer_version_is_refused(config: Config, life: Lifecycle) -> None:
    services = life.services
    info = await services.backups.create()
    await life.close()
    with sqlite3.connect(info.path) as raw:
        raw.execute("UPDATE alembic_version SET version_num = '9999_from_the_future'")
    raw.close()
    live = database(config)
    before = digest(live)
    with pytest.raises(BackupError, match="made by a newer version of Switchboard"):
        inspect_backup(info.path)
    with pytest.raises(BackupError, match="made by a newer version of Switchboard"):
        await restore(config, info.path)
    assert digest(live) == before


async def test_an_older_backup_is_brought_up_to_date_when_restored(
    config: Config, life: Lifecycle, tmp_path: Path
) -> None:
    from app.store.database import Database

    old = tmp_path / "old" / "switchboard.db"
    old.parent.mkdir()
    db = Database(f"sqlite:///{old}")
    from alembic import command

    cfg = db._alembic_config()
    command.upgrade(cfg, "0019")
    db.close()
    assert inspect_backup(old).current is False
    await life.close()

    report = await restore(config, old)

    assert report.migrated is True
    services = await life.open()
    [entry] = await services.audit.entries(action="backup.restored")
    assert entry.after["schema_before"].startswith("0019")
    await life.close()


async def test_a_restore_is_refused_while_the_database_is_in_use(
    config: Config, services: Services
) -> None:
    info = await services.backups.create()
    await add_gateway(services, "Added after the backup")  # the open services hold it
    with pytest.raises(BackupError, match="is using the database") as refused:
        await restore(config, info.path)
    assert "close it and try again" in str(refused.value)
    assert await names(services) == ["Added after the backup"]


async def test_on_a_database_server_backups_point_to_pg_dump(tmp_path: Path) -> None:
    server = Config(Paths.under(tmp_path), "postgresql+psycopg://office@db.school/switchboard")
    with pytest.raises(BackupError, match="pg_dump"):
        await restore(server, tmp_path / "any.db")


async def test_a_database_sqlite_cannot_read_is_replaced_and_kept(
    config: Config, life: Lifecycle
) -> None:
    services = life.services
    await add_gateway(services, "Card payments")
    info = await services.backups.create()
    await life.close()
    live = database(config)
    live.write_bytes(b"this is not a database any more" * 100)

    report = await restore(config, info.path)

    assert report.safety_copy is not None
    assert report.safety_copy.read_bytes().startswith(b"this is not a database")
    services = await life.open()
    assert await names(services) == ["Card payments"]
    await life.close()


# --- who may ------------------------------------------------------------------------------------


@pytest.mark.parametrize("role", [Role.FINANCE, Role.STAFF, Role.VIEWER])
async def test_a_role_without_the_backup_permission_is_refused(
    config: Config, life: Lifecycle, role: Role
) -> None:
    services = life.services
    info = await services.backups.create()
    await life.close()
    folder = info.path.parent
    before = sorted(p.name for p in folder.iterdir())
    with access.acting_as(Principal("Sam", role)):
        with pytest.raises(NotAllowed, match="may not back up or restore the database"):
            await restore(config, info.path)
        services = await life.open()
        with pytest.raises(NotAllowed, match="ask someone with the Administrator role"):
            await services.backups.create()
        with pytest.raises(NotAllowed):
            await services.backups.inspect(info.path)
        with pytest.raises(NotAllowed):
            await services.backups.export_settings(folder / "settings.json")
    assert sorted(p.name for p in folder.iterdir()) == before
    assert await services.audit.entries(action="backup.restored") == []
    await life.close()


async def test_an_administrator_may_back_up(services: Services) -> None:
    with access.acting_as(Principal("Ada", Role.ADMINISTRATOR)):
        info = await services.backups.create()
    [entry] = await services.audit.entries(action="backup.created")
    assert entry.actor == "Ada"
    assert info.path.exists()


# --- automatic backups -------------------------------------------------------------------------


async def test_automatic_backups_are_kept_to_the_newest_few_and_manual_ones_are_never_deleted(
    services: Services,
) -> None:
    await services.settings.set("backup.keep", 3)
    manual = await services.backups.create()
    made = [await services.backups.create(automatic=True) for _ in range(5)]
    listed = await services.backups.backups()
    assert [info.path for info in listed if info.automatic] == [
        info.path for info in reversed(made[-3:])
    ]
    assert [info.path for info in listed if not info.automatic] == [manual.path]
    assert not made[0].path.exists()
    assert not made[1].path.exists()
    entries = await services.audit.entries(action="backup.created", limit=1)
    assert entries[0].after["old_backups_deleted"] == [made[1].path.name]


async def test_a_backup_is_taken_by_itself_when_one_is_due(services: Services) -> None:
    await services.settings.set("backup.every_hours", 24)
    first = await services.backups.backup_if_due()
    assert first is not None
    assert first.automatic
    assert await services.backups.backup_if_due() is None  # not due again yet
    later = datetime.now(UTC) + timedelta(hours=25)
    second = await services.backups.backup_if_due(later)
    assert second is not None
    assert second.path != first.path
    run = await services.jobs.last_of(JOB_ID)
    assert run is not None
    assert run.outcome == "ok"
    assert run.counts["file"] == second.path.name
    entries = await services.audit.entries(action="backup.created")
    assert {entry.actor for entry in entries} == {access.SERVICE_NAME}

    await services.settings.set("backup.every_hours", 0)
    assert await services.backups.backup_if_due(later + timedelta(days=30)) is None
    assert len([info for info in await services.backups.backups() if info.automatic]) == 2


async def test_automatic_backups_go_to_the_folder_set(services: Services, tmp_path: Path) -> None:
    folder = tmp_path / "usb-stick" / "switchboard"
    await services.settings.set("backup.folder", str(folder))
    info = await services.backups.backup_if_due()
    assert info is not None
    assert info.path.parent == folder
    assert list_backups(folder) == [info]


def test_the_engine_schedules_the_backup_check(config: Config) -> None:
    engine = Engine(config)
    engine.start()
    try:
        assert engine._scheduler is not None
        job = engine._scheduler.get_job(JOB_ID)
        assert job is not None
        assert job.name == "Back up the database (when due)"
    finally:
        engine.stop()


# --- settings export and import ------------------------------------------------------------------


async def test_the_settings_export_holds_no_secret(services: Services, tmp_path: Path) -> None:
    planted = ["sk_live_PLANTED_4f9a1c", "whsec_PLANTED_b7e2d0"]
    await services.connections.add(
        "sandbox-payments",
        "Card payments",
        {**FAST, "error_rate": 0.5},
        {"api_key": planted[0], "webhook_secret": planted[1]},
    )
    await services.settings.set("school.name", "Harare Music School")
    out = await services.backups.export_settings(tmp_path / "settings.json")
    text = out.read_text("utf-8")
    document = json.loads(text)
    assert document["settings"]["school.name"] == "Harare Music School"
    [exported] = document["connections"]
    assert exported["kind"] == "sandbox-payments"
    assert exported["config"]["error_rate"] == 0.5
    assert "api_key" not in exported["config"]
    backup = await services.backups.create()
    for secret in planted:
        assert secret not in text
        assert secret.encode() not in backup.path.read_bytes()
    assert "install_id" not in text  # the app's own state is not a setting


async def test_importing_a_bad_value_changes_nothing(services: Services, tmp_path: Path) -> None:
    await services.settings.set("school.name", "Harare Music School")
    gateway = await add_gateway(services, "Card payments")
    out = await services.backups.export_settings(tmp_path / "settings.json")
    document = json.loads(out.read_text("utf-8"))
    document["settings"]["school.name"] = "Bulawayo Music School"
    document["settings"]["receiver.port"] = 70_000
    document["connections"][0]["config"]["error_rate"] = 0.25
    out.write_text(json.dumps(document))
    audited = len(await services.audit.entries())

    with pytest.raises(BackupError, match="Nothing was imported") as refused:
        await services.backups.import_settings(out)

    assert "Webhook receiver port must be at most 65535" in str(refused.value)
    assert services.settings.get("school.name") == "Harare Music School"
    await services.settings.reload()
    assert services.settings.get("school.name") == "Harare Music School"
    assert (await services.connections.connection(gateway)).config["error_rate"] == 0
    assert len(await services.audit.entries()) == audited


async def test_a_secret_in_an_import_is_refused(services: Services, tmp_path: Path) -> None:
    await add_gateway(services, "Card payments")
    out = await services.backups.export_settings(tmp_path / "settings.json")
    document = json.loads(out.read_text("utf-8"))
    document["connections"][0]["config"]["api_key"] = "sk_live_smuggled"
    out.write_text(json.dumps(document))
    with pytest.raises(BackupError, match=r"Card payments has secrets in it \(api_key\)"):
        await services.backups.import_settings(out)


async def test_a_good_import_changes_settings_and_connections(
    services: Services, tmp_path: Path
) -> None:
    gateway = await add_gateway(services, "Card payments")
    out = await services.backups.export_settings(tmp_path / "settings.json")
    document = json.loads(out.read_text("utf-8"))
    document["settings"]["school.name"] = "Bulawayo Music School"
    document["connections"][0]["config"]["error_rate"] = 0.25
    document["connections"].append(
        {"name": "Old bank feed", "kind": "sandbox-payments", "config": {}}
    )
    out.write_text(json.dumps(document))

    report = await services.backups.import_settings(out)

    assert report.settings_changed == ["school.name"]
    assert report.connections_changed == ["Card payments"]
    assert report.connections_missing == ["Old bank feed"]
    assert services.settings.get("school.name") == "Bulawayo Music School"
    record = await services.connections.connection(gateway)
    assert record.config["error_rate"] == 0.25
    assert set(record.secret_fields) == {"api_key", "webhook_secret"}  # secrets kept
    [entry] = await services.audit.entries(action="settings.imported")
    assert entry.after == {"school.name": "Bulawayo Music School"}


async def test_a_file_that_is_not_a_settings_export_is_refused(
    services: Services, tmp_path: Path
) -> None:
    other = tmp_path / "other.json"
    other.write_text(json.dumps({"hello": "world"}))
    with pytest.raises(BackupError, match="is not a Switchboard settings export"):
        await services.backups.import_settings(other)
    other.write_text("not json")
    with pytest.raises(BackupError, match="it is not JSON"):
        await services.backups.import_settings(other)


# --- the round trip under load -----------------------------------------------------------------


async def _ok() -> dict[str, Any]:
    return {"status": "ok"}


async def test_a_round_trip_while_webhooks_arrive_loses_nothing_acknowledged_before_the_backup(
    config: Config, life: Lifecycle, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Small steps, so the copy takes many and the webhooks' writes land between them.
    monkeypatch.setattr(backup, "STEP_PAGES", 8)
    services = life.services
    secret = new_standard_webhooks_secret()
    record = await services.connections.add(
        "sandbox-payments", "Gateway", FAST, {"api_key": "sk_test", "webhook_secret": secret}
    )
    services.intake.limiter = SourceLimiter(rate=0, burst=0)  # one sender, many calls
    receiver = Receiver(_ok, "127.0.0.1", 0, intake=services.intake, max_body=64 * 1024)
    receiver.start()
    path = f"/hooks/{record.id}/{record.webhook_token}"
    acknowledged: list[str] = []
    stop = asyncio.Event()

    async def sender(client: httpx.AsyncClient, number: int) -> None:
        sent = 0
        while not stop.is_set():
            event_id = f"evt_{number}_{sent}"
            sent += 1
            body = json.dumps({"type": "payment.succeeded", "id": event_id})
            now = datetime.now(UTC)
            response = await client.post(
                path,
                content=body,
                headers={
                    "content-type": "application/json",
                    "webhook-id": event_id,
                    "webhook-timestamp": str(int(now.timestamp())),
                    "webhook-signature": Webhook(secret).sign(event_id, now, body),
                },
            )
            if response.status_code == 200:
                acknowledged.append(event_id)

    async with httpx.AsyncClient(base_url=receiver.address.url, timeout=10) as client:
        senders = [asyncio.create_task(sender(client, number)) for number in range(4)]
        await until(lambda: len(acknowledged) >= 200, 30)
        before = set(acknowledged)
        info = await services.backups.create()
        during = len(acknowledged) - len(before)
        await until(lambda: len(acknowledged) >= len(before) + during + 100, 30)
        stop.set()
        await asyncio.gather(*senders)
    await receiver.stop()
    await life.close()
    assert during > 0, "no webhook arrived while the backup was taken"

    await restore(config, info.path)

    services = await life.open()

    def stored(session: Session) -> list[str]:
        return list(session.scalars(select(WebhookInboxEntry.provider_event_id)))

    restored = await services.db.read(stored)
    assert before <= set(restored), "an event acknowledged before the backup was lost"
    assert len(restored) == len(set(restored)), "an event is in the restored database twice"
    assert set(restored) <= set(acknowledged)
    assert len(set(acknowledged)) == len(acknowledged)
    await life.close()
