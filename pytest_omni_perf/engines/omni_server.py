"""The ``omni-server`` backend's process half: a vLLM-Omni-compatible HTTP server we start
and kill (requests: ``omni_client``; a server someone else runs: ``omni_attached``).

The command is a template (``--omni-server-command``; default ``vllm serve {model} --omni
--host 127.0.0.1 --port {port}``) to which the profile's ``vllm serve --omni`` flags are
appended. Any server speaking vLLM-Omni's image/video API works, including the package's
own ``python -m pytest_omni_perf.serve``. What requests carry (fields, PNG/mp4 payloads,
error bodies, the shipped server's exit codes) is ``omni_wire``'s.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import os
import secrets
import shlex
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pytest_omni_perf import builtin_models, passthrough
from pytest_omni_perf.canonical import CANONICAL_OPTIONS, serve_args
from pytest_omni_perf.engines.compile_cache import compile_cache_env
from pytest_omni_perf.engines.base import (
    EngineError, EngineSpec, ProfileUnsupported, out_of_memory_line,
)
from pytest_omni_perf.engines.hosting import ProcessHost
from pytest_omni_perf.engines.omni_client import OmniHttpClient
from pytest_omni_perf.engines.ports import free_port, port_in_use
from pytest_omni_perf.engines.server_command import (
    SHIPPED_SERVER,
    command_argv as command_argv,
    connect_host as connect_host,
    flag_value as flag_value,
)
from pytest_omni_perf.engines.parent_death import guarded
from pytest_omni_perf.engines.process import ManagedProcess
from pytest_omni_perf.hardware import HardwareInfo
from pytest_omni_perf.omni_wire import EXIT_UNSUPPORTED, UNSUPPORTED_PREFIX

if TYPE_CHECKING:
    from pytest_omni_perf.capabilities import ModelCapabilities

_PORT_RETRIES = 3
_HEALTH_POLL_S = 0.1
_ADDRESS_IN_USE = ("address already in use", "errno 98", "eaddrinuse")
_CAPABILITIES: dict[str, tuple[ModelCapabilities | None, str]] = {}


# -- the engine -----------------------------------------------------------------------------

class OmniServerEngine(OmniHttpClient, ProcessHost):
    """A server process for one profile: start, wait for health, stop the tree (requests:
    ``OmniHttpClient``)."""

    def __init__(self, spec: EngineSpec, *, device: str = "cpu", log_dir: Path | None = None,
                 env: Mapping[str, str] | None = None, capabilities_note: str = "") -> None:
        self.spec = spec
        self.device = device
        self.capabilities_note = capabilities_note
        self._env = dict(env or {})
        log_root = log_dir or Path(tempfile.gettempdir()) / "pytest-omni-perf-logs"
        tag = f"{spec.profile_name}-{os.getpid()}-{secrets.token_hex(3)}"
        self.log_path = log_root / f"server-{tag}.log"
        self.argv: list[str] = []
        self.base = ("127.0.0.1", 0)
        self._process: ManagedProcess | None = None
        self.versions: dict[str, str] = {}
        self.applied: dict[str, Any] = {}

    # -- lifecycle ------------------------------------------------------------------------
    def start(self) -> None:
        deadline = time.monotonic() + self.spec.start_timeout_s
        model = resolve_model(self.spec.model, self.spec.cache_dir, self.spec.start_timeout_s)
        template = self.spec.server_command
        for attempt in range(_PORT_RETRIES):
            picked = "{port}" in template
            argv = command_argv(template, model, None, self.spec.options)
            host = connect_host(flag_value(argv, "--host"))
            if picked:
                argv = command_argv(template, model, free_port(host), self.spec.options)
            elif flag_value(argv, "--port") is None:
                picked = True
                argv += ["--port", str(free_port(host))]
            port = int(flag_value(argv, "--port") or 0)
            if not picked and port_in_use(flag_value(argv, "--host") or "", port):
                raise EngineError(
                    f"port {port} is already in use: the server command hard-codes it "
                    f"({template!r}); stop what listens there or use {{port}} in "
                    "--omni-server-command so a free port is picked")
            self.argv, self.base = argv, (host, port)
            try:
                self._launch()
                self._wait_healthy(deadline)
            except EngineError as exc:
                # A picked port can be taken between our probe and the server's bind: retry.
                if picked and attempt + 1 < _PORT_RETRIES and \
                        any(s in exc.log_tail.lower() for s in _ADDRESS_IN_USE):
                    continue
                raise
            break
        self.applied = {"command": shlex.join(self.argv), "url": self.url,
                        "serve_args": serve_args(self.spec.options)}
        if self.capabilities_note:
            self.applied["capabilities"] = self.capabilities_note
        self._read_version()

    def _launch(self) -> None:
        env = dict(os.environ)
        env.update(self._env)
        if self.spec.devices:
            env["CUDA_VISIBLE_DEVICES"] = ",".join(map(str, self.spec.devices))
        if self.spec.cache_dir:
            env["OMNI_PERF_CACHE_DIR"] = self.spec.cache_dir
        # A `python -m pytest_omni_perf.serve` template must import this very package.
        package_root = str(Path(__file__).resolve().parents[2])
        env["PYTHONPATH"] = os.pathsep.join(p for p in (package_root, env.get("PYTHONPATH")) if p)
        self._process = ManagedProcess(self.argv, log_path=self.log_path, env=env,
                                       pass_fds=self.spec.lease_fds)
        try:
            self._process.start()
        except OSError as exc:
            self._process = None
            raise EngineError(f"cannot start the server command {shlex.join(self.argv)!r}: "
                              f"{exc}") from None

    def _wait_healthy(self, deadline: float) -> None:
        assert self._process is not None
        while True:
            code = self._process.poll()
            if code is not None:
                raise self._start_failure(code)
            if self._health() == 200:
                return
            if time.monotonic() > deadline:
                tail = self._process.kill_keeping_tail()
                raise EngineError(
                    f"server for {self.spec.profile_name!r} did not become healthy (GET "
                    f"{self.url}/health) within {self.spec.start_timeout_s:g} s: killed it "
                    f"(raise --omni-start-timeout if that is expected); log: {self.log_path}",
                    log_tail=tail)
            time.sleep(_HEALTH_POLL_S)

    def _start_failure(self, code: int) -> Exception:
        assert self._process is not None
        tail = self._process.kill_keeping_tail()
        if code == EXIT_UNSUPPORTED:
            reasons = [line.split(UNSUPPORTED_PREFIX, 1)[1].strip()
                       for line in tail.splitlines() if UNSUPPORTED_PREFIX in line]
            if reasons:
                return ProfileUnsupported(reasons[-1])
        how = f"exit code {code}" if code >= 0 else f"signal {-code}"
        if (oom := out_of_memory_line(tail)) is not None:
            how += f", out of memory: {oom}"
        return EngineError(f"server for {self.spec.profile_name!r} exited during start-up "
                           f"({how}); command: {shlex.join(self.argv)}; log: {self.log_path}",
                           log_tail=tail)

    def stop(self) -> None:
        self.close_client()
        if self._process is not None:
            self._process.terminate_tree()

    def reported(self) -> tuple[dict[str, Any], dict[str, str]]:
        return self.applied, self.versions

    @property
    def url(self) -> str:
        host, port = self.base
        return f"http://{f'[{host}]' if ':' in host else host}:{port}"

    # -- what a failure does to the server we started -----------------------------------------
    def _check_running(self) -> None:
        if not self.alive:
            raise EngineError(f"server for {self.spec.profile_name!r} is not running")

    def _timed_out(self) -> EngineError:
        assert self._process is not None
        tail = self._process.kill_keeping_tail()
        return EngineError(
            f"server for {self.spec.profile_name!r} did not answer the request within "
            f"{self.spec.request_timeout_s:g} s: killed it (raise --omni-request-timeout "
            "if that is expected)", log_tail=tail)

    def _request_failure(self, exc: BaseException) -> EngineError:
        assert self._process is not None
        for _ in range(40):  # the exit status shows up a moment after the socket broke
            if self._process.poll() is not None:
                break
            time.sleep(0.05)
        code = self._process.poll()
        tail = self._process.kill_keeping_tail()
        if code is None:
            how = f"connection failed ({type(exc).__name__}: {exc}); stopped the server"
        else:
            how = f"the server died ({f'exit code {code}' if code >= 0 else f'signal {-code}'})"
        return EngineError(f"request to {self.url} for {self.spec.profile_name!r} failed: "
                           f"{how}; log: {self.log_path}", log_tail=tail)

    def _log_tail(self, lines: int) -> str:
        return self._process.log_tail(lines) if self._process is not None else ""


def resolve_model(model: str, cache_dir: str, timeout_s: float) -> str:
    """A built-in model's folder (built in a child process, keeping torch out of pytest),
    else ``model`` as given: a real ``vllm serve`` needs a folder or a hub id."""
    if not builtin_models.is_builtin(model):
        return model
    code = ("import sys; from pathlib import Path\n"
            "from pytest_omni_perf.builtin_models import ensure_model\n"
            "print(ensure_model(sys.argv[1], Path(sys.argv[2]) if sys.argv[2] else None))\n")
    env = dict(os.environ)
    package_root = str(Path(__file__).resolve().parents[2])
    env["PYTHONPATH"] = os.pathsep.join(p for p in (package_root, env.get("PYTHONPATH")) if p)
    try:
        # guarded: a pytest killed meanwhile must not leave it building (parent_death).
        done = subprocess.run(guarded([sys.executable, "-c", code, model, cache_dir]),
                              env=env, capture_output=True, text=True, timeout=timeout_s,
                              check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise EngineError(f"building the built-in model {model!r} failed: {exc}") from None
    lines = done.stdout.strip().splitlines()
    if done.returncode != 0 or not lines:
        raise EngineError(f"building the built-in model {model!r} failed (exit code "
                          f"{done.returncode})", log_tail=done.stderr[-4000:])
    return lines[-1]


def shipped_server_reason(keys: list[str]) -> str | None:
    """Why the shipped server cannot take these pass-through serve options (flags as the
    keys spell them, or their dashed form), or None. It is the diffusers engine behind an
    HTTP API: vLLM-Omni's other options mean nothing to it."""
    from pytest_omni_perf.serve_flags import build_parser

    known = build_parser()._option_string_actions
    missing = [k for k in keys if f"--{k.lstrip('-')}" not in known
               and passthrough.flag_of(k) not in known]
    if not missing:
        return None
    return (f"pass-through option(s) {', '.join(missing)}: the shipped server "
            f"({SHIPPED_SERVER}, the diffusers engine) takes no such option; they pass "
            "through to a vllm serve --omni command only")


