"""Two-way sync decisions: every row of the three-way table, conflict policies, the mass-deletion
guard, normalized calendar content and its hash, and deterministic remote ids."""

from __future__ import annotations

import itertools
import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from app.domain.sync import (
    DECISIONS,
    Action,
    Baseline,
    Change,
    ConflictPolicy,
    Contents,
    Decision,
    DeletionLimits,
    EventContent,
    EventStatus,
    LocalItem,
    RemoteItem,
    Side,
    caldav_resource_name,
    check_deletions,
    decide,
    event_id,
    is_google_event_id,
    normalize_recurrence,
    settle,
)

BERLIN = ZoneInfo("Europe/Berlin")
NEW_YORK = ZoneInfo("America/New_York")

# --- the three-way decision ----------------------------------------------------------------------


@dataclass(frozen=True)
class Row:
    """One item's situation, written out: the baseline (local hash, remote etag, remote hash),
    the local hash now, the remote (etag, hash) now; None where there is none."""

    baseline: tuple[str, str, str] | None
    local: str | None
    remote: tuple[str, str] | None
    states: tuple[Change, Change, Contents]
    action: Action


A, U, C, D, N, X = (
    Change.ABSENT,
    Change.UNCHANGED,
    Change.CHANGED,
    Change.DELETED,
    Change.NEW,
    Contents.UNPAIRED,
)
SAME, DIFFERENT = Contents.SAME, Contents.DIFFERENT
SYNCED = ("a", "e1", "a")
# The remote keeps this item in a form of its own ("r"), as it did at the last sync.
SYNCED_APART = ("a", "e1", "r")

TABLE = {
    # Never synced.
    "nothing_on_either_side_needs_nothing": Row(None, None, None, (A, A, X), Action.NOTHING),
    "new_locally_is_created_remotely": Row(None, "a", None, (N, A, X), Action.CREATE_REMOTE),
    "new_remotely_is_created_locally": Row(None, None, ("e1", "a"), (A, N, X), Action.CREATE_LOCAL),
    "new_on_both_sides_alike_is_adopted": Row(None, "a", ("e1", "a"), (N, N, SAME), Action.ADOPT),
    "new_on_both_sides_differently_is_a_conflict": Row(
        None, "a", ("e1", "b"), (N, N, DIFFERENT), Action.CONFLICT
    ),
    # Synced, on both sides now.
    "untouched_on_both_sides_needs_nothing": Row(
        SYNCED, "a", ("e1", "a"), (U, U, SAME), Action.NOTHING
    ),
    "untouched_where_the_sides_keep_it_differently_needs_nothing": Row(
        SYNCED_APART, "a", ("e1", "r"), (U, U, DIFFERENT), Action.NOTHING
    ),
    "edited_locally_only_is_pushed": Row(
        SYNCED, "b", ("e1", "a"), (C, U, DIFFERENT), Action.UPDATE_REMOTE
    ),
    "edited_locally_into_what_the_remote_holds_is_adopted": Row(
        SYNCED_APART, "r", ("e1", "r"), (C, U, SAME), Action.ADOPT
    ),
    "edited_remotely_only_is_pulled": Row(
        SYNCED, "a", ("e2", "b"), (U, C, DIFFERENT), Action.UPDATE_LOCAL
    ),
    "edited_remotely_into_what_the_school_holds_is_adopted": Row(
        SYNCED_APART, "a", ("e2", "a"), (U, C, SAME), Action.ADOPT
    ),
    "edited_on_both_sides_alike_is_adopted": Row(
        SYNCED, "b", ("e2", "b"), (C, C, SAME), Action.ADOPT
    ),
    "edited_on_both_sides_differently_is_a_conflict": Row(
        SYNCED, "b", ("e2", "c"), (C, C, DIFFERENT), Action.CONFLICT
    ),
    # Synced, gone from at least one side.
    "deleted_locally_and_untouched_remotely_is_deleted_remotely": Row(
        SYNCED, None, ("e1", "a"), (D, U, X), Action.DELETE_REMOTE
    ),
    "deleted_locally_and_edited_remotely_is_a_conflict": Row(
        SYNCED, None, ("e2", "b"), (D, C, X), Action.CONFLICT
    ),
    "deleted_remotely_and_untouched_locally_is_deleted_locally": Row(
        SYNCED, "a", None, (U, D, X), Action.DELETE_LOCAL
    ),
    "deleted_remotely_and_edited_locally_is_a_conflict": Row(
        SYNCED, "b", None, (C, D, X), Action.CONFLICT
    ),
    "deleted_on_both_sides_is_forgotten": Row(SYNCED, None, None, (D, D, X), Action.FORGET),
}


