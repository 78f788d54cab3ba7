"""The one small protocol every engine adapter implements, and the data it exchanges.

Kept free of heavy imports: frames are numpy arrays at run time, but this module only
names them for type checkers, so the plugin loads on a machine without numpy or torch.
"""

from __future__ import annotations

import dataclasses
import math
import numbers
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from pytest_omni_perf.engines.startup import StartupPhases
from pytest_omni_perf.numeric import NON_NEGATIVE
# Re-exported: the request is part of what engines exchange (engines import it from here).
from pytest_omni_perf.request import GenerationRequest as GenerationRequest
from pytest_omni_perf.request import RequestError as RequestError

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt


class EngineError(RuntimeError):
    """An engine failed to start, crashed, hung or answered with an error.

    ``log_tail`` carries the last lines the engine wrote, so a test failure can show why.
    """

    def __init__(self, message: str, *, log_tail: str = "") -> None:
        super().__init__(message)
        self.log_tail = log_tail

    def __str__(self) -> str:
        base = super().__str__()
        if not self.log_tail:
            return base
        return f"{base}\n--- engine log (tail) ---\n{self.log_tail.rstrip()}"


# What out-of-memory looks like in a worker's traceback or a server's log: Python's own
# MemoryError, torch's CPU allocator and mmap (ENOMEM, errno 12), and CUDA. Libraries often
# re-raise it as something else (diffusers turns a failed mmap of the weights into "Unable
# to load weights from checkpoint file"), so the whole text is searched, chained causes too.
_OOM_SIGNS = ("MemoryError", "OutOfMemoryError", "out of memory", "Cannot allocate memory",
              "can't allocate memory", "CUDA_ERROR_OUT_OF_MEMORY")


def out_of_memory_line(text: str) -> str | None:
    """The first line of ``text`` that says the process ran out of memory, or None."""
    for line in text.splitlines():
        if any(sign in line for sign in _OOM_SIGNS):
            return line.strip()
    return None


def cause_line(text: str) -> str:
    """The line a user should read first in a traceback: the out-of-memory one where there
    is one (it is the cause, whatever was raised after it), else the last line."""
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return out_of_memory_line(text) or (lines[-1] if lines else "")


class ProfileUnsupported(Exception):
    """The engine cannot honour an option of the profile; the test skips with this reason."""


@dataclasses.dataclass(frozen=True)
class EngineSpec:
    """What to start: model, canonical profile options, backend and where it may run."""

    model: str
    """Built-in model name (``tiny-flux``) or a local diffusers folder / vLLM-Omni model id."""
    profile_name: str
    options: Mapping[str, Any]
    """Canonical options (``OmniDiffusionConfig`` field names) of the profile."""
    backend: str
    devices: tuple[int, ...] = ()
    """Physical GPU indices the engine may use (empty: CPU, or whatever is visible)."""
    in_process: bool = False
    launch: str = "exec"
    """How a worker process starts: "zygote" (forked, imports already made; engines/
    zygote.py) or "exec" (a fresh interpreter). Backends without a zygote ignore it."""
    start_timeout_s: float = 900.0
    request_timeout_s: float = 600.0
    server_command: str = ""
    """Template for server backends (``{model}``, ``{port}`` placeholders)."""
    server_url: str = ""
    """A running server to attach to instead of starting one (``--omni-server-url``)."""
    cache_dir: str = ""
    """Folder for built-in model folders and compile caches."""
    lease_fds: tuple[int, ...] = dataclasses.field(default=(), compare=False)
    """Locked descriptors of the GPU lease: engine processes inherit them, so GPUs stay
    locked while an engine lives, even one orphaned by a killed pytest worker."""


@dataclasses.dataclass
class GenerationOutput:
    """What one request produced, with the engine's own measurements beside ours."""

    frames: list[npt.NDArray[np.uint8]]
    """HxWx3 uint8 arrays: one for an image, several for a video."""
    engine_latency_s: float
    """Time spent inside the engine's generate call, measured where the engine runs."""
    engine_metrics: dict[str, Any] = dataclasses.field(default_factory=dict)
    """Engine-reported extras: peak_memory_mb, stage_durations, cache statistics ..."""


def engine_name(spec: EngineSpec) -> str:
    """``engine 'fp8' (diffusers)``: how messages name an engine."""
    return f"engine {spec.profile_name!r} ({spec.backend})"


