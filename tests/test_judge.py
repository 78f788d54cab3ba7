"""The judge on synthetic intervals: which facts fail a test, which stay undecided, which warn."""

from __future__ import annotations

import dataclasses

import pytest

from pytest_omni_perf import judge
from pytest_omni_perf.measure.stats import RatioInterval
from pytest_omni_perf.profiles import Bounds


def interval(estimate: float, low: float, high: float, rounds: int = 10) -> RatioInterval:
    return RatioInterval(estimate, low, high, 0.95, rounds)


SESSION = judge.SessionFacts(profile="cache_dit", baseline="eager",
                             speedup=interval(1.5, 1.45, 1.55), ssim=0.99, ssim_worst=0.97,
                             memory_gib=6.0, memory_ratio=1.0, memory_is_vram=True)


def stored(**changes: object) -> judge.StoredFacts:
    facts = dict(stored_path="baselines/x", ssim=0.999, latency=None, relative_to="eager",
                 memory_gib=6.0, stored_memory_gib=6.0, strict=True,
                 refresh_command="pytest x --omni-update-baselines")
    facts.update(changes)
    return judge.StoredFacts(**facts)  # type: ignore[arg-type]


def test_bound_against_interval_three_ways() -> None:
    assert judge.at_least(interval(1.5, 1.4, 1.6), 1.2) == "pass"
    assert judge.at_least(interval(1.1, 1.0, 1.15), 1.2) == "fail"
    assert judge.at_least(interval(1.2, 1.1, 1.3), 1.2) == "undecided"
    assert judge.at_least(interval(0.5, 0.5, 0.5, rounds=3), 1.2) == "undecided"
    assert judge.at_most(interval(1.0, 0.98, 1.02), 1.05) == "pass"
    assert judge.at_most(interval(1.2, 1.1, 1.3), 1.05) == "fail"
    assert judge.at_most(interval(1.05, 1.0, 1.1), 1.05) == "undecided"


def test_session_gates_pass_fail_and_undecided() -> None:
    passed = judge.session_judgement(Bounds(min_speedup=1.2, min_ssim=0.98), SESSION)
    assert passed == judge.Judgement(passed=passed.passed)
    # A pass is kept, saying so: a busy host turns it undecided later (verdict).
    assert [(p.metric, p.message) for p in passed.passed] == [("speedup", (
        "cache_dit is 1.500x [1.450, 1.550] (95% CI, 10 rounds) against baseline profile "
        "'eager' measured in this session, bound min_speedup=1.2: the whole interval clears "
        "the bound"))]
    failed = judge.session_judgement(Bounds(min_speedup=1.6, min_ssim=0.995), SESSION)
    assert [v.metric for v in failed.violations] == ["speedup", "ssim"]
    assert "1.500x [1.450, 1.550] (95% CI, 10 rounds) against baseline profile 'eager'" \
        in failed.violations[0].message
    assert "(worst frame 0.9700)" in failed.violations[1].message
    open_ = judge.session_judgement(Bounds(min_speedup=1.5), SESSION)
    assert open_.violations == [] and [v.metric for v in open_.undecided] == ["speedup"]
    assert "the interval straddles the bound" in open_.undecided[0].message


def test_vram_bounds_only_on_gpu_memory() -> None:
    bounds = Bounds(max_vram_gib=5.0, max_vram_ratio=0.9)
    assert [v.metric for v in judge.session_judgement(bounds, SESSION).violations] == [
        "vram", "vram_ratio"]
    cpu = dataclasses.replace(SESSION, memory_is_vram=False)
    judged = judge.session_judgement(bounds, cpu)
    assert judged.violations == [] and "VRAM bounds not applied: CPU run" in judged.notes[0]


def test_relative_latency_regression_fails_on_gpu_keys() -> None:
    judged = judge.stored_judgement(Bounds(), stored(latency=interval(1.3, 1.25, 1.35)))
    assert judged.violations[0].metric == "latency_regression"
    assert "relative to 'eager' (both measured alongside) is 1.300x [1.250, 1.350]" \
        in judged.violations[0].message
    assert "refresh it with: pytest x --omni-update-baselines" in judged.violations[0].message


