"""The harness's own fields in a stored baseline's ``metrics.json``, checked when read.

The store (baselines.py) checks what it writes itself (schema version, hardware key, frame
count); these are the fields the harness writes and later computes with: the stored view,
the latency samples, the memory peak and the numbers behind relative latency. Baselines are
committed, so they get edited by hand and merged by git; a field of the wrong type must be
reported as a broken baseline naming the field, never surface as a TypeError from deep in
a comparison. Fields that are absent or null are allowed: older baselines lack some.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any


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
    for key in ("baseline_median_s", "speedup"):
        if metrics.get(key) is not None and not _number(metrics[key]):
            return f"{key} is {metrics[key]!r}, expected a number >= 0"
    latency = metrics.get("latency")
    if latency is not None and not isinstance(latency, Mapping):
        return f"latency is {latency!r}, expected an object"
    return None
