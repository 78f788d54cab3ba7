"""What a session spent measuring: engine starts and rounds, baseline profiles measured or
reused. T tests x P profiles should cost about P engine starts, not T x P; the summary line
shows whether it did, and how often a baseline profile ran again (it is re-measured beside
each profile where both engines fit, so the comparison is fair) or came from the session's
cache.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any


@dataclasses.dataclass
class SuiteCost:
    """Counters of one process (an xdist worker or the only one); summed on the controller."""

    measurements: int = 0
    """Profile measurements asked for (``omni_perf.measure`` calls)."""
    rounds_run: int = 0
    """Round series (warmup + rounds of one engine in one measurement) that ran."""
    baseline_measured: int = 0
    """Runs of a baseline profile for another profile (alone or interleaved with it)."""
    baseline_reused: int = 0
    """Measurements that took a baseline profile's numbers from the session's cache."""

    def to_dict(self) -> dict[str, int]:
        return dataclasses.asdict(self)


def total(processes: Mapping[str, Mapping[str, Any]]) -> dict[str, int]:
    """Engine starts and every counter summed over the processes' facts (missing = 0)."""
    keys = ("engine_starts", *(f.name for f in dataclasses.fields(SuiteCost)))
    return {k: sum(int(p.get(k, 0) or 0) for p in processes.values()) for k in keys}


def shape(results: Sequence[Mapping[str, Any]]) -> tuple[int, int]:
    """(T, P): distinct test functions (node ids without the profile parameter) and profiles."""
    tests = {str(r["nodeid"]).split("[")[0] for r in results}
    profiles = {str(r["profile"]) for r in results}
    return len(tests), len(profiles)


def summary_line(results: Sequence[Mapping[str, Any]],
                 processes: Mapping[str, Mapping[str, Any]]) -> str:
    """One line for the terminal summary, e.g. ``2 tests x 3 profiles: 3 engine starts ...``."""
    t, p = shape(results)
    cost = total(processes)
    where = f" in {len(processes)} processes" if len(processes) > 1 else ""
    # Every process orders the same full collection: the saving is one number, not a sum.
    saved = max((int(f.get("starts_saved_by_order", 0) or 0) for f in processes.values()),
                default=0)
    ordered = f" (already about {saved} fewer than in collection order: each model's " \
        "tests ran together)" if saved else ""
    def count(n: int, word: str) -> str:
        return f"{n} {word}{'' if n == 1 else 's'}"

    return (f"suite cost: {count(t, 'test')} x {count(p, 'profile')}: "
            f"{cost['engine_starts']} engine starts"
            f"{ordered}{where}, {cost['measurements']} measurements, {cost['rounds_run']} round series; "
            f"baseline profile measured {cost['baseline_measured']}, reused "
            f"{cost['baseline_reused']}")
