"""Tests of pytest_omni_perf.measure.stats: summaries, the robust estimate, intervals."""

from __future__ import annotations

import dataclasses
import json
import math
import random
from typing import Any

import pytest

from pytest_omni_perf.measure.stats import (
    Arm,
    LatencyStats,
    location,
    ratio_interval,
    ratio_to_level,
    speedup_interval,
)


def test_stats_of_known_samples() -> None:
    s = LatencyStats.from_samples([3.0, 1.0, 2.0, 5.0, 4.0])
    assert (s.n, s.median, s.mean, s.min, s.max) == (5, 3.0, 3.0, 1.0, 5.0)
    assert s.stdev == pytest.approx(math.sqrt(2.5))
    assert s.p90 == pytest.approx(4.6)  # position 0.9 * 4 = 3.6 between 4 and 5
    assert s.samples == (3.0, 1.0, 2.0, 5.0, 4.0)


def test_even_count_median_and_single_sample() -> None:
    assert LatencyStats.from_samples([4.0, 1.0, 3.0, 2.0]).median == 2.5
    one = LatencyStats.from_samples([0.25])
    assert (one.n, one.median, one.p90, one.mean, one.stdev) == (1, 0.25, 0.25, 0.25, 0.0)


def test_p90_matches_numpy_percentile() -> None:
    np = pytest.importorskip("numpy")
    rng = random.Random(7)
    for n in (2, 3, 7, 10, 11, 33):
        samples = [rng.lognormvariate(0, 0.5) for _ in range(n)]
        s = LatencyStats.from_samples(samples)
        assert s.p90 == pytest.approx(float(np.percentile(samples, 90)), rel=1e-12)
        assert s.median == pytest.approx(float(np.median(samples)), rel=1e-12)
        assert s.stdev == pytest.approx(float(np.std(samples, ddof=1)), rel=1e-9)


@pytest.mark.parametrize("bad", [[], [1.0, float("nan")], [float("inf")], [-0.1]])
def test_from_samples_rejects_bad_samples(bad: list[float]) -> None:
    with pytest.raises(ValueError, match="sample"):
        LatencyStats.from_samples(bad)


def test_dict_round_trip_through_json() -> None:
    s = LatencyStats.from_samples([0.51, 0.49, 0.5, 0.7])
    back = LatencyStats.from_dict(json.loads(json.dumps(s.to_dict())))
    assert back == s
    # Unknown keys (written by a newer version) are ignored; samples are optional.
    d = s.to_dict()
    del d["samples"]
    d["future_field"] = 1
    assert LatencyStats.from_dict(d) == dataclasses.replace(s, samples=())


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"median": None}, "'median' must be a finite number"),
        ({"p90": "0.5"}, "'p90' must be a finite number"),
        ({"max": float("nan")}, "'max' must be a finite number"),
        ({"n": 0}, "'n' must be an integer >= 1"),
        ({"n": True}, "'n' must be an integer >= 1"),
        ({"n": 2.0}, "'n' must be an integer >= 1"),
        ({"samples": "0.5"}, "'samples' must be a list"),
        ({"samples": [0.5]}, "n=3 but 1 samples"),
    ],
)
def test_from_dict_rejects_malformed(change: dict[str, Any], message: str) -> None:
    d = LatencyStats.from_samples([0.5, 0.6, 0.7]).to_dict()
    d.update(change)
    with pytest.raises(ValueError, match=message):
        LatencyStats.from_dict(d)


def test_from_dict_names_missing_keys() -> None:
    d = LatencyStats.from_samples([0.5]).to_dict()
    del d["p90"], d["stdev"]
    with pytest.raises(ValueError, match="lack key.*p90, stdev"):
        LatencyStats.from_dict(d)
    with pytest.raises(ValueError, match="JSON object"):
        LatencyStats.from_dict([1, 2])  # type: ignore[arg-type]


