"""Options, ini keys and markers as users meet them: pytester runs and the pure evaluators."""

from __future__ import annotations

from pathlib import Path

import pytest

from pytest_omni_perf.hardware import GpuInfo, HardwareInfo, hardware_key
from pytest_omni_perf.markers import skip_reason
from pytest_omni_perf.profiles import Requirements

FAKE_H100 = """
from pytest_omni_perf.hardware import GpuInfo, HardwareInfo

def pytest_omni_perf_probe_hardware(config):
    gpus = tuple(GpuInfo(i, "NVIDIA H100 80GB HBM3", (9, 0), 79.2) for i in range({n}))
    return HardwareInfo(gpus=gpus, driver="580.1", note="fake")
"""

MARKED = """
import pytest

@pytest.mark.requires_gpus(2)
def test_two(): pass

@pytest.mark.requires_sm("8.9")
def test_fp8(): pass

@pytest.mark.requires_vram(100)
def test_big(): pass

def test_plain(): pass
"""


def test_cpu_skips_with_needed_and_found(pytester: pytest.Pytester) -> None:
    pytester.makeconftest(FAKE_H100.format(n=0))
    pytester.makepyfile(MARKED)
    result = pytester.runpytest("-rs")
    result.assert_outcomes(passed=1, skipped=3)
    # Located at each test (pytest's own location for skip marks), not at the plugin.
    result.stdout.fnmatch_lines_random([
        "SKIPPED [[]1[]] test_cpu_skips_with_needed_and_found.py:3: requires 2 GPU(s), "
        "found none (fake)",
        "SKIPPED [[]1[]] test_cpu_skips_with_needed_and_found.py:6: requires a GPU with "
        "SM >= 8.9, found no GPU (fake)",
        "SKIPPED [[]1[]] test_cpu_skips_with_needed_and_found.py:9: requires 100 GiB of GPU "
        "memory, found no GPU (fake)",
    ])


def test_gpu_machine_unskips(pytester: pytest.Pytester) -> None:
    pytester.makeconftest(FAKE_H100.format(n=2))
    pytester.makepyfile(MARKED)
    result = pytester.runpytest("-rs")
    result.assert_outcomes(passed=3, skipped=1)
    result.stdout.fnmatch_lines(["*requires 100 GiB of GPU memory, found 79.2 GiB"])


