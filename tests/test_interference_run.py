"""Interference diagnostics as a user meets them: a real test file through the tiny diffusers
engine, with a CPU load generator beside it, then the JSON, terminal line and HTML card."""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
from collections.abc import Iterator

import pytest

BURN = "import time\nend = time.monotonic() + 300\nwhile time.monotonic() < end: pass"


@contextlib.contextmanager
def busy_loops() -> Iterator[None]:
    """Two busy processes (bounded to 5 minutes), killed when the block ends."""
    burners = [subprocess.Popen([sys.executable, "-c", BURN]) for _ in range(2)]
    try:
        yield
    finally:
        for proc in burners:
            proc.kill()
            proc.wait()


@pytest.fixture
def load_generator() -> Iterator[None]:
    """Two busy processes beside the whole test."""
    with busy_loops():
        yield


def test_rounds_record_host_load_and_the_summary_names_it(pytester: pytest.Pytester,
                                                          load_generator: None) -> None:
    pytester.makepyfile(test_x="""
        def test_image(omni_perf):
            omni_perf.measure(width=128, height=128, num_inference_steps=8)
        """)
    result = pytester.runpytest_subprocess(
        "-p", "no:cacheprovider", "--omni-rounds=3", "--omni-warmup=1", "--omni-profile=eager",
        "--omni-update-baselines", "--omni-report-json=out/r.json",
        "--omni-report-html=out/r.html")
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(["interference ?eager? test_x.py::test_image?eager?: "
                                 "other processes used * cores in ? of 3 rounds*"])
    (measured,) = [r["measurement"] for r in
                   json.loads((pytester.path / "out" / "r.json").read_text())["results"]]
    found = measured["interference"]
    assert len(found["rounds"]) == len(measured["samples_s"]) == 3
    for r, latency in zip(found["rounds"], measured["samples_s"]):
        assert r["duration_s"] >= latency  # the monitor's round encloses the timed request
        assert r["gpu_util_pct"] is None and r["other_gpu_processes"] is None  # a CPU run
        assert r["others_cpu_cores"] is not None and r["load_avg_1m"] is not None
    assert max(r["others_cpu_cores"] for r in found["rounds"]) > 0.5  # two busy loops beside
    assert found["notable"] and found["summary"].startswith("other processes used")
    page = (pytester.path / "out" / "r.html").read_text()
    assert f"<td>host conditions</td><td class=\"\"><span class=\"bad\">{found['summary']}" in page


def test_a_busy_host_makes_a_latency_fail_inconclusive(standin_pytester: pytest.Pytester,
                                                       monkeypatch: pytest.MonkeyPatch,
                                                       load_generator: None) -> None:
    """cache_dit no faster than eager would FAIL min_speedup=1.2; with two busy loops beside
    (150 ms rounds, long enough for CPU shares) the host's load is measured in most rounds,
    so the gate is reported INCONCLUSIVE, naming the load, not FAILED."""
    standin_pytester.makepyfile(test_x="""
        def test_image(omni_perf):
            omni_perf.measure(width=32, height=32, num_inference_steps=2)
        """)
    monkeypatch.setenv("STANDIN_DELAY_EAGER", "0.15")
    monkeypatch.setenv("STANDIN_DELAY_CACHE_DIT", "0.15")
    result = standin_pytester.runpytest_subprocess(
        "-p", "no:cacheprovider", "--omni-rounds=5", "--omni-max-rounds=5", "--omni-warmup=1",
        "--omni-profile=cache_dit", "--omni-update-baselines", "-rA")
    result.assert_outcomes(warnings=0)  # passed, counted once: as inconclusive
    assert result.ret == 0 and result.parseoutcomes().get("inconclusive") == 1
    result.stdout.fnmatch_lines([
        "INCONCLUSIVE *::test_image?cache_dit?: gate(s) inconclusive at the round budget:",
        "  [[]cache_dit[]] speedup: cache_dit is *x * bound min_speedup=1.2: the whole "
        "interval is below the "
        "bound*; not failed, because the host was busy (this profile: other processes used "
        "* cores in ? of 5 rounds): a slowdown cannot be told apart from the load here; run "
        "it on a quiet host*"])


