"""Moving a school's SQLite database into an empty PostgreSQL database, and proving the copy.

The move reads the SQLite file in one read transaction (a consistent snapshot, so work the
engine does meanwhile is either wholly in the copy or not at all) and writes the PostgreSQL
database in one write transaction: every table of the models, parents before children, in
batches, keeping every id. Before that transaction commits, the copy is verified by counting
and summing both sides with their own queries — rows per table, and the total of every money
column per currency — and by walking the audit trail's hash chain on the copy. Anything that
differs, a Cancel, or any error rolls the whole transaction back, so the target is left as
empty as it was found; the SQLite file is only ever read (it is the way back).

Secrets (API keys, tokens) are not in the database: the credential store keeps them under the
school's install id (a row of `settings`) and each connection's id. Both are copied as they
are, so every secret still belongs to its connection on the shared database.
"""

from __future__ import annotations

import asyncio
import json
import logging
import pkgutil
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib import import_module
from pathlib import Path
from typing import Any

from sqlalchemy import (
    JSON,
    Connection,
    Integer,
    Table,
    Text,
    column,
    func,
    insert,
    inspect,
    literal,
    select,
    table,
    text,
    type_coerce,
)
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session

import app.store
from app.config import Paths, without_password, write_database_choice
from app.domain.access import Permission
from app.domain.errors import SwitchboardError
from app.services import access, audit, database_password
from app.services.progress import Progress
from app.store.base import Base
from app.store.database import Database

log = logging.getLogger("switchboard.store")

BATCH = 1_000
# Taken for the copy's transaction, so two computers moving into one database at the same moment
# cannot both find it empty: the second waits, then finds the first one's copy and refuses.
MOVE_LOCK = 0x5357_4D56  # "SWMV"
ALEMBIC_TABLE = "alembic_version"
SERVER_ADVICE = (
    "Check the server's address and port, the database's name, the user name and password, "
    "and that the server lets this computer in."
)

# Every module of app.store declares its tables on Base.metadata when imported.
for _module in pkgutil.iter_modules(app.store.__path__):
    import_module(f"app.store.{_module.name}")


class MoveFailed(SwitchboardError):
    """The move was refused or did not verify; the target holds nothing of it. `report` is
    the verification that failed, when it got that far."""

    def __init__(self, message: str, report: MoveReport | None = None) -> None:
        super().__init__(message)
        self.report = report


class TargetNotEmpty(MoveFailed):
    """The target already holds school data, which a move must never mix with or overwrite."""


# --- the report ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class MoneyTotal:
    """The sum of one money column (integer minor units) for one currency, on both sides;
    `currency` is "" in a table without a currency column."""

    column: str
    currency: str
    source: int
    target: int

    @property
    def ok(self) -> bool:
        return self.source == self.target


@dataclass(frozen=True)
class TableCheck:
    table: str
    source_rows: int
    target_rows: int
    totals: tuple[MoneyTotal, ...] = ()

    @property
    def ok(self) -> bool:
        return self.source_rows == self.target_rows and all(total.ok for total in self.totals)


@dataclass(frozen=True)
class AuditCheck:
    """The audit trail's hash chain walked on both sides: the copy must verify exactly as the
    original does (same entries, same last hash, the same first bad entry if any)."""

    source_entries: int
    target_entries: int
    source_last_hash: str
    target_last_hash: str
    source_problem: str = ""
    target_problem: str = ""

    @property
    def ok(self) -> bool:
        return (
            self.source_entries == self.target_entries
            and self.source_last_hash == self.target_last_hash
            and self.source_problem == self.target_problem
        )