def test_real_probe_on_this_machine_says_no_gpu(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(MARKED)
    result = pytester.runpytest("-rs")
    result.stdout.fnmatch_lines(["omni-perf: no GPU (*); hardware key 'cpu'"])
    result.stdout.fnmatch_lines(["*requires 2 GPU(s), found none*"])
    if not any(Path("/dev").glob("nvidia[0-9]*")):
        # No GPU device at all: installing nvidia-ml-py would not help, so no such hint.
        result.stdout.fnmatch_lines(["*requires 2 GPU(s), found none (no NVIDIA GPU device in "
                                     "/dev)"])
        assert "nvidia-ml-py" not in result.stdout.str()


def test_no_gpu_note_is_true_to_the_machine(tmp_path: Path) -> None:
    from pytest_omni_perf.hardware import no_nvml_note

    assert no_nvml_note("nvidia-ml-py not installed", tmp_path) == \
        f"no NVIDIA GPU device in {tmp_path}"
    (tmp_path / "nvidia0").touch()
    assert no_nvml_note("nvidia-ml-py not installed", tmp_path) == "nvidia-ml-py not installed"


def test_skips_fold_one_line_per_test_and_reason(pytester: pytest.Pytester) -> None:
    # Two tests x 5 profiles: usp2 and usp2_ring2 need GPUs (none here), omni_profiles
    # leaves three profiles out of test_b. pytest -rs folds identical (location, reason);
    # skips added as marks at collection it folds per file (pytest's _folded_skips).
    pytester.makeconftest(FAKE_H100.format(n=0))
    pytester.makepyfile("""
import pytest

def test_a(omni_profile): pass

@pytest.mark.omni_profiles("eager", "usp2")
def test_b(omni_profile): pass
""")
    result = pytester.runpytest("-rs", "--omni-profile=eager,usp2,usp2_ring2,ring2,tp2")
    result.assert_outcomes(passed=2, skipped=8)
    skipped = [line for line in result.outlines if line.startswith("SKIPPED")]
    assert sorted(skipped) == sorted([
        "SKIPPED [3] test_skips_fold_one_line_per_test_and_reason.py: requires 2 GPU(s), "
        "found none (fake)",
        "SKIPPED [1] test_skips_fold_one_line_per_test_and_reason.py: requires 4 GPU(s), "
        "found none (fake)",
        "SKIPPED [3] test_skips_fold_one_line_per_test_and_reason.py:5: "
        "omni_profiles(eager, usp2) leaves this profile out",
        "SKIPPED [1] test_skips_fold_one_line_per_test_and_reason.py:5: requires 2 GPU(s), "
        "found none (fake)",
    ]), "\n".join(skipped)


def test_cards_marker_selects_like_vllm_omni_ci(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(MARKED + """
def test_profile(omni_profile): pass
""")
    result = pytester.runpytest("-m", "cards_2", "--strict-markers", "--collect-only", "-q",
                                "--omni-profile=eager,usp2,usp2_ring2")
    result.stdout.fnmatch_lines(["*::test_two", "*::test_profile[[]usp2[]]", "*2/7 tests collected (5 deselected)*"])
    result = pytester.runpytest("-m", "cards_4", "--collect-only", "-q",
                                "--omni-profile=eager,usp2,usp2_ring2")
    result.stdout.fnmatch_lines(["*::test_profile[[]usp2_ring2[]]"])


def test_profile_requirements_apply_as_markers(pytester: pytest.Pytester) -> None:
    pytester.makeconftest(FAKE_H100.format(n=0))
    pytester.makepyfile("def test_p(omni_profile):\n    assert omni_profile.name\n")
    result = pytester.runpytest("-rs", "--omni-profile=eager,fp8,usp2")
    result.assert_outcomes(passed=1, skipped=2)
    result.stdout.fnmatch_lines_random([
        "SKIPPED ?1? test_profile_requirements_apply_as_markers.py: requires a"
        " GPU with SM >= 8.9, found no GPU (fake)",
        "SKIPPED ?1? test_profile_requirements_apply_as_markers.py: requires 2"
        " GPU(s), found none (fake)"])


@pytest.mark.parametrize(("mark", "message"), [
    ("requires_gpus('two')", "requires_gpus(n) needs a whole number n from 1 to 1024, got 'two'"),
    ("requires_gpus(0)", "requires_gpus(n) needs a whole number n from 1 to 1024, got 0"),
    ("requires_gpus(10**9)", "requires_gpus(n) needs a whole number n from 1 to 1024, got 1000000000"),
    ("requires_sm(10**9)", "requires_sm: SM 100000000.0 is not a compute capability*"),
    ("requires_vram(float('nan'))", "requires_vram(gib) needs a finite number of GiB > 0, got nan"),
    ("requires_vram(float('inf'))", "requires_vram(gib) needs a finite number of GiB > 0, got inf"),
    ("requires_gpus(1, 2)", "requires_gpus takes exactly one positional argument"),
    ("requires_sm('hopper')", "requires_sm: SM must be like 89 or '8.9'*"),
    ("requires_vram(-1)", "requires_vram(gib) needs a finite number of GiB > 0, got -1"),
    ("omni_profiles('nope')", "omni_profiles: unknown profile(s) nope (known: *"),
    ("omni_bounds(min_sped=1)", "*omni_bounds: unknown field(s) min_sped*"),
    ("omni_bounds(min_ssim='high')", "*omni_bounds.min_ssim: expected a finite number*"),
    ("omni_bounds(min_speedup=float('nan'))",
     "test_*::test_x: @pytest.mark.omni_bounds.min_speedup: expected a finite number > 0,"
     " got nan"),
    ("omni_bounds(max_regression=float('inf'))",
     "*omni_bounds.max_regression: expected a finite number >= 0, got inf"),
    ("omni_bounds(min_ssim=1.5)", "*omni_bounds.min_ssim: expected a finite number in [[]0, 1[]]*"),
    ("omni_bounds(max_vram_gib=0)", "*omni_bounds.max_vram_gib: expected a finite number > 0*"),
    ("omni_bounds(profile='cach_dit', min_speedup=100)",
     "*omni_bounds(profile=...): unknown profile(s) cach_dit (did you mean 'cache_dit'?)*"),
    ("omni_profiles('cach_dit')", "*omni_profiles: unknown profile(s) cach_dit (did you mean*"),
    ("omni_model(3)", "omni_model(id_or_path) needs a non-empty string, got 3"),
])
def test_bad_marker_arguments_fail_collection(pytester: pytest.Pytester, mark: str,
                                              message: str) -> None:
    pytester.makepyfile(f"import pytest\n@pytest.mark.{mark}\ndef test_x(): pass\n")
    result = pytester.runpytest()
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(["*ERROR collecting*", f"*{message}*"])
    assert "Traceback" not in result.stdout.str()
    assert "During handling" not in result.stdout.str()


def test_every_bad_marker_of_the_run_in_one_collection_error(pytester: pytest.Pytester) -> None:
    # Two files; the first bad mark of a module must not hide the later ones, nor the
    # other file's; a module-wide mark is one line naming every test it applies to.
    pytester.makepyfile(test_one="""
import pytest
pytestmark = pytest.mark.omni_bounds(min_speedup=float("nan"))

@pytest.mark.requires_gpus("two")
def test_a(omni_profile): pass

def test_b(): pass
""", test_two="""
import pytest

@pytest.mark.omni_bounds(profile="cach_dit", min_speedup=100)
def test_c(omni_profile): pass

@pytest.mark.requires_vram(float("inf"))
def test_d(): pass

def test_fine(): pass
""")
    result = pytester.runpytest("--omni-profile=eager,cache_dit")
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines([
        "*ERROR collecting*",
        "pytest-omni-perf: 4 bad marker argument(s) in 4 test(s):",
        "  test_one.py::test_a: @pytest.mark.requires_gpus(n) needs a whole number *, got 'two'",
        "  test_one.py::test_a, test_one.py::test_b: @pytest.mark.omni_bounds.min_speedup: "
        "expected a finite number > 0*got nan",
        "  test_two.py::test_c: @pytest.mark.omni_bounds(profile=...): unknown profile(s) "
        "cach_dit (did you mean 'cache_dit'?)*",
        "  test_two.py::test_d: @pytest.mark.requires_vram(gib) needs a finite number*got inf",
        "*Interrupted: 1 error during collection*",
    ])
    out = result.stdout.str()
    assert "Traceback" not in out and "During handling" not in out
    # Under xdist every worker finds the same problems; the user reads them once.
    # xdist runs what collected (as it does beside a module that fails to import): the
    # tests with bad marks do not run, and the workers' identical errors show once.
    result = pytester.runpytest("-n", "2", "-p", "no:cacheprovider")
    result.assert_outcomes(passed=1, errors=1)
    assert result.stdout.str().count("bad marker argument(s)") == 2  # section + short summary


def test_bad_marker_on_a_deselected_test_stops_nothing(pytester: pytest.Pytester) -> None:
    """-k and -m leave a test out before its marks are read, as pytest's skipif does."""
    pytester.makepyfile("""
import pytest

@pytest.mark.requires_gpus("two")
def test_left_out(): pass

def test_kept(): pass
""")
    result = pytester.runpytest("-k", "kept")
    result.assert_outcomes(passed=1, deselected=1)
    result = pytester.runpytest("-k", "left_out")
    result.assert_outcomes(errors=1, deselected=1)
    result.stdout.fnmatch_lines(["*test_left_out: @pytest.mark.requires_gpus(n) needs*"])


def test_omni_profiles_marker_limits_parametrization(pytester: pytest.Pytester) -> None:
    pytester.makepyfile("""
import pytest

@pytest.mark.omni_profiles("cache_dit", "compile")
def test_p(omni_profile): pass
""")
    result = pytester.runpytest("--collect-only", "-q")
    result.stdout.fnmatch_lines(["*test_p[[]cache_dit[]]", "*test_p[[]compile[]]"])
    result = pytester.runpytest("-rs", "--omni-profile=eager,compile")
    result.assert_outcomes(passed=1, skipped=1)
    result.stdout.fnmatch_lines(["*omni_profiles(cache_dit, compile) leaves this profile out"])


def test_unknown_profile_is_a_usage_error(pytester: pytest.Pytester) -> None:
    result = pytester.runpytest("--omni-profile=fp9")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["ERROR: --omni-profile: unknown profile(s) fp9 (did you mean "
                                 "'fp8'*?). Known profiles: *cache_dit*eager*fp8*"])
    assert "Traceback" not in result.stdout.str() + result.stderr.str()


def test_unknown_profile_suggests_the_closest_names(pytester: pytest.Pytester) -> None:
    """A typo names the profiles it is closest to, before the full list."""
    result = pytester.runpytest("--omni-profile=eager,cache_ditt")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["ERROR: --omni-profile: unknown profile(s) cache_ditt "
                                 "(did you mean 'cache_dit'*?). Known profiles: *"])
    two = pytester.runpytest("--omni-profile=fp9,cach_dit")
    two.stderr.fnmatch_lines(["ERROR: --omni-profile: unknown profile(s) fp9 (did you mean "
                              "'fp8'*?), cach_dit (did you mean 'cache_dit'*?). Known *"])
    nothing_close = pytester.runpytest("--omni-profile=zzzzzz")
    nothing_close.stderr.fnmatch_lines(["ERROR: --omni-profile: unknown profile(s) zzzzzz. "
                                        "Known profiles: *"])