def create(spec: EngineSpec, hw: HardwareInfo) -> OmniServerEngine:
    """An ``omni-server`` engine; for a ``vllm`` command, profiles vLLM-Omni would silently
    not apply to the model are refused first (capability discovery, as the omni backend)."""
    if not spec.server_command.strip():
        raise EngineError("--omni-backend=omni-server needs --omni-server-command")
    gpus = [g for g in hw.gpus if not spec.devices or g.index in spec.devices]
    uses_vllm = "vllm" in shlex.split(spec.server_command)[:3] or "vllm." in spec.server_command
    note = ""
    _, rest = passthrough.split(spec.options, CANONICAL_OPTIONS)
    if SHIPPED_SERVER in spec.server_command and \
            (why := shipped_server_reason(list(rest))) is not None:
        raise ProfileUnsupported(why)
    if uses_vllm and rest:
        from pytest_omni_perf.engines.omni_options import refuse_unknown

        note = refuse_unknown(spec.options, online=True, cache_dir=spec.cache_dir)
    if uses_vllm and importlib.util.find_spec("vllm_omni") is not None:
        from pytest_omni_perf.engines import omni_compat, omni_engine

        # The server runs this environment's vLLM-Omni: refuse what its release lacks.
        if (why := omni_compat.version_reason(spec.options,
                                              omni_compat.installed_version())) is not None:
            raise ProfileUnsupported(why)

        folder = resolve_model(spec.model, spec.cache_dir, spec.start_timeout_s)
        if folder not in _CAPABILITIES:  # per model, not per profile: discovery takes seconds
            _CAPABILITIES[folder] = omni_engine.capabilities_in_subprocess(
                folder, spec.start_timeout_s)
        capabilities, found = _CAPABILITIES[folder]
        note = "; ".join(n for n in (found, note) if n)
        if capabilities is not None:
            reason = omni_engine.capability_reason(capabilities, spec.options)
            if reason is not None:
                raise ProfileUnsupported(reason)
        # As offline: `vllm serve` defaults to bf16, and fp32-saved weights then fail.
        saved = omni_engine.folder_dtype(folder)
        if spec.options.get("dtype") in (None, "auto") and saved is not None:
            spec = dataclasses.replace(spec, options={**spec.options, "dtype": saved})
    # The server compiles like an offline engine: it gets the same persistent cache.
    env = {"TOKENIZERS_PARALLELISM": "false", **compile_cache_env(spec)}
    return OmniServerEngine(spec, device="cuda" if gpus else "cpu", env=env,
                            capabilities_note=note)
