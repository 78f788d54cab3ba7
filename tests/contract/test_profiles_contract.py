"""Every built-in profile, as the plugin spells it, accepted by the real vLLM-Omni 0.30.

Offline: ``Omni(**profile.omni_kwargs())`` resolved through vLLM-Omni's own ingress (no worker
starts). Online: ``vllm serve MODEL --omni *profile.serve_args()`` through its real parser and
validation. Both must land on the same configuration.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from pytest_omni_perf.capabilities import ModelCapabilities, discover, unsupported_reason
from pytest_omni_perf.profiles import Profile, load_builtin

PROFILES = load_builtin()
# GGUF needs the out-of-tree vllm-gguf-plugin and a gguf_model: vLLM-Omni itself rejects it.
NEEDS_PLUGIN = {"gguf"}


def _resolved(config: Any) -> dict[str, Any]:
    parallel = config.parallel_config
    return {
        "enforce_eager": config.enforce_eager,
        "cache_backend": config.cache_backend,
        "quantization": type(config.quantization_config).__name__,
        "offload": (config.enable_cpu_offload, config.enable_layerwise_offload),
        "vae": (config.vae_use_slicing, config.vae_use_tiling),
        "parallel": tuple(getattr(parallel, name) for name in (
            "ulysses_degree", "ring_degree", "cfg_parallel_size", "tensor_parallel_size",
            "vae_patch_parallel_size", "use_hsdp", "enable_expert_parallel")),
        "world_size": parallel.world_size,
        "flow_shift": getattr(config, "flow_shift", None),
    }


@pytest.mark.parametrize("profile", [p for n, p in sorted(PROFILES.items())
                                     if n not in NEEDS_PLUGIN], ids=lambda p: p.name)
def test_profile_accepted_offline_and_online_alike(omni: Any, qwen_folder: Path,
                                                   profile: Profile) -> None:
    offline = omni.resolve_diffusion_config(qwen_folder, **profile.omni_kwargs())
    online = omni.resolve_serve_config(qwen_folder, profile.serve_args())
    assert _resolved(offline) == _resolved(online)
    assert offline.enforce_eager is profile.options.get("enforce_eager", False)
    world = offline.parallel_config.world_size
    if world > 1:
        assert profile.requires.gpus >= world, "a profile must ask for every GPU it spans"


def test_gguf_without_the_plugin_is_rejected_clearly(omni: Any, qwen_folder: Path) -> None:
    options = dict(PROFILES["gguf"].options, gguf_model="city/model:Q8_0")
    kwargs = Profile("gguf", options).omni_kwargs()
    with pytest.raises(ValueError, match="gguf"):
        omni.resolve_diffusion_config(qwen_folder, **kwargs)


@pytest.mark.parametrize(("pipeline", "profile", "expected"), [
    ("FluxPipeline", "usp2", "_sp_plan"),
    ("FluxPipeline", "ring2", "_sp_plan"),
    ("ZImagePipeline", "cfg2", "CFGParallelMixin"),
    ("StableDiffusion3Pipeline", "tea_cache", "TeaCache"),
    ("NextStep11Pipeline", "cache_dit", "_NO_CACHE_ACCELERATION"),
])
def test_unsupported_pairs_skip_with_the_reason(omni: Any, pipeline: str, profile: str,
                                                expected: str) -> None:
    reason = unsupported_reason(PROFILES[profile].options, discover(pipeline))
    assert reason is not None and expected in reason


@pytest.mark.parametrize("profile", ["eager", "compile", "usp2", "ring2", "cfg2", "tp2",
                                     "layerwise_offload", "tea_cache", "cache_dit", "hsdp2"])
def test_qwen_image_supports_the_guide_profiles(omni: Any, profile: str) -> None:
    caps: ModelCapabilities = discover("QwenImagePipeline")
    assert unsupported_reason(PROFILES[profile].options, caps) is None
