"""What every format promises: a format list to choose from, detection from content, ids that
are unique and survive a second reading, aware times, and whole-file refusals in plain words."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from app.domain.errors import SwitchboardError
from app.services.statement_files import (
    FORMATS,
    ColumnMapping,
    detect_format,
    read_statement,
)
from tests.services.statement_files.statements import DATA, WriteFile, read, reasons, rejection

LATIN1 = ColumnMapping(
    date="Buchungstag",
    amount="Betrag",
    currency="Währung",
    description="Verwendungszweck",
    counterparty="Empfänger",
    decimal_comma=True,
)

# Every sample that reads, with the format it is and what it needs to be read.
SAMPLES: list[tuple[str, str, dict[str, Any]]] = [
    ("stripe_balance_change_itemized.csv", "stripe-csv", {}),
    ("stripe_payouts_itemized.csv", "stripe-csv", {}),
    ("stripe_dashboard_export.csv", "stripe-csv", {}),
    ("paypal_activity_us.csv", "paypal-csv", {}),
    ("paypal_activity_eu.csv", "paypal-csv", {}),
    ("paypal_settlement_STL.csv", "paypal-csv", {}),
    ("bank_statement_uk.csv", "bank-csv", {"currency": "GBP"}),
    ("bank_statement_latin1.csv", "bank-csv", {"mapping": LATIN1}),
    ("bank_statement_v1.ofx", "ofx", {}),
    ("bank_statement_v2.ofx", "ofx", {}),
    ("camt053_v02.xml", "camt053", {}),
    ("camt053_v08.xml", "camt053", {}),
]


def test_formats_are_keys_with_plain_labels() -> None:
    assert [key for key, _ in FORMATS] == [
        "stripe-csv",
        "paypal-csv",
        "bank-csv",
        "ofx",
        "camt053",
        "generic-csv",
    ]
    assert all(label and label[0].isupper() for _, label in FORMATS)


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("stripe_balance_change_itemized.csv", "stripe-csv"),
        ("stripe_payouts_itemized.csv", "stripe-csv"),
        ("stripe_dashboard_export.csv", "stripe-csv"),
        ("paypal_activity_us.csv", "paypal-csv"),
        ("paypal_activity_eu.csv", "paypal-csv"),
        ("paypal_settlement_STL.csv", "paypal-csv"),
        ("bank_statement_v1.ofx", "ofx"),
        ("bank_statement_v2.ofx", "ofx"),
        ("camt053_v02.xml", "camt053"),
        ("camt053_v08.xml", "camt053"),
        ("bank_statement_uk.csv", None),  # any bank's CSV: the office chooses
        ("bank_statement_latin1.csv", None),
    ],
)
def test_detect_format_reads_the_content_not_the_name(name: str, expected: str | None) -> None:
    assert detect_format(DATA / name) == expected


def test_detect_format_of_a_missing_or_binary_file_is_none(tmp_path: Path) -> None:
    workbook = tmp_path / "statement.csv"
    workbook.write_bytes(b"PK\x03\x04" + bytes(100))

    assert detect_format(tmp_path / "gone.csv") is None
    assert detect_format(workbook) is None


@pytest.mark.parametrize(("name", "fmt", "options"), SAMPLES)
def test_reading_a_file_twice_gives_the_same_records_and_ids(
    name: str, fmt: str, options: dict[str, Any]
) -> None:
    first = read(DATA / name, fmt, **options)
    second = read(DATA / name, fmt, **options)

    assert first.records
    assert first == second


@pytest.mark.parametrize(("name", "fmt", "options"), SAMPLES)
def test_ids_are_unique_and_times_are_aware(name: str, fmt: str, options: dict[str, Any]) -> None:
    parsed = read(DATA / name, fmt, **options)

    ids = [record.external_id for record in parsed.records]
    assert len(ids) == len(set(ids))
    assert all(record.at.utcoffset() is not None for record in parsed.records)
    assert all(record.source == "file:test" for record in parsed.records)
    assert parsed.format == fmt


@pytest.mark.parametrize("fmt", [key for key, _ in FORMATS])
@pytest.mark.parametrize("content", [b"", b"   \r\n\r\n", b"\xef\xbb\xbf"])
def test_an_empty_file_is_refused_in_plain_words(
    write: WriteFile, fmt: str, content: bytes
) -> None:
    path = write("statement.dat", content)

    error = rejection(path, fmt, currency="EUR")

    assert reasons(error) == [(1, "", "the file is empty; download the statement again")]
    assert str(error).startswith("statement.dat was not imported, nothing from it was kept")


def test_a_spreadsheet_workbook_is_refused_with_what_to_do(write: WriteFile) -> None:
    path = write("statement.csv", b"PK\x03\x04" + bytes(200))

    error = rejection(path, "bank-csv", currency="EUR")

    assert "save it as CSV" in error.errors[0].reason


def test_a_missing_file_and_an_unknown_format_are_plain_errors(tmp_path: Path) -> None:
    error = rejection(tmp_path / "gone.csv", "bank-csv")

    assert error.errors[0].reason == "the file is not there any more; choose it again"
    with pytest.raises(SwitchboardError, match="'xlsx' is not a statement format"):
        read_statement(DATA / "bank_statement_uk.csv", "xlsx", source="file:test")


def test_every_bad_row_is_counted_but_only_the_first_fifty_are_listed(write: WriteFile) -> None:
    rows = "".join(f"2026-03-01,{n}.0x\n" for n in range(120))
    path = write("bank.csv", "Date,Amount\n" + rows)

    error = rejection(path, "bank-csv", currency="EUR")

    assert len(error.errors) == 50
    assert error.more == 70
    assert [row.row for row in error.errors[:3]] == [2, 3, 4]
    assert "(and 117 more)" in str(error)


def test_a_huge_amount_is_refused_in_every_format(write: WriteFile) -> None:
    huge = "123456789012345678.00"
    bank = write("bank.csv", f"Date,Amount\n2026-03-01,{huge}\n")
    stripe = write(
        "stripe.csv",
        "balance_transaction_id,created_utc,currency,gross,fee,net,reporting_category\n"
        f"txn_1,2026-03-01 00:00:00,usd,{huge},0,{huge},charge\n",
    )
    ofx = write(
        "huge.ofx",
        "<OFX><STMTRS><CURDEF>USD<BANKTRANLIST><STMTTRN><DTPOSTED>20260301"
        f"<TRNAMT>{huge}<FITID>1</STMTTRN></BANKTRANLIST></STMTRS></OFX>",
    )
    # a thousand digits is not a number either: it is refused before any arithmetic
    endless = write("endless.csv", "Date,Amount\n2026-03-01," + "9" * 1000 + "\n")

    for path, fmt in ((bank, "bank-csv"), (stripe, "stripe-csv"), (ofx, "ofx")):
        error = rejection(path, fmt, currency="USD")
        assert "too large to be real" in error.errors[0].reason
    assert "is not a number" in rejection(endless, "bank-csv", currency="USD").errors[0].reason


def test_a_file_too_large_to_be_a_statement_is_refused_before_it_is_read(
    write: WriteFile, monkeypatch: pytest.MonkeyPatch
) -> None:
    from app.services.statement_files import text

    monkeypatch.setattr(text, "MAX_BYTES", 1024)
    path = write("big.csv", "Date,Amount\n" + "2026-03-01,1.00\n" * 200)

    error = rejection(path, "bank-csv", currency="USD")

    assert "download a shorter period" in error.errors[0].reason


def test_a_broken_csv_quote_is_reported_on_its_row(write: WriteFile) -> None:
    path = write("bank.csv", 'Date,Amount\n2026-03-01,1.00\n2026-03-02,"2.00\n')

    error = rejection(path, "bank-csv", currency="USD")

    assert error.errors[0].row == 3
    assert "look for a stray quote or a missing comma" in error.errors[0].reason
