"""What ``Omni.generate`` returns, turned into what the harness measures: the diffusion
output among the stages' (:func:`pick_output`), its images as HxWx3 uint8 frames
(:func:`output_frames`) and its own metrics as plain JSON values (:func:`output_metrics`).

Written against vLLM-Omni 0.26 and 0.30 (docs/vllm-omni-api.md): outputs are read with
``getattr`` defaults only (0.26's ``OmniRequestOutput`` is a plain dataclass, 0.30's a vLLM
``RequestOutput``), never through 0.26's ``request_output``. numpy is imported inside the
functions, so importing this module stays cheap.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from pytest_omni_perf.engines.base import EngineError

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt


def _to_numpy(item: Any) -> Any:
    import numpy as np

    if hasattr(item, "detach"):  # a torch tensor; bf16 has no numpy dtype
        item = item.detach().float().cpu().numpy()
    elif hasattr(item, "convert") and hasattr(item, "size"):  # PIL
        item = np.asarray(item.convert("RGB"))
    return np.asarray(item)


def _to_uint8(frame: Any) -> npt.NDArray[np.uint8]:
    """One HxWx3 uint8 frame, with vLLM-Omni's serving conversions (CHW, [-1, 1], RGBA)."""
    import numpy as np

    array = _to_numpy(frame)
    if array.ndim == 3 and array.shape[0] in (1, 3, 4) and array.shape[-1] not in (1, 3, 4):
        array = np.transpose(array, (1, 2, 0))
    if array.ndim == 2:
        array = array[..., None]
    if array.ndim != 3 or array.shape[-1] not in (1, 3, 4):
        raise EngineError(f"vLLM-Omni returned a frame of shape {array.shape}, not HxWxC")
    if array.shape[-1] == 1:
        array = np.repeat(array, 3, axis=-1)
    array = array[..., :3]
    if array.dtype == np.uint8:
        return np.ascontiguousarray(array)
    if np.issubdtype(array.dtype, np.floating):
        values = array.astype(np.float32)
        if values.min() < 0.0:
            values = np.clip(values, -1.0, 1.0) * 0.5 + 0.5
        return np.ascontiguousarray((np.clip(values, 0.0, 1.0) * 255).round().astype(np.uint8))
    return np.ascontiguousarray(np.clip(array, 0, 255).astype(np.uint8))


def _first_video(images: Any) -> list[Any]:
    """The frames of the first video, in whatever layout vLLM-Omni used."""
    items = list(images) if isinstance(images, (list, tuple)) else [images]
    if not items:
        return []
    head = items[0]
    if isinstance(head, (list, tuple)):  # a list of videos, each a list of frames
        return list(head)
    array = _to_numpy(head)
    if array.ndim == 5:  # a batch of videos
        array = array[0]
    if array.ndim != 4:
        return items  # a list of frames (PIL images or HxWxC arrays)
    # channel-first (C, T, H, W), as Wan's raw output is, or (T, C, H, W); else (T, H, W, C)
    if array.shape[0] in (3, 4) and array.shape[-1] not in (3, 4):
        array = array.transpose(1, 2, 3, 0)
    elif array.shape[1] in (3, 4) and array.shape[-1] not in (3, 4):
        array = array.transpose(0, 2, 3, 1)
    return list(array)


def output_frames(images: Any, *, video: bool) -> list[npt.NDArray[np.uint8]]:
    """``OmniRequestOutput.images`` as HxWx3 uint8 frames: one for an image, all for a video."""
    if images is None or (isinstance(images, (list, tuple)) and not images):
        raise EngineError("vLLM-Omni returned no images in its output")
    if video:
        frames = _first_video(images)
        if not frames:
            raise EngineError("vLLM-Omni returned an empty video")
        return [_to_uint8(f) for f in frames]
    first = images[0] if isinstance(images, (list, tuple)) else images
    while isinstance(first, (list, tuple)):  # layered models nest one level
        first = first[0]
    array = _to_numpy(first)
    while array.ndim > 3:  # a batch or a one-frame video
        array = array[0]
    return [_to_uint8(array)]


def output_metrics(output: Any) -> dict[str, Any]:
    """peak_memory_mb, stage_durations and metrics of one output, as plain JSON values."""
    found: dict[str, Any] = {}
    peak = getattr(output, "peak_memory_mb", None)
    if isinstance(peak, (int, float)) and not isinstance(peak, bool) and peak > 0:
        found["peak_memory_mb"] = float(peak)
    durations = getattr(output, "stage_durations", None)
    if isinstance(durations, Mapping) and durations:
        found["stage_durations"] = {str(k): float(v) for k, v in durations.items()
                                    if isinstance(v, (int, float))}
    extra = getattr(output, "metrics", None)
    if isinstance(extra, Mapping) and extra:
        found["metrics"] = json.loads(json.dumps(dict(extra), default=str))
    return found


def pick_output(outputs: Any) -> Any:
    """The diffusion result among ``Omni.generate``'s outputs (the last one with images)."""
    items = list(outputs or [])
    if not items:
        raise EngineError("vLLM-Omni's generate returned no output")
    for item in reversed(items):
        if getattr(item, "images", None):
            return item
    return items[-1]
