"""Where an engine start goes: seconds per phase, each measured where it happens.

An engine reports what it can see and leaves the rest None (never 0: a phase it cannot see
may still have cost time). The diffusers worker sees every phase; the vLLM-Omni worker sees
its process launch and imports (``Omni(...)`` loads, applies and warms up in one call); a
server started or attached to reports none.

The process launch is measured from the parent without comparing two processes' clocks:
the parent's wait from spawning the worker to the ``start`` answer, less the worker's own
time from its ``main`` to that answer (perf_counter on each side).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from typing import Any

PHASES = ("interpreter_s", "imports_s", "load_s", "apply_s", "compile_s")
"""The phases inside an engine start, in the order they happen (``first_request_s`` and
``other_s`` come after them in reports)."""

COMPILE_PLACES = ("none", "first_request", "separate")
"""Where a profile compiles: nowhere (eager), lazily inside the first request (torch.compile
wraps the blocks at start, tracing and code generation run on the first call), or in a
step of its own (``compile_s``)."""


def _seconds(value: object) -> float | None:
    """A finite non-negative number of seconds, else None (what a worker sent is checked)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    number = float(value)
    return number if math.isfinite(number) and number >= 0 else None


@dataclasses.dataclass(frozen=True)
class StartupPhases:
    """Seconds per phase of one engine start; None where the engine cannot see the phase."""

    interpreter_s: float | None = None
    """(a) Worker process launch until its Python runs ``main`` (interpreter start and the
    plugin's light imports); None when the engine runs in pytest's own process."""
    imports_s: float | None = None
    """(b) Heavy imports: torch, diffusers and the modules of the folder's pipeline class."""
    load_s: float | None = None
    """(c) Pipeline construction and weight loading (``from_pretrained``)."""
    apply_s: float | None = None
    """(d) Applying the profile's options and moving the pipeline to its device."""
    compile_s: float | None = None
    """A compile step of its own; None where it is not separable (see ``compile``)."""
    first_request_s: float | None = None
    """(e) The first request after start, timed around it by the harness."""
    other_s: float | None = None
    """The engine start less phases (a)-(d): process spawn, messages, the built-in model
    check, library versions. Only where every one of (a)-(d) is known."""
    compile: str | None = None
    """Where the profile compiles (one of ``COMPILE_PLACES``); None when unknown. With
    ``first_request`` the compile time is inside ``first_request_s``."""

    @classmethod
    def from_reported(cls, reported: Mapping[str, Any] | None, *,
                      interpreter_s: float | None = None) -> StartupPhases:
        """The phases a runner reported (unknown keys and bad values dropped)."""
        reported = reported or {}
        values: dict[str, Any] = {name: _seconds(reported.get(name)) for name in PHASES}
        if interpreter_s is not None:
            values["interpreter_s"] = _seconds(interpreter_s)
        place = reported.get("compile")
        values["compile"] = place if place in COMPILE_PLACES else None
        return cls(**values)

    def completed(self, *, start_s: float, first_request_s: float | None) -> StartupPhases:
        """These phases with the first request and the rest of ``start_s`` filled in."""
        known = [getattr(self, name) for name in PHASES[:4]]
        other = None
        if all(v is not None for v in known):
            other = max(0.0, start_s - sum(v for v in known if v is not None)
                        - (self.compile_s or 0.0))
        return dataclasses.replace(self, first_request_s=_seconds(first_request_s),
                                   other_s=other)

    def known(self) -> bool:
        """Whether any phase of the start itself is known."""
        return any(getattr(self, name) is not None for name in PHASES)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def interpreter_seconds(waited_s: float, worker_s: object) -> float | None:
    """(a) from the parent's wait for the ``start`` answer and the worker's own time since
    its ``main`` (None when the worker did not say)."""
    inside = _seconds(worker_s)
    return None if inside is None else max(0.0, waited_s - inside)


def startup_of(info: object) -> StartupPhases:
    """The phases an engine's ``describe()`` carries; none known for an engine whose info
    has no ``startup`` (one a plugin hook built some other way)."""
    phases = getattr(info, "startup", None)
    return phases if isinstance(phases, StartupPhases) else StartupPhases()
