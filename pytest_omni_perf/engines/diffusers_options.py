"""Canonical profile options -> diffusers, cache-dit and torchao calls on a loaded pipeline.

``unsupported_reason`` decides, without a pipeline, whether this backend can honour a
profile here; ``apply_options`` applies it (quantize -> place/offload -> cache -> compile ->
VAE); ``enable_cache_dit``/``uses_separate_cfg`` let the runner re-fit cache-dit to each
request, and ``pipeline_call_kwargs`` builds the call. An option this backend cannot honour
raises ``ProfileUnsupported`` instead of running as something else.
"""

from __future__ import annotations

import importlib.util
import inspect
import json
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .. import passthrough
from ..canonical import CANONICAL_OPTIONS, world_size
from . import diffusers_parallel, diffusers_sampling
from .diffusers_fp8 import quantize_fp8
from .base import GenerationRequest, ProfileUnsupported

if TYPE_CHECKING:
    import torch

KNOWN_OPTIONS = frozenset({
    "enforce_eager", "quantization", "gguf_model", "cache_backend", "cache_config",
    "enable_cpu_offload", "enable_layerwise_offload", "vae_use_slicing", "vae_use_tiling",
    "flow_shift", "boundary_ratio", "dtype", "ulysses_degree", "ring_degree",
    "cfg_parallel_size", "tensor_parallel_size", "vae_patch_parallel_size", "use_hsdp",
    "hsdp_shard_size", "enable_expert_parallel",
})
# vLLM-Omni's DiffusionCacheConfig defaults for cache-dit, so that a profile's cache_config
# means the same thing on both backends.
CACHE_DIT_DEFAULTS: Mapping[str, Any] = {
    "Fn_compute_blocks": 1, "Bn_compute_blocks": 0, "max_warmup_steps": 4,
    "max_cached_steps": -1, "residual_diff_threshold": 0.24, "max_continuous_cached_steps": 3,
    "enable_taylorseer": False, "taylorseer_order": 1, "scm_steps_mask_policy": None,
    "scm_steps_policy": "dynamic",
}
SCM_MASK_POLICIES = ("slow", "medium", "fast", "ultra")
_OTHER_CACHES = {"tea_cache": "TeaCache", "mag_cache": "MagCache", "sea_cache": "SeaCache",
                 "step_cache": "StepCache"}
_DTYPES = ("auto", "float32", "bfloat16", "float16")
FP8_MIN_SM = (8, 9)
# Built-in tiny models pad prompts to the pipeline's default 512 (Flux) text tokens, which
# would dwarf their 64 image tokens; below this size the prompt is capped instead. Models
# this small only exist as test fixtures, so real models keep their pipeline's default.
SMALL_TRANSFORMER_PARAMS = 100_000_000
SMALL_MAX_SEQUENCE_LENGTH = 64


def _enabled(options: Mapping[str, Any], name: str) -> bool:
    return bool(options.get(name) or False)


def compile_enabled(options: Mapping[str, Any]) -> bool:
    """vLLM-Omni semantics: compile unless ``enforce_eager`` is true (absent = compile)."""
    return not _enabled(options, "enforce_eager")


def cache_dit_config(options: Mapping[str, Any]) -> dict[str, Any] | None:
    """The profile's cache-dit settings over vLLM-Omni's defaults; None when not cache_dit."""
    if (options.get("cache_backend") or "none") != "cache_dit":
        return None
    raw = options.get("cache_config") or {}
    if isinstance(raw, str):  # vLLM-Omni also takes the JSON spelling of --cache-config
        raw = json.loads(raw)
    return {**CACHE_DIT_DEFAULTS, **dict(raw)}


def resolve_dtype(dtype: str, device: str) -> str:
    """``auto`` is float32 on CPU (bf16 matmuls are slow there) and bfloat16 on a GPU."""
    if dtype != "auto":
        return dtype
    return "float32" if device == "cpu" else "bfloat16"


