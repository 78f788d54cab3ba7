"""The pure parts of the zero-code suite: skip reasons sorted, the support row, the
Markdown escaping, the flowchart's choices and the suite's requests."""

from __future__ import annotations

import argparse
from typing import Any

import pytest

from pytest_omni_perf.recommend import ProfileFacts, recommend
from pytest_omni_perf.report.markdown import marks_table, support_markdown
from pytest_omni_perf.suite_requests import parse_overrides, suite_requests
from pytest_omni_perf.support import (
    NOT_MEASURED, NOT_RUNNABLE, SUPPORTED, UNSUPPORTED, classify_skip, ran_on_gpu,
    support_row,
)


@pytest.mark.parametrize(("reason", "status"), [
    ("requires 2 GPU(s), found none (no NVIDIA GPU device in /dev)", NOT_RUNNABLE),
    ("requires SM >= 8.9, found NVIDIA A100 (SM 8.0)", NOT_RUNNABLE),
    ("diffusers backend: tea_cache: the diffusers backend has no TeaCache", NOT_RUNNABLE),
    ("vLLM-Omni 0.26: cache_config key unknown", NOT_RUNNABLE),
    ("ulysses_degree=2: FluxTransformer2DModel has no _sp_plan, vLLM-Omni would only warn",
     UNSUPPORTED),
    ("cache_backend=cache_dit: NextStep11Pipeline is in vLLM-Omni's _NO_CACHE_ACCELERATION",
     UNSUPPORTED),
    ("omni_profiles(eager) leaves this profile out", NOT_MEASURED),
])
def test_skip_reasons_are_sorted(reason: str, status: str) -> None:
    assert classify_skip(reason) == status


def result(profile: str, low: float, high: float, estimate: float, *, ssim: float = 1.0,
           memory: float = 1.0, model: str = "m", rounds: int = 10,
           memory_kind: str = "nvml", devices: tuple[int, ...] = (0,)) -> dict[str, Any]:
    return {"nodeid": "t::x", "profile": profile, "label": "short", "verdict": "pass",
            "speedup": estimate, "memory_ratio": memory, "baseline": {"profile": "eager"},
            "speedup_interval": {"estimate": estimate, "low": low, "high": high,
                                 "confidence": 0.95, "rounds": rounds},
            "quality": {"ssim_mean": ssim},
            "measurement": {"model": model, "cold_start_s": 3.0, "request": {},
                            "memory": {"kind": memory_kind}, "devices": list(devices)}}


def test_row_prefers_the_models_reason_over_the_machines() -> None:
    skips = [{"model": "m", "profile": "usp2", "reason": "requires 2 GPU(s), found 1 visible"},
             {"model": "m", "profile": "usp2", "reason": "FooTransformer has no _sp_plan"}]
    row = {e.method.profile: e for e in support_row("m", [result("cache_dit", 1.2, 1.4, 1.3)],
                                                    skips)}
    assert row["usp2"].status == UNSUPPORTED and row["usp2"].reason == "FooTransformer has no _sp_plan"
    assert row["cache_dit"].status == SUPPORTED and row["cache_dit"].measured[0].low == 1.2
    assert row["fp8"].status == NOT_MEASURED


def test_markdown_escapes_names_and_reasons() -> None:
    skips = [{"model": "a|b<x>", "profile": "tea_cache", "reason": "no | pipes\nhere"}]
    text = support_markdown([], skips, backend="diffusers", hardware="cpu")
    assert "| **a\\|b&lt;x&gt;** | a\\|b&lt;x&gt; |" in text
    assert "no \\| pipes<br>here" in text
    header = marks_table("m", "video", support_row("m", [], []))[0]
    assert "| Ring-Attention |" in header and "Ring-SP" not in header


FACTS = {"compile": ProfileFacts(lossy=False, gpus=1), "cache_dit": ProfileFacts(True, 1),
         "fewer_steps": ProfileFacts(True, 1), "vae_tiling": ProfileFacts(True, 1),
         "usp2": ProfileFacts(False, 2)}


