"""A peak NVML reads in an engine that served a larger request before is not compared.

vLLM-Omni's engines keep what their allocator took: on one H100 the eager engine of
medium-flux-kontext read 6.44 GiB at 512x512 after serving 1024x1024, cache_dit's fresh
engine 3.43 GiB, and "peak memory 0.53x" was recommended as the lowest
(results/h100/support/omni-kontext-1.json). The diffusers runner empties its cache on a
shape change, so its peaks stay comparable.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from pytest_omni_perf import verdict
from pytest_omni_perf.baselines import BaselineStore
from pytest_omni_perf.hardware import HardwareInfo
from pytest_omni_perf.measure.memory import MemoryPeak, held_over
from pytest_omni_perf.measure.stats import LatencyStats
from pytest_omni_perf.profiles import Bounds, Profile
from pytest_omni_perf.request import GenerationRequest
from pytest_omni_perf.results import Measurement

GIB = 2**30


def measured(profile: str, peak_gib: float, *, backend: str = "omni",
             after_larger: str = "") -> Measurement:
    samples = [0.40, 0.41, 0.42, 0.40, 0.41]
    stats = LatencyStats.from_samples(samples)
    memory = held_over(MemoryPeak("nvml", int(peak_gib * GIB), samples=5), backend,
                       after_larger)
    return Measurement(
        profile=profile, model="medium-flux-kontext", backend=backend,
        request={"width": 512, "height": 512}, samples=samples, latency=stats,
        engine_latency=stats, memory=memory, start_s=30.0, first_request_s=1.0,
        engine_reused=bool(after_larger), applied={}, engine_metrics={},
        frames=[np.full((16, 16, 3), 128, np.uint8)],
        interleaved_with="eager" if profile != "eager" else None)


def judged(tmp_path: Path, base: Measurement, bounds: Bounds, *,
           this: Measurement | None = None, update: bool = False,
           ) -> tuple[float | None, list[str]]:
    """Assess cache_dit (``this``, default a fresh 3.43 GiB) against ``base`` and the run
    stored in ``tmp_path``; ``update``: record it instead."""
    references = verdict.References(BaselineStore(tmp_path, "cpu"), update=update,
                                    refresh_command="pytest x", missing_ok=True)
    nodeid, profile = "t.py::test_x[cache_dit]", Profile("cache_dit", {})
    result = verdict.assess(
        nodeid=nodeid, profile=profile, label="", bounds=bounds,
        measured=this or measured("cache_dit", 3.43), base=base,
        stored=references.lookup(nodeid, profile, ""), references=references,
        fingerprint_devices=(), hardware=HardwareInfo(), confidence=0.95)
    return result.memory_ratio, result.notes


def test_a_request_size_names_pixels_and_frames() -> None:
    assert GenerationRequest(width=1024, height=1024).size() == (1024 * 1024, "1024x1024")
    video = GenerationRequest(width=832, height=480, num_frames=33)
    assert video.size() == (832 * 480 * 33, "832x480x33")


def test_only_an_nvml_peak_after_a_larger_request_of_a_keeping_engine_is_marked() -> None:
    peak = MemoryPeak("nvml", 6 * GIB, samples=3)
    assert held_over(peak, "omni", "1024x1024").held_over == (
        "its omni engine served a larger request (1024x1024) before and keeps the memory "
        "it took")
    assert held_over(peak, "diffusers", "1024x1024") is peak  # releases its cache
    assert held_over(peak, "omni-server", "") is peak  # nothing larger came before
    rss = MemoryPeak("rss", 6 * GIB, samples=3)
    assert held_over(rss, "omni", "1024x1024") is rss
    assert held_over(peak, "omni", "1024x1024").to_dict()["held_over"].startswith("its omni")


def test_a_held_over_baseline_peak_gives_no_ratio_and_says_why(tmp_path: Path) -> None:
    ratio, notes = judged(tmp_path, measured("eager", 6.44, after_larger="1024x1024"),
                           Bounds(max_vram_ratio=1.02))
    assert ratio is None
    assert ("peak memory not compared with baseline profile 'eager': NVML may still count "
            "an earlier, larger request (eager's: its omni engine served a larger request "
            "(1024x1024) before and keeps the memory it took); max_vram_ratio not applied"
            ) in notes
    # A fresh baseline engine: the ratio is this profile's.
    ratio, notes = judged(tmp_path, measured("eager", 3.43), Bounds(max_vram_ratio=1.02))
    assert ratio == 1.0 and not any("not compared" in n for n in notes)


def test_a_held_over_peak_is_not_compared_with_the_stored_run_and_says_which_bound(
        tmp_path: Path) -> None:
    """The stored comparison says the same as the in-session one, naming its own bound."""
    judged(tmp_path, measured("eager", 3.43), Bounds(), update=True)
    held = measured("cache_dit", 6.44, after_larger="1024x1024")
    _, notes = judged(tmp_path, measured("eager", 3.43), Bounds(), this=held)
    assert ("peak memory not compared with the stored baseline: NVML may still count an "
            "earlier, larger request (this run's: its omni engine served a larger request "
            "(1024x1024) before and keeps the memory it took); max_vram_regression not "
            "applied") in notes
    _, notes = judged(tmp_path, measured("eager", 3.43), Bounds(max_vram_regression=None),
                      this=held)
    assert any(n.endswith("keeps the memory it took)") for n in notes)


def test_an_engine_remembers_the_largest_request_it_served() -> None:
    """What ``held_over`` is told comes from here: each round's request grows the engine's
    record, and a smaller request measured after it names the larger one."""
    from types import SimpleNamespace
    from typing import Any

    from pytest_omni_perf.engines.base import EngineSpec, GenerationOutput
    from pytest_omni_perf.engines.engine_pool import LiveEngine
    from pytest_omni_perf.harness import _Rounds

    class Engine:
        def generate(self, request: GenerationRequest) -> GenerationOutput:
            return GenerationOutput(frames=[], engine_latency_s=0.0)

    spec = EngineSpec("m", "eager", {}, "omni")
    engine: Any = Engine()
    live = LiveEngine(engine=engine, key=("m", "eager", "omni", ()), start_s=1.0)
    sampler: Any = SimpleNamespace()
    for width in (1024, 512):
        run = _Rounds(Profile("eager", {}), spec, GenerationRequest(width=width, height=width),
                      live, live.requests > 0, sampler)
        run.send()
    assert live.largest_request == (1024 * 1024, "1024x1024") and live.requests == 2
    assert live.larger_than(GenerationRequest(width=512, height=512)) == "1024x1024"
    assert live.larger_than(GenerationRequest(width=1024, height=1024)) == ""