@pytest.mark.parametrize(("args", "message"), [
    (["--omni-rounds=1"], "*argument --omni-rounds: expected a whole number >= 2, got 1"),
    (["--omni-rounds=many"], "*argument --omni-rounds: expected a whole number >= 2, got 'many'"),
    (["--omni-backend=trt"], "*argument --omni-backend: expected one of auto, diffusers, omni, "
                             "omni-server, got 'trt'"),
    (["--omni-request-timeout=0"], "*argument --omni-request-timeout: expected a finite number "
                                   "> 0, got 0.0"),
])
def test_bad_option_values(pytester: pytest.Pytester, args: list[str], message: str) -> None:
    result = pytester.runpytest(*args)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([message])
    assert "Traceback" not in result.stdout.str() + result.stderr.str()


def test_ini_keys_are_validated_too(pytester: pytest.Pytester) -> None:
    pytester.makeini("[pytest]\nomni_rounds = 0\n")
    result = pytester.runpytest()
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["ERROR: ini omni_rounds (tox.ini): expected a whole number >= 2, "
                                 "got 0"])


def test_ini_errors_name_dash_o_when_the_value_came_from_it(pytester: pytest.Pytester) -> None:
    # A newcomer's `-o omni_rounds=0` was reported as coming from the ini file, which held
    # no such key: the message must point at what to change.
    pytester.makeini("[pytest]\nomni_rounds = 5\n")
    result = pytester.runpytest("-o", "omni_rounds=0")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["ERROR: ini omni_rounds (-o omni_rounds=...): expected a whole "
                                 "number >= 2, got 0"])


