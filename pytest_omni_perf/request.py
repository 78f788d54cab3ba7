"""One generation request, the unit every engine, the shipped server and the wire format
share: its fields and the checks every one of them passes where a request is built.

Kept below ``engines/`` so that the wire module (``omni_wire``) and the server can name the
request without importing any engine.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping
from typing import Any

from pytest_omni_perf.numeric import Range
from pytest_omni_perf.request_inputs import InputImage
# Re-exported: defined below this module, where the input checks raise it too.
from pytest_omni_perf.request_inputs import RequestError as RequestError


_REQUEST_RANGES = {
    "width": Range(1, whole=True),
    "height": Range(1, whole=True),
    "num_inference_steps": Range(1, whole=True),
    "num_frames": Range(1, whole=True),
    "seed": Range(whole=True),
    "guidance_scale": Range(),
    # -- sampling fields (fps .. extra_body): vLLM-Omni's protocol/videos.py ranges --------
    "fps": Range(1, whole=True),
    "true_cfg_scale": Range(0),
    "guidance_scale_2": Range(0),
    "flow_shift": Range(0, low_open=True),
}
SAMPLING_FIELDS = ("fps", "true_cfg_scale", "guidance_scale_2", "flow_shift", "negative_prompt",
                   "extra_body")
"""The optional sampling fields; each backend honours them or skips naming the field."""
_OMITTED_WHEN_UNSET = ("fps", "true_cfg_scale", "guidance_scale_2", "flow_shift", "extra_body")
# Fields of vLLM-Omni's request bodies that extra_body must not replace: they carry what the
# request's own fields say (size, steps, seed ...) or how the answer is shaped.
_WIRE_FIELDS = frozenset({"prompt", "size", "n", "model", "response_format", "seconds",
                          "extra_params", "extra_body"})
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
    # -- sampling fields (issue 20, item 2). Kept apart from the conditioning inputs
    # (image, mask ...) another block adds: these tune the sampler, those feed the model.
    fps: int | None = None
    """Frames per second of a video's output (>= 1; video requests only)."""
    true_cfg_scale: float | None = None
    """Qwen-Image-style "true" CFG scale (>= 0); None: the pipeline's default."""
    guidance_scale_2: float | None = None
    """Wan2.2's CFG scale of the high-noise transformer (>= 0)."""
    flow_shift: float | None = None
    """The flow-matching scheduler's sigma shift for this request (> 0)."""
    extra_body: Mapping[str, Any] = dataclasses.field(default_factory=dict, hash=False)
    """More request fields, as vLLM-Omni's benchmark client merges ``extra_body`` into the
    request: body fields to a server, keyword arguments to a diffusers pipeline's
    ``__call__`` (only those it takes), sampling params or ``extra_args`` to ``Omni``. JSON
    values only; a key that names a field above is refused (use the field)."""

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
        if self.fps is not None and self.num_frames is None:
            raise RequestError(f"request field fps: {self.fps} frames per second asked of an "
                               "image request (set num_frames for a video)")
        object.__setattr__(self, "extra_body", _checked_extra_body(self.extra_body))
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

    def size(self) -> tuple[int, str]:
        """(pixels x frames, "1024x1024" or "832x480x33"): what sizes its activations."""
        frames = self.num_frames or 1
        label = f"{self.width}x{self.height}" + (f"x{frames}" if self.num_frames else "")
        return self.width * self.height * frames, label

    def as_dict(self) -> dict[str, Any]:
        """The request as JSON: inputs as their ``record()`` (digest, width, height), and
        inputs and sampling fields left out when unset, so stored baselines recorded before
        those fields existed stay valid. What stored baselines keep and a reused one must
        match."""
        fields: dict[str, Any] = {}
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            if field.name in _OMITTED_WHEN_UNSET:
                if value is not None and value != {}:
                    fields[field.name] = dict(value) if field.name == "extra_body" else value
            elif field.name not in INPUT_FIELDS:
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
        """The request as one canonical JSON text: equal requests, equal keys (inputs by
        pixel digest; extra_body's dict is not hashable, so caches key requests by this)."""
        return json.dumps(self.as_dict(), sort_keys=True, separators=(",", ":"), default=repr)

    def sampling(self) -> dict[str, Any]:
        """The sampling fields that are set (``SAMPLING_FIELDS``; extra_body when not empty)."""
        found = {name: getattr(self, name) for name in SAMPLING_FIELDS}
        return {k: v for k, v in found.items() if v is not None and v != {}}


def _checked_extra_body(raw: object) -> dict[str, Any]:
    """``raw`` as a plain dict of JSON values with text keys, or RequestError naming the key."""
    if not isinstance(raw, Mapping):
        raise RequestError(f"request field extra_body: expected a mapping of field names to "
                           f"JSON values, got {type(raw).__name__}")
    own = {f.name for f in dataclasses.fields(GenerationRequest)}
    body: dict[str, Any] = {}
    for key, value in raw.items():
        if not isinstance(key, str) or not key.strip():
            raise RequestError(f"request field extra_body: keys must be non-empty strings, "
                               f"got {key!r}")
        where = f"request field extra_body.{key}"
        if key in own:
            raise RequestError(f"{where}: {key} is a request field of its own; pass "
                               f"{key}=... instead of putting it in extra_body")
        if key in _WIRE_FIELDS:
            raise RequestError(f"{where}: the request body's {key!r} is set by the plugin "
                               "from the request's fields")
        try:
            # allow_nan=False: NaN or inf would reach the pipeline as a silent default.
            json.dumps(value, allow_nan=False)
        except (TypeError, ValueError) as exc:
            raise RequestError(f"{where}: not a JSON value ({exc})"[:300]) from None
        body[key] = value
    return body
