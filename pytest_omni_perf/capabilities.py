"""What a vLLM-Omni diffusion model can actually do, read from its classes.

vLLM-Omni silently ignores several options on models that lack the hooks they need (``--usp``
without ``_sp_plan`` only logs a warning, a cache on a ``_NO_CACHE_ACCELERATION`` pipeline is
switched off, regional compile without ``_repeated_blocks`` is skipped). A perf suite that ran
such a profile would report a meaningless ~1.0x speedup as a result, so the plugin asks
:func:`discover` first and skips the profile with :func:`unsupported_reason`.

Only :func:`discover` imports vllm_omni (lazily; on a CPU-only machine the caller must first make
it importable, see ``tests/contract/vllm_omni_cpu_shim.py``). The rest is pure.
"""

from __future__ import annotations

import ast
import inspect
import json
import re
import sys
import textwrap
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# The attribute names vLLM-Omni reads, kept in one place so a rename shows up here.
_DEFAULT_DIT_ATTRS = ("transformer", "transformer_2", "dit", "unet")
_TP_LAYER_RE = re.compile(r"\b(ColumnParallelLinear|RowParallelLinear|QKVParallelLinear|MergedColumnParallelLinear)\b")
_MOE_RE = re.compile(r"\bFusedMoE\b")
_TRANSFORMER_NAME_RE = re.compile(r"(Transformer|DiT|Dit|UNet|Unet)")


@dataclass(frozen=True)
class ModelCapabilities:
    """Which vLLM-Omni optimizations a pipeline supports (True = the hooks exist)."""

    pipeline_class: str
    compile: bool
    sequence_parallel: bool
    cfg_parallel: bool
    tensor_parallel: bool
    layerwise_offload: bool
    cache_acceleration: bool
    tea_cache: bool
    hsdp: bool
    expert_parallel: bool
    transformer_classes: tuple[str, ...] = ()
    # A TeaCache context extractor exists, so user-supplied coefficients would work even
    # where no built-in coefficients do.
    tea_cache_extractor: bool = False
    notes: tuple[str, ...] = ()


