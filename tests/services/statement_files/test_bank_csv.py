"""Bank statements and other CSVs read through a column mapping: signs, dates that must not be
guessed, encodings, and a mapping the app can remember."""

from __future__ import annotations

import codecs
from datetime import UTC, datetime

import pytest

from app.domain.reconciliation import Kind, Side
from app.services.statement_files import ColumnMapping, DateOrder, MappingError, Sign
from app.services.statement_files.mapping import guess_mapping
from tests.services.statement_files.statements import DATA, WriteFile, read, reasons, rejection

LATIN1_MAPPING = ColumnMapping(
    date="Buchungstag",
    amount="Betrag",
    currency="Währung",
    description="Verwendungszweck",
    counterparty="Empfänger",
    decimal_comma=True,
)


def test_uk_statement_with_paid_in_and_paid_out_columns_is_read_with_guessed_columns() -> None:
    parsed = read(DATA / "bank_statement_uk.csv", "bank-csv", currency="GBP")

    stripe, catering, coffee, _, paypal = parsed.records
    assert stripe.side is Side.BANK
    assert (stripe.kind, stripe.amount_minor, stripe.currency) == (Kind.CREDIT, 9422, "GBP")
    assert stripe.description == "STRIPE PAYMENTS UK PO_1PBZ9LKDIWHU7IX0"
    assert (catering.kind, catering.amount_minor) == (Kind.DEBIT, -25000)
    assert (coffee.kind, coffee.amount_minor) == (Kind.DEBIT, -320)
    assert paypal.amount_minor == 100000  # "1,000.00"
    # dates are day first (15/03/2026 settles it); a day is placed at noon UTC
    assert catering.at == datetime(2026, 3, 3, 12, 0, tzinfo=UTC)
    assert paypal.at == datetime(2026, 3, 15, 12, 0, tzinfo=UTC)
    assert parsed.currency == "GBP"


def test_two_identical_lines_stay_two_records_with_ids_that_survive_a_second_reading() -> None:
    first = read(DATA / "bank_statement_uk.csv", "bank-csv", currency="GBP")
    again = read(DATA / "bank_statement_uk.csv", "bank-csv", currency="GBP")

    coffee, second_coffee = first.records[2], first.records[3]
    assert coffee.external_id != second_coffee.external_id
    assert coffee.external_id.startswith("sha256:")
    assert coffee.external_id.endswith("#1")
    assert second_coffee.external_id.endswith("#2")
    assert [r.external_id for r in first.records] == [r.external_id for r in again.records]


def test_a_line_keeps_its_id_when_the_statement_is_downloaded_again_for_a_longer_period(
    write: WriteFile,
) -> None:
    header = "Date,Description,Amount\n"
    march = "2026-03-03,CARD PAYMENT COFFEE,-3.20\n"
    short = write("short.csv", header + march)
    longer = write("longer.csv", header + "2026-02-27,RENT,-900.00\n" + march)

    (coffee,) = read(short, "bank-csv", currency="EUR").records
    ids = {record.external_id for record in read(longer, "bank-csv", currency="EUR").records}

    assert coffee.external_id in ids


def test_latin1_file_with_semicolons_and_decimal_commas() -> None:
    parsed = read(DATA / "bank_statement_latin1.csv", "bank-csv", mapping=LATIN1_MAPPING)

    fees, charge = parsed.records
    assert (fees.amount_minor, fees.currency) == (123456, "EUR")
    assert fees.description == "Schulgeld März"
    assert fees.counterparty == "Müller, Jürgen"
    assert (charge.kind, charge.amount_minor) == (Kind.DEBIT, -490)
    assert charge.at == datetime(2026, 1, 31, 12, 0, tzinfo=UTC)  # dotted dates are day first


def test_utf8_with_the_bom_excel_writes_reads_like_plain_utf8(write: WriteFile) -> None:
    plain = (DATA / "bank_statement_uk.csv").read_bytes()
    path = write("bom.csv", codecs.BOM_UTF8 + plain)

    with_bom = read(path, "bank-csv", currency="GBP")
    without = read(DATA / "bank_statement_uk.csv", "bank-csv", currency="GBP")

    assert with_bom.records == without.records


