"""Latency statistics and the regression test against a stored baseline.

Pure python (no numpy/scipy): a verdict must be computable wherever the plugin loads.
A regression needs both a slowdown beyond the tolerance (median ratio) and a significant
one-sided Mann-Whitney U test, so neither noise nor a single slow outlier fails a run.
"""

from __future__ import annotations

import dataclasses
import math
import statistics
from collections.abc import Mapping, Sequence
from typing import Any

# Exact U distribution for untied samples up to this n1*n2: it costs O(n1 * n1*n2)
# integer operations (~15 ms at 50x50); beyond, the normal approximation with continuity
# correction is close enough (off by ~2e-4 at p=0.003 for 50x50).
EXACT_MAX_CELLS = 2500

_STAT_FIELDS = ("median", "p90", "mean", "stdev", "min", "max")


def _checked_samples(samples: Sequence[float], what: str, *, latency: bool = True) -> list[float]:
    values = [float(s) for s in samples]
    if not values:
        raise ValueError(f"{what}: need at least one sample")
    bad = [s for s in values if not math.isfinite(s) or (latency and s < 0)]
    if bad:
        need = "finite and >= 0 seconds" if latency else "finite"
        raise ValueError(f"{what}: samples must be {need}, got {bad[0]!r}")
    return values


def _percentile(ordered: Sequence[float], q: float) -> float:
    """Linear interpolation between closest ranks, as numpy.percentile's default."""
    pos = (len(ordered) - 1) * q / 100.0
    lo = math.floor(pos)
    hi = min(lo + 1, len(ordered) - 1)
    frac = pos - lo
    return ordered[lo] + (ordered[hi] - ordered[lo]) * frac


