"""Markers: their documentation, argument checks and evaluation, as pure functions.

Like ``_pytest/skipping.py``: the hooks in plugin.py stay thin and call these, so every rule
here can be unit-tested without running pytest.
"""

from __future__ import annotations

import difflib
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import pytest

from pytest_omni_perf.hardware import HardwareInfo
from pytest_omni_perf.hardware_bounds import resolve_keyed
from pytest_omni_perf.profiles import (
    BUILTIN_SOURCE, Bounds, Profile, ProfileError, Requirements, parse_bounds, parse_sm,
)

MARKER_DOCS = {
    "requires_gpus": "requires_gpus(n): skip unless at least n CUDA GPUs are visible to this "
                     "process (tests also get the marker cards_<n> for -m selection).",
    "requires_sm": "requires_sm(sm): skip unless every visible GPU has compute capability >= sm "
                   "(89 or '8.9').",
    "requires_vram": "requires_vram(gib): skip unless every visible GPU has at least gib GiB.",
    "omni_model": "omni_model(id_or_path): the model this test measures (default: --omni-model).",
    "omni_profiles": "omni_profiles(*names): run this test only for these profiles.",
    "omni_bounds": "omni_bounds(min_speedup=, min_ssim=, min_psnr=, max_mean_abs_diff=, "
                   "max_p99_abs_diff=, max_vram_gib=, max_vram_ratio=, max_latency_s=, "
                   "max_regression=, max_vram_regression=, parity=, max_latency_ratio=, "
                   "max_latency_p99_s=, max_latency_mean_s=, min_throughput_qps=, "
                   "profile=None): override the profile's bounds for this test (only for the "
                   "named profile(s) when profile= is given); min_psnr is in dB and the "
                   "pixel differences in 0-255 values, checked against every reference "
                   "(baseline profile, stored image, parity output); parity='diffusers' "
                   "also runs the profile on that backend, its rounds alternating, and "
                   "max_latency_ratio bounds this backend's latency over it; "
                   "max_latency_p99_s, max_latency_mean_s (seconds) and min_throughput_qps "
                   "judge omni_perf.load(); max_latency_s, max_vram_gib and the load bounds "
                   "also take a mapping of hardware name to number ({'H100': 3.5}; no key "
                   "for this machine: not applied, with a note).",
}
CARDS_DOC = "cards_{n}: set on tests that need {n} GPUs (requires_gpus or a profile's "\
            "requirement), as vLLM-Omni CI selects with -m 'H100 and cards_{n}'."


class MarkerArgumentError(ValueError):
    """A marker was given arguments it cannot take; ``problems``: each mistake, one a line
    (an omni_bounds mark's bad bounds are all reported, as ``Bounds.from_mapping`` finds)."""

    def __init__(self, problem: str, *more: str) -> None:
        self.problems = (problem, *more)
        super().__init__("\n".join(self.problems))


_MAX_GPUS = 1024  # more than any one host has: a larger n is a typo, not a requirement

