"""The circuit breaker follows resilience4j's time-based sliding-window rules, survives a
restart through its snapshot, and stays small and consistent under load."""

from __future__ import annotations

import json
import threading
from datetime import UTC, datetime, timedelta

import pytest

from app.providers.breaker import (
    BreakerOpen,
    BreakerPolicy,
    BreakerSnapshot,
    BreakerState,
    CircuitBreaker,
    snapshot_from_json,
    snapshot_to_json,
)

START = datetime(2026, 5, 4, 9, 0, tzinfo=UTC)


class Clocks:
    """A monotonic clock and a wall clock that move together, only when told to."""

    def __init__(self) -> None:
        self.seconds = 5000.0

    def monotonic(self) -> float:
        return self.seconds

    def now(self) -> datetime:
        return START + timedelta(seconds=self.seconds - 5000.0)

    def advance(self, seconds: float) -> None:
        self.seconds += seconds


@pytest.fixture
def clocks() -> Clocks:
    return Clocks()


@pytest.fixture
def changes() -> list[BreakerSnapshot]:
    return []


@pytest.fixture
def breaker(clocks: Clocks, changes: list[BreakerSnapshot]) -> CircuitBreaker:
    return CircuitBreaker(
        "stripe", clock=clocks.monotonic, now=clocks.now, on_change=changes.append
    )


def run(breaker: CircuitBreaker, *, ok: int = 0, failed: int = 0, seconds: float = 0.2) -> None:
    """`ok` successful then `failed` failed calls, each taking `seconds`."""
    for _ in range(ok):
        breaker.acquire().success(seconds)
    for _ in range(failed):
        breaker.acquire().failure(seconds)


def trip(breaker: CircuitBreaker) -> None:
    run(breaker, failed=10)
    assert breaker.state is BreakerState.OPEN


# --- closed -------------------------------------------------------------------------------


def test_closed_breaker_stays_closed_below_minimum_calls_even_if_all_fail(
    breaker: CircuitBreaker,
) -> None:
    run(breaker, failed=9)
    assert breaker.state is BreakerState.CLOSED
    assert breaker.snapshot() == BreakerSnapshot(BreakerState.CLOSED, None, 9, 9, 0, "")


def test_opens_when_the_failure_rate_reaches_the_threshold_over_minimum_calls(
    breaker: CircuitBreaker, clocks: Clocks
) -> None:
    run(breaker, ok=5, failed=4)
    assert breaker.state is BreakerState.CLOSED  # 4 of 9: too few calls anyway
    run(breaker, failed=1)  # 5 of 10 = the 50 % threshold, which is enough
    snapshot = breaker.snapshot()
    assert snapshot.state is BreakerState.OPEN
    assert snapshot.opened_at == clocks.now()
    assert (snapshot.calls, snapshot.failures) == (10, 5)
    assert snapshot.reason == "5 of 10 calls failed in the last 5 minutes"


def test_stays_closed_just_below_the_failure_rate(breaker: CircuitBreaker) -> None:
    run(breaker, ok=11, failed=9)  # 45 %
    assert breaker.state is BreakerState.CLOSED


def test_opens_on_the_slow_call_rate_even_when_the_slow_calls_succeed(
    breaker: CircuitBreaker,
) -> None:
    run(breaker, ok=2, seconds=0.5)
    run(breaker, ok=7, seconds=5.0)  # exactly slow_call_seconds counts as slow
    assert breaker.state is BreakerState.CLOSED  # 7 of 9, and too few calls
    run(breaker, ok=1, seconds=12.0)  # 8 of 10 slow = the 80 % threshold
    snapshot = breaker.snapshot()
    assert snapshot.state is BreakerState.OPEN
    assert (snapshot.calls, snapshot.failures, snapshot.slow) == (10, 0, 8)
    assert snapshot.reason == "8 of 10 calls took 5 seconds or longer in the last 5 minutes"


def test_a_reason_names_both_rules_when_both_are_broken(breaker: CircuitBreaker) -> None:
    run(breaker, failed=10, seconds=30.0)
    assert breaker.snapshot().reason == (
        "10 of 10 calls failed and 10 of 10 took 5 seconds or longer in the last 5 minutes"
    )


