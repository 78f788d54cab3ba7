"""Parity with another backend: ``omni_bounds(parity="diffusers", min_ssim=0.97, min_psnr=30,
max_latency_ratio=1.2)``.

vLLM-Omni's accuracy suite runs a model through vLLM-Omni and through plain diffusers on one
request and asserts SSIM >= 0.97 and PSNR >= 30 dB for images (0.95 and 30 dB for video), and
a latency at most 1.2x (images) or 1.3x (video) of diffusers' (tests/e2e/accuracy/
test_diffusers_backend_similarity.py of vllm-project/vllm-omni, commit
3551b7885cbac9f65d2c816a28db136fdd0ffabd: SSIM_THRESHOLD, PSNR_THRESHOLD,
latency_threshold_factor 0.2 and 0.3). It times one request of each, minutes apart.

Here the same profile and request run on both backends in one session, their rounds
alternating where both engines fit (as a profile's rounds alternate with its baseline
profile's), so the latency ratio gets the same interval, round budget and busy-host rule as
a speedup; the quality bounds (min_ssim, min_psnr, max_mean_abs_diff, max_p99_abs_diff)
apply to the parity backend's output as to every other reference. The harness measures;
this module judges.
"""

from __future__ import annotations

from collections.abc import Sequence

from pytest_omni_perf import judge
from pytest_omni_perf.measure.stats import RatioInterval, speedup_interval, widened
from pytest_omni_perf.profiles import Bounds
from pytest_omni_perf.results import Measurement, ParityResult, PerfResult, Violation


def parity_backend(bounds: Bounds, backend: str) -> tuple[str | None, str]:
    """The backend ``omni_bounds(parity=...)`` names, to run beside ``backend`` (None: none,
    or ``backend`` itself, which the note then says)."""
    other = bounds.parity
    if other is None:
        return None, ""
    if other == backend:
        return None, (f"parity with {other!r} not measured: this run's backend is {other!r}"
                      " itself (run with another --omni-backend to compare the two)")
    return other, ""


def latency_ratio(samples: Sequence[float], parity: Sequence[float], *, paired: bool,
                  confidence: float, spread: float, spread_origin: str = "") -> RatioInterval:
    """Robust latency of ``samples`` over that of ``parity`` (s each), with its interval
    widened by the run-to-run ``spread`` as every latency interval is."""
    # speedup_interval(a, b) is location(a) / location(b): this backend's over the parity's.
    return widened(speedup_interval(samples, parity, paired=paired, confidence=confidence),
                   spread, origin=spread_origin)


def latency_gate(bounds: Bounds, *, profile: str, backend: str, samples: Sequence[float],
                 parity: Sequence[float], paired: bool, confidence: float,
                 spread: float) -> judge.Judgement:
    """The max_latency_ratio gate on the rounds so far (the harness asks between looks)."""
    if bounds.max_latency_ratio is None or bounds.parity is None:
        return judge.Judgement()
    ratio = latency_ratio(samples, parity, paired=paired, confidence=confidence, spread=spread)
    return judge.parity_latency_judgement(bounds, ratio, profile, backend, bounds.parity)


def assess(result: PerfResult, bounds: Bounds, parity: Measurement, beside: Measurement, *,
           confidence: float, spread: float, ssim_origin: str = "",
           spread_origin: str = "") -> judge.Judgement:
    """Judge ``result``'s output and ``beside``'s latencies (this backend's rounds alongside
    the parity backend's; the result's own measurement for a reference profile) against
    ``parity``; sets ``result.parity``. ``ssim_origin``: as ``judge.SessionFacts``'s."""
    from pytest_omni_perf.quality import compare_frames

    paired = beside.interleaved_with == parity.profile \
        and len(beside.samples) == len(parity.samples)
    ratio = latency_ratio(beside.samples, parity.samples, paired=paired,
                          confidence=confidence, spread=spread, spread_origin=spread_origin)
    quality = compare_frames(result.measurement.frames, parity.frames)
    result.parity = ParityResult(backend=parity.backend, measurement=parity,
                                 beside=list(beside.samples), latency_ratio=ratio,
                                 quality=quality)
    judged = judge.Judgement()
    against = f"the output of {parity.profile} on backend {parity.backend!r}"
    if (why := quality.explain(against)) is not None:
        if not quality.comparable:  # the backends disagree on what the request makes
            judged.violations.append(Violation("parity_ssim", why))
            return judged
        judged.notes.append(why)
    ssim = quality.ssim_mean
    if bounds.min_ssim is not None and ssim is not None and ssim < bounds.min_ssim:
        worst = "" if quality.ssim_min in (None, ssim) else \
            f" (worst frame {quality.ssim_min:.4f})"
        judged.add("fail", "parity_ssim", (
            f"output SSIM {ssim:.4f}{worst} against {against}, below the bound "
            f"min_ssim={bounds.min_ssim:g}: the backends do not agree"
            + (f"; {ssim_origin}" if ssim_origin else "")))
    judged.extend(judge.pixel_judgement(bounds, judge.PixelFacts(
        quality.psnr_mean, quality.mean_abs_diff, quality.p99_abs_diff), "parity_", against))
    judged.extend(judge.parity_latency_judgement(
        bounds, ratio, result.profile, result.measurement.backend, parity.backend))
    return judged
