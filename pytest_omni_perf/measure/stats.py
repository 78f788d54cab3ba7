"""Latency summaries, the robust location estimate and bootstrap intervals of ratios.

Why not the median: on a shared host, interference (another process on the CPU, a
launch-bound kernel queue starved by a wandering virtual CPU) *adds* time to some rounds and
comes and goes within seconds, so latencies are a mixture of the code's own time and that
time plus interference. The median of such a mixture moves with the share of disturbed
rounds (1.20x for a profile identical to eager on an H200). The minimum does not (Chen &
Revels 2016, "Robust benchmarking in noisy environments"), but it drifts down as rounds are
added and its bootstrap is degenerate, and round counts are adaptive here. The gates use the
Harrell-Davis estimate of the 20% quantile (Harrell & Davis 1982; the weights of
``scipy.stats.mstats.hdquantiles``): a low quantile, so disturbed rounds above it do not move
it, and a weighted sum of every order statistic, so one lucky round does not either.
``benchmarks/estimator_choice.py`` chose it on every committed GPU and CPU sample
(results/estimators/estimator-choice.txt): across H100 hosts its unchanged ratios spread
half as much as the median's (sd of log ratio 0.075 vs 0.155), and it separated a 10%
slowdown from unchanged code best at 5 rounds.

Every ratio a gate compares carries a percentile bootstrap interval
(``scipy.stats.bootstrap``; Efron & Tibshirani 1993), resampling interleaved rounds as
pairs, because both engines of a pair saw the same host state (Kalibera & Jones 2013,
"Rigorous benchmarking in reasonable time": resample at the level where variation arises).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt

LOCATION_QUANTILE = 0.2
"""The quantile of the rounds that gates compare, Harrell-Davis estimated (module docstring)."""
CONFIDENCE = 0.95
"""Two-sided level of every interval. With looks at 5, 10, 15, 22 and 30 rounds and bounds at
least 5% from the expected ratio, 95% kept false failures of unchanged code at 0 of 126 real
CPU trials and under 1% of simulated GPU ones, where 99% cost 7 points of detection of a 10%
slowdown (benchmarks/estimator_choice.py)."""
RUN_SPREAD_GPU = 0.075
"""Run-to-run spread of a ratio on GPU hosts: the sd of the log of one profile's hd20 ratio
to eager across unchanged runs on H100 hosts (benchmarks/estimator_choice.py, table (a)). A
bootstrap over one run's rounds cannot see it: on one H200, cache_dit measured 1.08x
[1.06, 1.12] in one run and 1.55x [1.28, 1.85] in the next (results/h200/trust/A)."""
RUN_SPREAD_CPU = 0.02
"""The same on CPUs: unchanged CPU trials, sd of the log ratio 0.018 (estimator_choice)."""
MIN_ROUNDS_FOR_INTERVAL = 5
"""Below this many rounds per arm a bootstrap interval is too narrow to trust: no verdict."""
BOOTSTRAP_RESAMPLES = 4999
_SEED = 20161208  # fixed: the same samples always give the same interval and verdict

_STAT_FIELDS = ("median", "p90", "mean", "stdev", "min", "max")
_OPTIONAL_FIELDS = ("p99", "estimate")


def _checked_samples(samples: Sequence[float], what: str) -> list[float]:
    values = [float(s) for s in samples]
    if not values:
        raise ValueError(f"{what}: need at least one sample")
    bad = [s for s in values if not math.isfinite(s) or s < 0]
    if bad:
        raise ValueError(f"{what}: samples must be finite and >= 0 seconds, got {bad[0]!r}")
    return values


def location(samples: Sequence[float]) -> float:
    """The robust latency estimate of ``samples`` (seconds): the Harrell-Davis estimate of
    their LOCATION_QUANTILE, equal to ``scipy.stats.mstats.hdquantiles(samples,
    prob=[LOCATION_QUANTILE])``. Raises ``ValueError`` for no samples or a negative or
    non-finite one.
    """
    import numpy as np

    values = _checked_samples(samples, "location")
    return float(_location_along(np.asarray(values, dtype=np.float64), -1))


def _location_along(values: npt.NDArray[np.float64], axis: int) -> Any:
    """Harrell-Davis quantile along ``axis`` (the last one for the bootstrap's batches): the
    order statistics weighted by the increments of the Beta((n+1)q, (n+1)(1-q)) CDF over
    [i-1, i]/n, vectorized so the bootstrap can resample it."""
    import numpy as np
    from scipy import stats as scipy_stats

    n = values.shape[axis]
    q = LOCATION_QUANTILE
    edges = scipy_stats.beta.cdf(np.arange(n + 1) / n, (n + 1) * q, (n + 1) * (1 - q))
    ordered = np.moveaxis(np.sort(values, axis=axis), axis, -1)
    return ordered @ np.diff(edges)


@dataclasses.dataclass(frozen=True)
class LatencyStats:
    """Summary of latency samples in seconds (``stdev`` is the sample stdev, 0 for n=1).

    ``estimate`` is the robust location the gates compare (see :func:`location`); the
    others are for people. ``samples`` keeps the raw values in measurement order so a stored
    baseline can be compared again later; it may be empty for stats read from older files.
    """

    n: int
    median: float
    p90: float
    mean: float
    stdev: float
    min: float
    max: float
    samples: tuple[float, ...] = ()
    p99: float | None = None
    estimate: float | None = None

    @classmethod
    def from_samples(cls, samples: Sequence[float]) -> LatencyStats:
        """Summarize ``samples`` (seconds, n >= 1); percentiles as ``numpy.percentile``."""
        import numpy as np

        values = _checked_samples(samples, "LatencyStats.from_samples")
        array = np.asarray(values, dtype=np.float64)
        p90, p99, median = (float(v) for v in np.percentile(array, [90.0, 99.0, 50.0]))
        return cls(
            n=len(values), median=median, p90=p90, p99=p99, mean=float(array.mean()),
            stdev=float(array.std(ddof=1)) if len(values) > 1 else 0.0,
            min=float(array.min()), max=float(array.max()), samples=tuple(values),
            estimate=location(values),
        )

    @property
    def robust(self) -> float:
        """``estimate`` where known, else the median (stats read from older files)."""
        return self.median if self.estimate is None else self.estimate

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict; :meth:`from_dict` reads it back."""
        found: dict[str, Any] = {"n": self.n, **{k: getattr(self, k) for k in _STAT_FIELDS}}
        found.update({k: getattr(self, k) for k in _OPTIONAL_FIELDS
                      if getattr(self, k) is not None})
        found["samples"] = list(self.samples)
        return found

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> LatencyStats:
        """Read :meth:`to_dict`'s output (e.g. from a baseline's JSON), validating it.

        Raises ``ValueError`` naming the offending key. Unknown keys are ignored so files
        written by newer versions still load; ``samples``, ``p99`` and ``estimate`` are
        optional (older files lack them).
        """
        if not isinstance(data, Mapping):
            raise ValueError(f"latency stats must be a JSON object, got {type(data).__name__}")
        missing = [k for k in ("n", *_STAT_FIELDS) if k not in data]
        if missing:
            raise ValueError(f"latency stats lack key(s) {', '.join(missing)}: {dict(data)!r}")
        n = data["n"]
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise ValueError(f"latency stats key 'n' must be an integer >= 1, got {n!r}")
        values: dict[str, Any] = {}
        for key in (*_STAT_FIELDS, *_OPTIONAL_FIELDS):
            v = data.get(key)
            if v is None and key in _OPTIONAL_FIELDS:
                continue
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
                raise ValueError(f"latency stats key {key!r} must be a finite number, got {v!r}")
            values[key] = float(v)
        raw = data.get("samples", [])
        if not isinstance(raw, (list, tuple)) or any(
            isinstance(s, bool) or not isinstance(s, (int, float)) for s in raw
        ):
            raise ValueError(f"latency stats key 'samples' must be a list of numbers, got {raw!r}")
        if raw and len(raw) != n:
            raise ValueError(f"latency stats have n={n} but {len(raw)} samples")
        return cls(n=n, samples=tuple(float(s) for s in raw), **values)


@dataclasses.dataclass(frozen=True)
class Arm:
    """The rounds of one engine in one run, and of its baseline profile beside it.

    ``samples``: the profile's latencies (s). ``reference``: the baseline profile's
    latencies in the same run, or None. ``paired``: the two alternated round by round
    (equal lengths), so a round and its partner saw the same host state.
    ``reference_point``: a fixed reference value (s) where only a number was kept (older
    stored baselines); used when ``reference`` is None.
    """

    samples: tuple[float, ...]
    reference: tuple[float, ...] | None = None
    paired: bool = False
    reference_point: float | None = None

    def __post_init__(self) -> None:
        _checked_samples(self.samples, "Arm.samples")
        if self.reference is not None:
            _checked_samples(self.reference, "Arm.reference")
            if self.paired and len(self.reference) != len(self.samples):
                raise ValueError(f"paired arms need equal lengths, got {len(self.samples)} "
                                 f"and {len(self.reference)}")

    @property
    def relative(self) -> bool:
        """Whether this arm's value is relative to a baseline profile."""
        return self.reference is not None or self.reference_point is not None


@dataclasses.dataclass(frozen=True)
class RatioInterval:
    """A ratio, its percentile-bootstrap interval and what it was computed from.

    ``estimate``: the ratio of robust locations; ``low``/``high``: the two-sided interval at
    ``confidence`` (equal to ``estimate`` when ``rounds`` is below MIN_ROUNDS_FOR_INTERVAL,
    and then ``decisive`` is False); ``rounds``: the fewest rounds of any arm behind it.
    """

    estimate: float
    low: float
    high: float
    confidence: float
    rounds: int
    spread: float = 0.0
    """Run-to-run sd of the log ratio folded into ``low``/``high`` (see :func:`widened`)."""
    within_low: float | None = None
    within_high: float | None = None
    """The bootstrap interval of this run's rounds alone, before the spread was added."""
    spread_origin: str = ""
    """Where ``spread`` came from, as ``describe`` says it (e.g. "2.0% x sqrt(2), the
    built-in CPU default, not measured here"); empty when unknown."""

    @property
    def decisive(self) -> bool:
        """Enough rounds for the interval to carry a verdict."""
        return self.rounds >= MIN_ROUNDS_FOR_INTERVAL

    @property
    def narrowable(self) -> bool:
        """Whether more rounds can still narrow it much: the rounds' own part is wider than
        the run-to-run part (or there is no interval yet)."""
        if not self.decisive:
            return True
        low = self.low if self.within_low is None else self.within_low
        high = self.high if self.within_high is None else self.within_high
        within = math.log(high / low) / 2 if low > 0 else math.inf
        return within > _z(self.confidence) * self.spread

    def describe(self, unit: str = "x") -> str:
        """e.g. ``1.234x [1.180, 1.301] (95% CI, 15 rounds, run-to-run spread 7.5%)``."""
        if not self.decisive:
            return f"{self.estimate:.3f}{unit} (no interval: {self.rounds} rounds)"
        spread = f", run-to-run spread {self.spread:.1%}" if self.spread else ""
        if spread and self.spread_origin:
            spread += f" from {self.spread_origin}"
        return (f"{self.estimate:.3f}{unit} [{self.low:.3f}, {self.high:.3f}] "
                f"({self.confidence:.0%} CI, {self.rounds} rounds{spread})")

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready."""
        return dataclasses.asdict(self)


def _arm_value(arm: Arm, own: Any, ref: Any, axis: int) -> Any:
    """Robust location of ``arm.samples[own]``, divided by that of its reference
    (``arm.reference[ref]``, or ``[own]`` when paired) or by its fixed reference point.
    ``own``/``ref``: index arrays of shape (..., n); the result has the leading shape."""
    import numpy as np

    value = _location_along(np.asarray(arm.samples, dtype=np.float64)[own], axis)
    if arm.reference is not None:
        pick = own if arm.paired else ref
        value = value / _location_along(np.asarray(arm.reference, dtype=np.float64)[pick],
                                         axis)
    elif arm.reference_point is not None:
        value = value / arm.reference_point
    return value


def _value(arm: Arm) -> float:
    """The arm's point value: every round once."""
    import numpy as np

    own = np.arange(len(arm.samples))
    ref = np.arange(len(arm.reference)) if arm.reference is not None else own
    return float(_arm_value(arm, own, ref, -1))


def ratio_interval(numerator: Arm, denominator: Arm, *,
                   confidence: float = CONFIDENCE) -> RatioInterval:
    """Interval of value(numerator) / value(denominator), the two arms independent.

    ``value(arm)``: the robust location of the arm's samples, relative to its reference
    when it has one. Speedup: ``ratio_interval(Arm(baseline), Arm(profile))`` with the two
    rounds of one run as one arm pair: see :func:`speedup_interval`. Stored comparison:
    ``ratio_interval(current_arm, stored_arm)``. Raises ``ValueError`` on bad samples.
    """
    if not 0.5 <= confidence < 1.0:
        raise ValueError(f"confidence must lie in [0.5, 1), got {confidence!r}")
    estimate = _value(numerator) / _value(denominator)
    rounds = min(len(numerator.samples), len(denominator.samples))
    if rounds < MIN_ROUNDS_FOR_INTERVAL:
        return RatioInterval(estimate, estimate, estimate, confidence, rounds)
    low, high = _bootstrap([numerator, denominator], confidence,
                           lambda values: values[0] / values[1])
    return RatioInterval(estimate, min(low, estimate), max(high, estimate), confidence, rounds)


def ratio_to_level(arm: Arm, level: float, *,
                   confidence: float = CONFIDENCE) -> RatioInterval:
    """Interval of value(arm) / ``level``, a fixed number in the arm's units (e.g. the level
    of a series' accepted runs in the history); only the arm's rounds are resampled. Raises
    ``ValueError`` for a level that is not a finite number > 0."""
    if not (math.isfinite(level) and level > 0):
        raise ValueError(f"level must be a finite number > 0, got {level!r}")
    estimate = _value(arm) / level
    rounds = len(arm.samples)
    if rounds < MIN_ROUNDS_FOR_INTERVAL:
        return RatioInterval(estimate, estimate, estimate, confidence, rounds)
    low, high = _bootstrap([arm], confidence, lambda values: values[0] / level)
    return RatioInterval(estimate, min(low, estimate), max(high, estimate), confidence, rounds)


def speedup_interval(baseline: Sequence[float], profile: Sequence[float], *, paired: bool,
                     confidence: float = CONFIDENCE) -> RatioInterval:
    """How many times faster ``profile`` is than ``baseline`` (latencies in s), with an
    interval: location(baseline) / location(profile). ``paired``: the rounds alternated
    (equal lengths), so round i of each is resampled together."""
    arm = Arm(tuple(profile), tuple(baseline), paired=paired)
    estimate = 1.0 / _value(arm)
    rounds = min(len(profile), len(baseline))
    if rounds < MIN_ROUNDS_FOR_INTERVAL:
        return RatioInterval(estimate, estimate, estimate, confidence, rounds)
    low, high = _bootstrap([arm], confidence, lambda values: 1.0 / values[0])
    return RatioInterval(estimate, min(low, estimate), max(high, estimate), confidence, rounds)


def _bootstrap(arms: Sequence[Arm], confidence: float,
               combine: Callable[[list[Any]], Any]) -> tuple[float, float]:
    """Percentile bootstrap of ``combine([value(arm) for arm in arms])``.

    scipy.stats.bootstrap resamples each data array independently (``paired=False``); the
    arrays are round indices, so a paired arm's rounds move together, and an unpaired
    arm's reference gets an index array of its own.
    """
    import numpy as np
    from scipy import stats as scipy_stats

    data: list[Any] = []
    layout: list[tuple[int, int]] = []  # per arm: position of its index array, its reference's
    for arm in arms:
        own = len(data)
        data.append(np.arange(len(arm.samples)))
        ref = own
        if arm.reference is not None and not arm.paired:
            ref = len(data)
            data.append(np.arange(len(arm.reference)))
        layout.append((own, ref))

    def statistic(*indices: Any, axis: int = -1) -> Any:
        return combine([_arm_value(arm, indices[own], indices[ref], axis)
                        for arm, (own, ref) in zip(arms, layout)])

    result = scipy_stats.bootstrap(
        tuple(data), statistic, n_resamples=BOOTSTRAP_RESAMPLES, vectorized=True,
        paired=False, confidence_level=confidence, method="percentile",
        rng=np.random.default_rng(_SEED))
    return float(result.confidence_interval.low), float(result.confidence_interval.high)


def _z(confidence: float) -> float:
    """Two-sided normal quantile of ``confidence`` (``scipy.stats.norm.ppf``)."""
    from scipy import stats as scipy_stats

    return float(scipy_stats.norm.ppf(0.5 + confidence / 2))


def widened(interval: RatioInterval, spread: float, runs: float = 1,
            origin: str = "") -> RatioInterval:
    """``interval`` with the run-to-run variation added: in log space the bootstrap's half-
    widths and ``z * spread * sqrt(runs)`` add in quadrature (independent variances), on
    each side. ``spread``: sd of the log ratio between unchanged runs (RUN_SPREAD_GPU,
    RUN_SPREAD_CPU, or measured); ``runs``: how many runs' variation the ratio carries (2 for
    this run against a stored one; 1 + 1/n against the level of n runs); ``origin``: where
    ``spread`` came from, for ``describe`` (a newcomer read the CPU default as measured).
    Undecisive intervals are returned as they are."""
    if not (math.isfinite(spread) and spread >= 0):
        raise ValueError(f"spread must be a finite number >= 0, got {spread!r}")
    if not interval.decisive or spread == 0 or interval.estimate <= 0:
        return interval
    extra = _z(interval.confidence) * spread * math.sqrt(runs)
    centre = math.log(interval.estimate)

    def side(bound: float) -> float:
        own = abs(math.log(bound) - centre) if bound > 0 else math.inf
        return math.hypot(own, extra)

    return dataclasses.replace(
        interval, low=math.exp(centre - side(interval.low)),
        high=math.exp(centre + side(interval.high)), spread=spread * math.sqrt(runs),
        within_low=interval.low, within_high=interval.high,
        spread_origin=origin if not origin or runs == 1
        else f"{spread:.1%} x sqrt({runs:.3g}), {origin}")
