"""Where a runner lives: in a worker subprocess (default) or in the pytest process (debugging).

The subprocess gives each profile its own memory (so peak VRAM/RSS is that profile's alone)
and lets a crash or hang be detected and the process tree killed without taking pytest down.
"""

from __future__ import annotations

import os
import secrets
import socket
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from pytest_omni_perf.engines.base import (
    EngineError, EngineInfo, EngineSpec, GenerationOutput, GenerationRequest, ProfileUnsupported,
    cause_line, checked_output, engine_name, out_of_memory_line,
)
from pytest_omni_perf.engines.process import ManagedProcess
from pytest_omni_perf.engines import zygote_host
from pytest_omni_perf.engines.zygote_host import ForkedProcess, ZygoteError, ZygoteSpoiled
from pytest_omni_perf.engines.startup import StartupPhases, interpreter_seconds
from pytest_omni_perf.escape import path_component

_POLL_S = 0.2


class ProcessHost:
    """What every engine hosted in a child process tree reports: ``describe``, ``pids``,
    ``alive`` (the worker of ``IsolatedEngine``, the server of ``OmniServerEngine``).

    Subclasses set ``spec``, ``device`` and ``_process`` and say what the child reported.
    """

    spec: EngineSpec
    device: str
    _process: ManagedProcess | ForkedProcess | None

    def reported(self) -> tuple[Mapping[str, Any], Mapping[str, str]]:
        """(applied, versions) as the child reported them; empty before it did."""
        return {}, {}

    def startup(self) -> StartupPhases:
        """The phases of the start the child reported: none by default (a server's)."""
        return StartupPhases()

    def describe(self) -> EngineInfo:
        applied, versions = self.reported()
        return EngineInfo(backend=self.spec.backend, model=self.spec.model,
                          pids=tuple(self.pids()), applied=applied, versions=versions,
                          device=self.device, startup=self.startup())

    def pids(self) -> list[int]:
        """The child and its descendants: whose memory counts as this engine's."""
        return self._process.tree() if self._process is not None else []

    @property
    def alive(self) -> bool:
        return self._process is not None and self._process.alive()