def unsupported_reason(options: Mapping[str, Any], *, device: str,
                       sm: tuple[int, int] | None, gpu_count: int) -> str | None:
    """Why this backend cannot honour ``options`` on ``device`` here, or None when it can."""
    reasons: list[str] = []
    if (why := passthrough.diffusers_reason(options, CANONICAL_OPTIONS)) is not None:
        reasons.append(why)
    canonical, _ = passthrough.split(options, CANONICAL_OPTIONS)
    if unknown := sorted(set(canonical) - KNOWN_OPTIONS):
        reasons.append(f"unknown option(s) for the diffusers backend: {', '.join(unknown)}")
    backend = options.get("cache_backend") or "none"
    if backend in _OTHER_CACHES:
        reasons.append(f"{backend}: the diffusers backend has no {_OTHER_CACHES[backend]} "
                       "(use --omni-backend=omni)")
    elif backend not in ("none", "cache_dit"):
        reasons.append(f"cache_backend={backend!r}: unknown cache backend")
    elif backend == "cache_dit":
        reasons += _cache_config_problems(options)
    reasons += diffusers_parallel.unsupported_reasons(options, device=device,
                                                      gpu_count=gpu_count)
    on_gpu = device != "cpu" and gpu_count > 0
    if device != "cpu" and gpu_count == 0:
        reasons.append(f"device {device!r} asked for, but no GPU is visible")
    reasons += _quantization_problems(options, on_gpu=on_gpu, sm=sm)
    if _enabled(options, "enable_cpu_offload") and not on_gpu:
        reasons.append("enable_cpu_offload needs an accelerator (diffusers "
                       "enable_model_cpu_offload moves components to one); found no GPU")
    if _enabled(options, "enable_layerwise_offload") and not on_gpu:
        reasons.append("enable_layerwise_offload needs CUDA (group offload prefetches blocks "
                       "on a CUDA stream); found no GPU")
    if _enabled(options, "enable_cpu_offload") and _enabled(options, "enable_layerwise_offload"):
        reasons.append("enable_cpu_offload and enable_layerwise_offload exclude each other")
    if (dtype := options.get("dtype") or "auto") not in _DTYPES:
        reasons.append(f"dtype={dtype!r}: expected one of {', '.join(_DTYPES)}")
    if compile_enabled(options) and device == "cpu" and not any(
            shutil.which(cxx) for cxx in ("g++", "c++", "clang++")):
        reasons.append("torch.compile (enforce_eager=false) on CPU needs a C++ compiler")
    return "; ".join(reasons) or None


def _cache_config_problems(options: Mapping[str, Any]) -> list[str]:
    try:
        config = cache_dit_config(options)
    except ValueError as exc:
        return [f"cache_config is not valid JSON: {exc}"]
    assert config is not None
    problems = []
    if unknown := sorted(set(config) - set(CACHE_DIT_DEFAULTS)):
        problems.append(f"cache_config key(s) cache_dit does not take: {', '.join(unknown)}")
    policy = config["scm_steps_mask_policy"]
    if policy is not None and policy not in SCM_MASK_POLICIES:
        problems.append(f"scm_steps_mask_policy={policy!r}: expected one of "
                        f"{', '.join(SCM_MASK_POLICIES)} or None")
    if config["scm_steps_policy"] not in ("dynamic", "static"):
        problems.append(f"scm_steps_policy={config['scm_steps_policy']!r}: expected "
                        "'dynamic' or 'static'")
    return problems


