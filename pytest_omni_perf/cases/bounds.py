"""A case entry's ``baseline`` as absolute bounds for this machine (pure functions).

A baseline is either flat (``{"latency_mean": 3.5, ...}``, applying everywhere) or keyed by
hardware (``{"H100": {...}, "A3": {...}}``); each number may be a list aligned with a
``max-concurrency`` list. Latency and memory numbers are maxima, throughput a minimum, as
vLLM-Omni's nightly runner reads them. Units: latency seconds, throughput requests per
second, memory MB (2**20 bytes, as the server reports ``peak_memory_mb``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any, Literal

from pytest_omni_perf.hardware import key_for_this_machine
from pytest_omni_perf.numeric import Range

Direction = Literal["max", "min"]
METRICS: Mapping[str, tuple[Direction, str]] = {
    "throughput_qps": ("min", "req/s"),
    "latency_mean": ("max", "s"),
    "latency_median": ("max", "s"),
    "latency_p50": ("max", "s"),
    "latency_p95": ("max", "s"),
    "latency_p99": ("max", "s"),
    "peak_memory_mb_max": ("max", "MB"),
    "peak_memory_mb_mean": ("max", "MB"),
}
_BOUND = Range(0, low_open=True)


@dataclasses.dataclass(frozen=True)
class Bound:
    """One absolute bound: ``metric`` must stay at or below (max) / above (min) ``limit``."""

    metric: str
    limit: float
    direction: Direction
    field: str
    """Where it came from, as a path in the entry: ``baseline.H100.latency_mean[1]``."""

    def violated_by(self, value: float) -> bool:
        return value > self.limit if self.direction == "max" else value < self.limit

    def describe(self, value: float) -> str:
        unit = METRICS[self.metric][1]
        sign = ">" if self.direction == "max" else "<"
        word = "maximum" if self.direction == "max" else "minimum"
        return (f"{self.field}: measured {self.metric} {value:.4g} {unit} {sign} "
                f"{word} {self.limit:g} {unit}")


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


def judge(bounds: Sequence[Bound], measured: Mapping[str, float | None]
          ) -> tuple[list[str], list[str]]:
    """(violations, notes): each violated bound described with value and limit; a bound
    whose metric was not measured (no memory reported) is a note, never a silent pass."""
    violations, notes = [], []
    for bound in bounds:
        value = measured.get(bound.metric)
        if value is None:
            notes.append(f"{bound.field}: {bound.metric} was not measured here "
                         "(the server reported none), bound not applied")
        elif bound.violated_by(value):
            violations.append(bound.describe(value))
    return violations, notes