def test_a_speedup_interval_reaching_one_is_not_faster() -> None:
    results = [result("compile", 0.99, 1.6, 1.3), result("cache_dit", 1.1, 1.3, 1.2, ssim=0.99),
               result("fewer_steps", 1.8, 2.2, 2.0, ssim=0.7),
               result("vae_tiling", 0.9, 1.0, 0.95, ssim=0.99, memory=0.6),
               result("usp2", 1.4, 1.6, 1.5)]
    chosen = {r.branch: r for r in recommend(results, FACTS.get, 0.98)}
    lossless = chosen["fastest lossless, 1 GPU"]
    assert lossless.profile is None and "compile 1.30x [0.99-1.60 95%]" in lossless.text
    assert chosen["fastest with SSIM >= 0.98, 1 GPU"].profile == "cache_dit"
    assert chosen["lowest peak memory, SSIM >= 0.98"].profile == "vae_tiling"
    assert chosen["fastest on 2 GPUs, SSIM >= 0.98"].profile == "usp2"
    results.append(result("compile_cachedit", 1.3, 1.5, 1.4, ssim=0.97))
    combo = next(r for r in recommend(results, FACTS.get, 0.98) if r.profile == "compile_cachedit")
    assert combo.branch == "combination compile_cachedit (guide: compile + cache_dit)"
    assert combo.text.startswith("compile_cachedit 1.40x [1.30-1.50 95%] vs eager")
    assert "(alone: compile 1.30x" in combo.text and "; cache_dit 1.20x" in combo.text
    # Too few rounds for an interval: never recommended as faster, whatever the estimate.
    few = recommend([result("cache_dit", 2.0, 2.0, 2.0, rounds=3)], FACTS.get, 0.98)
    assert few[1].profile is None


def test_a_cpu_run_names_its_branches_for_the_cpu() -> None:
    """A newcomer read "fastest lossless, 1 GPU" on a machine without a GPU."""
    results = [result("cache_dit", 1.1, 1.3, 1.2, memory_kind="rss", devices=())]
    assert [r.branch for r in recommend(results, FACTS.get, 0.98)][:2] == [
        "fastest lossless, CPU", "fastest with SSIM >= 0.98, CPU"]


def test_a_result_ran_on_a_gpu_when_its_measurement_names_devices() -> None:
    """The one answer the recommendations (per model) and the terminal table (per run)
    share; a result without a measurement, or a malformed one, is not a GPU run."""
    assert ran_on_gpu(result("compile", 1.1, 1.3, 1.2, devices=(0, 1)))
    assert not ran_on_gpu(result("compile", 1.1, 1.3, 1.2, devices=()))
    assert not ran_on_gpu({"measurement": {"devices": None}})
    assert not ran_on_gpu({"measurement": None})
    assert not ran_on_gpu({})


def test_a_speedup_measured_on_a_busy_host_is_not_recommended() -> None:
    """A newcomer's busy run was offered fewer_steps at 2.91x [1.48-7.76] from an
    inconclusive result: on a contended CPU an interval can be wrong either way."""
    busy = {**result("cache_dit", 1.5, 7.8, 2.9, ssim=0.99), "verdict": "inconclusive",
            "busy_host": "this profile: other processes used 1.4 cores in 9 of 10 rounds"}
    quiet = result("vae_tiling", 1.01, 1.1, 1.05, ssim=0.99)
    chosen = {r.branch: r for r in recommend([busy], FACTS.get, 0.98)}
    within = chosen["fastest with SSIM >= 0.98, 1 GPU"]
    assert within.profile is None
    assert within.text == (
        "none: the faster-looking ones were measured while the host was busy (cache_dit "
        "2.90x [1.50-7.80 95%] vs eager, SSIM 0.9900, peak memory 1.00x, verdict "
        "inconclusive (this profile: other processes used 1.4 cores in 9 of 10 rounds)); "
        "run them on a quiet host")
    both = {r.branch: r for r in recommend([busy, quiet], FACTS.get, 0.98)}
    assert both["fastest with SSIM >= 0.98, 1 GPU"].profile == "vae_tiling"


