"""CAMT.053 bank statements: one record per booked entry, signs from CdtDbtInd, the entry's
references joined, and XML that tries to expand or fetch entities refused."""

from __future__ import annotations

import time
from datetime import UTC, datetime

from app.domain.reconciliation import Kind, Side
from tests.services.statement_files.statements import DATA, WriteFile, read, reasons, rejection


def camt(entries: str, version: str = "02") -> str:
    return (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        f'<Document xmlns="urn:iso:std:iso:20022:tech:xsd:camt.053.001.{version}">'
        "<BkToCstmrStmt><GrpHdr><MsgId>M</MsgId></GrpHdr><Stmt><Acct><Ccy>EUR</Ccy></Acct>"
        f"{entries}</Stmt></BkToCstmrStmt></Document>\n"
    )


def entry(amount: str = '<Amt Ccy="EUR">10.00</Amt>', direction: str = "CRDT") -> str:
    return (
        f"<Ntry>{amount}<CdtDbtInd>{direction}</CdtDbtInd><Sts>BOOK</Sts>"
        "<BookgDt><Dt>2026-03-10</Dt></BookgDt></Ntry>"
    )


def test_version_02_entries_become_one_record_each() -> None:
    parsed = read(DATA / "camt053_v02.xml", "camt053")

    stripe, catering, *_ = parsed.records
    assert len(parsed.records) == 5
    assert stripe.side is Side.BANK
    assert (stripe.kind, stripe.amount_minor, stripe.currency) == (Kind.CREDIT, 9422, "EUR")
    assert stripe.external_id == "2026031000001"  # AcctSvcrRef
    assert stripe.reference == "PO1PBZ9LKDIWHU7IX0"  # EndToEndId
    assert stripe.description == "STRIPE PAYOUT po_1PbZ9LkdIwHu7ix0"
    assert stripe.counterparty == "Stripe Payments Europe Ltd"  # the debtor of a credit
    assert stripe.at == datetime(2026, 3, 10, 12, 0, tzinfo=UTC)
    assert (catering.kind, catering.amount_minor) == (Kind.DEBIT, -25000)
    assert catering.reference == ""  # NOTPROVIDED is no reference
    assert catering.counterparty == "School Catering Ltd"  # the creditor of a debit
    assert catering.description == "Invoice 778 March lunches"
    assert parsed.currency == "EUR"
    assert parsed.period == (
        datetime(2026, 2, 28, 23, 0, tzinfo=UTC),
        datetime(2026, 3, 31, 21, 59, 59, tzinfo=UTC),
    )


def test_a_batch_entry_is_one_record_with_the_references_of_its_transactions() -> None:
    batch = read(DATA / "camt053_v02.xml", "camt053").records[2]

    assert batch.amount_minor == 30000
    assert batch.reference == "INV-2041 INV-2042"
    assert batch.counterparty == "Ada Lovelace, Grace Hopper"
    assert batch.description == "Piano term 2 Violin term 2"


def test_pending_entries_are_left_out_and_identical_unreferenced_ones_stay_two() -> None:
    records = read(DATA / "camt053_v02.xml", "camt053").records

    assert 7500 not in {record.amount_minor for record in records}  # the PDNG entry
    fee, same_fee = records[3], records[4]
    assert (fee.amount_minor, fee.description) == (-250, "Account fee")
    assert fee.external_id.startswith("sha256:")  # AcctSvcrRef "NONREF" is not an id
    assert (fee.external_id[-2:], same_fee.external_id[-2:]) == ("#1", "#2")


