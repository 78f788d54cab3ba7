"""Profiles as data: the built-ins, user files, their validation and both spellings."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from pytest_omni_perf import canonical
from pytest_omni_perf.profiles import (
    BOUND_FIELDS, Bounds, ProfileError, load_all, load_builtin, load_file, parse_sm,
)

# Every method of the seed guide, its recipes A-G, and the pairs users ask for.
GUIDE_PROFILES = {
    "eager", "compile", "fp8", "gguf", "cpu_offload", "layerwise_offload", "vae_slicing",
    "vae_tiling", "tea_cache", "cache_dit", "cache_dit_taylorseer", "cache_dit_scm",
    "fewer_steps", "usp2", "ring2", "usp2_ring2", "cfg2", "tp2", "vae_patch2", "hsdp2",
    "expert_parallel", "fp8_cachedit", "compile_cachedit", "cfg2_usp2_fp8", "recipe_a",
    "recipe_b", "recipe_c", "recipe_d", "recipe_e", "recipe_f", "recipe_g",
}


def test_builtins_cover_the_guide() -> None:
    profiles = load_builtin()
    assert GUIDE_PROFILES <= set(profiles)
    for profile in profiles.values():
        assert profile.description, profile.name
        assert profile.baseline is None or profile.baseline in profiles


@pytest.mark.parametrize(("name", "kwargs", "argv"), [
    ("usp2", {"enforce_eager": True, "ulysses_degree": 2},
     ["--enforce-eager", "--usp", "2"]),
    ("ring2", {"enforce_eager": True, "ring_degree": 2},
     ["--enforce-eager", "--ring", "2"]),
    ("compile", {"enforce_eager": False}, []),
    ("fp8", {"enforce_eager": True, "quantization_config": "fp8"},
     ["--enforce-eager", "--quantization", "fp8"]),
    ("tea_cache", {"enforce_eager": True, "cache_backend": "tea_cache",
                   "cache_config": {"rel_l1_thresh": 0.2}},
     ["--enforce-eager", "--cache-backend", "tea_cache", "--cache-config",
      '{"rel_l1_thresh":0.2}']),
    ("recipe_c", {"enforce_eager": True, "enable_layerwise_offload": True,
                  "vae_use_slicing": True, "vae_use_tiling": True},
     ["--enforce-eager", "--enable-layerwise-offload", "--vae-use-slicing", "--vae-use-tiling"]),
    ("recipe_d", {"enforce_eager": False, "quantization_config": "fp8", "ulysses_degree": 4,
                  "ring_degree": 2, "vae_patch_parallel_size": 8},
     ["--usp", "4", "--ring", "2", "--vae-patch-parallel-size", "8", "--quantization", "fp8"]),
])
def test_offline_and_online_spellings(name: str, kwargs: dict[str, object], argv: list[str]
                                      ) -> None:
    profile = load_builtin()[name]
    assert profile.omni_kwargs() == kwargs
    assert sorted(profile.serve_args()) == sorted(argv)
    # Flags keep their values next to them.
    got = profile.serve_args()
    for flag, value in zip(argv, argv[1:]):
        if flag.startswith("--") and not value.startswith("--"):
            assert got[got.index(flag) + 1] == value


def test_requirements_follow_parallel_degrees() -> None:
    profiles = load_builtin()
    assert profiles["usp2"].requires.gpus == 2
    assert profiles["usp2_ring2"].requires.gpus == 4
    assert profiles["recipe_d"].requires.gpus == 8
    assert profiles["fp8"].requires.sm == (8, 9)
    assert profiles["eager"].requires.gpus == 0


@pytest.mark.parametrize(("value", "expected"), [
    (89, (8, 9)), ("8.9", (8, 9)), (9.0, (9, 0)), ("90", (9, 0)), ((12, 0), (12, 0)),
])
def test_parse_sm(value: object, expected: tuple[int, int]) -> None:
    assert parse_sm(value) == expected


@pytest.mark.parametrize("value", ["eight", 8, True, "8.", (8,), None])
def test_parse_sm_rejects(value: object) -> None:
    with pytest.raises(ValueError, match="SM must be like 89 or '8.9'"):
        parse_sm(value)


@pytest.mark.parametrize(("body", "message"), [
    ('[profiles.x]\noptions = { ulysses_degre = 2 }',
     r"profile 'x'\.options\.ulysses_degre: unknown option"),
    ('[profiles.x]\noptions = { ulysses_degree = "2" }',
     r"profile 'x'\.options\.ulysses_degree: expected int, got str '2'"),
    ('[profiles.x]\noptions = { enforce_eager = 1 }',
     r"options\.enforce_eager: expected true/false, got int 1"),
    ('[profiles.x]\nbounds = { min_ssim = 2 }',
     r"profile 'x'\.bounds\.min_ssim: expected a finite number in \[0, 1\], got 2$"),
    ('[profiles.x]\nbounds = { min_speedup = nan }',
     r"profile 'x'\.bounds\.min_speedup: expected a finite number > 0, got nan$"),
    ('[profiles.x]\nbounds = { max_regression = inf }',
     r"profile 'x'\.bounds\.max_regression: expected a finite number >= 0, got inf$"),
    ('[profiles.x]\nbounds = { max_vram_gib = -inf }', r"bounds\.max_vram_gib: .* got -inf$"),
    ('[profiles.x]\nbounds = { max_vram_ratio = "0.9" }', r"max_vram_ratio: .* got str '0\.9'$"),
    ('[profiles.x]\nbounds = { min_speedup = true }', r"min_speedup: .* got bool True$"),
    ('[profiles.x]\nbounds = { min_speedup = 0 }', r"min_speedup: expected a finite number > 0"),
    ('[defaults.bounds]\nmin_ssim = nan', r": defaults\.bounds\.min_ssim: .* got nan$"),
    ('[profiles.x]\nrequires = { vram_gib = nan }', r"profile 'x'\.requires\.vram_gib: .*nan$"),
    ('[profiles.x]\nrequires = { gpus = 1.5 }', r"profile 'x'\.requires\.gpus: expected a whole"),
    ('[profiles.x]\noptions = { flow_shift = nan }', r"options\.flow_shift: .* got nan$"),
    ('[profiles.x]\noptions = { boundary_ratio = 1.5 }', r"options\.boundary_ratio: .*\[0, 1\]"),
    ('[profiles.x]\noptions = { cache_backend = "tea_cache", '
     'cache_config = { rel_l1_thresh = inf } }',
     r"options\.cache_config: rel_l1_thresh: expected a finite number, got inf$"),
    ('[profiles."a,b"]', r"profile 'a,b': a profile name is 1-64 letters"),
    ('[profiles."fp8@long"]', r"profile 'fp8@long': a profile name is"),
    ('[profiles."../x"]', r"profile '\.\./x': a profile name is"),
    ('[profiles."x\\u001b[2J"]', r"profile 'x\\x1b\[2J': a profile name is"),
    ('[profiles.""]', r"profile '': a profile name is"),
    ('[profiles.all]', r"profile 'all': .*and not 'all'"),
    ('[profiles.x]\nrequest = { steps_scale = nan }', r"request\.steps_scale: .*\(0, 1\]"),
    ('[profiles.x]\nbounds = { min_speed = 2 }', r"bounds: unknown field\(s\) min_speed"),
    ('[profiles.x]\nrequires = { sm = "new" }', r"requires\.sm: SM must be like"),
    ('[profiles.x]\nlossy = "yes"', r"profile 'x'\.lossy: expected true or false"),
    ('[profiles.x]\nbaseline = "nope"', r"profile 'x'\.baseline: unknown profile 'nope'"),
    ('[profiles.x]\nspeed = 1', r"profile 'x': unknown field\(s\) speed"),
    ('[profiles.x\n', r"not valid TOML"),
    ('[profiles.x]\nrequest = { steps_scale = 0 }', r"request\.steps_scale: expected .*\(0, 1\]"),
])
def test_user_file_errors_name_file_profile_field(tmp_path: Path, body: str, message: str
                                                  ) -> None:
    path = tmp_path / "mine.toml"
    path.write_text(body)
    with pytest.raises(ProfileError, match=message) as info:
        load_all([path])
    assert str(path) in str(info.value)


# Three mistakes in two profiles: one run must show them all, each worded as when alone.
THREE_BAD_BOUNDS = ('[profiles.slow_nan]\nbounds = { min_speedup = nan, min_ssim = 0.9 }\n'
                    '[profiles.slow_inf]\nbounds = { max_regression = inf, min_sped = 2 }\n')


def test_every_bad_bound_of_a_file_in_one_error(tmp_path: Path) -> None:
    path = tmp_path / "mine.toml"
    path.write_text(THREE_BAD_BOUNDS)
    with pytest.raises(ProfileError) as info:
        load_all([path])
    problems = (
        f"{path}: profile 'slow_nan'.bounds.min_speedup: expected a finite number > 0, got nan",
        f"{path}: profile 'slow_inf'.bounds: unknown field(s) min_sped (allowed: "
        f"{', '.join(BOUND_FIELDS)})",
        f"{path}: profile 'slow_inf'.bounds.max_regression: expected a finite number >= 0, "
        "got inf")
    assert str(info.value) == "3 problems:\n" + "\n".join(f"  {p}" for p in problems)
    assert info.value.problems == problems


def test_every_bad_bound_of_a_mapping_in_one_error() -> None:
    """Markers go through ``Bounds.from_mapping`` too; a bad ratio is not also "unpaired"."""
    with pytest.raises(ProfileError) as info:
        Bounds.from_mapping({"min_ssim": 2, "max_latency_ratio": 0, "min_psnr": math.nan},
                            "@pytest.mark.omni_bounds")
    assert info.value.problems == (
        "@pytest.mark.omni_bounds.min_ssim: expected a finite number in [0, 1], got 2",
        "@pytest.mark.omni_bounds.max_latency_ratio: expected a finite number > 0, got 0",
        "@pytest.mark.omni_bounds.min_psnr: expected a finite number > 0, got nan")


def test_every_bad_bound_is_a_usage_error_naming_both_profiles(pytester: pytest.Pytester
                                                               ) -> None:
    pytester.makefile(".toml", mine=THREE_BAD_BOUNDS)
    pytester.makeini("[pytest]\nomni_profile_files = mine.toml\n")
    result = pytester.runpytest()
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([
        "ERROR: omni_profile_files: 3 problems:",
        "  *mine.toml: profile 'slow_nan'.bounds.min_speedup: expected a finite number > 0, "
        "got nan",
        "  *mine.toml: profile 'slow_inf'.bounds: unknown field(s) min_sped (allowed: *)",
        "  *mine.toml: profile 'slow_inf'.bounds.max_regression: expected a finite number >= 0, "
        "got inf",
    ])
    assert "Traceback" not in result.stdout.str() + result.stderr.str()


def test_every_bad_bound_of_a_marker_is_listed(pytester: pytest.Pytester) -> None:
    pytester.makepyfile("""