def test_excel_unicode_text_is_utf16_with_tabs(write: WriteFile) -> None:
    text = "Date\tDescription\tAmount\r\n2026-03-03\tCafé\t-3.20\r\n"
    path = write("unicode.txt", text.encode("utf-16"))

    (record,) = read(path, "bank-csv", currency="EUR").records

    assert (record.description, record.amount_minor) == ("Café", -320)


def test_dates_that_no_row_settles_are_an_error_unless_the_format_is_chosen(
    write: WriteFile,
) -> None:
    path = write("bank.csv", "Date,Description,Amount\n03/04/2026,Rent,-900.00\n")

    error = rejection(path, "bank-csv", currency="EUR")
    day_first = ColumnMapping(
        date="Date", amount="Amount", description="Description", date_order=DateOrder.DMY
    )
    (record,) = read(path, "bank-csv", currency="EUR", mapping=day_first).records

    assert reasons(error) == [
        (
            2,
            "Date",
            "the date '03/04/2026' could be day/month/year or month/day/year; choose the date "
            "format for this file",
        )
    ]
    assert record.at == datetime(2026, 4, 3, 12, 0, tzinfo=UTC)


def test_dates_written_both_ways_in_one_file_are_refused(write: WriteFile) -> None:
    path = write(
        "bank.csv", "Date,Description,Amount\n25/03/2026,Rent,-900.00\n03/25/2026,Fee,-1.00\n"
    )

    error = rejection(path, "bank-csv", currency="EUR")

    assert error.errors[0].reason.startswith(
        "the dates '25/03/2026' and '03/25/2026' are written in different orders"
    )


def test_bad_cells_are_reported_in_plain_words(write: WriteFile) -> None:
    mapping = ColumnMapping(date="Date", amount="Amount", date_order=DateOrder.DMY)
    path = write(
        "bank.csv",
        'Date,Amount\n13/13/2026,10.00\n01/03/2026,"12,3x"\n02/03/2026,\n'
        '03/03/2026,"1,23"\n04/03/2026,99999999999999999.00\n',
    )

    error = rejection(path, "bank-csv", currency="USD", mapping=mapping)

    assert reasons(error) == [
        (2, "Date", "the date '13/13/2026' is not a date in the form day/month/year"),
        (3, "Amount", "the amount '12,3x' is not a number"),
        (4, "Amount", "the amount is empty"),
        (5, "Amount", "the amount '1,23' is not a number"),
        (6, "Amount", "the amount '99999999999999999.00' is too large to be real; check the zeros"),
    ]


def test_month_first_format_named_in_its_message(write: WriteFile) -> None:
    mapping = ColumnMapping(date="Date", amount="Amount", date_order=DateOrder.MDY)
    path = write("bank.csv", "Date,Amount\n31/01/2026,10.00\n")

    error = rejection(path, "bank-csv", currency="USD", mapping=mapping)

    assert (
        error.errors[0].reason == "the date '31/01/2026' is not a date in the form month/day/year"
    )


def test_without_a_currency_column_the_account_currency_is_needed(write: WriteFile) -> None:
    path = write("bank.csv", "Date,Amount\n2026-03-01,10.00\n")

    error = rejection(path, "bank-csv")

    assert error.errors[0].reason == (
        "the file has no currency column; choose the currency of this account"
    )


def test_a_currency_column_gives_each_line_its_currency(write: WriteFile) -> None:
    path = write("bank.csv", "Date,Amount,Currency\n2026-03-01,10.00,usd\n2026-03-01,5,JPY\n")

    dollars, yen = read(path, "bank-csv").records

    assert (dollars.currency, dollars.amount_minor) == ("USD", 1000)
    assert (yen.currency, yen.amount_minor) == ("JPY", 5)


