"""A circuit breaker per provider (or endpoint): stop calling a provider that is failing or
crawling, probe it again after a pause, and remember its state across a restart.

The semantics are resilience4j's CircuitBreaker with a time-based sliding window, as described
in its reference, https://resilience4j.readme.io/docs/circuitbreaker (read through the
translation at https://godekdls.github.io/Resilience4j/circuitbreaker/ and Apache Camel's table
of the same options, https://camel.apache.org/components/4.4.x/eips/resilience4jConfiguration-eip.html):

- CLOSED records every call's outcome in a window of the last `window_seconds`, kept as one
  partial aggregate per second (subtract-on-evict), so memory does not grow with traffic.
- No verdict on fewer than `minimum_calls` calls in the window, even if all of them failed.
- CLOSED -> OPEN when failures/calls >= `failure_rate`, or slow/calls >= `slow_call_rate`; a
  call of at least `slow_call_seconds` is slow whether it succeeded or failed.
- OPEN rejects calls at once; after `open_seconds` the next call finds it HALF_OPEN.
- HALF_OPEN permits `half_open_calls` trial calls; when all have finished, the same thresholds
  over those calls decide: OPEN again (with a fresh wait) or CLOSED with an empty window.
- An ignored outcome counts neither as success nor failure, and gives its trial slot back.
- FORCED_OPEN (resilience4j's special state) rejects everything until `reset()`.

Where we differ: the OPEN -> HALF_OPEN move happens lazily on the next `acquire()`, `state` or
`snapshot()` (resilience4j's default, without its optional timer); the breaker can be restored
from a persisted snapshot, keeping the wall-clock moment it opened; outcomes of calls permitted
before a state change or reset are dropped rather than counted in the new state's figures.

Why our own: the long-established Python breakers (pybreaker, circuitbreaker, aiobreaker,
purgatory) trip on a count of consecutive failures, which a provider failing most but not all
calls never reaches, and have no slow-call rule. interlock-cb (first released 2026) has
rate-based windows and slow calls, but is young and cannot be started OPEN or HALF_OPEN from a
persisted snapshot, which the app needs to honour a breaker's wait across a restart.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum

log = logging.getLogger("switchboard.providers")


class BreakerState(StrEnum):
    """Where a breaker is; FORCED_OPEN is maintenance: held open by a person until reset."""

    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"
    FORCED_OPEN = "forced_open"


@dataclass(frozen=True)
class BreakerPolicy:
    """When a breaker opens and how it recovers; defaults suit a school's low traffic."""

    window_seconds: float = 300.0
    minimum_calls: int = 10
    failure_rate: float = 0.5
    slow_call_rate: float = 0.8
    slow_call_seconds: float = 5.0
    open_seconds: float = 60.0
    half_open_calls: int = 3

    def __post_init__(self) -> None:
        # The window is kept in whole seconds; a shorter one would hold nothing.
        if not self.window_seconds >= 1:
            raise ValueError(f"window_seconds must be at least 1, not {self.window_seconds}")
        if self.minimum_calls < 1:
            raise ValueError(f"minimum_calls must be at least 1, not {self.minimum_calls}")
        if self.half_open_calls < 1:
            raise ValueError(f"half_open_calls must be at least 1, not {self.half_open_calls}")
        for name in ("failure_rate", "slow_call_rate"):
            rate = getattr(self, name)
            if not 0 < rate <= 1:
                raise ValueError(f"{name} must be above 0 and at most 1, not {rate}")
        if not self.slow_call_seconds > 0:
            raise ValueError(f"slow_call_seconds must be positive, not {self.slow_call_seconds}")
        if not self.open_seconds >= 0:
            raise ValueError(f"open_seconds must not be negative, not {self.open_seconds}")