@dataclass(frozen=True)
class MoveReport:
    source: str
    target: str
    tables: tuple[TableCheck, ...]
    audit: AuditCheck
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def rows(self) -> int:
        return sum(check.source_rows for check in self.tables)

    @property
    def verified(self) -> bool:
        return self.audit.ok and all(check.ok for check in self.tables)

    def problems(self) -> list[str]:
        """Each difference found, in words."""
        found = []
        for check in self.tables:
            if check.source_rows != check.target_rows:
                found.append(
                    f"the table {check.table} has {check.source_rows:,} rows here but "
                    f"{check.target_rows:,} in the copy"
                )
            for total in check.totals:
                if not total.ok:
                    currency = f" in {total.currency}" if total.currency else ""
                    found.append(
                        f"{check.table}.{total.column}{currency} adds up to {total.source:,} "
                        f"here but {total.target:,} in the copy"
                    )
        if not self.audit.ok:
            found.append(
                "the audit trail's chain of entries on the copy does not match this one's"
                + (f" ({self.audit.target_problem})" if self.audit.target_problem else "")
            )
        return found

    def lines(self) -> list[str]:
        """The verification as a table of text, for the command line."""
        out = [f"{'Table':<24} {'Here':>9} {'Shared':>9}  Check"]
        for check in self.tables:
            if not (check.source_rows or check.target_rows):
                continue
            out.append(
                f"{check.table:<24} {check.source_rows:>9,} {check.target_rows:>9,}  "
                f"{'same' if check.ok else 'DIFFERENT'}"
            )
            for total in check.totals:
                label = f"{total.column} {total.currency}".strip()
                out.append(
                    f"  {label:<22} {total.source:>9,} {total.target:>9,}  "
                    f"{'same' if total.ok else 'DIFFERENT'}"
                )
        out.append(
            f"{'audit trail entries':<24} {self.audit.source_entries:>9,} "
            f"{self.audit.target_entries:>9,}  {'chain verified' if self.audit.ok else 'DIFFERENT'}"
        )
        return out

    def as_json(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "target": self.target,
            "verified": self.verified,
            "rows": self.rows,
            "tables": [
                {
                    "table": check.table,
                    "source_rows": check.source_rows,
                    "target_rows": check.target_rows,
                    "ok": check.ok,
                    "money": [
                        {
                            "column": total.column,
                            "currency": total.currency or None,
                            "source": total.source,
                            "target": total.target,
                            "ok": total.ok,
                        }
                        for total in check.totals
                    ],
                }
                for check in self.tables
            ],
            "audit": {
                "entries": self.audit.source_entries,
                "copied": self.audit.target_entries,
                "last_hash": self.audit.target_last_hash,
                "ok": self.audit.ok,
            },
            "problems": self.problems(),
        }


# --- what is money ------------------------------------------------------------------------------


def money_columns(model: Table) -> list[Any]:
    """The columns holding amounts of money: every integer column named `…_minor` (amounts are
    integers of the currency's minor unit throughout, e.g. `amount_minor`, `fee_minor`)."""
    return [
        col
        for col in model.columns
        if col.name.endswith("_minor") and isinstance(col.type, Integer)
    ]


def tables() -> list[Table]:
    """Every table of the models, parents before children."""
    return list(Base.metadata.sorted_tables)


# --- looking at a target ------------------------------------------------------------------------


@dataclass(frozen=True)
class Probe:
    """What a connection test found on the server."""

    target: str
    server_version: str
    tables_with_data: tuple[str, ...]

    @property
    def empty(self) -> bool:
        return not self.tables_with_data

    @property
    def sentence(self) -> str:
        if self.empty:
            return (
                f"Connected to PostgreSQL {self.server_version}; the database is empty, so the "
                "school's data can be copied into it."
            )
        return _not_empty(self.target, self.tables_with_data)


def _not_empty(target: str, tables_with_data: tuple[str, ...] | list[str]) -> str:
    named = ", ".join(tables_with_data[:3]) + (" …" if len(tables_with_data) > 3 else "")
    return (
        f"The database {target} already holds school data (in {named}), so nothing was copied "
        "into it; choose an empty database, or ask whoever runs the server for a new one."
    )


def _tables_with_data(connection: Connection) -> list[str]:
    names = [name for name in inspect(connection).get_table_names() if name != ALEMBIC_TABLE]
    return [
        name
        for name in sorted(names)
        if connection.execute(select(literal(1)).select_from(table(name)).limit(1)).first()
    ]


def probe(url: str) -> Probe:
    """Connect to a PostgreSQL database and say whether a school can be moved into it."""
    _check_target(url)
    db = Database(url, readers=1)
    try:
        with db.read_engine.connect() as connection:
            version = str(connection.execute(text("SHOW server_version")).scalar())
            found = _tables_with_data(connection)
    except DBAPIError as exc:
        raise MoveFailed(
            f"Switchboard cannot reach {shown_url(url)}: {_first_line(exc)}. {SERVER_ADVICE}"
        ) from exc
    finally:
        db.close()
    return Probe(shown_url(url), version.split()[0], tuple(found))


# --- the move -----------------------------------------------------------------------------------


def shown_url(url: str) -> str:
    """A PostgreSQL address as people write it, without its password."""
    return without_password(url)[0].replace("postgresql+psycopg://", "postgresql://", 1)


def _check_target(url: str) -> None:
    if url.split("://", 1)[0].split("+", 1)[0] not in {"postgresql", "postgres"}:
        raise MoveFailed(
            f"{without_password(url)[0]} is not a PostgreSQL database; write its address as "
            "postgresql://user@server/database."
        )


def _check_source(url: str) -> None:
    if not url.startswith("sqlite"):
        raise MoveFailed(
            f"This computer already works on a shared database ({shown_url(url)}); only a "
            "SQLite database file can be moved."
        )


def _first_line(exc: DBAPIError) -> str:
    return (str(exc.orig).strip().splitlines() or ["no reason given"])[0].rstrip(".")


