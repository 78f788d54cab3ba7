"""The shipped server's request models: the one place where request fields are checked.

They mirror vLLM-Omni's ``ImageGenerationRequest``
(``vllm_omni/entrypoints/openai/protocol/images.py``) and ``VideoGenerationRequest``
(``vllm_omni/entrypoints/openai/protocol/videos.py``) for the fields this server serves,
with the same ranges (steps 1..200, guidance 0..20, n, sizes ``WxH``), and add what the
loaded pipeline needs (``PipelineRules``, given as validation context): sizes in multiples
of its latent patch, frame counts its VAE keeps, only arguments its ``__call__`` takes.
A request that breaks a rule is refused with HTTP 400 naming the field and the allowed
range, as vLLM maps pydantic's 422 to 400; it is never run with a changed value.

Differences from vLLM-Omni, each to keep what clients of this server already send: ``fps``
may be fractional (vLLM-Omni takes ints >= 1); ``size`` also takes an upper-case ``X``.
"""

from __future__ import annotations

import dataclasses
import re
from typing import Annotated, Literal

import annotated_types

from pydantic import (
    BaseModel, BeforeValidator, ConfigDict, Field, ValidationInfo, field_validator,
    model_validator,
)

from pytest_omni_perf.engines.base import GenerationRequest, RequestError
from pytest_omni_perf.request_inputs import InputImage

MAX_SIDE = 4096
"""Largest width or height served: beyond it one request can exhaust a GPU's memory."""
MAX_SEED = 2**64 - 1
"""torch.Generator.manual_seed's largest seed."""
FPS_RANGE = (0.01, 1000.0)
"""Frame rates the mp4 encoder (PyAV, h264, timebase 1/10000) writes playable files at."""
_SIZE = re.compile(r"^(\d+)[xX](\d+)$")
_DEFAULTS = GenerationRequest()


@dataclasses.dataclass(frozen=True)
class PipelineRules:
    """What the loaded pipeline can take (read from it by ``serve.state.pipeline_rules``)."""

    multiple: int = 16
    """Width and height must be multiples of this (VAE scale x latent patch)."""
    max_side: int = MAX_SIDE
    video: bool = False
    """Whether the pipeline makes videos (its ``__call__`` takes ``num_frames``)."""
    frame_step: int = 1
    """``num_frames - 1`` must be a multiple of this (the VAE's temporal compression)."""
    default_frames: int | None = None
    needs_image: bool = False
    """Whether ``__call__``'s ``image`` has no default (image to video: Wan-I2V)."""
    max_images: int = 1
    """How many input images one request may carry (``diffusers_inputs.max_input_images``)."""
    takes: frozenset[str] = frozenset({"guidance_scale", "negative_prompt", "true_cfg_scale",
                                       "guidance_scale_2", "flow_shift"})
    """Arguments the pipeline's ``__call__`` takes, and ``flow_shift`` when its scheduler has
    a static shift: optional request fields and extra fields outside it are refused."""


def _rules(info: ValidationInfo) -> PipelineRules:
    context = info.context if isinstance(info.context, dict) else {}
    rules = context.get("rules")
    return rules if isinstance(rules, PipelineRules) else PipelineRules()


def _not_bool(value: object) -> object:
    # pydantic's lax mode reads true as 1; a boolean where a number belongs is a mistake.
    if isinstance(value, bool):
        raise ValueError(f"expected a number, got {str(value).lower()}")
    return value


Int = Annotated[int, BeforeValidator(_not_bool)]
Finite = Annotated[float, BeforeValidator(_not_bool), Field(allow_inf_nan=False)]


def check_side(name: str, value: int, rules: PipelineRules) -> int:
    """``value`` as a width or height the pipeline renders unchanged, else ValueError."""
    allowed = (f"allowed: {rules.multiple}..{rules.max_side} in steps of {rules.multiple}")
    if not rules.multiple <= value <= rules.max_side or value % rules.multiple:
        raise ValueError(f"{name} {value} is not a size this model renders unchanged ({allowed})")
    return value


def allowed_range(model: type[BaseModel], field: str) -> str | None:
    """The bounds of ``model.field`` as a user reads them (``1..200``, ``> 0``), or None."""
    info = model.model_fields.get(field)
    if info is None:
        return None
    low = high = None
    for item in info.metadata:
        if isinstance(item, annotated_types.Ge):
            low = f"{item.ge}"
        elif isinstance(item, annotated_types.Gt):
            low = f"> {item.gt}"
        elif isinstance(item, annotated_types.Le):
            high = f"{item.le}"
    if low is None and high is None:
        return None
    if high is None:
        return low if str(low).startswith(">") else f">= {low}"
    return f"{low or ''}..{high}"