def test_location_is_scipys_harrell_davis_20_percent_quantile() -> None:
    mstats = pytest.importorskip("scipy.stats.mstats")
    rng = random.Random(3)
    assert location([0.7]) == 0.7  # hdquantiles masks n=1; one sample is its own estimate
    for n in (2, 5, 15, 40):
        samples = [rng.lognormvariate(0, 0.3) for _ in range(n)]
        expected = float(mstats.hdquantiles(samples, prob=[0.2])[0])
        assert location(samples) == pytest.approx(expected, rel=1e-12)
        assert LatencyStats.from_samples(samples).estimate == location(samples)


def test_additive_interference_moves_the_median_not_the_estimate() -> None:
    """7 of 15 rounds disturbed by +30% (the bimodal H200 case): the median of the mixture
    moves with the disturbed share, the low quantile stays on the undisturbed level."""
    quiet = [1.0 + 0.001 * i for i in range(15)]
    disturbed = [t * 1.3 if i % 2 else t for i, t in enumerate(quiet)]
    assert LatencyStats.from_samples(disturbed).median > 1.005 * LatencyStats.from_samples(
        quiet).median
    assert location(disturbed) == pytest.approx(location(quiet), rel=0.01)


def test_paired_interval_cancels_drift_that_hits_both_engines() -> None:
    """Host speed drifting over the run (both engines alike): the paired interval of a
    true 2x speedup stays narrow around 2."""
    drift = [1.0 + 0.5 * math.sin(i / 3) for i in range(20)]
    base = [1.0 * d for d in drift]
    profile = [0.5 * d * (1 + 0.01 * (i % 3)) for i, d in enumerate(drift)]
    paired = speedup_interval(base, profile, paired=True)
    unpaired = speedup_interval(base, profile, paired=False)
    assert paired.low <= paired.estimate <= paired.high
    assert 1.9 < paired.low and paired.high < 2.1
    assert (paired.high - paired.low) < (unpaired.high - unpaired.low)


def test_interval_is_deterministic_and_ordered() -> None:
    rng = random.Random(5)
    base = [rng.uniform(1.0, 1.4) for _ in range(12)]
    profile = [rng.uniform(0.7, 1.0) for _ in range(12)]
    first = speedup_interval(base, profile, paired=True)
    assert first == speedup_interval(base, profile, paired=True)
    assert first.low <= first.estimate <= first.high and first.decisive
    assert "95% CI, 12 rounds" in first.describe()


def test_too_few_rounds_give_no_interval() -> None:
    short = speedup_interval([1.0, 1.1, 1.2], [0.5, 0.6, 0.5], paired=True)
    assert not short.decisive and short.low == short.estimate == short.high
    assert "no interval: 3 rounds" in short.describe()


def test_stored_ratio_of_relative_latencies() -> None:
    """Now: profile 1.5x the baseline beside it; stored: 1.0x. Hosts differ in absolute
    speed (now everything 2x slower), which the relative comparison divides out."""
    rng = random.Random(9)
    then_base = [1.0 + rng.uniform(0, 0.02) for _ in range(10)]
    then = [b * 1.0 for b in then_base]
    now_base = [2.0 + rng.uniform(0, 0.04) for _ in range(10)]
    now = [b * 1.5 for b in now_base]
    interval = ratio_interval(Arm(tuple(now), tuple(now_base), paired=True),
                              Arm(tuple(then), tuple(then_base), paired=True))
    assert 1.45 < interval.low <= interval.estimate <= interval.high < 1.55
    fixed = ratio_interval(Arm(tuple(now), tuple(now_base), paired=True),
                           Arm(tuple(then), reference_point=1.01))
    assert fixed.estimate == pytest.approx(1.5, rel=0.03)


def test_ratio_to_a_level_resamples_only_the_arm() -> None:
    """Now: the profile 1.5x its baseline beside it; the level of earlier runs: 1.0."""
    rng = random.Random(4)
    base = [2.0 + rng.uniform(0, 0.04) for _ in range(10)]
    arm = Arm(tuple(b * 1.5 for b in base), tuple(base), paired=True)
    interval = ratio_to_level(arm, 1.0)
    assert 1.45 < interval.low <= interval.estimate <= interval.high < 1.55
    assert ratio_to_level(arm, 1.5).estimate == pytest.approx(1.0, rel=0.01)
    assert not ratio_to_level(Arm((1.0, 1.1)), 1.0).decisive  # 2 rounds: no interval
    for bad in (0.0, -1.0, math.nan, math.inf):
        with pytest.raises(ValueError, match="level must be a finite number > 0"):
            ratio_to_level(arm, bad)


