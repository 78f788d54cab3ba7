"""PNG thumbnails of a result's frames for the HTML report, and their data: URIs.

Frames live as numpy arrays in the process that measured them (an xdist worker), while the
HTML page is written by the controller. So the measuring process writes small PNGs into a
session folder beside the report (``<report>.assets/``) and puts their paths, relative to
the report's folder, into the result dict; the controller reads them back and embeds them.
Nothing here runs unless ``--omni-report-html`` is set: heat maps cost an SSIM map each.
"""

from __future__ import annotations

import base64
import os
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pytest_omni_perf.atomic_files import write_atomic
from pytest_omni_perf.png import encode_png

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt

    from pytest_omni_perf.results import PerfResult

    Frame = npt.NDArray[np.uint8]

THUMBNAIL_PX = 256
"""Longest side of a thumbnail; smaller frames are kept at their own size."""
VIDEO_FRAMES = 4
"""Evenly spaced frames of a video shown in the strip (plus the worst-SSIM frame)."""


def assets_dir(report_html: Path) -> Path:
    """The session's image folder for an HTML report path: ``<report>.assets`` beside it."""
    return report_html.with_name(report_html.name + ".assets")


def reset_assets(report_html: Path) -> None:
    """Remove a previous session's images (controller only, before any worker starts)."""
    folder = assets_dir(report_html)
    if folder.is_dir():
        shutil.rmtree(folder)


def shown_frames(count: int, worst: int | None = None, most: int = VIDEO_FRAMES) -> list[int]:
    """Indices of the frames a report shows: evenly spaced, first and last, plus ``worst``."""
    if count <= 0:
        return []
    if count <= most:
        chosen = set(range(count))
    else:
        chosen = {round(i * (count - 1) / (most - 1)) for i in range(most)}
    if worst is not None and 0 <= worst < count:
        chosen.add(worst)
    return sorted(chosen)


def thumbnail(frame: Frame, max_px: int = THUMBNAIL_PX) -> Frame:
    """``frame`` scaled down (never up) so its longest side is at most ``max_px``."""
    import numpy as np
    from PIL import Image

    array = np.asarray(frame)
    if array.ndim == 3 and array.shape[2] == 1:
        array = array[:, :, 0]  # PIL has no one-channel-of-three mode: treat it as grey
    if array.ndim == 2:
        array = np.stack([array] * 3, axis=-1)
    height, width = array.shape[:2]
    factor = max_px / max(height, width)
    if factor >= 1.0:
        return array
    size = (max(1, round(width * factor)), max(1, round(height * factor)))
    image = Image.fromarray(np.ascontiguousarray(array[..., :3]))
    return np.asarray(image.resize(size, Image.Resampling.LANCZOS))


def png_bytes(frame: Frame) -> bytes:
    """``frame`` (HxW or HxWx3/4 uint8) encoded as a small PNG, for embedding in a page."""
    return encode_png(frame, optimize=True)


def data_uri(png: bytes) -> str:
    """A ``data:image/png;base64,...`` URI, so the page needs no other file."""
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def _write_png(path: Path, frame: Frame) -> None:
    write_atomic(path, png_bytes(thumbnail(frame)))


def write_result_images(result: PerfResult, report_html: Path) -> dict[str, Any]:
    """Write thumbnails of ``result``'s output, its baseline profile's output and their
    SSIM diff heat map (pytest_omni_perf.quality.diff_heatmap) for the report.

    Returns the ``images`` entry of the result dict: ``input``/``input_captions`` (the
    request's input images, mask and video frames, with their digests), ``frames`` (indices shown),
    ``output``, ``baseline`` and ``diff`` (lists of paths relative to the report's folder,
    one per shown frame; ``baseline``/``diff`` empty without a baseline profile output of
    the same size), and ``error`` when a heat map could not be made.
    """
    try:
        return _write_images(result, report_html)
    except (OSError, ImportError) as exc:  # a report problem must not fail the measured test
        return {"frames": [], "output": [], "baseline": [], "diff": [],
                "error": f"thumbnails not written: {exc}"}


def _write_images(result: PerfResult, report_html: Path) -> dict[str, Any]:
    from pytest_omni_perf.escape import path_component
    from pytest_omni_perf.quality import diff_heatmap

    output = result.measurement.frames
    base = result.baseline.frames if result.baseline is not None else []
    worst = result.quality.worst_frame if result.quality is not None else None
    indices = shown_frames(len(output), worst)
    name = f"{result.nodeid}@{result.profile}" + (f"@{result.label}" if result.label else "")
    folder = assets_dir(report_html) / path_component(name)
    folder.mkdir(parents=True, exist_ok=True)
    root = report_html.parent
    images: dict[str, Any] = {"frames": indices, "output": [], "baseline": [], "diff": [],
                              "input": [], "input_captions": []}
    for number, (caption, item) in enumerate(result.inputs):
        # The request's own inputs beside what was made of them: an edit reads only so.
        path = folder / f"input_{number:04d}.png"
        _write_png(path, item.pixels())
        images["input"].append(os.path.relpath(path, root))
        images["input_captions"].append(caption)

    def put(kind: str, index: int, frame: Frame) -> None:
        path = folder / f"{kind}_{index:04d}.png"
        _write_png(path, frame)
        images[kind].append(os.path.relpath(path, root))

    comparable = len(base) == len(output) and all(
        b.shape == o.shape for b, o in zip(base, output))
    for index in indices:
        put("output", index, output[index])
        if not comparable:
            continue
        put("baseline", index, base[index])
        try:
            put("diff", index, diff_heatmap(output[index], base[index]))
        except (ValueError, ImportError) as exc:  # the page says why instead of a picture
            images["error"] = f"no diff heat map: {exc}"
    if base and not comparable:
        images["error"] = "baseline profile output differs in size: no side-by-side view"
    return images


def read_data_uris(paths: Sequence[str], report_dir: Path) -> list[str | None]:
    """Data URIs of thumbnails listed in a result dict (``None`` for a missing file)."""
    uris: list[str | None] = []
    for rel in paths:
        try:
            uris.append(data_uri((report_dir / rel).read_bytes()))
        except OSError:
            uris.append(None)
    return uris
