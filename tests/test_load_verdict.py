"""Load bounds judged on intervals (pure functions): PASS only when the whole interval is on
the right side, FAIL only when wholly on the wrong side, INCONCLUSIVE otherwise, naming the
metric, interval, bound and the requests that would decide it."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from pytest_omni_perf.cases import bounds as case_bounds
from pytest_omni_perf.cases.load import LoadResult, RequestRecord
from pytest_omni_perf.cases.load_verdict import (
    Bound, LoadJudgement, judge_load, judged_level, verdict_lines,
)
from pytest_omni_perf.load_runs import load_bounds
from pytest_omni_perf.measure.interference import InterferenceReport, RoundConditions
from pytest_omni_perf.measure.load_stats import LoadSample
from pytest_omni_perf.profiles import Bounds
from pytest_omni_perf.report.html_report import render_html


def sample(n: int, seed: int = 0, mean: float = 1.0) -> LoadSample:
    """``n`` lognormal latencies around ``mean`` s, one request at a time (gaps = latencies)."""
    values = mean * np.random.default_rng(seed).lognormal(0.0, 0.2, size=n)
    return LoadSample(tuple(values), tuple(values))


def judge(bound: Bound, data: LoadSample) -> LoadJudgement:
    return judge_load([bound], {}, data, 0.95)


def test_bound_and_metrics_are_still_importable_from_case_bounds() -> None:
    assert case_bounds.Bound is Bound and "latency_p99" in case_bounds.METRICS


def test_a_mean_far_below_its_maximum_passes_and_far_above_fails() -> None:
    data = sample(20)
    passed = judge(Bound("latency_mean", 2.0, "max", "baseline.latency_mean"), data)
    assert passed.verdict == "pass" and not passed.undecided
    assert passed.verdicts[0].message.startswith("baseline.latency_mean: measured latency_mean ")
    assert passed.verdicts[0].message.endswith(
        "(95% CI, 20 requests), maximum 2 s: the whole interval is below the maximum")
    failed = judge(Bound("latency_mean", 0.5, "max", "baseline.latency_mean"), data)
    assert failed.verdict == "fail"
    assert failed.violations[0].endswith("maximum 0.5 s: the whole interval is above the maximum")


def test_throughput_is_a_minimum() -> None:
    data = sample(20)  # about 1 req/s
    assert judge(Bound("throughput_qps", 0.5, "min", "min_throughput_qps"), data).verdict == "pass"
    low = judge(Bound("throughput_qps", 5.0, "min", "min_throughput_qps"), data)
    assert low.verdict == "fail"
    assert "req/s [" in low.violations[0] and "the whole interval is below the minimum" \
        in low.violations[0]


def test_a_bound_inside_the_interval_is_inconclusive_with_a_request_count() -> None:
    data = sample(20)
    estimate = float(np.mean(data.latencies_s))
    judged = judge(Bound("latency_mean", estimate * 1.02, "max", "max_latency_mean_s"), data)
    (verdict,) = judged.verdicts
    assert judged.verdict == "inconclusive" and verdict.needed is not None
    assert verdict.needed > 20
    assert verdict.message.endswith(f"the interval straddles the bound; about {verdict.needed} "
                                    "completed requests would decide it at this spread "
                                    "(num_prompts), or a quieter machine")


def test_p99_below_its_maximum_cannot_pass_before_368_requests() -> None:
    """20 requests well under a p99 bound: no upper end exists, so not a pass."""
    judged = judge(Bound("latency_p99", 10.0, "max", "baseline.latency_p99"), sample(20))
    (verdict,) = judged.verdicts
    assert verdict.outcome == "inconclusive" and verdict.needed == 368
    assert verdict.interval is not None and verdict.interval.high is None
    assert "an upper end of the 95% interval of the 99th percentile needs 368 completed " \
           "requests (this level had 20), so it cannot show the latency_p99 below 10; send " \
           "at least 368 (num_prompts) or bound a lower percentile" in verdict.message
    # The lower end exists: 20 requests far above the bound fail it.
    assert judge(Bound("latency_p99", 0.1, "max", "baseline.latency_p99"),
                 sample(20)).verdict == "fail"
    assert judge(Bound("latency_p99", 10.0, "max", "x"), sample(368)).verdict == "pass"


def test_fewer_than_five_requests_are_inconclusive_saying_why() -> None:
    data = sample(4)
    judged = judge(Bound("latency_mean", 100.0, "max", "max_latency_mean_s"), data)
    assert judged.verdict == "inconclusive"
    mean = float(np.mean(data.latencies_s))
    assert judged.undecided == [
        f"max_latency_mean_s: measured latency_mean {mean:.4g} s (no interval: 4 requests, "
        "needs 5),"
        " maximum 100 s: only 4 requests completed, an interval needs at least 5; send at "
        "least 5 (num_prompts)"]
    none = judge(Bound("latency_p95", 100.0, "max", "x"), LoadSample())
    assert none.verdict == "inconclusive" and none.verdicts[0].needed == 72


def test_memory_is_a_point_and_unreported_memory_a_note() -> None:
    peak = Bound("peak_memory_mb_max", 100.0, "max", "baseline.peak_memory_mb_max")
    over = judge_load([peak], {"peak_memory_mb_max": 120.0}, sample(2), 0.95)
    assert over.violations == ["baseline.peak_memory_mb_max: measured peak_memory_mb_max "
                               "120 MB > maximum 100 MB"]
    assert over.verdicts[0].interval is None
    none = judge_load([peak], {"peak_memory_mb_max": None}, sample(20), 0.95)
    assert none.verdicts == [] and none.notes == [
        "baseline.peak_memory_mb_max: peak_memory_mb_max was not measured here (the server "
        "reported none), bound not applied"]


def test_omni_bounds_become_load_bounds_by_field() -> None:
    found = load_bounds(Bounds(max_latency_p99_s=1.0, min_throughput_qps=2.0))
    assert [(b.field, b.metric, b.direction, b.limit) for b in found] == [
        ("max_latency_p99_s", "latency_p99", "max", 1.0),
        ("min_throughput_qps", "throughput_qps", "min", 2.0)]


def _result(latencies: list[float], others_cores: float | None = None) -> LoadResult:
    """A level of one-at-a-time requests; with ``others_cores``, host windows of 1 s in each
    of which other processes used that many cores."""
    finished = np.cumsum(latencies)
    host = None if others_cores is None else InterferenceReport(tuple(
        RoundConditions(duration_s=1.0, others_cpu_cores=others_cores) for _ in range(4)))
    return LoadResult(concurrency=1, completed=len(latencies), failed=0,
                      duration_s=float(finished[-1]), records=tuple(
                          RequestRecord(True, t, finished_s=float(f))
                          for t, f in zip(latencies, finished)), interference=host)


def test_a_busy_host_cannot_fail_a_timing_bound_but_its_passes_and_memory_stand() -> None:
    """Other processes can only slow the server: a failed latency or throughput bound could
    be the load's doing and becomes INCONCLUSIVE naming it, and nothing is run again (more
    requests on a busy host decide nothing); a pass stands, as does a memory bound."""
    latencies = [1.0, 1.1, 0.9, 1.05, 0.95, 1.0, 1.02, 0.98]
    bounds = [Bound("latency_mean", 0.5, "max", "max_latency_mean_s"),
              Bound("throughput_qps", 0.01, "min", "min_throughput_qps"),
              Bound("latency_median", 1.01, "max", "max_latency_median_s")]
    calls: list[bool] = []

    def run(first: bool) -> LoadResult:
        calls.append(first)
        return _result(latencies, others_cores=1.5)

    _, judged, notes = judged_level(run, bounds, confidence=0.95, retry=True)
    assert calls == [True]
    outcomes = {v.field: v.outcome for v in judged.verdicts}
    assert outcomes == {"max_latency_mean_s": "inconclusive", "min_throughput_qps": "pass",
                        "max_latency_median_s": "inconclusive"}
    failed, _, straddling = judged.verdicts
    assert failed.message.endswith(
        "the whole interval is above the maximum; not failed because the host was busy "
        "(other processes used 1.5 cores in 4 of 4 rounds): a slowdown cannot be told apart "
        "from the load here; run it on a quiet host")
    assert "or a quieter machine" not in straddling.message
    assert straddling.message.endswith("(num_prompts); a quieter machine would decide it "
                                       "(the host was busy: other processes used 1.5 cores "
                                       "in 4 of 4 rounds)")
    assert notes == ["host: other processes used 1.5 cores in 4 of 4 rounds"]
    quiet = judged_level(lambda first: _result(latencies, others_cores=0.1), bounds[:1],
                         confidence=0.95, retry=False)
    assert quiet[1].verdict == "fail" and quiet[2] == []
    # Missed 200-fold: more than any load measured here explains, so it fails, saying so.
    far = judged_level(lambda first: _result(latencies, others_cores=1.5), [
        Bound("latency_mean", 0.005, "max", "max_latency_mean_s"),
        Bound("throughput_qps", 200.0, "min", "min_throughput_qps")],
        confidence=0.95, retry=False)[1]
    assert [v.outcome for v in far.verdicts] == ["fail", "fail"]
    assert all(v.message.endswith("(the host was busy: other processes used 1.5 cores in 4 "
                                  "of 4 rounds; failed all the same: missed by more than the "
                                  "100-fold slowdown a load is taken to explain)")
               for v in far.verdicts)


def test_a_server_not_started_here_records_no_host_load_and_says_so() -> None:
    _, judged, notes = judged_level(lambda first: _result([1.0] * 6), [
        Bound("latency_mean", 0.5, "max", "max_latency_mean_s")], confidence=0.95, retry=False)
    assert judged.verdict == "fail"
    assert notes == ["host load not recorded: the server's processes are not the plugin's "
                     "(an attached server), so a busy host cannot be told from a slow server"]


@pytest.mark.parametrize("retry", [False, True])
def test_retry_runs_an_undecided_level_once_more_on_pooled_requests(retry: bool) -> None:
    runs = iter([_result([1.0, 1.1, 0.9]), _result([1.0, 1.2, 0.8, 1.05])])
    bound = Bound("latency_mean", 5.0, "max", "max_latency_mean_s")
    firsts: list[bool] = []

    def run(first: bool) -> LoadResult:
        firsts.append(first)
        return next(runs)

    result, judged, notes = judged_level(run, [bound], confidence=0.95, retry=retry)
    assert firsts == ([True, False] if retry else [True])
    unrecorded = ("host load not recorded: the server's processes are not the plugin's (an "
                  "attached server), so a busy host cannot be told from a slow server")
    if not retry:
        assert judged.verdict == "inconclusive" and result.completed == 3
        assert notes == [unrecorded]
        return
    assert judged.verdict == "pass" and result.completed == 7
    assert result.duration_s == pytest.approx(3.0 + 4.05)
    assert result.sample().gaps_s == pytest.approx((1.0, 1.1, 0.9, 1.0, 1.2, 0.8, 1.05))
    assert notes == ["undecided after 3 completed requests, run once more "
                     "(--omni-inconclusive=retry): judged on 7", unrecorded]


def test_verdict_lines_read_as_the_terminal_prints_them() -> None:
    judged = judge(Bound("latency_mean", 0.5, "max", "x"), sample(20))
    (line,) = verdict_lines([v.to_dict() for v in judged.verdicts])
    assert line == ("    FAIL x: measured latency_mean 0.9778 s [0.9087, 1.048] (95% CI, 20 "
                    "requests), maximum 0.5 s: the whole interval is above the maximum")


def test_html_load_and_case_tables_show_each_bounds_verdict(tmp_path: Path) -> None:
    """One row per level with its verdict badge, and each bound's outcome and message."""
    undecided = {"field": "max_latency_p99_s", "outcome": "inconclusive",
                 "message": "max_latency_p99_s: measured latency_p99 1 s [0.9, open] <&>"}
    level = {"concurrency": 2, "verdict": "inconclusive", "metrics": {"throughput_qps": 1.5},
             "stage_durations_ms": {}, "violations": [], "verdicts": [undecided],
             "host": "other processes used 1.1 cores in 6 of 6 rounds <x>"}
    case = {"nodeid": "case.json::test_x[e]", "concurrency": 1, "verdict": "fail",
            "measured": {"latency_mean": 2.0}, "notes": ["no key"],
            "verdicts": [{"outcome": "fail", "message": "baseline.latency_mean: above"}]}
    page = render_html({"results": [], "totals": {}, "cases": [case], "loads": [
        {"nodeid": "t.py::test_load", "profile": "eager", "levels": [level], "notes": []}]},
        tmp_path)
    assert "<h2>Loads</h2>" in page and "<h2>Case files</h2>" in page
    assert ('<span class="badge inconclusive">INCONCLUSIVE</span> max_latency_p99_s: measured '
            "latency_p99 1 s [0.9, open] &lt;&amp;&gt;") in page
    assert '<span class="badge fail">FAIL</span> baseline.latency_mean: above' in page
    assert "case.json::test_x[e]: no key" in page
    # The host column: the level's conditions, escaped; "-" where none were recorded.
    assert "<td>other processes used 1.1 cores in 6 of 6 rounds &lt;x&gt;</td>" in page
    assert "<th>host</th>" in page and "<td>-</td><td><ul>" in page