def test_arm_rejects_unequal_pairs_and_bad_samples() -> None:
    with pytest.raises(ValueError, match="equal lengths"):
        Arm((1.0, 2.0), (1.0,), paired=True)
    with pytest.raises(ValueError, match="finite"):
        Arm((1.0, float("nan")))
    with pytest.raises(ValueError, match="confidence"):
        ratio_interval(Arm((1.0,) * 6), Arm((1.0,) * 6), confidence=1.0)


def _false_alarms(looks: tuple[int, ...], trials: int, seed: int) -> int:
    """Same distribution on both sides, bimodal (30% of rounds +40%): how often does any
    look's 95% interval of the speedup exclude [1/1.05, 1.05]?"""
    rng = random.Random(seed)
    alarms = 0
    for _ in range(trials):
        def draw() -> float:
            return rng.uniform(1.0, 1.03) * (1.4 if rng.random() < 0.3 else 1.0)
        base = [draw() for _ in range(max(looks))]
        prof = [draw() for _ in range(max(looks))]
        for n in looks:
            iv = speedup_interval(base[:n], prof[:n], paired=True)
            if iv.low > 1.05 or iv.high < 1 / 1.05:
                alarms += 1
                break
    return alarms


def test_adaptive_looks_rarely_alarm_on_identical_bimodal_latencies() -> None:
    # 60 simulated unchanged comparisons with four looks each: at most one alarm (the
    # bootstrap is seeded, so this is a fixed computation, not a flaky sample).
    assert _false_alarms((5, 10, 15, 22, 30), trials=60, seed=1) <= 1


def test_run_to_run_spread_widens_in_quadrature_and_stops_narrowing() -> None:
    """One H200 run measured cache_dit at 1.077x [1.059, 1.118] over 5 rounds, the next
    1.55x: the run-to-run spread (sd 0.075 of the log ratio) must widen that interval past a
    1.2 bound, and more rounds of one run cannot remove it."""
    from pytest_omni_perf.measure.stats import RUN_SPREAD_GPU, RatioInterval, widened

    narrow = RatioInterval(1.077, 1.059, 1.118, 0.95, 5)
    wide = widened(narrow, RUN_SPREAD_GPU)
    assert wide.low < 1.059 and wide.high > 1.2 and wide.within_high == 1.118
    assert not wide.narrowable  # the rounds' own part is already below the spread
    assert widened(RatioInterval(1.5, 1.2, 1.9, 0.95, 5), RUN_SPREAD_GPU).narrowable
    assert widened(narrow, 0.0) == narrow
    two = widened(narrow, RUN_SPREAD_GPU, runs=2)
    assert two.high > wide.high and two.spread == pytest.approx(RUN_SPREAD_GPU * math.sqrt(2))
    assert "run-to-run spread 7.5%" in wide.describe()


def test_a_widened_interval_says_where_its_spread_came_from() -> None:
    """A newcomer read "run-to-run spread 2.0%" as measured on their machine; it was the
    CPU default. Two runs' worth names the base value and the factor."""
    from pytest_omni_perf.measure.stats import RatioInterval, widened

    narrow = RatioInterval(1.077, 1.059, 1.118, 0.95, 5)
    origin = "the built-in CPU default, not measured here"
    assert widened(narrow, 0.02, origin=origin).describe().endswith(
        "(95% CI, 5 rounds, run-to-run spread 2.0% from the built-in CPU default, not "
        "measured here)")
    assert "run-to-run spread 2.8% from 2.0% x sqrt(2), the built-in CPU default" in \
        widened(narrow, 0.02, runs=2, origin=origin).describe()
    assert widened(narrow, 0.02).describe().endswith("run-to-run spread 2.0%)")