def decided(row: Row) -> Decision:
    baseline = Baseline(*row.baseline) if row.baseline else None
    local = LocalItem(row.local) if row.local is not None else None
    remote = RemoteItem(*row.remote) if row.remote else None
    return decide(baseline, local, remote)


@pytest.mark.parametrize("row", TABLE.values(), ids=TABLE.keys())
def test_decision_table(row: Row) -> None:
    decision = decided(row)
    assert (decision.local, decision.remote, decision.contents) == row.states
    assert decision.action is row.action
    assert decision.settled_by is None


def test_the_table_covers_every_situation_that_can_occur_and_no_other() -> None:
    reachable = set()
    for family in ((A, N), (U, C, D)):
        for local, remote in itertools.product(family, repeat=2):
            if {local, remote} & {A, D}:
                reachable.add((local, remote, X))
            else:
                reachable |= {(local, remote, SAME), (local, remote, DIFFERENT)}
    assert set(DECISIONS) == reachable
    assert {row.states for row in TABLE.values()} == reachable


ETAG_ROWS = {
    "a_new_etag_on_unchanged_content_only_refreshes_the_baseline": Row(
        SYNCED, "a", ("e2", "a"), (U, U, SAME), Action.REFRESH_BASELINE
    ),
    "a_new_etag_where_the_sides_keep_it_differently_only_refreshes_the_baseline": Row(
        SYNCED_APART, "a", ("e2", "r"), (U, U, DIFFERENT), Action.REFRESH_BASELINE
    ),
    "a_new_etag_does_not_hide_a_local_edit": Row(
        SYNCED, "b", ("e2", "a"), (C, U, DIFFERENT), Action.UPDATE_REMOTE
    ),
    "a_new_etag_does_not_hide_a_local_deletion": Row(
        SYNCED, None, ("e2", "a"), (D, U, X), Action.DELETE_REMOTE
    ),
}


@pytest.mark.parametrize("row", ETAG_ROWS.values(), ids=ETAG_ROWS.keys())
def test_changes_are_judged_by_content_not_by_etag(row: Row) -> None:
    decision = decided(row)
    assert (decision.local, decision.remote, decision.contents) == row.states
    assert decision.action is row.action


def test_the_agreed_baseline_is_both_sides_as_they_are_now() -> None:
    baseline = Baseline.agreed(LocalItem("a"), RemoteItem("e7", "r"))
    assert baseline == Baseline(local_hash="a", remote_etag="e7", remote_hash="r")
    assert decide(baseline, LocalItem("a"), RemoteItem("e7", "r")).action is Action.NOTHING


# --- conflict policy -----------------------------------------------------------------------------

