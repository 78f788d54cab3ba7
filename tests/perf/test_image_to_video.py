"""Image to video on the built-in tiny Wan-I2V: one input image, every profile that applies.

The input is computed with integer arithmetic, not read from a file, so its pixels (and its
digest in the stored baselines) are the same on every machine. Its latents fill the first
frame's condition channels (16 noise + 4 mask + 16 image latents into the transformer).
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
import pytest

from pytest_omni_perf import OmniPerf

pytestmark = pytest.mark.omni_model("tiny-wan-i2v")


def first_frame(size: int = 64) -> npt.NDArray[np.uint8]:
    """A size x size RGB picture: a diagonal gradient, a bright square and a dark stripe."""
    y, x = np.mgrid[0:size, 0:size]
    square = (abs(x - size // 3) < size // 6) & (abs(y - size // 3) < size // 6)
    stripe = abs(y - 3 * size // 4) < size // 16
    red = np.where(square, 240, (x + y) * 255 // (2 * size - 2))
    green = np.where(stripe, 20, y * 200 // (size - 1) + 30)
    blue = np.where(square | stripe, 60, 255 - x * 255 // (size - 1))
    return np.stack([red, green, blue], axis=-1).astype(np.uint8)


# As test_text_to_video.py (same transformer width and depth, 36 input channels instead of 16).
@pytest.mark.omni_bounds(profile="fewer_steps", min_speedup=1.3)
@pytest.mark.omni_bounds(profile="compile", min_speedup=0.9)
# 1.0, not 1.05: quiet, SCM measured 1.09x [1.04-1.13] here, an interval astride 1.05
# (results/cpu/perf-suite-quiet-1749ca2.log); as on tiny-wan, SCM is only asked not to slow.
@pytest.mark.omni_bounds(profile="cache_dit_scm", min_speedup=1.0)
# The built-in 1.3 sat inside the noise: a newcomer's run at ee039a6 measured 1.345x (reported,
# no log committed), and the recording run on a busy host stored 1.10x (baselines/cpu/
# tests_perf_test_image_to_video.py_test_image_to_video_compile_cachedit-da5f94ac8952/
# compile_cachedit/metrics.json). The input image is VAE-encoded on every call, a cost no
# cache saves, so this pays less than text to video's 1.60-1.65x (results/cpu/suite-launch/);
# 1.2 is 11% under the light-load measurement.
@pytest.mark.omni_bounds(profile="compile_cachedit", min_speedup=1.2)
# vae_tiling's own 0.70 is for real sizes: Wan's 256 px tiles exceed a 64x64 video, so
# the engine fits 32 px tiles with a 24 px stride (diffusers_runner.fit_vae_tiles), four
# latents with one of overlap, and the tiny VAE blends far more of the picture: SSIM
# 0.5050 (tiny-wan) and 0.4951 (tiny-wan-i2v) in results/cpu/newcomer-mainjob-a960ac3-
# beside-ci.log, against 0.992 for medium-wan-i2v at its own tiles on an H100
# (results/h100/support/medium-wan-i2v-5-history.sqlite).
# A pass under this bound says so in a note (verdict._loosened_ssim).
@pytest.mark.omni_bounds(profile="vae_tiling", min_ssim=0.4)
def test_image_to_video(omni_perf: OmniPerf) -> None:
    """64x64, 9 frames from a 64x64 first frame, 10 steps, guidance 5 (two transformer passes
    a step); the input image is VAE-encoded on every call, so this times the i2v path."""
    result = omni_perf.measure(
        prompt="the square drifts to the right, photograph", image=first_frame(), width=64,
        height=64, num_inference_steps=10, num_frames=9, seed=0, guidance_scale=5.0)
    assert len(result.frames) == 9 and result.frames[0].shape == (64, 64, 3)
