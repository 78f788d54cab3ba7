"""``OmniPerf``: the public, typed object behind the ``omni_perf`` fixture.

Like ``pytest.Pytester``, it is handed out by a fixture and exported for annotations::

    from pytest_omni_perf import OmniPerf

    def test_image(omni_perf: OmniPerf) -> None:
        result = omni_perf.measure(prompt="a red fox", width=1024, height=1024)
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, NoReturn

import pytest

from pytest_omni_perf import request_inputs
from pytest_omni_perf.engines.base import (
    EngineError, GenerationRequest, ProfileUnsupported, RequestError,
)
from pytest_omni_perf.harness import Harness
from pytest_omni_perf.load_runs import LoadReport
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
                fps: int | None = None, true_cfg_scale: float | None = None,
                guidance_scale_2: float | None = None, flow_shift: float | None = None,
                extra_body: Mapping[str, Any] | None = None,
                image: InputLike | None = None, images: Sequence[InputLike] | None = None,
                video: Sequence[InputLike] | None = None, mask: InputLike | None = None,
                strength: float | None = None, label: str | None = None) -> PerfResult:
        """Measure the active profile on one request and judge it.

        Request: ``prompt``; ``width``/``height`` in pixels; ``num_inference_steps``;
        ``num_frames`` for video models (None: an image); ``seed`` (outputs are compared
        pixel by pixel, so it is fixed); ``guidance_scale``/``negative_prompt`` as the
        pipeline takes them. Sampling fields, each None (the pipeline's default) unless
        given: ``fps`` (frames per second of a video, whole, >= 1), ``true_cfg_scale``
        (>= 0), ``guidance_scale_2`` (Wan2.2's high-noise CFG, >= 0), ``flow_shift`` (the
        scheduler's sigma shift for this request, > 0), ``extra_body`` (more request fields:
        server body fields, pipeline ``__call__`` keyword arguments, Omni sampling params or
        ``extra_args``). A backend that cannot honour one skips the test naming it; a bad
        value is a ``RequestError`` naming the field.

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
                                    negative_prompt=negative_prompt, fps=fps,
                                    true_cfg_scale=true_cfg_scale,
                                    guidance_scale_2=guidance_scale_2, flow_shift=flow_shift,
                                    extra_body=dict(extra_body or {}),
                                    **request_inputs.inputs_of(image=image, images=images,
                                                               video=video, mask=mask),
                                    strength=strength)
        try:
            return self._harness.measure(request, label)
        except (ProfileUnsupported, EngineError) as exc:
            error = exc
        # Outside the except block, so pytest shows the message once, not the chain.
        engine_outcome(error)

    def load(self, *, num_prompts: int = 10, max_concurrency: int | Sequence[int] = 1,
             request_rate: float | None = None, warmup_requests: int = 1,
             warmup_concurrency: int = 1, prompt: str | None = None, width: int = 128,
             height: int = 128, num_inference_steps: int = 12, num_frames: int | None = None,
             seed: int = 0, guidance_scale: float | None = None,
             negative_prompt: str | None = None, fps: int | None = None,
             true_cfg_scale: float | None = None, guidance_scale_2: float | None = None,
             flow_shift: float | None = None, extra_body: Mapping[str, Any] | None = None,
             label: str | None = None) -> LoadReport:
        """Send ``num_prompts`` requests to the active profile's server at each level of
        ``max_concurrency`` (a number, or a list: a sweep, one ``LoadLevel`` per level),
        after ``warmup_requests`` unmeasured ones, and judge the load bounds.

        ``request_rate``: requests per second with seeded Poisson arrivals (None: as fast
        as the concurrency allows). ``prompt``: every request's text (None: ``num_prompts``
        distinct prompts drawn from a fixed word list, as vLLM-Omni's ``random`` dataset).
        The request fields are ``measure()``'s. ``label`` names the load in the reports.

        Returns a ``LoadReport``: ``levels`` (``concurrency``, ``metrics``: throughput_qps
        (completed requests/s over first send to last answer), completed, failed,
        latency_mean/median/p50/p95/p99 (s, queueing included), peak_memory_mb_max/mean
        (MB, as the server reports ``peak_memory_mb``); ``stage_durations_ms``: the mean of
        each engine-reported stage; ``verdicts``: each bound's outcome on its metric's 95%
        interval; ``violations``; ``undecided``), ``notes``. The test fails after its body
        on a failed request or a bound whose whole interval is on the wrong side
        (``omni_bounds(max_latency_p99_s=, max_latency_mean_s=, min_throughput_qps=)``, each
        a number or keyed by hardware); a bound the interval straddles, or one it cannot
        reach yet (fewer than 5 completed requests; a p99 needs 368 for an upper end), is
        INCONCLUSIVE and ``--omni-inconclusive`` decides (retry: the level once more).

        Skips on an engine that runs one request at a time (the diffusers and omni
        backends): use ``--omni-backend=omni-server`` or ``--omni-server-url``. A bad
        argument raises ``LoadError``/``RequestError`` naming it.
        """
        from pytest_omni_perf.load_runs import check_counts, concurrency_levels

        levels = concurrency_levels(max_concurrency)
        check_counts(num_prompts, warmup_requests, request_rate)
        request = GenerationRequest(
            prompt=prompt if prompt is not None else GenerationRequest.prompt, width=width,
            height=height, num_inference_steps=num_inference_steps, num_frames=num_frames,
            seed=seed, guidance_scale=guidance_scale, negative_prompt=negative_prompt,
            fps=fps, true_cfg_scale=true_cfg_scale, guidance_scale_2=guidance_scale_2,
            flow_shift=flow_shift, extra_body=dict(extra_body or {}))
        try:
            return run_load(self._harness, request, levels=levels, num_prompts=num_prompts,
                            request_rate=request_rate, warmup_requests=warmup_requests,
                            warmup_concurrency=warmup_concurrency,
                            random_prompts=prompt is None, label=label)
        except (ProfileUnsupported, EngineError) as exc:
            error = exc
        engine_outcome(error)

    def allow_missing_baselines(self) -> None:
        """From now on a missing stored baseline is a note, not a failure: the measurement
        is judged against the baseline profile measured beside it alone. For sweeps such as
        the zero-code suite, whose first run is the first measurement of a model; an
        unreadable or mismatched stored baseline still fails."""
        import dataclasses

        self._harness.references = dataclasses.replace(self._harness.references,
                                                       missing_ok=True)