def test_ini_sets_profiles_and_cli_wins(pytester: pytest.Pytester) -> None:
    pytester.makeini("[pytest]\nomni_profile = compile\n")
    pytester.makepyfile("def test_p(omni_profile): pass\n")
    result = pytester.runpytest("--collect-only", "-q")
    result.stdout.fnmatch_lines(["*test_p[[]compile[]]"])
    result = pytester.runpytest("--collect-only", "-q", "--omni-profile=cache_dit")
    result.stdout.fnmatch_lines(["*test_p[[]cache_dit[]]"])


def test_markers_are_documented(pytester: pytest.Pytester) -> None:
    result = pytester.runpytest("--markers")
    result.stdout.fnmatch_lines_random([
        "@pytest.mark.requires_gpus(n): skip unless at least n CUDA GPUs*",
        "@pytest.mark.requires_sm(sm):*", "@pytest.mark.requires_vram(gib):*",
        "@pytest.mark.omni_model(id_or_path):*", "@pytest.mark.omni_profiles(*names):*",
        "@pytest.mark.omni_bounds(min_speedup=*", "@pytest.mark.cards_2:*",
    ])


def test_fixtures_are_documented(pytester: pytest.Pytester) -> None:
    result = pytester.runpytest("--fixtures")
    result.stdout.fnmatch_lines_random([
        "omni_profile -- *", "*The active optimization ``Profile``*",
        "omni_engine -- *", "*A started engine for (model, profile, backend)*",
        "omni_perf -- *", "*The measuring harness*",
    ])
    # The full docstring (pytest --fixtures -v) says what measure() returns and label=.
    result = pytester.runpytest("--fixtures", "-v")
    result.stdout.fnmatch_lines(["*give each ``label=\"...\"``*",
                                 "*Returns a ``PerfResult``: ``frames`` (HxWx3 uint8)*"])