def test_old_calls_slide_out_of_the_window(breaker: CircuitBreaker, clocks: Clocks) -> None:
    run(breaker, failed=9)
    clocks.advance(300)  # the failures are now exactly one window old
    run(breaker, failed=1)
    assert breaker.state is BreakerState.CLOSED
    assert breaker.snapshot().calls == 1


def test_calls_still_inside_the_window_count(breaker: CircuitBreaker, clocks: Clocks) -> None:
    run(breaker, failed=9)
    clocks.advance(299)
    run(breaker, failed=1)
    assert breaker.state is BreakerState.OPEN


def test_the_window_shrinks_as_time_passes_without_calls(
    breaker: CircuitBreaker, clocks: Clocks
) -> None:
    run(breaker, ok=3)
    clocks.advance(200)
    run(breaker, failed=2)
    clocks.advance(100)
    assert breaker.snapshot().calls == 2
    clocks.advance(200)
    assert breaker.snapshot().calls == 0


def test_an_ignored_outcome_is_not_counted(breaker: CircuitBreaker) -> None:
    for _ in range(20):
        breaker.acquire().ignore()
    run(breaker, failed=9)
    assert breaker.state is BreakerState.CLOSED
    assert breaker.snapshot().calls == 9


def test_a_permit_is_reported_once(breaker: CircuitBreaker) -> None:
    permit = breaker.acquire()
    permit.failure(1.0)
    with pytest.raises(RuntimeError, match="reported twice"):
        permit.success(1.0)
    assert breaker.snapshot().calls == 1


# --- open ---------------------------------------------------------------------------------


def test_an_open_breaker_refuses_at_once_with_the_remaining_wait(
    breaker: CircuitBreaker, clocks: Clocks
) -> None:
    trip(breaker)
    clocks.advance(15)
    with pytest.raises(BreakerOpen) as refused:
        breaker.acquire()
    assert refused.value.retry_after == pytest.approx(45.0)
    assert refused.value.snapshot.state is BreakerState.OPEN
    assert refused.value.snapshot.reason == "10 of 10 calls failed in the last 5 minutes"
    assert "stripe" in str(refused.value)


def test_after_open_seconds_the_next_acquire_is_a_half_open_trial(
    breaker: CircuitBreaker, clocks: Clocks
) -> None:
    trip(breaker)
    clocks.advance(59.9)
    with pytest.raises(BreakerOpen):
        breaker.acquire()
    clocks.advance(0.1)
    permit = breaker.acquire()
    snapshot = breaker.snapshot()
    assert snapshot.state is BreakerState.HALF_OPEN
    assert snapshot.calls == 0
    assert snapshot.opened_at == START  # when it opened, not when trials began
    permit.success(0.1)


def test_outcomes_of_calls_permitted_before_the_breaker_opened_are_not_counted(
    breaker: CircuitBreaker, clocks: Clocks
) -> None:
    late = breaker.acquire()
    trip(breaker)
    late.success(0.1)
    clocks.advance(60)
    assert breaker.snapshot() == BreakerSnapshot(
        BreakerState.HALF_OPEN, START, 0, 0, 0, "10 of 10 calls failed in the last 5 minutes"
    )


# --- half open ----------------------------------------------------------------------------


@pytest.fixture
def half_open(breaker: CircuitBreaker, clocks: Clocks) -> CircuitBreaker:
    trip(breaker)
    clocks.advance(60)
    assert breaker.state is BreakerState.HALF_OPEN
    return breaker


def test_only_half_open_calls_trials_are_permitted(half_open: CircuitBreaker) -> None:
    permits = [half_open.acquire() for _ in range(3)]
    with pytest.raises(BreakerOpen) as refused:
        half_open.acquire()
    assert refused.value.snapshot.state is BreakerState.HALF_OPEN
    assert refused.value.retry_after == 5.0  # slow_call_seconds: trials settle by then
    permits[0].success(0.1)
    with pytest.raises(BreakerOpen):  # three per round, not three at a time
        half_open.acquire()


def test_successful_trials_close_the_breaker_with_an_empty_window(
    half_open: CircuitBreaker,
) -> None:
    permits = [half_open.acquire() for _ in range(3)]
    for permit in permits:
        permit.success(0.3)
    assert half_open.snapshot() == BreakerSnapshot(BreakerState.CLOSED, None, 0, 0, 0, "")
    run(half_open, failed=9)  # a fresh window: nine failures are not yet a verdict
    assert half_open.state is BreakerState.CLOSED


