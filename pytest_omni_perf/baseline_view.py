"""What of an output a stored baseline keeps: all of a small image, a reduced view of a
large one or of a video.

A 1024x1024 output of a random-weight model is ~3 MB of PNG that does not compress; a
video is dozens of those. Baselines are committed and travel with the repository, so large
outputs are stored block-averaged to at most ``max_side`` pixels and videos as at most
``max_frames`` evenly spaced frames. The view is recorded in metrics.json and applied to
the new output before the comparison, so both sides are reduced the same way.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt

    Frames = Sequence[npt.NDArray[np.uint8]]

IMAGE_MAX_SIDE = 512
VIDEO_MAX_SIDE = 256
VIDEO_MAX_FRAMES = 9


def choose_view(frames: Frames) -> dict[str, Any]:
    """The reduction for these frames: ``{"scale": k, "frames": [indices]}``.

    The scale never exceeds the shorter side, so a long thin output (4000x8) keeps at
    least one row: every view chosen here passes stored_metrics.view_problem and reduces
    to frames of at least 1x1 pixels.
    """
    count = len(frames)
    if count == 0:
        # Nothing to reduce; the store refuses to save no frames, with its own message.
        return {"scale": 1, "frames": [], "source_frames": 0, "source_shape": [0, 0]}
    height, width = frames[0].shape[:2]
    max_side = IMAGE_MAX_SIDE if count == 1 else VIDEO_MAX_SIDE
    scale = max(1, min(math.ceil(max(height, width) / max_side), height, width))
    if count <= VIDEO_MAX_FRAMES:
        indices = list(range(count))
    else:
        step = (count - 1) / (VIDEO_MAX_FRAMES - 1)
        indices = sorted({round(i * step) for i in range(VIDEO_MAX_FRAMES)})
    return {"scale": scale, "frames": indices, "source_frames": count,
            "source_shape": [height, width]}


def _rgb(frame: npt.NDArray[np.uint8]) -> npt.NDArray[np.uint8]:
    """HxWx3: a single channel (HxW or HxWx1) repeated, RGBA without its alpha.

    Stored baselines are RGB PNGs. Repeating a grey channel leaves its SSIM and PSNR
    unchanged (both average over channels); alpha is not part of what is compared.
    """
    import numpy as np

    if frame.ndim == 2:
        frame = frame[:, :, None]
    if frame.ndim == 3 and frame.shape[2] == 1:
        return np.repeat(frame, 3, axis=2)
    if frame.ndim == 3 and frame.shape[2] == 4:
        return np.ascontiguousarray(frame[:, :, :3])
    return frame


def apply_view(frames: Frames, view: Mapping[str, Any]) -> list[npt.NDArray[np.uint8]]:
    """Select the view's frames as RGB (see :func:`_rgb`) and block-average them by its
    scale."""
    import numpy as np

    scale = int(view.get("scale", 1))
    chosen = [_rgb(frames[i]) for i in view.get("frames", range(len(frames)))
              if i < len(frames)]
    if scale == 1:
        return chosen
    reduced = []
    for frame in chosen:
        h, w = (frame.shape[0] // scale) * scale, (frame.shape[1] // scale) * scale
        blocks = frame[:h, :w].reshape(h // scale, scale, w // scale, scale, -1)
        reduced.append(np.rint(blocks.mean(axis=(1, 3))).astype(np.uint8))
    return reduced


def comparable(frames: Frames, view: Mapping[str, Any]) -> str | None:
    """Why ``frames`` cannot be reduced by ``view`` (another size or length), or None."""
    if not frames:
        return "the output has no frames"
    shape = list(frames[0].shape[:2])
    if view.get("source_shape", shape) != shape:
        h, w = view["source_shape"]
        return f"output is {shape[0]}x{shape[1]} but the stored baseline was recorded at {h}x{w}"
    if view.get("source_frames", len(frames)) != len(frames):
        return (f"output has {len(frames)} frames but the stored baseline was recorded with "
                f"{view['source_frames']}")
    return None
