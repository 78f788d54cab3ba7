"""Text to video on the built-in tiny Wan: per-frame SSIM (mean and worst) and timings."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.omni_model("tiny-wan")


def test_video(omni_perf: object) -> None:
    """64x64, 9 frames, 10 steps (FACTS.md: cache-dit caches 6 of 10 steps here)."""
    result = omni_perf.measure(  # type: ignore[attr-defined]
        prompt="a paper boat drifting on a pond", width=64, height=64,
        num_inference_steps=10, num_frames=9, seed=0, guidance_scale=5.0)
    assert len(result.frames) == 9
