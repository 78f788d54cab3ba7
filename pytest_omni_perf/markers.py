"""Markers: their documentation, argument checks and evaluation, as pure functions.

Like ``_pytest/skipping.py``: the hooks in plugin.py stay thin and call these, so every rule
here can be unit-tested without running pytest.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import pytest

from pytest_omni_perf.hardware import HardwareInfo
from pytest_omni_perf.profiles import Bounds, ProfileError, Requirements, parse_bounds, parse_sm

MARKER_DOCS = {
    "requires_gpus": "requires_gpus(n): skip unless at least n CUDA GPUs are visible to this "
                     "process (tests also get the marker cards_<n> for -m selection).",
    "requires_sm": "requires_sm(sm): skip unless every visible GPU has compute capability >= sm "
                   "(89 or '8.9').",
    "requires_vram": "requires_vram(gib): skip unless every visible GPU has at least gib GiB.",
    "omni_model": "omni_model(id_or_path): the model this test measures (default: --omni-model).",
    "omni_profiles": "omni_profiles(*names): run this test only for these profiles.",
    "omni_bounds": "omni_bounds(min_speedup=, min_ssim=, max_vram_gib=, max_vram_ratio=, "
                   "max_regression=, max_vram_regression=, profile=None): override the "
                   "profile's bounds for this test (only for the named profile(s) when "
                   "profile= is given).",
}
CARDS_DOC = "cards_{n}: set on tests that need {n} GPUs (requires_gpus or a profile's "\
            "requirement), as vLLM-Omni CI selects with -m 'H100 and cards_{n}'."


class MarkerArgumentError(ValueError):
    """A marker was given arguments it cannot take."""


def _single_arg(mark: pytest.Mark) -> object:
    if mark.kwargs or len(mark.args) != 1:
        raise MarkerArgumentError(
            f"@pytest.mark.{mark.name} takes exactly one positional argument, "
            f"got args={mark.args!r} kwargs={mark.kwargs!r}")
    return mark.args[0]


def requirements_from_marks(marks: Iterable[pytest.Mark]) -> Requirements:
    """Combine requires_* marks (the strictest of each wins); MarkerArgumentError on bad args."""
    gpus, sm, vram = 0, None, None
    for mark in marks:
        if mark.name == "requires_gpus":
            value = _single_arg(mark)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise MarkerArgumentError(
                    f"@pytest.mark.requires_gpus(n) needs a whole number n >= 1, got {value!r}")
            gpus = max(gpus, value)
        elif mark.name == "requires_sm":
            try:
                parsed = parse_sm(_single_arg(mark))
            except ValueError as exc:
                raise MarkerArgumentError(f"@pytest.mark.requires_sm: {exc}") from None
            sm = parsed if sm is None else max(sm, parsed)
        elif mark.name == "requires_vram":
            value = _single_arg(mark)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
                raise MarkerArgumentError(
                    f"@pytest.mark.requires_vram(gib) needs a number of GiB > 0, got {value!r}")
            vram = max(vram or 0.0, float(value))
    return Requirements(gpus=gpus, sm=sm, vram_gib=vram)


def merge_requirements(*reqs: Requirements) -> Requirements:
    """The strictest requirement of each kind."""
    sms = [r.sm for r in reqs if r.sm is not None]
    vrams = [r.vram_gib for r in reqs if r.vram_gib is not None]
    return Requirements(gpus=max((r.gpus for r in reqs), default=0),
                        sm=max(sms) if sms else None,
                        vram_gib=max(vrams) if vrams else None)


def skip_reason(req: Requirements, hw: HardwareInfo, origin: str = "") -> str | None:
    """Why this machine cannot run something needing ``req``, naming needed and found."""
    prefix = f"{origin}: " if origin else ""
    if req.gpus and hw.gpu_count < req.gpus:
        found = f"{hw.gpu_count} visible" if hw.gpu_count else f"none ({hw.note})"
        return f"{prefix}requires {req.gpus} GPU(s), found {found}"
    if req.sm is not None:
        needed = f"{req.sm[0]}.{req.sm[1]}"
        if hw.min_sm is None:
            return f"{prefix}requires a GPU with SM >= {needed}, found no GPU ({hw.note})"
        if hw.min_sm < req.sm:
            found = ", ".join(sorted({f"{g.name} (SM {g.sm[0]}.{g.sm[1]})" for g in hw.gpus}))
            return f"{prefix}requires SM >= {needed}, found {found}"
    if req.vram_gib is not None:
        if hw.min_vram_gib is None:
            return f"{prefix}requires {req.vram_gib:g} GiB of GPU memory, found no GPU ({hw.note})"
        if hw.min_vram_gib < req.vram_gib:
            return (f"{prefix}requires {req.vram_gib:g} GiB of GPU memory, "
                    f"found {hw.min_vram_gib:.1f} GiB")
    return None


def profiles_from_marks(marks: Iterable[pytest.Mark], known: Mapping[str, Any]
                        ) -> tuple[str, ...] | None:
    """Names from omni_profiles marks (None when unmarked); unknown names are an error."""
    names: list[str] | None = None
    for mark in marks:
        if mark.kwargs or not mark.args or not all(isinstance(a, str) for a in mark.args):
            raise MarkerArgumentError(
                "@pytest.mark.omni_profiles(*names) takes profile names as strings, "
                f"got args={mark.args!r} kwargs={mark.kwargs!r}")
        unknown = [a for a in mark.args if a not in known]
        if unknown:
            raise MarkerArgumentError(
                f"@pytest.mark.omni_profiles: unknown profile(s) {', '.join(unknown)} "
                f"(known: {', '.join(sorted(known))})")
        # The closest mark (function over class over module) wins, as with other markers.
        if names is None:
            names = list(mark.args)
    return None if names is None else tuple(names)


def model_from_marks(marks: Iterable[pytest.Mark]) -> str | None:
    """The closest omni_model mark's model, or None."""
    for mark in marks:
        value = _single_arg(mark)
        if not isinstance(value, str) or not value:
            raise MarkerArgumentError(
                f"@pytest.mark.omni_model(id_or_path) needs a non-empty string, got {value!r}")
        return value
    return None


def bounds_from_marks(marks: Iterable[pytest.Mark], base: Bounds, profile: str | None = None
                      ) -> Bounds:
    """Apply omni_bounds marks onto ``base`` (farthest first, so the closest wins).

    A mark with ``profile="name"`` (or a tuple of names) applies only to those profiles;
    with ``profile=None`` every mark is checked but only the unscoped ones apply.
    """
    bounds = base
    for mark in reversed(list(marks)):
        if mark.args:
            raise MarkerArgumentError(
                f"@pytest.mark.omni_bounds takes keyword arguments only, got {mark.args!r}")
        values = dict(mark.kwargs)
        scope = values.pop("profile", None)
        names = (scope,) if isinstance(scope, str) else scope
        if names is not None and not (isinstance(names, tuple)
                                      and all(isinstance(n, str) for n in names)):
            raise MarkerArgumentError(
                f"@pytest.mark.omni_bounds(profile=...) takes a profile name or a tuple of "
                f"names, got {scope!r}")
        try:
            scoped = parse_bounds(values, "@pytest.mark.omni_bounds", bounds)
        except ProfileError as exc:
            raise MarkerArgumentError(str(exc)) from None
        if names is None or profile in names:
            bounds = scoped
    return bounds


def cards_marker(req: Requirements) -> str | None:
    """``cards_<n>`` for tests that need n GPUs (n >= 1)."""
    return f"cards_{req.gpus}" if req.gpus else None
