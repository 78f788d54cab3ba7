"""``python -m pytest_omni_perf.serve MODEL --omni --host H --port P [flags]``: a stand-in for
``vllm serve MODEL --omni`` over the diffusers engine, for CI machines without vLLM-Omni.

It takes the same profile flags as ``vllm serve --omni`` (``serve_flags``: read back into
canonical options through ``canonical.CANONICAL_OPTIONS``, the one table that knows both
spellings), loads the model with ``diffusers_engine.make_runner`` and serves the HTTP subset
in ``serve.app`` with uvicorn. Exit codes are ``omni_wire.EXIT_*``: 0 stopped by
SIGTERM/SIGINT; 1 the model failed to load; 2 bad arguments or model; 3 the diffusers engine
cannot honour the profile (a line ``UNSUPPORTED: <reason>`` on stderr says why); 4 the
address cannot be bound.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import socket
import sys
import threading
import traceback
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import FrameType
from typing import Any

from pytest_omni_perf.canonical import validate_options
from pytest_omni_perf.engines.base import ProfileUnsupported
from pytest_omni_perf.omni_wire import (
    EXIT_ADDRESS_IN_USE, EXIT_LOAD_FAILED, EXIT_STOPPED, EXIT_UNSUPPORTED, EXIT_USAGE,
    UNSUPPORTED_PREFIX, VIDEOS_PATH,
)
from pytest_omni_perf.serve.state import ServerState, log, pipeline_rules
from pytest_omni_perf.serve_flags import build_parser, options_from_args
from pytest_omni_perf.version import __version__

_SHUTDOWN_S = 5.0


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


_STOP_ASKED = threading.Event()
"""Set by ``stop_on_signal``: a library that swallows the SystemExit (a bare ``except:``
while the model loads) must not keep a server alive whose parent is gone: the parent-death
SIGTERM comes only once (seen once in about 15 runs of tests/test_parent_death.py)."""


def stop_on_signal(signum: int, frame: FrameType | None) -> None:
    """Signal handler: end the server with exit code 0."""
    _STOP_ASKED.set()
    raise SystemExit(EXIT_STOPPED)  # unwinds the main thread wherever it is, running cleanups


class _QuietPolls(logging.Filter):
    """Drops the access lines of health and job polls: they would drown the ones that
    explain a failure."""

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args if isinstance(record.args, tuple) else ()
        if len(args) != 5:
            return True
        _, method, path, _, status = args
        path = str(path).split("?", 1)[0]
        polled = path == "/health" or (str(path).startswith(VIDEOS_PATH + "/")
                                       and not str(path).endswith("/content"))
        return not (method == "GET" and polled and status in (200, 503))


def _logging() -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("[pytest_omni_perf.serve] %(message)s"))
    for name in ("uvicorn.error", "uvicorn.access"):
        logger = logging.getLogger(name)
        logger.handlers[:] = [handler]
        logger.setLevel(logging.INFO)
        logger.propagate = False
    logging.getLogger("uvicorn.access").addFilter(_QuietPolls())


def bind(host: str, port: int) -> socket.socket:
    """A listening socket on ``host:port`` (OSError when it cannot be bound)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(128)
    except OSError:
        sock.close()
        raise
    return sock


def main(argv: Sequence[str] | None = None) -> int:
    """Parse, bind, load, serve until SIGTERM/SIGINT; returns the exit code."""
    import uvicorn

    from pytest_omni_perf.serve.app import build_app
    from pytest_omni_perf.serve.framing import MAX_HEADER_BYTES

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
    signal.signal(signal.SIGTERM, stop_on_signal)
    state = ServerState(args.model)
    try:
        # Bound before loading, so a taken port fails in milliseconds and /health says 503.
        sock = bind(args.host, args.port)
    except OSError as exc:
        print(f"error: cannot bind {args.host}:{args.port}: {exc}", file=sys.stderr)
        return EXIT_ADDRESS_IN_USE
    _logging()
    # h11 explicitly: the framing checks must not change with whether httptools is installed.
    config = uvicorn.Config(build_app(state), http="h11", loop="asyncio", lifespan="off",
                            log_config=None, timeout_keep_alive=5,
                            h11_max_incomplete_event_size=MAX_HEADER_BYTES)
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, name="http",
                              daemon=True)
    thread.start()
    log(f"listening on http://{args.host}:{args.port} (loading {args.model}, options {options})")
    try:
        return _load_and_wait(state, args, options)
    finally:
        server.should_exit = True
        thread.join(_SHUTDOWN_S)
        sock.close()
        runner, state.runner = state.runner, None
        if runner is not None and state.lock.acquire(timeout=_SHUTDOWN_S):
            runner.close()


def _load_and_wait(state: ServerState, args: argparse.Namespace,
                   options: Mapping[str, Any]) -> int:
    from pytest_omni_perf.engines.diffusers_engine import make_runner

    try:
        device = _resolve_device(args.device)
        runner = make_runner(args.model, "", options, device)
        state.runner = runner
        applied = runner.load()
        state.rules = pipeline_rules(runner.pipe)
    except ProfileUnsupported as exc:
        print(f"{UNSUPPORTED_PREFIX}pytest_omni_perf.serve (diffusers engine): {exc}",
              file=sys.stderr, flush=True)
        return EXIT_UNSUPPORTED
    except Exception:  # noqa: BLE001 - any load failure ends the server with its traceback
        traceback.print_exc()
        return EXIT_LOAD_FAILED
    if _STOP_ASKED.is_set():
        return EXIT_STOPPED  # the signal's SystemExit was swallowed during the load
    state.info = {"version": __version__, "engine": "diffusers", "device": device,
                  "applied": json.loads(json.dumps(applied, default=str)),
                  "versions": runner.versions()}
    state.ready.set()
    log(f"ready: {args.model} on {device}, applied {state.info['applied']}, "
        f"request rules {state.rules}")
    _STOP_ASKED.wait()  # until a signal raises SystemExit here (or was swallowed and set it)
    return EXIT_STOPPED
