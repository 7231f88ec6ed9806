"""The live graphs' ring buffers and binning: what a plotted point means."""

from __future__ import annotations

import math

import numpy as np

from app.ui.series import SeriesBuffer


def floats(*values: float) -> np.ndarray:
    return np.asarray(values, dtype=np.float64)


def test_a_bin_averages_latency_weighted_by_requests_and_keeps_the_highest_p95() -> None:
    buffer = SeriesBuffer(capacity=10)
    buffer.append(100.0, requests=1, failures=0, avg_ms=10.0, p95_ms=20.0)
    buffer.append(101.0, requests=3, failures=1, avg_ms=30.0, p95_ms=90.0)
    binned = buffer.binned(100.0, 102.0, points=1)
    assert binned.t.tolist() == [101.0]
    assert binned.avg_ms[0] == (1 * 10 + 3 * 30) / 4
    assert binned.p95_ms[0] == 90.0
    assert binned.error_pct[0] == 25.0
    assert binned.rate[0] == 2.0  # 4 requests over 2 seconds


def test_a_bin_without_traffic_is_a_gap_not_a_zero() -> None:
    buffer = SeriesBuffer(capacity=10)
    buffer.append(100.0, requests=2, failures=0, avg_ms=10.0, p95_ms=12.0)
    buffer.append(103.0, requests=0, failures=0, avg_ms=None, p95_ms=None)
    binned = buffer.binned(100.0, 104.0, points=4)
    assert binned.avg_ms[0] == 10.0
    assert all(math.isnan(v) for v in binned.avg_ms[1:])
    assert all(math.isnan(v) for v in binned.error_pct[1:])
    assert binned.rate[3] == 0.0  # a quiet second is known to be quiet
    assert math.isnan(binned.rate[1])  # a second nobody recorded is unknown


def test_minute_samples_count_their_requests_over_the_whole_minute() -> None:
    buffer = SeriesBuffer(capacity=10)
    buffer.extend(
        floats(0.0, 60.0), floats(120, 60), floats(0, 6), floats(5, 7), floats(9, 9), span=60.0
    )
    binned = buffer.binned(0.0, 120.0, points=2)
    assert binned.rate.tolist() == [2.0, 1.0]
    assert binned.error_pct.tolist() == [0.0, 10.0]


def test_the_ring_forgets_the_oldest_samples_once_full() -> None:
    buffer = SeriesBuffer(capacity=3)
    for second in range(5):
        buffer.append(float(second), requests=1, failures=0, avg_ms=float(second), p95_ms=1.0)
    assert len(buffer) == 3
    binned = buffer.binned(0.0, 5.0, points=5)
    assert np.isnan(binned.avg_ms[:2]).all()
    assert binned.avg_ms[2:].tolist() == [2.0, 3.0, 4.0]


def test_history_read_back_after_live_samples_bins_by_time_not_by_arrival() -> None:
    buffer = SeriesBuffer(capacity=10)
    buffer.append(200.0, requests=1, failures=0, avg_ms=50.0, p95_ms=60.0)  # live first
    buffer.extend(floats(0.0), floats(60), floats(0), floats(10), floats(20), span=60.0)
    binned = buffer.binned(0.0, 240.0, points=4)
    assert binned.avg_ms[0] == 10.0
    assert binned.avg_ms[3] == 50.0


def test_extending_past_capacity_keeps_the_newest_samples() -> None:
    buffer = SeriesBuffer(capacity=2)
    buffer.extend(
        floats(1, 2, 3), floats(1, 1, 1), floats(0, 0, 0), floats(1, 2, 3), floats(1, 2, 3), 1.0
    )
    binned = buffer.binned(0.0, 4.0, points=4)
    assert math.isnan(binned.avg_ms[1])
    assert binned.avg_ms[2:].tolist() == [2.0, 3.0]


def test_a_cleared_buffer_plots_nothing() -> None:
    buffer = SeriesBuffer(capacity=4)
    buffer.append(1.0, requests=1, failures=0, avg_ms=1.0, p95_ms=1.0)
    buffer.clear()
    assert len(buffer) == 0
    assert np.isnan(buffer.binned(0.0, 2.0, points=2).avg_ms).all()


def test_a_day_binned_from_minute_sums_agrees_with_binning_every_second() -> None:
    rng = np.random.default_rng(3)
    start = 1_700_000_040.0  # on a minute
    t = start + np.arange(6 * 3600, dtype=np.float64)
    requests = rng.poisson(3, len(t)).astype(np.float64)
    failures = rng.binomial(requests.astype(np.int64), 0.1).astype(np.float64)
    avg = np.where(rng.random(len(t)) < 0.05, np.nan, rng.gamma(4.0, 8.0, len(t)))
    p95 = avg * 2
    minutes = SeriesBuffer()
    minutes.extend(t[:1000], requests[:1000], failures[:1000], avg[:1000], p95[:1000], 1.0)
    for i in range(1000, len(t)):  # the rest as live samples, one at a time
        minutes.append(t[i], requests[i], failures[i], avg[i], p95[i])
    seconds = SeriesBuffer()
    seconds.extend(t, requests, failures, avg, p95, 1.0)
    by_minute = minutes.binned(start, start + 6 * 3600, points=90)  # 4-minute bins
    by_second = seconds.binned(start, start + 6 * 3600, points=90 * 4 * 60)
    assert by_minute.p95_ms.shape == (90,)
    np.testing.assert_allclose(by_minute.p95_ms, np.nanmax(by_second.p95_ms.reshape(90, 240), 1))
    np.testing.assert_allclose(
        by_minute.rate, requests.reshape(90, 240).sum(axis=1) / 240, rtol=1e-9
    )
    np.testing.assert_allclose(
        by_minute.error_pct,
        failures.reshape(90, 240).sum(axis=1) / requests.reshape(90, 240).sum(axis=1) * 100,
    )
    known = ~np.isnan(avg)
    weighted = np.where(known, avg * requests, 0).reshape(90, 240).sum(axis=1)
    weight = np.where(known, requests, 0).reshape(90, 240).sum(axis=1)
    np.testing.assert_allclose(by_minute.avg_ms, weighted / weight)
