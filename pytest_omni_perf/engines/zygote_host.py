"""pytest's side of the zygote (``zygote.py``): one per worker environment, started on first
use, and ``ForkedProcess``, a worker forked from it that behaves as a ``ManagedProcess``.

Zygotes are per process (per xdist worker), keyed by the environment less ``LATE_KEYS``:
an environment variable a library reads on import (``HF_HUB_OFFLINE``, an inductor setting)
must be right before the zygote imports it, so another value needs another zygote. At most
``MAX_ZYGOTES`` live at once (the least recently used idle one stops first); ``stop_all`` ends
them at the end of the session (the plugin calls it), and each dies with this process
anyway (parent-death signal, see ``process``).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import sys
import tempfile
import threading
import time
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from pytest_omni_perf.engines.process import ManagedProcess, descendants, running
from pytest_omni_perf.engines.zygote import LATE_KEYS, MAX_FDS, MAX_MESSAGE, NVML_CHECK

MAX_ZYGOTES = 3
READY_TIMEOUT_S = 600.0


class ZygoteError(RuntimeError):
    """The zygote could not be started or did not answer (its log tail in the message)."""


class ZygoteSpoiled(ZygoteError):
    """The zygote imported ``entry`` and then could not fork workers able to use CUDA; it
    has exited (``zygote.preload``)."""

    def __init__(self, entry: str) -> None:
        super().__init__(f"importing {entry} touched CUDA in the engine zygote")
        self.entry = entry


class Zygote:
    """One running zygote and the socket to it (requests are serialized by a lock)."""

    def __init__(self, env: Mapping[str, str], log_dir: Path) -> None:
        self.env = dict(env)
        parent, child = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        self.log_path = log_dir / f"zygote-{os.getpid()}-{time.monotonic_ns()}.log"
        self.process = ManagedProcess(
            [sys.executable, "-m", "pytest_omni_perf.engines.zygote", str(child.fileno())],
            log_path=self.log_path, env=self.env, pass_fds=[child.fileno()])
        self._lock = threading.Lock()
        self._socket = parent
        began = time.perf_counter()
        try:
            self.process.start()
        finally:
            child.close()
        self._receive(READY_TIMEOUT_S, "start")
        self.start_s = time.perf_counter() - began

    def _receive(self, timeout_s: float, what: str) -> dict[str, Any]:
        self._socket.settimeout(timeout_s)
        try:
            data = self._socket.recv(MAX_MESSAGE)
        except OSError as exc:
            data, why = b"", str(exc)
        else:
            why = "it exited"
        if not data:
            tail = self.process.kill_keeping_tail()
            raise ZygoteError(f"the engine zygote failed during its {what} ({why}); log "
                              f"{self.log_path}:\n{tail}")
        answer: dict[str, Any] = json.loads(data)
        return answer

    def fork(self, *, fds: Sequence[int], env: Mapping[str, str], log_path: Path,
             preload: Sequence[str]) -> int:
        """A new worker serving ``fds[0]`` (the other fds are inherited as they are), forked
        once the zygote has imported ``preload`` (imports already made cost nothing)."""
        if len(fds) > MAX_FDS:
            raise ZygoteError(f"cannot pass {len(fds)} descriptors (at most {MAX_FDS})")
        late = {k: v for k, v in env.items() if k in LATE_KEYS or k == NVML_CHECK}
        with self._lock:
            message = {"op": "fork", "preload": list(preload), "env": late,
                       "log": str(log_path), "cwd": os.getcwd()}
            socket.send_fds(self._socket, [json.dumps(message).encode()], list(fds))
            answer = self._receive(READY_TIMEOUT_S, "fork")
        if "spoiled_by" in answer:
            raise ZygoteSpoiled(str(answer["spoiled_by"]))
        return int(answer["pid"])

    def exit_code(self, pid: int) -> int | None:
        """The worker's exit code once the zygote reaped it; None while it runs (or when
        the zygote is gone and cannot say)."""
        if not self.process.alive():
            return None
        with self._lock:
            try:
                self._socket.send(json.dumps({"op": "status", "pid": pid}).encode())
                code = self._receive(10.0, "status").get("code")
            except (OSError, ZygoteError):
                return None
        return None if code is None else int(code)

    def stop(self) -> None:
        """Close the socket (the zygote exits) and end its process tree."""
        self._socket.close()
        self.process.terminate_tree(grace_s=5.0)


_zygotes: OrderedDict[tuple[tuple[str, str], ...], Zygote] = OrderedDict()
_LOCK = threading.Lock()
_spoilers: dict[tuple[tuple[str, str], ...], set[str]] = {}
"""Per zygote key, preload entries after whose import forked children could not use CUDA."""


def fork_safe(env: Mapping[str, str], preload: Sequence[str]) -> tuple[str, ...]:
    """``preload`` up to (not including) the first entry known to touch CUDA with ``env``."""
    known = _spoilers.get(zygote_key(env), set())
    kept: list[str] = []
    for entry in preload:
        if entry in known:
            break
        kept.append(entry)
    return tuple(kept)


def mark_spoiler(env: Mapping[str, str], entry: str) -> None:
    """Preload no more ``entry`` (nor what follows it) for ``env``; forget the zygote that
    imported it (it has exited)."""
    key = zygote_key(env)
    with _LOCK:
        _spoilers.setdefault(key, set()).add(entry)
        if (found := _zygotes.pop(key, None)) is not None:
            found.stop()


def zygote_key(env: Mapping[str, str]) -> tuple[tuple[str, str], ...]:
    """What decides which zygote may fork a worker with ``env``: all but ``LATE_KEYS``."""
    return tuple(sorted((k, v) for k, v in env.items() if k not in LATE_KEYS))


def zygote_for(env: Mapping[str, str], log_dir: Path) -> Zygote:
    """The running zygote for ``env``, started on first use (ZygoteError if it cannot)."""
    key = zygote_key(env)
    with _LOCK:
        found = _zygotes.get(key)
        if found is not None and found.process.alive():
            _zygotes.move_to_end(key)
            return found
        if found is not None:
            del _zygotes[key]
        # Only a zygote without live workers may go: stopping one ends its workers too.
        idle = [k for k, z in _zygotes.items()
                if not any(running(p) for p in descendants(z.process.pid or 0))]
        while len(_zygotes) >= MAX_ZYGOTES and idle:
            _zygotes.pop(idle.pop(0)).stop()
        started = Zygote({k: v for k, v in env.items() if k not in LATE_KEYS}, log_dir)
        _zygotes[key] = started
        return started


def stop_all() -> None:
    """Stop every zygote of this process, and with it any worker it forked that still runs
    (engines stop theirs first; this is the end of the session)."""
    with _LOCK:
        while _zygotes:
            _, zygote = _zygotes.popitem()
            zygote.stop()


class ForkedProcess:
    """A worker forked by a zygote, with ``ManagedProcess``'s interface (``hosting`` uses
    either): its own session, output to ``log_path``, tree-wide termination."""

    def __init__(self, *, env: Mapping[str, str], log_path: Path, fds: Sequence[int],
                 preload: Sequence[str]) -> None:
        self.env = dict(env)
        self.log_path = log_path
        self.fds = tuple(fds)
        self.preload = tuple(preload)
        self._zygote: Zygote | None = None
        self._pid: int | None = None

    def prepare(self) -> None:
        """Find or start the zygote (ZygoteError when it cannot be started)."""
        if self._zygote is None:
            log_dir = Path(tempfile.gettempdir()) / "pytest-omni-perf-logs"
            log_dir.mkdir(parents=True, exist_ok=True)
            self._zygote = zygote_for(self.env, log_dir)

    def start(self) -> None:
        """Fork the worker (ZygoteError when the zygote cannot be started or fork)."""
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self.prepare()
        assert self._zygote is not None
        self._pid = self._zygote.fork(fds=self.fds, env=self.env, log_path=self.log_path,
                                      preload=self.preload)

    @property
    def pid(self) -> int | None:
        return self._pid

    def poll(self) -> int | None:
        """Exit code, or None while running (or before start)."""
        if self._pid is None or self._zygote is None:
            return None
        # None also when the zygote is gone and cannot say: callers then report the lost
        # connection rather than a guessed exit code.
        return self._zygote.exit_code(self._pid)

    def alive(self) -> bool:
        return self._pid is not None and running(self._pid)

    def tree(self) -> list[int]:
        """The worker and its living descendants (whose memory is the engine's)."""
        if self._pid is None or not self.alive():
            return []
        return [self._pid, *descendants(self._pid)]

    def log_tail(self, lines: int = 40) -> str:
        return ManagedProcess.read_tail(self.log_path, lines)

    def kill_keeping_tail(self, lines: int = 40) -> str:
        """Kill the tree quickly (it failed or hung) and return its last log lines."""
        tail = self.log_tail(lines)
        self.terminate_tree(grace_s=2.0)
        return tail

    def terminate_tree(self, grace_s: float = 10.0) -> None:
        """SIGTERM the worker's process group and tree, SIGKILL what is left after
        ``grace_s``. Idempotent."""
        if self._pid is None:
            return
        pids = self.tree()
        ManagedProcess.signal_tree(self._pid, pids, signal.SIGTERM)
        deadline = time.monotonic() + grace_s
        while time.monotonic() < deadline and any(running(p) for p in [self._pid, *pids]):
            time.sleep(0.05)
        ManagedProcess.signal_tree(self._pid, [p for p in pids if running(p)], signal.SIGKILL)
