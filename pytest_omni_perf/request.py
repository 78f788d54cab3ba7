"""One generation request, the unit every engine, the shipped server and the wire format
share: its fields and the checks every one of them passes where a request is built.

Kept below ``engines/`` so that the wire module (``omni_wire``) and the server can name the
request without importing any engine.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any

from pytest_omni_perf.numeric import Range
from pytest_omni_perf.request_inputs import InputImage


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
_STRENGTH = Range(0, 1, low_open=True)
INPUT_FIELDS = ("images", "mask", "video", "strength")
"""The conditioning-input block of ``GenerationRequest``."""


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

    # -- conditioning inputs (image edit, image/video to video) -----------------------------
    # A block of its own: its pixels travel as PNG inside InputImage (payload()), never
    # through as_dict(), which keeps only their digests; unset, they are left out of
    # as_dict() so requests and stored baselines without inputs read as before.
    images: tuple[InputImage, ...] = ()
    """Input images, passed as the pipeline's ``image`` (one: Flux-Kontext, Qwen-Image-Edit,
    Wan image-to-video; several: Qwen-Image-Edit-2509)."""
    mask: InputImage | None = None
    """Inpainting mask (white: repaint), the pipeline's ``mask_image``."""
    video: tuple[InputImage, ...] = ()
    """Input video frames (video to video), the pipeline's ``video``."""
    strength: float | None = None
    """How far from the input the output may move, in (0, 1] (img2img, inpaint, v2v)."""

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
        self._check_inputs()

    def _check_inputs(self) -> None:
        for name in ("images", "video"):
            value = getattr(self, name)
            if not isinstance(value, tuple) or not all(isinstance(v, InputImage) for v in value):
                raise RequestError(f"request field {name}: expected a tuple of InputImage "
                                   f"(omni_perf.measure converts arrays, PIL images and paths), "
                                   f"got {type(value).__name__}")
        if self.mask is not None and not isinstance(self.mask, InputImage):
            raise RequestError(f"request field mask: expected an InputImage, got "
                               f"{type(self.mask).__name__}")
        if self.mask is not None and not self.images:
            raise RequestError("request field mask: a mask needs an input image to repaint "
                               "(give image=...)")
        if self.strength is not None:
            _STRENGTH.check(self.strength, "request field strength", RequestError)
            if not (self.images or self.video):
                raise RequestError("request field strength: it says how far the output may "
                                   "move from an input image or video; give image= or video=")

    @property
    def is_video(self) -> bool:
        return self.num_frames is not None

    @property
    def has_inputs(self) -> bool:
        return bool(self.images or self.video or self.mask is not None)

    def as_dict(self) -> dict[str, Any]:
        """The request as JSON: inputs as their ``record()`` (digest, width, height), and
        left out when unset. What stored baselines keep and what a reused one must match."""
        fields: dict[str, Any] = {}
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            if field.name not in INPUT_FIELDS:
                fields[field.name] = value
            elif isinstance(value, InputImage):
                fields[field.name] = value.record()
            elif isinstance(value, tuple) and value:
                fields[field.name] = [item.record() for item in value]
            elif value is not None and not isinstance(value, tuple):
                fields[field.name] = value
        return fields

    def payload(self) -> dict[str, Any]:
        """Every field as it is (inputs with their PNG bytes), for ``GenerationRequest(**p)``
        in an engine worker: what travels pickled over the worker's private socket."""
        return {field.name: getattr(self, field.name) for field in dataclasses.fields(self)}

    def key(self) -> str:
        """A hashable key of everything that shapes the output (inputs by pixel digest)."""
        return json.dumps(self.as_dict(), sort_keys=True, default=repr)
