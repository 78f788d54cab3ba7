"""Test order that lets engines be reused: each model's tests together.

pytest already groups tests by profile (``omni_profile`` is a session-scoped parameter),
but across models: tiny-flux[eager], tiny-wan[eager], tiny-flux[cache_dit], ... so every
test switches model and starts its engines again (38 engine starts for 20 tests in the
perf suite). Sorting by model first (stable: pytest's profile order stays within a model)
lets one engine per profile and model serve all its tests. Rounds of a profile and its
baseline still alternate inside each measurement, so the order costs no fairness.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Sequence
from typing import TypeVar

T = TypeVar("T")
EngineUse = tuple[str, str, "str | None"]
"""(model, profile, baseline profile or None) of one perf test."""


def by_model(items: Sequence[T], use: Callable[[T], EngineUse | None]) -> list[T]:
    """``items`` with the perf tests (``use`` not None) stably sorted by model, in the order
    models first appear; other tests keep their places."""
    uses = [use(item) for item in items]
    rank = {m: i for i, m in enumerate(dict.fromkeys(u[0] for u in uses if u is not None))}
    slots = [i for i, u in enumerate(uses) if u is not None]
    ordered = sorted(slots, key=lambda i: rank[uses[i][0]])  # type: ignore[index]
    result = list(items)
    for slot, source in zip(slots, ordered):
        result[slot] = items[source]
    return result


def expected_starts(uses: Sequence[EngineUse]) -> int:
    """Engine starts a run in this order needs, as engines.engine_pool evicts on a CPU: a
    reference profile runs alone (one engine), a profile beside its baseline (two), least
    recently used evicted first. An estimate on GPUs, where a big baseline runs alone."""
    live: OrderedDict[tuple[str, str], None] = OrderedDict()
    starts = 0
    for model, profile, baseline in uses:
        capacity = 2 if baseline else 1
        for name in ([baseline] if baseline else []) + [profile]:
            key = (model, name)
            if key in live:
                live.move_to_end(key)
                continue
            starts += 1
            live[key] = None
            while len(live) > capacity:
                live.popitem(last=False)
    return starts
