"""Moving the demo school from its SQLite file into an empty PostgreSQL database: the copy is
verified (rows per table, money totals per currency, the audit trail's chain), opens as the
same school, hands out fresh ids, keeps every secret with its connection, and a move that is
refused, cancelled or finds a damaged copy leaves the target as it was and the file unread-only.
This computer's choice of database lives in `database.json`, without its password."""

from __future__ import annotations

import asyncio
import hashlib
import json
import shutil
import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date
from pathlib import Path

import keyring
import pytest
from sqlalchemy import JSON, Connection, column, create_engine, func, literal, select, table, text
from sqlalchemy.engine import make_url

from app.config import (
    DATABASE_CHOICE_FILE,
    DATABASE_FILE,
    Config,
    ConfigError,
    Paths,
    read_database_choice,
    resolve_config,
    without_password,
)
from app.domain.access import NotAllowed, Principal, Role
from app.domain.school import StudentDraft
from app.services import Services, database_password
from app.services.access import acting_as
from app.services.database_move import (
    MoveFailed,
    MoveReport,
    TargetNotEmpty,
    move,
    move_database,
    probe,
    use_shared_database,
)
from app.services.demo import DEMO_KEY, seed_demo
from app.services.progress import Cancelled, Progress
from app.store.base import Base
from app.store.database import postgres_url
from tests.support.databases import PostgresServer
from tests.support.memory_keyring import MemoryKeyring

# The money columns, named by hand so the test does not trust the move's own rule:
# (table, column, the table has a currency column).
MONEY = [
    ("invoices", "total_minor", True),
    ("invoice_lines", "unit_minor", False),
    ("payments", "amount_minor", True),
    ("payments", "fee_minor", True),
    ("payments", "refunded_minor", True),
    ("refunds", "amount_minor", True),
    ("billing_items", "amount_minor", True),
    ("messages", "cost_minor", True),
    ("recon_records", "amount_minor", True),
    ("recon_records", "fee_minor", True),
    ("recon_results", "amount_minor", True),
    ("recon_results", "fee_minor", True),
    ("recon_results", "diff_minor", True),
    ("routing_rules", "min_minor", True),
    ("routing_rules", "max_minor", True),
]


@dataclass(frozen=True)
class DemoFile:
    """The demo school seeded once into a SQLite file, and the credential store that holds its
    connections' keys."""

    config: Config
    store: MemoryKeyring

    @property
    def path(self) -> Path:
        assert self.config.sqlite_path is not None
        return self.config.sqlite_path


@dataclass(frozen=True)
class Moved:
    report: MoveReport
    url: str
    progress: Progress


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory, migrated_template: Path) -> DemoFile:
    """Seeding takes seconds: once for the module. Its keys go to a store of its own."""
    folder = tmp_path_factory.mktemp("school")
    shutil.copyfile(migrated_template, folder / DATABASE_FILE)
    config = resolve_config(str(folder), environ={})
    store, previous = MemoryKeyring(), keyring.get_keyring()
    keyring.set_keyring(store)

    async def seed() -> None:
        services = await Services.open(config)
        try:
            await seed_demo(services, today=date(2026, 11, 18))
        finally:
            await services.close()

    try:
        asyncio.run(seed())
    finally:
        keyring.set_keyring(previous)
    return DemoFile(config, store)


@pytest.fixture(scope="module")
def moved(demo: DemoFile, postgres_server: PostgresServer) -> Iterator[Moved]:
    """The demo school moved once into a brand-new database (no schema yet), for the tests
    that only read it."""
    name = postgres_server.create()
    url = postgres_server.url_of(name)
    progress = Progress()
    report = move(demo.config.db_url, url, progress)
    yield Moved(report, url, progress)
    postgres_server.drop(name)


@pytest.fixture
def target(postgres_server: PostgresServer) -> Iterator[str]:
    """A new, empty PostgreSQL database of this test's own (the move creates its tables). Not
    the worker's shared one: after thousands of rows written the server's autovacuum visits a
    database, and emptying it for the next test cannot end that visit."""
    name = postgres_server.create()
    yield postgres_server.url_of(name)
    postgres_server.drop(name)


@pytest.fixture
def use_demo_store(demo: DemoFile, memory_keyring: MemoryKeyring) -> MemoryKeyring:
    """This test's credential store holds the demo connections' keys, as the office PC's does."""
    memory_keyring.entries.update(demo.store.entries)
    return memory_keyring