# A number under a key with one of these units is an amount of time or memory: never < 0.
_UNIT_SUFFIXES = ("_s", "_ms", "_bytes", "_mb", "_gib")


def checked_output(output: object, engine: str) -> GenerationOutput:
    """``output`` when it is a reply the measurements can use, else EngineError.

    Engine replies are inputs like any other: a worker, a server or a plugin's engine may
    answer NaN, infinity, a negative time or a string where a number belongs, and NaN
    would pass every gate it reaches. Checked: ``engine_latency_s`` is a finite number
    >= 0; ``engine_metrics`` is a dict whose numbers, nested ones included, are finite, and
    those under a time or memory key (``*_s``, ``*_ms``, ``*_bytes``, ``*_mb``, ``*_gib``)
    are >= 0; ``frames`` is a list. ``engine`` names the engine in the message, and the
    field is named as a path (``engine_metrics.stage_durations.stage_0_gen_ms``); a server's
    ``engine_latency_source`` is named too, since that is the field it sent.
    """
    if not isinstance(output, GenerationOutput):
        raise EngineError(f"{engine} answered a request with {type(output).__name__}, "
                          "not a GenerationOutput")
    source = output.engine_metrics.get("engine_latency_source") \
        if isinstance(output.engine_metrics, dict) else None
    field = "engine_latency_s" + (f" (from the reply's {source})"
                                  if isinstance(source, str) and source else "")
    output.engine_latency_s = NON_NEGATIVE.check(
        output.engine_latency_s, f"{engine} replied {field}", EngineError)
    if not isinstance(output.engine_metrics, dict):
        raise EngineError(f"{engine} replied engine_metrics of type "
                          f"{type(output.engine_metrics).__name__}, not a dict")
    if (why := _bad_number(output.engine_metrics, "engine_metrics", False)) is not None:
        raise EngineError(f"{engine} replied {why}")
    if not isinstance(output.frames, list):
        raise EngineError(f"{engine} replied frames of type {type(output.frames).__name__}, "
                          "not a list of arrays")
    return output


def _bad_number(value: object, path: str, amount: bool) -> str | None:
    """``path=value: why`` for the first number that is not finite (or negative where
    ``amount``), looking inside dicts, lists and tuples; None when all are fine."""
    if isinstance(value, numbers.Real) and not isinstance(value, bool):
        try:
            number = float(value)
        except OverflowError:
            number = math.inf
        if not math.isfinite(number) or (amount and number < 0):
            return (f"{path}={value!r}: expected a finite number"
                    f"{' >= 0 (a time or an amount of memory)' if amount else ''}")
        return None
    if isinstance(value, Mapping):
        for key, item in value.items():
            name = str(key)
            why = _bad_number(item, f"{path}.{name}", amount or name.endswith(_UNIT_SUFFIXES))
            if why is not None:
                return why
    elif isinstance(value, (list, tuple)):
        for index, item in enumerate(value):
            if (why := _bad_number(item, f"{path}[{index}]", amount)) is not None:
                return why
    return None


@dataclasses.dataclass(frozen=True)
class EngineInfo:
    """What a started engine says about itself, shown in reports."""

    backend: str
    model: str
    pids: tuple[int, ...]
    """Processes whose memory belongs to this engine (for NVML / RSS sampling)."""
    applied: Mapping[str, Any]
    """How each profile option was honoured (e.g. ``{"cache_backend": "cache_dit"}``)."""
    versions: Mapping[str, str]
    device: str
    startup: StartupPhases = dataclasses.field(default_factory=StartupPhases)
    """Seconds per phase of the start, None where the engine cannot see a phase."""


@runtime_checkable
class Engine(Protocol):
    """start, generate, stop, describe: the whole engine contract."""

    spec: EngineSpec

    def start(self) -> None:
        """Load the model with the profile applied; raise EngineError or ProfileUnsupported."""

    def generate(self, request: GenerationRequest) -> GenerationOutput:
        """Run one request; raise EngineError when the engine fails or times out."""

    def stop(self) -> None:
        """Release everything (processes, GPU memory). Safe to call twice."""

    def describe(self) -> EngineInfo:
        """Report backend, processes and how the profile was applied."""
