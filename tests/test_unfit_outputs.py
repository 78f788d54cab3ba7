"""Outputs SSIM cannot take, through real pytest runs: tiny, thin, single-channel, one-frame
and mismatched outputs are measured and reported, a record run's baselines are read back by
the compare run, and quality says "not applicable" with the reason instead of raising."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("skimage")

# An engine whose output shape, frame count and speed come from the environment, per
# profile (UNFIT_SHAPE_EAGER=8x8x3, UNFIT_FRAMES_CACHE_DIT=2, UNFIT_DELAY_CACHE_DIT=0.01).
ENGINE = '''
import os, time
import numpy as np
from pytest_omni_perf.engines.base import GenerationOutput

class Runner:
    def __init__(self, profile, options):
        self.profile = profile
    def _env(self, what, default):
        return os.environ.get(f"UNFIT_{what}_{self.profile.upper()}", default)
    def load(self):
        return {}
    def generate(self, request):
        began = time.perf_counter()
        time.sleep(float(self._env("DELAY", "0.03")))
        default = f"{request.height}x{request.width}x3"
        shape = tuple(int(d) for d in self._env("SHAPE", default).split("x"))
        count = int(self._env("FRAMES", str(request.num_frames or 1)))
        rng = np.random.default_rng(request.seed)
        frames = [rng.integers(0, 256, shape, dtype=np.uint8) for _ in range(count)]
        return GenerationOutput(frames=frames, engine_latency_s=time.perf_counter() - began)
    def close(self):
        pass
    def versions(self):
        return {}

def make(profile, options):
    return Runner(profile, options)
'''
CONFTEST = '''
import os, sys
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from pytest_omni_perf.engines.hosting import InProcessEngine

def pytest_omni_perf_make_engine(config, spec, hardware):
    return InProcessEngine(spec, "unfit_engine:make",
                           {"profile": spec.profile_name, "options": dict(spec.options)})
'''
TEST_FILE = '''
def test_out(omni_perf):
    r = omni_perf.measure(width=16, height=16, num_inference_steps=2, num_frames={frames})
    assert r.median_s > 0
'''


@pytest.fixture
def unfit(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> pytest.Pytester:
    pytester.makepyfile(unfit_engine=ENGINE)
    pytester.makeconftest(CONFTEST)
    monkeypatch.setenv("UNFIT_DELAY_CACHE_DIT", "0.01")  # passes min_speedup=1.2 by far
    return pytester


def _run(pytester: pytest.Pytester, *args: str) -> tuple[pytest.RunResult, list[dict[str, Any]]]:
    report = pytester.path / "report.json"
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "--omni-rounds=3",
                                           "--omni-warmup=1", f"--omni-report-json={report}", *args)
    results = json.loads(report.read_text())["results"] if report.exists() else []
    return result, results


@pytest.mark.parametrize(("shape", "frames"), [
    ("1x1x3", "None"), ("13x9", "None"), ("12x40x1", "None"), ("3000x4x3", "None"),
    ("8x8x4", "1")])
def test_record_then_compare_any_output(unfit: pytest.Pytester, monkeypatch: pytest.MonkeyPatch,
                                        shape: str, frames: str) -> None:
    monkeypatch.setenv("UNFIT_SHAPE_EAGER", shape)
    unfit.makepyfile(TEST_FILE.format(frames=frames))
    record, _ = _run(unfit, "--omni-profile=eager", "--omni-update-baselines")
    record.assert_outcomes(passed=1)
    compare, results = _run(unfit, "--omni-profile=eager")
    compare.assert_outcomes(passed=1)
    (result,) = results
    quality = result["stored_quality"]
    assert isinstance(quality, dict) and quality["comparable"] is True
    h, w = (int(d) for d in shape.split("x")[:2])
    if min(h, w) < 11:
        assert "smaller than SSIM's 11x11 window" in quality["not_applicable"]
        compare.stdout.fnmatch_lines([
            "*SSIM against the stored baseline image is not applicable (output is *, smaller "
            "than SSIM's 11x11 window): PSNR inf only, and a min_ssim bound cannot be checked*"])
    else:
        assert quality["ssim_mean"] == pytest.approx(1.0) and quality["not_applicable"] is None


def test_tiny_output_keeps_its_timings_and_says_why(unfit: pytest.Pytester,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    for profile in ("EAGER", "CACHE_DIT"):
        monkeypatch.setenv(f"UNFIT_SHAPE_{profile}", "8x8x3")
    unfit.makepyfile(TEST_FILE.format(frames="None"))
    result, results = _run(unfit, "--omni-profile=eager,cache_dit", "--omni-update-baselines")
    result.assert_outcomes(passed=2)
    result.stdout.fnmatch_lines([
        "*test_out*cache_dit*n/a*ok*",
        "*SSIM against the output of baseline profile 'eager' is not applicable (output is "
        "8x8x3, smaller than SSIM's 11x11 window): PSNR inf only*"])
    cache_dit = next(r for r in results if r["profile"] == "cache_dit")
    assert cache_dit["speedup"] > 1.2 and len(cache_dit["measurement"]["samples_s"]) >= 3
    assert cache_dit["quality"]["ssim_mean"] is None
    compare, _ = _run(unfit, "--omni-profile=eager,cache_dit")
    compare.assert_outcomes(passed=2)


def test_profile_changing_the_frame_count_fails_with_its_timings(
        unfit: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("UNFIT_FRAMES_CACHE_DIT", "2")
    unfit.makepyfile(TEST_FILE.format(frames="None"))
    result, results = _run(unfit, "--omni-profile=cache_dit", "--omni-update-baselines")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines([
        "*ssim: cannot compare the output with the output of baseline profile 'eager': output "
        "has 2 frames, reference 1*"])
    (cache_dit,) = results
    assert cache_dit["quality"]["comparable"] is False
    assert cache_dit["measurement"]["latency"]["median"] > 0


def test_html_report_says_not_applicable(unfit: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
                                         ) -> None:
    for profile in ("EAGER", "CACHE_DIT"):
        monkeypatch.setenv(f"UNFIT_SHAPE_{profile}", "9x9x1")
    unfit.makepyfile(TEST_FILE.format(frames="None"))
    html = unfit.path / "report.html"
    result, _ = _run(unfit, "--omni-profile=eager,cache_dit", "--omni-update-baselines",
                     f"--omni-report-html={html}")
    result.assert_outcomes(passed=2)
    page = html.read_text()
    assert "not applicable: output is 9x9x1, smaller than SSIM&#x27;s 11x11 window" in page \
        or "not applicable: output is 9x9x1, smaller than SSIM's 11x11 window" in page
    assert "thumbnails not written" not in page and "no diff heat map" not in page
    pictures = sorted(p.name for p in Path(str(html) + ".assets").rglob("*.png"))
    assert pictures == ["baseline_0000.png", "diff_0000.png", "output_0000.png",
                        "output_0000.png"]
