"""Stripe's balance and payout reports: gross, fee, kind, and the payout each line went out in."""

from __future__ import annotations

from datetime import UTC, datetime

from app.domain.reconciliation import Kind, Side
from tests.services.statement_files.statements import DATA, WriteFile, read, reasons, rejection

HEADER = (
    "balance_transaction_id,created_utc,available_on_utc,currency,gross,fee,net,"
    "reporting_category,source_id,description,automatic_payout_id\n"
)


def test_itemized_balance_change_gives_gross_fee_kind_reference_and_payout() -> None:
    parsed = read(DATA / "stripe_balance_change_itemized.csv", "stripe-csv")

    charge, refund, fee, dispute, _, tuition = parsed.records
    assert parsed.format == "stripe-csv"
    assert charge.side is Side.GATEWAY
    assert charge.source == "file:test"
    assert charge.external_id == "txn_1PaA2LkdIwHu7ix0"
    assert (charge.kind, charge.amount_minor, charge.fee_minor) == (Kind.PAYMENT, 12000, 378)
    assert charge.currency == "USD"  # Stripe writes it in lower case
    assert charge.reference == "ch_3PaA2LkdIwHu7ix0"
    assert charge.payout == "po_1PbZ9LkdIwHu7ix0"
    assert charge.counterparty == "Ada Lovelace"
    assert (refund.kind, refund.amount_minor, refund.reference) == (
        Kind.REFUND,
        -2000,
        "re_3PaB2LkdIwHu7ix0",
    )
    assert (fee.kind, fee.amount_minor, fee.fee_minor) == (Kind.FEE, -200, 0)
    assert (dispute.kind, dispute.amount_minor, dispute.fee_minor) == (Kind.ADJUSTMENT, -5000, 1500)
    assert dispute.counterparty == "Hopper, Grace"  # a quoted cell with a comma in it
    assert tuition.kind is Kind.PAYMENT  # reporting_category "payment" (ACH and the like)
    assert parsed.currency == ""  # USD and JPY lines: no one currency for the file


def test_zero_decimal_currency_amounts_are_whole_yen() -> None:
    parsed = read(DATA / "stripe_balance_change_itemized.csv", "stripe-csv")

    yen = parsed.records[4]
    assert (yen.currency, yen.amount_minor, yen.fee_minor) == ("JPY", 5000, 180)


def test_created_utc_is_read_as_utc() -> None:
    parsed = read(DATA / "stripe_balance_change_itemized.csv", "stripe-csv")

    assert parsed.records[0].at == datetime(2026, 3, 2, 9, 15, 27, tzinfo=UTC)
    assert parsed.records[4].at == datetime(2026, 3, 6, 23, 59, 59, tzinfo=UTC)


def test_payout_leaving_stripe_is_a_positive_payout_and_a_failed_one_cancels_it() -> None:
    parsed = read(DATA / "stripe_payouts_itemized.csv", "stripe-csv")

    paid, failed, returned = parsed.records
    assert (paid.kind, paid.amount_minor) == (Kind.PAYOUT, 9422)
    assert paid.reference == paid.payout == "po_1PbZ9LkdIwHu7ix0"
    assert paid.at == datetime(2026, 3, 9, tzinfo=UTC)
    assert (failed.kind, failed.amount_minor) == (Kind.PAYOUT, 121345)
    assert (returned.kind, returned.amount_minor) == (Kind.PAYOUT, -121345)
    assert failed.payout == returned.payout
    assert parsed.currency == "USD"


def test_dashboard_export_of_balance_transactions_is_read() -> None:
    parsed = read(DATA / "stripe_dashboard_export.csv", "stripe-csv")

    charge, fee, payout = parsed.records
    assert (charge.kind, charge.amount_minor, charge.fee_minor) == (Kind.PAYMENT, 4500, 161)
    assert charge.payout == "po_1Qb1MkdIwHu7ix0"  # the Transfer column
    assert charge.at == datetime(2026, 4, 1, 10, 3, tzinfo=UTC)
    assert (fee.kind, fee.amount_minor) == (Kind.FEE, -100)  # Type "stripe_fee"
    assert (payout.kind, payout.amount_minor, payout.reference) == (
        Kind.PAYOUT,
        4239,
        "po_1Qb1MkdIwHu7ix0",
    )
    assert parsed.currency == "GBP"


