"""The run-to-run spread of one series, measured from its history.

A bootstrap over one run's rounds cannot see how much whole runs differ, so every interval a
gate reads is widened by a run-to-run spread (``measure.stats.widened``). Without a history
that spread is a default per kind of hardware (``RUN_SPREAD_GPU``, measured across H100
hosts; ``RUN_SPREAD_CPU``). With one, the runs of the same test, profile, label and hardware
key that no gate failed show this host's own spread; it is pooled with the default as with a
conjugate scaled-inverse-chi-squared prior (Gelman et al., *Bayesian Data Analysis*, 3rd ed.,
section 3.3): the default counts as ``PRIOR_RUNS`` runs' worth of evidence, so two or three
lucky runs cannot shrink a verdict's interval, and a long history speaks for itself.

The spread of each run's point estimate also holds that run's own sampling noise, which the
bootstrap covers again: counted twice, the interval errs on the wide side (inconclusive, not
a false FAIL).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pytest_omni_perf.history.store import HistoryStore, SeriesKey

SPREAD_RUNS = 20
"""The most recent runs of the current level that measure a series' spread."""
MIN_SPREAD_RUNS = 3
"""Fewer runs than this in the level: the default alone (two runs make one difference)."""
PRIOR_RUNS = 4
"""The weight of the default spread, in runs (degrees of freedom of the prior)."""


def pooled_spread(log_values: Sequence[float], prior: float,
                  prior_runs: int = PRIOR_RUNS) -> float:
    """The sd of ``log_values`` (one per run) pooled with ``prior`` (an sd, weight
    ``prior_runs`` degrees of freedom): ``sqrt((v0 s0^2 + sum (x - mean)^2) / (v0 + n - 1))``.

    Raises ValueError for a non-finite value or a negative prior."""
    if not (math.isfinite(prior) and prior >= 0) or prior_runs < 0:
        raise ValueError(f"prior spread must be a finite number >= 0, got {prior!r}")
    values = [float(v) for v in log_values]
    if not all(math.isfinite(v) for v in values):
        raise ValueError(f"log values must be finite, got {values!r}")
    n = len(values)
    mean = sum(values) / n if n else 0.0
    squares = sum((v - mean) ** 2 for v in values)
    freedom = prior_runs + max(n - 1, 0)
    return math.sqrt((prior_runs * prior**2 + squares) / freedom) if freedom else prior


@dataclasses.dataclass(frozen=True)
class SeriesSpread:
    """The spread one series' intervals are widened by, and where it came from."""

    spread: float
    """sd of the log of the compared ratio between unchanged runs."""
    runs: int
    """Runs of the history that measured it (0: the default alone)."""
    history_sd: float | None
    """The sd of those runs alone (None with fewer than MIN_SPREAD_RUNS)."""
    prior: float
    metric: str

    def describe(self) -> str:
        """e.g. ``run-to-run spread 3.1%: 8 unfailed runs of this series in the history
        (their own sd 2.0%, speedup), pooled with the default 7.5% (weight 4 runs)``."""
        return (f"run-to-run spread {self.spread:.1%}: {self.runs} unfailed runs of this "
                f"series in the history (their own sd {self.history_sd or 0:.1%}, of the "
                f"log {self.metric}), pooled with the default {self.prior:.1%} (weight "
                f"{PRIOR_RUNS} runs)")


def series_spread(where: str | Path, *, nodeid: str, profile: str, label: str,
                  hardware_key: str, relative: bool, prior: float) -> SeriesSpread | None:
    """The spread of one series from the history at ``where``; None where the history does
    not exist yet or holds fewer than MIN_SPREAD_RUNS unfailed runs of the current level
    (see :func:`spread_in`). Raises HistoryError for a history that cannot be read."""
    from pytest_omni_perf.history.store import HistoryStore, SeriesKey

    if isinstance(where, Path) and not where.exists():
        return None
    with HistoryStore.open(where) as store:
        return spread_in(store, SeriesKey(nodeid, profile, label, hardware_key),
                         relative=relative, prior=prior)


def spread_in(store: HistoryStore, key: SeriesKey, *, relative: bool,
              prior: float) -> SeriesSpread | None:
    """The spread of the series ``key`` in an open ``store``; None with fewer than
    MIN_SPREAD_RUNS unfailed runs in its current level.

    ``relative``: the profile is compared through its speedup over a baseline profile (the
    spread of log speedup), else through its latency (the robust estimate, seconds)."""
    from pytest_omni_perf.history.store import LATENCY

    metric = "speedup" if relative else LATENCY
    points = store.recent_unfailed(key.nodeid, key.profile, key.label, key.hardware_key,
                                   SPREAD_RUNS, metric)
    logs = [math.log(p.value) for p in points if p.value is not None and p.value > 0]
    if len(logs) < MIN_SPREAD_RUNS:
        return None
    own = pooled_spread(logs, 0.0, prior_runs=0)
    return SeriesSpread(spread=pooled_spread(logs, prior), runs=len(logs), history_sd=own,
                        prior=prior, metric=metric)
