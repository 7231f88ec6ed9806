"""OFX and QFX bank statements, 1.x SGML and 2.x XML: signs, time zones, ids, and files that
try to make an XML parser expand or fetch something."""

from __future__ import annotations

import time
from datetime import UTC, datetime

import pytest

from app.domain.reconciliation import Kind, Side
from app.services.statement_files.ofx import read_ofx_date
from app.services.statement_files.values import ValueProblem
from tests.services.statement_files.statements import DATA, WriteFile, read, reasons, rejection


def ofx2(*transactions: str, curdef: str = "<CURDEF>USD</CURDEF>") -> str:
    return (
        '<?xml version="1.0" encoding="UTF-8"?>\n<?OFX OFXHEADER="200" VERSION="220"?>\n'
        f"<OFX><BANKMSGSRSV1><STMTTRNRS><STMTRS>{curdef}<BANKTRANLIST>"
        + "".join(f"<STMTTRN>{body}</STMTTRN>" for body in transactions)
        + "</BANKTRANLIST></STMTRS></STMTTRNRS></BANKMSGSRSV1></OFX>\n"
    )


def test_sgml_statement_with_unclosed_tags_offsets_and_windows_1252_names() -> None:
    parsed = read(DATA / "bank_statement_v1.ofx", "ofx")

    stripe, check, paypal, fee = parsed.records
    assert stripe.side is Side.BANK
    assert (stripe.kind, stripe.amount_minor, stripe.currency) == (Kind.CREDIT, 9422, "USD")
    assert stripe.external_id == "202603100001"  # the FITID
    assert stripe.at == datetime(2026, 3, 10, 13, 30, tzinfo=UTC)  # 08:30 [-5:EST]
    assert stripe.counterparty == "STRIPE"
    assert stripe.description == "STRIPE TRANSFER ST-PO1PBZ9LKDIWHU7IX0"
    assert (check.kind, check.amount_minor, check.reference) == (Kind.DEBIT, -25000, "1042")
    assert check.counterparty == "Café Müller & Söhne"  # CHARSET:1252 and &amp;
    assert check.at == datetime(2026, 3, 12, 12, 0, tzinfo=UTC)  # a date alone: noon UTC
    assert paypal.amount_minor == 100000  # "1000,00": the specification allows a decimal comma
    assert paypal.reference == "PP-1WD00000000000001"
    assert paypal.at == datetime(2026, 3, 16, 12, 0, tzinfo=UTC)  # midnight, no zone: the day
    assert (fee.amount_minor, fee.description) == (-450, "FEE")  # an empty MEMO
    assert fee.at == datetime(2026, 3, 31, 22, 59, 59, tzinfo=UTC)  # 23:59:59 [+1:CET]
    assert parsed.currency == "USD"
    assert parsed.period == (
        datetime(2026, 3, 1, 12, 0, tzinfo=UTC),
        datetime(2026, 3, 31, 12, 0, tzinfo=UTC),
    )


def test_xml_statement_with_a_transaction_in_another_currency() -> None:
    parsed = read(DATA / "bank_statement_v2.ofx", "ofx")

    fees, strings = parsed.records
    assert (fees.amount_minor, fees.currency) == (123456, "EUR")
    assert fees.counterparty == "Smith & Sons"
    assert fees.at == datetime(2026, 3, 2, 9, 15, tzinfo=UTC)
    assert (strings.kind, strings.amount_minor, strings.currency) == (Kind.DEBIT, -4500, "GBP")
    assert strings.counterparty == "Music Supplies GmbH"  # PAYEE/NAME
    assert strings.at == datetime(2026, 3, 30, 7, 0, tzinfo=UTC)  # [+2:CEST]
    assert parsed.currency == ""  # EUR and GBP lines
    assert parsed.period == (
        datetime(2026, 2, 28, 23, 0, tzinfo=UTC),
        datetime(2026, 3, 31, 21, 59, 59, tzinfo=UTC),
    )


def test_a_yen_statement_has_whole_amounts_and_a_three_decimal_one_three(
    write: WriteFile,
) -> None:
    yen = write(
        "yen.ofx",
        ofx2(
            "<DTPOSTED>20260301</DTPOSTED><TRNAMT>-1500</TRNAMT><FITID>1</FITID>",
            curdef="<CURDEF>JPY</CURDEF>",
        ),
    )
    dinar = write(
        "dinar.ofx",
        ofx2(
            "<DTPOSTED>20260301</DTPOSTED><TRNAMT>12.345</TRNAMT><FITID>1</FITID>",
            curdef="<CURDEF>BHD</CURDEF>",
        ),
    )
    too_fine = write(
        "too_fine.ofx",
        ofx2(
            "<DTPOSTED>20260301</DTPOSTED><TRNAMT>15.5</TRNAMT><FITID>1</FITID>",
            curdef="<CURDEF>JPY</CURDEF>",
        ),
    )

    assert read(yen, "ofx").records[0].amount_minor == -1500
    assert read(dinar, "ofx").records[0].amount_minor == 12345
    assert reasons(rejection(too_fine, "ofx")) == [
        (1, "TRNAMT", "the amount '15.5' has more decimals than JPY has (no decimals)")
    ]