def move(
    source_url: str,
    target_url: str,
    progress: Progress | None = None,
    *,
    actor: str = access.SERVICE_NAME,
    before_verify: Callable[[Connection], None] | None = None,
) -> MoveReport:
    """Copy the SQLite database `source_url` into the empty PostgreSQL database `target_url`,
    verify the copy and commit it, or raise (MoveFailed, Cancelled, DatabaseError) and leave
    the target without any of it. Blocking: call it off the event loops (`move_database`).

    `before_verify` runs on the target's connection between the copy and its verification; it
    is there so a test can damage the copy and see the verification catch it."""
    _check_source(source_url)
    _check_target(target_url)
    progress = progress or Progress()
    source = Database(source_url, readers=1)
    target = Database(target_url, readers=1)
    try:
        source.migrate()
        # Look before migrating: a database with someone's data is not touched at all.
        try:
            with target.read_engine.connect() as connection:
                found = _tables_with_data(connection)
        except DBAPIError as exc:
            raise MoveFailed(
                f"Switchboard cannot reach {shown_url(target_url)}: {_first_line(exc)}. "
                f"{SERVER_ADVICE}"
            ) from exc
        if found:
            raise TargetNotEmpty(_not_empty(shown_url(target_url), found))
        target.migrate()
        shown = shown_url(target_url)
        try:
            with (
                source.read_engine.connect() as src,
                src.begin(),
                target.write_engine.connect() as dst,
                dst.begin(),
            ):
                report = _copy_and_verify(
                    src, dst, source.display_name, shown, progress, actor, before_verify
                )
        except DBAPIError as exc:
            raise MoveFailed(
                f"The copy into {shown} failed ({_first_line(exc)}), so nothing was kept there; "
                "check the server and try again."
            ) from exc
        log.info(
            "database moved",
            extra={"to": target.display_name, "rows": report.rows, "tables": len(report.tables)},
        )
        return report
    finally:
        source.close()
        target.close()


def _copy_and_verify(
    src: Connection,
    dst: Connection,
    source_name: str,
    target_name: str,
    progress: Progress,
    actor: str,
    before_verify: Callable[[Connection], None] | None,
) -> MoveReport:
    dst.execute(select(func.pg_advisory_xact_lock(MOVE_LOCK)))
    found = _tables_with_data(dst)
    if found:
        raise TargetNotEmpty(_not_empty(target_name, found))
    models = tables()
    unknown = set(inspect(dst).get_table_names()) - {m.name for m in models} - {ALEMBIC_TABLE}
    if unknown:
        raise MoveFailed(
            f"The database {target_name} has tables this version of Switchboard does not know "
            f"({', '.join(sorted(unknown))}); update Switchboard on this computer first."
        )
    counts = {model.name: _count(src, model) for model in models}
    progress.start(sum(counts.values()))
    for model in models:
        _copy_table(src, dst, model, target_name, progress)
    _advance_identities(dst, models)
    progress.check()
    if before_verify is not None:
        before_verify(dst)
    checks = tuple(
        TableCheck(
            model.name,
            _count(src, model),
            _count(dst, model),
            _money_totals(src, dst, model),
        )
        for model in models
    )
    report = MoveReport(source_name, target_name, checks, _audit_check(src, dst))
    if not report.verified:
        problems = report.problems()
        raise MoveFailed(
            f"The copy did not match this computer's database ({problems[0]}"
            + (f", and {len(problems) - 1} more" if len(problems) > 1 else "")
            + f"), so nothing was kept in {target_name}; try again, and if it happens again "
            "send the log file to support.",
            report,
        )
    progress.check()
    with Session(bind=dst) as session:
        audit.record(
            session,
            actor,
            "database.moved",
            "database",
            target_name.rpartition("@")[2][:64],  # server/database: the id column is short
            {"database": source_name},
            {"database": target_name, "rows": report.rows, "verified": True},
        )
        session.flush()
        if not audit.verify(session).ok:
            raise MoveFailed(
                f"The audit trail on {target_name} did not verify after the move was noted in "
                "it, so nothing was kept there; send the log file to support."
            )
    return report


def _count(connection: Connection, model: Table) -> int:
    return int(connection.execute(select(func.count()).select_from(model)).scalar_one())