def pipeline_class_of(model_folder_or_id: str) -> str | None:
    """Return ``_class_name`` from a local folder's model_index.json, else None.

    Hub ids return None: looking them up would need the network.
    """
    index = Path(model_folder_or_id) / "model_index.json"
    if not index.is_file():
        return None
    try:
        data = json.loads(index.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    name = data.get("_class_name") if isinstance(data, dict) else None
    return name if isinstance(name, str) and name else None


def _options_view(options: Mapping[str, Any]) -> dict[str, Any]:
    # Profiles may nest parallel fields as vLLM-Omni's from_kwargs wants; flat keys win.
    merged: dict[str, Any] = {}
    nested = options.get("parallel_config")
    if isinstance(nested, Mapping):
        merged.update(nested)
    merged.update({k: v for k, v in options.items() if k != "parallel_config"})
    return merged


def _int(value: Any) -> int:
    try:
        return int(value) if value is not None else 1
    except (TypeError, ValueError):
        return 1


def _cache_config(value: Any) -> Mapping[str, Any]:
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError:
            return {}
    return value if isinstance(value, Mapping) else {}


def unsupported_reason(options: Mapping[str, Any], caps: ModelCapabilities) -> str | None:
    """Why vLLM-Omni would not really apply ``options`` (canonical names) to this model.

    None means every requested optimization has its hooks. Several problems are joined
    with "; ". Pure: no imports, no I/O.
    """
    opts = _options_view(options)
    where = "/".join(caps.transformer_classes) or f"{caps.pipeline_class} (transformer class not found)"
    reasons: list[str] = []

    granularity = opts.get("diffusion_compile_granularity") or "regional"
    if opts.get("enforce_eager") is False and granularity == "regional" and not caps.compile:
        reasons.append(
            f"enforce_eager=False: {where} has no _repeated_blocks (and {caps.pipeline_class} no "
            "setup_compile), vLLM-Omni would skip regional compilation and run eager"
        )
    sp = {k: _int(opts.get(k)) for k in ("ulysses_degree", "ring_degree", "allgather_degree")}
    for key, degree in sp.items():
        if degree > 1 and not caps.sequence_parallel:
            reasons.append(
                f"{key}={degree}: {where} has no _sp_plan, vLLM-Omni would only warn and run without SP"
            )
    cfg = _int(opts.get("cfg_parallel_size"))
    if cfg > 1 and not caps.cfg_parallel:
        reasons.append(
            f"cfg_parallel_size={cfg}: {caps.pipeline_class} does not inherit CFGParallelMixin, "
            "its guidance branches would not be split across ranks"
        )
    tp = _int(opts.get("tensor_parallel_size"))
    if tp > 1 and not caps.tensor_parallel:
        reasons.append(
            f"tensor_parallel_size={tp}: {where} uses no Column/Row/QKVParallelLinear layers, "
            "nothing would be sharded"
        )
    if opts.get("enable_layerwise_offload") and not caps.layerwise_offload:
        reasons.append(
            f"enable_layerwise_offload: {where} declares no _layerwise_offload_blocks_attrs (nor an "
            "_offload_plan), vLLM-Omni would only warn and not offload"
        )
    backend = opts.get("cache_backend")
    if backend not in (None, "none"):
        if not caps.cache_acceleration:
            reasons.append(
                f"cache_backend={backend}: {caps.pipeline_class} is in vLLM-Omni's "
                "_NO_CACHE_ACCELERATION, the cache would be disabled with a warning"
            )
        elif backend == "tea_cache" and not caps.tea_cache:
            if not caps.tea_cache_extractor:
                reasons.append(f"cache_backend=tea_cache: no TeaCache extractor for {where}, engine start would fail")
            elif "coefficients" not in _cache_config(opts.get("cache_config")):
                reasons.append(
                    f"cache_backend=tea_cache: no built-in TeaCache coefficients for {where} "
                    "(pass cache_config.coefficients), engine start would fail"
                )
    if opts.get("use_hsdp") and not caps.hsdp:
        reasons.append(f"use_hsdp: {where} has no _hsdp_shard_conditions, vLLM-Omni's HSDP raises at load")
    if opts.get("enable_expert_parallel") and not caps.expert_parallel:
        reasons.append(f"enable_expert_parallel: {where} has no FusedMoE layers, nothing to distribute")
    return "; ".join(reasons) or None


# --- discovery (imports vllm_omni) ---------------------------------------------------------


def _resolve_pipeline(name: str) -> tuple[str, type]:
    from vllm_omni.diffusion import registry

    table: Mapping[str, tuple[str, ...]] = registry._DIFFUSION_MODELS
    # Also accept vLLM-Omni's own class name (e.g. "Wan22Pipeline" for arch "WanPipeline").
    arch = name if name in table else next((a for a, entry in table.items() if entry[-1] == name), None)
    if arch is None:
        raise ValueError(f"{name!r} is not a vLLM-Omni diffusion pipeline (not in its model registry)")
    cls = registry.DiffusionModelRegistry._try_load_model_cls(arch)
    if cls is None:
        # The registry logs the underlying error and returns None; keep it an import problem.
        raise ImportError(f"vLLM-Omni could not import the pipeline class for {arch!r} (see its log)")
    return arch, cls


def _resolve_name(node: ast.expr, module: Any) -> Any:
    if isinstance(node, ast.Name):
        return getattr(module, node.id, None)
    if isinstance(node, ast.Attribute) and not (isinstance(node.value, ast.Name) and node.value.id == "self"):
        base = _resolve_name(node.value, module)
        return getattr(base, node.attr, None) if base is not None else None
    return None


def _is_module_class(obj: Any) -> bool:
    import torch

    return inspect.isclass(obj) and issubclass(obj, torch.nn.Module)


def _source_ast(obj: Any) -> ast.stmt | None:
    try:
        tree = ast.parse(textwrap.dedent(inspect.getsource(obj)))
    except (OSError, TypeError, SyntaxError):
        return None
    return tree.body[0] if tree.body else None


def _built_classes(node: ast.AST, module: Any, depth: int) -> list[type]:
    """Transformer-like module classes that ``node`` instantiates, following factory functions."""
    out: list[type] = []
    if isinstance(node, ast.FunctionDef) and node.returns is not None:
        out.append(_resolve_name(node.returns, module))
    for call in ast.walk(node):
        if not isinstance(call, ast.Call):
            continue
        obj = _resolve_name(call.func, module)
        if inspect.isfunction(obj) and depth > 0 and obj.__module__.startswith("vllm_omni."):
            fn = _source_ast(obj)
            if fn is not None:
                out.extend(_built_classes(fn, sys.modules.get(obj.__module__), depth - 1))
        else:
            out.append(obj)
    return [c for c in out if _is_module_class(c) and _TRANSFORMER_NAME_RE.search(c.__name__)]


def _find_transformers(pipeline_cls: type) -> tuple[list[type], bool]:
    """Transformer classes a pipeline builds for its DiT attributes; bool = found by heuristic."""
    dit_attrs = tuple(getattr(pipeline_cls, "_dit_modules", None) or _DEFAULT_DIT_ATTRS)
    parsed = [
        (c, _source_ast(c), sys.modules.get(c.__module__))
        for c in pipeline_cls.__mro__
        if c.__module__.startswith("vllm_omni.")
    ]
    methods = {
        fn.name: (fn, module)
        for _cls, node, module in reversed(parsed)
        if isinstance(node, ast.ClassDef)
        for fn in node.body
        if isinstance(fn, ast.FunctionDef)
    }
    found: list[type] = []
    for _cls, node, module in parsed:
        for stmt in ast.walk(node) if node is not None else ():
            if not (isinstance(stmt, ast.Assign) and isinstance(stmt.value, ast.Call)):
                continue
            if not any(isinstance(t, ast.Attribute) and t.attr in dit_attrs for t in stmt.targets):
                continue
            func = stmt.value.func
            direct = _resolve_name(func, module)
            if _is_module_class(direct):
                candidates = [direct]  # whatever its name: it is what the DiT attribute holds
            elif isinstance(func, ast.Attribute) and isinstance(func.value, ast.Name) and func.value.id == "self":
                # A helper such as Wan2.2's self._create_transformer(...).
                fn, fn_module = methods.get(func.attr, (None, None))
                candidates = _built_classes(fn, fn_module, 1) if fn is not None else []
            else:
                candidates = _built_classes(stmt.value, module, 1)
            found.extend(c for c in candidates if c is not pipeline_cls and c not in found)
    if found:
        return found, False
    # Last resort: the transformer-like module classes the pipeline's module imports.
    module = sys.modules.get(pipeline_cls.__module__)
    for value in vars(module).values() if module is not None else ():
        if (
            _is_module_class(value)
            and value.__module__.startswith("vllm_omni.diffusion.models.")
            and any(hasattr(value, a) for a in ("_repeated_blocks", "_sp_plan", "_layerwise_offload_blocks_attrs"))
            and value not in found
        ):
            found.append(value)
    return found, bool(found)


def _module_source(cls: type) -> str:
    # A transformer's TP/MoE layers live in its own module or in those of its base classes.
    texts = []
    for base in cls.__mro__:
        module = sys.modules.get(base.__module__)
        if module is not None and base.__module__.startswith("vllm_omni."):
            try:
                texts.append(inspect.getsource(module))
            except (OSError, TypeError):
                pass
    return "\n".join(texts)


def _tea_cache_tables() -> tuple[Mapping[str, Any], Mapping[str, Any], Any]:
    try:
        from vllm_omni.diffusion.cache.teacache.backend import CUSTOM_TEACACHE_ENABLERS
        from vllm_omni.diffusion.cache.teacache.config import _MODEL_COEFFICIENTS
        from vllm_omni.diffusion.cache.teacache.extractors import get_extractor
    except ImportError:
        return {}, {}, None
    return _MODEL_COEFFICIENTS, CUSTOM_TEACACHE_ENABLERS, get_extractor


def has_tea_cache_extractor(get_extractor: Any, transformer: type) -> bool:
    """Whether vLLM-Omni's TeaCache has an extractor for ``transformer``.

    0.30's ``get_extractor`` takes the class and walks its MRO; 0.26's takes only the exact
    class name (a class is never found there: "Unknown model type"), which is also what its
    runtime looks up (``pipeline.transformer.__class__.__name__``). Ask the 0.30 way, then
    the 0.26 way, so both versions report what they will really do.
    """
    for key in (transformer, transformer.__name__):
        try:
            get_extractor(key)
        except (ValueError, TypeError, KeyError):
            continue
        return True
    return False


def discover(pipeline_class_name: str) -> ModelCapabilities:
    """Inspect vLLM-Omni's classes for ``pipeline_class_name`` (a model_index ``_class_name``).

    Imports vllm_omni; an ImportError propagates. Unknown names raise ValueError.
    """
    from vllm_omni.diffusion import registry
    from vllm_omni.diffusion.distributed.cfg_parallel import CFGParallelMixin

    arch, pipeline_cls = _resolve_pipeline(pipeline_class_name)
    transformers, heuristic = _find_transformers(pipeline_cls)
    notes: list[str] = [f"vLLM-Omni class {pipeline_cls.__module__}.{pipeline_cls.__name__}"]
    if not transformers:
        notes.append("no transformer class found: transformer capabilities reported as absent")
    elif heuristic:
        notes.append("transformer classes guessed from the pipeline module's imports")

    compile_ok = any(getattr(t, "_repeated_blocks", None) for t in transformers)
    if not compile_ok and callable(getattr(pipeline_cls, "setup_compile", None)):
        compile_ok = True
        notes.append("compile via the pipeline's own setup_compile()")
    layerwise = False
    for t in transformers:
        if getattr(t, "_layerwise_offload_blocks_attrs", None):
            layerwise = True
        elif getattr(t, "_layerwise_offload_blocks_attr", None):
            layerwise = True
            notes.append(f"{t.__name__} uses the deprecated _layerwise_offload_blocks_attr")
    plan = getattr(pipeline_cls, "_offload_plan", None)
    if not layerwise and getattr(plan, "block_attrs", None):
        layerwise = True
        notes.append("layerwise offload via the pipeline's _offload_plan")
    sources = {t: _module_source(t) for t in transformers}

    no_cache: set[str] = set(getattr(registry, "_NO_CACHE_ACCELERATION", ()))
    cache_ok = arch not in no_cache and pipeline_cls.__name__ not in no_cache
    coefficients, custom_enablers, get_extractor = _tea_cache_tables()
    extractor = get_extractor is not None and \
        any(has_tea_cache_extractor(get_extractor, t) for t in transformers)
    custom = arch in custom_enablers or pipeline_cls.__name__ in custom_enablers
    has_coefficients = any(t.__name__ in coefficients for t in transformers)
    tea = cache_ok and (custom or (extractor and has_coefficients))
    if cache_ok and extractor and not has_coefficients and not custom:
        notes.append("TeaCache extractor but no built-in coefficients: pass cache_config.coefficients")

    return ModelCapabilities(
        pipeline_class=arch,
        compile=compile_ok,
        sequence_parallel=any(getattr(t, "_sp_plan", None) is not None for t in transformers),
        cfg_parallel=issubclass(pipeline_cls, CFGParallelMixin),
        tensor_parallel=any(_TP_LAYER_RE.search(s) for s in sources.values()),
        layerwise_offload=layerwise,
        cache_acceleration=cache_ok,
        tea_cache=tea,
        hsdp=any(getattr(t, "_hsdp_shard_conditions", None) for t in transformers),
        expert_parallel=any(_MOE_RE.search(s) for s in sources.values()),
        transformer_classes=tuple(t.__name__ for t in transformers),
        tea_cache_extractor=extractor or custom,
        notes=tuple(notes),
    )
