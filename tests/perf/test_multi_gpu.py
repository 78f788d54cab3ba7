"""Multi-GPU profiles (Ulysses, Ring, tensor parallel) on the medium models, against one GPU.

Sequence parallelism pays only when the sequence is long enough for the attention work to
outweigh the all-to-all traffic and the encoders/VAE that every rank still runs whole. The
suite keeps both sides on purpose: at 1024x1024 the plugin must report that usp2/ring2 are
slower than one GPU (an expected failure of their speedup gates; an unexpected pass fails the
run, so a change that makes them pay is noticed), and at 2048x2048 and on video they must pay.
Run with ``--omni-profile=usp2,ring2,tp2`` on a machine with 2 GPUs (usp2_ring2 needs 4).
"""

from __future__ import annotations

import pytest

from pytest_omni_perf.profiles import Profile

SEQUENCE_PARALLEL = ("usp2", "ring2", "usp2_ring2")


def expect_gate_failure(request: pytest.FixtureRequest, profile: Profile,
                        measured: dict[str, str]) -> None:
    """Mark this test's run of ``profile`` as an expected gate failure (strict: should the
    profile start to pay, the run fails and the expectation gets revisited)."""
    if profile.name in measured:
        request.applymarker(pytest.mark.xfail(strict=True, reason=(
            f"{profile.name} does not pay here (2 H100s, results/h100x2/: "
            f"{measured[profile.name]}); the plugin must report it")))


@pytest.mark.requires_gpus(2)
@pytest.mark.omni_model("medium-flux")
@pytest.mark.omni_profiles(*SEQUENCE_PARALLEL)
def test_image_1024_sequence_parallel_does_not_pay(omni_perf: object, omni_profile: Profile,
                                                   request: pytest.FixtureRequest) -> None:
    """4,352 tokens: communication and unsplit encoders/VAE dominate (the gate must fail)."""
    expect_gate_failure(request, omni_profile, {"usp2": "0.47x", "ring2": "0.33x"})
    result = omni_perf.measure(  # type: ignore[attr-defined]
        prompt="a red fox in a snowy forest, photograph", width=1024, height=1024,
        num_inference_steps=20, seed=0)
    assert result.frames[0].shape == (1024, 1024, 3)


@pytest.mark.requires_gpus(2)
@pytest.mark.omni_model("medium-flux")
# ring2 is left out here: at 2048x2048 it measured 0.96x on one pair of H100s and 1.12x on
# another, right at its 1.1x bound, so neither a pass nor an expected failure would be stable.
@pytest.mark.omni_profiles("usp2", "usp2_ring2", "tp2")
def test_image_2048(omni_perf: object, omni_profile: Profile,
                    request: pytest.FixtureRequest) -> None:
    """16,384 image tokens: Ulysses pays; tensor parallelism saves no memory per GPU because
    the VAE decode at 2048x2048, which every rank runs whole, sets the peak."""
    expect_gate_failure(request, omni_profile, {"tp2": "peak VRAM per GPU 1.03x one GPU's"})
    result = omni_perf.measure(  # type: ignore[attr-defined]
        prompt="a red fox in a snowy forest, photograph", width=2048, height=2048,
        num_inference_steps=10, seed=0)
    assert result.frames[0].shape == (2048, 2048, 3)


@pytest.mark.requires_gpus(2)
@pytest.mark.omni_model("medium-wan")
@pytest.mark.omni_profiles(*SEQUENCE_PARALLEL)
def test_video_33_frames(omni_perf: object) -> None:
    """832x480, 33 frames (14,040 tokens per transformer call, CFG doubles the calls)."""
    result = omni_perf.measure(  # type: ignore[attr-defined]
        prompt="a paper boat drifting on a pond", width=832, height=480,
        num_inference_steps=10, num_frames=33, seed=0, guidance_scale=5.0)
    assert len(result.frames) == 33