@dataclass(frozen=True)
class BreakerSnapshot:
    """A breaker's state as persisted, shown in the UI and restored after a restart.

    `opened_at` is when it (last) opened, in UTC; None when closed. The counts are the
    window's (CLOSED), the trial calls' (HALF_OPEN), or those it had when it opened. `reason`
    is a sentence without a final full stop; "" when closed.
    """

    state: BreakerState
    opened_at: datetime | None
    calls: int
    failures: int
    slow: int
    reason: str


class BreakerOpen(Exception):
    """The breaker does not permit a call now.

    `retry_after` is the seconds until trial calls may start; None when forced open (only a
    person's reset ends that). While HALF_OPEN with every trial slot taken it is
    `slow_call_seconds`: by then the trial calls have finished or are known to be slow.
    """

    def __init__(
        self, retry_after: float | None, snapshot: BreakerSnapshot, *, name: str = ""
    ) -> None:
        self.retry_after = retry_after
        self.snapshot = snapshot
        self.name = name
        subject = f"circuit breaker {name!r}" if name else "circuit breaker"
        detail = f": {snapshot.reason}" if snapshot.reason else ""
        wait = f"; retry in {retry_after:.0f} s" if retry_after is not None else ""
        super().__init__(f"{subject} is {snapshot.state.value}{detail}{wait}")


class Permit:
    """Leave for one call through a breaker; report its outcome exactly once.

    `seconds` is how long the call took; it decides whether the call was slow.
    """

    __slots__ = ("_breaker", "_generation", "_used")

    def __init__(self, breaker: CircuitBreaker, generation: int) -> None:
        self._breaker = breaker
        self._generation = generation
        self._used = False

    def success(self, seconds: float) -> None:
        """The provider answered as it should."""
        self._breaker._settle(self, failed=False, seconds=seconds)

    def failure(self, seconds: float) -> None:
        """The provider failed: an error, a timeout, a 5xx."""
        self._breaker._settle(self, failed=True, seconds=seconds)

    def ignore(self) -> None:
        """The outcome says nothing about the provider's health (a 4xx caused by our input, a
        cancelled call): not counted, and a trial slot is given back."""
        self._breaker._settle(self, failed=None, seconds=0.0)


@dataclass(slots=True)
class _Tally:
    calls: int = 0
    failures: int = 0
    slow: int = 0

    def add(self, *, failed: bool, slow: bool) -> None:
        self.calls += 1
        self.failures += failed
        self.slow += slow


@dataclass(slots=True)
class _Bucket(_Tally):
    second: int = 0


class _Window:
    """The outcomes of the last `span` whole seconds of the monotonic clock: one bucket per
    second that had calls, plus running totals, so it holds at most `span` buckets."""

    __slots__ = ("_buckets", "_span", "totals")

    def __init__(self, window_seconds: float) -> None:
        self._span = math.ceil(window_seconds)
        self._buckets: deque[_Bucket] = deque()
        self.totals = _Tally()

    def __len__(self) -> int:
        return len(self._buckets)

    def trim(self, now: float) -> None:
        """Subtract and drop the buckets that have slid out of the window at `now`."""
        last_gone = math.floor(now) - self._span
        while self._buckets and self._buckets[0].second <= last_gone:
            gone = self._buckets.popleft()
            self.totals.calls -= gone.calls
            self.totals.failures -= gone.failures
            self.totals.slow -= gone.slow

    def record(self, now: float, *, failed: bool, slow: bool) -> None:
        self.trim(now)
        second = math.floor(now)
        # `>=`: an injected clock that steps back still lands in the newest bucket, keeping
        # the buckets in order.
        if self._buckets and self._buckets[-1].second >= second:
            bucket = self._buckets[-1]
        else:
            bucket = _Bucket(second=second)
            self._buckets.append(bucket)
        bucket.add(failed=failed, slow=slow)
        self.totals.add(failed=failed, slow=slow)


def _utc_now() -> datetime:
    return datetime.now(UTC)


def _seconds_text(seconds: float) -> str:
    return "1 second" if seconds == 1 else f"{seconds:g} seconds"


