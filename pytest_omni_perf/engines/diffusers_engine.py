"""The ``diffusers`` backend: a diffusers pipeline (a built-in model or any local folder)
with the profile applied by diffusers / cache-dit / torchao, hosted in a worker process.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from pytest_omni_perf import builtin_models
from pytest_omni_perf.canonical import world_size
from pytest_omni_perf.engines.base import EngineError, EngineSpec, ProfileUnsupported
from pytest_omni_perf.engines.compile_cache import compile_cache_env
from pytest_omni_perf.engines.device_answers import SM_VARIABLE, format_sm, uniform_sm
from pytest_omni_perf.engines.hosting import InProcessEngine, IsolatedEngine
from pytest_omni_perf.engines.ports import free_port
from pytest_omni_perf.engines.rank_group import RankGroupEngine
from pytest_omni_perf.hardware import HardwareInfo

if TYPE_CHECKING:
    from collections.abc import Mapping

    from pytest_omni_perf.engines.diffusers_runner import DiffusersRunner

FACTORY = "pytest_omni_perf.engines.diffusers_engine:make_runner"


def make_runner(model: str, cache_dir: str, options: Mapping[str, Any], device: str,
                dtype: str = "auto", rank: int = 0, world_size: int = 1) -> DiffusersRunner:
    """Runs inside the worker: build the built-in model once if needed, then wrap it."""
    from pytest_omni_perf.engines.diffusers_runner import DiffusersRunner

    if builtin_models.is_builtin(model):
        folder = builtin_models.ensure_model(model, Path(cache_dir) if cache_dir else None)
    else:
        folder = Path(model)
    return DiffusersRunner(str(folder), options, device=device, dtype=dtype, rank=rank,
                           world_size=world_size)


def preload_for(model: str, cache_dir: str, device: str,
                sm: tuple[int, int] | None = None) -> tuple[str, ...]:
    """What the zygote imports before forking this model's worker (engines/zygote.py):
    torch, transformers and diffusers, then the folder's pipeline class (diffusers imports it
    lazily, with its models' and text encoders' modules; unknown for a built-in model not
    built yet).

    On CUDA with torchao installed, importing that class asks the CUDA runtime for the
    device's compute capability (torchao 0.17, measured on an H200,
    results/h200/startup/fork-check.jsonl), after which no forked child may use CUDA. So it
    is preloaded there only when ``sm``, the capability every GPU of the run shares, lets the
    zygote answer from NVML instead (``device_answers``); without it the worker imports the
    class after the fork. The zygote checks every import anyway (``zygote.preload``); leaving
    one out up front saves the start that would find it out."""
    import importlib.util

    from pytest_omni_perf.capabilities import pipeline_class_of

    base = ("torch", "transformers", "diffusers")
    if device != "cpu" and sm is None and importlib.util.find_spec("torchao") is not None:
        return base
    folder = builtin_models.folder_of(model, Path(cache_dir) if cache_dir else None) \
        if builtin_models.is_builtin(model) else Path(model)
    name = pipeline_class_of(str(folder))
    return (*base, *((f"diffusers:{name}",) if name else ()))


def check_model(model: str) -> None:
    """Fail in the parent, in milliseconds, for a model that cannot exist."""
    if builtin_models.is_builtin(model):
        return
    folder = Path(model)
    if not folder.is_dir():
        raise EngineError(
            f"model {model!r} is neither a built-in ({', '.join(builtin_models.BUILTIN_MODELS)}) "
            "nor an existing local diffusers folder (the diffusers backend loads no hub ids)")
    if not (folder / "model_index.json").is_file():
        raise EngineError(f"model folder {folder} has no model_index.json: not a diffusers pipeline")


def create(spec: EngineSpec, hw: HardwareInfo) -> IsolatedEngine | InProcessEngine | RankGroupEngine:
    """A diffusers engine for ``spec``; ProfileUnsupported when it cannot honour the profile."""
    from pytest_omni_perf.engines import diffusers_parallel
    from pytest_omni_perf.engines.diffusers_options import unsupported_reason

    gpus = [g for g in hw.gpus if not spec.devices or g.index in spec.devices]
    device = "cuda" if gpus else "cpu"
    reason = unsupported_reason(
        spec.options, device=device, sm=min((g.sm for g in gpus), default=None),
        gpu_count=len(gpus))
    if reason:
        raise ProfileUnsupported(f"diffusers backend: {reason}")
    check_model(spec.model)
    kwargs = {"model": spec.model, "cache_dir": spec.cache_dir, "options": dict(spec.options),
              "device": device}
    # One worker process per GPU the profile spans (what it asks for beyond Ulysses, Ring
    # and tensor parallelism was refused above).
    ranks = world_size(spec.options)
    if spec.in_process:
        if ranks > 1:
            raise ProfileUnsupported(f"{spec.profile_name} needs {ranks} processes (one per "
                                     "GPU): drop --omni-in-process to run it")
        return InProcessEngine(spec, FACTORY, kwargs, device=device)
    env = {"HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    # A persistent inductor cache makes the second run's compile cold start cheap.
    env.update(compile_cache_env(spec))
    if ranks == 1:
        preload: tuple[str, ...] | None = None  # exec: the worker imports everything itself
        if spec.launch == "zygote":
            # One zygote serves every GPU of the run: it may answer device queries with a
            # capability only when they all share it.
            sm = uniform_sm([g.sm for g in hw.gpus]) if device == "cuda" else None
            if sm is not None:
                env[SM_VARIABLE] = format_sm(sm)
            preload = preload_for(spec.model, spec.cache_dir, device, sm)
        return IsolatedEngine(spec, FACTORY, kwargs, env=env, device=device, preload=preload)
    port = free_port()
    return RankGroupEngine(
        spec, FACTORY, ranks, device=device,
        rank_kwargs=lambda rank: {**kwargs, "rank": rank, "world_size": ranks},
        rank_env=lambda rank: {**env, **diffusers_parallel.rank_environment(rank, ranks, port)})