CONFLICTS = {
    "new_on_both": TABLE["new_on_both_sides_differently_is_a_conflict"],
    "edited_on_both": TABLE["edited_on_both_sides_differently_is_a_conflict"],
    "deleted_locally_edited_remotely": TABLE["deleted_locally_and_edited_remotely_is_a_conflict"],
    "edited_locally_deleted_remotely": TABLE["deleted_remotely_and_edited_locally_is_a_conflict"],
}
SETTLED = [
    ("new_on_both", ConflictPolicy.SCHOOL_WINS, Action.UPDATE_REMOTE),
    ("edited_on_both", ConflictPolicy.SCHOOL_WINS, Action.UPDATE_REMOTE),
    ("deleted_locally_edited_remotely", ConflictPolicy.SCHOOL_WINS, Action.DELETE_REMOTE),
    ("edited_locally_deleted_remotely", ConflictPolicy.SCHOOL_WINS, Action.CREATE_REMOTE),
    ("new_on_both", ConflictPolicy.CALENDAR_WINS, Action.UPDATE_LOCAL),
    ("edited_on_both", ConflictPolicy.CALENDAR_WINS, Action.UPDATE_LOCAL),
    ("deleted_locally_edited_remotely", ConflictPolicy.CALENDAR_WINS, Action.CREATE_LOCAL),
    ("edited_locally_deleted_remotely", ConflictPolicy.CALENDAR_WINS, Action.DELETE_LOCAL),
]


@pytest.mark.parametrize(
    ("conflict", "policy", "action"),
    SETTLED,
    ids=[f"{conflict}-{policy}-{action}" for conflict, policy, action in SETTLED],
)
def test_a_policy_settles_a_conflict_for_the_winning_side(
    conflict: str, policy: ConflictPolicy, action: Action
) -> None:
    decision = decided(CONFLICTS[conflict])
    assert decision.action is Action.CONFLICT
    settled = settle(decision, policy)
    assert settled.action is action
    assert settled.settled_by is policy
    assert (settled.local, settled.remote) == (decision.local, decision.remote)


@pytest.mark.parametrize("conflict", CONFLICTS.keys())
def test_asking_leaves_a_conflict_for_a_person(conflict: str) -> None:
    decision = decided(CONFLICTS[conflict])
    assert settle(decision, ConflictPolicy.ASK) == decision


@pytest.mark.parametrize("policy", list(ConflictPolicy))
def test_a_policy_leaves_decisions_that_are_not_conflicts_alone(policy: ConflictPolicy) -> None:
    for row in TABLE.values():
        decision = decided(row)
        if decision.action is not Action.CONFLICT:
            assert settle(decision, policy) == decision


# --- mass-deletion guard -------------------------------------------------------------------------


def test_a_side_that_suddenly_shows_nothing_stops_the_sync() -> None:
    check = check_deletions(
        Side.LOCAL, deletions=40, target_items=40, source_known=40, source_present=0
    )
    assert not check.allowed
    assert not check.confirmed
    assert check.token == "delete-40-of-40-local"
    assert check.reason.startswith("The connected service shows no items, though it held 40")
    assert "40 would be deleted from Switchboard" in check.reason


def test_a_small_side_may_empty_without_asking() -> None:
    check = check_deletions(
        Side.REMOTE, deletions=4, target_items=4, source_known=4, source_present=0
    )
    assert check.allowed
    assert check.token == ""


def test_an_empty_side_with_nothing_to_delete_needs_no_confirmation() -> None:
    check = check_deletions(
        Side.REMOTE, deletions=0, target_items=30, source_known=30, source_present=0
    )
    assert check.allowed


@pytest.mark.parametrize(
    ("deletions", "target_items", "allowed"),
    [
        pytest.param(11, 20, False, id="more_than_half_and_more_than_ten_asks"),
        pytest.param(10, 12, True, id="ten_or_fewer_never_ask"),
        pytest.param(11, 22, True, id="exactly_half_does_not_ask"),
        pytest.param(12, 22, False, id="just_over_half_asks"),
        pytest.param(40, 1000, True, id="a_small_share_of_a_big_side_does_not_ask"),
    ],
)
def test_deleting_a_large_share_of_a_side_stops_the_sync(
    deletions: int, target_items: int, allowed: bool
) -> None:
    check = check_deletions(
        Side.REMOTE,
        deletions=deletions,
        target_items=target_items,
        source_known=target_items,
        source_present=target_items - deletions,
    )
    assert check.allowed is allowed
    if not allowed:
        assert check.reason == (
            f"This sync would delete {deletions} of the {target_items} items in the connected "
            "service. Confirm only if they were meant to go."
        )