def test_an_amount_with_a_column_saying_credit_or_debit(write: WriteFile) -> None:
    mapping = ColumnMapping(date="Date", amount="Amount", direction="Dr/Cr", reference="Ref")
    path = write(
        "bank.csv",
        "Date,Amount,Dr/Cr,Ref\n2026-03-01,10.00,CR,R1\n2026-03-01,4.00,DR,R2\n"
        "2026-03-01,1.00,?,R3\n",
    )

    error = rejection(path, "bank-csv", currency="EUR", mapping=mapping)
    path.write_text(path.read_text().replace(",?,", ",D,"))
    records = read(path, "bank-csv", currency="EUR", mapping=mapping).records

    assert reasons(error) == [(4, "Dr/Cr", "'?' does not say credit or debit (write CR or DR)")]
    assert [(r.amount_minor, r.reference) for r in records] == [
        (1000, "R1"),
        (-400, "R2"),
        (-100, "R3"),
    ]


def test_money_out_written_as_positive_is_turned_round(write: WriteFile) -> None:
    mapping = ColumnMapping(date="Date", amount="Amount", sign=Sign.OUT_POSITIVE)
    path = write("card.csv", "Date,Amount\n2026-03-01,25.00\n2026-03-02,(5.00)\n")

    spent, refunded = read(path, "bank-csv", currency="USD", mapping=mapping).records

    assert (spent.kind, spent.amount_minor) == (Kind.DEBIT, -2500)
    assert (refunded.kind, refunded.amount_minor) == (Kind.CREDIT, 500)


def test_a_row_with_money_both_in_and_out_is_an_error(write: WriteFile) -> None:
    path = write("bank.csv", "Date,Paid in,Paid out\n2026-03-01,10.00,2.00\n2026-03-01,,\n")

    error = rejection(path, "bank-csv", currency="GBP")

    assert reasons(error) == [
        (2, "Paid out", "the row has an amount both in and out; only one can be filled"),
        (3, "Paid in", "the row has no amount in or out"),
    ]


def test_a_column_the_file_does_not_have_is_named(write: WriteFile) -> None:
    mapping = ColumnMapping(date="Date", amount="Betrag")
    path = write("bank.csv", "Date,Amount\n2026-03-01,10.00\n")

    error = rejection(path, "bank-csv", currency="EUR", mapping=mapping)

    assert reasons(error) == [
        (
            1,
            "Betrag",
            "the file has no column 'Betrag' (chosen for the amount); choose the columns again",
        )
    ]


def test_columns_that_cannot_be_guessed_must_be_chosen(write: WriteFile) -> None:
    path = write("export.csv", "When,How much\n2026-03-01,10.00\n")

    error = rejection(path, "generic-csv", currency="EUR")

    assert "choose the columns for this file" in error.errors[0].reason


def test_a_time_with_no_zone_counts_only_its_day_unless_the_zone_is_chosen(
    write: WriteFile,
) -> None:
    path = write(
        "bank.csv", "Date,Amount\n2026-07-01 23:30,10.00\n2026-07-01T23:30:00+02:00,10.00\n"
    )
    london = ColumnMapping(date="Date", amount="Amount", time_zone="Europe/London")

    day_only, with_offset = read(path, "bank-csv", currency="EUR").records
    in_london, _ = read(path, "bank-csv", currency="EUR", mapping=london).records

    assert day_only.at == datetime(2026, 7, 1, 12, 0, tzinfo=UTC)
    assert with_offset.at == datetime(2026, 7, 1, 21, 30, tzinfo=UTC)
    assert in_london.at == datetime(2026, 7, 1, 22, 30, tzinfo=UTC)  # BST is UTC+1


def test_month_names_are_read_without_asking_the_order(write: WriteFile) -> None:
    path = write("bank.csv", 'Date,Amount\n3 Mar 2026,1.00\n"Mar 4, 2026",1.00\n05-Mar-26,1.00\n')

    days = [record.at.day for record in read(path, "bank-csv", currency="EUR").records]

    assert days == [3, 4, 5]