class _Generation(BaseModel):
    """Fields both endpoints share (vLLM-Omni's diffusion extensions).

    Fields it does not declare are kept (``extra="allow"``) and reach the pipeline as the
    request's extra_body when its ``__call__`` takes them; vLLM-Omni drops unknown fields
    silently, this server refuses them by name so a benchmark never measures less than asked.
    """

    model_config = ConfigDict(extra="allow")

    prompt: str = Field(min_length=1, description="Text description of the output")
    negative_prompt: str | None = None
    size: str | None = Field(None, description="WIDTHxHEIGHT, e.g. 512x512")
    num_inference_steps: Int | None = Field(None, ge=1, le=200)
    guidance_scale: Finite | None = Field(None, ge=0.0, le=20.0)
    seed: Int | None = Field(None, ge=0, le=MAX_SEED)
    true_cfg_scale: Finite | None = Field(None, ge=0.0, le=20.0)
    flow_shift: Finite | None = Field(None, gt=0.0)

    @field_validator("size")
    @classmethod
    def _size(cls, value: str | None, info: ValidationInfo) -> str | None:
        if value is None:
            return None
        match = _SIZE.match(value.strip())
        if match is None:
            raise ValueError(f"expected 'WIDTHxHEIGHT' (e.g. '512x512'), got {value!r}")
        rules = _rules(info)
        check_side("width", int(match[1]), rules)
        check_side("height", int(match[2]), rules)
        return f"{int(match[1])}x{int(match[2])}"

    @field_validator("guidance_scale", "negative_prompt", "true_cfg_scale", "flow_shift")
    @classmethod
    def _taken(cls, value: object, info: ValidationInfo) -> object:
        if value is not None and info.field_name not in _rules(info).takes:
            raise ValueError(f"this model's pipeline does not take {info.field_name}")
        return value

    @model_validator(mode="after")
    def _extra_taken(self, info: ValidationInfo) -> _Generation:
        takes = _rules(info).takes
        for key in self.model_extra or {}:
            if key not in takes:
                raise ValueError(f"this model's pipeline does not take {key}")
        return self

    def extra_body(self) -> dict[str, object]:
        """The undeclared fields; form values (text) that read as JSON become that value."""
        import json

        extra = {}
        for key, value in (self.model_extra or {}).items():
            if isinstance(value, str):
                try:
                    value = json.loads(value)
                except ValueError:
                    pass
            extra[key] = value
        return extra

    def dimensions(self) -> tuple[int, int]:
        """(width, height): the size field, else the defaults."""
        if self.size is None:
            return _DEFAULTS.width, _DEFAULTS.height
        width, height = self.size.split("x")
        return int(width), int(height)

    def generation(self, width: int, height: int, num_frames: int | None) -> GenerationRequest:
        """The engine request these fields describe (absent fields take the defaults)."""
        return GenerationRequest(
            prompt=self.prompt, width=width, height=height,
            num_inference_steps=self.num_inference_steps or _DEFAULTS.num_inference_steps,
            num_frames=num_frames, seed=self.seed if self.seed is not None else _DEFAULTS.seed,
            guidance_scale=self.guidance_scale, negative_prompt=self.negative_prompt or None,
            true_cfg_scale=self.true_cfg_scale, flow_shift=self.flow_shift,
            guidance_scale_2=getattr(self, "guidance_scale_2", None),
            fps=_whole(getattr(self, "fps", None)) if num_frames is not None else None,
            extra_body=self.extra_body())


def _whole(fps: float | None) -> int | None:
    """A request's fps as GenerationRequest keeps it (whole, as vLLM-Omni takes it); a
    fractional rate this server allows for its mp4 is rounded for the record only."""
    return None if fps is None else max(1, round(fps))


class ImageGenerationRequest(_Generation):
    """JSON body of ``POST /v1/images/generations``."""

    model: str | None = None
    n: Int = Field(1, ge=1, le=1, description="images per request (this server makes one)")
    response_format: Literal["b64_json"] = "b64_json"

    @model_validator(mode="after")
    def _image_model(self, info: ValidationInfo) -> ImageGenerationRequest:
        if _rules(info).video:
            raise ValueError("this model makes videos: use POST /v1/videos")
        return self

    def to_request(self) -> GenerationRequest:
        """The engine request."""
        return self.generation(*self.dimensions(), None)