def test_the_token_confirms_exactly_the_deletions_it_was_given_for() -> None:
    asked = check_deletions(
        Side.REMOTE, deletions=12, target_items=20, source_known=20, source_present=8
    )
    confirmed = check_deletions(
        Side.REMOTE,
        deletions=12,
        target_items=20,
        source_known=20,
        source_present=8,
        confirmation=asked.token,
    )
    assert confirmed.allowed
    assert confirmed.confirmed
    assert confirmed.reason == asked.reason
    more = check_deletions(
        Side.REMOTE,
        deletions=15,
        target_items=20,
        source_known=20,
        source_present=5,
        confirmation=asked.token,
    )
    assert not more.allowed
    assert more.token == "delete-15-of-20-remote"
    other_side = check_deletions(
        Side.LOCAL,
        deletions=12,
        target_items=20,
        source_known=20,
        source_present=8,
        confirmation=asked.token,
    )
    assert not other_side.allowed


def test_the_limits_can_be_set_per_connection() -> None:
    strict = DeletionLimits(empty_after=1, max_share=0.1, max_count=2)
    assert not check_deletions(
        Side.LOCAL, deletions=3, target_items=20, source_known=20, source_present=17, limits=strict
    ).allowed
    assert not check_deletions(
        Side.LOCAL, deletions=1, target_items=1, source_known=1, source_present=0, limits=strict
    ).allowed


def test_negative_counts_are_refused() -> None:
    with pytest.raises(ValueError, match="negative"):
        check_deletions(Side.LOCAL, deletions=-1, target_items=3, source_known=3, source_present=3)


# --- normalized content and its hash -------------------------------------------------------------

START = datetime(2026, 1, 13, 9, 0, tzinfo=UTC)


def lesson(**changes: Any) -> EventContent:
    fields: dict[str, Any] = {
        "start": START,
        "end": START + timedelta(minutes=45),
        "summary": "Piano lesson: Ada Lovelace",
        "location": "Room 4",
        "description": "Bring the Czerny book.\nScales in G.",
        "status": EventStatus.CONFIRMED,
        "recurrence": ("RRULE:FREQ=WEEKLY;UNTIL=20260630T220000Z;BYDAY=TU",),
        "timezone": "Europe/Berlin",
        "online_meeting": False,
    }
    fields.update(changes)
    return EventContent(**fields)


def test_the_hash_is_stable_across_runs() -> None:
    assert lesson().content_hash() == (
        "0641b2173caf9f3e09d13dfa66a700ac969ed1b4363b86df79a651ec52262f41"
    )


def test_the_same_moment_in_any_time_zone_hashes_the_same() -> None:
    in_berlin = lesson(
        start=datetime(2026, 1, 13, 10, 0, tzinfo=BERLIN),
        end=datetime(2026, 1, 13, 10, 45, tzinfo=BERLIN),
    )
    in_new_york = lesson(
        start=datetime(2026, 1, 13, 4, 0, tzinfo=NEW_YORK),
        end=datetime(2026, 1, 13, 4, 45, 0, 999_999, tzinfo=NEW_YORK),
    )
    assert in_berlin == in_new_york == lesson()
    assert in_berlin.start.tzinfo is UTC
    assert in_berlin.content_hash() == in_new_york.content_hash() == lesson().content_hash()


def test_whitespace_line_endings_and_empty_values_do_not_change_the_hash() -> None:
    as_google_wrote_it = lesson(
        summary="  Piano   lesson:\tAda Lovelace ",
        location=None,
        description="\r\nBring the Czerny book.  \r\nScales in G.\t\r\n",
        status="CONFIRMED",
    )
    as_we_wrote_it = lesson(location="", description="Bring the Czerny book.\nScales in G.")
    assert as_google_wrote_it.content_hash() == as_we_wrote_it.content_hash()
    assert as_google_wrote_it.summary == "Piano lesson: Ada Lovelace"


