"""Conditioning inputs of a request (input images, a mask, a video): what the user passes to
``omni_perf.measure(image=..., images=[...], mask=..., video=...)``, checked once and held as
lossless PNG bytes with a digest of their pixels.

Why PNG bytes and a pixel digest: a request travels to engine workers (pickled), to servers
(multipart files) and into stored baselines (``metrics.json``). The pixels go where a
pipeline needs them, as compact lossless PNG; everywhere else, and in the request key that
a reused or stored baseline must match, only the digest, width and height stand for them.
The digest is of the decoded pixels (shape and bytes), not of a path or of PNG bytes whose
compression may change between Pillow versions, so the same picture read from a PNG, a JPEG
decoded alike, a numpy array or a PIL image is the same input.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import os
import pathlib
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt

InputLike = Any
"""What an input image may be given as: an HxWx3 uint8 numpy array, a ``PIL.Image``, a path
(str or ``os.PathLike``) or an ``InputImage`` (``Any``: numpy and PIL are optional)."""

DIGEST_CHARS = 24
"""Hex characters of the sha256 kept (96 bits): short in reports, never equal by chance."""


class RequestError(ValueError):
    """A request field is of the wrong type, not finite or out of range; names the field.
    (Defined here, below ``request``, which re-exports it, so that both raise one type.)"""


def InputError(message: str) -> ValueError:  # noqa: N802 - reads as the raise it is
    """``RequestError(message)``: an input that cannot be used, named by its field."""
    return RequestError(message)


@dataclasses.dataclass(frozen=True)
class InputImage:
    """One RGB picture given as a request input: lossless PNG bytes plus a pixel digest.

    Equal (and hashed) by ``digest`` alone: two inputs with the same pixels are the same
    input whatever file or object they came from.
    """

    digest: str
    """``sha256:`` and the first ``DIGEST_CHARS`` hex digits of sha256(b"HxWx3" + pixels)."""
    width: int
    height: int
    png: bytes = dataclasses.field(repr=False, compare=False)
    source: str = dataclasses.field(default="", compare=False)
    """Where it came from (a path, ``array``, ``PIL``), for messages and reports only."""

    def pixels(self) -> npt.NDArray[np.uint8]:
        """The picture as an HxWx3 uint8 array."""
        import numpy as np

        return np.asarray(self.pil(), dtype=np.uint8)

    def pil(self) -> Any:
        """The picture as an RGB ``PIL.Image.Image``, as diffusers pipelines take it."""
        from PIL import Image

        with Image.open(io.BytesIO(self.png)) as image:
            return image.convert("RGB")

    def record(self) -> dict[str, Any]:
        """What a request's JSON (key, stored baseline, reports) keeps of it."""
        return {"digest": self.digest, "width": self.width, "height": self.height}


def pixel_digest(pixels: npt.NDArray[np.uint8]) -> str:
    """The digest of an HxWx3 uint8 array (see ``InputImage.digest``)."""
    import numpy as np

    height, width = pixels.shape[:2]
    sha = hashlib.sha256(f"{height}x{width}x3\0".encode())
    sha.update(np.ascontiguousarray(pixels).tobytes())
    return f"sha256:{sha.hexdigest()[:DIGEST_CHARS]}"


def input_image(value: object, field: str) -> InputImage:
    """``value`` (an HxWx3 uint8 numpy array, a ``PIL.Image``, a path to an image file, or
    an ``InputImage``) as an ``InputImage``; ``RequestError`` naming ``field`` otherwise."""
    if isinstance(value, InputImage):
        return value
    if isinstance(value, (str, os.PathLike)):
        return _from_path(pathlib.Path(value), field)
    module = type(value).__module__
    if module.startswith("PIL."):
        return _from_pil(value, field, "PIL")
    if module == "numpy":
        return _from_array(value, field, "array")
    raise InputError(f"request field {field}: expected an HxWx3 uint8 numpy array, a PIL "
                     f"image or a path to an image file, got {type(value).__name__}")


