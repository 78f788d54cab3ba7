"""Pass-through options as users meet them on a CPU machine: listed with their Omni keywords
and serve flags, skipped by the diffusers backend with their names, and refused with their
names and the release when the installed vLLM-Omni does not know them (its real 0.30 option
set, tests/contract/vllm_omni_options_0.30.0.json, which a contract test keeps true)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from pytest_omni_perf import canonical
from pytest_omni_perf.engines import omni_compat
from pytest_omni_perf.passthrough import KnownOptions

SNAPSHOT = Path(__file__).parent / "contract" / "vllm_omni_options_0.30.0.json"
PROFILE = """\
[profiles.stepped]
baseline = ""
options = { enforce_eager = true, step_execution = true, max_num_seqs = 2 }
"""
TEST_FILE = """\
def test_image(omni_perf):
    omni_perf.measure(prompt="a red fox", width=32, height=32, num_inference_steps=2)
"""
VLLM = "--omni-server-command=vllm serve {model} --omni --port {port}"


def test_listed_with_their_keywords_and_flags(pytester: pytest.Pytester) -> None:
    pytester.makefile(".toml", mine=PROFILE.replace(
        "max_num_seqs = 2", 'max_num_seqs = 2, deploy_config = "dit.yaml"'))
    pytester.makeini("[pytest]\nomni_profile_files = mine.toml\n")
    listed = json.loads("\n".join(pytester.runpytest("--omni-list-profiles=json").outlines))
    assert listed["stepped"]["omni_kwargs"] == {
        "enforce_eager": True, "step_execution": True, "max_num_seqs": 2,
        "deploy_config": "dit.yaml"}
    assert listed["stepped"]["serve_args"] == [
        "--enforce-eager", "--step-execution", "--max-num-seqs", "2",
        "--deploy-config", "dit.yaml"]


@pytest.mark.parametrize("options", [
    "ulysses_degre = 2", "usp = 2", "step_execution = nan", '"max num seqs" = 2'])
def test_typos_and_other_spellings_stay_usage_errors(pytester: pytest.Pytester,
                                                     options: str) -> None:
    pytester.makefile(".toml", mine=f"[profiles.mine]\noptions = {{ {options} }}\n")
    pytester.makeini("[pytest]\nomni_profile_files = mine.toml\n")
    result = pytester.runpytest()
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    expected = {"ulysses_degre": "unknown option; did you mean ulysses_degree?",
                "usp": "another spelling of ulysses_degree*",
                "step_execution": "expected a finite number, got nan",
                '"max num seqs"': "not an option name*"}
    name = options.split(" = ")[0]
    result.stderr.fnmatch_lines([f"*profile 'mine'.options.{name.strip(chr(34))}: "
                                 f"{expected[name]}"])


@pytest.mark.parametrize("xdist", [[], ["-n", "2"]], ids=["serial", "xdist"])
def test_diffusers_backend_skips_naming_them(pytester: pytest.Pytester,
                                             xdist: list[str]) -> None:
    pytester.makefile(".toml", mine=PROFILE)
    pytester.makeini("[pytest]\nomni_profile_files = mine.toml\n")
    pytester.makepyfile(test_pass=TEST_FILE)
    result = pytester.runpytest_subprocess(
        "-p", "no:cacheprovider", "-rs", "--omni-backend=diffusers", "--omni-profile=stepped",
        "--omni-update-baselines", *xdist)
    result.assert_outcomes(skipped=1)
    result.stdout.fnmatch_lines([
        "SKIPPED ?1? test_pass.py:*: diffusers backend: pass-through option(s) "
        "step_execution, max_num_seqs: vLLM-Omni options the diffusers backend cannot "
        "honour (run them with --omni-backend=omni or omni-server)"])


@pytest.fixture
def vllm_omni_030(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """As if vLLM-Omni 0.30.0 were installed, its option set already read into the cache
    folder (nothing here can import it); returns that folder."""
    cache = tmp_path / "cache"
    cache.mkdir()
    shutil.copy(SNAPSHOT, cache / "vllm-omni-options-0.30.0.json")
    monkeypatch.setattr(omni_compat, "installed_version", lambda: "0.30.0")
    monkeypatch.setenv("OMNI_PERF_CACHE_DIR", str(cache))
    return cache


def test_unknown_profile_option_fails_naming_it_and_the_release(
        pytester: pytest.Pytester, vllm_omni_030: Path) -> None:
    pytester.makefile(".toml", mine=PROFILE.replace("max_num_seqs", "max_num_seq"))
    pytester.makeini("[pytest]\nomni_profile_files = mine.toml\n")
    pytester.makepyfile(test_unknown=TEST_FILE)
    # No vllm command exists here: the failure comes before anything is started.
    result = pytester.runpytest_inprocess(
        "-p", "no:cacheprovider", "--omni-backend=omni-server", VLLM,
        "--omni-profile=stepped", "--omni-update-baselines")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines([
        "*option(s) max_num_seq: the installed vLLM-Omni 0.30.0 has no such `vllm serve "
        "--omni` flag; check the spelling, or the release that introduced it"])
    assert "step_execution" not in result.stdout.str().split("option(s)")[1][:40]


def test_unknown_case_file_option_fails_naming_it_and_the_release(
        pytester: pytest.Pytester, vllm_omni_030: Path) -> None:
    entry = {"name": "e", "dataset": "random", "task": "t2i", "width": 64, "height": 64,
             "num-inference-steps": 2, "num-prompts": 2}
    row = {"test_name": "test_x", "server_params": {"model": "tiny-flux", "serve_args": {
        "enable-diffusion-pipeline-profiler": True, "step-executon": True}},
        "benchmark_params": [entry]}
    (pytester.path / "case.json").write_text(json.dumps([row]))
    result = pytester.runpytest_inprocess("-p", "no:cacheprovider", "--omni-cases=case.json",
                                          VLLM)
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines([
        "*case.json: row 0 (test_x), benchmark_params[[]0[]] (e): server_params.serve_args: "
        "option(s) step-executon: the installed vLLM-Omni 0.30.0 has no such `vllm serve "
        "--omni` flag*"])


def test_known_options_pass_the_check(vllm_omni_030: Path) -> None:
    from pytest_omni_perf.engines.omni_options import check

    failure, note = check({"step_execution": True, "deploy_config": "d.yaml",
                           "gpu_memory_utilization": 0.8}, online=False, cache_dir=None)
    assert failure is None
    assert note == ("pass-through option(s) step_execution, deploy_config, "
                    "gpu_memory_utilization: Omni(...) keywords of vLLM-Omni 0.30.0")


def test_canonical_names_are_not_pass_through_in_the_snapshot() -> None:
    """Every canonical option with a flag is a real 0.30 flag (so none is refused online)."""
    known = KnownOptions.from_json(json.loads(SNAPSHOT.read_text()))
    flags = [o.flag for o in canonical.CANONICAL_OPTIONS.values() if o.flag]
    assert [f for f in flags if f not in known.flags] == []
