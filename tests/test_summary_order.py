"""The summary as a newcomer reads it (every model, each speedup's reference) and the test
order that starts an engine once per profile and model."""

from __future__ import annotations

import re

import pytest

from pytest_omni_perf.ordering import by_model, expected_starts

TWO_MODELS = """
import pytest

pytestmark = pytest.mark.omni_bounds(min_speedup=None)

def test_image(omni_perf):
    omni_perf.measure(width=32, height=32, num_inference_steps=2)

@pytest.mark.omni_model("tiny-wan")
def test_video(omni_perf):
    omni_perf.measure(width=32, height=32, num_inference_steps=2)
"""


def test_summary_names_every_model_and_each_speedups_reference(
        standin_pytester: pytest.Pytester) -> None:
    standin_pytester.makepyfile(test_two=TWO_MODELS)
    result = standin_pytester.runpytest_subprocess(
        "-p", "no:cacheprovider", "--omni-rounds=2", "--omni-warmup=0",
        "--omni-profile=eager,cache_dit", "--omni-update-baselines", "-v")
    result.assert_outcomes(passed=4)
    out = result.stdout.str()
    result.stdout.fnmatch_lines([
        "omni-perf: backend *; default model tiny-flux (omni_model marks choose others);*",
        "*omni-perf summary*",
        "models: tiny-flux, tiny-wan; estimate = Harrell-Davis 20% quantile of the rounds *; "
        "speedup = estimate of the profile under 'vs' (measured beside it) / estimate*",
        "test * profile * estimate * median * speedup * vs (estimate) * rounds * cold *",
    ])
    rows = [line for line in result.outlines if line.startswith("test_two.py::")
            and ("eager" in line or "cache_dit" in line) and " s " in line]
    cache_dit = [r for r in rows if re.search(r"\scache_dit\s", r)]
    assert len(cache_dit) == 2, out
    # The speedup's reference: eager's median measured beside this profile, in its row.
    assert all(re.search(r"\d\.\d\dx\s+eager \d+\.\d{3} s", r) for r in cache_dit), out
    # Each model's tests run together: test_image's two profiles, then test_video's.
    order = re.findall(r"^test_two.py::(test_\w+\[\w+\]) PASSED", out, re.M)
    assert order == ["test_image[eager]", "test_image[cache_dit]", "test_video[eager]",
                     "test_video[cache_dit]"]
    # One engine per profile and model: 4 starts, where pytest's own order (by profile
    # across models) would restart eager for each cache_dit test: 6.
    result.stdout.fnmatch_lines(["omni-perf: suite cost: 2 tests x 2 profiles: 4 engine starts"
                                 " (already about 2 fewer than in collection order: each "
                                 "model's tests ran together)*"])


def test_order_and_expected_starts_pure() -> None:
    # pytest's order: profile by profile across models; None stands for a non-perf test.
    uses = {"a": ("flux", "eager", None), "b": ("wan", "eager", None),
            "c": ("flux", "fp8", "eager"), "d": ("wan", "fp8", "eager"),
            "e": ("flux", "compile", "eager"), "f": ("wan", "compile", "eager")}
    items = ["a", "b", "plain", "c", "d", "e", "f"]
    ordered = by_model(items, uses.get)
    assert ordered == ["a", "c", "plain", "e", "b", "d", "f"]
    assert expected_starts([uses[i] for i in items if i in uses]) == 2 + 2 * 2 * 2  # eager again for every profile
    assert expected_starts([uses[i] for i in ordered if i in uses]) == 2 * 3
