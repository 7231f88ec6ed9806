"""The matching engine, case by case on small books a person can check, and on generated books of
known truth where every exact case must be matched and nothing else."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from datetime import UTC, datetime, timedelta, timezone

import polars as pl
import pytest

from app.benchmarks.reconcile import accuracy
from app.benchmarks.reconcile_data import generate
from app.domain.reconciliation import MatchRules
from app.services.reconciliation.matching import (
    BANK_SCHEMA,
    DAY,
    GATEWAY_SCHEMA,
    LEDGER_SCHEMA,
    PAYOUT_SCHEMA,
    Books,
    Decisions,
    Outcome,
    frame,
    reconcile,
)

T0 = int(datetime(2026, 3, 10, 9, tzinfo=UTC).timestamp())
NOW = T0 + 30 * DAY
RULES = MatchRules(amount_drift_minor=0, date_window_days=3, settlement_days=7)
GW = "connection:1"


def books(
    ledger: Sequence[tuple[int, str, int, int]] = (),
    gateway: Sequence[tuple[int, str, int, int, str]] = (),
    payouts: Sequence[tuple[int, str, int, int]] = (),
    bank: Sequence[tuple[int, str, int, int]] = (),
    *,
    currency: str = "USD",
    source: str = GW,
) -> Books:
    """(id, reference, amount, at) rows; gateway rows also name their payout; the fee is 3 %."""
    return Books(
        frame(
            (
                {
                    "id": i,
                    "source": source,
                    "ref": r,
                    "kind": "payment" if a > 0 else "refund",
                    "amount": a,
                    "currency": currency,
                    "at": t,
                }
                for i, r, a, t in ledger
            ),
            LEDGER_SCHEMA,
        ),
        frame(
            (
                {
                    "id": i,
                    "source": GW,
                    "ref": r,
                    "kind": "payment" if a > 0 else "refund",
                    "amount": a,
                    "fee": max(a * 3 // 100, 0),
                    "currency": "USD",
                    "at": t,
                    "payout": p,
                }
                for i, r, a, t, p in gateway
            ),
            GATEWAY_SCHEMA,
        ),
        frame(
            (
                {"id": i, "source": GW, "ref": r, "amount": a, "currency": "USD", "at": t}
                for i, r, a, t in payouts
            ),
            PAYOUT_SCHEMA,
        ),
        frame(
            (
                {"id": i, "ref": "", "text": r, "amount": a, "currency": "USD", "at": t}
                for i, r, a, t in bank
            ),
            BANK_SCHEMA,
        ),
    )


def statuses(outcome: Outcome) -> dict[int, str]:
    return dict(outcome.records.select("id", "status").iter_rows())


def links(outcome: Outcome) -> set[tuple[int, int]]:
    return set(outcome.links.select("up", "down").iter_rows())


def run(b: Books, rules: MatchRules = RULES, decisions: Decisions | None = None) -> Outcome:
    return reconcile(b, rules, decisions, as_of=NOW)


# --- ledger ↔ gateway -----------------------------------------------------------------------


def test_a_charge_the_gateway_took_matches_its_ledger_payment_and_carries_its_fee():
    outcome = run(books([(1, "ch_1", 5_000, T0)], [(2, "ch_1", 5_000, T0 + 9, "")]))

    assert statuses(outcome) == {1: "matched", 2: "matched"}
    assert links(outcome) == {(1, 2)}
    row = outcome.records.filter(pl.col("id") == 1).row(0, named=True)
    assert (row["strategy"], row["fee"], row["stage"]) == ("one_to_one", 150, 1)


def test_a_reference_match_is_decisive_whatever_the_dates():
    outcome = run(books([(1, "ch_1", 5_000, T0)], [(2, "ch_1", 5_000, T0 + 20 * DAY, "")]))

    assert statuses(outcome) == {1: "matched", 2: "matched"}


def test_a_cent_over_or_under_is_an_exception_on_both_sides_unless_drift_allows_it():
    b = books(
        [(1, "ch_1", 5_000, T0), (3, "ch_3", 5_000, T0)],
        [(2, "ch_1", 5_001, T0, ""), (4, "ch_3", 4_999, T0, "")],
    )

    strict = run(b)
    assert statuses(strict) == {
        1: "amount_over",
        2: "amount_over",
        3: "amount_under",
        4: "amount_under",
    }
    assert dict(strict.records.select("id", "diff").iter_rows()) == {1: 1, 2: 1, 3: -1, 4: -1}
    assert links(strict) == {(1, 2), (3, 4)}  # shown side by side in the exceptions queue

    lenient = run(b, MatchRules(amount_drift_minor=1))
    assert set(statuses(lenient).values()) == {"matched"}


def test_a_charge_in_another_currency_is_a_currency_mismatch_never_a_match():
    b = books([(1, "ch_1", 5_000, T0)], [(2, "ch_1", 5_000, T0, "")], currency="EUR")

    assert statuses(run(b)) == {1: "currency_mismatch", 2: "currency_mismatch"}


def test_a_payment_captured_in_parts_is_one_to_many():
    outcome = run(
        books(
            [(1, "ch_1", 9_000, T0)], [(2, "ch_1", 3_000, T0, ""), (3, "ch_1", 6_000, T0 + 60, "")]
        )
    )

    assert statuses(outcome) == {1: "matched", 2: "matched", 3: "matched"}
    assert set(outcome.records["strategy"].to_list()) == {"one_to_many"}
    assert links(outcome) == {(1, 2), (1, 3)}


def test_a_charge_recorded_twice_by_the_gateway_is_matched_once_and_the_other_is_a_duplicate():
    outcome = run(
        books(
            [(1, "ch_1", 5_000, T0)], [(2, "ch_1", 5_000, T0, ""), (3, "ch_1", 5_000, T0 + 60, "")]
        )
    )

    assert statuses(outcome) == {1: "matched", 2: "matched", 3: "duplicate"}


def test_a_payment_recorded_twice_in_the_ledger_is_a_duplicate():
    outcome = run(
        books([(1, "ch_1", 5_000, T0), (2, "ch_1", 5_000, T0 + 60)], [(3, "ch_1", 5_000, T0, "")])
    )

    assert statuses(outcome) == {1: "matched", 2: "duplicate", 3: "matched"}


def test_parts_that_do_not_add_up_are_an_amount_difference_not_a_match():
    outcome = run(
        books([(1, "ch_1", 9_000, T0)], [(2, "ch_1", 3_000, T0, ""), (3, "ch_1", 5_000, T0, "")])
    )

    assert statuses(outcome) == {1: "amount_under", 2: "amount_under", 3: "amount_under"}


def test_without_a_reference_a_unique_amount_within_the_window_matches():
    outcome = run(books([(1, "ch_1", 5_123, T0)], [(2, "", 5_123, T0 + 2 * DAY, "")]))

    assert statuses(outcome) == {1: "matched", 2: "matched"}
    assert links(outcome) == {(1, 2)}


def test_without_a_reference_an_ambiguous_or_distant_amount_is_never_guessed():
    ambiguous = books(
        [(1, "ch_1", 5_000, T0), (2, "ch_2", 5_000, T0 + 60)],
        [(3, "", 5_000, T0 + 30, ""), (4, "", 5_000, T0 + 90, "")],
    )
    far = books([(1, "ch_1", 5_123, T0)], [(2, "", 5_123, T0 + 4 * DAY, "")])

    assert statuses(run(ambiguous)) == {
        1: "missing",
        2: "missing",
        3: "unexpected",
        4: "unexpected",
    }
    assert links(run(ambiguous)) == set()
    assert statuses(run(far)) == {1: "missing", 2: "unexpected"}


def test_a_payment_without_counterpart_is_expected_until_its_settlement_window_passes():
    outcome = run(books([(1, "ch_1", 5_000, NOW - 2 * DAY), (2, "ch_2", 5_000, NOW - 8 * DAY)]))

    assert statuses(outcome) == {1: "expected", 2: "missing"}


def test_a_charge_the_ledger_does_not_know_is_unexpected():
    assert statuses(run(books([], [(1, "ch_9", 5_000, T0, "")]))) == {1: "unexpected"}


def adjusted(b: Books, *ids: int) -> Books:
    """The same books with these gateway records made adjustments (holds, chargebacks)."""
    kind = pl.when(pl.col("id").is_in(list(ids))).then(pl.lit("adjustment")).otherwise("kind")
    return replace(b, gateway=b.gateway.with_columns(kind=kind))


def test_a_hold_and_its_release_cancel_out_and_need_nobody():
    b = adjusted(
        books(
            [],
            [
                (1, "tx_9", -5_000, T0, ""),  # held for a dispute
                (2, "tx_9", 5_000, T0 + 3 * DAY, ""),  # released
                (3, "tx_8", -2_000, T0, ""),  # still held
                (4, "tx_7", -1_000, T0, ""),  # a chargeback reversed only in part
                (5, "tx_7", 600, T0 + DAY, ""),
            ],
        ),
        1,
        2,
        3,
        4,
        5,
    )

    outcome = run(b)

    assert statuses(outcome) == {
        1: "matched",
        2: "matched",
        3: "unexpected",
        4: "unexpected",
        5: "unexpected",
    }
    assert links(outcome) == {(1, 2)}


def test_a_partial_refund_matches_its_gateway_refund():
    outcome = run(
        books(
            [(1, "ch_1", 5_000, T0), (2, "re_1", -2_000, T0 + DAY)],
            [(3, "ch_1", 5_000, T0, ""), (4, "re_1", -2_000, T0 + DAY, "")],
        )
    )

    assert set(statuses(outcome).values()) == {"matched"}
    assert links(outcome) == {(1, 3), (2, 4)}


# --- payouts and the bank -------------------------------------------------------------------


def test_three_way_a_payout_settles_charges_net_of_fees_and_refunds_and_reaches_the_bank():
    # 5 000 - 150 fee, 8 000 - 240 fee, refund -2 000: a payout of 10 610
    b = books(
        [(1, "ch_1", 5_000, T0), (2, "ch_2", 8_000, T0), (3, "re_1", -2_000, T0 + 3_600)],
        [
            (11, "ch_1", 5_000, T0, "po_1"),
            (12, "ch_2", 8_000, T0, "po_1"),
            (13, "re_1", -2_000, T0 + 3_600, "po_1"),
        ],
        [(21, "po_1", 10_610, T0 + 2 * DAY)],
        [(31, "STRIPE PAYOUT po_1", 10_610, T0 + 3 * DAY)],
    )
    outcome = run(b)

    assert set(statuses(outcome).values()) == {"matched"}
    assert {(11, 21), (12, 21), (13, 21), (21, 31)} <= links(outcome)
    stages = dict(
        outcome.records.filter(pl.col("side") == "ledger").select("id", "stage").iter_rows()
    )
    assert stages == {1: 3, 2: 3, 3: 3}
    payout = outcome.records.filter(pl.col("id") == 21).row(0, named=True)
    assert payout["strategy"] == "many_to_one"


def test_a_payout_that_does_not_add_up_to_its_charges_is_an_amount_difference():
    b = books(
        [(1, "ch_1", 5_000, T0)],
        [(11, "ch_1", 5_000, T0, "po_1")],
        [(21, "po_1", 4_800, T0 + 2 * DAY)],
        [(31, "po_1", 4_800, T0 + 3 * DAY)],
    )
    outcome = run(b)

    assert statuses(outcome) == {1: "matched", 11: "matched", 21: "amount_under", 31: "matched"}
    assert outcome.records.filter(pl.col("id") == 21)["diff"].item() == -50


def test_a_bank_line_short_of_its_payout_is_an_amount_difference_on_both():
    b = books(
        [], [(11, "ch_x", 5_000, T0, "po_1")], [(21, "po_1", 4_850, T0)], [(31, "po_1", 4_750, T0)]
    )
    outcome = run(b)

    assert (statuses(outcome)[21], statuses(outcome)[31]) == ("amount_under", "amount_under")


def test_a_payout_not_in_the_bank_is_expected_then_missing():
    b = books(
        [],
        [],
        [(21, "po_1", 4_850, NOW - DAY), (22, "po_2", 4_850, NOW - 5 * DAY)],
    )

    assert statuses(run(b)) == {21: "expected", 22: "missing"}


def test_a_bank_line_naming_two_payouts_is_many_to_one():
    b = books(
        [],
        [],
        [(21, "po_1", 1_000, T0), (22, "po_2", 2_000, T0 + DAY)],
        [(31, "TRANSFER po_1 po_2", 3_000, T0 + 2 * DAY)],
    )
    outcome = run(b)

    assert statuses(outcome) == {21: "matched", 22: "matched", 31: "matched"}
    assert links(outcome) == {(21, 31), (22, 31)}
    assert outcome.records.filter(pl.col("id") == 31)["strategy"].item() == "many_to_one"


def test_a_bank_line_without_the_payout_id_matches_by_unique_amount_across_a_month_end():
    # the payout arrives 31 March 23:30 in New York (1 April in UTC); the bank books it on
    # 1 April, its own calendar day, at noon UTC
    new_york = timezone(timedelta(hours=-4))
    arrival = int(datetime(2026, 3, 31, 23, 30, tzinfo=new_york).timestamp())
    booked = int(datetime(2026, 4, 1, 12, tzinfo=UTC).timestamp())
    b = books([], [], [(21, "po_1", 48_515, arrival)], [(31, "PAYMENT SERVICES", 48_515, booked)])

    assert statuses(run(b)) == {21: "matched", 31: "matched"}


def test_a_bank_line_nobody_expected_is_unexpected_and_a_second_copy_is_a_duplicate():
    b = books(
        [],
        [],
        [(21, "po_1", 1_000, T0)],
        [(31, "po_1", 1_000, T0), (32, "po_1", 1_000, T0 + DAY), (33, "INTEREST", 12, T0)],
    )

    assert statuses(run(b)) == {21: "matched", 31: "matched", 32: "duplicate", 33: "unexpected"}


def test_a_payment_by_bank_transfer_matches_the_bank_line_naming_our_reference():
    b = books(
        [(1, "SB-1001", 25_000, T0)], bank=[(31, "TUITION SB-1001", 25_000, T0 + DAY)], source=""
    )
    outcome = run(b)

    assert statuses(outcome) == {1: "matched", 31: "matched"}
    assert outcome.records.filter(pl.col("id") == 1)["stage"].item() == 3


# --- what people decided --------------------------------------------------------------------


def test_a_manual_match_holds_and_is_marked_manual():
    b = books([(1, "ch_1", 5_000, T0)], [(2, "ch_other", 4_990, T0, "")])
    outcome = run(b, decisions=Decisions(manual=((1, 2),)))

    assert statuses(outcome) == {1: "matched", 2: "matched"}
    assert set(outcome.records["how"].to_list()) == {"manual"}
    assert links(outcome) == {(1, 2)}


def test_records_someone_unmatched_are_kept_out_of_automatic_matching():
    b = books([(1, "ch_1", 5_000, T0)], [(2, "ch_1", 5_000, T0, "")])

    assert statuses(run(b, decisions=Decisions(held=frozenset({1, 2})))) == {
        1: "missing",
        2: "unexpected",
    }


def test_a_written_off_exception_is_resolved_but_a_record_that_matched_since_stays_matched():
    b = books([(1, "ch_1", 5_000, T0)], [(2, "ch_1", 5_000, T0, ""), (3, "ch_9", 700, T0, "")])
    outcome = run(b, decisions=Decisions(resolved=frozenset({1, 3})))

    assert statuses(outcome) == {1: "matched", 2: "matched", 3: "resolved"}


def test_empty_books_give_no_records():
    outcome = run(Books.empty())

    assert outcome.records.is_empty()
    assert outcome.links.is_empty()


# --- books of known truth -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("rows", "seed", "exceptions"),
    [(300, 1, 0.3), (2_000, 2, 0.05), (5_000, 3, 0.2), (40_000, 4, 0.05)],
)
def test_generated_books_every_true_link_and_status_and_nothing_else(rows, seed, exceptions):
    data = generate(rows, seed=seed, exceptions=exceptions)
    outcome = reconcile(data.books, data.rules, as_of=data.as_of)

    found = accuracy(data, outcome)
    assert (found["precision"], found["recall"], found["statuses_wrong"]) == (1.0, 1.0, 0)
    assert found["statuses_checked"] == data.books.size()
    # every status and strategy is exercised
    assert set(outcome.records["status"].unique()) >= {
        "matched",
        "expected",
        "missing",
        "unexpected",
        "amount_over",
        "amount_under",
        "currency_mismatch",
        "duplicate",
    }
    assert set(outcome.records["strategy"].drop_nulls().unique()) == {
        "one_to_one",
        "one_to_many",
        "many_to_one",
    }


def test_generated_payouts_batch_hundreds_of_charges():
    data = generate(40_000, seed=5)

    biggest = (
        data.books.gateway.filter(pl.col("payout") != "").group_by("payout").len()["len"].max()
    )
    assert biggest >= 200


def test_a_record_kept_out_of_matching_still_counts_in_its_payout():
    b = books(
        [(1, "ch_1", 5_000, T0)],
        [(11, "ch_1", 5_000, T0, "po_1"), (12, "ch_2", 1_000, T0, "po_1")],
        [(21, "po_1", 5_820, NOW - DAY)],
    )
    outcome = run(b, decisions=Decisions(manual=((1, 12),), held=frozenset({11})))

    assert statuses(outcome)[21] == "expected"  # adds up; waiting for the bank
