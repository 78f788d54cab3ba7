"""Image edit on the built-in tiny Flux-Kontext: one input image, every profile that applies.

The input is computed, not read from a file: integer arithmetic gives the same pixels on
every machine, so the request (and its digest in the stored baselines) is the same too.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
import pytest

from pytest_omni_perf import OmniPerf

pytestmark = pytest.mark.omni_model("tiny-flux-kontext")


def input_picture(size: int = 64) -> npt.NDArray[np.uint8]:
    """A size x size RGB picture: two gradients and a disc (smooth, like a photograph)."""
    y, x = np.mgrid[0:size, 0:size]
    disc = (x - size // 3) ** 2 + (y - size // 2) ** 2 < (size // 4) ** 2
    red = x * 255 // (size - 1)
    green = y * 255 // (size - 1)
    blue = np.where(disc, 230, 40)
    return np.stack([red, green, blue], axis=-1).astype(np.uint8)


# As test_text_to_image.py: bounds for a 9M-parameter model on two CPU cores, per profile.
@pytest.mark.omni_bounds(profile="fewer_steps", min_speedup=1.3)
@pytest.mark.omni_bounds(profile="compile", min_speedup=0.9)
@pytest.mark.omni_bounds(profile="cache_dit_scm", min_speedup=1.1)
def test_edit(omni_perf: OmniPerf) -> None:
    """128x128 output from a 64x64 input image, 12 steps: the input's latents join the
    transformer's sequence (256 + 16 tokens), so this times the edit path, not text to image."""
    result = omni_perf.measure(
        prompt="make the disc a red fox, photograph", image=input_picture(), width=128,
        height=128, num_inference_steps=12, seed=0)
    assert result.frames[0].shape == (128, 128, 3)