def test_lowest_memory_only_beyond_the_noise_of_its_kind() -> None:
    """On CPU the peak is RSS, and profiles that hold what eager holds read 0.88-1.15x of
    its peak in the committed CPU runs: a newcomer was offered cache_dit as the lowest peak
    memory at 0.89x and 0.94x. A GPU's VRAM ratio of 0.93 is a saving; RSS needs 0.80."""
    branch = "lowest peak memory, SSIM >= 0.98"

    def lowest(*results: dict[str, Any]) -> Any:
        return {r.branch: r for r in recommend(list(results), FACTS.get, 0.98)}[branch]

    on_cpu = lowest(result("cache_dit", 1.1, 1.3, 1.2, memory=0.89, memory_kind="rss"),
                    result("compile", 1.0, 1.2, 1.1, memory=0.94, memory_kind="rss"),
                    result("fewer_steps", 1.5, 2.0, 1.8, ssim=0.9, memory=0.5,
                           memory_kind="rss"))  # outside the SSIM budget
    assert on_cpu.profile is None
    assert on_cpu.text == (
        "none: on CPU the peak is the RSS of separate engine processes, which reads "
        "0.88-1.15x of the baseline's for profiles that hold the same, and none measured "
        "0.80x or below (lowest: cache_dit 0.89x)")
    tiled = lowest(result("cache_dit", 1.1, 1.3, 1.2, memory=0.89, memory_kind="rss"),
                   result("vae_tiling", 0.8, 0.9, 0.85, ssim=0.99, memory=0.7,
                          memory_kind="rss"))
    assert tiled.profile == "vae_tiling" and "peak memory 0.70x" in tiled.text
    on_gpu = lowest(result("cache_dit", 1.1, 1.3, 1.2, memory=0.93))
    assert on_gpu.profile == "cache_dit"
    unchanged = lowest(result("cache_dit", 1.1, 1.3, 1.2, memory=0.97))
    assert unchanged.profile is None
    assert unchanged.text == "none measured 5% or more below its baseline's peak"


def test_suite_requests_by_kind_and_hardware() -> None:
    cpu = suite_requests("video", on_gpu=False, overrides={"num_frames": 5})
    assert [(r.label, r.fields["num_frames"]) for r in cpu] == [("short", 5)]
    gpu = suite_requests("image", on_gpu=True)
    assert [(r.label, r.fields["width"]) for r in gpu] == [("short", 512), ("realistic", 1024)]
    assert parse_overrides("width=32, num_inference_steps=2") == {"width": 32,
                                                                 "num_inference_steps": 2}
    for bad in ("width", "colour=red", "width=0", "steps=x"):
        with pytest.raises(argparse.ArgumentTypeError):
            parse_overrides(bad)


def test_models_that_take_an_image_get_one_of_the_request_size() -> None:
    from pytest_omni_perf.builtin_models import class_takes_image

    taking = ["WanImageToVideoPipeline", "FluxKontextPipeline", "QwenImageEditPlusPipeline",
              "Wan-AI/Wan2.2-I2V-A14B-Diffusers", "black-forest-labs/FLUX.1-Kontext-dev"]
    assert [n for n in taking if not class_takes_image(n)] == []
    assert not any(map(class_takes_image, ["FluxPipeline", "WanPipeline", "Qwen/Qwen-Image"]))
    [short, realistic] = suite_requests("video", on_gpu=True, with_image=True)
    assert short.fields["image"].shape == (240, 416, 3)
    assert realistic.fields["image"].shape == (480, 832, 3)
    assert "image" not in suite_requests("video", on_gpu=True)[0].fields


def test_html_leaves_out_models_with_nothing_measured() -> None:
    from pytest_omni_perf.report.html_support import support_html

    blank: list[dict[str, Any]] = [{"method": "Cache-DiT", "profile": "cache_dit", "status": "not measured",
              "measured": [], "reason": None}]
    assert support_html({"support": {"tiny-flux": blank}, "recommendations": []}) == ""
    ran = [{**blank[0], "status": "not runnable here", "reason": "requires 2 GPU(s)"}]
    page = support_html({"support": {"tiny-flux": blank, "tiny-wan": ran}})
    assert "<b>tiny-wan</b>" in page and "<b>tiny-flux</b>" not in page