def test_other_csv_on_the_gateway_side_takes_kinds_from_a_type_column(write: WriteFile) -> None:
    mapping = ColumnMapping(
        date="Date",
        amount="Amount",
        fee="Fee",
        type="Type",
        id="ID",
        reference="Ref",
        side=Side.GATEWAY,
    )
    path = write(
        "gateway.csv",
        "Date,Type,Amount,Fee,ID,Ref\n"
        "2026-03-01,Charge,50.00,1.75,t1,c1\n"
        "2026-03-02,Refund,-10.00,,t2,r1\n"
        "2026-03-03,Payout,-38.25,,t3,p1\n"
        "2026-03-04,Monthly fee,-5.00,,t4,\n",
    )

    sale, refund, payout, fee = read(path, "generic-csv", currency="EUR", mapping=mapping).records

    assert sale.side is Side.GATEWAY
    assert (sale.kind, sale.amount_minor, sale.fee_minor, sale.external_id) == (
        Kind.PAYMENT,
        5000,
        175,
        "t1",
    )
    assert (refund.kind, refund.amount_minor) == (Kind.REFUND, -1000)
    assert (payout.kind, payout.amount_minor) == (Kind.PAYOUT, 3825)
    assert (fee.kind, fee.amount_minor) == (Kind.FEE, -500)


def test_bank_csv_is_always_the_bank_side(write: WriteFile) -> None:
    mapping = ColumnMapping(date="Date", amount="Amount", side=Side.GATEWAY)
    path = write("bank.csv", "Date,Amount\n2026-03-01,10.00\n")

    (record,) = read(path, "bank-csv", currency="EUR", mapping=mapping).records

    assert (record.side, record.kind) == (Side.BANK, Kind.CREDIT)


def test_a_repeated_bank_id_keeps_both_lines(write: WriteFile) -> None:
    mapping = ColumnMapping(date="Date", amount="Amount", id="Id")
    path = write("bank.csv", "Date,Amount,Id\n2026-03-01,10.00,A1\n2026-03-01,10.00,A1\n")

    first, second = read(path, "bank-csv", currency="EUR", mapping=mapping).records

    assert (first.external_id, second.external_id) == ("A1", "A1#2")


# --- the mapping itself ------------------------------------------------------------------------


def test_a_mapping_survives_being_saved_and_read_back() -> None:
    mapping = ColumnMapping(
        date="Booking date",
        credit="Money in",
        debit="Money out",
        fixed_currency="CHF",
        reference="Ref",
        date_order=DateOrder.DMY,
        decimal_comma=True,
        side=Side.GATEWAY,
        sign=Sign.OUT_POSITIVE,
        time_zone="Europe/Zurich",
    )

    assert ColumnMapping.from_json(mapping.to_json()) == mapping


def test_a_damaged_saved_mapping_is_a_plain_error() -> None:
    for damaged in ("{", "[]", '{"date": 3, "amount": "A"}', '{"date": "D", "amount": "A", '
                    '"side": "moon"}'):  # fmt: skip
        with pytest.raises(MappingError, match="choose the columns again"):
            ColumnMapping.from_json(damaged)


def test_a_mapping_needs_a_date_and_an_amount_or_both_in_and_out() -> None:
    with pytest.raises(MappingError, match="money-in and the money-out"):
        ColumnMapping(date="Date", credit="In")
    with pytest.raises(MappingError, match="either one amount column"):
        ColumnMapping(date="Date", amount="Amount", debit="Out")
    with pytest.raises(MappingError, match="not a currency"):
        ColumnMapping(date="Date", amount="Amount", fixed_currency="XYZ")


def test_guess_mapping_knows_common_english_headers() -> None:
    uk = guess_mapping(["Transaction Date", "Description", "Paid In", "Paid Out", "Balance"])
    us = guess_mapping(["Posting Date", "Amount", "Check or Slip #", "Payee", "Currency"])
    nothing = guess_mapping(["Date", "Description", "Balance"])

    assert uk == ColumnMapping(
        date="Transaction Date", credit="Paid In", debit="Paid Out", description="Description"
    )
    assert us == ColumnMapping(
        date="Posting Date", amount="Amount", counterparty="Payee", currency="Currency"
    )
    assert nothing is None
