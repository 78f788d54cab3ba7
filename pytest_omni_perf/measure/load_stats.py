"""Confidence intervals of the metrics a load measures (``scipy.stats`` only).

A load bound (``latency_mean`` at most 3.5 s, ``throughput_qps`` at least 0.3 req/s, ...)
is judged on an interval, as single-request gates are (``measure/stats.py``): a handful of
requests says little about their mean, and nothing about their 99th percentile. Each metric
gets a two-sided interval at ``confidence`` (0.95 by default, ``--omni-confidence``):

- **mean latency**: ``scipy.stats.bootstrap`` of the mean of the completed requests'
  latencies, BCa (bias-corrected and accelerated, Efron & Tibshirani 1993, ch. 14): latency
  distributions are right-skewed, where the percentile bootstrap's ends sit too low.
- **latency quantiles** (median/p50, p95, p99): the distribution-free order-statistic
  interval of ``scipy.stats.quantile_test(...).confidence_interval`` (Conover 1999, 3.2). It
  needs enough requests to have an order statistic beyond the quantile on each side: an
  upper end of the p-quantile exists only when ``p**n <= (1 - confidence) / 2``, i.e. from
  368 requests for p99, 72 for p95 and 6 for the median at 95%. Below that the end is open
  (None) and a bound needing it cannot be decided.
- **throughput**: completions per second is 1 / the mean gap between successive
  completions (the first gap measured from the first send), so its interval is the
  ``scipy.stats.bootstrap`` (BCa) interval of the mean gap, inverted (BCa respects monotone
  transformations: the same as bootstrapping 1 / mean gap); the point value equals the
  completed requests over the time to the last one, as vLLM-Omni's benchmark client reports
  it. Resampling gaps one by one treats them as exchangeable. At a concurrency above 1 the
  requests of a wave finish together (a short gap, then a long one); such gaps vary less in
  their mean than independent ones, so the interval errs wide (simulated closed loops of 2
  and 4 workers with near-constant service times covered the true rate in every trial,
  ``tests/test_load_stats.py``). Stretches of a slow host make gaps positively correlated,
  which makes it too narrow: the same holds for every other interval here and in
  ``measure/stats.py``.

Fewer than ``MIN_REQUESTS`` completed requests give no interval at all. Units: seconds for
latencies and gaps, requests per second for throughput.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, Literal

from pytest_omni_perf.measure.stats import BOOTSTRAP_RESAMPLES, CONFIDENCE, MIN_ROUNDS_FOR_INTERVAL

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt

MIN_REQUESTS = MIN_ROUNDS_FOR_INTERVAL
"""Below this many completed requests no load metric gets an interval: no verdict."""
QUANTILES: Mapping[str, float] = {
    "latency_median": 0.5, "latency_p50": 0.5, "latency_p95": 0.95, "latency_p99": 0.99}
"""Latency metric -> the quantile it is (the names case files and ``LoadResult`` use)."""
METHODS: Mapping[str, str] = {
    "latency_mean": "BCa bootstrap of the mean (scipy.stats.bootstrap)",
    **{name: "order statistics (scipy.stats.quantile_test)" for name in QUANTILES},
    "throughput_qps": "1 / BCa bootstrap of the mean inter-completion gap "
                      "(scipy.stats.bootstrap)",
}
"""How each metric's interval is computed, in words for reports."""
_SEED = 20240607  # fixed: the same requests always give the same interval and verdict

Side = Literal["low", "high"]


@dataclasses.dataclass(frozen=True)
class LoadSample:
    """What the intervals are computed from: the completed requests of one level.

    ``latencies_s``: each completed request's client-side latency (s). ``gaps_s``: the
    seconds between successive completions, the first from the first send (their sum is the
    time to the last completion). Two samples add up (``a + b``) when a level is run again
    (``--omni-inconclusive=retry``): requests and gaps are pooled, the pause between the
    runs left out.
    """

    latencies_s: tuple[float, ...] = ()
    gaps_s: tuple[float, ...] = ()

    def __post_init__(self) -> None:
        for name in ("latencies_s", "gaps_s"):
            bad = [v for v in getattr(self, name) if not (math.isfinite(v) and v >= 0)]
            if bad:
                raise ValueError(f"LoadSample.{name}: need finite numbers >= 0, got {bad[0]!r}")

    @classmethod
    def from_completions(cls, latencies_s: Sequence[float], finished_s: Sequence[float]
                         ) -> LoadSample:
        """From completed requests' latencies and finish times (s since the first send)."""
        ordered = sorted(finished_s)
        return cls(tuple(latencies_s),
                   tuple(b - a for a, b in zip([0.0, *ordered[:-1]], ordered)))

    def __add__(self, other: LoadSample) -> LoadSample:
        return LoadSample(self.latencies_s + other.latencies_s, self.gaps_s + other.gaps_s)

    @property
    def requests(self) -> int:
        """Completed requests."""
        return len(self.latencies_s)


