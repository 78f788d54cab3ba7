"""Pass-through options against the real vLLM-Omni 0.30: every option the plugin lets through
(the issue's list and those of tests/vllm_omni_cases/*.json) is a flag its `vllm serve
--omni` parser takes and a keyword its Omni(...) ingress accepts; what the plugin refuses,
vLLM-Omni refuses too; and the plugin's own reading of the options (``omni_options``) is
what these checks use.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from pytest_omni_perf import canonical, passthrough
from pytest_omni_perf.cases.reader import read_case_file
from pytest_omni_perf.engines import omni_options
from pytest_omni_perf.passthrough import KnownOptions

CASES = sorted((Path(__file__).parents[1] / "vllm_omni_cases").glob("*.json"))
# The list, with values the real config takes. deploy_config is given the installed
# copy of the file tests/vllm_omni_cases/test_hunyuan_image_tp2_cfgp2.json names.
NAMED: dict[str, Any] = {
    "step_execution": True, "max_num_seqs": 2, "deploy_config": "hunyuan_image3_dit.yaml",
    "model_class_name": "QwenImagePipeline", "diffusion_attention_backend": "TORCH_SDPA",
    "gpu_memory_utilization": 0.8, "enable_diffusion_pipeline_profiler": True,
}


def _case_options() -> dict[str, Any]:
    found: dict[str, Any] = {}
    for path in CASES:
        for entry in read_case_file(path):
            found.update({passthrough.option_name(k): v for k, v in entry.passthrough.items()})
    return found


OPTIONS = {**_case_options(), **NAMED}


@pytest.fixture(scope="module")
def known(omni: Any) -> KnownOptions:
    """What the plugin reads from the installed vLLM-Omni (the shim's parser, built once)."""
    return omni_options.read_installed(omni._build_serve_parser())


def _value(name: str) -> Any:
    if name == "deploy_config":
        import vllm_omni

        return str(Path(vllm_omni.__file__).parent / "deploy" / OPTIONS[name])
    return OPTIONS[name]


def test_the_case_files_have_pass_through_options() -> None:
    assert {"deploy_config", "enable_diffusion_pipeline_profiler"} <= set(_case_options())


@pytest.mark.parametrize("name", sorted(OPTIONS))
def test_flag_exists_and_parses(omni: Any, known: KnownOptions, qwen_folder: Path,
                                name: str) -> None:
    assert known.unknown([name], online=True) == []
    options = {name: _value(name)}
    args = omni.parse_serve_args(qwen_folder, canonical.serve_args(options))
    assert args.get_explicit_kwargs_dict()[name] == _value(name)
    # A case file's spelling (keys as written, underscores or dashes) parses alike.
    for key in (name, name.replace("_", "-")):
        spelled = omni.parse_serve_args(qwen_folder, passthrough.argv({key: _value(name)},
                                                                      keep_spelling=True))
        assert spelled.get_explicit_kwargs_dict()[name] == _value(name)


@pytest.mark.parametrize("name", sorted(OPTIONS))
def test_omni_keyword_accepted_by_the_real_config(omni: Any, known: KnownOptions,
                                                  qwen_folder: Path, name: str) -> None:
    assert known.unknown([name], online=False) == []
    kwargs = canonical.omni_kwargs({name: _value(name)})
    assert kwargs == {name: _value(name)}
    config = omni.resolve_diffusion_config(qwen_folder, **kwargs)
    if hasattr(config, name):  # a field of the config (others steer the stage or deploy)
        assert getattr(config, name) == _value(name)


def test_profile_with_pass_through_options_resolves_alike_offline_and_online(
        omni: Any, qwen_folder: Path) -> None:
    options = {"enforce_eager": True, "vae_use_tiling": True, "step_execution": True,
               "max_num_seqs": 2, "gpu_memory_utilization": 0.8}
    assert canonical.validate_options(options) == []
    offline = omni.resolve_diffusion_config(qwen_folder, **canonical.omni_kwargs(options))
    online = omni.resolve_serve_config(qwen_folder, canonical.serve_args(options))
    for config in (offline, online):
        assert (config.enforce_eager, config.vae_use_tiling, config.step_execution,
                config.max_num_seqs) == (True, True, True, 2)


def test_what_the_plugin_refuses_vllm_omni_refuses(omni: Any, known: KnownOptions,
                                                   qwen_folder: Path) -> None:
    assert known.unknown(["max_num_seqs", "bogus_option"], online=True) == ["bogus_option"]
    assert known.unknown(["bogus_option"], online=False) == ["bogus_option"]
    with pytest.raises(ValueError, match="bogus-option"):
        omni.parse_serve_args(qwen_folder, passthrough.argv({"bogus_option": 1}))
    with pytest.raises(ValueError, match="Unknown diffusion config field.*'bogus_option'"):
        omni.resolve_diffusion_config(qwen_folder, bogus_option=1)


def test_no_real_option_is_taken_for_a_typo(known: KnownOptions) -> None:
    """The typo rule (a near-miss of a canonical field is an error) refuses no real name."""
    spellings = canonical.spellings()
    names = {n for n in known.kwargs if n not in canonical.CANONICAL_OPTIONS
             and n not in spellings}
    names |= {passthrough.option_name(f) for f in known.flags if f.startswith("--")
              and passthrough.option_name(f) not in spellings
              and passthrough.option_name(f) not in canonical.CANONICAL_OPTIONS}
    assert len(names) > 300
    refused = {n: canonical.validate_options({n: 1}) for n in sorted(names)}
    assert {n: p for n, p in refused.items() if p} == {}


def test_the_check_reads_the_cached_options_and_names_the_version(
        known: KnownOptions, tmp_path: Path) -> None:
    """The plugin's path end to end (cache file as a child Python would leave it)."""
    from pytest_omni_perf.engines.omni_compat import installed_version

    version = installed_version()
    assert version is not None and version.startswith("0.30")
    (tmp_path / f"vllm-omni-options-{version}.json").write_text(json.dumps(known.to_json()))
    failure, note = omni_options.check({"step_execution": True, "max_num_seqs": 2},
                                       online=True, cache_dir=tmp_path)
    assert failure is None and note is not None and version in note
    failure, _ = omni_options.check({"max_num_seqs": 2, "max_num_seq": 2}, online=False,
                                    cache_dir=tmp_path)
    assert failure is not None and "max_num_seqs" not in failure
    assert f"option(s) max_num_seq: the installed vLLM-Omni {version}" in failure


def test_the_committed_option_snapshot_is_the_installed_ones(known: KnownOptions) -> None:
    """tests/contract/vllm_omni_options_0.30.0.json, which the CPU tests check against,
    is what the plugin reads from the real release (rewrite it when the release moves)."""
    snapshot = Path(__file__).with_name(f"vllm_omni_options_{known.version}.json")
    assert KnownOptions.from_json(json.loads(snapshot.read_text())) == known
