"""``OmniPerf``: the public, typed object behind the ``omni_perf`` fixture.

Like ``pytest.Pytester``, it is handed out by a fixture and exported for annotations::

    from pytest_omni_perf import OmniPerf

    def test_image(omni_perf: OmniPerf) -> None:
        result = omni_perf.measure(prompt="a red fox", width=1024, height=1024)
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NoReturn

import pytest

from pytest_omni_perf import request_inputs
from pytest_omni_perf.engines.base import (
    EngineError, GenerationRequest, ProfileUnsupported, RequestError,
)
from pytest_omni_perf.harness import Harness
from pytest_omni_perf.profiles import Bounds, Profile
from pytest_omni_perf.request_inputs import InputLike
from pytest_omni_perf.results import PerfResult


def engine_outcome(exc: BaseException) -> NoReturn:
    """An engine failure as a pytest outcome: unsupported -> skip, anything else -> fail."""
    if isinstance(exc, ProfileUnsupported):
        # At the test's location, not this file's (as pytest does for its skip marks), so
        # -rs points at the test and folds one test's identical skips into one line.
        raise pytest.skip.Exception(str(exc), _use_item_location=True)
    pytest.fail(str(exc), pytrace=False)


class OmniPerf:
    """Measures the test's active optimization profile; get it from the ``omni_perf`` fixture.

    Each ``measure()`` call runs warmup and adaptive rounds on the profile's engine (and its
    baseline profile's, alternating), judges every bound and keeps the ``PerfResult``; the
    test fails after its body when a gate failed (see the README's "Verdicts").
    """

    def __init__(self, harness: Harness) -> None:
        self._harness = harness

    @property
    def profile(self) -> Profile:
        """The active profile (the test is parametrized over ``--omni-profile``)."""
        return self._harness.profile

    @property
    def bounds(self) -> Bounds:
        """The bounds in force: the profile's, overridden by ``omni_bounds`` markers."""
        return self._harness.bounds

    @property
    def results(self) -> list[PerfResult]:
        """Every result measured by this test so far, in call order."""
        return list(self._harness.results)

    def measure(self, *, prompt: str = GenerationRequest.prompt, width: int = 128,
                height: int = 128, num_inference_steps: int = 12,
                num_frames: int | None = None, seed: int = 0,
                guidance_scale: float | None = None, negative_prompt: str | None = None,
                image: InputLike | None = None, images: Sequence[InputLike] | None = None,
                video: Sequence[InputLike] | None = None, mask: InputLike | None = None,
                strength: float | None = None, label: str | None = None) -> PerfResult:
        """Measure the active profile on one request and judge it.

        Request: ``prompt``; ``width``/``height`` in pixels; ``num_inference_steps``;
        ``num_frames`` for video models (None: an image); ``seed`` (outputs are compared
        pixel by pixel, so it is fixed); ``guidance_scale``/``negative_prompt`` as the
        pipeline takes them.

        Conditioning inputs, for models that take them (image edit, image or video to
        video): ``image`` (one input image) or ``images`` (several, e.g. Qwen-Image-Edit-2509),
        ``mask`` (inpainting; white is repainted), ``video`` (a list of frames, or an FxHxWx3
        array) and ``strength`` in (0, 1]. Each image is an HxWx3 uint8 numpy array, a
        ``PIL.Image`` or a path to an image file; they reach the engine as lossless pixels and
        count in the request by a digest of those pixels (``sha256:...``), so a stored
        baseline matches the same picture from any file, and a different picture never.
        A missing file, another dtype or shape, or a strength outside (0, 1] raises
        ``RequestError`` naming the field.

        ``label`` names the request when a test measures several
        (default "", then "2", "3", ...): each label has its own stored baseline
        (``<profile>@<label>``) and its own line in the reports.

        Returns a ``PerfResult``: ``median_s`` and ``measurement.latency`` (n, median,
        mean, p90, p99, min, max, the robust ``estimate`` the gates use, in seconds),
        ``speedup`` and ``speedup_interval`` against the baseline profile, ``ssim`` /
        ``quality`` against its output, ``stored_quality`` and ``latency_ratio`` against
        the stored run, ``peak_memory_gib``, ``cold_start_s``, ``frames`` (HxWx3 uint8
        arrays), ``violations`` (failed gates), ``undecided`` (gates still inconclusive at
        the round budget), ``notes`` and ``verdict`` ('pass', 'fail', 'inconclusive').

        Skips the test when the engine cannot honour the profile; fails it (no traceback)
        when the engine fails to start, crashes or hangs.
        """
        if image is not None and images is not None:
            raise RequestError("request fields image and images: give one input image as "
                               "image= or several as images=, not both")
        request = GenerationRequest(prompt=prompt, width=width, height=height,
                                    num_inference_steps=num_inference_steps,
                                    num_frames=num_frames, seed=seed,
                                    guidance_scale=guidance_scale,
                                    negative_prompt=negative_prompt,
                                    **request_inputs.inputs_of(image=image, images=images,
                                                               video=video, mask=mask),
                                    strength=strength)
        try:
            return self._harness.measure(request, label)
        except (ProfileUnsupported, EngineError) as exc:
            error = exc
        # Outside the except block, so pytest shows the message once, not the chain.
        engine_outcome(error)

    def allow_missing_baselines(self) -> None:
        """From now on a missing stored baseline is a note, not a failure: the measurement
        is judged against the baseline profile measured beside it alone. For sweeps such as
        the zero-code suite, whose first run is the first measurement of a model; an
        unreadable or mismatched stored baseline still fails."""
        import dataclasses

        self._harness.references = dataclasses.replace(self._harness.references,
                                                       missing_ok=True)
