"""The one home of a stored run's fields in ``metrics.json``: written, checked, read back.

The store (baselines.py) checks what it writes itself (schema version, hardware key, frame
count); these are the fields of a measured run that later runs compare with: the stored
view, the latency samples and those of the baseline profile measured alongside, the memory
peak and the numbers behind relative latency. Baselines are
committed, so they get edited by hand and merged by git; a field of the wrong type must be
reported as a broken baseline naming the field, never surface as a TypeError from deep in
a comparison. Fields that are absent or null are allowed: older baselines lack some.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from pytest_omni_perf.measure.stats import Arm

if TYPE_CHECKING:
    from pytest_omni_perf.results import PerfResult


def _number(value: object, *, positive: bool = False) -> bool:
    return (isinstance(value, (int, float)) and not isinstance(value, bool)
            and math.isfinite(value) and (value > 0 if positive else value >= 0))


def _count(value: object, *, minimum: int = 0) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= minimum


def view_problem(view: object) -> str | None:
    """What is wrong with a stored ``view`` (see baseline_view.choose_view), or None."""
    if view is None:
        return None
    if not isinstance(view, Mapping):
        return f"view is {view!r}, expected an object"
    unknown = sorted(set(view) - {"scale", "frames", "source_frames", "source_shape"})
    if unknown:
        return f"view has unknown key(s) {', '.join(map(repr, unknown))}"
    # Present keys must hold a value (baseline_view reads them with defaults for absent ones).
    shape = view.get("source_shape", [])
    if "source_shape" in view and not (isinstance(shape, list) and len(shape) == 2
                                       and all(_count(side, minimum=1) for side in shape)):
        return f"view.source_shape is {shape!r}, expected [height, width]"
    scale = view.get("scale", 1)
    if not _count(scale, minimum=1) or (shape and scale > min(shape)):
        return f"view.scale is {scale!r}, expected a whole number from 1 to the smaller side"
    source_frames = view.get("source_frames", 1)
    if not _count(source_frames, minimum=1):
        return f"view.source_frames is {source_frames!r}, expected a whole number >= 1"
    frames = view.get("frames", [0])
    limit = source_frames if "source_frames" in view else math.inf
    if not (isinstance(frames, list) and frames and all(_count(i) for i in frames)
            and frames == sorted(set(frames)) and frames[-1] < limit):
        return (f"view.frames is {frames!r}, expected increasing frame indices below "
                "source_frames")
    return None


def problem(metrics: Mapping[str, Any]) -> str | None:
    """What is wrong with the harness's fields of ``metrics``, or None when usable."""
    if (why := view_problem(metrics.get("view"))) is not None:
        return why
    samples = metrics.get("samples_s")
    if samples is not None and not (isinstance(samples, list)
                                    and all(_number(s, positive=True) for s in samples)):
        return f"samples_s is {samples!r}, expected a list of seconds > 0"
    memory = metrics.get("memory")
    if memory is not None:
        if not isinstance(memory, Mapping):
            return f"memory is {memory!r}, expected an object"
        if memory.get("kind") is not None and not isinstance(memory["kind"], str):
            return f"memory.kind is {memory['kind']!r}, expected a string"
        if memory.get("peak_bytes") is not None and not _number(memory["peak_bytes"]):
            return f"memory.peak_bytes is {memory['peak_bytes']!r}, expected a number >= 0"
        if memory.get("held_over") is not None and not isinstance(memory["held_over"], str):
            return f"memory.held_over is {memory['held_over']!r}, expected a string"
    base = metrics.get("baseline_samples_s")
    if base is not None and not (isinstance(base, list) and base
                                 and all(_number(s, positive=True) for s in base)):
        return f"baseline_samples_s is {base!r}, expected a list of seconds > 0"
    interleaved = metrics.get("interleaved")
    if interleaved is not None and not isinstance(interleaved, bool):
        return f"interleaved is {interleaved!r}, expected true or false"
    if interleaved and isinstance(samples, list) and isinstance(base, list) \
            and len(samples) != len(base):
        return (f"interleaved runs have as many samples as baseline samples, got "
                f"{len(samples)} and {len(base)}")
    for key in ("baseline_median_s", "speedup"):
        if metrics.get(key) is not None and not _number(metrics[key]):
            return f"{key} is {metrics[key]!r}, expected a number >= 0"
    latency = metrics.get("latency")
    if latency is not None and not isinstance(latency, Mapping):
        return f"latency is {latency!r}, expected an object"
    return None


def to_metrics(result: PerfResult, view: Mapping[str, Any]) -> dict[str, Any]:
    """What a record run stores for ``result`` (the store adds its own keys and frames)."""
    measured, base = result.measurement, result.baseline
    return {
        "view": dict(view),
        "nodeid": result.nodeid, "profile": result.profile, "request": measured.request,
        "samples_s": measured.samples, "latency": measured.latency.to_dict(),
        "memory": measured.memory.to_dict(), "cold_start_s": measured.cold_start_s,
        "speedup": result.speedup,
        "ssim_vs_baseline_profile": result.ssim,
        "baseline_median_s": None if base is None else base.latency.median,
        "baseline_samples_s": None if base is None else base.samples,
        "interleaved": measured.interleaved_with is not None,
        "fingerprint": result.fingerprint, "applied": measured.applied,
    }


def _baseline_median(metrics: Mapping[str, Any]) -> float | None:
    """The baseline profile's median when this run was stored (None for references)."""
    value = metrics.get("baseline_median_s")
    if isinstance(value, (int, float)) and value > 0:
        return float(value)
    speedup, latency = metrics.get("speedup"), metrics.get("latency") or {}
    median = latency.get("median") if isinstance(latency, Mapping) else None
    if isinstance(speedup, (int, float)) and isinstance(median, (int, float)) and speedup > 0:
        return float(speedup) * float(median)  # baselines stored before the explicit field
    return None


def stored_arm(metrics: Mapping[str, Any], *, relative: bool) -> Arm | None:
    """The stored run's rounds as a statistics arm, relative to its baseline profile when
    ``relative`` (and the file knows it), or None when it kept fewer than 2 samples.

    Files written before intervals kept only the baseline profile's median: the arm then
    divides by that fixed point (``reference_point``) and the gate only warns."""
    samples = metrics.get("samples_s")
    if not isinstance(samples, list) or len(samples) < 2:
        return None
    own = tuple(float(s) for s in samples)
    if not relative:
        return Arm(own)
    base = metrics.get("baseline_samples_s")
    if isinstance(base, list) and base:
        paired = bool(metrics.get("interleaved")) and len(base) == len(own)
        return Arm(own, tuple(float(s) for s in base), paired=paired)
    point = _baseline_median(metrics)
    return None if point is None else Arm(own, reference_point=point)