def test_every_bad_transaction_is_named_by_its_position_and_tag(write: WriteFile) -> None:
    path = write(
        "bad.ofx",
        ofx2(
            "<DTPOSTED>20260301</DTPOSTED><TRNAMT>1.00</TRNAMT><FITID>1</FITID>",
            "<DTPOSTED>20261301</DTPOSTED><TRNAMT>1.00</TRNAMT><FITID>2</FITID>",
            "<DTPOSTED>20260301</DTPOSTED><TRNAMT>12..5</TRNAMT><FITID>3</FITID>",
        ),
    )

    error = rejection(path, "ofx")

    assert reasons(error) == [
        (2, "DTPOSTED", "the date '20261301' is not an OFX date (such as 20260131120000)"),
        (3, "TRNAMT", "the amount '12..5' is not a number"),
    ]


def test_a_statement_without_its_currency_needs_the_account_currency(write: WriteFile) -> None:
    path = write("nocur.ofx", ofx2("<DTPOSTED>20260301</DTPOSTED><TRNAMT>1.00</TRNAMT>", curdef=""))

    error = rejection(path, "ofx")
    (record,) = read(path, "ofx", currency="CAD").records

    assert reasons(error) == [(1, "CURDEF", "the statement does not say its currency; choose it")]
    assert record.currency == "CAD"


def test_a_repeated_fitid_keeps_both_lines_and_a_missing_one_is_made_from_the_content(
    write: WriteFile,
) -> None:
    line = "<DTPOSTED>20260301</DTPOSTED><TRNAMT>-3.20</TRNAMT><NAME>COFFEE</NAME>"
    path = write("dup.ofx", ofx2(line + "<FITID>7</FITID>", line + "<FITID>7</FITID>", line, line))

    ids = [record.external_id for record in read(path, "ofx").records]

    assert ids[:2] == ["7", "7#2"]
    assert (ids[2][-2:], ids[3][-2:]) == ("#1", "#2")
    assert ids[2][:-2] == ids[3][:-2]


def test_a_card_statement_is_read_too(write: WriteFile) -> None:
    path = write(
        "card.qfx",
        "OFXHEADER:100\nDATA:OFXSGML\nVERSION:102\n\n<OFX><CREDITCARDMSGSRSV1><CCSTMTTRNRS>"
        "<CCSTMTRS><CURDEF>USD<BANKTRANLIST><STMTTRN><TRNTYPE>DEBIT<DTPOSTED>20260305"
        "<TRNAMT>-19.99<FITID>C1<NAME>SHEET MUSIC</STMTTRN></BANKTRANLIST></CCSTMTRS>"
        "</CCSTMTTRNRS></CREDITCARDMSGSRSV1></OFX>",
    )

    (record,) = read(path, "ofx").records

    assert (record.amount_minor, record.counterparty) == (-1999, "SHEET MUSIC")


def test_an_entity_bomb_or_external_entity_is_refused_without_expanding_anything() -> None:
    started = time.monotonic()
    error = rejection(DATA / "ofx_entity_bomb.ofx", "ofx")

    assert time.monotonic() - started < 1
    assert "for safety" in error.errors[0].reason


def test_a_file_that_is_not_ofx_or_holds_no_statement_is_refused(write: WriteFile) -> None:
    not_ofx = write("notes.ofx", "just some text\n")
    signon_only = write(
        "error.ofx",
        "<OFX><SIGNONMSGSRSV1><SONRS><STATUS><CODE>15500<SEVERITY>ERROR"
        "<MESSAGE>Signon invalid</STATUS></SONRS></SIGNONMSGSRSV1></OFX>",
    )

    assert "no <OFX> element" in rejection(not_ofx, "ofx").errors[0].reason
    assert rejection(signon_only, "ofx").errors[0].reason == (
        "the file holds no bank or card statement (Signon invalid)"
    )


@pytest.mark.parametrize(
    ("written", "expected"),
    [
        ("20260131", datetime(2026, 1, 31, 12, 0, tzinfo=UTC)),
        ("20260131093000", datetime(2026, 1, 31, 9, 30, tzinfo=UTC)),  # GMT by the spec
        ("20260131093000.123[-8:PST]", datetime(2026, 1, 31, 17, 30, tzinfo=UTC)),
        ("20260131093000[+5.30:IST]", datetime(2026, 1, 31, 4, 0, tzinfo=UTC)),
        ("20260131093000[-3.5:NST]", datetime(2026, 1, 31, 13, 0, tzinfo=UTC)),
        ("20260131000000[0:GMT]", datetime(2026, 1, 31, 0, 0, tzinfo=UTC)),
        ("20260131093000[-7]", datetime(2026, 1, 31, 16, 30, tzinfo=UTC)),
    ],
)
def test_ofx_dates_and_their_time_zone_suffixes(written: str, expected: datetime) -> None:
    assert read_ofx_date(written) == expected


def test_an_impossible_offset_is_not_a_date() -> None:
    with pytest.raises(ValueProblem):
        read_ofx_date("20260131093000[+25:XX]")