def test_composed_and_decomposed_accents_hash_the_same() -> None:
    composed = lesson(summary="Caf\u00e9 concert")
    decomposed = lesson(summary="Cafe\u0301 concert")
    assert composed.content_hash() == decomposed.content_hash()


def test_a_missing_status_reads_as_confirmed() -> None:
    assert lesson(status=None) == lesson(status="") == lesson()


@pytest.mark.parametrize(
    "change",
    [
        pytest.param({"start": START + timedelta(minutes=1)}, id="start_moved_a_minute"),
        pytest.param({"end": START + timedelta(minutes=60)}, id="end_moved"),
        pytest.param({"summary": "Piano lesson: Ada King"}, id="summary"),
        pytest.param({"location": "Room 5"}, id="location"),
        pytest.param({"description": "Bring the Czerny book."}, id="description"),
        pytest.param({"description": "Bring the  Czerny book.\nScales in G."}, id="inner_spaces"),
        pytest.param({"status": EventStatus.CANCELLED}, id="status"),
        pytest.param({"recurrence": ("RRULE:FREQ=WEEKLY;BYDAY=TU",)}, id="recurrence_until"),
        pytest.param({"recurrence": ()}, id="no_longer_recurring"),
        pytest.param({"timezone": "Europe/London"}, id="recurring_wall_clock_zone"),
        pytest.param({"online_meeting": True}, id="online_meeting"),
        pytest.param({"all_day": True}, id="all_day"),
    ],
)
def test_a_real_change_changes_the_hash(change: dict[str, Any]) -> None:
    assert lesson(**change).content_hash() != lesson().content_hash()


def test_the_zone_of_a_single_event_changes_nothing() -> None:
    assert lesson(recurrence=(), timezone="Europe/Berlin") == lesson(recurrence=(), timezone="")


def test_utc_by_any_name_is_utc() -> None:
    assert lesson(timezone="Etc/UTC") == lesson(timezone=" UTC ")


def test_an_all_day_item_keeps_the_dates_as_written_in_any_zone() -> None:
    in_berlin = lesson(
        all_day=True,
        start=datetime(2026, 3, 2, tzinfo=BERLIN),
        end=datetime(2026, 3, 3, tzinfo=BERLIN),
    )
    in_utc = lesson(
        all_day=True,
        start=datetime(2026, 3, 2, 17, 30, tzinfo=UTC),
        end=datetime(2026, 3, 3, tzinfo=UTC),
    )
    assert in_berlin.start == datetime(2026, 3, 2, tzinfo=UTC)
    assert in_berlin == in_utc
    assert in_berlin.timezone == ""


def test_a_time_without_a_zone_is_refused() -> None:
    with pytest.raises(ValueError, match="must carry its time zone"):
        lesson(start=datetime(2026, 1, 13, 9, 0))


def test_canonical_json_has_sorted_keys_and_utc_times() -> None:
    assert lesson().canonical_json() == (
        '{"all_day":false,"description":"Bring the Czerny book.\\nScales in G.",'
        '"end":"2026-01-13T09:45:00Z","location":"Room 4","online_meeting":false,'
        '"recurrence":["RRULE:FREQ=WEEKLY;UNTIL=20260630T220000Z;BYDAY=TU"],'
        '"start":"2026-01-13T09:00:00Z","status":"confirmed",'
        '"summary":"Piano lesson: Ada Lovelace","timezone":"Europe/Berlin"}'
    )


# --- recurrence ----------------------------------------------------------------------------------


