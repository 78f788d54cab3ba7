"""Gates fail the test (not the session) through real pytest runs, with a stand-in engine."""

from __future__ import annotations

import json

import pytest

TEST_FILE = """
def test_image(omni_perf):
    result = omni_perf.measure(width=32, height=32, num_inference_steps=2)
    assert result.median_s > 0
"""
XDIST = [[], ["-n", "2"]]


def run(pytester: pytest.Pytester, *args: str) -> pytest.RunResult:
    return pytester.runpytest_subprocess("-p", "no:cacheprovider", "--omni-rounds=6",
                                         "--omni-warmup=1", *args)


@pytest.mark.parametrize("xdist", XDIST, ids=["serial", "xdist"])
def test_missing_baseline_fails_with_the_command(standin_pytester: pytest.Pytester,
                                                 xdist: list[str]) -> None:
    standin_pytester.makepyfile(TEST_FILE)
    result = run(standin_pytester, "--omni-profile=eager,cache_dit", *xdist)
    result.assert_outcomes(failed=2)
    result.stdout.fnmatch_lines([
        "*no stored baseline for test_missing_baseline_fails_with_the_command.py::test_image"
        "?eager? *create it with: *pytest *--omni-profile=eager --omni-update-baselines*",
    ])


def test_printed_command_keeps_the_baseline_folder(standin_pytester: pytest.Pytester) -> None:
    """A newcomer ran the printed command as printed: without --omni-baseline-dir it wrote to
    ./baselines and the next run still failed. Running exactly what is printed must make
    the next run find its baseline."""
    import shlex

    standin_pytester.makepyfile(TEST_FILE)
    failed = run(standin_pytester, "--omni-profile=eager", "--omni-baseline-dir=bl2")
    failed.assert_outcomes(failed=1)
    line = next(text for text in failed.stdout.lines if "create it with: " in text)
    command = shlex.split(line.split("create it with: ", 1)[1])
    assert "--omni-baseline-dir=bl2" in command
    # "pytest ..." or ".venv/bin/python -m pytest ..." (see state.pytest_launcher)
    run(standin_pytester, *command[command.index("pytest") + 1:]).assert_outcomes(passed=1)
    run(standin_pytester, "--omni-profile=eager", "--omni-baseline-dir=bl2").assert_outcomes(
        passed=1)


@pytest.mark.parametrize("xdist", XDIST, ids=["serial", "xdist"])
def test_update_then_compare_passes(standin_pytester: pytest.Pytester, xdist: list[str],
                                    monkeypatch: pytest.MonkeyPatch) -> None:
    standin_pytester.makepyfile(TEST_FILE)
    monkeypatch.setenv("STANDIN_DELAY_CACHE_DIT", "0.01")
    first = run(standin_pytester, "--omni-profile=eager,cache_dit", "--omni-update-baselines",
                *xdist)
    first.assert_outcomes(passed=2)
    assert list((standin_pytester.path / "baselines" / "cpu").iterdir())
    second = run(standin_pytester, "--omni-profile=eager,cache_dit", *xdist)
    second.assert_outcomes(passed=2)
    second.stdout.fnmatch_lines(["*omni-perf summary*", "*test_image*cache_dit*ok*"])


def test_slower_profile_fails_speedup_gate(standin_pytester: pytest.Pytester,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    standin_pytester.makepyfile(TEST_FILE)
    monkeypatch.setenv("STANDIN_DELAY_CACHE_DIT", "0.03")  # 1.5x slower than eager's 0.02 s
    run(standin_pytester, "--omni-profile=cache_dit", "--omni-update-baselines")
    result = run(standin_pytester, "--omni-profile=cache_dit")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines([
        # 1.5x slower sleeps read 0.65-0.72x (sleep overshoot on a loaded host).
        # The spread says where it came from: a newcomer read the CPU default as measured.
        "*speedup: cache_dit is 0.*x ?0.*, 0.*? (95% CI, 6 rounds, run-to-run spread 2.0% "
        "from the built-in CPU default, not measured here) against baseline profile "
        "'eager' measured in this session, bound min_speedup=1.2: the whole interval is below "
        "the bound, the optimization does not pay off here*"])


def test_broken_quality_fails_ssim_gate(standin_pytester: pytest.Pytester,
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    standin_pytester.makepyfile(TEST_FILE)
    monkeypatch.setenv("STANDIN_DELAY_CACHE_DIT", "0.005")
    monkeypatch.setenv("STANDIN_NOISE_CACHE_DIT", "80")
    result = run(standin_pytester, "--omni-profile=cache_dit", "--omni-update-baselines")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*ssim: output SSIM 0.* against the output of baseline profile"
                                 " 'eager'*below the bound min_ssim=0.9: quality broke; the "
                                 "bound is the min_ssim of profile 'cache_dit' in the built-in "
                                 "pytest_omni_perf/profiles.toml; to override it for this "
                                 "test, mark it @pytest.mark.omni_bounds(profile='cache_dit', "
                                 "min_ssim=...)"])


