"""A request's conditioning inputs as diffusers pipeline arguments.

The pipeline's own argument names (diffusers 0.40): ``image`` (FluxKontextPipeline,
QwenImageEditPipeline, QwenImageEditPlusPipeline takes a list, WanImageToVideoPipeline,
the img2img and inpaint pipelines), ``mask_image`` (inpaint), ``video`` (video to video),
``strength``. An input the loaded pipeline does not take is an error naming it, never
dropped: a measurement of a text-to-image call reported as an edit would mislead.
"""

from __future__ import annotations

import inspect
from typing import Any

from pytest_omni_perf.request import GenerationRequest

_ARGUMENTS = {"images": "image", "mask": "mask_image", "video": "video", "strength": "strength"}
"""Request field -> the pipeline argument it is passed as."""

MULTI_IMAGE_PIPELINES = {"QwenImageEditPlusPipeline": 4}
"""Pipelines that take several input images, and how many at most; every other pipeline takes
one. vLLM-Omni's own table (``vllm_omni/diffusion/model_metadata.py``:
``QWEN_IMAGE_EDIT_PLUS_MAX_INPUT_IMAGES = 4``, every other model 1), which its
``/v1/images/edits`` enforces with a 400."""


def max_input_images(pipe: Any) -> int:
    """How many input images ``pipe`` takes in one request (``MULTI_IMAGE_PIPELINES``)."""
    return MULTI_IMAGE_PIPELINES.get(type(pipe).__name__, 1)


def too_many_images(count: int, limit: int) -> str:
    """vLLM-Omni's words for a request over ``limit`` input images (api_server.py,
    ``edit_images``), so a test reads the same message from either server."""
    if limit == 1:
        return "Received multiple input images. Only a single image is supported by this model."
    return (f"Received {count} input images. At most {limit} images are supported by this "
            "model.")


def input_kwargs(pipe: Any, request: GenerationRequest) -> dict[str, Any]:
    """Keyword arguments of ``pipe(...)`` for ``request``'s inputs; ValueError naming the
    input when the pipeline has no such argument."""
    params = inspect.signature(pipe.__call__).parameters
    image = params.get("image")
    if image is not None and image.default is inspect.Parameter.empty and not request.images:
        # WanImageToVideoPipeline's image has no default: without this, a TypeError about a
        # positional argument, which does not say what the user left out.
        raise ValueError(f"{type(pipe).__name__} needs an input image (request field images "
                         "is empty): it makes its output from one; give measure(image=...)")
    kwargs: dict[str, Any] = {}
    if "max_area" in params:
        # FluxKontextPipeline rescales the output to max_area (default 1024**2) at the asked
        # aspect: a 128x128 request would run at 1024x1024. The request's size is measured.
        kwargs["max_area"] = request.width * request.height
    for field, argument in _ARGUMENTS.items():
        value = getattr(request, field)
        if value is None or value == ():
            continue
        if argument not in params:
            raise ValueError(f"{type(pipe).__name__} takes no {argument!r} argument, but the "
                             f"request gives {field}: it is not a model that takes this input")
        if field == "images":
            if len(value) > (limit := max_input_images(pipe)):
                # A one-image pipeline would read a list as a batch of images and fail deep
                # inside with a shape error about the prompt's batch size.
                raise ValueError(f"{type(pipe).__name__}: {too_many_images(len(value), limit)}")
            # One image as itself (what every single-image pipeline documents), several as a
            # list (Qwen-Image-Edit-2509's multi-image call), as vLLM-Omni's image_edit.py does.
            value = value[0].pil() if len(value) == 1 else [item.pil() for item in value]
        elif field == "video":
            value = [frame.pil() for frame in value]
        elif field == "mask":
            value = value.pil()
        kwargs[argument] = value
    if request.images and "_auto_resize" in params:
        # Likewise its input image, resized by default to one of its ~1 MP training
        # resolutions: kept at its own size (rounded down to the latent patch).
        kwargs["_auto_resize"] = False
    return kwargs