@dataclasses.dataclass(frozen=True)
class LoadInterval:
    """One load metric, its point value and its two-sided interval.

    ``low``/``high``: the interval's ends, None where it has none: no interval at all below
    ``MIN_REQUESTS`` requests, or a quantile with too few requests on that side (``needs``).
    """

    metric: str
    estimate: float
    low: float | None
    high: float | None
    confidence: float
    requests: int
    method: str
    needs: Mapping[Side, int] = dataclasses.field(default_factory=dict)
    """Completed requests each end needs to exist ("low", "high"): MIN_REQUESTS, or more
    for a quantile (p99: 368 for "high" at 95%)."""

    def end(self, side: Side) -> float | None:
        return self.low if side == "low" else self.high

    def describe(self, unit: str) -> str:
        """e.g. ``0.412 s [0.398, 0.431] (95% CI, 20 requests)``; an open end reads
        ``open`` and says how many requests would close it."""
        if self.low is None and self.high is None:
            needs = max(self.needs.values(), default=MIN_REQUESTS)
            if not self.requests:
                return f"none (no request completed; an interval needs {needs})"
            return (f"{self.estimate:.4g} {unit} (no interval: {self.requests} requests, "
                    f"needs {needs})")

        def show(side: Side) -> str:
            value = self.end(side)
            return "open" if value is None else f"{value:.4g}"

        closing = "; ".join(f"{'an upper' if side == 'high' else 'a lower'} end needs "
                            f"{self.needs[side]}" for side in ("low", "high")
                            if self.end(side) is None)
        return (f"{self.estimate:.4g} {unit} [{show('low')}, {show('high')}] "
                f"({self.confidence:.0%} CI, {self.requests} requests"
                + (f"; {closing}" if closing else "") + ")")

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready."""
        return {**dataclasses.asdict(self), "needs": dict(self.needs)}


def requests_needed(metric: str, confidence: float = CONFIDENCE) -> dict[Side, int]:
    """Completed requests each end of ``metric``'s interval needs: ``requests_for_end`` for
    a quantile, MIN_REQUESTS for the bootstrapped mean and throughput."""
    p = QUANTILES.get(metric)
    if p is None:
        return dict.fromkeys(("low", "high"), MIN_REQUESTS)
    return {side: requests_for_end(p, side, confidence) for side in ("low", "high")}


def requests_for_end(p: float, side: Side, confidence: float = CONFIDENCE) -> int:
    """Fewest requests for which a two-sided ``confidence`` interval of the ``p``-quantile
    has an end on ``side``: its upper end is the largest request only when all n fall below
    the quantile with probability ``p**n <= (1 - confidence) / 2`` (lower end: ``(1-p)**n``),
    so n >= log((1 - confidence) / 2) / log(p). 368 for p99 "high" at 95%, 72 for p95, 6 for
    the median; at least MIN_REQUESTS."""
    tail = (1.0 - confidence) / 2
    below = p if side == "high" else 1.0 - p
    # 1e-9: log ratios that are whole numbers in exact arithmetic must not round up.
    return max(MIN_REQUESTS, math.ceil(math.log(tail) / math.log(below) - 1e-9))


def load_intervals(sample: LoadSample, confidence: float = CONFIDENCE
                   ) -> dict[str, LoadInterval]:
    """The interval of every load metric (latency_mean, latency_median/p50/p95/p99,
    throughput_qps) of ``sample``; empty when no request completed."""
    if not sample.requests:
        return {}
    import numpy as np

    latencies = np.asarray(sample.latencies_s, dtype=np.float64)
    found = {"latency_mean": mean_interval(latencies, confidence)}
    for name, p in QUANTILES.items():
        found[name] = quantile_interval(name, latencies, p, confidence)
    gaps = np.asarray(sample.gaps_s, dtype=np.float64)
    if gaps.size and gaps.sum() > 0:
        found["throughput_qps"] = throughput_interval(gaps, confidence)
    return found


def mean_interval(latencies: npt.NDArray[np.float64], confidence: float = CONFIDENCE
                  ) -> LoadInterval:
    """``latency_mean``: the mean of ``latencies`` (s) and its BCa bootstrap interval."""
    return _bootstrapped("latency_mean", latencies, confidence)


def throughput_interval(gaps: npt.NDArray[np.float64], confidence: float = CONFIDENCE
                        ) -> LoadInterval:
    """``throughput_qps``: 1 / the mean inter-completion gap (``gaps`` in s, summing to more
    than 0) in requests per second, and its interval: the BCa bootstrap interval of the mean
    gap, inverted. BCa intervals respect monotone transformations, so this is the BCa
    interval of 1 / mean gap, without dividing by resamples whose gaps are all 0 (an upper
    end of inf then: never a pass or a fail by itself)."""
    gap = _bootstrapped("throughput_qps", gaps, confidence)

    def inverse(value: float | None) -> float | None:
        return None if value is None else math.inf if value == 0 else 1.0 / value

    return dataclasses.replace(gap, estimate=1.0 / gap.estimate, low=inverse(gap.high),
                               high=inverse(gap.low))


def quantile_interval(name: str, latencies: npt.NDArray[np.float64], p: float,
                      confidence: float = CONFIDENCE) -> LoadInterval:
    """``numpy.percentile`` of ``latencies`` at ``p`` and the order-statistic interval of
    ``scipy.stats.quantile_test``; an end that needs more requests than there are is None."""
    import numpy as np
    from scipy import stats as scipy_stats

    n = latencies.size
    needs: dict[Side, int] = {side: requests_for_end(p, side, confidence)
                              for side in ("low", "high")}
    estimate = float(np.percentile(latencies, 100 * p))
    if n < MIN_REQUESTS:
        return LoadInterval(name, estimate, None, None, confidence, n, METHODS[name], needs)
    ci = scipy_stats.quantile_test(latencies, p=p).confidence_interval(confidence)

    def closed(value: float, side: Side) -> float | None:
        # scipy answers nan where no order statistic reaches; the count decides, not nan.
        return float(value) if n >= needs[side] and math.isfinite(value) else None

    low, high = closed(ci.low, "low"), closed(ci.high, "high")
    return LoadInterval(name, estimate, None if low is None else min(low, estimate),
                        None if high is None else max(high, estimate), confidence, n,
                        METHODS[name], needs)


def _bootstrapped(name: str, values: npt.NDArray[np.float64],
                  confidence: float) -> LoadInterval:
    """The mean of ``values`` and its BCa bootstrap interval; the point value when every
    value is equal (the bootstrap has nothing to resample), none below MIN_REQUESTS."""
    import numpy as np
    from scipy import stats as scipy_stats

    estimate = float(np.mean(values))
    n = values.size
    needs = requests_needed(name, confidence)
    if n < MIN_REQUESTS:
        return LoadInterval(name, estimate, None, None, confidence, n, METHODS[name], needs)
    if float(np.ptp(values)) == 0.0:
        return LoadInterval(name, estimate, estimate, estimate, confidence, n, METHODS[name],
                            needs)
    result = scipy_stats.bootstrap(
        (values,), np.mean, n_resamples=BOOTSTRAP_RESAMPLES, vectorized=True,
        confidence_level=confidence, method="BCa", rng=np.random.default_rng(_SEED))
    low, high = float(result.confidence_interval.low), float(result.confidence_interval.high)
    if not (math.isfinite(low) and math.isfinite(high)):
        # BCa's acceleration is undefined for some tiny, tied samples: the percentile ends.
        low, high = (float(v) for v in np.percentile(result.bootstrap_distribution,
                                                      [50 * (1 - confidence),
                                                       50 * (1 + confidence)]))
    return LoadInterval(name, estimate, min(low, estimate), max(high, estimate), confidence,
                        n, METHODS[name], needs)