def test_the_trial_round_is_decided_only_when_every_trial_has_finished(
    half_open: CircuitBreaker,
) -> None:
    permits = [half_open.acquire() for _ in range(3)]
    permits[0].failure(0.1)
    permits[1].failure(0.1)
    assert half_open.snapshot().state is BreakerState.HALF_OPEN
    assert half_open.snapshot().failures == 2
    permits[2].success(0.1)
    assert half_open.snapshot().state is BreakerState.OPEN


def test_a_failing_trial_round_opens_again_with_a_fresh_wait(
    half_open: CircuitBreaker, clocks: Clocks
) -> None:
    clocks.advance(7)
    permits = [half_open.acquire() for _ in range(3)]
    permits[0].failure(0.1)
    permits[1].failure(0.1)
    permits[2].success(0.1)
    snapshot = half_open.snapshot()
    assert snapshot.state is BreakerState.OPEN
    assert snapshot.opened_at == START + timedelta(seconds=67)
    assert (snapshot.calls, snapshot.failures) == (3, 2)
    assert snapshot.reason == "2 of 3 trial calls failed"
    with pytest.raises(BreakerOpen) as refused:
        half_open.acquire()
    assert refused.value.retry_after == pytest.approx(60.0)


def test_one_failed_trial_in_three_closes_under_a_50_percent_threshold(
    half_open: CircuitBreaker,
) -> None:
    permits = [half_open.acquire() for _ in range(3)]
    permits[0].failure(0.1)
    permits[1].success(0.1)
    permits[2].success(0.1)
    assert half_open.state is BreakerState.CLOSED


def test_slow_trials_open_the_breaker_again(half_open: CircuitBreaker) -> None:
    permits = [half_open.acquire() for _ in range(3)]
    for permit in permits:
        permit.success(9.0)
    snapshot = half_open.snapshot()
    assert snapshot.state is BreakerState.OPEN
    assert snapshot.reason == "3 of 3 trial calls took 5 seconds or longer"


def test_an_ignored_trial_gives_its_slot_back_and_is_not_counted(
    half_open: CircuitBreaker,
) -> None:
    permits = [half_open.acquire() for _ in range(3)]
    permits[0].ignore()
    permits.append(half_open.acquire())
    for permit in permits[1:]:
        permit.success(0.1)
    assert half_open.state is BreakerState.CLOSED


# --- forced open and reset ----------------------------------------------------------------


def test_forced_open_refuses_without_retry_after_until_reset(
    breaker: CircuitBreaker, clocks: Clocks
) -> None:
    breaker.force_open()
    clocks.advance(3600)  # no wait ends maintenance
    with pytest.raises(BreakerOpen) as refused:
        breaker.acquire()
    assert refused.value.retry_after is None
    assert refused.value.snapshot.state is BreakerState.FORCED_OPEN
    assert refused.value.snapshot.reason == "held open for maintenance"
    assert refused.value.snapshot.opened_at == START
    breaker.reset()
    breaker.acquire().success(0.1)


def test_forcing_open_an_open_breaker_keeps_it_from_probing(
    breaker: CircuitBreaker, clocks: Clocks
) -> None:
    trip(breaker)
    breaker.force_open("provider announced an outage until Friday")
    clocks.advance(60)
    assert breaker.state is BreakerState.FORCED_OPEN
    assert breaker.snapshot().reason == "provider announced an outage until Friday"


@pytest.mark.parametrize("state", [BreakerState.OPEN, BreakerState.FORCED_OPEN])
def test_reset_closes_the_breaker_with_an_empty_window(
    breaker: CircuitBreaker, state: BreakerState
) -> None:
    if state is BreakerState.OPEN:
        trip(breaker)
    else:
        run(breaker, failed=4)
        breaker.force_open()
    breaker.reset()
    assert breaker.snapshot() == BreakerSnapshot(BreakerState.CLOSED, None, 0, 0, 0, "")
    run(breaker, failed=9)
    assert breaker.state is BreakerState.CLOSED