def input_images(values: object, field: str) -> tuple[InputImage, ...]:
    """A list or tuple of images (``images=``, ``video=``) as ``InputImage``s; a numpy array
    of shape FxHxWx3 is taken as F frames. ``RequestError`` naming ``field[i]`` on a bad one."""
    if type(values).__module__ == "numpy" and getattr(values, "ndim", 0) == 4:
        values = list(values)  # type: ignore[call-overload]
    if isinstance(values, (str, bytes, os.PathLike)) or not isinstance(values, Sequence):
        raise InputError(f"request field {field}: expected a list of images, got "
                         f"{type(values).__name__}")
    if not values:
        raise InputError(f"request field {field}: the list is empty (leave it out instead)")
    return tuple(input_image(value, f"{field}[{index}]") for index, value in enumerate(values))


def inputs_of(*, image: object = None, images: object = None, video: object = None,
              mask: object = None) -> dict[str, Any]:
    """``GenerationRequest`` keyword arguments for what ``measure()`` was given (unset ones
    left out): ``image`` becomes a one-item ``images``."""
    fields: dict[str, Any] = {}
    if image is not None:
        fields["images"] = (input_image(image, "image"),)
    elif images is not None:
        fields["images"] = input_images(images, "images")
    if video is not None:
        fields["video"] = input_images(video, "video")
    if mask is not None:
        fields["mask"] = input_image(mask, "mask")
    return fields


def image_from_bytes(data: bytes, field: str) -> InputImage:
    """An uploaded image file (PNG, JPEG, ...) as an ``InputImage``; ``RequestError``
    naming ``field`` when Pillow cannot read it."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(data)) as image:
            return _from_pil(image, field, "upload")
    except (UnidentifiedImageError, OSError) as exc:
        raise InputError(f"request field {field}: not an image Pillow can read ({exc})") from None


def _from_path(path: pathlib.Path, field: str) -> InputImage:
    from PIL import Image, UnidentifiedImageError

    if not path.is_file():
        raise InputError(f"request field {field}: no image file at {str(path)!r}")
    try:
        with Image.open(path) as image:
            return _from_pil(image, field, str(path))
    except (UnidentifiedImageError, OSError) as exc:
        raise InputError(f"request field {field}: {str(path)!r} is not an image Pillow can "
                         f"read ({exc})") from None


def _from_pil(image: Any, field: str, source: str) -> InputImage:
    import numpy as np

    # Alpha and palettes are dropped as diffusers' own loaders do (convert("RGB")).
    return _from_array(np.asarray(image.convert("RGB"), dtype=np.uint8), field, source)


def _from_array(array: Any, field: str, source: str) -> InputImage:
    import numpy as np

    from pytest_omni_perf.png import encode_png

    if array.dtype != np.uint8:
        raise InputError(f"request field {field}: expected uint8 pixels (0..255), got dtype "
                         f"{array.dtype}; convert with (x * 255).round().astype(np.uint8) "
                         "for floats in [0, 1]")
    if array.ndim != 3 or array.shape[2] != 3:
        raise InputError(f"request field {field}: expected shape (height, width, 3), got "
                         f"{tuple(array.shape)}")
    height, width = int(array.shape[0]), int(array.shape[1])
    if height < 1 or width < 1:
        raise InputError(f"request field {field}: the image is empty ({height}x{width})")
    return InputImage(digest=pixel_digest(array), width=width, height=height,
                      png=encode_png(array), source=source)


def shown_inputs(images: Sequence[InputImage], mask: InputImage | None,
                 video: Sequence[InputImage], most_frames: int = 4
                 ) -> list[tuple[str, InputImage]]:
    """(caption, input) pairs a report shows: every input image, the mask, and up to
    ``most_frames`` evenly spaced frames of an input video."""
    shown = [(f"input image {index + 1}" if len(images) > 1 else "input image", item)
             for index, item in enumerate(images)]
    if mask is not None:
        shown.append(("mask", mask))
    if video:
        count = len(video)
        picks = sorted({round(i * (count - 1) / max(most_frames - 1, 1))
                        for i in range(min(most_frames, count))})
        shown += [(f"input video frame {index}", video[index]) for index in picks]
    return [(f"{caption} ({item.width}x{item.height}, {item.digest})", item)
            for caption, item in shown]
