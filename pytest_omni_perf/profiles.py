"""Optimization profiles as data: the ``Profile`` type, and loading and validating TOML files.

Built-ins live in ``profiles.toml`` beside this module; users add files through the
``omni_profile_files`` ini key. Every error names the file, the profile and the field, since
the person reading it is usually editing that file.
"""

from __future__ import annotations

import dataclasses
import re
import sys
from collections.abc import Iterable, Mapping
from importlib import resources
from pathlib import Path
from typing import Any

from pytest_omni_perf import canonical
from pytest_omni_perf.numeric import NON_NEGATIVE, POSITIVE, UNIT_INTERVAL, Range

PIXEL_VALUES = Range(0, 255)
"""A difference of uint8 pixel values."""

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised only on 3.10
    import tomli as tomllib

BUILTIN_SOURCE = "<built-in profiles.toml>"


class ProfileError(ValueError):
    """A profile file or entry is malformed; each of its ``problems`` names file, profile and
    field. A file's bad bounds come in one error, so one run shows every fix: one per line
    under their count (pytest prints a usage error's newlines as they are)."""

    def __init__(self, problem: str, *more: str) -> None:
        self.problems = (problem, *more)
        super().__init__(problem if not more else f"{len(self.problems)} problems:\n"
                         + "\n".join(f"  {p}" for p in self.problems))


def parse_sm(value: object) -> tuple[int, int]:
    """``89``, ``"8.9"``, ``8.9`` or ``(8, 9)`` -> ``(8, 9)``; ValueError with the accepted forms."""
    if isinstance(value, bool):
        raise ValueError(f"SM must be like 89 or '8.9', got {value!r}")
    if isinstance(value, int) and value >= 10:
        return divmod(value, 10)
    if isinstance(value, (str, float)):
        text = str(value).strip()
        major, dot, minor = text.partition(".")
        if dot and major.isdigit() and minor.isdigit():
            return int(major), int(minor)
        if text.isdigit() and len(text) >= 2:
            return divmod(int(text), 10)
    if isinstance(value, (tuple, list)) and len(value) == 2 and all(
        isinstance(v, int) and not isinstance(v, bool) for v in value
    ):
        return int(value[0]), int(value[1])
    raise ValueError(f"SM must be like 89 or '8.9' (major.minor compute capability), got {value!r}")


@dataclasses.dataclass(frozen=True)
class Requirements:
    """Hardware a profile needs; applied as if the test carried the matching markers."""

    gpus: int = 0
    sm: tuple[int, int] | None = None
    vram_gib: float | None = None


