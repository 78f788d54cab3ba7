"""Multi-GPU profiles on the diffusers backend, inside one rank of a process group.

diffusers 0.40 parallelizes a transformer with ``enable_parallelism``: Ulysses and Ring
through ``ContextParallelConfig`` and tensor parallelism through ``TensorParallelConfig``.
Every rank runs the whole pipeline on the same seed (the context-parallel hooks split and
gather the sequence inside the transformer), so rank 0's output is the request's output.
``unsupported_reasons`` says, before any process starts, what this backend cannot do.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from ..canonical import world_size
from .base import ProfileUnsupported

# vLLM-Omni features with no diffusers counterpart: the profile needs --omni-backend=omni.
_OMNI_ONLY = {
    "cfg_parallel_size": "CFG parallelism (diffusers 0.40 has none; its parallel config "
                         "lists CFG/data parallel as a TODO)",
    "vae_patch_parallel_size": "VAE patch parallelism (a vLLM-Omni feature)",
    "hsdp_shard_size": "HSDP weight sharding (a vLLM-Omni feature)",
    "use_hsdp": "HSDP weight sharding (a vLLM-Omni feature)",
    "enable_expert_parallel": "expert parallelism (a vLLM-Omni feature)",
}


def degrees(options: Mapping[str, Any]) -> tuple[int, int, int]:
    """(ulysses, ring, tensor) degrees of ``options``; 1 where unset."""
    return (int(options.get("ulysses_degree") or 1), int(options.get("ring_degree") or 1),
            int(options.get("tensor_parallel_size") or 1))


def unsupported_reasons(options: Mapping[str, Any], *, device: str,
                        gpu_count: int) -> list[str]:
    """Why this backend cannot run the parallel part of ``options`` here (empty: it can)."""
    reasons = []
    for name, what in _OMNI_ONLY.items():
        value = options.get(name)
        if value is True or (not isinstance(value, bool) and int(value or 1) > 1):
            reasons.append(f"{name}={value}: {what}; run it with --omni-backend=omni")
    ulysses, ring, tensor = degrees(options)
    if tensor > 1 and ulysses * ring > 1:
        reasons.append("tensor_parallel_size with ulysses/ring: diffusers cannot combine "
                       "tensor and context parallelism in one ParallelConfig")
    on_gpu = device != "cpu" and gpu_count > 0
    if not on_gpu:
        # Ulysses runs on CPU over gloo (the tests use that); these two do not.
        if ring > 1:
            reasons.append("ring_degree needs an attention backend that returns the "
                           "log-sum-exp (_native_cudnn or flash): CUDA only")
        if tensor > 1:
            reasons.append("tensor_parallel_size: diffusers tensor parallelism supports "
                           "cuda devices only")
    elif (ranks := world_size(options)) > gpu_count:
        reasons.append(f"needs {ranks} GPUs, {gpu_count} visible to this engine")
    return reasons


def init_process_group(rank: int, world_size: int, device: str) -> str:
    """Join the group (NCCL on CUDA, gloo on CPU) set up by the coordinator's environment."""
    import torch
    import torch.distributed as dist

    backend = "nccl" if device.startswith("cuda") else "gloo"
    if device.startswith("cuda"):
        torch.cuda.set_device(torch.device(device))
    # The coordinator put MASTER_ADDR/MASTER_PORT in the environment (env:// rendezvous).
    dist.init_process_group(backend, rank=rank, world_size=world_size,
                            device_id=torch.device(device) if backend == "nccl" else None)
    return backend


def destroy_process_group() -> None:
    import torch.distributed as dist

    if dist.is_initialized():
        dist.destroy_process_group()


def enable(pipe: Any, options: Mapping[str, Any], *, device: str) -> str:
    """Parallelize ``pipe.transformer`` as ``options`` say; describe what was done."""
    import diffusers

    # diffusers is untyped: name its config classes as Any.
    context_parallel: Any = diffusers.ContextParallelConfig
    tensor_parallel: Any = diffusers.TensorParallelConfig
    transformer = pipe.transformer
    ulysses, ring, tensor = degrees(options)
    name = type(transformer).__name__
    if tensor > 1:
        if getattr(transformer, "_tp_plan", None) is None:
            raise ProfileUnsupported(f"{name} declares no _tp_plan: diffusers cannot shard "
                                     "it for tensor parallelism")
        transformer.enable_parallelism(config=tensor_parallel(tp_degree=tensor))
        return f"TensorParallelConfig(tp_degree={tensor})"
    if getattr(transformer, "_cp_plan", None) is None:
        raise ProfileUnsupported(f"{name} declares no _cp_plan: diffusers cannot split its "
                                 "sequence for context parallelism")
    # Ring attention merges partial results by their log-sum-exp, which the plain SDPA
    # backend does not return; cuDNN's SDPA does (measured on two H100s, results/h100x2/).
    backend = "_native_cudnn" if ring > 1 and device.startswith("cuda") else "native"
    transformer.set_attention_backend(backend)
    transformer.enable_parallelism(
        config=context_parallel(ulysses_degree=ulysses, ring_degree=ring))
    return (f"ContextParallelConfig(ulysses_degree={ulysses}, ring_degree={ring}), "
            f"attention backend {backend}")


def rank_environment(rank: int, world_size: int, port: int) -> dict[str, str]:
    """What one rank's process needs to join the group (torchrun's variable names)."""
    return {"RANK": str(rank), "LOCAL_RANK": str(rank), "WORLD_SIZE": str(world_size),
            "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port),
            # NVLink multicast stays off unless the caller turned it on: the multi-GPU
            # machines these profiles were measured on require that (docs/gpu-runs.md).
            "NCCL_NVLS_ENABLE": os.environ.get("NCCL_NVLS_ENABLE", "0")}
