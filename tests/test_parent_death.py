"""Engines die with the process that started them, also when it is SIGKILLed (no cleanup
code runs then): the kernel's parent-death signal, armed by ``parent_death``'s trampoline.

Each test starts an engine the way the plugin does (``ManagedProcess``, ``IsolatedEngine``)
from a small parent Python, SIGKILLs that parent and waits for the engine to be gone. Only
a deadline is asserted, a generous one: the machine may be busy.
"""

from __future__ import annotations

import http.client
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from pytest_omni_perf.builtin_models import ensure_model
from pytest_omni_perf.engines import parent_death
from pytest_omni_perf.engines.ports import free_port
from pytest_omni_perf.engines.process import ManagedProcess, running

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"),
                                reason="the parent-death signal is Linux's")

ROOT = Path(__file__).resolve().parents[1]
TESTS = Path(__file__).resolve().parent
GONE_WITHIN_S = 20.0

# The parent: starts one engine, prints the engine's pid, then waits to be killed.
PARENT = """
import sys, threading, time
from pathlib import Path
how, log = sys.argv[1], Path(sys.argv[2])
if how in ("worker", "zygote"):
    from pytest_omni_perf.engines.base import EngineSpec, GenerationRequest
    from pytest_omni_perf.engines.hosting import IsolatedEngine
    spec = EngineSpec(model="standin", profile_name="eager", options={}, backend="diffusers",
                      start_timeout_s=120.0)
    # "zygote": forked from a zygote (engines/zygote.py), so pytest -> zygote -> worker.
    engine = IsolatedEngine(spec, "standin:make", {"profile": "eager", "options": {}},
                            env={"PYTHONPATH": sys.argv[3], "STANDIN_HANG_EAGER": "1"},
                            log_dir=log.parent,
                            preload=("standin",) if how == "zygote" else None)
    engine.start()
    # In the worker's socket before we die: the worker reads it and hangs in the request,
    # so the closed socket cannot be what ends it.
    engine.send("generate", GenerationRequest(width=16, height=16).as_dict(), "request")
    pid = engine.pids()[0]
else:
    from pytest_omni_perf.engines.process import ManagedProcess
    process = ManagedProcess(sys.argv[3:], log_path=log)
    if how == "thread":
        # Started from a thread that ends once the child is armed (it runs the command):
        # the signal must not come with that thread's end.
        def start_and_wait():
            process.start()
            deadline = time.monotonic() + 60
            while "parent_death" in open(f"/proc/{process.pid}/cmdline").read():
                assert time.monotonic() < deadline, "the trampoline never exec'd"
                time.sleep(0.05)
        spawner = threading.Thread(target=start_and_wait)
        spawner.start()
        spawner.join()
        time.sleep(0.5)
    else:
        process.start()
    pid = process.pid
print(pid, flush=True)
time.sleep(600)
"""


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": os.pathsep.join(
        p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p)}


@pytest.fixture
def parent(tmp_path: Path) -> Iterator[list[subprocess.Popen[str]]]:
    """Parents started by the test; killed, and what they left too, if the test fails."""
    started: list[subprocess.Popen[str]] = []
    yield started
    for proc in started:
        if proc.poll() is None:
            proc.kill()
        proc.wait()


def _start(parents: list[subprocess.Popen[str]], log: Path, how: str, *args: str) -> tuple[
        subprocess.Popen[str], int]:
    proc = subprocess.Popen([sys.executable, "-c", PARENT, how, str(log), *args],
                            stdout=subprocess.PIPE, text=True, env=_env())
    parents.append(proc)
    line = proc.stdout.readline() if proc.stdout is not None else ""
    assert line.strip().isdigit(), f"parent printed {line!r}; log: {_read(log)}"
    return proc, int(line)


def _read(log: Path) -> str:
    return log.read_text(errors="replace") if log.exists() else "(no log)"


def _kill_parent_and_wait(proc: subprocess.Popen[str], child: int, log: Path,
                          *others: int) -> None:
    """SIGKILL the parent; ``child`` (and ``others``: a zygote between them) must follow."""
    children = [child, *others]
    assert all(running(c) for c in children), (
        f"the engine should be running before its parent dies: {_read(log)}")
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    deadline = time.monotonic() + GONE_WITHIN_S
    try:
        while any(running(c) for c in children) and time.monotonic() < deadline:
            time.sleep(0.1)
        left = [c for c in children if running(c)]
        assert not left, (f"{left} of {children} outlived their SIGKILLed parent by "
                          f"{GONE_WITHIN_S:g} s; log:\n{_read(log)}")
    finally:
        for pid in children:
            if running(pid):
                try:
                    os.killpg(pid, signal.SIGKILL)  # its own group (start_new_session)
                except ProcessLookupError:
                    pass