def run_load(harness: Harness, request: GenerationRequest, *, levels: Sequence[int],
             num_prompts: int, request_rate: float | None, warmup_requests: int,
             warmup_concurrency: int, random_prompts: bool, label: str | None) -> LoadReport:
    """The levels of one load on ``harness``'s engine, judged and kept on the harness."""
    import dataclasses

    from pytest_omni_perf.cases import load as client
    from pytest_omni_perf.cases.load_verdict import judged_level
    from pytest_omni_perf.engines.omni_client import OmniHttpClient
    from pytest_omni_perf.load_runs import LoadLevel, load_bounds

    spec = harness.spec_for(harness.profile)
    record = harness.pool.get(spec)
    engine = record.engine
    if not isinstance(engine, OmniHttpClient):
        raise ProfileUnsupported(
            f"omni_perf.load(): the {spec.backend} backend runs one request at a time; load "
            "needs a server (--omni-backend=omni-server, or --omni-server-url)")
    texts = client.random_prompts(num_prompts + warmup_requests, request.seed) \
        if random_prompts else [request.prompt] * (num_prompts + warmup_requests)
    requests = [dataclasses.replace(request, prompt=t) for t in texts]
    notes = list(harness.bound_notes)
    made = []
    for concurrency in levels:
        plan = client.LoadPlan(
            requests=requests[warmup_requests:], concurrency=concurrency,
            request_rate=request_rate, warmup=requests[:warmup_requests],
            warmup_concurrency=warmup_concurrency, seed=request.seed,
            timeout_s=spec.request_timeout_s)
        result, judged, level_notes = judged_level(
            lambda first: client.run_load(engine.url, plan if first else plan.again(),
                                          client.host_monitor(record, harness.hardware)),
            load_bounds(harness.bounds),
            confidence=harness.budget.confidence, retry=harness.budget.retry)
        metrics = result.metrics()
        violations = judged.violations
        if result.failed:
            violations.insert(0, f"{result.failed} of {result.failed + result.completed} "
                                 f"requests failed; first: {result.first_error()}")
        notes += [f"concurrency {concurrency}: {n}" for n in [*level_notes, *judged.notes]]
        if metrics.get("peak_memory_mb_max") is None and result.completed:
            notes.append(f"concurrency {concurrency}: the server reported no peak_memory_mb")
        made.append(LoadLevel(concurrency=concurrency, metrics=metrics,
                              stage_durations_ms=result.stage_means(),
                              violations=tuple(violations), first_error=result.first_error(),
                              verdicts=tuple(judged.verdicts),
                              undecided=tuple(judged.undecided),
                              host=result.host))
    report = LoadReport(
        nodeid=harness.nodeid, profile=harness.profile.name,
        label=label or (str(len(harness.loads) + 1) if harness.loads else ""),
        model=harness.model, backend=harness.backend, num_prompts=num_prompts,
        request_rate=request_rate, request=request.as_dict(), levels=tuple(made),
        notes=tuple(dict.fromkeys(notes)))
    harness.loads.append(report)
    return report