def _suggest(name: str, known: Iterable[str]) -> str:
    close = difflib.get_close_matches(name, list(known), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _unknown_profiles(names: Iterable[str], known: Iterable[str], where: str) -> None:
    known = sorted(known)
    unknown = [n for n in names if n not in known]
    if unknown:
        hints = "".join(_suggest(n, known) for n in unknown[:1])
        raise MarkerArgumentError(
            f"{where}: unknown profile(s) {', '.join(unknown)}{hints} "
            f"(known: {', '.join(known)})")


def _single_arg(mark: pytest.Mark) -> object:
    if mark.kwargs or len(mark.args) != 1:
        raise MarkerArgumentError(
            f"@pytest.mark.{mark.name} takes exactly one positional argument, "
            f"got args={mark.args!r} kwargs={mark.kwargs!r}")
    return mark.args[0]


def _gpus(mark: pytest.Mark) -> int:
    value = _single_arg(mark)
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= _MAX_GPUS:
        raise MarkerArgumentError(
            f"@pytest.mark.requires_gpus(n) needs a whole number n from 1 to {_MAX_GPUS}, "
            f"got {value!r}")
    return value


def _sm(mark: pytest.Mark) -> tuple[int, int]:
    try:
        major, minor = parse_sm(_single_arg(mark))
    except ValueError as exc:
        raise MarkerArgumentError(f"@pytest.mark.requires_sm: {exc}") from None
    # parse_sm takes any digits; 3.0 (Kepler) to 12.x (Blackwell) are real, 99 allows growth.
    if not (1 <= major <= 99 and 0 <= minor <= 9):
        raise MarkerArgumentError(
            f"@pytest.mark.requires_sm: SM {major}.{minor} is not a compute capability "
            "(major 1-99, minor 0-9)")
    return major, minor


def _vram(mark: pytest.Mark) -> float:
    value = _single_arg(mark)
    if (isinstance(value, bool) or not isinstance(value, (int, float))
            or not math.isfinite(value) or value <= 0):
        raise MarkerArgumentError(
            f"@pytest.mark.requires_vram(gib) needs a finite number of GiB > 0, got {value!r}")
    return float(value)


def requirements_from_marks(marks: Iterable[pytest.Mark]) -> Requirements:
    """Combine requires_* marks (the strictest of each wins); MarkerArgumentError on bad args."""
    gpus, sm, vram = 0, None, None
    for mark in marks:
        if mark.name == "requires_gpus":
            gpus = max(gpus, _gpus(mark))
        elif mark.name == "requires_sm":
            parsed = _sm(mark)
            sm = parsed if sm is None else max(sm, parsed)
        elif mark.name == "requires_vram":
            vram = max(vram or 0.0, _vram(mark))
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
        _unknown_profiles(mark.args, known, "@pytest.mark.omni_profiles")
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


def bounds_from_marks(marks: Iterable[pytest.Mark], base: Bounds, profile: str | None = None,
                      known: Iterable[str] | None = None,
                      machine: tuple[str, Sequence[str]] | None = None,
                      notes: list[str] | None = None) -> Bounds:
    """Apply omni_bounds marks onto ``base`` (farthest first, so the closest wins).

    Values keyed by hardware (``hardware_bounds``) take this ``machine``'s number (hardware
    key, GPU names); where none is named, the bound is left off and ``notes`` says why.

    A mark with ``profile="name"`` (or a tuple of names) applies only to those profiles;
    with ``profile=None`` every mark is checked but only the unscoped ones apply. With
    ``known``, a scope naming no known profile is an error (a typo would silently apply
    the bound nowhere).
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
        if names is not None and known is not None:
            _unknown_profiles(names, known, "@pytest.mark.omni_bounds(profile=...)")
        try:  # Bounds checks every number (profiles.BOUND_RANGES), as for profile files
            values, unkeyed = resolve_keyed(values, "@pytest.mark.omni_bounds",
                                            ProfileError, machine)
            scoped = parse_bounds(values, "@pytest.mark.omni_bounds", bounds)
        except ProfileError as exc:
            raise MarkerArgumentError(*exc.problems) from None
        if names is None or profile in names:
            bounds = scoped
            if notes is not None:
                notes += unkeyed
    return bounds


def model_of(node: pytest.Item, default: str) -> str:
    """The model a test measures: its nearest ``omni_model`` mark, else ``default``
    (``--omni-model``)."""
    return model_from_marks(node.iter_markers("omni_model")) or default


def bounds_here(marks: Iterable[pytest.Mark], profile: Profile,
                hardware: HardwareInfo) -> tuple[Bounds, list[str]]:
    """A test's bounds for ``profile`` on this machine (its omni_bounds marks onto the
    profile's own), and why a hardware-keyed bound is off here (notes for its results)."""
    unapplied: list[str] = []
    bounds = bounds_from_marks(marks, profile.bounds, profile.name,
                               machine=(hardware.key, [g.name for g in hardware.gpus]),
                               notes=unapplied)
    return bounds, unapplied


def bound_origin(marks: Iterable[pytest.Mark], profile: Profile, field: str) -> str:
    """Where a test's ``field`` bound for ``profile`` comes from and how to change it, for the
    message of a failed gate: the omni_bounds mark that ``bounds_from_marks`` lets win (the
    closest applicable one setting ``field``), else the profile's own bounds."""
    for mark in marks:
        scope = mark.kwargs.get("profile")
        names = (scope,) if isinstance(scope, str) else scope
        if field in mark.kwargs and (names is None or profile.name in names):
            given = ", ".join(f"{key}={value!r}" for key, value in mark.kwargs.items())
            return (f"the bound is set by @pytest.mark.omni_bounds({given}) on this test, "
                    "its class or its module: change it there")
    where = ("the built-in pytest_omni_perf/profiles.toml" if profile.source == BUILTIN_SOURCE
             else f"{profile.source} (omni_profile_files)")
    return (f"the bound is the {field} of profile {profile.name!r} in {where}; to override "
            f"it for this test, mark it @pytest.mark.omni_bounds(profile={profile.name!r}, "
            f"{field}=...)")


def cards_marker(req: Requirements) -> str | None:
    """``cards_<n>`` for tests that need n GPUs (n >= 1)."""
    return f"cards_{req.gpus}" if req.gpus else None


def _check_omni_model(mark: pytest.Mark, known: Mapping[str, object]) -> None:
    model_from_marks([mark])


def _check_omni_profiles(mark: pytest.Mark, known: Mapping[str, object]) -> None:
    profiles_from_marks([mark], known)


def _check_omni_bounds(mark: pytest.Mark, known: Mapping[str, object]) -> None:
    bounds_from_marks([mark], Bounds(), known=known)


_CHECKS: dict[str, Callable[[pytest.Mark, Mapping[str, object]], object]] = {
    "requires_gpus": lambda mark, _: _gpus(mark),
    "requires_sm": lambda mark, _: _sm(mark),
    "requires_vram": lambda mark, _: _vram(mark),
    "omni_model": _check_omni_model,
    "omni_profiles": _check_omni_profiles,
    "omni_bounds": _check_omni_bounds,
}


def marker_problems(marks: Iterable[pytest.Mark], known: Mapping[str, object]) -> list[str]:
    """Every problem of every pytest-omni-perf mark of one test (not only the first)."""
    problems: list[str] = []
    for mark in marks:
        check = _CHECKS.get(mark.name)
        if check is None:
            continue
        try:
            check(mark, known)
        except MarkerArgumentError as exc:
            problems += exc.problems
    return problems


def collection_error(problems: Mapping[str, list[str]]) -> str:
    """One message for every bad mark of the run, from ``{test: [problem, ...]}``.

    Tests sharing a problem (a module's ``pytestmark``) share one line:
    ``t.py::test_a, t.py::test_b: @pytest.mark.omni_bounds.min_speedup: ...``.
    """
    tests_of: dict[str, list[str]] = {}
    for test, found in problems.items():
        for problem in found:
            tests_of.setdefault(problem, []).append(test)
    lines = [f"pytest-omni-perf: {len(tests_of)} bad marker argument(s) in "
             f"{len(problems)} test(s):"]
    lines += [f"  {', '.join(tests)}: {problem}" for problem, tests in tests_of.items()]
    return "\n".join(lines)