def test_straddling_latency_is_undecided_not_failed() -> None:
    judged = judge.stored_judgement(Bounds(), stored(latency=interval(1.06, 1.01, 1.12)))
    assert judged.violations == [] and judged.undecided[0].metric == "latency_regression"


def test_absolute_cpu_and_unpaired_old_regressions_only_warn() -> None:
    slow = interval(1.3, 1.25, 1.35)
    for facts, why in ((stored(latency=slow, relative_to=None), "reference profile"),
                       (stored(latency=slow, strict=False), "'cpu' key"),
                       (stored(latency=slow, paired_reference=False), "predates intervals")):
        judged = judge.stored_judgement(Bounds(), facts)
        assert judged.violations == [] and judged.undecided == [] and why in judged.notes[0]


def test_reference_regressions_fail_when_asked_on_gpu_keys_only() -> None:
    """--omni-reference-regressions=fail: a reference profile's slowdown fails on a GPU key;
    on the 'cpu' key it still only warns (CPU machines differ)."""
    slow = interval(1.3, 1.25, 1.35)
    judged = judge.stored_judgement(Bounds(), stored(latency=slow, relative_to=None,
                                                     reference_fails=True))
    assert [v.metric for v in judged.violations] == ["latency_regression"]
    warned = judge.stored_judgement(Bounds(), stored(latency=slow, relative_to=None))
    assert warned.violations == [] and "--omni-reference-regressions=fail" in warned.notes[0]
    cpu = judge.stored_judgement(Bounds(), stored(latency=slow, relative_to=None,
                                                  reference_fails=True, strict=False))
    assert cpu.violations == [] and "'cpu' key" in cpu.notes[0]


def test_noise_is_not_a_regression() -> None:
    judged = judge.stored_judgement(Bounds(), stored(latency=interval(1.0, 0.97, 1.03)))
    assert judged == judge.Judgement(passed=judged.passed)
    assert [p.metric for p in judged.passed] == ["latency_regression"]
    assert judged.passed[0].message.endswith("bound +5%: the whole interval clears the bound")
    # A warn-only gate decides nothing: its pass is not kept, as its undecided is not.
    cpu = judge.stored_judgement(Bounds(), stored(latency=interval(1.0, 0.97, 1.03),
                                                  strict=False))
    assert cpu == judge.Judgement()


def test_memory_regression_and_stored_ssim() -> None:
    judged = judge.stored_judgement(Bounds(min_ssim=0.99), stored(ssim=0.9, memory_gib=7.0))
    assert [v.metric for v in judged.violations] == ["stored_ssim", "vram_regression"]
    rss = judge.stored_judgement(Bounds(), stored(memory_gib=7.0, strict=False,
                                                  memory_is_vram=False))
    assert rss.violations == [] and not any("vram_regression" in n for n in rss.notes)
    vram_on_cpu_key = judge.stored_judgement(Bounds(), stored(memory_gib=7.0, strict=False))
    assert vram_on_cpu_key.violations == [] and "'cpu' key" in vram_on_cpu_key.notes[0]


def test_undecided_within_the_spread_says_more_rounds_cannot_help() -> None:
    from pytest_omni_perf.measure.stats import widened

    within = widened(interval(1.15, 1.13, 1.17), 0.075)
    judged = judge.session_judgement(Bounds(min_speedup=1.2), dataclasses.replace(
        SESSION, speedup=within))
    assert judged.undecided and not judged.narrowable
    assert "within the run-to-run spread, which more rounds cannot narrow" in judged.undecided[0].message
    open_ = judge.session_judgement(Bounds(min_speedup=1.2), dataclasses.replace(
        SESSION, speedup=interval(1.3, 1.0, 1.6)))
    assert open_.undecided and open_.narrowable


def test_reference_regressions_option_takes_warn_or_fail(pytester: pytest.Pytester) -> None:
    pytester.makepyfile("def test_a(): pass\n")
    assert pytester.runpytest("--omni-reference-regressions=fail").ret == 0
    result = pytester.runpytest("--omni-reference-regressions=sometimes")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*--omni-reference-regressions: expected one of warn, fail, "
                                 "got 'sometimes'*"])
