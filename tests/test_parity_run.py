"""``omni_bounds(parity=...)`` as users run it: pytester runs of test files, with and without
xdist. The shipped server (``--omni-backend=omni-server``) against the diffusers backend on
the built-in tiny-flux on CPU; the deterministic stand-in engine where a test needs the two
backends to disagree, which the real ones (the same diffusers pipeline behind both) do not.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from typing import Any

import pytest

XDIST = [pytest.param([], id="one-process"), pytest.param(["-n", "2"], id="xdist")]


def _strict_json(path: Path) -> Any:
    def refuse(constant: str) -> None:
        raise AssertionError(f"the JSON report holds {constant}, which strict JSON has not")

    return json.loads(path.read_text(encoding="utf-8"), parse_constant=refuse)


def _by_test(report: Any) -> dict[str, Any]:
    return {r["nodeid"].split("::")[1].split("[")[0]: r for r in report["results"]}


# -- the stand-in: backends that disagree on purpose -------------------------------------------
STANDIN_TESTS = """
import pytest

REQUEST = dict(width=32, height=32, num_inference_steps=1)

@pytest.mark.omni_bounds(parity="diffusers", min_ssim=0.97, min_psnr=30, max_p99_abs_diff=4)
def test_quality(omni_perf):
    omni_perf.measure(**REQUEST)

@pytest.mark.omni_bounds(parity="diffusers", max_latency_ratio=1.2)
def test_latency(omni_perf):
    omni_perf.measure(**REQUEST)
"""


@pytest.mark.parametrize("xdist", XDIST)
def test_backends_that_disagree_fail_naming_the_parity_backend(
        standin_pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch,
        xdist: list[str]) -> None:
    standin_pytester.makepyfile(test_parity=STANDIN_TESTS)
    monkeypatch.setenv("STANDIN_NOISE_EAGER_OMNI_SERVER", "25")  # the server's image is noisy
    monkeypatch.setenv("STANDIN_DELAY_EAGER_OMNI_SERVER", "0.08")  # and 4x slower
    report = standin_pytester.path / "report.json"
    result = standin_pytester.runpytest_subprocess(
        "-p", "no:cacheprovider", "--omni-backend=omni-server", "--omni-rounds=5",
        "--omni-max-rounds=10", "--omni-update-baselines", "--omni-inconclusive=fail",
        f"--omni-report-json={report}", *xdist)
    result.assert_outcomes(failed=2)
    result.stdout.fnmatch_lines_random([
        "*parity_ssim: output SSIM 0.* against the output of eager on backend 'diffusers', "
        "below the bound min_ssim=0.97: the backends do not agree; the bound is set by "
        "@pytest.mark.omni_bounds(parity='diffusers', min_ssim=0.97, *) on this test, its "
        "class or its module: change it there",
        "*parity_psnr: output PSNR *dB against the output of eager on backend 'diffusers', "
        "below the bound min_psnr=30 dB*",
        "*parity_pixel_diff: p99 absolute pixel difference * (of 0-255) against the output of "
        "eager on backend 'diffusers', above the bound max_p99_abs_diff=4*",
        # Failed on a quiet host; on a busy one undecided, which --omni-inconclusive=fail fails.
        "*parity_latency: eager on 'omni-server' takes *x * the latency of the same profile and "
        "request on 'diffusers' measured alongside, bound max_latency_ratio=1.2*",
        "*parity: latency ratio*",
    ])
    found = _by_test(_strict_json(report))
    parity = found["test_latency"]["parity"]
    assert parity["backend"] == "diffusers" and parity["measurement"]["backend"] == "diffusers"
    assert found["test_latency"]["measurement"]["backend"] == "omni-server"
    assert 3.0 < parity["latency_ratio"]["estimate"] < 5.0
    quality = found["test_quality"]["parity"]["quality"]
    assert quality["ssim_mean"] < 0.97 and quality["psnr_mean"] < 30
    assert quality["p99_abs_diff"] > 4 and not quality["identical"]


@pytest.mark.parametrize("xdist", XDIST)
def test_backends_that_agree_pass_and_inf_psnr_is_valid_json(
        standin_pytester: pytest.Pytester, xdist: list[str]) -> None:
    standin_pytester.makepyfile(test_parity=STANDIN_TESTS.replace(
        "max_latency_ratio=1.2", "max_mean_abs_diff=0"))
    report = standin_pytester.path / "report.json"
    result = standin_pytester.runpytest_subprocess(
        "-p", "no:cacheprovider", "--omni-backend=omni-server", "--omni-rounds=5",
        "--omni-update-baselines", f"--omni-report-json={report}", *xdist)
    result.assert_outcomes(passed=2)
    result.stdout.fnmatch_lines(["*diffusers 1.0*x*, SSIM 1.0000, PSNR inf (identical)*"])
    for found in _by_test(_strict_json(report)).values():
        quality = found["parity"]["quality"]
        assert quality["psnr_mean"] is None and quality["identical"] is True
        assert quality["mean_abs_diff"] == 0 and quality["p99_abs_diff"] == 0


def test_parity_with_this_very_backend_is_a_note(standin_pytester: pytest.Pytester) -> None:
    standin_pytester.makepyfile(test_parity=STANDIN_TESTS)
    result = standin_pytester.runpytest_subprocess(
        "-p", "no:cacheprovider", "--omni-backend=diffusers", "--omni-rounds=5",
        "--omni-update-baselines")
    result.assert_outcomes(passed=2)
    result.stdout.fnmatch_lines([
        "*parity with 'diffusers' not measured: this run's backend is 'diffusers' itself*"])


# -- the shipped server against the diffusers backend, tiny-flux on CPU ------------------------
SERVER = "python -m pytest_omni_perf.serve {model} --omni --host 127.0.0.1 --port {port}"
REAL_TESTS = """
import pytest