def rows_and_sums(url: str) -> tuple[dict[str, int], dict[tuple[str, str, str], int]]:
    """Every table's row count and every money column's total per currency, by plain SQL."""
    engine = create_engine(postgres_url(url) if url.startswith("postgres") else url)
    try:
        with engine.connect() as connection:
            counts = {
                model.name: int(connection.scalar(select(func.count()).select_from(model)) or 0)
                for model in Base.metadata.sorted_tables
            }
            sums: dict[tuple[str, str, str], int] = {}
            for name, money, has_currency in MONEY:
                amounts = table(name, column(money), column("currency"))
                total = func.sum(amounts.c[money])
                query = (
                    select(amounts.c.currency, total).group_by(amounts.c.currency)
                    if has_currency
                    else select(literal(""), total)
                )
                for currency, value in connection.execute(query):
                    if value is not None:
                        sums[(name, money, currency)] = int(value)
    finally:
        engine.dispose()
    return counts, sums


def json_nulls(url: str) -> dict[str, int]:
    """How many rows hold SQL NULL in each JSON column (a JSON null is a value, not NULL)."""
    engine = create_engine(postgres_url(url) if url.startswith("postgres") else url)
    try:
        with engine.connect() as connection:
            return {
                f"{model.name}.{col.name}": int(
                    connection.scalar(select(func.count()).select_from(model).where(col.is_(None)))
                    or 0
                )
                for model in Base.metadata.sorted_tables
                for col in model.columns
                if isinstance(col.type, JSON)
            }
    finally:
        engine.dispose()


def table_rows(url: str) -> dict[str, int]:
    return rows_and_sums(url)[0]


def file_contents(path: Path) -> str:
    """A digest of what the SQLite file holds (not of its bytes: closing the last connection
    may fold the write-ahead log into the file without changing a row)."""
    connection = sqlite3.connect(path)
    try:
        return hashlib.sha256("\n".join(connection.iterdump()).encode()).hexdigest()
    finally:
        connection.close()


async def open_services(data_dir: Path, url: str | None = None) -> Services:
    return await Services.open(resolve_config(str(data_dir), url, environ={}))


# --- the demo school, moved ----------------------------------------------------------------------


def test_the_demo_school_moves_with_equal_counts_and_money_totals(
    demo: DemoFile, moved: Moved
) -> None:
    report = moved.report
    assert report.verified, report.problems()
    here_counts, here_sums = rows_and_sums(demo.config.db_url)
    there_counts, there_sums = rows_and_sums(moved.url)
    # The same rows, and one entry more in the audit trail: the move itself.
    assert there_counts == {**here_counts, "audit_trail": here_counts["audit_trail"] + 1}
    assert there_sums == here_sums
    assert json_nulls(moved.url) == json_nulls(demo.config.db_url)
    # A school worth moving: lessons, families, invoices and payments in two currencies.
    assert here_counts["students"] >= 190
    assert here_counts["payments"] > 100
    assert {currency for _, column, currency in here_sums if column == "total_minor"} == {
        "USD",
        "ZWG",
    }
    # The report says the same as the test's own queries, table by table and total by total.
    shown = {check.table: check for check in report.tables}
    assert {name: check.source_rows for name, check in shown.items()} == here_counts
    assert {name: check.target_rows for name, check in shown.items()} == here_counts
    reported = {
        (check.table, total.column, total.currency): total.target
        for check in report.tables
        for total in check.totals
    }
    for key, total in there_sums.items():
        assert reported[key] == total, key
    assert report.rows == sum(here_counts.values())
    assert moved.progress.total == moved.progress.done == report.rows
    assert report.as_json()["verified"] is True
    assert any("payments" in line and "same" in line for line in report.lines())


async def test_the_moved_database_opens_as_the_same_school(
    demo: DemoFile, moved: Moved, tmp_path: Path, use_demo_store: MemoryKeyring
) -> None:
    here = await Services.open(demo.config)
    there = await open_services(tmp_path / "pc2", moved.url)
    try:
        assert there.db.is_postgres
        assert await there.school.students() == await here.school.students()
        assert await there.school.invoices() == await here.school.invoices()
        assert await there.school.guardians() == await here.school.guardians()
        assert there.settings.values() == here.settings.values()
    finally:
        await here.close()
        await there.close()


async def test_every_secret_still_belongs_to_its_connection(
    demo: DemoFile, moved: Moved, tmp_path: Path, use_demo_store: MemoryKeyring
) -> None:
    here = await Services.open(demo.config)
    there = await open_services(tmp_path / "pc2", moved.url)
    try:
        # The credential store keeps them under the install id and each connection's id: both
        # were copied as they were.
        assert there.secrets.service == here.secrets.service
        connections = await there.connections.connections()
        assert len(connections) == 3
        for connection in connections:
            assert await there.connections.secret(connection.id, "api_key") == DEMO_KEY
    finally:
        await here.close()
        await there.close()


