"""``omni_perf.load()``: a concurrency sweep through the shipped server on tiny-flux, its
numbers in the terminal, JSON and HTML reports, the load bounds of ``omni_bounds`` (plain
and keyed by hardware), and a skip on an engine that runs one request at a time."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pytest_omni_perf.cases.load_verdict import judge_load
from pytest_omni_perf.load_runs import LoadError, concurrency_levels, load_bounds
from pytest_omni_perf.measure.load_stats import LoadSample
from pytest_omni_perf.profiles import Bounds

SERVE = "python -m pytest_omni_perf.serve {model} --omni --host 127.0.0.1 --port {port}"
LOAD = '''
import pytest

def test_sweep(omni_perf):
    report = omni_perf.load(num_prompts=4, max_concurrency=[1, 2], warmup_requests=1,
                            width=64, height=64, num_inference_steps=2)
    assert [level.concurrency for level in report.levels] == [1, 2]
    for level in report.levels:
        assert level.metrics["completed"] == 4 and level.metrics["failed"] == 0
        assert level.metrics["throughput_qps"] > 0
        assert 0 < level.metrics["latency_p50"] <= level.metrics["latency_p99"]
        # The shipped server reports the engine's time as stage_0_gen_ms, as vLLM-Omni does.
        assert level.stage_durations_ms["stage_0_gen_ms"] > 0

# 6 requests: a bound is judged on an interval, and 2 (as here before) give none.
@pytest.mark.omni_bounds(min_throughput_qps=100000.0, max_latency_p99_s={"H100": 0.001})
def test_bounded(omni_perf):
    omni_perf.load(num_prompts=6, max_concurrency=2, warmup_requests=0, width=64, height=64,
                   num_inference_steps=2)
'''


def test_arguments_are_checked_by_name() -> None:
    assert concurrency_levels(2) == [2] and concurrency_levels([1, 4]) == [1, 4]
    for bad, message in ((0, "max_concurrency: expected a whole number >= 1, got 0"),
                         ([1, 0], "max_concurrency[1]: expected a whole number >= 1, got 0"),
                         ([], "max_concurrency: expected a whole number >= 1 or a non-empty"),
                         ("2", "max_concurrency: expected a whole number >= 1 or a non-empty")):
        with pytest.raises(LoadError, match=message.replace("[", r"\[").replace("]", r"\]")):
            concurrency_levels(bad)  # type: ignore[arg-type]


def test_load_bounds_judge_each_direction() -> None:
    """On intervals, not points (this compared point values before): 20 requests of about
    1.5 s fail max_latency_p99_s=1 and min_throughput_qps=2; 20 of about 0.4 s one at a
    time pass the throughput bound, but cannot pass the p99 one (an upper end of its
    interval needs 368 requests), and no completed request decides nothing."""
    bounds = load_bounds(Bounds(max_latency_p99_s=1.0, min_throughput_qps=2.0))

    def outcomes(latency: float, n: int) -> list[str]:
        values = tuple(latency * (1 + 0.05 * ((k % 5) - 2)) for k in range(n))
        judged = judge_load(bounds, {}, LoadSample(values, values), 0.95)
        return [v.outcome for v in judged.verdicts]

    assert outcomes(1.5, 20) == ["fail", "fail"]
    assert outcomes(0.4, 20) == ["inconclusive", "pass"]
    assert outcomes(0.4, 0) == ["inconclusive", "inconclusive"]


def test_load_sweep_through_the_shipped_server(pytester: pytest.Pytester,
                                               tiny_model_cache: Path) -> None:
    pytester.makepyfile(test_load=LOAD)
    result = pytester.runpytest_subprocess(
        "-p", "no:cacheprovider", "--omni-backend=omni-server",
        f"--omni-server-command={SERVE}", f"--omni-cache-dir={tiny_model_cache}",
        "--omni-profile=eager", "--omni-report-json=report.json",
        "--omni-report-html=report.html")
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines([
        "*omni-perf gate(s) failed:",
        "*[[]eager load[]] concurrency 2: min_throughput_qps: measured throughput_qps * req/s "
        "[[]*, *[]] (95% CI, 6 requests), minimum 100000 req/s: the whole interval is below the "
        "minimum*",
    ])
    result.stdout.fnmatch_lines_random([
        "*test_sweep*[[]eager[]] c=1: * req/s, latency mean * s p50 * s p95 * s p99 * s, "
        "peak -, 4 ok / 0 failed; stages stage_0_gen_ms * ms",
        "*test_sweep*[[]eager[]] c=2: * req/s*4 ok / 0 failed*",
        # The shipped server on a CPU reports peak_memory_mb 0: said, not shown as 0 MB.
        "*note: concurrency 1: the server reported no peak_memory_mb",
        "*note: @pytest.mark.omni_bounds.max_latency_p99_s is keyed by H100: no key names "
        "this machine (no GPU; hardware key 'cpu'), so the bound is not applied",
    ])
    document = json.loads((pytester.path / "report.json").read_text())
    sweep = next(load for load in document["loads"] if "test_sweep" in load["nodeid"])
    assert [level["concurrency"] for level in sweep["levels"]] == [1, 2]
    assert sweep["outcome"] == "passed" and sweep["num_prompts"] == 4
    assert all(level["metrics"]["throughput_qps"] > 0 for level in sweep["levels"])
    assert "<h2>Loads</h2>" in (pytester.path / "report.html").read_text()


def test_load_skips_on_an_in_process_engine(pytester: pytest.Pytester,
                                            tiny_model_cache: Path) -> None:
    pytester.makepyfile(test_load="def test_x(omni_perf):\n"
                                  "    omni_perf.load(num_prompts=2, width=64, height=64)\n")
    result = pytester.runpytest_subprocess(
        "-p", "no:cacheprovider", "--omni-backend=diffusers", "-rs", "--omni-profile=eager",
        f"--omni-cache-dir={tiny_model_cache}")
    result.assert_outcomes(skipped=1)
    result.stdout.fnmatch_lines(["*omni_perf.load(): the diffusers backend runs one request "
                                 "at a time; load needs a server*"])
