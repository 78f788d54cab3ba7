"""The suite cost line (engine starts, measurements, baselines measured or reused) through
real pytest runs with the stand-in engine, serial and under xdist, and its pure parts."""

from __future__ import annotations

import json
import re

import pytest

from pytest_omni_perf import suite_cost

# T = 3 tests x P = 2 profiles; test_c sends test_a's request, so its eager measurement
# can come from the session's cache. No speedup bound: on a loaded machine the stand-in's
# sleeps do not promise one, and the counts are what is tested here.
TESTS = """
import pytest

pytestmark = pytest.mark.omni_bounds(min_speedup=None)

def test_a(omni_perf):
    omni_perf.measure(width=32, height=32, num_inference_steps=2)

def test_b(omni_perf):
    omni_perf.measure(width=48, height=32, num_inference_steps=2)

def test_c(omni_perf):
    omni_perf.measure(width=32, height=32, num_inference_steps=2)
"""
LINE = re.compile(r"omni-perf: suite cost: (\d+) tests x (\d+) profiles: (\d+) engine starts"
                  r"(?: in (\d+) processes)?, (\d+) measurements, (\d+) round series; baseline "
                  r"profile measured (\d+), reused (\d+)")


def run(pytester: pytest.Pytester, *args: str) -> tuple[dict[str, int], dict[str, object]]:
    pytester.makepyfile(test_cost=TESTS)
    result = pytester.runpytest_subprocess(
        "-p", "no:cacheprovider", "--omni-rounds=2", "--omni-warmup=0",
        "--omni-profile=eager,cache_dit", "--omni-update-baselines",
        "--omni-report-json=report.json", *args)
    result.assert_outcomes(passed=6)
    found = [m for m in map(LINE.search, result.outlines) if m]
    assert len(found) == 1, result.stdout.str()
    names = ("tests", "profiles", "engine_starts", "processes", "measurements", "rounds_run",
             "baseline_measured", "baseline_reused")
    line = {n: int(v or 1) for n, v in zip(names, found[0].groups())}
    session = json.loads((pytester.path / "report.json").read_text())["session"]
    return line, session


def test_serial_run_counts_exactly(standin_pytester: pytest.Pytester) -> None:
    line, session = run(standin_pytester)
    # eager: a and b measured, c reused (same request as a); cache_dit: each test measures
    # eager again beside itself (both fit on CPU), so 2 + 3 x 2 round series.
    assert line == {"tests": 3, "profiles": 2, "engine_starts": 2, "processes": 1,
                    "measurements": 6, "rounds_run": 8, "baseline_measured": 3,
                    "baseline_reused": 1}
    assert {k: session[k] for k in suite_cost.total({}).keys()} == {
        k: v for k, v in line.items() if k not in ("tests", "profiles", "processes")}


def test_xdist_run_sums_the_workers(standin_pytester: pytest.Pytester) -> None:
    line, session = run(standin_pytester, "-n", "2")
    assert (line["tests"], line["profiles"], line["measurements"]) == (3, 2, 6)
    assert line["baseline_measured"] == 3  # every cache_dit test runs eager beside it
    # Each eager measurement either runs or comes from its worker's cache.
    assert line["rounds_run"] + line["baseline_reused"] == 3 + 3 * 2
    assert 2 <= line["engine_starts"] <= 4 and line["processes"] == 2
    processes = session["processes"]
    assert isinstance(processes, dict) and set(processes) == {"gw0", "gw1"}
    assert session["measurements"] == sum(p["measurements"] for p in processes.values()) == 6
    assert session["engine_starts"] == line["engine_starts"]


def test_summary_line_of_given_facts() -> None:
    results = [{"nodeid": f"t.py::test_{t}[{p}]", "profile": p}
               for t in "ab" for p in ("eager", "fp8", "compile")]
    processes = {"gw0": {"engine_starts": 2, "measurements": 3, "rounds_run": 5,
                         "baseline_measured": 2, "baseline_reused": 0},
                 "gw1": {"engine_starts": 1, "measurements": 3, "rounds_run": 4,
                         "baseline_measured": 1, "baseline_reused": 1}}
    assert suite_cost.summary_line(results, processes) == (
        "suite cost: 2 tests x 3 profiles: 3 engine starts in 2 processes, 6 measurements, "
        "9 round series; baseline profile measured 3, reused 1")
    assert suite_cost.total({"main": {"engine_starts": 1}})["baseline_reused"] == 0
