"""The one small protocol every engine adapter implements, and the data it exchanges.

Kept free of heavy imports: frames are numpy arrays at run time, but this module only
names them for type checkers, so the plugin loads on a machine without numpy or torch.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

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
    start_timeout_s: float = 900.0
    request_timeout_s: float = 600.0
    server_command: str = ""
    """Template for server backends (``{model}``, ``{port}`` placeholders)."""
    cache_dir: str = ""
    """Folder for built-in model folders and compile caches."""
    lease_fds: tuple[int, ...] = dataclasses.field(default=(), compare=False)
    """Locked descriptors of the GPU lease: engine processes inherit them, so GPUs stay
    locked while an engine lives, even one orphaned by a killed pytest worker."""


@dataclasses.dataclass(frozen=True)
class GenerationRequest:
    """One generation call; the same request is sent to a profile and to its baseline."""

    prompt: str = "a red fox in a snowy forest, photograph"
    width: int = 128
    height: int = 128
    num_inference_steps: int = 12
    num_frames: int | None = None
    """None for images; a frame count (4k+1 for Wan) for video."""
    seed: int = 0
    guidance_scale: float | None = None
    negative_prompt: str | None = None

    @property
    def is_video(self) -> bool:
        return self.num_frames is not None

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclasses.dataclass
class GenerationOutput:
    """What one request produced, with the engine's own measurements beside ours."""

    frames: list[npt.NDArray[np.uint8]]
    """HxWx3 uint8 arrays: one for an image, several for a video."""
    engine_latency_s: float
    """Time spent inside the engine's generate call, measured where the engine runs."""
    engine_metrics: dict[str, Any] = dataclasses.field(default_factory=dict)
    """Engine-reported extras: peak_memory_mb, stage_durations, cache statistics ..."""


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