def test_failed_ssim_names_the_marker_that_set_the_bound(
        standin_pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> None:
    """A reader of the CI log must tell a test's own bound from the profile's."""
    standin_pytester.makepyfile("import pytest\n\n"
                                "@pytest.mark.omni_bounds(profile='cache_dit', min_ssim=0.95)\n"
                                + TEST_FILE.lstrip())
    monkeypatch.setenv("STANDIN_DELAY_CACHE_DIT", "0.005")
    monkeypatch.setenv("STANDIN_NOISE_CACHE_DIT", "80")
    result = run(standin_pytester, "--omni-profile=cache_dit", "--omni-update-baselines")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*below the bound min_ssim=0.95: quality broke; the bound is "
                                 "set by @pytest.mark.omni_bounds(profile='cache_dit', "
                                 "min_ssim=0.95) on this test, its class or its module: change "
                                 "it there"])


def test_a_pass_under_a_lowered_ssim_bound_says_it_was_lowered(
        standin_pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> None:
    """A newcomer read tiny-wan's vae_tiling at SSIM 0.50 marked ``ok``: the test had
    lowered vae_tiling's own 0.70 to 0.4, and nothing said so."""
    standin_pytester.makepyfile("import pytest\n\n"
                                "@pytest.mark.omni_bounds(profile='cache_dit', min_ssim=0.01)\n"
                                + TEST_FILE.lstrip())
    monkeypatch.setenv("STANDIN_DELAY_CACHE_DIT", "0.005")
    monkeypatch.setenv("STANDIN_NOISE_CACHE_DIT", "80")
    result = run(standin_pytester, "--omni-profile=cache_dit", "--omni-update-baselines",
                 "--omni-report-json=r.json")
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines([
        "note [[]cache_dit[]] *::test_image[[]cache_dit[]]: output SSIM 0.* passes "
        "min_ssim=0.01 only because the test lowered the min_ssim of profile 'cache_dit' from 0.9 "
        "(the bound is set by @pytest.mark.omni_bounds(profile='cache_dit', min_ssim=0.01) on "
        "this test, its class or its module: change it there)"])
    (only,) = json.loads((standin_pytester.path / "r.json").read_text())["results"]
    assert only["verdict"] == "pass" and only["quality"]["ssim_mean"] < 0.9
    # Without the noise the SSIM clears the profile's own bound: no such note.
    monkeypatch.setenv("STANDIN_NOISE_CACHE_DIT", "0")
    quiet = run(standin_pytester, "--omni-profile=cache_dit", "--omni-update-baselines")
    quiet.assert_outcomes(passed=1)
    assert "only because the test lowered" not in quiet.stdout.str()


def test_tampered_stored_image_fails(standin_pytester: pytest.Pytester,
                                     monkeypatch: pytest.MonkeyPatch) -> None:
    standin_pytester.makepyfile(TEST_FILE)
    run(standin_pytester, "--omni-profile=eager", "--omni-update-baselines").assert_outcomes(
        passed=1)
    monkeypatch.setenv("STANDIN_NOISE_EAGER", "80")  # the output drifts from the stored image
    result = run(standin_pytester, "--omni-profile=eager")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*stored_ssim: output SSIM 0.* against the stored baseline"
                                 " image in *below min_ssim=0.98; the bound is the min_ssim of "
                                 "profile 'eager' in the built-in *; to override it for this "
                                 "test, mark it @pytest.mark.omni_bounds(profile='eager', "
                                 "min_ssim=...); if the change is intended, refresh it with: "
                                 "*pytest*"])


def test_noise_alone_passes(standin_pytester: pytest.Pytester) -> None:
    """Same profile twice against its own stored baseline: no regression is reported."""
    standin_pytester.makepyfile(TEST_FILE)
    run(standin_pytester, "--omni-profile=eager", "--omni-update-baselines")
    for _ in range(2):
        run(standin_pytester, "--omni-profile=eager").assert_outcomes(passed=1)


