"""Contract tests against the real vLLM-Omni 0.30: capability discovery and option names.

Run with the venv from ``scripts/install-vllm-omni-cpu.sh``:
``/tmp/venv-omni/bin/python -m pytest -p no:cacheprovider tests/contract -q``.
Tests that need vllm_omni skip with a reason where it is not importable; the
``unsupported_reason`` / ``pipeline_class_of`` unit tests run anywhere.
"""

from __future__ import annotations

import importlib.util
import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from pytest_omni_perf.capabilities import (
    ModelCapabilities,
    discover,
    pipeline_class_of,
    unsupported_reason,
)

# --- pure unit tests (no vllm_omni) --------------------------------------------------------

_ALL = dict(
    compile=True,
    sequence_parallel=True,
    cfg_parallel=True,
    tensor_parallel=True,
    layerwise_offload=True,
    cache_acceleration=True,
    tea_cache=True,
    hsdp=True,
    expert_parallel=True,
)


def _caps(**overrides: Any) -> ModelCapabilities:
    fields: dict[str, Any] = {**_ALL, "tea_cache_extractor": True, **overrides}
    fields.setdefault("transformer_classes", ("QwenImageTransformer2DModel",))
    return ModelCapabilities(pipeline_class="QwenImagePipeline", **fields)


def test_reason_none_when_every_hook_exists() -> None:
    options = {
        "enforce_eager": False,
        "ulysses_degree": 2,
        "ring_degree": 2,
        "cfg_parallel_size": 2,
        "tensor_parallel_size": 2,
        "enable_layerwise_offload": True,
        "cache_backend": "tea_cache",
        "use_hsdp": True,
        "enable_expert_parallel": True,
    }
    assert unsupported_reason(options, _caps()) is None


def test_reason_for_sequence_parallel_names_the_transformer() -> None:
    reason = unsupported_reason({"ulysses_degree": 2}, _caps(sequence_parallel=False))
    assert reason == (
        "ulysses_degree=2: QwenImageTransformer2DModel has no _sp_plan, "
        "vLLM-Omni would only warn and run without SP"
    )


@pytest.mark.parametrize(
    ("options", "missing", "expected"),
    [
        ({"parallel_config": {"ring_degree": 4}}, "sequence_parallel", "ring_degree=4"),
        ({"allgather_degree": 2}, "sequence_parallel", "allgather_degree=2"),
        ({"cfg_parallel_size": 2}, "cfg_parallel", "CFGParallelMixin"),
        ({"tensor_parallel_size": 4}, "tensor_parallel", "ParallelLinear"),
        ({"enable_layerwise_offload": True}, "layerwise_offload", "_layerwise_offload_blocks_attrs"),
        ({"cache_backend": "cache_dit"}, "cache_acceleration", "_NO_CACHE_ACCELERATION"),
        ({"use_hsdp": True, "hsdp_shard_size": 2}, "hsdp", "_hsdp_shard_conditions"),
        ({"enable_expert_parallel": True}, "expert_parallel", "FusedMoE"),
        ({"enforce_eager": False}, "compile", "_repeated_blocks"),
    ],
)
def test_reason_for_each_missing_hook(options: dict[str, Any], missing: str, expected: str) -> None:
    assert unsupported_reason(options, _caps(**{missing: True})) is None
    reason = unsupported_reason(options, _caps(**{missing: False}))
    assert reason is not None and expected in reason


@pytest.mark.parametrize(
    "options",
    [
        {"ulysses_degree": 1, "ring_degree": 1, "cfg_parallel_size": 1, "tensor_parallel_size": 1},
        {"cache_backend": "none", "use_hsdp": False, "enable_layerwise_offload": False},
        {"enforce_eager": True},
        {},  # vLLM-Omni compiles by default, but nothing was asked for explicitly
        {"enforce_eager": False, "diffusion_compile_granularity": "full"},  # full compile needs no hooks
    ],
)
def test_no_reason_when_nothing_unsupported_is_asked(options: dict[str, Any]) -> None:
    nothing = _caps(**{name: False for name in _ALL}, tea_cache_extractor=False)
    assert unsupported_reason(options, nothing) is None