@dataclasses.dataclass(frozen=True)
class LatencyStats:
    """Summary of latency samples in seconds (``stdev`` is the sample stdev, 0 for n=1).

    ``samples`` keeps the raw values (in measurement order) so a stored baseline can be
    tested for significance later; it may be empty for stats read from older files.
    """

    n: int
    median: float
    p90: float
    mean: float
    stdev: float
    min: float
    max: float
    samples: tuple[float, ...] = ()

    @classmethod
    def from_samples(cls, samples: Sequence[float]) -> LatencyStats:
        """Summarize ``samples`` (seconds, n >= 1)."""
        values = _checked_samples(samples, "LatencyStats.from_samples")
        ordered = sorted(values)
        return cls(
            n=len(values),
            median=statistics.median(ordered),
            p90=_percentile(ordered, 90.0),
            mean=statistics.fmean(values),
            stdev=statistics.stdev(values) if len(values) > 1 else 0.0,
            min=ordered[0],
            max=ordered[-1],
            samples=tuple(values),
        )

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict; :meth:`from_dict` reads it back."""
        return {
            "n": self.n,
            **{name: getattr(self, name) for name in _STAT_FIELDS},
            "samples": list(self.samples),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> LatencyStats:
        """Read :meth:`to_dict`'s output (e.g. from a baseline's JSON), validating it.

        Raises ``ValueError`` naming the offending key. Unknown keys are ignored so files
        written by newer versions still load; ``samples`` is optional.
        """
        if not isinstance(data, Mapping):
            raise ValueError(f"latency stats must be a JSON object, got {type(data).__name__}")
        missing = [k for k in ("n", *_STAT_FIELDS) if k not in data]
        if missing:
            raise ValueError(f"latency stats lack key(s) {', '.join(missing)}: {dict(data)!r}")
        n = data["n"]
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise ValueError(f"latency stats key 'n' must be an integer >= 1, got {n!r}")
        values: dict[str, float] = {}
        for key in _STAT_FIELDS:
            v = data[key]
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


def _midranks(values: Sequence[float]) -> tuple[list[float], list[int]]:
    """Ranks (1-based, ties get their average rank) and the sizes of the tie groups."""
    order = sorted(range(len(values)), key=values.__getitem__)
    ranks = [0.0] * len(values)
    ties: list[int] = []
    i = 0
    while i < len(order):
        j = i
        while j + 1 < len(order) and values[order[j + 1]] == values[order[i]]:
            j += 1
        for k in range(i, j + 1):
            ranks[order[k]] = (i + j) / 2.0 + 1.0
        ties.append(j - i + 1)
        i = j + 1
    return ranks, ties


def _u_counts(n1: int, n2: int) -> list[int]:
    """Number of rank arrangements giving each U = 0..n1*n2 (no ties).

    The generating function is the Gaussian binomial prod_{i=1..n1} (1-q^(n2+i))/(1-q^i);
    multiplying/dividing by those binomials keeps every step an exact integer polynomial.
    """
    m = n1 * n2
    coeffs = [0] * (m + 1)
    coeffs[0] = 1
    for i in range(1, n1 + 1):
        # multiply by (1 - q^(n2+i)) then divide by (1 - q^i), in place, degree-bounded
        shift = n2 + i
        for u in range(m, shift - 1, -1):
            coeffs[u] -= coeffs[u - shift]
        for u in range(i, m + 1):
            coeffs[u] += coeffs[u - i]
    return coeffs


def mann_whitney_greater(current: Sequence[float], reference: Sequence[float]) -> float:
    """One-sided p-value that ``current`` is stochastically greater (slower) than ``reference``.

    Same answers as ``scipy.stats.mannwhitneyu(current, reference, alternative="greater")``:
    the exact distribution of U when there are no ties and n1*n2 <= EXACT_MAX_CELLS
    (``method="exact"``), else the normal approximation with tie and continuity
    corrections (``method="asymptotic"``).
    """
    x = _checked_samples(current, "mann_whitney_greater(current)", latency=False)
    y = _checked_samples(reference, "mann_whitney_greater(reference)", latency=False)
    n1, n2 = len(x), len(y)
    ranks, ties = _midranks(x + y)
    u1 = sum(ranks[:n1]) - n1 * (n1 + 1) / 2.0
    if all(t == 1 for t in ties) and n1 * n2 <= EXACT_MAX_CELLS:
        small, large = min(n1, n2), max(n1, n2)
        counts = _u_counts(small, large)
        k = round(u1)
        # P(U >= k): integer sums before one division keep full precision.
        return min(1.0, sum(counts[k:]) / math.comb(n1 + n2, n1))
    n = n1 + n2
    tie_term = sum(t**3 - t for t in ties)
    var = n1 * n2 / 12.0 * ((n + 1) - tie_term / (n * (n - 1)))
    if var <= 0:
        return 1.0  # every value equal: no evidence of a difference
    z = (u1 - n1 * n2 / 2.0 - 0.5) / math.sqrt(var)
    return min(1.0, 0.5 * math.erfc(z / math.sqrt(2.0)))


@dataclasses.dataclass(frozen=True)
class RegressionVerdict:
    """Outcome of comparing current latency samples with a reference (baseline) set."""

    ratio: float
    """current median / reference median (above 1: slower)."""
    p_value: float
    """One-sided Mann-Whitney p-value for 'current is slower'."""
    tolerance: float
    alpha: float
    regressed: bool
    """ratio > 1 + tolerance and p_value < alpha."""

    def describe(self) -> str:
        """One line for a failure message or report, e.g. '1.23x the reference median ...'."""
        verdict = "regressed" if self.regressed else "not regressed"
        why = ""
        if not self.regressed:
            slower = self.ratio > 1.0 + self.tolerance
            significant = self.p_value < self.alpha
            if slower and not significant:
                why = " (slower, but not significantly)"
            elif significant and not slower:
                why = " (significantly slower, but within tolerance)"
        return (
            f"median {self.ratio:.3f}x the reference (tolerance +{self.tolerance:.0%}), "
            f"Mann-Whitney p={self.p_value:.3g} (alpha {self.alpha:g}): {verdict}{why}"
        )


def latency_regression(
    current: Sequence[float],
    reference: Sequence[float],
    *,
    tolerance: float = 0.10,
    alpha: float = 0.05,
) -> RegressionVerdict:
    """Did latency regress? Both a median slowdown beyond ``tolerance`` and significance.

    ``current``/``reference``: latency samples in seconds (e.g. ``LatencyStats.samples``).
    Note that a true slowdown of exactly ``tolerance`` is flagged only about half the time:
    pick a tolerance below the slowdown you must catch.
    """
    if not math.isfinite(tolerance) or tolerance < 0:
        raise ValueError(f"tolerance must be a finite number >= 0, got {tolerance!r}")
    if not 0.0 < alpha < 1.0:
        raise ValueError(f"alpha must lie in (0, 1), got {alpha!r}")
    cur = _checked_samples(current, "latency_regression(current)")
    ref = _checked_samples(reference, "latency_regression(reference)")
    ref_median = statistics.median(ref)
    if ref_median <= 0:
        raise ValueError("latency_regression: the reference median is 0, no ratio exists")
    ratio = statistics.median(cur) / ref_median
    p_value = mann_whitney_greater(cur, ref)
    return RegressionVerdict(
        ratio=ratio,
        p_value=p_value,
        tolerance=tolerance,
        alpha=alpha,
        regressed=ratio > 1.0 + tolerance and p_value < alpha,
    )


def speedup(baseline: LatencyStats, profile: LatencyStats) -> float:
    """How many times faster ``profile`` is than ``baseline``: baseline / profile medians."""
    if profile.median <= 0:
        raise ValueError("speedup: the profile's median latency is 0")
    return baseline.median / profile.median