def _window_text(seconds: float) -> str:
    """The window as words: "the last 5 minutes", "the last hour", "the last 90 seconds"."""
    for unit, size in (("hour", 3600), ("minute", 60)):
        if seconds >= size and seconds % size == 0:
            count = int(seconds // size)
            return f"the last {unit}" if count == 1 else f"the last {count} {unit}s"
    return f"the last {_seconds_text(seconds)}"


class CircuitBreaker:
    """Permits or refuses calls to one provider by resilience4j's rules (see the module).

    `clock` is monotonic seconds for the window and the wait; `now` is the aware UTC wall
    clock for `opened_at`. `on_change(snapshot)` is called once per state change, on the
    thread that caused it, after the lock is released (so it may read the breaker); it runs
    inside `acquire()`, a permit's report, `state`, `snapshot()`, `force_open()` or `reset()`.
    Calls are expected from one asyncio loop; `snapshot()` and `state` are safe from any thread.
    """

    def __init__(
        self,
        name: str,
        policy: BreakerPolicy = BreakerPolicy(),  # frozen, so one shared default is safe
        *,
        clock: Callable[[], float] = time.monotonic,
        now: Callable[[], datetime] = _utc_now,
        on_change: Callable[[BreakerSnapshot], None] | None = None,
    ) -> None:
        self.name = name
        self.policy = policy
        self._clock = clock
        self._now = now
        self._on_change = on_change
        self._lock = threading.Lock()
        self._state = BreakerState.CLOSED
        # Bumped on every state change and reset; a permit from an older generation is stale
        # and its outcome is not counted.
        self._generation = 0
        self._window = _Window(policy.window_seconds)
        self._trial = _Tally()
        self._trial_permits = 0  # granted in this HALF_OPEN round and not given back
        self._held = _Tally()  # the counts shown while OPEN or FORCED_OPEN
        self._opened_at: datetime | None = None
        self._opened_clock = 0.0
        self._reason = ""

    @classmethod
    def restored(
        cls,
        name: str,
        policy: BreakerPolicy,
        snapshot: BreakerSnapshot,
        *,
        clock: Callable[[], float] = time.monotonic,
        now: Callable[[], datetime] = _utc_now,
        on_change: Callable[[BreakerSnapshot], None] | None = None,
    ) -> CircuitBreaker:
        """A breaker continuing from a snapshot persisted before a restart.

        OPEN keeps its wall-clock `opened_at`, so only the rest of the wait remains (none left:
        the first `acquire()`, `state` or `snapshot()` finds it HALF_OPEN and reports that
        change); FORCED_OPEN stays forced; HALF_OPEN starts a new trial round; CLOSED starts
        with an empty window. Restoring itself reports no change.
        """
        breaker = cls(name, policy, clock=clock, now=now, on_change=on_change)
        if snapshot.state is BreakerState.CLOSED:
            return breaker
        opened_at = snapshot.opened_at or breaker._now()
        breaker._state = snapshot.state
        breaker._opened_at = opened_at
        breaker._reason = snapshot.reason
        breaker._held = _Tally(snapshot.calls, snapshot.failures, snapshot.slow)
        # A wall clock set back (or a snapshot from the future) must not lengthen the wait.
        elapsed = max(0.0, (breaker._now() - opened_at).total_seconds())
        breaker._opened_clock = breaker._clock() - elapsed
        return breaker

    @property
    def state(self) -> BreakerState:
        """The current state; an OPEN breaker whose wait is over becomes HALF_OPEN here."""
        with self._lock:
            change = self._advance()
            state = self._state
        self._notify(change)
        return state

    def acquire(self) -> Permit:
        """Leave for one call, or BreakerOpen. In HALF_OPEN at most `half_open_calls` permits
        are granted per trial round (an ignored one is given back)."""
        permit: Permit | None = None
        refusal: BreakerOpen | None = None
        with self._lock:
            change = self._advance()
            if self._state is BreakerState.CLOSED:
                permit = Permit(self, self._generation)
            elif (
                self._state is BreakerState.HALF_OPEN
                and self._trial_permits < self.policy.half_open_calls
            ):
                self._trial_permits += 1
                permit = Permit(self, self._generation)
            else:
                refusal = BreakerOpen(self._retry_after(), self._snapshot(), name=self.name)
        self._notify(change)
        if refusal is not None:
            raise refusal
        assert permit is not None
        return permit

    def force_open(self, reason: str = "held open for maintenance") -> None:
        """Refuse every call until `reset()`, whatever the outcomes; already forced: no-op."""
        with self._lock:
            if self._state is BreakerState.FORCED_OPEN:
                return
            held = self._current_counts()
            self._held = _Tally(held.calls, held.failures, held.slow)
            self._reason = reason
            change = self._open(BreakerState.FORCED_OPEN)
        self._notify(change)

    def reset(self) -> None:
        """Back to CLOSED with an empty window; also ends FORCED_OPEN. Outcomes of calls
        permitted before the reset are not counted."""
        with self._lock:
            was = self._state
            self._window = _Window(self.policy.window_seconds)
            self._held = _Tally()
            self._opened_at = None
            self._reason = ""
            change = self._enter(BreakerState.CLOSED)
        self._notify(change if was is not BreakerState.CLOSED else None)

    def snapshot(self) -> BreakerSnapshot:
        """The current state and counts, for persisting and for the UI."""
        with self._lock:
            change = self._advance()
            snapshot = self._snapshot()
        self._notify(change)
        return snapshot

    # --- inside the lock -----------------------------------------------------------------

    def _settle(self, permit: Permit, *, failed: bool | None, seconds: float) -> None:
        """Record a permit's outcome; `failed` None means ignored."""
        change: BreakerSnapshot | None = None
        with self._lock:
            if permit._used:
                raise RuntimeError(f"a permit of breaker {self.name!r} was reported twice")
            permit._used = True
            if permit._generation != self._generation:
                return
            if failed is None:
                if self._state is BreakerState.HALF_OPEN:
                    self._trial_permits -= 1
                return
            slow = seconds >= self.policy.slow_call_seconds
            if self._state is BreakerState.CLOSED:
                self._window.record(self._clock(), failed=failed, slow=slow)
                reason = self._verdict(
                    self._window.totals,
                    self.policy.minimum_calls,
                    f" in {_window_text(self.policy.window_seconds)}",
                )
                if reason is not None:
                    change = self._trip(self._window.totals, reason)
            elif self._state is BreakerState.HALF_OPEN:
                self._trial.add(failed=failed, slow=slow)
                if self._trial.calls >= self.policy.half_open_calls:
                    reason = self._verdict(self._trial, self.policy.half_open_calls, "", "trial")
                    if reason is not None:
                        change = self._trip(self._trial, reason)
                    else:
                        self._window = _Window(self.policy.window_seconds)
                        self._held = _Tally()
                        self._opened_at = None
                        self._reason = ""
                        change = self._enter(BreakerState.CLOSED)
        self._notify(change)

    def _verdict(self, tally: _Tally, minimum: int, where: str, kind: str = "") -> str | None:
        """Why `tally` opens the breaker, or None when it does not (yet)."""
        if tally.calls < minimum:
            return None
        failing = tally.failures / tally.calls >= self.policy.failure_rate
        slow = tally.slow / tally.calls >= self.policy.slow_call_rate
        if not (failing or slow):
            return None
        calls = f"{kind} calls" if kind else "calls"
        parts: list[str] = []
        if failing:
            parts.append(f"{tally.failures} of {tally.calls} {calls} failed")
        if slow:
            took = f"took {_seconds_text(self.policy.slow_call_seconds)} or longer"
            subject = f"{tally.slow} of {tally.calls}" + ("" if failing else f" {calls}")
            parts.append(f"{subject} {took}")
        return " and ".join(parts) + where

    def _trip(self, tally: _Tally, reason: str) -> BreakerSnapshot:
        self._held = _Tally(tally.calls, tally.failures, tally.slow)
        self._reason = reason
        return self._open(BreakerState.OPEN)

    def _open(self, state: BreakerState) -> BreakerSnapshot:
        self._opened_at = self._now()
        self._opened_clock = self._clock()
        return self._enter(state)

    def _enter(self, state: BreakerState) -> BreakerSnapshot:
        self._state = state
        self._generation += 1
        self._trial = _Tally()
        self._trial_permits = 0
        return self._snapshot()

    def _advance(self) -> BreakerSnapshot | None:
        """OPEN -> HALF_OPEN once the wait is over; the new snapshot if that happened."""
        if self._state is not BreakerState.OPEN:
            return None
        if self._clock() - self._opened_clock < self.policy.open_seconds:
            return None
        return self._enter(BreakerState.HALF_OPEN)

    def _retry_after(self) -> float | None:
        if self._state is BreakerState.FORCED_OPEN:
            return None
        if self._state is BreakerState.HALF_OPEN:
            return self.policy.slow_call_seconds
        return max(0.0, self.policy.open_seconds - (self._clock() - self._opened_clock))

    def _current_counts(self) -> _Tally:
        if self._state is BreakerState.CLOSED:
            self._window.trim(self._clock())
            return self._window.totals
        if self._state is BreakerState.HALF_OPEN:
            return self._trial
        return self._held

    def _snapshot(self) -> BreakerSnapshot:
        counts = self._current_counts()
        return BreakerSnapshot(
            state=self._state,
            opened_at=self._opened_at,
            calls=counts.calls,
            failures=counts.failures,
            slow=counts.slow,
            reason=self._reason,
        )

    # --- outside the lock ----------------------------------------------------------------

    def _notify(self, snapshot: BreakerSnapshot | None) -> None:
        if snapshot is None or self._on_change is None:
            return
        try:
            self._on_change(snapshot)
        except Exception:
            # The state has changed either way; a failing listener must not fail the call.
            log.exception("on_change of circuit breaker %r failed", self.name)


def snapshot_to_json(snapshot: BreakerSnapshot) -> dict[str, object]:
    """`snapshot` as JSON-ready values; `opened_at` as ISO 8601 with its UTC offset."""
    return {
        "state": snapshot.state.value,
        "opened_at": snapshot.opened_at.isoformat() if snapshot.opened_at else None,
        "calls": snapshot.calls,
        "failures": snapshot.failures,
        "slow": snapshot.slow,
        "reason": snapshot.reason,
    }


def snapshot_from_json(data: Mapping[str, object]) -> BreakerSnapshot:
    """The snapshot `snapshot_to_json` made; ValueError when `data` is not one."""
    raw_state = data.get("state")
    try:
        state = BreakerState(str(raw_state))
    except ValueError as exc:
        raise ValueError(f"not a breaker state: {raw_state!r}") from exc
    raw_opened = data.get("opened_at")
    opened_at: datetime | None = None
    if isinstance(raw_opened, str):
        opened_at = datetime.fromisoformat(raw_opened)
        # A time written without an offset was written in UTC.
        if opened_at.tzinfo is None:
            opened_at = opened_at.replace(tzinfo=UTC)
        opened_at = opened_at.astimezone(UTC)
    elif raw_opened is not None:
        raise ValueError(f"opened_at is not a time: {raw_opened!r}")
    counts: list[int] = []
    for key in ("calls", "failures", "slow"):
        value = data.get(key, 0)
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise ValueError(f"{key} is not a count: {value!r}")
        counts.append(value)
    reason = data.get("reason", "")
    if not isinstance(reason, str):
        raise ValueError(f"reason is not text: {reason!r}")
    calls, failures, slow = counts
    return BreakerSnapshot(state, opened_at, calls, failures, slow, reason)
