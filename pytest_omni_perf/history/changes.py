"""Change points: where the level of a metric's history moved, how far, how surely.

The detection is Apache Otava's (formerly Hunter, from DataStax; Fleming et al., "Hunter:
Using Change Point Detection to Hunt for Performance Regressions", ICPE 2023): E-Divisive
means over sliding windows, each candidate kept only where a two-sided t-test between the
points before and after it gives a p-value at most ``max_pvalue``. Otava is what its
authors run over nightly benchmark series, which is the shape of a history here.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

from pytest_omni_perf.history.backends import HistoryError
from pytest_omni_perf.history.store import HistoryPoint, SeriesKey

DEFAULT_MAX_PVALUE = 0.001
"""Otava's own default: a level move is reported when p <= 0.001."""
DEFAULT_MIN_CHANGE = 0.10
"""Moves smaller than 10 % are not reported (vLLM-Omni's nightly CI files a regression at
10 %): shared hosts flip between levels a few percent apart from run to run, which a
t-test over tight clusters calls significant."""
DEFAULT_WINDOW = 50
"""Otava's default window (points); longer histories are searched window by window."""


@dataclasses.dataclass(frozen=True)
class LevelChange:
    """The level of ``key``'s metric moved between two runs.

    ``index``: position in the series of the first point at the new level; ``run_id``,
    ``recorded`` (ISO 8601 UTC) and ``git_commit`` are that point's. ``before``/``after``:
    mean of the metric over the segments either side (metric units, seconds for
    latencies); ``change_percent``: after / before - 1, in percent; ``p_value``: the
    t-test's two-sided p-value (lower = surer).
    """

    key: SeriesKey
    index: int
    run_id: str
    recorded: str
    git_commit: str | None
    previous_run_id: str
    before: float
    after: float
    change_percent: float
    p_value: float


def _otava() -> object:
    try:
        from otava import analysis
    except ImportError:
        raise HistoryError("change-point detection needs Apache Otava's analysis module: "
                           "pip install --no-deps apache-otava==0.8.0 (its own pins of "
                           "numpy and scipy are for its CLI)") from None
    return analysis


def find_changes(points: Sequence[HistoryPoint], *, max_pvalue: float = DEFAULT_MAX_PVALUE,
                 min_magnitude: float = DEFAULT_MIN_CHANGE,
                 window: int = DEFAULT_WINDOW) -> list[LevelChange]:
    """The level changes in one series (oldest point first); points without a value are
    left out. ``min_magnitude``: also drop moves smaller than this fraction (0.05 = 5 %).
    Fewer than 3 valued points cannot show a change: ``[]``."""
    valued = [(i, p, p.value) for i, p in enumerate(points) if p.value is not None]
    if len(valued) < 3:
        return []
    analysis = _otava()
    series = [value for _, _, value in valued]
    found, _weak = analysis.compute_change_points(  # type: ignore[attr-defined]
        series, window_len=window, max_pvalue=max_pvalue, min_magnitude=min_magnitude)
    changes = []
    for change in found:
        index = int(change.index)
        stats = change.stats
        (where, at, _), previous = valued[index], valued[index - 1][1]
        changes.append(LevelChange(
            key=at.key, index=where, run_id=at.run_id, recorded=at.recorded,
            git_commit=at.git_commit, previous_run_id=previous.run_id,
            before=float(stats.mean_1), after=float(stats.mean_2),
            change_percent=float(stats.forward_change_percent()),
            p_value=float(stats.pvalue)))
    return changes


def describe(change: LevelChange, unit: str = "s") -> str:
    """One line for people: where, how far, how sure."""
    commit = f"commit {change.git_commit[:12]}" if change.git_commit else "no commit"
    return (f"{change.recorded[:19].replace('T', ' ')} run {change.run_id[:12]} ({commit}): "
            f"{change.before:.4g} {unit} -> {change.after:.4g} {unit} "
            f"({change.change_percent:+.1f} %), p = {change.p_value:.2g}")
