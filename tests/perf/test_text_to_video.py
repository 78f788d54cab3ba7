"""Text to video on the built-in tiny Wan: per-frame SSIM (mean and worst) and timings."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.omni_model("tiny-wan")


# See test_text_to_image.py for why the tiny models get their own speedup bounds. VAE tiling
# at 64x64 forces 32-pixel tiles whose seams dominate a random-weight video: SSIM ~0.5 here
# (0.76 was measured with another tile size), so that bound only guards against collapse.
@pytest.mark.omni_bounds(profile="fewer_steps", min_speedup=1.3)
# Regional compile of a 9M model on 2 CPU cores measured 1.00-1.21x across runs: this bound
# only catches compile making things clearly slower.
@pytest.mark.omni_bounds(profile="compile", min_speedup=0.9)
# SCM pays little on a 10-step tiny video: 1.14x and, with 15 rounds, 1.08x (README's CPU
# table); 1.11x [1.06-1.16] quiet (results/cpu/suite-launch/full-exec.log); 1.033x on a busy
# host (results/cpu/newcomer-mainjob-under-load.log); 1.054x in a newcomer's run at ee039a6
# (reported, no log committed). 1.05 sat inside that noise, so the bound asks only that SCM
# is not a slowdown: 1.0, 5% under the lowest light-load value and 10% under the quiet one.
@pytest.mark.omni_bounds(profile="cache_dit_scm", min_speedup=1.0)
# vae_tiling's own 0.70 is for real sizes: Wan's 256 px tiles exceed a 64x64 video, so
# the engine fits 32 px tiles with a 24 px stride (diffusers_runner.fit_vae_tiles), four
# latents with one of overlap, and the tiny VAE blends far more of the picture: SSIM
# 0.5050 (tiny-wan) and 0.4951 (tiny-wan-i2v) in results/cpu/newcomer-mainjob-a960ac3-
# beside-ci.log, against 0.992 for medium-wan-i2v at its own tiles on an H100
# (results/h100/support/medium-wan-i2v-5-history.sqlite).
# A pass under this bound says so in a note (verdict._loosened_ssim).
@pytest.mark.omni_bounds(profile="vae_tiling", min_ssim=0.4)
def test_video(omni_perf: object) -> None:
    """64x64, 9 frames, 10 steps (cache-dit caches 6 of 10 steps here, residual_diff_threshold 0.2)."""
    result = omni_perf.measure(  # type: ignore[attr-defined]
        prompt="a paper boat drifting on a pond", width=64, height=64,
        num_inference_steps=10, num_frames=9, seed=0, guidance_scale=5.0)
    assert len(result.frames) == 9
