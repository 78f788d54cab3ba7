"""Progress lines of engine starts keep pytest's own progress output whole."""

from __future__ import annotations

import re

import pytest

TESTS = """
import pytest

pytestmark = pytest.mark.omni_bounds(min_speedup=None)

def test_a(omni_perf):
    omni_perf.measure(width=32, height=32, num_inference_steps=2)

def test_b(omni_perf):
    omni_perf.measure(width=32, height=32, num_inference_steps=2)
"""
ARGS = ("-p", "no:cacheprovider", "--omni-rounds=2", "--omni-warmup=1",
        "--omni-profile=eager,cache_dit", "--omni-update-baselines")


def test_default_mode_letters_stay_beside_the_file_name(
        standin_pytester: pytest.Pytester) -> None:
    standin_pytester.makepyfile(test_prog=TESTS)
    result = standin_pytester.runpytest_subprocess(*ARGS)
    result.assert_outcomes(passed=4)
    lines = result.outlines
    # Each engine's start is told, and the letters that follow sit after the file name.
    assert sum(line.startswith("omni-perf: starting tiny-flux[") for line in lines) == 2
    assert not [line for line in lines if re.fullmatch(r"[.FsE]+\s*(\[\s*\d+%\])?", line)]
    result.stdout.fnmatch_lines([
        "omni-perf: starting tiny-flux[[]eager[]] (diffusers) ...",
        "omni-perf: started tiny-flux[[]eager[]] in * s",
        "omni-perf: first request of tiny-flux[[]eager[]]*",
        "test_prog.py ..",
        "omni-perf: starting tiny-flux[[]cache_dit[]] (diffusers) ...",
        "*",
        "*",
        "test_prog.py .. *[[]100%[]]",
    ])


def test_verbose_mode_repeats_the_test_id_before_its_outcome(
        standin_pytester: pytest.Pytester) -> None:
    standin_pytester.makepyfile(test_prog=TESTS)
    result = standin_pytester.runpytest_subprocess(*ARGS, "-v")
    result.assert_outcomes(passed=4)
    result.stdout.fnmatch_lines([
        "test_prog.py::test_a[[]eager[]] ",
        "omni-perf: starting tiny-flux[[]eager[]] (diffusers) ...",
        "omni-perf: started tiny-flux[[]eager[]] in * s",
        "omni-perf: first request of tiny-flux[[]eager[]]*",
        "test_prog.py::test_a[[]eager[]] PASSED*",
        "test_prog.py::test_b[[]eager[]] PASSED*",
    ])


def test_quiet_mode_writes_no_progress(standin_pytester: pytest.Pytester) -> None:
    standin_pytester.makepyfile(test_prog=TESTS)
    result = standin_pytester.runpytest_subprocess(*ARGS, "-q")
    result.assert_outcomes(passed=4)
    assert not any(line.startswith("omni-perf: start") for line in result.outlines)
