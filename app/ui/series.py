"""Time series for the live graphs: numpy ring buffers per connection, and binning that turns
any range into at most a few hundred points.

Drawing tens of thousands of points per curve at 10 Hz stalls the window (measured: 86 400
points per curve cost about 100 ms a frame; 900 cost under 1 ms), so a range is always reduced to
`POINTS` bins before it is plotted. Samples may be seconds (live) or minutes (history read back
from the database): each carries requests, failures, average and 95th percentile latency, and
the binning weights them by their requests.
"""

from __future__ import annotations

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


# The rows of a buffer: one array for all fields, so selecting a range is one pass, not six.
T, SPAN, REQUESTS, FAILURES, AVG, P95 = range(6)


class SeriesBuffer:
    """A fixed-size ring of samples for one connection: appending never allocates."""

    def __init__(self, capacity: int = CAPACITY) -> None:
        self.capacity = capacity
        self._rows = np.full((6, capacity), np.nan)
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
        self._rows[:, self._next] = (
            t,
            span,
            requests,
            failures,
            np.nan if avg_ms is None else avg_ms,
            np.nan if p95_ms is None else p95_ms,
        )
        self._next = (self._next + 1) % self.capacity
        self._count = min(self._count + 1, self.capacity)

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
        positions = (self._next + np.arange(n)) % self.capacity
        for row, values in ((T, t), (REQUESTS, requests), (FAILURES, failures)):
            self._rows[row, positions] = values[-n:]
        self._rows[AVG, positions] = avg_ms[-n:]
        self._rows[P95, positions] = p95_ms[-n:]
        self._rows[SPAN, positions] = span
        self._next = int((self._next + n) % self.capacity)
        self._count = min(self._count + n, self.capacity)

    def clear(self) -> None:
        self._rows[T] = np.nan
        self._next = self._count = 0

    def binned(self, start: float, end: float, points: int = POINTS) -> Binned:
        """The samples in [start, end) reduced to `points` equal bins."""
        edges = np.linspace(start, end, points + 1)
        centres = (edges[:-1] + edges[1:]) / 2
        times = self._rows[T]
        # Unused slots hold NaN, which compares false: they fall out with the rest.
        t, span, requests, failures, avg, p95 = self._rows[:, (times >= start) & (times < end)]
        index = np.clip(((t - start) / (end - start) * points).astype(np.int64), 0, points - 1)
        bin_requests = np.bincount(index, weights=requests, minlength=points)
        bin_failures = np.bincount(index, weights=failures, minlength=points)
        bin_seconds = np.bincount(index, weights=span, minlength=points)
        has_avg = ~np.isnan(avg)
        weighted = np.bincount(index[has_avg], weights=(avg * requests)[has_avg], minlength=points)
        weight = np.bincount(index[has_avg], weights=requests[has_avg], minlength=points)
        p95_bins = np.full(points, -np.inf)
        has_p95 = ~np.isnan(p95)
        # A bin's 95th percentile is not derivable from its samples'; their highest is an
        # honest upper estimate.
        np.maximum.at(p95_bins, index[has_p95], p95[has_p95])
        with np.errstate(invalid="ignore", divide="ignore"):
            rate = np.where(bin_seconds > 0, bin_requests / np.maximum(bin_seconds, 1e-9), np.nan)
            error_pct = np.where(bin_requests > 0, bin_failures / bin_requests * 100, np.nan)
            avg_ms = np.where(weight > 0, weighted / weight, np.nan)
        p95_ms = np.where(np.isfinite(p95_bins), p95_bins, np.nan)
        return Binned(centres, rate, error_pct, avg_ms, p95_ms)