def test_unsupported_profile_skips_with_reason(standin_pytester: pytest.Pytester,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    standin_pytester.makepyfile(TEST_FILE)
    monkeypatch.setenv("STANDIN_UNSUPPORTED_TEA_CACHE", "1")
    result = run(standin_pytester, "--omni-profile=tea_cache", "-rs", "--omni-update-baselines")
    result.assert_outcomes(skipped=1)
    # Located at the test (as a skip mark would be), not at the plugin's fixture.
    result.stdout.fnmatch_lines(["SKIPPED [[]1[]] test_unsupported_profile_skips_with_reason.py:*"
                                 ": stand-in: tea_cache is unsupported on purpose*"])
    assert "plugin.py" not in result.stdout.str()


def test_results_reach_the_properties(standin_pytester: pytest.Pytester) -> None:
    standin_pytester.makepyfile(TEST_FILE)
    run(standin_pytester, "--omni-profile=cache_dit", "--omni-update-baselines",
        "--junitxml=out.xml")
    xml = (standin_pytester.path / "out.xml").read_text()
    assert 'name="omni_perf"' in xml
    stored = standin_pytester.path / "baselines" / "cpu"
    metrics = list(stored.rglob("metrics.json"))
    assert {json.loads(p.read_text())["profile"] for p in metrics} == {"cache_dit"}


def test_profile_on_its_bound_is_inconclusive_not_failed(
        standin_pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> None:
    """A true speedup of exactly the bound with noisy rounds: the interval straddles it at
    the budget, so the test is reported INCONCLUSIVE (passes under the default 'warn').

    The jitter factors are seeded per profile (tests/standin.py), so every run draws the
    same rounds: the interval is wide and straddles 1.2 by design, not by luck."""
    standin_pytester.makepyfile(TEST_FILE)
    monkeypatch.setenv("STANDIN_DELAY_EAGER", "0.072")
    monkeypatch.setenv("STANDIN_DELAY_CACHE_DIT", "0.06")  # 1.2x, min_speedup is 1.2
    monkeypatch.setenv("STANDIN_JITTER_EAGER", "3")  # a round takes 1x to 4x its time
    monkeypatch.setenv("STANDIN_JITTER_CACHE_DIT", "3")
    args = ("--omni-profile=cache_dit", "--omni-update-baselines", "--omni-max-rounds=6",
            "--omni-report-json=r.json", "-v")
    result = run(standin_pytester, *args)
    # The test passed and is counted once, as inconclusive: not a pytest warning as well.
    result.assert_outcomes(warnings=0)
    assert result.ret == 0 and result.parseoutcomes().get("inconclusive") == 1
    result.stdout.fnmatch_lines([
        "*test_image?cache_dit? INCONCLUSIVE*",
        "*test_image*cache_dit*INCONCLUSIVE*",
        # why, last before pytest's own summary
        "*omni-perf inconclusive (not failed: --omni-inconclusive=warn)*",
        "INCONCLUSIVE *::test_image?cache_dit?: gate(s) inconclusive at the round budget:",
        "  [[]cache_dit[]] speedup: cache_dit is *x ?*? (95% CI, 6 rounds, run-to-run spread "
        "2.0% from the built-in CPU default, not measured here) against baseline profile "
        "'eager'*bound min_speedup=1.2: the interval "
        "straddles the bound*",
        "*1 inconclusive*"])
    assert "warnings summary" not in result.stdout.str()
    report = json.loads((standin_pytester.path / "r.json").read_text())
    (only,) = report["results"]
    assert only["verdict"] == "inconclusive" and only["undecided"][0]["metric"] == "speedup"
    assert only["measurement"]["stopped_by"] == "max_rounds"
    assert report["totals"]["inconclusive"] == 1
    failing = run(standin_pytester, *args, "--omni-inconclusive=fail")
    failing.assert_outcomes(failed=1)
    failing.stdout.fnmatch_lines(["*inconclusive at the round budget (--omni-inconclusive=fail)*"])


@pytest.mark.parametrize("xdist", XDIST, ids=["serial", "xdist"])
def test_three_rounds_are_not_an_inert_gate(standin_pytester: pytest.Pytester,
                                            monkeypatch: pytest.MonkeyPatch,
                                            xdist: list[str]) -> None:
    """--omni-rounds=3 adapts (to 8 rounds, where an interval exists) and fails a 2.7x
    slowdown; held at 3 rounds it says that no interval exists, instead of passing."""
    standin_pytester.makepyfile(TEST_FILE)
    monkeypatch.setenv("STANDIN_DELAY_CACHE_DIT", "0.054")  # 2.7x slower than eager
    adaptive = run(standin_pytester, "--omni-profile=cache_dit", "--omni-update-baselines",
                   "--omni-rounds=3", "--omni-report-json=r.json", *xdist)
    adaptive.assert_outcomes(failed=1)
    adaptive.stdout.fnmatch_lines(["*cache_dit is 0.*x ?* (95% CI, 8 rounds, run-to-run*whole "
                                   "interval "
                                   "is below the bound*"])
    held = run(standin_pytester, "--omni-profile=cache_dit", "--omni-update-baselines",
               "--omni-rounds=3", "--omni-max-rounds=3", *xdist)
    held.assert_outcomes(warnings=0)
    assert held.ret == 0 and held.parseoutcomes().get("inconclusive") == 1
    held.stdout.fnmatch_lines(["*cache_dit is 0.*x (no interval: 3 rounds)*3 rounds are too few "
                               "for an interval (a verdict needs at least 5)*"])


def test_clear_speedup_is_decided_at_the_first_look(standin_pytester: pytest.Pytester,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """A quiet machine pays only the first rounds: a 2x speedup against a 1.2 bound."""
    standin_pytester.makepyfile(TEST_FILE)
    monkeypatch.setenv("STANDIN_DELAY_EAGER", "0.04")
    result = run(standin_pytester, "--omni-profile=cache_dit", "--omni-update-baselines",
                 "--omni-report-json=r.json")
    result.assert_outcomes(passed=1)
    (only,) = json.loads((standin_pytester.path / "r.json").read_text())["results"]
    assert only["measurement"]["rounds"] == 6 and only["measurement"]["stopped_by"] == "decided"
    assert only["speedup_interval"]["low"] >= 1.2 and only["verdict"] == "pass"