def _copy_table(
    src: Connection, dst: Connection, model: Table, target_name: str, progress: Progress
) -> None:
    json_columns = {col.name for col in model.columns if isinstance(col.type, JSON)}
    # JSON is read as its stored text and written back as such, so a SQL NULL stays NULL and a
    # JSON null stays JSON null (the models' JSON type would turn both into one of them).
    reading = (
        select(
            *(
                type_coerce(col, Text).label(col.name) if col.name in json_columns else col
                for col in model.columns
            )
        )
        .order_by(*model.primary_key.columns)
        .execution_options(yield_per=BATCH)
    )
    writing = insert(
        table(
            model.name,
            *(
                column(col.name, JSON(none_as_null=True) if col.name in json_columns else col.type)
                for col in model.columns
            ),
        )
    )
    result = src.execute(reading)
    try:
        for batch in result.partitions(BATCH):
            progress.check()
            rows = [_row(dict(row._mapping), json_columns) for row in batch]
            dst.execute(writing, rows)
            progress.advance(len(rows))
    except DBAPIError as exc:
        raise MoveFailed(
            f"Copying the table {model.name} into {target_name} failed ({_first_line(exc)}), "
            "so nothing was kept there; check the server and try again."
        ) from exc
    finally:
        result.close()


def _row(values: dict[str, Any], json_columns: set[str]) -> dict[str, Any]:
    for name in json_columns:
        raw = values[name]
        if raw is None:
            continue
        values[name] = JSON.NULL if raw == "null" else json.loads(raw)
    return values


def _advance_identities(dst: Connection, models: list[Table]) -> None:
    """Rows were copied with their ids, which does not move PostgreSQL's sequences (BIGSERIAL,
    from the models' BigInteger autoincrement keys): set each past the highest id copied, so
    the next row inserted gets a fresh id instead of colliding with a copied one."""
    for model in models:
        key = model.autoincrement_column
        if key is None:
            continue
        sequence = dst.execute(
            text("SELECT pg_get_serial_sequence(:table, :column)"),
            {"table": model.name, "column": key.name},
        ).scalar()
        highest = dst.execute(select(func.max(key))).scalar()
        if sequence is not None and highest is not None:
            dst.execute(
                text("SELECT setval(CAST(:sequence AS regclass), :value)"),
                {"sequence": sequence, "value": int(highest)},
            )


def _money_totals(src: Connection, dst: Connection, model: Table) -> tuple[MoneyTotal, ...]:
    money = money_columns(model)
    if not money:
        return ()
    here, there = _sums(src, model, money), _sums(dst, model, money)
    return tuple(
        MoneyTotal(name, currency, here.get((name, currency), 0), there.get((name, currency), 0))
        for name, currency in sorted(here.keys() | there.keys())
    )


def _sums(connection: Connection, model: Table, money: list[Any]) -> dict[tuple[str, str], int]:
    currency = model.c.get("currency")
    totals = [func.coalesce(func.sum(col), 0) for col in money]
    if currency is None:
        rows = [(None, *connection.execute(select(*totals)).one())]
    else:
        rows = [
            tuple(row) for row in connection.execute(select(currency, *totals).group_by(currency))
        ]
    return {
        (col.name, row[0] or ""): int(value)
        for row in rows
        for col, value in zip(money, row[1:], strict=True)
    }


def _audit_check(src: Connection, dst: Connection) -> AuditCheck:
    with Session(bind=src) as session:
        here = audit.verify(session)
    with Session(bind=dst) as session:
        there = audit.verify(session)
    return AuditCheck(
        source_entries=here.entries,
        target_entries=there.entries,
        source_last_hash=here.last_hash,
        target_last_hash=there.last_hash,
        source_problem=here.first_bad.reason if here.first_bad else "",
        target_problem=there.first_bad.reason if there.first_bad else "",
    )


# --- from the services' side --------------------------------------------------------------------


async def move_database(
    source_url: str,
    target_url: str,
    progress: Progress | None = None,
    *,
    before_verify: Callable[[Connection], None] | None = None,
) -> MoveReport:
    """`move`, for an administrator, on a worker thread; cancelling the awaiting task stops
    the copy (and leaves the target as empty as it was)."""
    access.require(Permission.MOVE_DATABASE)
    progress = progress or Progress()
    work = asyncio.ensure_future(
        asyncio.to_thread(
            move,
            source_url,
            target_url,
            progress,
            actor=access.actor(),
            before_verify=before_verify,
        )
    )
    try:
        return await asyncio.shield(work)
    except asyncio.CancelledError:
        progress.cancel()
        # Wait for the copy's transaction to roll back before saying it stopped.
        await asyncio.gather(work, return_exceptions=True)
        raise


async def check_target(url: str) -> Probe:
    """`probe`, for an administrator, on a worker thread."""
    access.require(Permission.MOVE_DATABASE)
    return await asyncio.to_thread(probe, url)


async def use_shared_database(paths: Paths, url: str, password: str | None) -> Path:
    """Make `url` this computer's database from the next start: the password into the
    credential store, the address without it into `database.json`. The SQLite file stays as
    it is: deleting `database.json` goes back to it."""
    access.require(Permission.MOVE_DATABASE)
    if password:
        await asyncio.to_thread(database_password.remember, url, password)
    return await asyncio.to_thread(write_database_choice, paths.config_dir, url)