def test_a_charge_is_known_by_its_payment_intent_when_the_report_has_the_column(
    write: WriteFile,
) -> None:
    """Switchboard records a Stripe payment by its PaymentIntent; a refund by its own id, even
    though the report names the refunded PaymentIntent beside it."""
    path = write(
        "report.csv",
        "balance_transaction_id,created_utc,currency,gross,fee,net,reporting_category,"
        "source_id,payment_intent_id\n"
        "txn_1,2026-03-01 10:00:00,usd,10.00,0.59,9.41,charge,ch_1,pi_1\n"
        "txn_2,2026-03-02 10:00:00,usd,-4.00,0,-4.00,refund,re_1,pi_1\n"
        "txn_3,2026-03-02 11:00:00,usd,5.00,0.45,4.55,charge,ch_2,\n",
    )

    charge, refund, legacy = read(path, "stripe-csv").records

    assert charge.reference == "pi_1"
    assert refund.reference == "re_1"
    assert legacy.reference == "ch_2"  # a charge made without a PaymentIntent


def test_three_decimal_currency_and_trailing_zeros_in_a_zero_decimal_one(write: WriteFile) -> None:
    path = write(
        "report.csv",
        HEADER
        + "txn_1,2026-03-01 10:00:00,2026-03-03 00:00:00,bhd,12.345,0.125,12.220,charge,ch_1,,\n"
        + "txn_2,2026-03-01 10:00:00,2026-03-03 00:00:00,jpy,1000.00,0,1000,charge,ch_2,,\n",
    )

    bhd, jpy = read(path, "stripe-csv").records

    assert (bhd.amount_minor, bhd.fee_minor) == (12345, 125)
    assert jpy.amount_minor == 1000


def test_an_unknown_category_is_an_adjustment(write: WriteFile) -> None:
    path = write(
        "report.csv",
        HEADER
        + "txn_1,2026-03-01 10:00:00,2026-03-03 00:00:00,usd,5.00,0,5.00,other_adjustment,,,\n",
    )

    (record,) = read(path, "stripe-csv").records

    assert (record.kind, record.amount_minor) == (Kind.ADJUSTMENT, 500)


def test_bad_rows_are_named_by_row_and_column_and_nothing_is_kept(write: WriteFile) -> None:
    path = write(
        "report.csv",
        HEADER
        + "txn_1,2026-03-01 10:00:00,,usd,12.00,0.65,11.35,charge,ch_1,,\n"
        + "txn_2,2026-03-01 10:00:00,,usd,12.3x,0.65,11.35,charge,ch_2,,\n"
        + "txn_3,2026-03-01 10:00:00,,xyz,12.00,0.65,11.35,charge,ch_3,,\n"
        + "txn_4,01/03/2026 10:00,,usd,12.00,0.65,11.35,charge,ch_4,,\n"
        + "txn_5,2026-03-01 10:00:00,,usd,12.00,0.65,11.00,charge,ch_5,,\n"
        + "txn_6,2026-03-01 10:00:00,,usd,1.005,0,1.005,charge,ch_6,,\n",
    )

    error = rejection(path, "stripe-csv")

    assert reasons(error) == [
        (3, "gross", "the amount '12.3x' is not a number"),
        (
            4,
            "currency",
            "the currency 'xyz' is not an ISO 4217 code Switchboard knows (such as USD, EUR, GBP)",
        ),
        (
            5,
            "created_utc",
            "the date '01/03/2026 10:00' is not in the form 2026-01-31 14:05:00; download the "
            "report again rather than a copy a spreadsheet re-saved",
        ),
        (6, "net", "the net '11.00' is not the gross '12.00' less the fee '0.65'"),
        (7, "gross", "the amount '1.005' has more decimals than USD has (2 decimals)"),
        (7, "net", "the amount '1.005' has more decimals than USD has (2 decimals)"),
    ]
    assert "report.csv was not imported, nothing from it was kept" in str(error)


def test_summary_report_is_refused_with_a_pointer_to_the_itemized_one(write: WriteFile) -> None:
    path = write(
        "summary.csv", "reporting_category,currency,count,gross,fee,net\ncharge,usd,3,30.00,1,29\n"
    )

    error = rejection(path, "stripe-csv")

    assert "download the itemized report" in error.errors[0].reason


def test_a_file_that_is_not_a_stripe_report_says_which_columns_are_missing(
    write: WriteFile,
) -> None:
    path = write("bank.csv", "Date,Description,Amount\n2026-03-01,Coffee,-3.20\n")

    error = rejection(path, "stripe-csv")

    assert error.errors[0].reason.startswith(
        "this does not look like a Stripe balance report: it has no 'balance_transaction_id', "
        "'created_utc', 'currency', 'reporting_category' column"
    )


def test_the_same_balance_transaction_listed_twice_is_one_record(write: WriteFile) -> None:
    line = "txn_1,2026-03-01 10:00:00,,usd,12.00,0.65,11.35,charge,ch_1,,\n"
    path = write("joined.csv", HEADER + line + line)

    records = read(path, "stripe-csv").records

    assert [record.external_id for record in records] == ["txn_1"]