class IsolatedEngine(ProcessHost):
    """Runs ``factory(**kwargs)`` in a worker process and talks to it over a socket pair."""

    def __init__(self, spec: EngineSpec, factory: str, kwargs: Mapping[str, Any], *,
                 env: Mapping[str, str] | None = None, log_dir: Path | None = None,
                 device: str = "cpu", log_tag: str = "",
                 preload: Sequence[str] | None = None) -> None:
        """``preload``: fork the worker from a zygote that has imported these (see
        ``zygote.py``); None: start a fresh interpreter."""
        self.spec = spec
        self.factory = factory
        self.kwargs = dict(kwargs)
        self.device = device
        self.preload = None if preload is None else tuple(preload)
        self._extra_env = dict(env or {})
        log_root = log_dir or Path(tempfile.gettempdir()) / "pytest-omni-perf-logs"
        tag = path_component(f"{spec.profile_name}{log_tag}-{os.getpid()}-{secrets.token_hex(3)}")
        self.log_path = log_root / f"engine-{tag}.log"
        self._process: ManagedProcess | ForkedProcess | None = None
        self._conn: Connection | None = None
        self._info: dict[str, Any] = {}
        self._startup = StartupPhases()
        self._spawned_at = self._answered_at = 0.0
        """perf_counter before the worker was spawned, and when its last answer came."""

    # -- lifecycle --------------------------------------------------------------------------
    def start(self) -> None:
        self.spawn()
        try:
            self.started(self._call("start", self.start_payload(), self.spec.start_timeout_s,
                                    "start"))
        except BaseException:
            self.stop()
            raise

    def start_payload(self) -> dict[str, Any]:
        """The ``start`` message: which runner to build, with what."""
        return {"factory": self.factory, "kwargs": self.kwargs}

    def started(self, info: dict[str, Any]) -> None:
        """Record the worker's answer to ``start`` (what it applied, library versions, the
        phases of its start)."""
        self._info = info
        reported = info.get("startup") if isinstance(info, dict) else None
        reported = reported if isinstance(reported, dict) else {}
        self._startup = StartupPhases.from_reported(reported, interpreter_s=interpreter_seconds(
            self._answered_at - self._spawned_at, reported.get("worker_s")))

    def _env(self) -> dict[str, str]:
        """The worker's environment."""
        env = dict(os.environ)
        env.update(self._extra_env)
        if self.spec.devices:
            env["CUDA_VISIBLE_DEVICES"] = ",".join(map(str, self.spec.devices))
        # The worker must import this very package, also when pytest runs from a checkout.
        package_root = str(Path(__file__).resolve().parents[2])
        env["PYTHONPATH"] = os.pathsep.join(p for p in (package_root, env.get("PYTHONPATH")) if p)
        return env

    def spawn(self) -> None:
        """Start the worker process and connect to it (no runner is built yet)."""
        parent_sock, child_sock = socket.socketpair()
        env = self._env()
        fds = [child_sock.fileno(), *self.spec.lease_fds]
        if self.preload is not None:
            self.preload = zygote_host.fork_safe(env, self.preload)
            self._process = ForkedProcess(env=env, log_path=self.log_path, fds=fds,
                                          preload=self.preload)
            try:
                # The zygote's own start is before the spawn: it counts in ``start_s`` and
                # its imports in the worker's, not in the process launch (phase (a)).
                self._process.prepare()
            except ZygoteError as exc:
                parent_sock.close()
                child_sock.close()
                raise self._cannot_fork(exc) from exc
        else:
            self._process = self._exec_process(env, fds)
        self._spawned_at = time.perf_counter()
        try:
            self._process.start()
        except ZygoteSpoiled as spoiled:
            # Children of that zygote could not use CUDA: this engine starts with exec, and
            # later ones fork from a zygote that stops importing before ``spoiled.entry``.
            zygote_host.mark_spoiler(env, spoiled.entry)
            print(f"[pytest_omni_perf] engine {self.spec.profile_name!r}: {spoiled}, so "
                  "workers forked after it could not use CUDA; starting this engine with exec, "
                  f"later ones forked after importing only "
                  f"{', '.join(zygote_host.fork_safe(env, self.preload or ())) or 'nothing'}",
                  file=sys.stderr, flush=True)
            self._process = self._exec_process(env, fds)
            self._spawned_at = time.perf_counter()
            self._process.start()
        except ZygoteError as exc:
            parent_sock.close()
            raise self._cannot_fork(exc) from exc
        finally:
            child_sock.close()
        self._conn = Connection(parent_sock.detach())

    def _exec_process(self, env: Mapping[str, str], fds: Sequence[int]) -> ManagedProcess:
        """A fresh interpreter serving ``fds[0]`` (its other fds are GPU leases)."""
        return ManagedProcess(
            [sys.executable, "-m", "pytest_omni_perf.engines.worker", str(fds[0])],
            log_path=self.log_path, env=dict(env), pass_fds=list(fds))

    def _cannot_fork(self, exc: ZygoteError) -> EngineError:
        return EngineError(f"engine {self.spec.profile_name!r} could not be forked: {exc} "
                           "(--omni-engine-launch=exec starts a fresh interpreter instead)")

    def generate(self, request: GenerationRequest) -> GenerationOutput:
        result = self._call("generate", request.payload(), self.spec.request_timeout_s, "request")
        return checked_output(result, engine_name(self.spec))

    def stop(self) -> None:
        if self._process is None:
            return
        if self._conn is not None and self._process.alive():
            try:
                self._call("stop", None, 30.0, "stop")
            except (EngineError, ProfileUnsupported):
                pass  # a worker that cannot stop politely is killed below
        self.kill()

    def kill(self) -> None:
        """Close the socket and end the worker's process tree, without asking it first."""
        if self._conn is not None:
            self._conn.close()
            self._conn = None
        if self._process is not None:
            self._process.terminate_tree()

    def reported(self) -> tuple[Mapping[str, Any], Mapping[str, str]]:
        return self._info.get("applied", {}), self._info.get("versions", {})

    def startup(self) -> StartupPhases:
        return self._startup

    # -- protocol ---------------------------------------------------------------------------
    # A call is send + wait + answer; a rank group (rank_group.py) sends to every rank first
    # and then waits on all of them, so the pieces are public to it.
    def _call(self, op: str, payload: Any, timeout_s: float, what: str) -> Any:
        self.send(op, payload, what)
        deadline = time.monotonic() + timeout_s
        while not self.answer_ready(_POLL_S, what):
            if time.monotonic() > deadline:
                raise self.timed_out(timeout_s, what)
        return self.answer(what)

    @property
    def connection(self) -> Connection | None:
        """The socket to the worker (for ``multiprocessing.connection.wait``)."""
        return self._conn

    def send(self, op: str, payload: Any, what: str) -> None:
        """Send one message to the worker; EngineError (with its log tail) if it is gone."""
        if self._conn is None or self._process is None:
            raise EngineError(f"engine {self.spec.profile_name!r} is not running")
        try:
            self._conn.send((op, payload))
        except OSError as exc:
            raise self._died(what, exc)

    def answer_ready(self, wait_s: float, what: str) -> bool:
        """Whether the answer has arrived (waiting up to ``wait_s``); EngineError if the
        worker died without one."""
        assert self._conn is not None and self._process is not None
        if self._conn.poll(wait_s):
            return True
        if not self._process.alive():
            raise self._died(what)
        return False

    def timed_out(self, timeout_s: float, what: str) -> EngineError:
        """Kill the worker that did not answer in time; the error to raise."""
        assert self._process is not None
        tail = self._process.kill_keeping_tail()
        return EngineError(
            f"engine {self.spec.profile_name!r} ({self.spec.backend}) did not answer the "
            f"{what} within {timeout_s:g} s: killed it (raise --omni-"
            f"{'start' if what == 'start' else 'request'}-timeout if that is expected)",
            log_tail=tail)

    def answer(self, what: str) -> Any:
        """Receive the answer that ``answer_ready`` announced; raise what the worker raised."""
        assert self._conn is not None and self._process is not None
        try:
            status, value = self._conn.recv()
        except (EOFError, OSError) as exc:
            raise self._died(what, exc)
        self._answered_at = time.perf_counter()
        if status == "ok":
            return value
        if status == "unsupported":
            raise ProfileUnsupported(value)
        # The cause first, then the traceback: a failed start's last line is often a
        # library's re-raise that hides it (see ``cause_line``). The worker also printed
        # that traceback to its log: keep only the log lines it does not repeat.
        oom = ", out of memory" if out_of_memory_line(value) else ""
        shown = set(value.splitlines())
        tail = "\n".join(line for line in self._process.log_tail(15).splitlines()
                         if line not in shown)
        raise EngineError(f"engine {self.spec.profile_name!r} failed during {what}{oom}: "
                          f"{cause_line(value)}\n{value}", log_tail=tail)

    def _died(self, what: str, exc: BaseException | None = None) -> EngineError:
        assert self._process is not None
        # Give the exit status a moment to appear after the socket broke.
        for _ in range(20):
            if self._process.poll() is not None:
                break
            time.sleep(0.05)
        code = self._process.poll()
        tail = self._process.kill_keeping_tail()
        how = f"exit code {code}" if code is not None and code >= 0 else (
            f"killed by signal {-code}" if code is not None else f"connection lost ({exc})")
        if code == -9 and what == "start":
            # Nobody here sent that SIGKILL while starting: on Linux it is most often the
            # kernel's out-of-memory killer (its note is in `dmesg`, not in our log).
            how += " (likely out of memory: the kernel's OOM killer sends SIGKILL)"
        return EngineError(
            f"engine worker for {self.spec.profile_name!r} ({self.spec.backend}, model "
            f"{self.spec.model}) died during the {what}: {how}; log: {self.log_path}",
            log_tail=tail)