class ImageEditRequest(_Generation):
    """Form fields of ``POST /v1/images/edits`` (the images come as file parts).

    As vLLM-Omni's ``edit_images``: ``size`` defaults to ``auto``, the first input image's
    size; ``strength`` is a diffusion extension. Only ``b64_json`` answers, as there.
    """

    model: str | None = None
    n: Int = Field(1, ge=1, le=1, description="images per request (this server makes one)")
    response_format: Literal["b64_json"] = "b64_json"
    strength: Finite | None = Field(None, gt=0.0, le=1.0)

    @model_validator(mode="before")
    @classmethod
    def _auto_size(cls, data: object) -> object:
        if isinstance(data, dict) and str(data.get("size", "")).strip().lower() == "auto":
            data = {key: value for key, value in data.items() if key != "size"}
        return data

    @model_validator(mode="after")
    def _edit_model(self, info: ValidationInfo) -> ImageEditRequest:
        rules = _rules(info)
        if "image" not in rules.takes or rules.video:
            raise ValueError("this model's pipeline takes no input image: use POST "
                             + ("/v1/videos" if rules.video else "/v1/images/generations"))
        if self.strength is not None and "strength" not in rules.takes:
            raise ValueError("this model's pipeline does not take strength")
        return self

    def to_request(self, images: tuple[InputImage, ...], mask: InputImage | None,
                   rules: PipelineRules) -> GenerationRequest:
        """The engine request; without ``size``, the first input image's size (400 when the
        model cannot render that size unchanged)."""
        if self.size is not None:
            width, height = self.dimensions()
        else:
            width, height = images[0].width, images[0].height
            try:
                check_side("width", width, rules)
                check_side("height", height, rules)
            except ValueError as exc:
                raise RequestError(f"size auto (the input image's {width}x{height}): {exc}; "
                                   "give size=WIDTHxHEIGHT") from None
        if mask is not None and "mask_image" not in rules.takes:
            raise RequestError("mask_image: this model's pipeline takes no mask")
        return dataclasses.replace(self.generation(width, height, None), images=images,
                                   mask=mask, strength=self.strength)


class VideoGenerationRequest(_Generation):
    """Form fields (or JSON) of ``POST /v1/videos`` and ``POST /v1/videos/sync``.

    ``size`` wins over ``width``/``height``, as in vLLM-Omni's ``resolve_video_params``.
    """

    model: str | None = None
    width: Int | None = Field(None, ge=1)
    height: Int | None = Field(None, ge=1)
    num_frames: Int | None = Field(None, ge=1)
    fps: Finite | None = Field(None, ge=FPS_RANGE[0], le=FPS_RANGE[1])
    guidance_scale_2: Finite | None = Field(None, ge=0.0, le=20.0)

    @field_validator("guidance_scale_2")
    @classmethod
    def _taken_2(cls, value: object, info: ValidationInfo) -> object:
        if value is not None and info.field_name not in _rules(info).takes:
            raise ValueError(f"this model's pipeline does not take {info.field_name}")
        return value

    @field_validator("width", "height")
    @classmethod
    def _side(cls, value: int | None, info: ValidationInfo) -> int | None:
        return None if value is None else check_side(str(info.field_name), value, _rules(info))

    @field_validator("num_frames")
    @classmethod
    def _frames(cls, value: int | None, info: ValidationInfo) -> int | None:
        step = _rules(info).frame_step
        if value is not None and step > 1 and (value - 1) % step:
            raise ValueError(f"this model renders {step}k+1 frames (its VAE compresses time "
                             f"{step}x): allowed 1, {1 + step}, {1 + 2 * step}, ...")
        return value

    @model_validator(mode="after")
    def _video_model(self, info: ValidationInfo) -> VideoGenerationRequest:
        rules = _rules(info)
        if not rules.video:
            raise ValueError("this model makes images: use POST /v1/images/generations")
        if self.num_frames is None and rules.default_frames is None:
            raise ValueError("num_frames is required: this model's pipeline has no default")
        return self

    def frame_rate(self, default: float) -> float:
        """Frames per second of the mp4."""
        return self.fps if self.fps is not None else default

    def to_request(self, rules: PipelineRules, references: tuple[InputImage, ...] = ()
                   ) -> GenerationRequest:
        """The engine request (``rules`` gives the default frame count) with the
        ``input_reference`` images; RequestError naming input_reference when the model needs
        one and has none, or takes none and got one."""
        width, height = self.dimensions()
        if self.size is None:
            width, height = self.width or width, self.height or height
        if len(references) > 1:
            raise RequestError(f"input_reference: one input image per request, got "
                               f"{len(references)}")
        if references and "image" not in rules.takes:
            raise RequestError("input_reference: this model's pipeline takes no input image "
                               "(it makes videos from text); send no input_reference")
        if rules.needs_image and not references:
            raise RequestError("input_reference is required: this model makes videos from an "
                               "input image (image to video); send it as a file part")
        generation = self.generation(width, height, self.num_frames or rules.default_frames)
        return dataclasses.replace(generation, images=references)