import pytest

@pytest.mark.omni_bounds(min_speedup=float("nan"), min_ssim=2)
def test_a(omni_profile): pass
""")
    result = pytester.runpytest("--omni-profile=eager")
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines([
        "pytest-omni-perf: 2 bad marker argument(s) in 1 test(s):",
        "  *::test_a: @pytest.mark.omni_bounds.min_speedup: expected a finite number > 0, "
        "got nan",
        "  *::test_a: @pytest.mark.omni_bounds.min_ssim: expected a finite number in [[]0, 1[]], "
        "got 2",
    ])


def test_user_file_adds_profiles(tmp_path: Path) -> None:
    path = tmp_path / "mine.toml"
    path.write_text('[profiles.cachedit_aggressive]\nlossy = true\n'
                    'options = { enforce_eager = true, cache_backend = "cache_dit", '
                    'cache_config = { residual_diff_threshold = 0.5 } }\n'
                    'bounds = { min_speedup = 1.5 }\n')
    profile = load_file(path)["cachedit_aggressive"]
    assert profile.baseline == "eager"
    assert profile.bounds.min_speedup == 1.5
    assert profile.bounds.max_regression == 0.05


def test_quantization_extras_travel_in_the_config() -> None:
    options = {"quantization": "gguf", "gguf_model": "city/model:Q8_0"}
    assert canonical.omni_kwargs(options) == {
        "quantization_config": {"method": "gguf", "gguf_model": "city/model:Q8_0"}}
    assert canonical.serve_args(options) == [
        "--diffusion-quantization-config", '{"gguf_model":"city/model:Q8_0","method":"gguf"}']
    fp8 = {"quantization": "fp8", "ignored_layers": ["img_mod"]}
    assert canonical.serve_args(fp8) == [
        "--diffusion-quantization-config", '{"ignored_layers":["img_mod"],"method":"fp8"}']


def test_cache_config_keys_are_checked() -> None:
    assert canonical.validate_options({"cache_backend": "cache_dit",
                                       "cache_config": {"Fn_compute_block": 1}})[0].startswith(
        "cache_config.Fn_compute_block: not a cache_dit setting (known: ")
    assert canonical.validate_options({"cache_config": {"rel_l1_thresh": 0.2}}) == [
        "cache_config: given without a cache_backend"]


def test_validate_options_is_strict_about_bools() -> None:
    assert canonical.validate_options({"ulysses_degree": True}) == [
        "ulysses_degree: expected int, got a boolean"]
    assert canonical.validate_options({"cfg_parallel_size": 3})[0].startswith(
        "cfg_parallel_size: expected one of 1, 2")


def test_list_profiles_text(pytester: pytest.Pytester) -> None:
    result = pytester.runpytest("--omni-list-profiles")
    assert result.ret == 0
    result.stdout.fnmatch_lines([
        "usp2  ?parallelism?  Ulysses sequence parallel over 2 GPUs (--usp 2)",
        "    baseline: eager   requires: {'gpus': 2}",
        "    Omni(model, enforce_eager=True, ulysses_degree=2)",
        "    vllm serve MODEL --omni --enforce-eager --usp 2",
    ])


def test_list_profiles_json(pytester: pytest.Pytester) -> None:
    result = pytester.runpytest("--omni-list-profiles=json")
    assert result.ret == 0
    data = json.loads("\n".join(result.outlines))
    assert GUIDE_PROFILES <= set(data)
    assert data["usp2"]["serve_args"] == ["--enforce-eager", "--usp", "2"]
    assert data["fp8"]["omni_kwargs"] == {"enforce_eager": True, "quantization_config": "fp8"}
    assert data["fp8"]["requires"] == {"sm": "8.9"}


def test_list_profiles_includes_user_files(pytester: pytest.Pytester) -> None:
    pytester.makefile(".toml", mine='[profiles.mine]\noptions = { vae_use_tiling = true }\n')
    pytester.makeini("[pytest]\nomni_profile_files = mine.toml\n")
    result = pytester.runpytest("--omni-list-profiles=json")
    assert json.loads("\n".join(result.outlines))["mine"]["serve_args"] == ["--vae-use-tiling"]


def test_malformed_user_file_is_a_usage_error(pytester: pytest.Pytester) -> None:
    pytester.makefile(".toml", mine='[profiles.mine]\noptions = { usp = 2 }\n')
    pytester.makeini("[pytest]\nomni_profile_files = mine.toml\n")
    result = pytester.runpytest()
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["ERROR: omni_profile_files: *mine.toml: profile 'mine'.options."
                                 "usp: another spelling of ulysses_degree*"])
    assert "Traceback" not in result.stdout.str() + result.stderr.str()


@pytest.mark.parametrize(("content", "message"), [
    (b"[profiles.mine\n", "*mine.toml: not valid TOML: *"),
    (b"\xff\xfe[profiles]", "*mine.toml: not valid TOML: *utf-8*"),
    (b"[profiles.mine]\noptions = " + b"[" * 5000, "*mine.toml: not valid TOML: nested too deeply"),
    (None, "*mine.toml: cannot read profile file: *"),
], ids=["torn", "not-utf8", "too-deep", "missing"])
def test_unreadable_user_file_is_a_usage_error(pytester: pytest.Pytester, content: bytes | None,
                                               message: str) -> None:
    if content is not None:
        (pytester.path / "mine.toml").write_bytes(content)
    pytester.makeini("[pytest]\nomni_profile_files = mine.toml\n")
    result = pytester.runpytest()
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([f"ERROR: omni_profile_files: {message}"])
    assert "Traceback" not in result.stdout.str() + result.stderr.str()
