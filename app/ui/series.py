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


class SeriesBuffer:
    """A fixed-size ring of samples for one connection: appending never allocates."""

    def __init__(self, capacity: int = CAPACITY) -> None:
        self.capacity = capacity
        self._t = np.full(capacity, np.nan)
        self._span = np.zeros(capacity)  # seconds each sample covers (1 live, 60 history)
        self._requests = np.zeros(capacity)
        self._failures = np.zeros(capacity)
        self._avg = np.full(capacity, np.nan)
        self._p95 = np.full(capacity, np.nan)
        self._next = 0
        self._count = 0

    def __len__(self) -> int:
        return self._count

    @property
    def last_time(self) -> float | None:
        return float(self._t[(self._next - 1) % self.capacity]) if self._count else None

    def append(
        self,
        t: float,
        requests: float,
        failures: float,
        avg_ms: float | None,
        p95_ms: float | None,
        span: float = 1.0,
    ) -> None:
        i = self._next
        self._t[i] = t
        self._span[i] = span
        self._requests[i] = requests
        self._failures[i] = failures
        self._avg[i] = np.nan if avg_ms is None else avg_ms
        self._p95[i] = np.nan if p95_ms is None else p95_ms
        self._next = (i + 1) % self.capacity
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
        n = len(t)
        if n == 0:
            return
        if n > self.capacity:
            t, requests, failures = (
                t[-self.capacity :],
                requests[-self.capacity :],
                failures[-self.capacity :],
            )
            avg_ms, p95_ms = avg_ms[-self.capacity :], p95_ms[-self.capacity :]
            n = self.capacity
        positions = (self._next + np.arange(n)) % self.capacity
        self._t[positions] = t
        self._span[positions] = span
        self._requests[positions] = requests
        self._failures[positions] = failures
        self._avg[positions] = avg_ms
        self._p95[positions] = p95_ms
        self._next = int((self._next + n) % self.capacity)
        self._count = min(self._count + n, self.capacity)

    def clear(self) -> None:
        self._t[:] = np.nan
        self._next = self._count = 0

    def binned(self, start: float, end: float, points: int = POINTS) -> Binned:
        """The samples in [start, end) reduced to `points` equal bins."""
        edges = np.linspace(start, end, points + 1)
        centres = (edges[:-1] + edges[1:]) / 2
        used = ~np.isnan(self._t)
        mask = used & (self._t >= start) & (self._t < end)
        t = self._t[mask]
        index = np.clip(((t - start) / (end - start) * points).astype(np.int64), 0, points - 1)
        requests = self._requests[mask]
        failures = self._failures[mask]
        span = self._span[mask]
        avg = self._avg[mask]
        p95 = self._p95[mask]
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