def _quantization_problems(options: Mapping[str, Any], *, on_gpu: bool,
                           sm: tuple[int, int] | None) -> list[str]:
    method = options.get("quantization")
    if method is None:
        return ["gguf_model is set but quantization is not 'gguf'"] if options.get(
            "gguf_model") else []
    if method == "fp8":
        if on_gpu and sm is not None and tuple(sm) >= FP8_MIN_SM:
            return []
        found = f"SM {sm[0]}.{sm[1]}" if on_gpu and sm is not None else "no GPU"
        return [f"quantization=fp8 needs a CUDA GPU with SM >= 8.9 (found: {found})"]
    if method == "gguf":
        if not options.get("gguf_model"):
            return ["gguf needs a pre-quantized GGUF file (gguf_model)"]
        if importlib.util.find_spec("gguf") is None:
            return ["quantization=gguf needs the gguf package (pip install gguf)"]
        if not Path(str(options["gguf_model"])).is_file():
            return [f"gguf_model {options['gguf_model']!r} is not a local file"]
        return []
    return [f"quantization={method!r}: the diffusers backend supports fp8 and gguf"]


def load_gguf_transformer(folder: str, gguf_file: str, dtype: torch.dtype) -> Any:
    """The pipeline's transformer class loaded from a GGUF file, config taken from ``folder``."""
    import diffusers

    lib: Any = diffusers  # untyped library: keep mypy --strict out of its signatures
    index = json.loads((Path(folder) / "model_index.json").read_text(encoding="utf-8"))
    cls = getattr(lib, index["transformer"][1])
    return cls.from_single_file(
        gguf_file, config=folder, subfolder="transformer", dtype=dtype,
        quantization_config=lib.GGUFQuantizationConfig(compute_dtype=dtype),
        local_files_only=True)


def apply_options(pipe: Any, options: Mapping[str, Any], *, device: str) -> dict[str, Any]:
    """Apply ``options`` to ``pipe`` (quantize, place, cache, compile, VAE); return what was done.

    cache-dit is enabled here without a step count (so an unsupported pipeline fails at
    load); ``DiffusersRunner`` re-enables it before each request whose step count or CFG
    mode differs (SCM masks need the count), as vLLM-Omni refreshes its context per request.
    """
    applied: dict[str, Any] = {"device": device}
    applied.update(_apply_scheduler(pipe, options))
    if options.get("quantization") == "fp8":
        applied["quantization"] = f"fp8 (torchao float8 dynamic per-row, "\
                                  f"{quantize_fp8(pipe.transformer, device)} Linear layers)"
    elif options.get("quantization") == "gguf":
        applied["quantization"] = f"gguf ({options['gguf_model']})"
    applied["placement"] = _place(pipe, options, device)
    if world_size(options) > 1:
        # After placement (the hooks shard tensors already on the rank's device) and before
        # cache-dit and compile, which must wrap the parallelized blocks.
        applied["parallel"] = diffusers_parallel.enable(pipe, options, device=device)
    if (config := cache_dit_config(options)) is not None:
        applied["cache_backend"] = enable_cache_dit(pipe, config, num_inference_steps=None,
                                                    separate_cfg=None)
    if compile_enabled(options):
        if not getattr(pipe.transformer, "_repeated_blocks", None):
            raise ProfileUnsupported(f"{type(pipe.transformer).__name__} declares no "
                                     "_repeated_blocks: regional torch.compile cannot apply")
        # vLLM-Omni's regionally_compile(transformer, dynamic=True): one graph for all sizes.
        pipe.transformer.compile_repeated_blocks(fullgraph=False, dynamic=True)
        applied["compile"] = "compile_repeated_blocks(fullgraph=False, dynamic=True): " + \
                             ", ".join(pipe.transformer._repeated_blocks)
    if _enabled(options, "vae_use_slicing"):
        pipe.vae.enable_slicing()
        applied["vae_use_slicing"] = True
    if _enabled(options, "vae_use_tiling"):
        # fit_vae_tiles changes them per request; remember diffusers' defaults first
        pipe.vae._omni_perf_tile_defaults = vae_tile_settings(pipe.vae)
        pipe.vae.enable_tiling()
        applied["vae_use_tiling"] = "tiles fitted to each request (see engine_metrics)"
    return applied


