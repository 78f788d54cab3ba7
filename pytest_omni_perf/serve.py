"""``python -m pytest_omni_perf.serve MODEL --omni --host H --port P [flags]``: a stand-in for
``vllm serve MODEL --omni`` over the diffusers engine, for CI machines without vLLM-Omni.

It takes the same profile flags as ``vllm serve --omni`` (read back into canonical options
through ``canonical.CANONICAL_OPTIONS``, the one table that knows both spellings), loads the
model with ``diffusers_engine.make_runner`` and serves the HTTP subset in ``serve_app``.

Exit codes, which the ``omni-server`` client reads during start-up:
0 stopped by SIGTERM/SIGINT; 1 the model failed to load; 2 bad arguments or model;
3 the diffusers engine cannot honour the profile (a line ``UNSUPPORTED: <reason>`` on
stderr says why); 4 the address cannot be bound (port in use).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import threading
import time
import traceback
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import FrameType
from typing import Any

from pytest_omni_perf import __version__
from pytest_omni_perf.canonical import CANONICAL_OPTIONS, CanonicalOption, validate_options
from pytest_omni_perf.engines.base import GenerationRequest, ProfileUnsupported

EXIT_LOAD_FAILED = 1
EXIT_USAGE = 2
EXIT_UNSUPPORTED = 3
EXIT_ADDRESS_IN_USE = 4
UNSUPPORTED_PREFIX = "UNSUPPORTED: "

# vLLM's other spellings of the same flags (``vllm serve --help=all``).
_ALIASES: Mapping[str, tuple[str, ...]] = {
    "ulysses_degree": ("--ulysses-degree",), "ring_degree": ("--ring-degree",),
    "tensor_parallel_size": ("-tp",), "quantization": ("-q",),
    "enable_expert_parallel": ("-ep",),
}
# vLLM's --dtype also takes these names; canonical profiles use the long ones.
_DTYPE_NAMES = {"half": "float16", "float": "float32"}


class ServerState:
    """The engine runner, the jobs, and the lock that makes generation one at a time."""

    def __init__(self, model_name: str) -> None:
        self.model_name = model_name
        self.runner: Any = None
        self.info: dict[str, Any] = {}
        self.ready = threading.Event()
        self.lock = threading.Lock()
        self.jobs: dict[str, dict[str, Any]] = {}
        self.videos: dict[str, bytes] = {}
        self.created = int(time.time())

    def generate(self, request: GenerationRequest) -> tuple[list[Any], dict[str, Any]]:
        """Run one request under the lock; returns frames and the vLLM-Omni-style metrics."""
        kind = f"video {request.num_frames} frames" if request.is_video else "image"
        log(f"generating {kind} {request.width}x{request.height}, "
            f"{request.num_inference_steps} steps, seed {request.seed}")
        with self.lock:
            began = time.perf_counter()
            output = self.runner.generate(request)
            elapsed = time.perf_counter() - began
        engine = json.loads(json.dumps(output.engine_metrics, default=str))
        peak = engine.get("torch_peak_bytes")
        metrics = {"stage_durations": {"stage_0_gen_ms": round(output.engine_latency_s * 1e3, 3)},
                   "peak_memory_mb": round(peak / 2**20, 3) if peak else 0.0,
                   "inference_time_s": round(elapsed, 6), "engine_metrics": engine}
        return output.frames, metrics

    def run_job(self, job_id: str, request: GenerationRequest, fps: float) -> None:
        """Background body of ``POST /v1/videos``."""
        job = self.jobs[job_id]
        job["status"] = "in_progress"
        try:
            frames, metrics = self.generate(request)
            from pytest_omni_perf.serve_app import encode_mp4

            self.videos[job_id] = encode_mp4(frames, fps)
        except Exception as exc:  # noqa: BLE001 - any failure is the job's outcome
            traceback.print_exc()
            job.update(status="failed",
                       error={"code": 500, "message": f"{type(exc).__name__}: {exc}"})
            return
        job.update(status="completed", progress=100, completed_at=int(time.time()),
                   file_name=f"{job_id}.mp4", num_frames=len(frames),
                   inference_time_s=metrics["inference_time_s"],
                   stage_durations=metrics["stage_durations"],
                   peak_memory_mb=metrics["peak_memory_mb"], metrics=metrics)


def log(message: str) -> None:
    """One line in the server's log (stderr), flushed so a failing start shows it."""
    print(f"[pytest_omni_perf.serve] {message}", file=sys.stderr, flush=True)


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