def test_skip_reason_pure() -> None:
    hw = HardwareInfo(gpus=(GpuInfo(0, "NVIDIA L4", (8, 9), 22.0),), note="nvml")
    assert skip_reason(Requirements(sm=(9, 0)), hw) == \
        "requires SM >= 9.0, found NVIDIA L4 (SM 8.9)"
    assert skip_reason(Requirements(sm=(8, 9), gpus=1), hw) is None
    assert skip_reason(Requirements(gpus=2), hw) == "requires 2 GPU(s), found 1 visible"


def test_hardware_key() -> None:
    assert hardware_key("NVIDIA H100 80GB HBM3") == "nvidia-h100-80gb-hbm3"
    assert HardwareInfo().key == "cpu"


def test_bounds_scoped_to_a_profile() -> None:
    from pytest_omni_perf.markers import bounds_from_marks
    from pytest_omni_perf.profiles import Bounds

    marks = [pytest.mark.omni_bounds(profile="fewer_steps", min_speedup=1.3).mark,
             pytest.mark.omni_bounds(min_ssim=0.5).mark]
    assert bounds_from_marks(marks, Bounds(min_speedup=1.6), "fewer_steps") == Bounds(
        min_speedup=1.3, min_ssim=0.5)
    assert bounds_from_marks(marks, Bounds(min_speedup=1.6), "cache_dit") == Bounds(
        min_speedup=1.6, min_ssim=0.5)
    with pytest.raises(ValueError, match=r"profile=\.\.\.\) takes a profile name"):
        bounds_from_marks([pytest.mark.omni_bounds(profile=3).mark], Bounds(), "x")


def test_bound_origin_names_the_mark_that_wins_else_the_profile() -> None:
    """The failure message says where a bound came from: the mark bounds_from_marks lets win
    (closest first, scoped to this profile or unscoped), else the profile's file."""
    from pytest_omni_perf.markers import bound_origin
    from pytest_omni_perf.profiles import Profile

    builtin = Profile(name="vae_tiling", options={})
    mine = Profile(name="vae_tiling", options={}, source="/p/mine.toml")
    other = pytest.mark.omni_bounds(profile="compile", min_ssim=0.1).mark
    speed = pytest.mark.omni_bounds(min_speedup=1.1).mark
    assert bound_origin([other, speed], builtin, "min_ssim") == (
        "the bound is the min_ssim of profile 'vae_tiling' in the built-in "
        "pytest_omni_perf/profiles.toml; to override it for this test, mark it "
        "@pytest.mark.omni_bounds(profile='vae_tiling', min_ssim=...)")
    assert "in /p/mine.toml (omni_profile_files);" in bound_origin([], mine, "min_ssim")
    closest = pytest.mark.omni_bounds(profile=("vae_tiling", "eager"), min_ssim=0.4).mark
    farther = pytest.mark.omni_bounds(min_ssim=0.9).mark
    assert bound_origin([other, closest, farther], builtin, "min_ssim") == (
        "the bound is set by @pytest.mark.omni_bounds(profile=('vae_tiling', 'eager'), "
        "min_ssim=0.4) on this test, its class or its module: change it there")
    assert "omni_bounds(min_ssim=0.9)" in bound_origin([farther, closest], builtin, "min_ssim")