def test_rule_keys_values_and_parts_come_in_one_order() -> None:
    assert normalize_recurrence(["rrule:byday=we,mo;interval=1;freq=weekly;wkst=MO"]) == (
        "RRULE:FREQ=WEEKLY;BYDAY=MO,WE",
    )
    assert normalize_recurrence(["RRULE:FREQ=MONTHLY;BYDAY=-1FR,1MO;COUNT=6;INTERVAL=2"]) == (
        "RRULE:FREQ=MONTHLY;COUNT=6;INTERVAL=2;BYDAY=1MO,-1FR",
    )
    assert normalize_recurrence(["FREQ=DAILY;COUNT=3"]) == ("RRULE:FREQ=DAILY;COUNT=3",)


def test_until_is_in_utc() -> None:
    floating = normalize_recurrence(
        ["RRULE:FREQ=WEEKLY;UNTIL=20260630T235959"], timezone="Europe/Berlin"
    )
    assert floating == ("RRULE:FREQ=WEEKLY;UNTIL=20260630T215959Z",)
    assert normalize_recurrence(["RRULE:FREQ=WEEKLY;UNTIL=20260630"]) == (
        "RRULE:FREQ=WEEKLY;UNTIL=20260630",
    )


def test_exception_dates_are_merged_sorted_and_in_utc() -> None:
    google = [
        "RRULE:FREQ=WEEKLY;BYDAY=TU",
        "EXDATE;TZID=Europe/Berlin:20260127T100000",
        "EXDATE;TZID=Europe/Berlin:20260120T100000",
    ]
    caldav = ["EXDATE:20260120T090000Z,20260127T090000Z", "RRULE:FREQ=WEEKLY;BYDAY=TU"]
    assert normalize_recurrence(google) == normalize_recurrence(caldav)
    assert normalize_recurrence(caldav) == (
        "RRULE:FREQ=WEEKLY;BYDAY=TU",
        "EXDATE:20260120T090000Z,20260127T090000Z",
    )
    assert normalize_recurrence(["exdate;value=date:20260127,20260120"]) == (
        "EXDATE;VALUE=DATE:20260120,20260127",
    )


def test_equal_recurrences_written_differently_hash_the_same() -> None:
    written_by_a_server = lesson(
        recurrence=[
            " exdate;tzid=Europe/Berlin:20260120T100000 ",
            "RRULE:BYDAY=TU;UNTIL=20260701T000000;FREQ=WEEKLY",
        ]
    )
    written_by_us = lesson(
        recurrence=(
            "RRULE:FREQ=WEEKLY;UNTIL=20260630T220000Z;BYDAY=TU",
            "EXDATE:20260120T090000Z",
        )
    )
    assert written_by_a_server.content_hash() == written_by_us.content_hash()


# --- remote ids ----------------------------------------------------------------------------------


def test_event_ids_are_valid_for_google_and_caldav() -> None:
    remote_id = event_id("school-1/connection-3", "lesson", 42)
    assert is_google_event_id(remote_id)
    assert re.fullmatch(r"[a-v0-9]{32}", remote_id)
    assert caldav_resource_name(remote_id) == f"{remote_id}.ics"


def test_event_ids_are_the_same_every_time() -> None:
    assert event_id("school-1/connection-3", "lesson", 42) == "oia6il9sqrhmen9akf6t0gjabeutlkvd"


def test_different_items_get_different_ids() -> None:
    ids = {
        event_id("school-1/connection-3", "lesson", 42),
        event_id("school-1/connection-3", "lesson", 43),
        event_id("school-1/connection-3", "exam", 42),
        event_id("school-1/connection-4", "lesson", 42),
        event_id("a:b", "c", 1),
        event_id("a", "b:c", 1),
    }
    assert len(ids) == 6


@pytest.mark.parametrize(
    ("value", "valid"),
    [("abcde", True), ("abcd", False), ("abcdw", False), ("ABCDE", False), ("a" * 1025, False)],
)
def test_google_event_id_rule(value: str, valid: bool) -> None:
    assert is_google_event_id(value) is valid