def test_a_busy_host_makes_a_latency_pass_inconclusive(standin_pytester: pytest.Pytester,
                                                       monkeypatch: pytest.MonkeyPatch,
                                                       load_generator: None) -> None:
    """cache_dit twice as fast as eager would PASS min_speedup=1.2; beside two busy loops
    the pass is reported INCONCLUSIVE, naming the load: a no-op profile identical to eager
    passed at 2.004x on a busy 2-core machine (results/cpu/noop-drill-busy-3/), so a pass
    measured under such load cannot be told apart from it. SSIM (identical images) stands."""
    standin_pytester.makepyfile(test_x="""
        def test_image(omni_perf):
            omni_perf.measure(width=32, height=32, num_inference_steps=2)
        """)
    monkeypatch.setenv("STANDIN_DELAY_EAGER", "0.3")
    monkeypatch.setenv("STANDIN_DELAY_CACHE_DIT", "0.15")
    result = standin_pytester.runpytest_subprocess(
        "-p", "no:cacheprovider", "--omni-rounds=5", "--omni-max-rounds=5", "--omni-warmup=1",
        "--omni-profile=cache_dit", "--omni-update-baselines", "--omni-report-json=r.json",
        "-rA")
    result.assert_outcomes(warnings=0)  # passed, counted once: as inconclusive
    assert result.ret == 0 and result.parseoutcomes().get("inconclusive") == 1
    result.stdout.fnmatch_lines([
        "INCONCLUSIVE *::test_image?cache_dit?: gate(s) inconclusive at the round budget:",
        "  [[]cache_dit[]] speedup: cache_dit is *x * bound min_speedup=1.2: the whole "
        "interval clears the "
        "bound, but not passed, because the host was busy (this profile: other processes "
        "used * cores in ? of 5 rounds): a pass cannot be told apart from the load here; run "
        "it on a quiet host*"])
    (only,) = json.loads((standin_pytester.path / "r.json").read_text())["results"]
    assert only["verdict"] == "inconclusive" and only["violations"] == []
    assert [u["metric"] for u in only["undecided"]] == ["speedup"]
    assert only["speedup_interval"]["low"] >= 1.2  # the interval itself did clear the bound
    assert only["busy_host"].startswith("this profile: other processes used ")
    # Nor does the flowchart recommend it: a newcomer's busy run was offered fewer_steps at
    # 2.91x [1.48-7.76] from an inconclusive result.
    result.stdout.fnmatch_lines([
        "*omni-perf recommendation*",
        "* fastest with SSIM >= 0.98, CPU: none: the faster-looking ones were measured "
        "while the host was busy (cache_dit *x [[]*] vs eager*, verdict inconclusive (this "
        "profile: other processes used * cores in ? of 5 rounds)); run them on a quiet host"])


def test_a_refresh_on_a_busy_host_keeps_the_stored_baseline(standin_pytester: pytest.Pytester,
                                                            monkeypatch: pytest.MonkeyPatch
                                                            ) -> None:
    """A newcomer's ``--omni-update-baselines`` on a busy host replaced the committed
    baseline and only then said the host was busy. The stored one is kept, byte for byte,
    and the result is INCONCLUSIVE saying why; a first baseline is still written."""
    standin_pytester.makepyfile(test_x="""
        def test_image(omni_perf):
            omni_perf.measure(width=32, height=32, num_inference_steps=2)
        """)
    monkeypatch.setenv("STANDIN_DELAY_EAGER", "0.15")
    args = ("-p", "no:cacheprovider", "--omni-rounds=5", "--omni-max-rounds=5",
            "--omni-warmup=1", "--omni-profile=eager", "--omni-update-baselines", "-rA")
    first = standin_pytester.runpytest_subprocess(*args)  # written even if this host is busy
    first.stdout.fnmatch_lines(["*baseline written to *"])
    stored = {p: p.read_bytes()
              for p in (standin_pytester.path / "baselines" / "cpu").rglob("*") if p.is_file()}
    assert any(p.name == "metrics.json" for p in stored)
    with busy_loops():
        again = standin_pytester.runpytest_subprocess(*args, "--omni-report-json=r.json")
    assert again.ret == 0 and again.parseoutcomes().get("inconclusive") == 1
    again.stdout.fnmatch_lines([
        "INCONCLUSIVE *::test_image?eager?: gate(s) inconclusive at the round budget:",
        "  [[]eager[]] baseline: baseline NOT refreshed: the host was busy (this profile: "
        "other processes used * cores in ? of 5 rounds), and a baseline recorded under that "
        "load would let later slowdowns pass against it; the stored baseline in *eager is "
        "kept as it was; refresh it on a quiet host"])
    assert "baseline written to" not in again.stdout.str()
    assert {p: p.read_bytes() for p in stored} == stored
    (only,) = json.loads((standin_pytester.path / "r.json").read_text())["results"]
    assert only["stored_path"] is None and only["verdict"] == "inconclusive"
    # Nor does the kept run start a level in the history: the level is still the first run.
    assert only["history"]["level"]["n"] == 1
    assert only["history"]["level"]["this_run_only"] is False
