"""Reconciliation: where records come from (a gateway's API, a kind of file), the records
themselves, each run with its inputs and figures, the latest run's statuses and links, and the
decisions people made.

Ledger records are not copied here: a run reads payments and refunds where they live. In a run
every record has one number: a stored record its row id, a payment `-2·id`, a refund
`-(2·id + 1)`, so decisions about ledger records survive every run.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import BigInteger, ForeignKey, Index, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from app.store.base import Base, BigId, utcnow

Minor = BigInteger


class ReconSourceRow(Base):
    """A place records come from: a connection's API, or a kind of file someone imports."""

    __tablename__ = "recon_sources"
    __table_args__ = (UniqueConstraint("key"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    key: Mapped[str] = mapped_column(String(120))  # "connection:3", "file:Main bank account"
    label: Mapped[str] = mapped_column(String(120))
    side: Mapped[str] = mapped_column(String(8))  # gateway | bank
    connection_id: Mapped[int | None] = mapped_column(
        ForeignKey("provider_connections.id", ondelete="SET NULL")
    )
    format: Mapped[str] = mapped_column(String(32), default="")  # the last file format used
    mapping: Mapped[dict[str, Any]] = mapped_column(default=dict)  # remembered CSV columns
    pulled_until: Mapped[datetime | None]  # the API has been read up to here
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class ReconImportRow(Base):
    """One file imported (or one pull from an API), and what it added."""

    __tablename__ = "recon_imports"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    source_id: Mapped[int] = mapped_column(ForeignKey("recon_sources.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(255))  # the file's name, or "API"
    digest: Mapped[str] = mapped_column(String(64), default="")  # sha256 of a file
    format: Mapped[str] = mapped_column(String(32), default="")
    rows: Mapped[int] = mapped_column(default=0)
    added: Mapped[int] = mapped_column(default=0)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class ReconRecordRow(Base):
    """A gateway's or the bank's record, as every source is brought to (see `Record`)."""

    __tablename__ = "recon_records"
    __table_args__ = (
        UniqueConstraint("source_id", "external_id"),
        Index("ix_recon_records_at", "at"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    source_id: Mapped[int] = mapped_column(ForeignKey("recon_sources.id", ondelete="CASCADE"))
    import_id: Mapped[int | None] = mapped_column(
        ForeignKey("recon_imports.id", ondelete="SET NULL")
    )
    side: Mapped[str] = mapped_column(String(8))
    external_id: Mapped[str] = mapped_column(String(200))
    kind: Mapped[str] = mapped_column(String(16))
    amount_minor: Mapped[int] = mapped_column(Minor)
    currency: Mapped[str] = mapped_column(String(3))
    fee_minor: Mapped[int] = mapped_column(Minor, default=0)
    at: Mapped[datetime]
    reference: Mapped[str] = mapped_column(String(200), default="")
    payout: Mapped[str] = mapped_column(String(200), default="")
    description: Mapped[str] = mapped_column(Text, default="")
    counterparty: Mapped[str] = mapped_column(String(200), default="")
    # A part of a record someone split (the "split" decision that made it); while that
    # decision stands the parts are matched instead of the whole.
    split_decision: Mapped[int | None] = mapped_column(BigInteger, index=True)


class ReconRunRow(Base):
    """One reconciliation run: what it read, when, under which rules, and what it found."""

    __tablename__ = "recon_runs"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    trigger: Mapped[str] = mapped_column(String(16))  # manual | scheduled | command
    status: Mapped[str] = mapped_column(String(16), default="running")  # running | done | failed
    as_of: Mapped[datetime]
    rules: Mapped[dict[str, Any]] = mapped_column(default=dict)
    inputs: Mapped[dict[str, Any]] = mapped_column(default=dict)  # per source: records, latest
    counts: Mapped[dict[str, Any]] = mapped_column(default=dict)  # per status and side: n, sum
    message: Mapped[str] = mapped_column(Text, default="")
    seconds: Mapped[float | None]
    started_at: Mapped[datetime] = mapped_column(default=utcnow)
    finished_at: Mapped[datetime | None]


class ReconResultRow(Base):
    """A record's status in the latest run (earlier runs keep only their figures)."""

    __tablename__ = "recon_results"
    __table_args__ = (Index("ix_recon_results_status", "status"),)

    record: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    run_id: Mapped[int] = mapped_column(ForeignKey("recon_runs.id", ondelete="CASCADE"))
    side: Mapped[str] = mapped_column(String(8))
    status: Mapped[str] = mapped_column(String(20))
    how: Mapped[str] = mapped_column(String(8), default="auto")
    strategy: Mapped[str] = mapped_column(String(16), default="")
    diff_minor: Mapped[int] = mapped_column(Minor, default=0)
    fee_minor: Mapped[int | None] = mapped_column(Minor)
    stage: Mapped[int] = mapped_column(default=0)
    source: Mapped[str] = mapped_column(String(120), default="")
    amount_minor: Mapped[int] = mapped_column(Minor, default=0)
    currency: Mapped[str] = mapped_column(String(3), default="")
    at: Mapped[datetime | None]


class ReconLinkRow(Base):
    """A link the latest run made between two records (upstream → downstream)."""

    __tablename__ = "recon_links"
    __table_args__ = (Index("ix_recon_links_down", "down"),)

    up: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    down: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    strategy: Mapped[str] = mapped_column(String(16), default="")
    how: Mapped[str] = mapped_column(String(8), default="auto")


class ReconDecisionRow(Base):
    """A person's decision, with its reason: records matched by hand, unmatched, written off,
    or one record split into parts (`records` holds the whole). Undoing one keeps the row (who
    undid it, when) so the trail stays whole."""

    __tablename__ = "recon_decisions"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    action: Mapped[str] = mapped_column(String(16))  # match | unmatch | write_off | split
    records: Mapped[list[int]] = mapped_column(default=list)
    reason: Mapped[str] = mapped_column(Text)
    made_by: Mapped[str] = mapped_column(String(120), default="")
    made_at: Mapped[datetime] = mapped_column(default=utcnow)
    undone_by: Mapped[str] = mapped_column(String(120), default="")
    undone_at: Mapped[datetime | None]
