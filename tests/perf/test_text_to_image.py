"""Text to image on the built-in tiny Flux: every profile the machine can run, with gates."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.omni_model("tiny-flux")


def test_image(omni_perf: object) -> None:
    """128x128, 12 steps: large enough for cache-dit to cache, small enough for 2 CPU cores."""
    result = omni_perf.measure(  # type: ignore[attr-defined]
        prompt="a red fox in a snowy forest, photograph", width=128, height=128,
        num_inference_steps=12, seed=0)
    assert result.frames[0].shape == (128, 128, 3)
