"""One generation request, the unit every engine, the shipped server and the wire format
share: its fields and the checks every one of them passes where a request is built.

Kept below ``engines/`` so that the wire module (``omni_wire``) and the server can name the
request without importing any engine.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from pytest_omni_perf.numeric import Range


class RequestError(ValueError):
    """A request field is of the wrong type, not finite or out of range; names the field."""


_REQUEST_RANGES = {
    "width": Range(1, whole=True),
    "height": Range(1, whole=True),
    "num_inference_steps": Range(1, whole=True),
    "num_frames": Range(1, whole=True),
    "seed": Range(whole=True),
    "guidance_scale": Range(),
}


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

    def __post_init__(self) -> None:
        # The one place every request is built (omni_perf.measure, the shipped server, the
        # worker): NaN or 0 here would reach a torch kernel or a gate as a silent default.
        for name, rule in _REQUEST_RANGES.items():
            value = getattr(self, name)
            if value is not None or name in ("width", "height", "num_inference_steps", "seed"):
                rule.check(value, f"request field {name}", RequestError)
        for name in ("prompt", "negative_prompt"):
            value = getattr(self, name)
            if not isinstance(value, str) and (value is not None or name == "prompt"):
                raise RequestError(f"request field {name}: expected a string, got "
                                   f"{type(value).__name__} {value!r}"[:200])

    @property
    def is_video(self) -> bool:
        return self.num_frames is not None

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)
