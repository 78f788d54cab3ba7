"""The requests the zero-code suite (``pytest --pyargs pytest_omni_perf.suite``) sends.

Chosen from the model's kind (image or video, from its pipeline class) and the hardware:
on CPU one short request (the sizes the built-in tiny models' perf tests use, large enough
for Cache-DiT to cache some steps); on a GPU a short one and a realistic one, the defaults
of the FLUX.1 and Wan pipelines (1024x1024, 28 steps; 832x480, 30 steps) with video cut to
33 frames, as the H100/H200 runs in results/ used. ``--omni-suite-request=k=v,...``
overrides fields of every request (e.g. ``width=32,height=32,num_inference_steps=2``).
Models that make their output from an input image (Flux-Kontext, Qwen-Image-Edit, Wan
image-to-video) get one, computed (``input_picture``), at the request's size.
Stdlib only at import (numpy is imported when a picture is drawn): the option's ``type=``
converter lives here.
"""

from __future__ import annotations

import argparse
import dataclasses
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pytest_omni_perf import builtin_models
from pytest_omni_perf.request import GenerationRequest, RequestError

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt

PROMPTS = {"image": "a red fox in a snowy forest, photograph",
           "video": "a paper boat drifting on a pond"}

# (label, fields) per kind; sizes in pixels, frames for video (4k+1, as Wan needs).
SHORT: Mapping[str, Mapping[str, Any]] = {
    "image": {"width": 128, "height": 128, "num_inference_steps": 12},
    "video": {"width": 64, "height": 64, "num_inference_steps": 10, "num_frames": 9},
}
GPU_SHORT: Mapping[str, Mapping[str, Any]] = {
    "image": {"width": 512, "height": 512, "num_inference_steps": 20},
    "video": {"width": 416, "height": 240, "num_inference_steps": 20, "num_frames": 17},
}
REALISTIC: Mapping[str, Mapping[str, Any]] = {
    "image": {"width": 1024, "height": 1024, "num_inference_steps": 28},
    "video": {"width": 832, "height": 480, "num_inference_steps": 30, "num_frames": 33},
}
_INT_FIELDS = ("width", "height", "num_inference_steps", "num_frames", "seed")
_FLOAT_FIELDS = ("guidance_scale",)
_TEXT_FIELDS = ("prompt", "negative_prompt")


def parse_overrides(text: str) -> dict[str, Any]:
    """``--omni-suite-request``: ``KEY=VALUE[,KEY=VALUE]`` over the request fields
    (width, height, num_inference_steps, num_frames, seed, guidance_scale, prompt,
    negative_prompt); argparse.ArgumentTypeError naming the bad part."""
    fields: dict[str, Any] = {}
    for part in text.split(","):
        if not part.strip():
            continue
        key, eq, value = (p.strip() for p in part.partition("="))
        try:
            if not eq or not key:
                raise ValueError(f"expected KEY=VALUE, got {part!r}")
            if key in _INT_FIELDS:
                fields[key] = int(value)
            elif key in _FLOAT_FIELDS:
                fields[key] = float(value)
            elif key in _TEXT_FIELDS:
                fields[key] = value
            else:
                raise ValueError(f"unknown field {key!r} (known: "
                                 f"{', '.join(_INT_FIELDS + _FLOAT_FIELDS + _TEXT_FIELDS)})")
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None
    try:  # the checks every request passes (ranges, finiteness), now rather than mid-run
        GenerationRequest(**fields)
    except (RequestError, TypeError) as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return fields


def input_picture(width: int, height: int) -> npt.NDArray[np.uint8]:
    """A ``height x width x 3`` uint8 RGB picture: two gradients and a disc, smooth like a
    photograph, computed with integer arithmetic so its digest is the same on every machine."""
    import numpy as np

    y, x = np.mgrid[0:height, 0:width]
    radius = min(width, height) // 4
    disc = (x - width // 3) ** 2 + (y - height // 2) ** 2 < radius ** 2
    red = x * 255 // max(width - 1, 1)
    green = y * 255 // max(height - 1, 1)
    blue = np.where(disc, 230, 40)
    return np.stack([red, green, blue], axis=-1).astype(np.uint8)


def takes_image(model: str, cache_dir: Path | None) -> bool:
    """Whether ``model`` (a built-in name, a diffusers folder or a hub id) needs an input
    image: its pipeline class (``builtin_models.class_takes_image``)."""
    if builtin_models.is_builtin(model):
        folder = builtin_models.ensure_model(model, cache_dir)
        return builtin_models.class_takes_image(builtin_models.model_class_name(folder))
    if (Path(model) / "model_index.json").is_file():
        return builtin_models.class_takes_image(builtin_models.model_class_name(Path(model)))
    return builtin_models.class_takes_image(model)


def model_kind(model: str, cache_dir: Path | None) -> str:
    """``"image"`` or ``"video"``: a built-in's or a local folder's pipeline class, else the
    model id's name (``Wan-AI/...`` is video), since reading a hub id's index needs the
    network."""
    if builtin_models.is_builtin(model):
        return builtin_models.model_kind(builtin_models.ensure_model(model, cache_dir))
    if (Path(model) / "model_index.json").is_file():
        return builtin_models.model_kind(Path(model))
    return builtin_models.class_kind(model)


@dataclasses.dataclass(frozen=True)
class SuiteRequest:
    """One request of the suite: its label (``short``, ``realistic``) and its fields."""

    label: str
    fields: Mapping[str, Any]


def suite_requests(kind: str, on_gpu: bool, overrides: Mapping[str, Any] | None = None,
                   with_image: bool = False) -> list[SuiteRequest]:
    """The suite's requests for a model of ``kind``: ``short`` (CPU sizes, or GPU_SHORT on
    a GPU), then ``realistic`` on a GPU; ``overrides`` replace fields of each. With
    ``with_image`` each also carries ``image``, an ``input_picture`` of its output size."""
    chosen = [SuiteRequest("short", GPU_SHORT[kind] if on_gpu else SHORT[kind])]
    if on_gpu:
        chosen.append(SuiteRequest("realistic", REALISTIC[kind]))
    extra = dict(overrides or {})
    requests = []
    for r in chosen:
        fields = {"prompt": PROMPTS[kind], "seed": 0, **r.fields, **extra}
        if with_image:
            fields["image"] = input_picture(int(fields["width"]), int(fields["height"]))
        requests.append(SuiteRequest(r.label, fields))
    return requests
