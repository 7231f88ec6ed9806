"""PayPal's activity download and settlement report: time zones honoured, withdrawals to the
bank as payouts, fees PayPal kept or gave back."""

from __future__ import annotations

from datetime import UTC, datetime

from app.domain.reconciliation import Kind, Side
from app.services.statement_files import DateOrder
from tests.services.statement_files.statements import DATA, WriteFile, read, reasons, rejection

ACTIVITY_HEADER = (
    '"Date","Time","TimeZone","Name","Type","Status","Currency","Gross","Fee","Net",'
    '"Transaction ID","Balance Impact"\n'
)


def test_activity_download_gives_kinds_signs_fees_and_times_in_utc() -> None:
    parsed = read(DATA / "paypal_activity_us.csv", "paypal-csv")

    payment, refund, withdrawal, conversion_out, conversion_in, donation = parsed.records
    assert payment.side is Side.GATEWAY
    assert payment.external_id == payment.reference == "5TY05013RG002845M"
    assert (payment.kind, payment.amount_minor, payment.fee_minor) == (Kind.PAYMENT, 125000, 4388)
    assert payment.at == datetime(2026, 3, 2, 17, 15, 27, tzinfo=UTC)  # 09:15:27 PST
    assert payment.counterparty == "Ada Lovelace"
    assert payment.description == "Express Checkout Payment · Annual tuition"
    # PayPal gives the fee back on a refund: a negative fee, and net = -20.00 + 0.59
    assert (refund.kind, refund.amount_minor, refund.fee_minor) == (Kind.REFUND, -2000, -59)
    assert refund.at == datetime(2026, 3, 9, 21, 0, tzinfo=UTC)  # 14:00 PDT
    assert (withdrawal.kind, withdrawal.amount_minor) == (Kind.PAYOUT, 100000)
    assert withdrawal.at == datetime(2026, 3, 15, 17, 30, tzinfo=UTC)
    assert (conversion_out.kind, conversion_out.amount_minor) == (Kind.ADJUSTMENT, -10850)
    assert (conversion_in.currency, conversion_in.amount_minor) == ("EUR", 10000)
    assert (donation.currency, donation.amount_minor, donation.fee_minor) == ("JPY", 5000, 215)


def test_activity_rows_that_never_touched_the_balance_are_left_out() -> None:
    parsed = read(DATA / "paypal_activity_us.csv", "paypal-csv")

    assert "0AU11111111111111" not in {record.external_id for record in parsed.records}


def test_day_first_dates_central_european_time_and_decimal_commas() -> None:
    parsed = read(DATA / "paypal_activity_eu.csv", "paypal-csv")

    payment, withdrawal, summer = parsed.records
    assert payment.at == datetime(2026, 3, 2, 8, 15, 27, tzinfo=UTC)  # 2 March, 09:15:27 CET
    assert (payment.amount_minor, payment.fee_minor) == (8000, 287)
    assert withdrawal.at == datetime(2026, 3, 28, 22, 30, tzinfo=UTC)
    assert (withdrawal.kind, withdrawal.amount_minor) == (Kind.PAYOUT, 7713)
    assert summer.at == datetime(2026, 3, 30, 8, 0, tzinfo=UTC)  # CEST is UTC+2
    assert summer.amount_minor == 120000  # "1.200,00"
    assert parsed.currency == "EUR"


def test_time_zone_given_as_an_offset_is_honoured(write: WriteFile) -> None:
    path = write(
        "activity.csv",
        ACTIVITY_HEADER
        + '"2026-03-02","09:00:00","GMT+05:30","A","Website Payment","Completed","INR",'
        '"100.00","-3.00","97.00","9A","Credit"\n',
    )

    (record,) = read(path, "paypal-csv").records

    assert record.at == datetime(2026, 3, 2, 3, 30, tzinfo=UTC)


def test_money_paid_in_from_the_bank_is_a_payout_the_other_way(write: WriteFile) -> None:
    path = write(
        "activity.csv",
        ACTIVITY_HEADER
        + '"2026-03-02","09:00:00","UTC","","Bank Deposit to PP Account","Completed","USD",'
        '"500.00","0.00","500.00","7TOP","Credit"\n',
    )

    (record,) = read(path, "paypal-csv").records

    assert (record.kind, record.amount_minor) == (Kind.PAYOUT, -50_000)  # a debit at the bank


