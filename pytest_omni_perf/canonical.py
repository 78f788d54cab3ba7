"""The canonical option set, and its two spellings: ``Omni(**kwargs)`` and ``vllm serve --omni``.

Profiles name vLLM-Omni's own ``OmniDiffusionConfig`` / ``DiffusionParallelConfig`` fields, so
a profile reads like the config a user would write. Offline and online spell some of them
differently (``ulysses_degree`` is ``--usp`` on the command line, ``cache_config`` is a JSON
string there); this table is the one place that knows both spellings.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Mapping
from typing import Any, Literal

from pytest_omni_perf import passthrough
from pytest_omni_perf.numeric import NumberError, Range

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
    range: Range | None = None
    """For numbers: what they may be (always finite)."""

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
        if self.kind is int and isinstance(value, int) and value < 1:
            return f"expected a degree >= 1, got {value}"
        if self.range is not None:
            try:
                self.range.check(value, "")
            except NumberError as exc:
                return str(exc)
        return _non_finite(value)


def _non_finite(value: Any, path: str = "") -> str | None:
    """Why a nested table holds a NaN or infinity (TOML allows both), or None."""
    if isinstance(value, float) and not math.isfinite(value):
        return f"{path + ': ' if path else ''}expected a finite number, got {value!r}"
    items = value.items() if isinstance(value, Mapping) else (
        enumerate(value) if isinstance(value, list) else ())
    for key, item in items:
        if (why := _non_finite(item, f"{path}.{key}" if path else str(key))) is not None:
            return why
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
                        help="quantization method of the DiT"),
        # vLLM-Omni has no flags of their own for these two: they travel inside
        # quantization_config / --diffusion-quantization-config (see _quantization).
        CanonicalOption("gguf_model", str, "", "value",
                        help="pre-quantized GGUF weights (path or id) for quantization='gguf'"),
        CanonicalOption("ignored_layers", list, "", "value",
                        help="layer names FP8 leaves unquantized"),
        CanonicalOption("cache_backend", str, "--cache-backend", "value",
                        choices=("none", "cache_dit", "tea_cache", "mag_cache", "sea_cache",
                                 "step_cache")),
        CanonicalOption("cache_config", dict, "--cache-config", "json"),
        CanonicalOption("enable_cpu_offload", bool, "--enable-cpu-offload", "switch"),
        CanonicalOption("enable_layerwise_offload", bool, "--enable-layerwise-offload", "switch"),
        CanonicalOption("vae_use_slicing", bool, "--vae-use-slicing", "switch"),
        CanonicalOption("vae_use_tiling", bool, "--vae-use-tiling", "switch"),
        CanonicalOption("flow_shift", _NUMBER, "--flow-shift", "value",
                        range=Range(0, low_open=True)),
        # Wan 2.2's switch from the high-noise to the low-noise expert, a fraction of steps.
        CanonicalOption("boundary_ratio", _NUMBER, "--boundary-ratio", "value",
                        range=Range(0, 1)),
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

# DiffusionCacheConfig keys per backend (vllm_omni/diffusion/data.py, 0.26 and 0.30).
# vLLM-Omni silently keeps unknown keys, so a typo would measure the defaults: check here.
CACHE_CONFIG_KEYS: Mapping[str, frozenset[str]] = {
    "cache_dit": frozenset({
        "Fn_compute_blocks", "Bn_compute_blocks", "max_warmup_steps", "max_cached_steps",
        "residual_diff_threshold", "max_continuous_cached_steps", "enable_taylorseer",
        "taylorseer_order", "scm_steps_mask_policy", "scm_steps_policy",
        "force_refresh_step_hint", "force_refresh_step_policy"}),
    "tea_cache": frozenset({"rel_l1_thresh", "coefficients"}),
    "mag_cache": frozenset({"mag_threshold", "mag_max_skip_steps", "mag_retention_ratio",
                            "mag_ratios", "mag_calibrate"}),
    "sea_cache": frozenset({"sea_threshold", "sea_residual_order", "sea_max_consecutive_cached",
                            "sea_power_exp"}),
}

# Degrees whose product is the number of GPUs a profile occupies (DiffusionParallelConfig's
# world_size = tp * sp * cfg; sp = ulysses * ring). VAE patch parallel and HSDP reuse them.
_WORLD_FACTORS = ("tensor_parallel_size", "ulysses_degree", "ring_degree", "cfg_parallel_size")


def spellings() -> dict[str, str]:
    """Every spelling of a canonical option -> its field name: the field name, with dashes,
    its ``vllm serve`` flag without dashes (``usp`` for ulysses_degree) and vLLM's other
    long flags (``ulysses-degree``)."""
    names: dict[str, str] = {}
    for option in CANONICAL_OPTIONS.values():
        names[option.name] = names[option.name.replace("_", "-")] = option.name
        if option.flag:
            names[option.flag.lstrip("-")] = option.name
    names.update({"ulysses-degree": "ulysses_degree", "ring-degree": "ring_degree"})
    return names


def validate_options(options: Mapping[str, Any]) -> list[str]:
    """Problems with ``options`` as ``"field: why"`` strings (empty when valid).

    A name outside the canonical set is a pass-through option (``passthrough``): valid when
    it is an option name, not another spelling or a near-miss of a canonical field, and its
    value is JSON-able. Whether vLLM-Omni knows it is checked where vLLM-Omni is installed.
    """
    problems = []
    aliases = spellings()
    for name, value in options.items():
        option = CANONICAL_OPTIONS.get(name)
        if option is not None:
            if (why := option.check(value)) is not None:
                problems.append(f"{name}: {why}")
        elif name in aliases:
            problems.append(f"{name}: another spelling of {aliases[name]}; profiles write "
                            f"the field name {aliases[name]}")
        elif (why := passthrough.name_problem(name, CANONICAL_OPTIONS)) is not None:
            problems.append(f"{name}: {why}")
        elif (why := passthrough.value_problem(value)) is not None:
            problems.append(f"{name}: {why}")
    known = CACHE_CONFIG_KEYS.get(str(options.get("cache_backend")))
    if known is not None and isinstance(options.get("cache_config"), Mapping):
        for key in sorted(set(options["cache_config"]) - known):
            problems.append(f"cache_config.{key}: not a {options['cache_backend']} setting "
                            f"(known: {', '.join(sorted(known))})")
    if options.get("cache_config") and options.get("cache_backend") in (None, "none"):
        problems.append("cache_config: given without a cache_backend")
    if (options.get("gguf_model") or options.get("ignored_layers")) \
            and not options.get("quantization"):
        problems.append("gguf_model/ignored_layers: given without quantization")
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


def _quantization(options: Mapping[str, Any]) -> str | dict[str, Any] | None:
    """``quantization_config``: a method name, or a dict when it carries extra settings."""
    method = options.get("quantization")
    if method is None:
        return None
    extra = {k: options[k] for k in ("gguf_model", "ignored_layers") if options.get(k)}
    return {"method": method, **extra} if extra else method


def omni_kwargs(options: Mapping[str, Any]) -> dict[str, Any]:
    """Keyword arguments for ``vllm_omni.Omni(model, **kwargs)``.

    Parallel fields stay flat, as the guide writes them: ``Omni`` folds them into its
    ``DiffusionParallelConfig`` in 0.26 and 0.30 alike. Quantization goes in
    ``quantization_config``, the spelling both versions take without a warning.
    Pass-through options go as they are, under their snake_case name.
    """
    kwargs: dict[str, Any] = {}
    for name, value in options.items():
        if value is None or name in ("quantization", "gguf_model", "ignored_layers"):
            continue
        key = name if name in CANONICAL_OPTIONS else passthrough.option_name(name)
        kwargs[key] = dict(value) if isinstance(value, Mapping) else value
    quantization = _quantization(options)
    if quantization is not None:
        kwargs["quantization_config"] = quantization
    return kwargs


def serve_args(options: Mapping[str, Any]) -> list[str]:
    """argv tokens after ``vllm serve MODEL --omni`` that ask for the same configuration;
    pass-through options follow the canonical ones (``passthrough.argv``)."""
    argv: list[str] = []
    options, rest = passthrough.split(options, CANONICAL_OPTIONS)
    for name, value in options.items():
        option = CANONICAL_OPTIONS[name]
        if _is_default(value) or not option.flag:
            continue
        if name == "quantization":
            quantization = _quantization(options)
            if isinstance(quantization, dict):
                argv += ["--diffusion-quantization-config",
                         json.dumps(quantization, sort_keys=True, separators=(",", ":"))]
                continue
        if option.style == "switch":
            argv.append(option.flag)
        elif option.style == "json":
            argv += [option.flag, json.dumps(value, sort_keys=True, separators=(",", ":"))]
        elif option.group == "parallel" and value == 1:
            continue  # degree 1 is the default: keep the command line minimal
        else:
            argv += [option.flag, str(value)]
    return argv + passthrough.argv(rest)