def test_tea_cache_needs_coefficients_or_an_extractor() -> None:
    no_coeffs = _caps(tea_cache=False, tea_cache_extractor=True)
    reason = unsupported_reason({"cache_backend": "tea_cache"}, no_coeffs)
    assert reason is not None and "coefficients" in reason
    own = [1.0, 0.0, 0.0, 0.0, 0.0]
    for cache_config in ({"coefficients": own}, json.dumps({"coefficients": own})):
        options = {"cache_backend": "tea_cache", "cache_config": cache_config}
        assert unsupported_reason(options, no_coeffs) is None
        no_extractor = unsupported_reason(options, _caps(tea_cache=False, tea_cache_extractor=False))
        assert no_extractor is not None and "extractor" in no_extractor


def test_several_reasons_are_joined() -> None:
    caps = _caps(sequence_parallel=False, cfg_parallel=False, transformer_classes=())
    reason = unsupported_reason({"ulysses_degree": 2, "cfg_parallel_size": 2}, caps)
    assert reason is not None
    parts = reason.split("; ")
    assert [p.split(":")[0] for p in parts] == ["ulysses_degree=2", "cfg_parallel_size=2"]
    assert "QwenImagePipeline (transformer class not found) has no _sp_plan" in parts[0]


def test_pipeline_class_of(tmp_path: Path) -> None:
    (tmp_path / "model_index.json").write_text(json.dumps({"_class_name": "FluxPipeline"}))
    assert pipeline_class_of(str(tmp_path)) == "FluxPipeline"
    assert pipeline_class_of(str(tmp_path / "missing")) is None
    assert pipeline_class_of("Qwen/Qwen-Image-no-such-local-folder") is None
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "model_index.json").write_text("{not json")
    assert pipeline_class_of(str(broken)) is None


# --- real vLLM-Omni 0.30 ------------------------------------------------------------------


def test_qwen_image_supports_everything_but_expert_parallel(omni: Any) -> None:
    caps = discover("QwenImagePipeline")
    assert caps.transformer_classes == ("QwenImageTransformer2DModel",)
    assert caps.pipeline_class == "QwenImagePipeline"
    for name in _ALL:
        assert getattr(caps, name) is (name != "expert_parallel"), name
    from vllm_omni.diffusion.models.qwen_image.qwen_image_transformer import QwenImageTransformer2DModel

    assert QwenImageTransformer2DModel._sp_plan is not None  # discovery agrees with the source


def test_wan22_is_registered_as_wan_pipeline(omni: Any) -> None:
    caps = discover("WanPipeline")
    assert discover("Wan22Pipeline") == caps  # vLLM-Omni's class name resolves to the same arch
    assert caps.transformer_classes == ("WanTransformer3DModel",)
    assert (caps.compile, caps.sequence_parallel, caps.cfg_parallel, caps.layerwise_offload) == (True,) * 4
    assert caps.tea_cache is False and caps.tea_cache_extractor is False  # no Wan coefficients
    reason = unsupported_reason({"cache_backend": "tea_cache"}, caps)
    assert reason is not None and "WanTransformer3DModel" in reason


@pytest.mark.parametrize(
    ("pipeline", "transformer", "tea_cache"),
    [("FluxPipeline", "FluxTransformer2DModel", True), ("StableDiffusion3Pipeline", "SD3Transformer2DModel", False)],
)
def test_flux_and_sd3_have_no_sp_plan(omni: Any, pipeline: str, transformer: str, tea_cache: bool) -> None:
    caps = discover(pipeline)
    assert caps.transformer_classes == (transformer,)
    assert caps.sequence_parallel is False and caps.cfg_parallel is True and caps.compile is True
    assert caps.tea_cache is tea_cache
    assert unsupported_reason({"ulysses_degree": 2}, caps) == (
        f"ulysses_degree=2: {transformer} has no _sp_plan, vLLM-Omni would only warn and run without SP"
    )


def test_z_image_has_no_cfg_mixin(omni: Any) -> None:
    caps = discover("ZImagePipeline")
    assert caps.cfg_parallel is False and caps.sequence_parallel is True and caps.tea_cache is True
    reason = unsupported_reason({"cfg_parallel_size": 2}, caps)
    assert reason is not None and "ZImagePipeline does not inherit CFGParallelMixin" in reason


def test_no_cache_acceleration_pipeline(omni: Any) -> None:
    from vllm_omni.diffusion.registry import _NO_CACHE_ACCELERATION

    assert "NextStep11Pipeline" in _NO_CACHE_ACCELERATION
    caps = discover("NextStep11Pipeline")
    assert caps.cache_acceleration is False and caps.tea_cache is False
    assert discover("QwenImagePipeline").cache_acceleration is True


