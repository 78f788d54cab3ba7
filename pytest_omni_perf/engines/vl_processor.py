"""Loading a pipeline's Qwen2-VL processor without torchvision.

``QwenImageEditPlusPipeline`` (diffusers 0.40, Qwen-Image-Edit-2509) and
``QwenImageEditPipeline`` show their input images to a Qwen2.5-VL text encoder through a
``Qwen2VLProcessor`` (component ``processor``). In transformers 5.x that class always loads
and type-checks a video processor (``ProcessorMixin.__init__`` against
``BaseVideoProcessor``, which is a torchvision-requiring placeholder without torchvision), so
``from_pretrained`` fails where torchvision cannot be installed, as beside CPU torch 2.13.
The image pipelines never pass videos, so this loads the image processor (transformers' PIL
backend, ``Qwen2VLImageProcessorPil``) and the tokenizer and builds a processor that has no
video part; the diffusers engine passes it to ``from_pretrained`` as the ``processor``.

Used always, torchvision or not, so one folder gives the same pixels to the text encoder on
every machine (the PIL and torchvision backends resize slightly differently). A pipeline
whose folder names another processor is left alone.
"""

from __future__ import annotations

import functools
import json
import pathlib
from typing import Any

VL_PROCESSORS = ("Qwen2VLProcessor", "Qwen2_5_VLProcessor")
"""``model_index.json`` processor classes loaded here (Qwen-Image-Edit, -2509, -2511)."""


def processor_override(folder: str | pathlib.Path) -> dict[str, Any]:
    """``{"processor": ...}`` for ``from_pretrained(folder, **...)`` when the folder's
    ``model_index.json`` names one of ``VL_PROCESSORS`` as its ``processor``; else ``{}``
    (also for a folder without a readable index: ``from_pretrained`` says what is wrong)."""
    root = pathlib.Path(folder)
    try:
        index = json.loads((root / "model_index.json").read_text(encoding="utf-8"))
        library, name = index["processor"]
    except (OSError, ValueError, KeyError, TypeError):
        return {}
    if library != "transformers" or name not in VL_PROCESSORS:
        return {}
    return {"processor": load_image_processor(root / "processor")}


def load_image_processor(path: str | pathlib.Path) -> Any:
    """A Qwen2-VL processor (image processor + tokenizer, no video processor) from ``path``,
    a folder as ``Qwen2VLProcessor.save_pretrained`` writes it."""
    import transformers

    t: Any = transformers
    image_processor = t.Qwen2VLImageProcessorPil.from_pretrained(str(path))
    tokenizer = t.AutoTokenizer.from_pretrained(str(path))
    return _image_only_class()(image_processor=image_processor, tokenizer=tokenizer)


@functools.cache
def _image_only_class() -> Any:
    """``Qwen2VLProcessor`` without its video attribute.

    ``ProcessorMixin`` reads a processor's parts from its ``__init__`` parameters
    (``get_attributes``), so leaving ``video_processor`` out of the signature drops it from
    the type check; the parent's ``__init__`` still sets the video token, which only a
    ``videos=`` call would use. Made on first use: transformers is imported lazily.
    """
    from transformers import Qwen2VLProcessor

    class ImageOnlyQwen2VLProcessor(Qwen2VLProcessor):
        """A ``Qwen2VLProcessor`` for images and text only (pytest-omni-perf)."""

        def __init__(self, image_processor: Any = None, tokenizer: Any = None,
                     chat_template: Any = None, **kwargs: Any) -> None:
            super().__init__(  # type: ignore[no-untyped-call]
                image_processor, tokenizer, None, chat_template=chat_template, **kwargs)

    return ImageOnlyQwen2VLProcessor