REQUEST = dict(width=64, height=64, num_inference_steps=2)

@pytest.mark.omni_bounds(parity="diffusers", min_ssim=0.97, min_psnr=30, max_mean_abs_diff=1,
                         max_p99_abs_diff=2, max_latency_ratio=20)
def test_sane(omni_perf):
    result = omni_perf.measure(**REQUEST)
    assert result.parity is not None and result.parity.backend == "diffusers"

@pytest.mark.omni_bounds(parity="diffusers", max_latency_ratio=0.01)
def test_impossible(omni_perf):
    omni_perf.measure(**REQUEST)
"""


# Looked up, not imported: this process only starts subprocesses, and importing torch after
# pytester's inline runs dropped its modules fails ("Only a single TORCH_LIBRARY ...").
@pytest.mark.skipif(any(importlib.util.find_spec(m) is None for m in ("diffusers", "fastapi")),
                    reason="needs pip install pytest-omni-perf[diffusers,server]")
@pytest.mark.parametrize("xdist", XDIST)
def test_shipped_server_against_diffusers(pytester: pytest.Pytester, tiny_model_cache: Path,
                                          xdist: list[str]) -> None:
    pytester.makepyfile(test_parity=REAL_TESTS)
    report = pytester.path / "report.json"
    result = pytester.runpytest_subprocess(
        "-p", "no:cacheprovider", "--omni-backend=omni-server", f"--omni-server-command={SERVER}",
        f"--omni-cache-dir={tiny_model_cache}", "--omni-update-baselines", "--omni-rounds=5",
        "--omni-max-rounds=5", "--omni-warmup=1", "--omni-inconclusive=fail",
        f"--omni-report-json={report}", *xdist, timeout=600)
    found = _by_test(_strict_json(report))
    impossible, sane = found["test_impossible"], found["test_sane"]
    assert impossible["outcome"] == "failed"
    result.stdout.fnmatch_lines_random([
        "*parity_latency: eager on 'omni-server' takes *x * the latency of the same profile "
        "and request on 'diffusers' measured alongside, bound max_latency_ratio=0.01*"])
    # The shipped server runs the diffusers pipeline: the two images are the same pixels.
    quality = sane["parity"]["quality"]
    assert quality["identical"] is True and quality["psnr_mean"] is None
    assert quality["ssim_mean"] == 1.0 and quality["mean_abs_diff"] == 0
    assert sane["measurement"]["backend"] == "omni-server"
    assert sane["parity"]["measurement"]["backend"] == "diffusers"
    assert sane["violations"] == []
    # The latency bound passes; a busy host makes it undecided, naming the load, and
    # --omni-inconclusive=fail then fails it: that is the only way it may fail.
    if sane["outcome"] != "passed":
        assert sane["undecided"] and all("the host was busy" in u["message"]
                                         for u in sane["undecided"]), sane["undecided"]
    ratio = sane["parity"]["latency_ratio"]
    print(f"tiny-flux 64x64 2 steps, omni-server over diffusers: {ratio['estimate']:.3f}x "
          f"[{ratio['low']:.3f}, {ratio['high']:.3f}], medians "
          f"{sane['measurement']['latency']['median']:.3f} s / "
          f"{sane['parity']['measurement']['latency']['median']:.3f} s")


def test_a_profile_with_a_baseline_profile_gets_both_partners(
        standin_pytester: pytest.Pytester) -> None:
    standin_pytester.makepyfile(test_parity="""
import pytest

@pytest.mark.omni_profiles("cache_dit")
@pytest.mark.omni_bounds(parity="diffusers", min_psnr=30, min_speedup=None)
def test_cached(omni_perf):
    result = omni_perf.measure(width=32, height=32, num_inference_steps=1)
    assert result.baseline.profile == "eager" and result.baseline.backend == "omni-server"
    assert result.parity.measurement.profile == "cache_dit"
    assert result.parity.measurement.backend == "diffusers"
    assert len(result.parity.beside) == len(result.parity.measurement.samples)
""")
    result = standin_pytester.runpytest_subprocess(
        "-p", "no:cacheprovider", "--omni-backend=omni-server", "--omni-rounds=5",
        "--omni-max-rounds=5", "--omni-update-baselines")
    result.assert_outcomes(passed=1)
    # eager beside cache_dit, then cache_dit on diffusers beside cache_dit: three engines.
    result.stdout.fnmatch_lines(["*suite cost: 1 test x 1 profile: 3 engine starts*"])
