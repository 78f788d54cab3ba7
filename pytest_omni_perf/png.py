"""PNG encoding, the one place frames become PNG bytes: stored baselines, the HTML report's
thumbnails and the shipped server's ``b64_json`` images all go through :func:`encode_png`."""

from __future__ import annotations

import io
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt


def encode_png(frame: npt.NDArray[np.uint8], *, optimize: bool = False) -> bytes:
    """``frame`` (HxW, HxWx3 or HxWx4 uint8) as PNG bytes (Pillow's ``Image.save``).

    ``optimize`` trades encoding time for smaller files (the HTML report embeds its images).
    """
    import numpy as np
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(frame)).save(buffer, format="PNG", optimize=optimize)
    return buffer.getvalue()