async def test_the_audit_trail_verifies_on_the_copy_and_notes_the_move(
    demo: DemoFile, moved: Moved, tmp_path: Path
) -> None:
    there = await open_services(tmp_path / "pc2", moved.url)
    try:
        result = await there.audit.verify()
        assert result.ok
        assert result.entries == moved.report.audit.source_entries + 1
        [newest] = await there.audit.entries(limit=1)
        assert newest.action == "database.moved"
        assert newest.after["rows"] == moved.report.rows
        assert newest.before == {"database": f"SQLite · {demo.path}"}
    finally:
        await there.close()


async def test_the_next_row_gets_a_fresh_id_in_every_table(
    demo: DemoFile, target: str, tmp_path: Path
) -> None:
    await move_database(demo.config.db_url, target)
    there = await open_services(tmp_path / "pc2", target)
    try:
        highest = max(student.id for student in await there.school.students())
        added = await there.school.save_student(StudentDraft(first_name="Tariro", last_name="Moyo"))
        assert added.id > highest
    finally:
        await there.close()
    engine = create_engine(postgres_url(target))
    try:
        with engine.begin() as connection:
            for model in Base.metadata.sorted_tables:
                key = model.autoincrement_column
                if key is None:
                    continue
                top = connection.scalar(select(func.max(key)))
                if top is None:
                    continue
                following = connection.scalar(
                    text("SELECT nextval(pg_get_serial_sequence(:t, :c))"),
                    {"t": model.name, "c": key.name},
                )
                assert following > top, model.name
    finally:
        engine.dispose()


# --- refused, cancelled, damaged -----------------------------------------------------------------


async def test_a_target_with_data_is_refused_and_left_as_it_was(
    demo: DemoFile, target: str, tmp_path: Path
) -> None:
    other = await open_services(tmp_path / "other-school", target)
    try:
        await other.school.save_student(StudentDraft(first_name="Rudo", last_name="Chari"))
    finally:
        await other.close()
    before = rows_and_sums(target)
    with pytest.raises(TargetNotEmpty, match="already holds school data"):
        await move_database(demo.config.db_url, target)
    assert rows_and_sums(target) == before
    assert probe(target).empty is False


class CancelAfterFirstBatch(Progress):
    def advance(self, count: int = 1) -> None:
        super().advance(count)
        self.cancel()


async def test_a_cancelled_move_leaves_the_target_empty_and_the_file_as_it_was(
    demo: DemoFile, target: str
) -> None:
    before = file_contents(demo.path)
    progress = CancelAfterFirstBatch()
    with pytest.raises(Cancelled):
        await move_database(demo.config.db_url, target, progress)
    assert 0 < progress.done < progress.total
    assert set(table_rows(target).values()) == {0}
    assert probe(target).empty
    assert file_contents(demo.path) == before


async def test_a_damaged_copy_is_caught_named_and_not_kept(demo: DemoFile, target: str) -> None:
    def damage(connection: Connection) -> None:
        connection.execute(
            text(
                "UPDATE payments SET amount_minor = amount_minor + 1 "
                "WHERE id = (SELECT min(id) FROM payments WHERE currency = 'USD')"
            )
        )

    with pytest.raises(MoveFailed) as failed:
        await move_database(demo.config.db_url, target, before_verify=damage)
    message = str(failed.value)
    assert "payments.amount_minor in USD adds up to" in message
    assert "nothing was kept" in message
    report = failed.value.report
    assert report is not None
    assert not report.verified
    [difference] = [
        (check.table, total.column, total.currency, total.target - total.source)
        for check in report.tables
        for total in check.totals
        if not total.ok
    ]
    assert difference == ("payments", "amount_minor", "USD", 1)
    assert set(table_rows(target).values()) == {0}


async def test_a_removed_row_is_caught_by_the_counts(demo: DemoFile, target: str) -> None:
    def lose_a_lesson(connection: Connection) -> None:
        connection.execute(
            text("DELETE FROM lesson_students WHERE lesson_id = (SELECT max(id) FROM lessons)")
        )
        connection.execute(text("DELETE FROM lessons WHERE id = (SELECT max(id) FROM lessons)"))

    with pytest.raises(MoveFailed, match=r"the table lessons has .* rows here but"):
        await move_database(demo.config.db_url, target, before_verify=lose_a_lesson)
    assert set(table_rows(target).values()) == {0}


