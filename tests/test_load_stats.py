"""Intervals of load metrics against known distributions: how often they cover the true
value (coverage), when a quantile's interval can close at all, and what too few requests
give. Seeded draws, so every run checks the same samples; no timing is measured here."""

from __future__ import annotations

import heapq
import math
from collections.abc import Callable

import numpy as np
import pytest
from scipy import stats

from pytest_omni_perf.measure.load_stats import (
    MIN_REQUESTS, LoadInterval, LoadSample, load_intervals, mean_interval, quantile_interval,
    requests_for_end, throughput_interval,
)

Draw = Callable[[], float]


def closed_loop(workers: int, requests: int, service: Draw) -> LoadSample:
    """A closed loop of ``workers`` clients, each sending its next request when its last
    one is answered (the load client at max concurrency ``workers``): latencies and gaps."""
    free = [0.0] * workers
    latencies, finished = [], []
    for _ in range(requests):
        start = heapq.heappop(free)
        latency = service()
        latencies.append(latency)
        finished.append(start + latency)
        heapq.heappush(free, start + latency)
    return LoadSample.from_completions(latencies, finished)


def coverage(trials: int, truth: float, make: Callable[[], LoadInterval]) -> float:
    """Share of ``trials`` intervals from ``make`` that hold ``truth``."""
    hits = 0
    for _ in range(trials):
        interval = make()
        assert interval.low is not None and interval.high is not None
        hits += interval.low <= truth <= interval.high
    return hits / trials


@pytest.mark.parametrize(("p", "high", "low"), [(0.99, 368, 5), (0.95, 72, 5), (0.5, 6, 6)])
def test_requests_an_end_needs_match_scipy(p: float, high: int, low: int) -> None:
    """368 requests for an upper end of the p99 at 95%, 72 for the p95, 6 for the median:
    scipy's order-statistic interval has that end from this count on, not one before."""
    assert (requests_for_end(p, "high"), requests_for_end(p, "low")) == (high, low)
    for confidence in (0.95, 0.9):
        for side in ("low", "high"):
            n = requests_for_end(p, side, confidence)
            data = np.arange(1.0, n + 1)
            closed = getattr(stats.quantile_test(data, p=p).confidence_interval(confidence),
                             side)
            assert math.isfinite(closed), (p, side, confidence, n)
            if n > MIN_REQUESTS:
                before = getattr(stats.quantile_test(data[:-1], p=p).confidence_interval(
                    confidence), side)
                assert math.isnan(before), (p, side, confidence, n)


def test_p99_has_no_upper_end_below_368_requests() -> None:
    rng = np.random.default_rng(1)
    latencies = rng.lognormal(0.0, 0.3, size=368)
    gaps = np.full(368, 0.1)
    short = load_intervals(LoadSample(tuple(latencies[:367]), tuple(gaps[:367])))["latency_p99"]
    assert short.high is None and short.low is not None
    assert "[" in short.describe("s") and "open]" in short.describe("s")
    assert "an upper end needs 368" in short.describe("s")
    full = load_intervals(LoadSample(tuple(latencies), tuple(gaps)))["latency_p99"]
    assert full.high is not None and full.low is not None
    assert full.low <= full.estimate <= full.high


def test_fewer_than_five_requests_give_no_interval() -> None:
    found = load_intervals(LoadSample((1.0, 1.2, 0.9, 1.1), (1.0, 1.2, 0.9, 1.1)))
    assert set(found) == {"latency_mean", "latency_median", "latency_p50", "latency_p95",
                          "latency_p99", "throughput_qps"}
    for interval in found.values():
        assert interval.low is None and interval.high is None and interval.requests == 4
    assert found["latency_mean"].describe("s") == "1.05 s (no interval: 4 requests, needs 5)"
    assert load_intervals(LoadSample()) == {}


def test_gaps_give_completed_requests_over_the_time_to_the_last() -> None:
    sample = LoadSample.from_completions([1.0, 1.0, 1.5, 1.0, 1.2],
                                         [1.0, 1.0, 2.5, 2.0, 3.7])
    assert sample.gaps_s == pytest.approx((1.0, 0.0, 1.0, 0.5, 1.2))
    rate = load_intervals(sample)["throughput_qps"]
    assert rate.estimate == pytest.approx(5 / 3.7)
    assert (sample + sample).requests == 10
    with pytest.raises(ValueError, match="latencies_s: need finite numbers >= 0"):
        LoadSample((float("nan"),))


def test_equal_latencies_give_a_point_interval() -> None:
    mean = load_intervals(LoadSample((0.5,) * 8, (0.5,) * 8))["latency_mean"]
    assert (mean.low, mean.estimate, mean.high) == (0.5, 0.5, 0.5)


def test_mean_latency_interval_covers_a_skewed_mean() -> None:
    """Lognormal latencies (sigma 0.5, right-skewed as request latencies are), 30 requests:
    the 95% BCa interval covers the true mean exp(sigma^2 / 2) in about 95% of trials."""
    rng = np.random.default_rng(7)
    truth = math.exp(0.5 ** 2 / 2)

    def make() -> LoadInterval:
        return mean_interval(rng.lognormal(0.0, 0.5, size=30))

    assert 0.89 <= coverage(300, truth, make) <= 0.99


@pytest.mark.parametrize(("p", "n", "truth"), [
    (0.5, 30, math.log(2)), (0.95, 120, -math.log(0.05))])
def test_quantile_interval_covers_at_least_its_level(p: float, n: int, truth: float) -> None:
    """Exponential latencies (mean 1 s): the order-statistic interval is exact or
    conservative, so it covers the true quantile in at least ~95% of trials."""
    rng = np.random.default_rng(11)

    def make() -> LoadInterval:
        return quantile_interval("latency_p95", rng.exponential(1.0, size=n), p)

    assert coverage(400, truth, make) >= 0.93


@pytest.mark.parametrize(("workers", "shape", "at_least", "at_most"), [
    (1, 4.0, 0.89, 0.99),   # one client: gaps are the latencies, independent
    (2, 1.0, 0.89, 0.99),   # exponential service, 2 clients: gaps are independent Exp(2)
    (4, 20.0, 0.99, 1.0),   # near-constant service, 4 clients: waves, the interval errs wide
])
def test_throughput_interval_covers_the_rate(workers: int, shape: float, at_least: float,
                                             at_most: float) -> None:
    """Closed loops of ``workers`` clients with gamma service times of mean 1 s: the long-run
    throughput is ``workers`` req/s, and the interval of 1 / mean gap covers it about as
    often as it claims, or more where completions come in waves."""
    rng = np.random.default_rng(workers)

    def make() -> LoadInterval:
        sample = closed_loop(workers, 24, lambda: float(rng.gamma(shape, 1.0 / shape)))
        return throughput_interval(np.asarray(sample.gaps_s))

    assert at_least <= coverage(200, float(workers), make) <= at_most