def test_expert_parallel_found_on_a_moe_transformer(omni: Any) -> None:
    caps = discover("HunyuanImage3ForCausalMM")
    assert caps.expert_parallel is True and caps.tea_cache is True  # a pipeline-level TeaCache enabler


def test_unknown_pipeline_is_an_error(omni: Any) -> None:
    with pytest.raises(ValueError, match="not a vLLM-Omni diffusion pipeline"):
        discover("NoSuchPipeline")


def test_discover_from_a_local_folder(omni: Any, qwen_folder: Path) -> None:
    name = pipeline_class_of(str(qwen_folder))
    assert name == "QwenImagePipeline"
    assert discover(name).sequence_parallel is True


# Canonical option -> Omni(**kwargs) and the `vllm serve --omni` flags -> resolved config.
# Each row is one line of docs/vllm-omni-api.md; "qc" compares the quantization config's type.
_MAPPING: list[tuple[dict[str, Any], list[str], dict[str, Any]]] = [
    ({"enforce_eager": True}, ["--enforce-eager"], {"enforce_eager": True}),
    ({"quantization": "fp8"}, ["--quantization", "fp8"], {"qc": "Fp8Config"}),
    ({"quantization_config": "fp8"}, ["-q", "fp8"], {"qc": "Fp8Config"}),
    (
        {"quantization_config": {"method": "fp8", "ignored_layers": ["img_mod"]}},
        ["--diffusion-quantization-config", '{"method": "fp8", "ignored_layers": ["img_mod"]}'],
        {"qc": "Fp8Config", "quantization_config.ignored_layers": ["img_mod"]},
    ),
    (
        {"cache_backend": "cache_dit", "cache_config": {"Fn_compute_blocks": 2}},
        ["--cache-backend", "cache_dit", "--cache-config", '{"Fn_compute_blocks": 2}'],
        {"cache_backend": "cache_dit", "cache_config.Fn_compute_blocks": 2, "cache_config.max_warmup_steps": 4},
    ),
    (
        {"cache_backend": "tea_cache", "cache_config": {"rel_l1_thresh": 0.3}},
        ["--cache-backend", "tea_cache", "--cache-config", '{"rel_l1_thresh": 0.3}'],
        {"cache_backend": "tea_cache", "cache_config.rel_l1_thresh": 0.3},
    ),
    ({"enable_cpu_offload": True}, ["--enable-cpu-offload"], {"enable_cpu_offload": True}),
    ({"enable_layerwise_offload": True}, ["--enable-layerwise-offload"], {"enable_layerwise_offload": True}),
    (
        {"vae_use_slicing": True, "vae_use_tiling": True},
        ["--vae-use-slicing", "--vae-use-tiling"],
        {"vae_use_slicing": True, "vae_use_tiling": True},
    ),
    ({"ulysses_degree": 2}, ["--usp", "2"], {"parallel_config.ulysses_degree": 2, "parallel_config.world_size": 2}),
    ({"ring_degree": 2}, ["--ring", "2"], {"parallel_config.ring_degree": 2, "parallel_config.world_size": 2}),
    ({"cfg_parallel_size": 2}, ["--cfg-parallel-size", "2"], {"parallel_config.cfg_parallel_size": 2}),
    ({"tensor_parallel_size": 2}, ["-tp", "2"], {"parallel_config.tensor_parallel_size": 2}),
    (
        {"vae_patch_parallel_size": 2},
        ["--vae-patch-parallel-size", "2"],
        {"parallel_config.vae_patch_parallel_size": 2, "parallel_config.world_size": 1},
    ),
    (
        {"use_hsdp": True, "hsdp_shard_size": 2},
        ["--use-hsdp", "--hsdp-shard-size", "2"],
        {"parallel_config.use_hsdp": True, "parallel_config.hsdp_shard_size": 2},
    ),
    (
        {"enable_expert_parallel": True, "tensor_parallel_size": 2},
        ["--enable-expert-parallel", "-tp", "2"],
        {"parallel_config.enable_expert_parallel": True},
    ),
    (
        {"flow_shift": 5.0, "boundary_ratio": 0.875},
        ["--flow-shift", "5.0", "--boundary-ratio", "0.875"],
        {"flow_shift": 5.0, "boundary_ratio": 0.875},
    ),
    ({"dtype": "float16"}, ["--dtype", "float16"], {"dtype": "float16"}),
    (
        {"diffusion_compile_granularity": "full"},
        ["--diffusion-compile-granularity", "full"],
        {"diffusion_compile_granularity": "full"},
    ),
]


