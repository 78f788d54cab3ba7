"""Bounds whose number depends on the machine, as vLLM-Omni's nightly baselines are keyed by
hardware: ``omni_bounds(max_latency_s={"H100": 3.5, "L4": 9.0})``.

A keyed value is a mapping from a hardware name (a word of the GPU's model name such as
``H100``, the plugin's hardware key such as ``nvidia-h200``, or ``cpu``; see
``hardware.names_this_machine``) to a number. The first key that names this machine gives the
bound; with none, the bound is not applied and a note says so (never a silent pass).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from pytest_omni_perf.hardware import key_for_this_machine
from pytest_omni_perf.numeric import Range
from pytest_omni_perf.profiles import BOUND_RANGES

HARDWARE_KEYED = ("max_latency_s", "max_vram_gib", "max_latency_p99_s", "max_latency_mean_s",
                  "min_throughput_qps")
"""Bounds that take a number or a mapping of hardware name to number."""


def resolve_keyed(raw: Mapping[str, object], where: str, error: type[Exception],
                  machine: tuple[str, Sequence[str]] | None
                  ) -> tuple[dict[str, object], list[str]]:
    """``raw`` with each keyed value checked (string keys, numbers in the bound's range:
    ``error`` naming ``{where}.{field}[key]`` otherwise) and replaced by this machine's
    number, or dropped with a note where no key names it. ``machine``: (hardware key, GPU
    model names); None only checks (at collection) and drops every keyed value."""
    resolved: dict[str, object] = {}
    notes: list[str] = []
    for field, value in raw.items():
        if field not in HARDWARE_KEYED or not isinstance(value, Mapping):
            resolved[field] = value
            continue
        rule: Range = BOUND_RANGES[field]
        if not value:
            raise error(f"{where}.{field}: an empty mapping names no hardware")
        for key, number in value.items():
            if not isinstance(key, str) or not key.strip():
                raise error(f"{where}.{field}: hardware names must be non-empty strings, "
                            f"got {key!r}")
            rule.check(number, f"{where}.{field}[{key!r}]", error)
        if machine is None:
            continue
        hardware_key, gpu_names = machine
        chosen = key_for_this_machine(value, gpu_names, hardware_key)
        if chosen is None:
            here = ", ".join(gpu_names) or "no GPU"
            notes.append(f"{where}.{field} is keyed by {', '.join(map(str, value))}: no key "
                         f"names this machine ({here}; hardware key {hardware_key!r}), so "
                         "the bound is not applied")
        else:
            resolved[field] = value[chosen]
    return resolved, notes