@dataclasses.dataclass(frozen=True)
class Bounds:
    """What a profile must achieve. None means the gate is off.

    Every way of making one validates it: the constructor (``__post_init__``), ``merged``
    and ``from_mapping``, which profile files and ``omni_bounds`` markers go through. A
    bound that is NaN, infinite, of the wrong type or out of range (``BOUND_RANGES``) is a
    ProfileError naming where it came from; ints become floats.
    """

    min_speedup: float | None = None
    min_ssim: float | None = None
    max_vram_ratio: float | None = None
    """Peak memory relative to the baseline profile's peak."""
    max_vram_gib: float | None = None
    max_latency_s: float | None = None
    """The robust latency estimate (s) must stay at or below this (judged on its interval);
    an ``omni_bounds`` marker may key it by hardware (``hardware_bounds``)."""
    max_latency_p99_s: float | None = None
    """Load bounds, judged by ``omni_perf.load()`` at every concurrency level: p99 and mean
    latency of completed requests (s, queueing on the server included) at most, throughput
    (completed requests per second) at least; each may be keyed by hardware."""
    max_latency_mean_s: float | None = None
    min_throughput_qps: float | None = None
    max_regression: float | None = 0.05
    """Allowed growth of the robust latency estimate over the stored run's, each relative to
    its baseline profile measured alongside (0.05 = 5%; judged on its interval)."""
    max_vram_regression: float | None = 0.10
    min_psnr: float | None = None
    """PSNR (dB, over the dtype's range) of the output against every reference it is compared
    with, as min_ssim; identical images have PSNR inf and pass any bound."""
    max_mean_abs_diff: float | None = None
    """Mean absolute difference of every channel sample, in pixel values (0-255)."""
    max_p99_abs_diff: float | None = None
    """99th percentile of those differences, in pixel values (0-255)."""
    parity: str | None = None
    """A backend (``diffusers``, ``omni``, ``omni-server``) on which the same profile and
    request also run, interleaved with this backend's rounds: the quality bounds apply to
    its output too, and ``max_latency_ratio`` to its latency (``parity``)."""
    max_latency_ratio: float | None = None
    """This backend's robust latency over the parity backend's (1.2 = at most 20% slower),
    judged on its interval; needs ``parity``."""

    def __post_init__(self) -> None:
        for name, rule in BOUND_RANGES.items():
            value = getattr(self, name)
            if value is not None:
                object.__setattr__(self, name, float(rule.check(value, f"Bounds.{name}",
                                                                ProfileError)))
        _check_parity(self.parity, self.max_latency_ratio, "Bounds")

    @classmethod
    def from_mapping(cls, raw: Mapping[str, object], where: str,
                     base: Bounds | None = None) -> Bounds:
        """``base`` (default: ``Bounds()``) with the bounds in ``raw`` applied.

        ``where`` names the source for messages (``"mine.toml: profile 'x'.bounds"``,
        ``"test_a.py::test_b: @pytest.mark.omni_bounds"``); each field is reported as
        ``{where}.{field}``. None in ``raw`` turns a gate off. Raises one ProfileError
        listing every unknown field and every value outside ``BOUND_RANGES``.
        """
        problems: list[str] = []
        try:
            _unknown(raw, BOUND_FIELDS, where)
        except ProfileError as exc:
            problems += exc.problems
        values: dict[str, Any] = {}
        for key, value in raw.items():  # every field, so one run lists every mistake
            try:
                if key in BOUND_FIELDS:
                    values[key] = _bound_value(key, value, f"{where}.{key}")
            except ProfileError as exc:
                problems += exc.problems
        base = base if base is not None else cls()
        if not (set(raw) - set(values)) & {"parity", "max_latency_ratio"}:  # none was bad
            try:
                _check_parity(values.get("parity", base.parity),
                              values.get("max_latency_ratio", base.max_latency_ratio), where)
            except ProfileError as exc:
                problems += exc.problems
        if problems:
            raise ProfileError(*problems)
        return dataclasses.replace(base, **values)

    def merged(self, overrides: Mapping[str, Any]) -> Bounds:
        """A copy with ``overrides`` applied (checked as ``from_mapping`` checks them)."""
        return Bounds.from_mapping(overrides, "bounds", self)


# What each bound may be. A speedup or memory bound of 0 would never fire, so they must be
# > 0; SSIM lies in [0, 1] for the images compared here; regressions are fractions >= 0.
BOUND_RANGES: Mapping[str, Range] = {
    "min_speedup": POSITIVE,
    "min_ssim": UNIT_INTERVAL,
    "max_vram_ratio": POSITIVE,
    "max_vram_gib": POSITIVE,
    "max_latency_s": POSITIVE,
    "max_latency_p99_s": POSITIVE,
    "max_latency_mean_s": POSITIVE,
    "min_throughput_qps": POSITIVE,
    "max_regression": NON_NEGATIVE,
    "max_vram_regression": NON_NEGATIVE,
    # PSNR of uint8 images is >= 0 dB, so a bound of 0 never fires; the differences are in
    # the frames' 0-255 values, where 0 asks for identical outputs.
    "min_psnr": POSITIVE,
    "max_mean_abs_diff": PIXEL_VALUES,
    "max_p99_abs_diff": PIXEL_VALUES,
    "max_latency_ratio": POSITIVE,
}
BOUND_FIELDS = tuple(f.name for f in dataclasses.fields(Bounds))
# Backend names as --omni-backend takes them and plugins add them (lower case, - and _).
_BACKEND = re.compile(r"[a-z][a-z0-9_-]{0,39}")


def _bound_value(key: str, value: object, where: str) -> str | float | None:
    if value is None:  # turns the gate off
        return None
    if key == "parity":
        return _backend_name(value, where)
    return float(BOUND_RANGES[key].check(value, where, ProfileError))


def _backend_name(value: object, where: str) -> str:
    if not isinstance(value, str) or not _BACKEND.fullmatch(value) or value == "auto":
        raise ProfileError(
            f"{where}: expected the name of a backend to compare with, such as 'diffusers', "
            f"'omni' or 'omni-server' (not 'auto'), got {value!r}")
    return value