def _observed(config: Any, expected: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key in expected:
        if key == "qc":
            out[key] = type(config.quantization_config).__name__
        elif key == "dtype":
            out[key] = str(config.dtype).removeprefix("torch.")
        else:
            value = config
            for part in key.split("."):
                value = getattr(value, part, None)  # None where the baseline lacks the object
            out[key] = value
    return out


@pytest.mark.parametrize(("kwargs", "flags", "expected"), _MAPPING, ids=[" ".join(r[1]) for r in _MAPPING])
def test_option_maps_to_the_same_config_offline_and_served(
    omni: Any, qwen_folder: Path, kwargs: dict[str, Any], flags: list[str], expected: dict[str, Any]
) -> None:
    baseline = _observed(omni.resolve_diffusion_config(qwen_folder), expected)
    assert baseline != expected  # the option changes something, so this row can fail
    assert _observed(omni.resolve_diffusion_config(qwen_folder, **kwargs), expected) == expected
    assert _observed(omni.resolve_serve_config(qwen_folder, flags), expected) == expected


def test_defaults_compile_on_and_bf16(omni: Any, qwen_folder: Path) -> None:
    config = omni.resolve_serve_config(qwen_folder, [])
    assert config.enforce_eager is False  # an "eager" baseline must pass --enforce-eager
    assert str(config.dtype) == "torch.bfloat16" and config.cache_backend == "none"


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--ignored-layers", "img_mod"], "unrecognized arguments: --ignored-layers"),
        (["--gguf-model", "x.gguf"], "unrecognized arguments: --gguf-model"),
        (["--diffusion-compile-granularity", "bogus"], "invalid choice: 'bogus'"),
        (["--usp", "two"], "invalid int value: 'two'"),
    ],
)
def test_bad_flags_raise_value_error(omni: Any, qwen_folder: Path, flags: list[str], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        omni.parse_serve_args(qwen_folder, flags)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"no_such_option": 1}, "Unknown diffusion config field"),
        ({"quantization": "gguf"}, "Unknown quantization method: 'gguf'"),  # needs vllm-gguf-plugin
        ({"quantization": "fp8", "quantization_config": "fp8"}, "cannot both be provided"),
        ({"use_hsdp": True, "tensor_parallel_size": 2}, "not compatible with TP"),
        ({"use_hsdp": True}, "Cannot auto-calculate hsdp_shard_size"),
        ({"diffusion_compile_granularity": "full", "ulysses_degree": 2}, "incompatible with sequence parallelism"),
    ],
)
def test_rejected_offline_options(omni: Any, qwen_folder: Path, kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):  # pydantic's ValidationError is a ValueError
        omni.resolve_diffusion_config(qwen_folder, **kwargs)


def test_serve_rejects_quantization_twice(omni: Any, qwen_folder: Path) -> None:
    with pytest.raises(ValueError, match="cannot both be provided"):
        omni.resolve_serve_config(qwen_folder, ["-q", "fp8", "--diffusion-quantization-config", '{"method": "fp8"}'])


def test_from_kwargs_wants_nested_parallel_config(omni: Any, qwen_folder: Path) -> None:
    with pytest.raises(ValueError, match="Unknown diffusion config field.*'ulysses_degree'"):
        omni.config_from_kwargs(qwen_folder, ulysses_degree=2)
    nested = omni.config_from_kwargs(qwen_folder, parallel_config={"ulysses_degree": 2})
    assert nested.parallel_config.ulysses_degree == 2 and nested.model_class_name == "QwenImagePipeline"


def test_mistakes_that_pass_silently(omni: Any, qwen_folder: Path) -> None:
    # Documented surprises: the plugin must validate cache_config itself.
    typo = omni.resolve_diffusion_config(qwen_folder, cache_backend="cache_dit", cache_config={"Fn_compute_block": 3})
    assert typo.cache_config.Fn_compute_blocks == 1 and typo.cache_config._extra_params == {"Fn_compute_block": 3}
    bad_json = omni.resolve_serve_config(qwen_folder, ["--cache-backend", "cache_dit", "--cache-config", "{bad"])
    assert bad_json.cache_config.Fn_compute_blocks == 1
    # Only the worker's cache selector rejects an unknown backend; config resolution keeps it.
    assert omni.resolve_diffusion_config(qwen_folder, cache_backend="bogus").cache_backend == "bogus"
    # An unknown dtype string becomes bf16 with only a warning.
    assert str(omni.resolve_diffusion_config(qwen_folder, dtype="int3").dtype) == "torch.bfloat16"