def test_version_08_with_status_codes_party_names_and_three_decimal_dinars() -> None:
    parsed = read(DATA / "camt053_v08.xml", "camt053")

    fees, charge = parsed.records
    assert (fees.amount_minor, fees.currency) == (12345, "KWD")
    assert fees.external_id == "NR-0001"  # NtryRef when there is no AcctSvcrRef
    assert fees.reference == "E2E-KW-1 RF18539007547034"  # with the creditor reference
    assert fees.counterparty == "Fatima Al-Sabah"  # Dbtr/Pty/Nm
    assert fees.at == datetime(2026, 3, 10, 5, 30, tzinfo=UTC)  # 08:30 at UTC+3
    assert (charge.kind, charge.amount_minor) == (Kind.DEBIT, -750)
    assert charge.external_id == "TX-CHG-03"  # the single transaction's TxId
    assert charge.at == datetime(2026, 3, 31, 12, 0, tzinfo=UTC)  # no offset: only its day
    assert parsed.currency == "KWD"


def test_later_versions_are_read_alike(write: WriteFile) -> None:
    for version in ("04", "06", "10", "13"):
        path = write(f"v{version}.xml", camt(entry(), version))

        (record,) = read(path, "camt053").records

        assert record.amount_minor == 1000


def test_bad_entries_are_named_by_position_and_element(write: WriteFile) -> None:
    path = write(
        "bad.xml",
        camt(
            entry()
            + entry('<Amt Ccy="EUR">12.3x</Amt>')
            + entry('<Amt Ccy="EUR">-5.00</Amt>')
            + entry('<Amt Ccy="EUR">1.001</Amt>')
            + entry(direction="BOTH")
            + entry('<Amt Ccy="ABC">1.00</Amt>')
            + entry('<Amt Ccy="EUR">100000000000000.00</Amt>')
        ),
    )

    error = rejection(path, "camt053")

    assert reasons(error) == [
        (2, "Amt", "the amount '12.3x' is not a number"),
        (
            3,
            "Amt",
            "the amount '-5.00' is negative; a CAMT amount is unsigned and CdtDbtInd gives its "
            "direction",
        ),
        (4, "Amt", "the amount '1.001' has more decimals than EUR has (2 decimals)"),
        (5, "CdtDbtInd", "'BOTH' is neither CRDT nor DBIT"),
        (
            6,
            "Amt/@Ccy",
            "the currency 'ABC' is not an ISO 4217 code Switchboard knows (such as USD, EUR, GBP)",
        ),
        (
            7,
            "Amt",
            "the amount '100000000000000.00' is too large to be real; check the zeros",
        ),
    ]


def test_an_entry_without_a_date_is_an_error(write: WriteFile) -> None:
    path = write(
        "nodate.xml",
        camt('<Ntry><Amt Ccy="EUR">1.00</Amt><CdtDbtInd>CRDT</CdtDbtInd><Sts>BOOK</Sts></Ntry>'),
    )

    assert reasons(rejection(path, "camt053")) == [
        (1, "BookgDt", "the entry has no booking or value date")
    ]


def test_an_entity_bomb_is_refused_without_being_expanded() -> None:
    started = time.monotonic()
    error = rejection(DATA / "camt053_entity_bomb.xml", "camt053")

    assert time.monotonic() - started < 1
    assert "for safety" in error.errors[0].reason


def test_an_external_entity_is_refused_and_nothing_is_fetched() -> None:
    error = rejection(DATA / "camt053_external_entity.xml", "camt053")

    assert "for safety" in error.errors[0].reason
    assert "root:" not in str(error)


def test_another_camt_message_is_not_taken_for_a_statement(write: WriteFile) -> None:
    path = write(
        "report.xml",
        '<Document xmlns="urn:iso:std:iso:20022:tech:xsd:camt.052.001.08"><BkToCstmrAcctRpt/>'
        "</Document>",
    )

    assert rejection(path, "camt053").errors[0].reason == (
        "this is a camt.052 message, not a camt.053 bank statement; download the statement"
    )


def test_xml_that_is_not_well_formed_says_on_which_line(write: WriteFile) -> None:
    path = write("broken.xml", camt(entry()).replace("</Stmt>", "</Stmnt>"))

    error = rejection(path, "camt053")

    assert error.errors[0].reason == (
        "the file is not well-formed XML (line 2); download the statement again"
    )