def _apply_scheduler(pipe: Any, options: Mapping[str, Any]) -> dict[str, Any]:
    applied: dict[str, Any] = {}
    if (shift := options.get("flow_shift")) is not None:
        pipe.scheduler = diffusers_sampling.shifted_scheduler(pipe, float(shift), "flow_shift")
        applied["flow_shift"] = float(shift)
    if (ratio := options.get("boundary_ratio")) is not None:
        if getattr(pipe, "transformer_2", None) is None or "boundary_ratio" not in pipe.config:
            raise ProfileUnsupported("boundary_ratio needs a two-transformer (Wan2.2-style) "
                                     f"pipeline; {type(pipe).__name__} has one transformer")
        pipe.register_to_config(boundary_ratio=float(ratio))
        applied["boundary_ratio"] = float(ratio)
    return applied


def _place(pipe: Any, options: Mapping[str, Any], device: str) -> str:
    import torch

    if _enabled(options, "enable_cpu_offload"):
        pipe.enable_model_cpu_offload(device=device)
        return f"enable_model_cpu_offload(device={device!r})"
    if _enabled(options, "enable_layerwise_offload"):
        offloaded = [n for n in ("transformer", "transformer_2") if getattr(pipe, n, None)]
        for name, module in pipe.components.items():
            if isinstance(module, torch.nn.Module) and name not in offloaded:
                module.to(device)
        for name in offloaded:
            getattr(pipe, name).enable_group_offload(
                onload_device=torch.device(device), offload_device=torch.device("cpu"),
                offload_type="block_level", num_blocks_per_group=1, use_stream=True)
        return f"group offload of {', '.join(offloaded)} (block_level, 1 block/group, stream)"
    pipe.to(device)
    return f"all components on {device}"


def enable_cache_dit(pipe: Any, config: Mapping[str, Any], *, num_inference_steps: int | None,
                     separate_cfg: bool | None) -> str:
    """Enable cache-dit DBCache on ``pipe`` (TaylorSeer and SCM as configured); describe it.

    cache-dit patches ``__call__`` on the pipeline's *class*; the pipeline first gets a
    private subclass (same name, which cache-dit's adapter lookup matches on), so other
    pipelines of that class in this process stay uncached.
    """
    import cache_dit
    from cache_dit import DBCacheConfig, TaylorSeerCalibratorConfig

    if not cache_dit.BlockAdapterRegister.is_supported(pipe):
        raise ProfileUnsupported(f"cache_dit: cache-dit has no adapter for {type(pipe).__name__}")
    if not getattr(type(pipe), "_omni_perf_private", False):
        base = type(pipe)
        pipe.__class__ = type(base.__name__, (base,), {"__module__": base.__module__,
                                                       "_omni_perf_private": True})
    db = DBCacheConfig(
        Fn_compute_blocks=config["Fn_compute_blocks"], Bn_compute_blocks=config["Bn_compute_blocks"],
        max_warmup_steps=config["max_warmup_steps"], max_cached_steps=config["max_cached_steps"],
        residual_diff_threshold=config["residual_diff_threshold"],
        max_continuous_cached_steps=config["max_continuous_cached_steps"],
        num_inference_steps=num_inference_steps, enable_separate_cfg=separate_cfg)
    policy = config["scm_steps_mask_policy"]
    if policy is not None and num_inference_steps is not None:
        db.steps_computation_mask = cache_dit.steps_mask(mask_policy=policy,
                                                         total_steps=num_inference_steps)
        db.steps_computation_policy = config["scm_steps_policy"]
    calibrator = None
    if config["enable_taylorseer"]:
        calibrator = TaylorSeerCalibratorConfig(taylorseer_order=config["taylorseer_order"])
    cache_dit.enable_cache(pipe, cache_config=db, calibrator_config=calibrator)
    described = f"cache_dit {db.strify()}"
    if calibrator is not None:
        described += f" + {calibrator.strify(details=True)}"
    if policy is not None and num_inference_steps is None:
        described += f" + SCM {policy}/{config['scm_steps_policy']} (mask set per request)"
    return described


