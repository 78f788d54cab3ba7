"""The canonical option set, and its two spellings: ``Omni(**kwargs)`` and ``vllm serve --omni``.

Profiles name vLLM-Omni's own ``OmniDiffusionConfig`` / ``DiffusionParallelConfig`` fields, so
a profile reads like the config a user would write. Offline and online spell some of them
differently (``ulysses_degree`` is ``--usp`` on the command line, ``cache_config`` is a JSON
string there); this table is the one place that knows both spellings.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping
from typing import Any, Literal

FlagStyle = Literal["switch", "value", "json"]
Group = Literal["config", "parallel"]


@dataclasses.dataclass(frozen=True)
class CanonicalOption:
    """One option: its Python type, where it lives in vLLM-Omni, and its serve flag."""

    name: str
    kind: type | tuple[type, ...]
    flag: str
    style: FlagStyle
    group: Group = "config"
    choices: tuple[Any, ...] = ()
    help: str = ""

    def check(self, value: Any) -> str | None:
        """Return why ``value`` is not acceptable for this option, or None."""
        if value is None:
            return None
        # bool is an int subclass: never accept True where a degree is wanted.
        if isinstance(value, bool) and self.kind is not bool:
            return f"expected {_type_name(self.kind)}, got a boolean"
        if not isinstance(value, self.kind):
            return f"expected {_type_name(self.kind)}, got {type(value).__name__} {value!r}"
        if self.choices and value not in self.choices:
            return f"expected one of {', '.join(map(repr, self.choices))}, got {value!r}"
        if self.kind is int and value < 1:
            return f"expected a degree >= 1, got {value}"
        return None


def _type_name(kind: type | tuple[type, ...]) -> str:
    if isinstance(kind, tuple):
        return " or ".join(k.__name__ for k in kind)
    return {"bool": "true/false", "dict": "a table"}.get(kind.__name__, kind.__name__)


_NUMBER = (int, float)

CANONICAL_OPTIONS: Mapping[str, CanonicalOption] = {
    o.name: o
    for o in (
        CanonicalOption("enforce_eager", bool, "--enforce-eager", "switch",
                        help="false (vLLM-Omni's default) = regional torch.compile"),
        CanonicalOption("quantization", str, "--quantization", "value", choices=("fp8", "gguf"),
                        help="online quantization method of the DiT"),
        CanonicalOption("gguf_model", str, "--gguf-model", "value",
                        help="pre-quantized GGUF weights (path or id) for quantization='gguf'"),
        CanonicalOption("cache_backend", str, "--cache-backend", "value",
                        choices=("none", "cache_dit", "tea_cache", "mag_cache", "sea_cache",
                                 "step_cache")),
        CanonicalOption("cache_config", dict, "--cache-config", "json"),
        CanonicalOption("enable_cpu_offload", bool, "--enable-cpu-offload", "switch"),
        CanonicalOption("enable_layerwise_offload", bool, "--enable-layerwise-offload", "switch"),
        CanonicalOption("vae_use_slicing", bool, "--vae-use-slicing", "switch"),
        CanonicalOption("vae_use_tiling", bool, "--vae-use-tiling", "switch"),
        CanonicalOption("flow_shift", _NUMBER, "--flow-shift", "value"),
        CanonicalOption("boundary_ratio", _NUMBER, "--boundary-ratio", "value"),
        CanonicalOption("dtype", str, "--dtype", "value",
                        choices=("auto", "float32", "bfloat16", "float16")),
        CanonicalOption("ulysses_degree", int, "--usp", "value", group="parallel"),
        CanonicalOption("ring_degree", int, "--ring", "value", group="parallel"),
        CanonicalOption("cfg_parallel_size", int, "--cfg-parallel-size", "value",
                        group="parallel", choices=(1, 2)),
        CanonicalOption("tensor_parallel_size", int, "--tensor-parallel-size", "value",
                        group="parallel"),
        CanonicalOption("vae_patch_parallel_size", int, "--vae-patch-parallel-size", "value",
                        group="parallel"),
        CanonicalOption("use_hsdp", bool, "--use-hsdp", "switch", group="parallel"),
        CanonicalOption("hsdp_shard_size", int, "--hsdp-shard-size", "value", group="parallel"),
        CanonicalOption("enable_expert_parallel", bool, "--enable-expert-parallel", "switch",
                        group="parallel"),
    )
}

# Degrees whose product is the number of GPUs a profile occupies (DiffusionParallelConfig's
# world_size = tp * sp * cfg; sp = ulysses * ring). VAE patch parallel and HSDP reuse them.
_WORLD_FACTORS = ("tensor_parallel_size", "ulysses_degree", "ring_degree", "cfg_parallel_size")


def validate_options(options: Mapping[str, Any]) -> list[str]:
    """Problems with ``options`` as ``"field: why"`` strings (empty when valid)."""
    problems = []
    for name, value in options.items():
        option = CANONICAL_OPTIONS.get(name)
        if option is None:
            problems.append(f"{name}: unknown option (known: {', '.join(CANONICAL_OPTIONS)})")
        elif (why := option.check(value)) is not None:
            problems.append(f"{name}: {why}")
    return problems


def world_size(options: Mapping[str, Any]) -> int:
    """GPUs a profile spans, as vLLM-Omni computes it (VAE patch and HSDP ride on these)."""
    size = 1
    for name in _WORLD_FACTORS:
        size *= int(options.get(name) or 1)
    # VAE patch parallel and HSDP shard over existing ranks, but need at least that many.
    for name in ("vae_patch_parallel_size", "hsdp_shard_size"):
        size = max(size, int(options.get(name) or 1))
    return size


def _is_default(value: Any) -> bool:
    return value is None or value is False or value == "none"


def omni_kwargs(options: Mapping[str, Any]) -> dict[str, Any]:
    """Keyword arguments for ``vllm_omni.Omni(model, **kwargs)``.

    Parallel fields are nested under ``parallel_config``: ``Omni`` also accepts them flat, but
    ``OmniDiffusionConfig.from_kwargs`` (what ``Omni`` builds in the end) only takes the nested
    form, so this spelling is valid for both.
    """
    kwargs: dict[str, Any] = {}
    parallel: dict[str, Any] = {}
    for name, value in options.items():
        if value is None:
            continue
        if CANONICAL_OPTIONS[name].group == "parallel":
            parallel[name] = value
        else:
            kwargs[name] = dict(value) if isinstance(value, Mapping) else value
    if parallel:
        kwargs["parallel_config"] = parallel
    return kwargs


def serve_args(options: Mapping[str, Any]) -> list[str]:
    """argv tokens after ``vllm serve MODEL --omni`` that ask for the same configuration."""
    argv: list[str] = []
    for name, value in options.items():
        option = CANONICAL_OPTIONS[name]
        if _is_default(value):
            continue
        if option.style == "switch":
            argv.append(option.flag)
        elif option.style == "json":
            argv += [option.flag, json.dumps(value, sort_keys=True, separators=(",", ":"))]
        elif option.group == "parallel" and value == 1:
            continue  # degree 1 is the default: keep the command line minimal
        else:
            argv += [option.flag, str(value)]
    return argv