def _check_parity(parity: object, ratio: object, where: str) -> None:
    if parity is not None:
        _backend_name(parity, f"{where}.parity")
    elif ratio is not None:
        raise ProfileError(
            f"{where}.max_latency_ratio: compares this backend's latency with the parity "
            "backend's, but no parity backend is named; add parity='diffusers' (or another "
            "backend)")
_REQUEST_FIELDS = ("steps_scale",)
_STEPS_SCALE = Range(0, 1, low_open=True)  # a fraction of the request's steps
_PROFILE_FIELDS = ("description", "method", "lossy", "baseline", "options", "request",
                   "requires", "bounds")


@dataclasses.dataclass(frozen=True)
class Profile:
    """A named optimization configuration and what it must achieve."""

    name: str
    options: Mapping[str, Any]
    description: str = ""
    method: str = ""
    lossy: bool = False
    baseline: str | None = "eager"
    """Profile this one is compared with; None for a reference profile."""
    request: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    requires: Requirements = Requirements()
    bounds: Bounds = Bounds()
    source: str = BUILTIN_SOURCE

    @property
    def world_size(self) -> int:
        return canonical.world_size(self.options)

    def omni_kwargs(self) -> dict[str, Any]:
        """``Omni(model, **kwargs)`` keyword arguments for this profile."""
        return canonical.omni_kwargs(self.options)

    def serve_args(self) -> list[str]:
        """argv tokens after ``vllm serve MODEL --omni`` for this profile."""
        return canonical.serve_args(self.options)

    def describe(self) -> dict[str, Any]:
        """Everything ``--omni-list-profiles`` shows, JSON-friendly."""
        return {
            "description": self.description,
            "method": self.method,
            "lossy": self.lossy,
            "baseline": self.baseline,
            "options": dict(self.options),
            "request": dict(self.request),
            "requires": {k: (f"{v[0]}.{v[1]}" if k == "sm" else v)
                         for k, v in dataclasses.asdict(self.requires).items() if v},
            "bounds": {k: v for k, v in dataclasses.asdict(self.bounds).items() if v is not None},
            "omni_kwargs": self.omni_kwargs(),
            "serve_args": self.serve_args(),
            "source": self.source,
        }


def _number(value: object, where: str, rule: Range = NON_NEGATIVE) -> float:
    return rule.check(value, where, ProfileError)


def _table(value: object, where: str) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise ProfileError(f"{where}: expected a table, got {type(value).__name__} {value!r}")
    return value


def _unknown(keys: Iterable[str], allowed: Iterable[str], where: str) -> None:
    extra = sorted(set(keys) - set(allowed))
    if extra:
        raise ProfileError(
            f"{where}: unknown field(s) {', '.join(extra)} (allowed: {', '.join(allowed)})"
        )


def parse_bounds(raw: Mapping[str, Any], where: str, base: Bounds = Bounds()) -> Bounds:
    """Validate a bounds table (profile file or ``omni_bounds`` marker) onto ``base``."""
    return Bounds.from_mapping(raw, where, base)


def _parse_requires(raw: Mapping[str, Any], where: str) -> Requirements:
    _unknown(raw, ("gpus", "sm", "vram_gib"), where)
    gpus = int(_number(raw.get("gpus", 0), f"{where}.gpus", Range(0, whole=True)))
    sm = None
    if "sm" in raw:
        try:
            sm = parse_sm(raw["sm"])
        except ValueError as exc:
            raise ProfileError(f"{where}.sm: {exc}") from None
    vram = _number(raw["vram_gib"], f"{where}.vram_gib", POSITIVE) if "vram_gib" in raw else None
    return Requirements(gpus=gpus, sm=sm, vram_gib=vram)


# Profile names are typed on command lines (--omni-profile=a,b), end up in test ids
# (test_x[name]) and are joined to labels with "@": keep them to what survives all three.
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.+-]{0,63}")