async def test_only_an_administrator_may_move_the_database(
    demo: DemoFile, postgres_server: PostgresServer
) -> None:
    name = postgres_server.create()
    try:
        url = postgres_server.url_of(name)
        with acting_as(Principal("Chipo", Role.FINANCE, user_id=2)), pytest.raises(NotAllowed):
            await move_database(demo.config.db_url, url)
        engine = create_engine(postgres_url(url))
        try:
            with engine.connect() as connection:
                tables = connection.scalar(
                    text("SELECT count(*) FROM pg_tables WHERE schemaname = 'public'")
                )
        finally:
            engine.dispose()
        assert tables == 0  # not even migrated
    finally:
        postgres_server.drop(name)


def test_only_a_sqlite_file_moves_and_only_into_postgresql(tmp_path: Path) -> None:
    with pytest.raises(MoveFailed, match="already works on a shared database"):
        move("postgresql://office@server/school", "postgresql://office@server/other")
    with pytest.raises(MoveFailed, match="is not a PostgreSQL database"):
        move(f"sqlite:///{tmp_path / 'a.db'}", f"sqlite:///{tmp_path / 'b.db'}")


def test_an_unreachable_server_is_a_plain_error(tmp_path: Path) -> None:
    with pytest.raises(MoveFailed, match=r"cannot reach postgresql://nobody@127\.0\.0\.1:1/school"):
        probe("postgresql://nobody:secret@127.0.0.1:1/school")


# --- this computer's choice ----------------------------------------------------------------------


def test_this_computers_choice_is_read_after_the_flag_and_the_environment(tmp_path: Path) -> None:
    paths = Paths.under(tmp_path)
    assert resolve_config(str(tmp_path), environ={}).db_url.startswith("sqlite:///")
    paths.config_dir.mkdir(parents=True)
    (paths.config_dir / DATABASE_CHOICE_FILE).write_text(
        json.dumps({"url": "postgresql://office@server/school"})
    )
    assert resolve_config(str(tmp_path), environ={}).db_url == "postgresql://office@server/school"
    from_env = {"SWITCHBOARD_DB_URL": "postgresql://env@server/school"}
    assert resolve_config(str(tmp_path), environ=from_env).db_url.startswith("postgresql://env@")
    flag = resolve_config(str(tmp_path), "sqlite:///elsewhere.db", environ=from_env)
    assert flag.db_url == "sqlite:///elsewhere.db"


def test_a_damaged_choice_file_is_a_plain_error(tmp_path: Path) -> None:
    paths = Paths.under(tmp_path)
    paths.config_dir.mkdir(parents=True)
    (paths.config_dir / DATABASE_CHOICE_FILE).write_text("{not json")
    with pytest.raises(ConfigError, match="is damaged; delete it"):
        resolve_config(str(tmp_path), environ={})


async def test_the_password_goes_to_the_credential_store_not_the_file(
    tmp_path: Path, memory_keyring: MemoryKeyring
) -> None:
    paths = Paths.under(tmp_path)
    url = "postgresql://office:p%40ss word@db.school.lan:5432/school"
    written = await use_shared_database(paths, url, "p@ss word")
    assert "p@ss" not in written.read_text()
    assert read_database_choice(paths.config_dir) == "postgresql://office@db.school.lan:5432/school"
    assert without_password(url) == ("postgresql://office@db.school.lan:5432/school", "p@ss word")
    # Put back where the database is opened, and quoted as a URL needs it.
    assert (
        database_password.with_password("postgresql://office@db.school.lan:5432/school")
        == "postgresql://office:p%40ss%20word@db.school.lan:5432/school"
    )
    assert database_password.with_password("postgresql://other@db.school.lan/school") == (
        "postgresql://other@db.school.lan/school"
    )
    assert database_password.with_password("sqlite:///school.db") == "sqlite:///school.db"


async def test_after_the_move_this_computer_opens_the_shared_database_by_itself(
    demo: DemoFile, target: str, tmp_path: Path
) -> None:
    await move_database(demo.config.db_url, target)
    home = tmp_path / "office-pc"
    password = make_url(target).password
    assert password
    await use_shared_database(Paths.under(home), target, password)
    chosen = resolve_config(str(home), environ={})
    assert password not in chosen.db_url  # no password in the address
    there = await Services.open(chosen)
    try:
        assert there.db.is_postgres
        assert len(await there.school.students()) == table_rows(demo.config.db_url)["students"]
    finally:
        await there.close()
