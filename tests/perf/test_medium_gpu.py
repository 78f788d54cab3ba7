"""The medium models at realistic sizes, for GPUs: where the numbers users act on come from.

Skipped on CPU machines (they would take hours there). Baselines live under the GPU's
hardware key, e.g. baselines/nvidia-h100-80gb-hbm3/.
"""

from __future__ import annotations

import pytest


@pytest.mark.requires_gpus(1)
@pytest.mark.omni_model("medium-flux")
def test_medium_image(omni_perf: object) -> None:
    """1024x1024, 20 steps: the built-in medium-flux (0.9B parameters, bf16; builtin_models.py)."""
    result = omni_perf.measure(  # type: ignore[attr-defined]
        prompt="a red fox in a snowy forest, photograph", width=1024, height=1024,
        num_inference_steps=20, seed=0)
    assert result.frames[0].shape == (1024, 1024, 3)


@pytest.mark.requires_gpus(1)
@pytest.mark.omni_model("medium-wan")
def test_medium_video(omni_perf: object) -> None:
    """832x480, 17 frames, 20 steps, guidance 5: a short clip of the 1.1B medium Wan."""
    result = omni_perf.measure(  # type: ignore[attr-defined]
        prompt="a paper boat drifting on a pond", width=832, height=480,
        num_inference_steps=20, num_frames=17, seed=0, guidance_scale=5.0)
    assert len(result.frames) == 17