# --- on_change ----------------------------------------------------------------------------


def test_on_change_is_called_once_per_state_change_with_the_new_snapshot(
    breaker: CircuitBreaker, clocks: Clocks, changes: list[BreakerSnapshot]
) -> None:
    run(breaker, ok=30)
    assert changes == []  # outcomes alone are not changes
    clocks.advance(300)
    trip(breaker)
    for _ in range(3):
        with pytest.raises(BreakerOpen):
            breaker.acquire()
    clocks.advance(60)
    assert breaker.state is BreakerState.HALF_OPEN
    assert breaker.state is BreakerState.HALF_OPEN
    breaker.snapshot()
    run(breaker, ok=3)
    breaker.reset()  # already closed: not a change
    breaker.force_open()
    breaker.force_open()  # already forced: not a change
    breaker.reset()
    assert [c.state for c in changes] == [
        BreakerState.OPEN,
        BreakerState.HALF_OPEN,
        BreakerState.CLOSED,
        BreakerState.FORCED_OPEN,
        BreakerState.CLOSED,
    ]
    assert changes[0].reason == "10 of 10 calls failed in the last 5 minutes"
    assert changes[1].opened_at == changes[0].opened_at
    assert changes[3].reason == "held open for maintenance"


def test_on_change_may_read_the_breaker(clocks: Clocks) -> None:
    seen: list[BreakerState] = []
    mailgun = CircuitBreaker(
        "mailgun",
        clock=clocks.monotonic,
        now=clocks.now,
        on_change=lambda _: seen.append(mailgun.snapshot().state),
    )
    mailgun.force_open()
    assert seen == [BreakerState.FORCED_OPEN]


def test_a_failing_on_change_does_not_fail_the_call(
    clocks: Clocks, caplog: pytest.LogCaptureFixture
) -> None:
    def broken(_: BreakerSnapshot) -> None:
        raise OSError("disk full")

    breaker = CircuitBreaker("twilio", clock=clocks.monotonic, now=clocks.now, on_change=broken)
    run(breaker, failed=10)
    assert breaker.state is BreakerState.OPEN
    assert "on_change of circuit breaker 'twilio' failed" in caplog.text


# --- snapshot and restore -----------------------------------------------------------------


def test_a_snapshot_round_trips_through_json(breaker: CircuitBreaker) -> None:
    trip(breaker)
    snapshot = breaker.snapshot()
    stored = json.loads(json.dumps(snapshot_to_json(snapshot)))
    assert stored["opened_at"] == "2026-05-04T09:00:00+00:00"
    assert snapshot_from_json(stored) == snapshot
    closed = BreakerSnapshot(BreakerState.CLOSED, None, 3, 1, 0, "")
    assert snapshot_from_json(json.loads(json.dumps(snapshot_to_json(closed)))) == closed


def test_a_snapshot_time_written_in_another_offset_is_read_as_utc() -> None:
    snapshot = snapshot_from_json(
        {"state": "open", "opened_at": "2026-05-04T11:00:00+02:00", "calls": 10}
    )
    assert snapshot.opened_at == START
    assert snapshot.opened_at.tzinfo is UTC


@pytest.mark.parametrize(
    "data",
    [
        {"state": "ajar"},
        {"opened_at": None},
        {"state": "open", "opened_at": 12},
        {"state": "open", "calls": -1},
        {"state": "open", "failures": "3"},
        {"state": "open", "reason": None},
    ],
)
def test_a_broken_snapshot_is_refused(data: dict[str, object]) -> None:
    with pytest.raises(ValueError):  # noqa: PT011 - each case has its own message
        snapshot_from_json(data)


def test_a_restored_open_breaker_waits_only_for_the_rest_of_its_wait(
    breaker: CircuitBreaker, clocks: Clocks
) -> None:
    trip(breaker)
    persisted = snapshot_to_json(breaker.snapshot())
    clocks.advance(40)  # the app was closed for 40 seconds
    changes: list[BreakerSnapshot] = []
    restored = CircuitBreaker.restored(
        "stripe",
        BreakerPolicy(),
        snapshot_from_json(persisted),
        clock=lambda: 17.0,  # a new process: the monotonic clock starts elsewhere
        now=clocks.now,
        on_change=changes.append,
    )
    assert restored.snapshot() == snapshot_from_json(persisted)
    with pytest.raises(BreakerOpen) as refused:
        restored.acquire()
    assert refused.value.retry_after == pytest.approx(20.0)
    assert changes == []