class InProcessEngine:
    """The same runner inside pytest's process: debuggable, but no isolation or kill."""

    def __init__(self, spec: EngineSpec, factory: str, kwargs: Mapping[str, Any], *,
                 device: str = "cpu") -> None:
        self.spec = spec
        self.factory = factory
        self.kwargs = dict(kwargs)
        self.device = device
        self._runner: Any = None
        self._applied: dict[str, Any] = {}
        self._startup = StartupPhases()

    def start(self) -> None:
        from pytest_omni_perf.engines.worker import build_runner, startup_report

        self._runner = build_runner(self.factory, self.kwargs)
        try:
            self._applied = self._runner.load()
        except BaseException:
            self.stop()
            raise
        # No process is launched, and imports pytest already made cost nothing here.
        self._startup = StartupPhases.from_reported(startup_report(self._runner, None))

    def generate(self, request: GenerationRequest) -> GenerationOutput:
        if self._runner is None:
            raise EngineError(f"engine {self.spec.profile_name!r} is not running")
        return checked_output(self._runner.generate(request), engine_name(self.spec))

    def stop(self) -> None:
        if self._runner is not None:
            self._runner.close()
            self._runner = None

    def describe(self) -> EngineInfo:
        versions = self._runner.versions() if self._runner is not None else {}
        return EngineInfo(backend=self.spec.backend, model=self.spec.model, pids=(os.getpid(),),
                          applied=self._applied, versions=versions, device=self.device,
                          startup=self._startup)

    def pids(self) -> list[int]:
        return [os.getpid()]

    @property
    def alive(self) -> bool:
        return self._runner is not None
