"""The progress line's ``?`` is explained where the user reads the run's end: once, in the
"omni-perf inconclusive" section, and only when the letter was shown (not under ``-v``)."""

from __future__ import annotations

import re

import pytest

TEST_FILE = """
def test_image(omni_perf):
    omni_perf.measure(width=32, height=32, num_inference_steps=2)

def test_plain():
    pass
"""
LEGEND = ("? in the progress line = INCONCLUSIVE: a gate was left undecided (its interval still "
          "straddled its bound when measuring stopped, or the host was busy); why, test by "
          "test, below")


def run(pytester: pytest.Pytester, *args: str, profile: str = "cache_dit") -> pytest.RunResult:
    # As test_gates_run's inconclusive test: a true 1.2x speedup against min_speedup=1.2,
    # with seeded jitter, straddles the bound at the 6-round budget on every run.
    return pytester.runpytest_subprocess(
        "-p", "no:cacheprovider", "--omni-rounds=6", "--omni-warmup=1",
        f"--omni-profile={profile}", "--omni-update-baselines", "--omni-max-rounds=6", *args)


@pytest.fixture
def on_its_bound(standin_pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
                 ) -> pytest.Pytester:
    standin_pytester.makepyfile(TEST_FILE)
    monkeypatch.setenv("STANDIN_DELAY_EAGER", "0.072")
    monkeypatch.setenv("STANDIN_DELAY_CACHE_DIT", "0.06")
    monkeypatch.setenv("STANDIN_JITTER_EAGER", "3")
    monkeypatch.setenv("STANDIN_JITTER_CACHE_DIT", "3")
    return standin_pytester


def test_the_question_mark_is_explained_once(on_its_bound: pytest.Pytester) -> None:
    result = run(on_its_bound)
    assert result.ret == 0 and result.parseoutcomes().get("inconclusive") == 1
    out = result.stdout.str()
    assert re.search(r"^test_the_question_mark_is_explained_once\.py \?\.", out, re.M), out
    result.stdout.fnmatch_lines([
        "*omni-perf inconclusive (not failed: --omni-inconclusive=warn)*",
        LEGEND,
        "INCONCLUSIVE *::test_image?cache_dit?: gate(s) inconclusive at the round budget:",
        "*1 passed, 1 inconclusive*",
    ])
    assert out.count("? in the progress line") == 1


def test_verbose_shows_the_word_and_no_legend(on_its_bound: pytest.Pytester) -> None:
    result = run(on_its_bound, "-v")
    result.stdout.fnmatch_lines(["*test_image?cache_dit? INCONCLUSIVE*",
                                 "*omni-perf inconclusive (not failed*"])
    assert "? in the progress line" not in result.stdout.str()


def test_no_legend_without_an_inconclusive_result(standin_pytester: pytest.Pytester) -> None:
    standin_pytester.makepyfile(TEST_FILE)
    # The reference profile alone, writing its baseline: no gate that could stay undecided
    # (a timed speedup could, on a loaded machine).
    result = run(standin_pytester, profile="eager")
    result.assert_outcomes(passed=2)
    assert "? in the progress line" not in result.stdout.str()