def test_any_command_dies_with_its_parent_also_spawned_from_an_ended_thread(
        parent: list[subprocess.Popen[str]], tmp_path: Path) -> None:
    # A command we do not own (as `vllm serve` in --omni-server-command): only the signal
    # armed before exec can end it.
    log = tmp_path / "sleep.log"
    proc, child = _start(parent, log, "thread", "sleep", "600")
    _kill_parent_and_wait(proc, child, log)


def test_shipped_server_dies_with_its_parent(parent: list[subprocess.Popen[str]],
                                             tmp_path: Path, tiny_model_cache: Path) -> None:
    port = free_port("127.0.0.1")
    log = tmp_path / "server.log"
    proc, child = _start(parent, log, "main", sys.executable, "-m", "pytest_omni_perf.serve",
                         str(ensure_model("tiny-flux", tiny_model_cache)), "--omni", "--host", "127.0.0.1",
                         "--port", str(port))
    # It answers /health (503 while loading) once it bound: past its imports and with its
    # SIGTERM handler installed, as the plugin's servers are when a worker dies.
    deadline = time.monotonic() + 120
    while _health(port) is None:
        assert running(child), _read(log)
        assert time.monotonic() < deadline, f"the server never bound; log:\n{_read(log)}"
        time.sleep(0.1)
    _kill_parent_and_wait(proc, child, log)


@pytest.mark.parametrize("how", ["worker", "zygote"])
def test_worker_hung_in_a_request_dies_with_its_parent(parent: list[subprocess.Popen[str]],
                                                       tmp_path: Path, how: str) -> None:
    # "zygote": the chain pytest -> zygote -> worker; the worker is armed against the
    # zygote, not pytest, so the zygote must die and take the worker with it.
    log = tmp_path / "parent.log"
    proc, child = _start(parent, log, how, str(TESTS))
    zygotes = []
    if how == "zygote":
        import psutil

        zygote = psutil.Process(child).parent()
        assert zygote is not None and zygote.ppid() == proc.pid, _read(log)
        zygotes.append(zygote.pid)
    worker_logs = list(tmp_path.glob("engine-*.log"))
    _kill_parent_and_wait(proc, child, worker_logs[0] if worker_logs else log, *zygotes)


def _health(port: int) -> int | None:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        connection.request("GET", "/health")
        return connection.getresponse().status
    except OSError:
        return None
    finally:
        connection.close()


# -- the trampoline itself -------------------------------------------------------------------
def test_child_is_armed_with_sigterm(tmp_path: Path) -> None:
    code = ("import ctypes; value = ctypes.c_int(); "
            "ctypes.CDLL(None).prctl(2, ctypes.byref(value), 0, 0, 0); print(value.value)")
    done = subprocess.run(parent_death.guarded([sys.executable, "-c", code]),
                          capture_output=True, text=True, timeout=60, check=True)
    assert int(done.stdout) == signal.SIGTERM  # PR_GET_PDEATHSIG after exec


def test_trampoline_does_not_start_a_command_whose_parent_is_gone(tmp_path: Path) -> None:
    marker = tmp_path / "started"
    argv = parent_death.guarded(["touch", str(marker)])
    pid_at = argv.index(str(os.getpid()))
    argv[pid_at] = "1"  # as if pytest had died and the trampoline were reparented to init
    done = subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == parent_death.EXIT_PARENT_GONE, done.stderr
    assert "its parent 1 is gone" in done.stderr and not marker.exists()


def test_a_missing_command_still_fails_in_the_parent(tmp_path: Path) -> None:
    process = ManagedProcess(["no-such-omni-perf-command"], log_path=tmp_path / "x.log")
    with pytest.raises(FileNotFoundError):
        process.start()
    assert process.pid is None


def test_elsewhere_than_linux_the_argv_runs_unchanged(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "platform", "darwin")
    assert parent_death.guarded(["vllm", "serve", "m"]) == ["vllm", "serve", "m"]
    assert parent_death.arm(12345) is True  # nothing armed, nothing refused
