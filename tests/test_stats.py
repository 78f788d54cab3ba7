"""Tests of pytest_omni_perf.measure.stats: latency summaries and the regression verdict."""

from __future__ import annotations

import dataclasses
import json
import math
import random
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from pytest_omni_perf.measure.stats import (
    EXACT_MAX_CELLS,
    LatencyStats,
    RegressionVerdict,
    _u_counts,
    latency_regression,
    mann_whitney_greater,
    speedup,
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


def test_exact_u_distribution_is_a_distribution() -> None:
    for n1, n2 in ((1, 1), (3, 5), (7, 4), (12, 12)):
        counts = _u_counts(min(n1, n2), max(n1, n2))
        assert len(counts) == n1 * n2 + 1
        assert sum(counts) == math.comb(n1 + n2, n1)
        assert counts == counts[::-1]
        assert min(counts) >= 1


def _scipy_p(x: list[float], y: list[float], method: str) -> float:
    stats = pytest.importorskip("scipy.stats")
    return float(stats.mannwhitneyu(x, y, alternative="greater", method=method).pvalue)


def test_mann_whitney_exact_matches_scipy() -> None:
    rng = random.Random(1)
    for _ in range(150):
        n1, n2 = rng.randint(1, 20), rng.randint(1, 20)
        shift = rng.choice((0.0, 0.3, 1.0, -0.5))
        x = [rng.gauss(shift, 1) for _ in range(n1)]
        y = [rng.gauss(0, 1) for _ in range(n2)]
        assert mann_whitney_greater(x, y) == pytest.approx(_scipy_p(x, y, "exact"), abs=1e-12)


def test_mann_whitney_asymptotic_matches_scipy_with_ties_and_large_samples() -> None:
    rng = random.Random(2)
    for i in range(150):
        if i % 2:  # ties: a coarse timer
            n1, n2 = rng.randint(2, 25), rng.randint(2, 25)
            x = [float(rng.randint(0, 6)) for _ in range(n1)]
            y = [float(rng.randint(0, 5)) for _ in range(n2)]
        else:  # too many cells for the exact distribution
            n1 = rng.randint(40, 80)
            n2 = EXACT_MAX_CELLS // n1 + rng.randint(1, 30)
            x = [rng.gauss(0.2, 1) for _ in range(n1)]
            y = [rng.gauss(0, 1) for _ in range(n2)]
        expected = _scipy_p(x, y, "asymptotic")
        assert mann_whitney_greater(x, y) == pytest.approx(expected, rel=1e-9, abs=1e-14)


def test_mann_whitney_all_equal_is_not_evidence() -> None:
    assert mann_whitney_greater([1.0, 1.0, 1.0], [1.0, 1.0]) == 1.0


def _trial(seed: int, slowdown: float) -> tuple[list[float], list[float]]:
    rng = random.Random(seed)
    reference = [rng.gauss(1.0, 0.05) for _ in range(8)]
    current = [rng.gauss(1.0 + slowdown, 0.05 * (1.0 + slowdown)) for _ in range(8)]
    return current, reference


def test_detects_a_ten_percent_slowdown() -> None:
    # tolerance 0.03: a true slowdown equal to the tolerance is caught only half the time
    # (the observed median ratio falls on either side), so the tolerance sits below it.
    hits = sum(
        latency_regression(*_trial(seed, 0.10), tolerance=0.03).regressed for seed in range(200)
    )
    assert hits >= 180


def test_identical_distributions_rarely_alarm() -> None:
    alarms = sum(
        latency_regression(*_trial(seed, 0.0), tolerance=0.03).regressed for seed in range(200)
    )
    assert alarms <= 10


def test_one_huge_outlier_is_not_a_regression() -> None:
    for seed in range(50):
        rng = random.Random(seed)
        reference = [rng.gauss(1.0, 0.05) for _ in range(8)]
        current = [rng.gauss(1.0, 0.05) for _ in range(7)] + [50.0]
        verdict = latency_regression(current, reference)
        # The mean would call this a 7x slowdown; median and ranks do not.
        assert sum(current) / len(current) > 1.1 * sum(reference) / len(reference)
        assert not verdict.regressed, verdict.describe()


def test_regression_needs_both_ratio_and_significance() -> None:
    slower_but_noisy = latency_regression([2.0], [1.0])
    assert slower_but_noisy.ratio == 2.0 and slower_but_noisy.p_value == 0.5
    assert not slower_but_noisy.regressed
    assert "not significantly" in slower_but_noisy.describe()

    ref = [1.0 + i * 1e-4 for i in range(10)]
    within = latency_regression([r * 1.02 + 0.01 for r in ref], ref)
    assert within.p_value < 0.05 and not within.regressed
    assert "within tolerance" in within.describe()

    clear = latency_regression([r * 1.5 for r in ref], ref)
    assert clear.regressed and clear.ratio == pytest.approx(1.5)
    assert isinstance(clear, RegressionVerdict)
    assert "1.500x" in clear.describe() and ": regressed" in clear.describe()


@pytest.mark.parametrize(("tolerance", "alpha"), [(-0.1, 0.05), (0.1, 0.0), (0.1, 1.0)])
def test_latency_regression_rejects_bad_settings(tolerance: float, alpha: float) -> None:
    with pytest.raises(ValueError):
        latency_regression([1.0], [1.0], tolerance=tolerance, alpha=alpha)


def test_speedup() -> None:
    base = LatencyStats.from_samples([2.0, 2.2, 1.8])
    fast = LatencyStats.from_samples([1.0, 0.9, 1.1])
    assert speedup(base, fast) == pytest.approx(2.0)
    assert speedup(fast, base) == pytest.approx(0.5)
    with pytest.raises(ValueError):
        speedup(base, LatencyStats.from_samples([0.0]))


def test_import_pulls_no_heavy_modules() -> None:
    code = (
        "import sys, pytest_omni_perf.measure.stats\n"
        "heavy = {'numpy', 'scipy', 'torch'} & set(sys.modules)\n"
        "assert not heavy, heavy\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=Path(__file__).parents[1])
