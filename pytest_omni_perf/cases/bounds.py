"""A case entry's ``baseline`` as absolute bounds for this machine (pure functions).

A baseline is either flat (``{"latency_mean": 3.5, ...}``, applying everywhere) or keyed by
hardware (``{"H100": {...}, "A3": {...}}``); each number may be a list aligned with a
``max-concurrency`` list. Latency and memory numbers are maxima, throughput a minimum, as
vLLM-Omni's nightly runner reads them. Units: latency seconds, throughput requests per
second, memory MB (2**20 bytes, as the server reports ``peak_memory_mb``). The bounds are
judged on intervals by ``load_verdict`` (PASS, FAIL or INCONCLUSIVE), not here.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

# Bound, METRICS and Direction are re-exported: their home is load_verdict, which judges
# bounds on intervals; readers of case baselines keep importing them from here.
from pytest_omni_perf.cases.load_verdict import METRICS as METRICS
from pytest_omni_perf.cases.load_verdict import Bound as Bound
from pytest_omni_perf.cases.load_verdict import Direction as Direction
from pytest_omni_perf.hardware import key_for_this_machine
from pytest_omni_perf.numeric import Range

_BOUND = Range(0, low_open=True)


def check_baseline(raw: object, where: str, levels: int | None,
                   error: type[Exception]) -> dict[str, Any]:
    """``raw`` checked: flat or keyed by hardware, positive finite numbers, lists only with a
    concurrency list and of its length. Unknown metric names are kept (reported as unchecked
    by ``bounds_for``). Raises ``error`` naming the field."""
    if not isinstance(raw, dict):
        raise error(f"{where}: expected an object, got {type(raw).__name__}")
    if any(isinstance(v, dict) for v in raw.values()):
        for key, table in raw.items():
            if not isinstance(table, dict):
                raise error(f"{where}.{key}: a baseline keyed by hardware needs an object "
                            f"under every key, got {table!r}")
            _check_table(table, f"{where}.{key}", levels, error)
    else:
        _check_table(raw, where, levels, error)
    return dict(raw)


def _check_table(table: Mapping[str, Any], where: str, levels: int | None,
                 error: type[Exception]) -> None:
    for metric, value in table.items():
        if isinstance(value, list):
            if levels is None or len(value) != levels:
                raise error(f"{where}.{metric}: a list of {len(value)} needs a max-concurrency "
                            f"list of as many levels"
                            + (f" (it has {levels})" if levels is not None else ""))
            for k, item in enumerate(value):
                _BOUND.check(item, f"{where}.{metric}[{k}]", error)
        else:
            _BOUND.check(value, f"{where}.{metric}", error)


def is_keyed(baseline: Mapping[str, Any]) -> bool:
    """Whether the baseline is keyed by hardware (its values are objects)."""
    return any(isinstance(v, dict) for v in baseline.values())


def bounds_for(baseline: Mapping[str, Any], level: int | None, gpu_names: Sequence[str],
               hardware_key: str) -> tuple[list[Bound], list[str]]:
    """The bounds that apply here at concurrency ``level`` (index into list values), and notes
    for what was left out: a keyed baseline with no key for this machine, unknown metrics."""
    notes: list[str] = []
    table: Mapping[str, Any] = baseline
    prefix = "baseline"
    if is_keyed(baseline):
        chosen = key_for_this_machine(baseline, gpu_names, hardware_key)
        if chosen is None:
            here = ", ".join(gpu_names) or "no GPU"
            return [], [f"baseline keyed by {', '.join(baseline)}: no key for this machine "
                        f"({here}; hardware key {hardware_key!r}), its bounds are not applied"]
        table, prefix = baseline[chosen], f"baseline.{chosen}"
    bounds = []
    for metric, value in table.items():
        if metric not in METRICS:
            notes.append(f"{prefix}.{metric}: not a metric the load measures, not checked")
            continue
        field = f"{prefix}.{metric}"
        if isinstance(value, list):
            assert level is not None  # check_baseline allows lists only with levels
            value, field = value[level], f"{field}[{level}]"
        bounds.append(Bound(metric, float(value), METRICS[metric][0], field))
    return bounds, notes
