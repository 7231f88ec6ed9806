"""Time series for the live graphs: numpy ring buffers per connection, and binning that turns
any range into at most a few hundred points.

Drawing tens of thousands of points per curve at 10 Hz stalls the window (measured: 86 400
points per curve cost about 100 ms a frame; 900 cost under 1 ms), so a range is always reduced to
`POINTS` bins before it is plotted. Samples may be seconds (live) or minutes (history read back
from the database): each carries requests, failures, average and 95th percentile latency, and
the binning weights them by their requests.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

CAPACITY = 24 * 3600  # a day of per-second samples
POINTS = 900

Floats = npt.NDArray[np.float64]


@dataclass(frozen=True)
class Binned:
    """A range reduced to bins: bin centres (epoch seconds), requests per second, error rate
    (percent), average and 95th percentile latency (ms). NaN where a bin had no traffic, so the
    plot shows a gap instead of a made-up zero."""

    t: Floats
    rate: Floats
    error_pct: Floats
    avg_ms: Floats
    p95_ms: Floats


# The rows of a buffer, one array for all of them so selecting a range is one pass. Latency is
# kept as a request-weighted sum and its weight, so samples and whole minutes add up alike.
T, SPAN, REQUESTS, FAILURES, WEIGHTED, WEIGHT, P95 = range(7)
ROWS = 7
MINUTES = 24 * 60 + 1  # a day of minutes, and the one under way


class SeriesBuffer:
    """A fixed-size ring of samples for one connection (appending never allocates), and beside
    it a ring of per-minute sums, so a day is binned from 1 441 minutes, not 86 400 seconds."""

    def __init__(self, capacity: int = CAPACITY) -> None:
        self.capacity = capacity
        self._rows = np.full((ROWS, capacity), np.nan)
        self._minutes = np.full((ROWS, MINUTES), np.nan)
        self._next = 0
        self._count = 0

    def __len__(self) -> int:
        return self._count

    def append(
        self,
        t: float,
        requests: float,
        failures: float,
        avg_ms: float | None,
        p95_ms: float | None,
        span: float = 1.0,
    ) -> None:
        known = avg_ms is not None and not math.isnan(avg_ms)
        column = (
            t,
            span,
            requests,
            failures,
            avg_ms * requests if known else 0.0,  # type: ignore[operator]
            requests if known else 0.0,
            np.nan if p95_ms is None else p95_ms,
        )
        self._rows[:, self._next] = column
        self._next = (self._next + 1) % self.capacity
        self._count = min(self._count + 1, self.capacity)
        self._add_minutes(np.asarray(column, dtype=np.float64).reshape(ROWS, 1))

    def extend(
        self,
        t: Floats,
        requests: Floats,
        failures: Floats,
        avg_ms: Floats,
        p95_ms: Floats,
        span: float,
    ) -> None:
        """Add many samples at once (history read back, or a benchmark's preload)."""
        n = min(len(t), self.capacity)
        if n == 0:
            return
        requests, avg_ms = requests[-n:], avg_ms[-n:]
        known = ~np.isnan(avg_ms)
        columns = np.vstack(
            (
                t[-n:],
                np.full(n, span),
                requests,
                failures[-n:],
                np.where(known, avg_ms * requests, 0.0),
                np.where(known, requests, 0.0),
                p95_ms[-n:],
            )
        )
        positions = (self._next + np.arange(n)) % self.capacity
        self._rows[:, positions] = columns
        self._next = int((self._next + n) % self.capacity)
        self._count = min(self._count + n, self.capacity)
        self._add_minutes(columns)

    def _add_minutes(self, columns: Floats) -> None:
        """Fold samples into the minute ring, starting a slot afresh when a new minute takes it."""
        minute = np.floor(columns[T] / 60) * 60
        keep = minute > np.nanmax(minute) - MINUTES * 60  # older than the ring holds: dropped
        minute, columns = minute[keep], columns[:, keep]
        starts, which = np.unique(minute, return_inverse=True)
        slots = (starts // 60).astype(np.int64) % MINUTES
        stale = self._minutes[T, slots] != starts
        fresh = slots[stale]
        self._minutes[:, fresh] = 0.0
        self._minutes[P95, fresh] = np.nan
        self._minutes[T, fresh] = starts[stale]
        for row in (SPAN, REQUESTS, FAILURES, WEIGHTED, WEIGHT):
            self._minutes[row, slots] += np.bincount(which, weights=columns[row])
        highest = np.full(len(starts), np.nan)
        np.fmax.at(highest, which, columns[P95])
        self._minutes[P95, slots] = np.fmax(self._minutes[P95, slots], highest)

    def clear(self) -> None:
        self._rows[T] = np.nan
        self._minutes[T] = np.nan
        self._next = self._count = 0

    def binned(self, start: float, end: float, points: int = POINTS) -> Binned:
        """The samples in [start, end) reduced to `points` equal bins: from the minute sums
        when a bin spans at least a minute, otherwise from the samples."""
        rows = self._minutes if (end - start) / points >= 60 else self._rows
        edges = np.linspace(start, end, points + 1)
        centres = (edges[:-1] + edges[1:]) / 2
        times = rows[T]
        # Unused slots hold NaN, which compares false: they fall out with the rest.
        t, span, requests, failures, weighted, weight, p95 = rows[
            :, (times >= start) & (times < end)
        ]
        # The small nudge keeps a sample that starts exactly on a bin's edge in that bin.
        position = (t - start) / (end - start) * points + 1e-9
        index = np.clip(position.astype(np.int64), 0, points - 1)

        def total(values: Floats) -> Floats:
            return np.bincount(index, weights=values, minlength=points)

        bin_requests, bin_failures, bin_seconds = total(requests), total(failures), total(span)
        bin_weighted, bin_weight = total(weighted), total(weight)
        p95_bins = np.full(points, np.nan)
        # A bin's 95th percentile is not derivable from its samples'; their highest is an
        # honest upper estimate.
        np.fmax.at(p95_bins, index, p95)
        with np.errstate(invalid="ignore", divide="ignore"):
            rate = np.where(bin_seconds > 0, bin_requests / np.maximum(bin_seconds, 1e-9), np.nan)
            error_pct = np.where(bin_requests > 0, bin_failures / bin_requests * 100, np.nan)
            avg_ms = np.where(bin_weight > 0, bin_weighted / bin_weight, np.nan)
        return Binned(centres, rate, error_pct, avg_ms, p95_ms=p95_bins)