def _resolve_device(device: str) -> str:
    if device != "auto":
        return device
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def _check_model(model: str) -> str | None:
    from pytest_omni_perf import builtin_models

    if builtin_models.is_builtin(model):
        return None
    folder = Path(model)
    if not folder.is_dir():
        builtins = ", ".join(builtin_models.BUILTIN_MODELS)
        return (f"model {model!r} is neither a built-in ({builtins}) nor an existing local "
                "folder (this server loads no hub ids)")
    if not (folder / "model_index.json").is_file():
        return f"model folder {folder} has no model_index.json: not a diffusers pipeline"
    return None


def _stop(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(0)  # unwinds the main thread wherever it is, running the cleanups


def main(argv: Sequence[str] | None = None) -> int:
    """Parse, bind, load, serve until SIGTERM/SIGINT; returns the exit code."""
    from pytest_omni_perf.serve_app import OmniHTTPServer

    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        options = options_from_args(args)
    except ValueError as exc:
        parser.error(str(exc))
    problems = validate_options(options)
    if problems:
        parser.error("invalid profile flags: " + "; ".join(problems))
    if (why := _check_model(args.model)) is not None:
        print(f"error: {why}", file=sys.stderr)
        return EXIT_USAGE
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # local folders only: never reach a hub
    signal.signal(signal.SIGTERM, _stop)
    state = ServerState(args.model)
    try:
        # Bound before loading, so a taken port fails in milliseconds and /health says 503.
        httpd = OmniHTTPServer((args.host, args.port), state)
    except OSError as exc:
        print(f"error: cannot bind {args.host}:{args.port}: {exc}", file=sys.stderr)
        return EXIT_ADDRESS_IN_USE
    thread = threading.Thread(target=httpd.serve_forever, name="http", daemon=True)
    thread.start()
    log(f"listening on http://{args.host}:{args.port} (loading {args.model}, options {options})")
    try:
        return _load_and_wait(state, args, options)
    finally:
        httpd.shutdown()
        httpd.server_close()
        runner, state.runner = state.runner, None
        if runner is not None and state.lock.acquire(timeout=5.0):
            runner.close()


def _load_and_wait(state: ServerState, args: argparse.Namespace,
                   options: Mapping[str, Any]) -> int:
    from pytest_omni_perf.engines.diffusers_engine import make_runner

    try:
        device = _resolve_device(args.device)
        runner = make_runner(args.model, "", options, device)
        state.runner = runner
        applied = runner.load()
    except ProfileUnsupported as exc:
        print(f"{UNSUPPORTED_PREFIX}pytest_omni_perf.serve (diffusers engine): {exc}",
              file=sys.stderr, flush=True)
        return EXIT_UNSUPPORTED
    except Exception:  # noqa: BLE001 - any load failure ends the server with its traceback
        traceback.print_exc()
        return EXIT_LOAD_FAILED
    state.info = {"version": __version__, "engine": "diffusers", "device": device,
                  "applied": json.loads(json.dumps(applied, default=str)),
                  "versions": runner.versions()}
    state.ready.set()
    log(f"ready: {args.model} on {device}, applied {state.info['applied']}")
    threading.Event().wait()  # until a signal raises SystemExit
    return 0


if __name__ == "__main__":
    signal.signal(signal.SIGINT, _stop)
    sys.exit(main())