def disable_cache_dit(pipe: Any) -> None:
    """Remove cache-dit's hooks from ``pipe`` (a no-op when it has none)."""
    import cache_dit

    if getattr(pipe, "_is_cached", False):
        cache_dit.disable_cache(pipe)


def uses_separate_cfg(pipe: Any, request: GenerationRequest) -> bool | None:
    """For pipelines cache-dit treats as separate-CFG (Wan): does this request run CFG?

    cache-dit counts every other transformer call as the CFG branch; without CFG (guidance
    <= 1) it would miscount steps. None (cache-dit's own default) for other pipelines.
    """
    import cache_dit

    if not cache_dit.BlockAdapterRegister.has_separate_cfg(pipe):
        return None
    guidance = request.guidance_scale
    if guidance is None:
        param = inspect.signature(pipe.__call__).parameters.get("guidance_scale")
        guidance = param.default if param is not None else None
    return guidance is not None and float(guidance) > 1.0


def cache_stats(pipe: Any) -> dict[str, Any]:
    """cache-dit's statistics of the last call: how many and which steps were cached."""
    import cache_dit

    stats = [s for s in cache_dit.summary(pipe, logging=False) if s.cache_options]
    if not stats:
        return {}
    last = stats[-1]  # the transformer-level entry: cache-dit's own summary line
    steps = sorted(int(s) for s in last.cached_steps)
    result: dict[str, Any] = {"cached_steps": len(steps), "cached_step_indices": steps,
                              "executed_steps": int(last.accumulated_executed_steps)}
    if last.cfg_cached_steps:
        result["cfg_cached_steps"] = len(last.cfg_cached_steps)
    return result


def vae_tile_settings(vae: Any) -> dict[str, int]:
    """The VAE's current tile sizes (AutoencoderKL or AutoencoderKLWan attribute names)."""
    names = ("tile_sample_min_size", "tile_latent_min_size", "tile_sample_min_height",
             "tile_sample_min_width", "tile_sample_stride_height", "tile_sample_stride_width")
    return {n: int(getattr(vae, n)) for n in names if isinstance(getattr(vae, n, None), int)}


def transformer_params(pipe: Any) -> int:
    """Number of parameters of the pipeline's transformer."""
    return sum(int(p.numel()) for p in pipe.transformer.parameters())


def pipeline_call_kwargs(pipe: Any, request: GenerationRequest,
                         options: Mapping[str, Any]) -> dict[str, Any]:
    """Keyword arguments of ``pipe(...)`` for ``request``; raises ValueError on a mismatch.

    ``options`` is accepted for options that act per call; none of the canonical ones do on
    this backend today (flow_shift and boundary_ratio are set on the pipeline at load).
    """
    import torch

    params = inspect.signature(pipe.__call__).parameters
    kwargs: dict[str, Any] = {
        "prompt": request.prompt, "height": request.height, "width": request.width,
        "num_inference_steps": request.num_inference_steps, "output_type": "np",
        # A CPU generator gives the same initial noise on every device.
        "generator": torch.Generator(device="cpu").manual_seed(request.seed),
    }
    if request.num_frames is not None:
        if "num_frames" not in params:
            raise ValueError(f"{type(pipe).__name__} makes images, but the request asks for "
                             f"{request.num_frames} frames")
        kwargs["num_frames"] = request.num_frames
    elif "num_frames" in params:
        raise ValueError(f"{type(pipe).__name__} makes videos: the request needs num_frames")
    for name in ("negative_prompt", "guidance_scale"):
        if (value := getattr(request, name)) is not None:
            if name not in params:
                raise ValueError(f"{type(pipe).__name__} does not take {name}")
            kwargs[name] = value
    kwargs.update(diffusers_sampling.sampling_kwargs(pipe, request, params))
    if "max_sequence_length" in params and transformer_params(pipe) < SMALL_TRANSFORMER_PARAMS:
        kwargs.setdefault("max_sequence_length", SMALL_MAX_SEQUENCE_LENGTH)
    return kwargs