def test_a_restored_open_breaker_whose_wait_is_over_goes_half_open(clocks: Clocks) -> None:
    persisted = BreakerSnapshot(
        BreakerState.OPEN, START - timedelta(minutes=5), 10, 7, 0, "7 of 10 calls failed"
    )
    changes: list[BreakerSnapshot] = []
    restored = CircuitBreaker.restored(
        "stripe", BreakerPolicy(), persisted, now=clocks.now, on_change=changes.append
    )
    assert restored.state is BreakerState.HALF_OPEN
    assert [c.state for c in changes] == [BreakerState.HALF_OPEN]
    restored.acquire().success(0.1)


def test_a_restored_forced_open_breaker_stays_forced(clocks: Clocks) -> None:
    persisted = BreakerSnapshot(
        BreakerState.FORCED_OPEN, START - timedelta(days=3), 0, 0, 0, "held open for maintenance"
    )
    restored = CircuitBreaker.restored("stripe", BreakerPolicy(), persisted, now=clocks.now)
    with pytest.raises(BreakerOpen) as refused:
        restored.acquire()
    assert refused.value.retry_after is None
    assert restored.snapshot() == persisted


def test_a_restored_half_open_breaker_starts_a_new_trial_round(clocks: Clocks) -> None:
    persisted = BreakerSnapshot(BreakerState.HALF_OPEN, START, 2, 1, 0, "7 of 10 calls failed")
    restored = CircuitBreaker.restored("stripe", BreakerPolicy(), persisted, now=clocks.now)
    assert restored.snapshot() == BreakerSnapshot(
        BreakerState.HALF_OPEN, START, 0, 0, 0, "7 of 10 calls failed"
    )
    permits = [restored.acquire() for _ in range(3)]
    for permit in permits:
        permit.success(0.1)
    assert restored.state is BreakerState.CLOSED


def test_a_restored_closed_breaker_starts_with_an_empty_window(clocks: Clocks) -> None:
    persisted = BreakerSnapshot(BreakerState.CLOSED, None, 9, 9, 0, "")
    restored = CircuitBreaker.restored("stripe", BreakerPolicy(), persisted, now=clocks.now)
    assert restored.snapshot().calls == 0
    run(restored, failed=1)
    assert restored.state is BreakerState.CLOSED


# --- policy, memory and threads -----------------------------------------------------------


@pytest.mark.parametrize(
    "bad",
    [
        {"window_seconds": 0.5},
        {"minimum_calls": 0},
        {"failure_rate": 0.0},
        {"slow_call_rate": 1.5},
        {"slow_call_seconds": 0.0},
        {"open_seconds": -1.0},
        {"half_open_calls": 0},
    ],
)
def test_a_policy_that_cannot_work_is_refused(bad: dict[str, float]) -> None:
    with pytest.raises(ValueError, match=next(iter(bad))):
        BreakerPolicy(**bad)  # type: ignore[arg-type]


def test_the_window_stays_small_at_200_calls_a_second(
    breaker: CircuitBreaker, clocks: Clocks
) -> None:
    for _ in range(400 * 200):
        breaker.acquire().success(0.01)
        clocks.advance(1 / 200)
    assert breaker.snapshot().calls == pytest.approx(300 * 200, abs=200)
    # One bucket per second of the window, however many calls each second had.
    assert len(breaker._window) <= 300


def test_calls_settled_from_several_threads_are_all_counted(clocks: Clocks) -> None:
    breaker = CircuitBreaker(
        "google", BreakerPolicy(minimum_calls=1_000_000), clock=clocks.monotonic, now=clocks.now
    )
    reads: list[int] = []

    def work() -> None:
        for _ in range(2000):
            breaker.acquire().success(0.1)

    def watch() -> None:
        for _ in range(2000):
            reads.append(breaker.snapshot().calls)

    threads = [threading.Thread(target=work) for _ in range(4)]
    threads.append(threading.Thread(target=watch))
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert breaker.snapshot().calls == 8000
    assert reads == sorted(reads)