def parse_profile(name: str, raw: Mapping[str, Any], defaults: Bounds, source: str) -> Profile:
    """Build one ``Profile`` from its TOML table, or raise ProfileError naming the bad field."""
    where = f"{source}: profile {name!r}"
    if not _NAME.fullmatch(name) or name == "all":
        raise ProfileError(
            f"{where}: a profile name is 1-64 letters, digits and _ . + - starting with a "
            "letter or digit (it is typed in --omni-profile=a,b and shown in test ids), and "
            "not 'all'")
    _unknown(raw, _PROFILE_FIELDS, where)
    options = dict(_table(raw.get("options", {}), f"{where}.options"))
    problems = canonical.validate_options(options)
    if problems:
        raise ProfileError(f"{where}.options.{problems[0]}")
    request = dict(_table(raw.get("request", {}), f"{where}.request"))
    _unknown(request, _REQUEST_FIELDS, f"{where}.request")
    if "steps_scale" in request:
        _number(request["steps_scale"], f"{where}.request.steps_scale", _STEPS_SCALE)
    requires = _parse_requires(_table(raw.get("requires", {}), f"{where}.requires"),
                               f"{where}.requires")
    # A profile spanning several GPUs needs them, whether or not its author wrote so.
    world = canonical.world_size(options)
    if world > requires.gpus and world > 1:
        requires = dataclasses.replace(requires, gpus=world)
    bounds = parse_bounds(_table(raw.get("bounds", {}), f"{where}.bounds"), f"{where}.bounds",
                          defaults)
    for key in ("description", "method", "baseline"):
        if key in raw and not isinstance(raw[key], str):
            raise ProfileError(f"{where}.{key}: expected a string, got {raw[key]!r}")
    lossy = raw.get("lossy", False)
    if not isinstance(lossy, bool):
        raise ProfileError(f"{where}.lossy: expected true or false, got {lossy!r}")
    baseline = raw.get("baseline", "eager")
    return Profile(
        name=name, options=options, description=raw.get("description", ""),
        method=raw.get("method", ""), lossy=lossy,
        baseline=None if baseline in ("", name) else baseline,
        request=request, requires=requires, bounds=bounds, source=source,
    )


def parse_document(doc: Mapping[str, Any], source: str, defaults: Bounds = Bounds()
                   ) -> dict[str, Profile]:
    """Profiles of one parsed TOML document; its ``[defaults.bounds]`` apply to its profiles.
    One ProfileError lists every profile's mistakes: all its bad bounds, or its first other."""
    _unknown(doc, ("profiles", "defaults"), source)
    raw_defaults = _table(doc.get("defaults", {}), f"{source}: defaults")
    _unknown(raw_defaults, ("bounds",), f"{source}: defaults")
    problems: list[str] = []
    if "bounds" in raw_defaults:
        where = f"{source}: defaults.bounds"
        try:
            defaults = parse_bounds(_table(raw_defaults["bounds"], where), where, defaults)
        except ProfileError as exc:  # profiles are still checked, on the outer defaults
            problems += exc.problems
    parsed: dict[str, Profile] = {}
    for name, raw in _table(doc.get("profiles", {}), f"{source}: profiles").items():
        try:
            parsed[name] = parse_profile(name, _table(raw, f"{source}: profile {name!r}"),
                                         defaults, source)
        except ProfileError as exc:
            problems += exc.problems
    if problems:
        raise ProfileError(*problems)
    return parsed


def load_file(path: Path) -> dict[str, Profile]:
    """Profiles of a user TOML file; ProfileError for unreadable or malformed files."""
    try:
        doc = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ProfileError(f"{path}: cannot read profile file: {exc.strerror or exc}") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ProfileError(f"{path}: not valid TOML: {exc}") from None
    except RecursionError:  # tomllib parses nested arrays and tables recursively
        raise ProfileError(f"{path}: not valid TOML: nested too deeply") from None
    return parse_document(doc, str(path))


def load_builtin() -> dict[str, Profile]:
    """The packaged profiles."""
    text = resources.files("pytest_omni_perf").joinpath("profiles.toml").read_text("utf-8")
    return parse_document(tomllib.loads(text), BUILTIN_SOURCE)


def load_all(extra_files: Iterable[Path] = ()) -> dict[str, Profile]:
    """Built-ins, then each user file in order (a later file may redefine a profile)."""
    profiles = load_builtin()
    for path in extra_files:
        profiles.update(load_file(path))
    for profile in profiles.values():
        if profile.baseline is not None and profile.baseline not in profiles:
            raise ProfileError(
                f"{profile.source}: profile {profile.name!r}.baseline: unknown profile "
                f"{profile.baseline!r} (known: {', '.join(sorted(profiles))})"
            )
    return profiles