def test_an_ambiguous_or_unknown_time_zone_is_a_row_error(write: WriteFile) -> None:
    path = write(
        "activity.csv",
        ACTIVITY_HEADER
        + '"2026-03-02","09:00:00","IST","A","Website Payment","Completed","EUR","1.00","0",'
        '"1.00","9A","Credit"\n'
        + '"2026-03-02","09:00:00","XYZ","A","Website Payment","Completed","EUR","1.00","0",'
        '"1.00","9B","Credit"\n',
    )

    error = rejection(path, "paypal-csv")

    assert [(row, column) for row, column, _ in reasons(error)] == [
        (2, "TimeZone"),
        (3, "TimeZone"),
    ]
    assert error.errors[0].reason == (
        "the time zone 'IST' is not one Switchboard can be sure of; write it as an offset from "
        "UTC such as +01:00, or change the report's time zone"
    )


def test_dates_no_row_settles_must_be_chosen_outside_north_america(write: WriteFile) -> None:
    path = write(
        "activity.csv",
        ACTIVITY_HEADER
        + '"03/04/2026","09:00:00","CET","A","Website Payment","Completed","EUR","1.00","0",'
        '"1.00","9A","Credit"\n',
    )

    error = rejection(path, "paypal-csv")
    (record,) = read(path, "paypal-csv", date_order=DateOrder.DMY).records

    assert "could be day/month/year or month/day/year" in error.errors[0].reason
    assert record.at == datetime(2026, 4, 3, 8, 0, tzinfo=UTC)


def test_a_us_account_writes_month_first_as_paypal_documents(write: WriteFile) -> None:
    path = write(
        "activity.csv",
        ACTIVITY_HEADER
        + '"03/04/2026","09:00:00","EST","A","Website Payment","Completed","USD","1.00","0",'
        '"1.00","9A","Credit"\n',
    )

    (record,) = read(path, "paypal-csv").records

    assert record.at == datetime(2026, 3, 4, 14, 0, tzinfo=UTC)


def test_net_that_is_not_gross_plus_fee_is_a_row_error(write: WriteFile) -> None:
    path = write(
        "activity.csv",
        ACTIVITY_HEADER
        + '"2026-03-02","09:00:00","UTC","A","Website Payment","Completed","USD","10.00",'
        '"-0.59","9.51","9A","Credit"\n',
    )

    error = rejection(path, "paypal-csv")

    assert reasons(error) == [
        (2, "Net", "the net '9.51' is not the gross '10.00' plus the fee '-0.59'")
    ]


def test_settlement_report_reads_minor_units_with_credit_and_debit_marks() -> None:
    parsed = read(DATA / "paypal_settlement_STL.csv", "paypal-csv")

    payment, refund, withdrawal, donation = parsed.records
    assert (payment.kind, payment.amount_minor, payment.fee_minor) == (Kind.PAYMENT, 125000, 4388)
    assert payment.at == datetime(2026, 3, 2, 17, 15, 27, tzinfo=UTC)
    assert payment.description == "T0006 · INV-1001"
    assert (refund.kind, refund.amount_minor, refund.fee_minor) == (Kind.REFUND, -2000, -59)
    assert refund.at == datetime(2026, 3, 2, 22, 0, 5, tzinfo=UTC)  # the completion date
    assert (withdrawal.kind, withdrawal.amount_minor) == (Kind.PAYOUT, 100000)
    assert (donation.currency, donation.amount_minor) == ("JPY", 5000)
    assert parsed.period == (
        datetime(2026, 3, 2, 8, 0, tzinfo=UTC),
        datetime(2026, 3, 3, 7, 59, 59, tzinfo=UTC),
    )


def test_settlement_row_errors_name_the_record_row_and_column(write: WriteFile) -> None:
    text = (DATA / "paypal_settlement_STL.csv").read_text()
    text = text.replace('"CR",125000,"USD"', '"XX",125000,"USD"')
    text = text.replace('"DR",100000,"USD"', '"DR",1000.00,"USD"')
    path = write("STL-20260302.01.011.CSV", text)

    error = rejection(path, "paypal-csv")

    assert reasons(error) == [
        (5, "Transaction  Debit or Credit", "'XX' is neither CR nor DR"),
        (
            7,
            "Gross Transaction Amount",
            "the amount '1000.00' is not a whole number of minor units",
        ),
    ]
