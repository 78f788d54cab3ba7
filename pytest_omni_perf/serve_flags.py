"""The shipped server's command-line flags: vLLM-Omni's ``vllm serve --omni`` flags as far
as canonical options reach (``canonical.CANONICAL_OPTIONS``), parsed into profile options.

Its own module, below both sides: the server (``serve.cli``) parses them, and the
``omni-server`` launcher (``engines.omni_server``) checks a case row's pass-through flags
against them before it starts the server.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Mapping, Sequence
from typing import Any

from pytest_omni_perf.canonical import CANONICAL_OPTIONS, CanonicalOption

# vLLM's other spellings of the same flags (``vllm serve --help=all``).
_ALIASES: Mapping[str, tuple[str, ...]] = {
    "ulysses_degree": ("--ulysses-degree",), "ring_degree": ("--ring-degree",),
    "tensor_parallel_size": ("-tp",), "quantization": ("-q",),
    "enable_expert_parallel": ("-ep",),
}
# vLLM's --dtype also takes these names; canonical profiles use the long ones.
_DTYPE_NAMES = {"half": "float16", "float": "float32"}


def _json_value(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"not valid JSON ({exc}): {text!r}") from None


def _add_option(parser: argparse.ArgumentParser, option: CanonicalOption) -> None:
    flags = (option.flag, *_ALIASES.get(option.name, ()))
    if option.style == "switch":
        parser.add_argument(*flags, dest=option.name, action=argparse.BooleanOptionalAction,
                            default=None, help=option.help or None)
        return
    if option.style == "json":
        parser.add_argument(*flags, dest=option.name, type=_json_value, default=None,
                            metavar="JSON", help=option.help or None)
        return
    choices: Sequence[Any] | None = option.choices or None
    if option.name == "dtype":
        choices = (*option.choices, *_DTYPE_NAMES)
    kind: Any = option.kind if isinstance(option.kind, type) else float  # int-or-float -> float
    parser.add_argument(*flags, dest=option.name, type=kind, choices=choices, default=None,
                        help=option.help or None)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser: vLLM-Omni's serve flags, as far as canonical options reach."""
    parser = argparse.ArgumentParser(
        prog="python -m pytest_omni_perf.serve",
        description="Serve a diffusers model (built-in name or local folder) with vLLM-Omni's "
                    "image/video HTTP API, for pytest-omni-perf's omni-server backend.")
    parser.add_argument("model", help="built-in model (tiny-flux, tiny-wan, ...) or a local "
                        "diffusers folder")
    parser.add_argument("--omni", action="store_true",
                        help="accepted for 'vllm serve' compatibility (always on)")
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8000, help="port (default 8000)")
    parser.add_argument("--device", default="auto",
                        help="torch device: auto (cuda when available, else cpu), cpu, cuda[:N]")
    for option in CANONICAL_OPTIONS.values():
        if option.flag:
            _add_option(parser, option)
    # vLLM-Omni's switch for per-stage timings in each answer; this server always reports
    # them (stage_durations), so the flag changes nothing here. Taken so that case files,
    # whose every row sets it, start this server as they start vllm serve.
    parser.add_argument("--enable-diffusion-pipeline-profiler", action="store_true",
                        help="accepted for 'vllm serve' compatibility (stage timings are "
                        "always reported)")
    parser.add_argument("--diffusion-quantization-config", dest="quantization_config",
                        type=_json_value, default=None, metavar="JSON",
                        help='e.g. {"method":"fp8","ignored_layers":["img_mod"]}')
    return parser


def options_from_args(args: argparse.Namespace) -> dict[str, Any]:
    """Canonical profile options from parsed flags: only the flags that were typed.

    Raises ValueError for contradictions vLLM-Omni 0.30 also rejects.
    """
    options: dict[str, Any] = {}
    for option in CANONICAL_OPTIONS.values():
        value = getattr(args, option.name, None) if option.flag else None
        if value is not None:
            options[option.name] = value
    if options.get("dtype") in _DTYPE_NAMES:
        options["dtype"] = _DTYPE_NAMES[options["dtype"]]
    config = args.quantization_config
    if config is not None:
        if "quantization" in options:
            raise ValueError("give -q/--quantization or --diffusion-quantization-config, not both")
        if isinstance(config, str):
            config = {"method": config}
        if not isinstance(config, dict) or not isinstance(config.get("method"), str):
            raise ValueError("--diffusion-quantization-config: expected an object with a "
                             f"'method', got {config!r}")
        unknown = sorted(set(config) - {"method", "gguf_model", "ignored_layers"})
        if unknown:
            raise ValueError(f"--diffusion-quantization-config: unsupported key(s) {unknown}")
        options["quantization"] = config["method"]
        options.update({k: config[k] for k in ("gguf_model", "ignored_layers") if k in config})
    return options
