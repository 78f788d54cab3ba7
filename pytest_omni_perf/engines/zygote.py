"""A pre-imported process that forks engine workers: imports paid once, not once per start.

``python -m pytest_omni_perf.engines.zygote FD``: started (through ``process.ManagedProcess``,
so it dies with pytest) with the environment its workers will have, it never touches a GPU
and answers two requests over the ``SOCK_SEQPACKET`` socket ``FD`` (one JSON message each):

- ``{"op": "fork", "preload": [...], "env": {...}, "log": PATH}`` with the worker's socket
  and any GPU lease descriptors attached (``socket.send_fds``): import ``preload`` here first
  (``"module"`` or ``"module:attribute"`` for a lazy attribute, e.g. ``"diffusers:FluxPipeline"``,
  so later forks inherit the import too), fork, and in the child start a new session, arm the
  parent-death signal, set ``env`` (keys in ``LATE_KEYS`` only), send output to ``log`` and
  serve the socket as ``worker.main`` would. Answers ``{"pid": N}``, or
  ``{"spoiled_by": ENTRY}`` and exits without forking when, after importing ENTRY, a forked
  child could not use CUDA (``preload``).
- ``{"op": "status", "pid": N}``: ``{"code": None}`` while N runs, else its exit code as
  ``subprocess`` gives it (negative: killed by that signal). This process reaps its children.

Why: heavy imports are most of an engine start: 10.6-12.2 s of 11.4-12.9 s for the medium
Flux and Wan on one H200, 3.3-3.9 s of 3.5-4.2 s for tiny-flux on the 2-core CPU machine
(results/h200/startup/breakdown-h200.txt, results/cpu/startup-breakdown-zygote.txt); a fork
costs milliseconds. ``multiprocessing``'s forkserver does the same but is one per
interpreter with a fixed environment and preload list, while engines differ in environment
(inductor cache folders) and pipeline modules.

Nothing here may touch CUDA: children of a process that did cannot use it. The zygote checks
after each import (``preload``) and says which one did; the caller then leaves it out.
"""

from __future__ import annotations

import importlib
import json
import os
import signal
import socket
import sys
import time
from collections.abc import Iterable
from contextlib import nullcontext

from pytest_omni_perf.engines.device_answers import SM_VARIABLE, answered, parse_sm

LATE_KEYS = frozenset({"CUDA_VISIBLE_DEVICES", "RANK", "LOCAL_RANK", "WORLD_SIZE",
                       "MASTER_ADDR", "MASTER_PORT", "NCCL_NVLS_ENABLE",
                       "PYTEST_CURRENT_TEST", "TORCHINDUCTOR_CACHE_DIR", "TRITON_CACHE_DIR"})
"""Environment variables read when used, not when a module is imported: they may differ
between a zygote and the workers it forks (a GPU, a rank; pytest's current test, which
changes with every test; the compile caches of engines/compile_cache.py, one folder per
profile, which inductor reads in ``cache_dir()`` at compile time and Triton when it first
caches a kernel, neither of which the zygote's imports do). Any other difference needs a
zygote of its own (``zygote_host.zygote_key``)."""

MAX_FDS = 16
MAX_MESSAGE = 64 * 1024
_exit_codes: dict[int, int] = {}
"""Exit codes of reaped children (this process's own table, filled by ``_reap``)."""


def preload(names: Iterable[str]) -> str | None:
    """Import each ``module`` or ``module:attribute`` in order; one that fails is passed over
    (the worker imports it again and reports the real error).

    Returns the first one after which forked children could not use CUDA, or None. Its
    import is done and cannot be undone: this process must fork no more."""
    for name in names:
        module, _, attribute = name.partition(":")
        known, ran = len(sys.modules), False
        try:
            imported = importlib.import_module(module)
            if attribute:
                getattr(imported, attribute)
        except (Exception, SystemExit):  # noqa: BLE001 - the worker shows it
            ran = True  # it ran code, whatever sys.modules shows now
        # An import made for an earlier fork ran no code now: nothing new to check.
        if (ran or len(sys.modules) != known) and _children_cannot_use_cuda():
            return name
    return None


def _children_cannot_use_cuda() -> bool:
    """Whether a child forked now would be refused CUDA (torch's own flag, read in a probe
    child: ``torch._C._cuda_isInBadFork``, set in children of a process that has touched the
    CUDA runtime, torch/csrc/cuda/Module.cpp ``poison_fork``). False without a CUDA build of
    torch imported. Measured on an H200 (results/h200/startup/fork-check.jsonl): importing a
    diffusers pipeline class with torchao 0.17 installed initializes CUDA, since diffusers'
    and transformers' torchao quantizers import torchao, whose prototype/mx_formats/kernels.py
    asks for the device's properties at import time."""
    torch = sys.modules.get("torch")
    in_bad_fork = getattr(getattr(torch, "_C", None), "_cuda_isInBadFork", None)
    if in_bad_fork is None:
        return False
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(read)
        os.write(write, b"1" if in_bad_fork() else b"0")
        os._exit(0)
    os.close(write)
    try:
        answer = os.read(read, 1)
    finally:
        os.close(read)
        try:
            os.waitpid(pid, 0)
        except ChildProcessError:
            pass  # the SIGCHLD handler reaped it first
    return answer != b"0"


_workers: set[int] = set()
"""Forked workers not yet reaped: only these are reaped here, so that a subprocess a library
starts while it is imported keeps its own exit status for its ``Popen.wait``."""


def _reap(signum: int = 0, frame: object = None) -> None:
    for pid in list(_workers):
        try:
            done, status = os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            _workers.discard(pid)
            continue
        if done:
            _workers.discard(pid)
            _exit_codes[pid] = os.waitstatus_to_exitcode(status)


NVML_CHECK = "PYTORCH_NVML_BASED_CUDA_CHECK"
"""torch.cuda.is_available() asks the CUDA runtime for the device count unless this is "1",
and torch then refuses CUDA in every process forked afterwards ("Cannot re-initialize CUDA
in forked subprocess", torch/cuda/__init__.py ``_lazy_init``): a library that asks at
import time would spoil the zygote. With it set, torch asks NVML, which leaves fork safe.
Set in the zygote only; each worker gets the caller's value back."""


def _child(control: socket.socket, zygote: int, message: dict[str, object],
           fds: list[int]) -> None:
    """In the forked worker: never returns (``os._exit``)."""
    code = 1
    try:
        from pytest_omni_perf.engines import parent_death, worker

        control.close()
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        os.setsid()  # own session and process group, as ManagedProcess gives its children
        if not parent_death.arm(zygote):
            os._exit(parent_death.EXIT_PARENT_GONE)
        # pytest's working directory now (tests chdir), as an exec'd worker would start in.
        cwd = str(message.get("cwd") or os.getcwd())
        if sys.path[:1] == [os.getcwd()]:
            sys.path[0] = cwd
        os.chdir(cwd)
        env = message.get("env")
        for key in (*LATE_KEYS, NVML_CHECK):
            value = env.get(key) if isinstance(env, dict) else None
            if isinstance(value, str):
                os.environ[key] = value
            else:
                os.environ.pop(key, None)
        log = os.open(str(message["log"]), os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        null = os.open(os.devnull, os.O_RDONLY)
        os.dup2(null, 0)
        os.dup2(log, 1)
        os.dup2(log, 2)
        os.close(log)
        os.close(null)
        code = worker.main(["zygote", str(fds[0])], began=float(str(message["began"])),
                           preloaded_s=float(str(message["preloaded_s"])))
    except BaseException:  # noqa: BLE001 - report anything to the log, then exit
        import traceback

        traceback.print_exc()
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)


def serve(control: socket.socket, sm: tuple[int, int] | None = None) -> None:
    """Answer fork and status requests until the parent closes the socket; ``sm``: the
    capability preloads see from torch's device queries (``device_answers.answered``),
    None to let them ask the CUDA runtime."""
    signal.signal(signal.SIGCHLD, _reap)
    while True:
        try:
            data, fds, _, _ = socket.recv_fds(control, MAX_MESSAGE, MAX_FDS)
        except OSError:
            return
        if not data:
            return  # the parent closed its end (or died): workers follow by parent death
        message = json.loads(data)
        if message.get("op") == "status":
            _reap()
            pid = int(message["pid"])
            control.send(json.dumps({"code": _exit_codes.get(pid)}).encode())
            continue
        # The worker's own time begins before the preload it asked for, which counts as
        # its imports (the first worker of a zygote pays them, later ones inherit them).
        message["began"] = time.perf_counter()
        with answered(sm) if sm is not None else nullcontext():
            spoiler = preload(message.get("preload") or [])
        message["preloaded_s"] = time.perf_counter() - message["began"]
        sys.stdout.flush()
        sys.stderr.flush()
        if spoiler is not None:
            for fd in fds:
                os.close(fd)
            control.send(json.dumps({"spoiled_by": spoiler}).encode())
            return  # useless from now on: the caller starts this worker with exec
        me = os.getpid()  # not os.getppid() in the child: 1 if this process died meanwhile
        pid = os.fork()
        if pid == 0:
            _child(control, me, message, fds)
        _workers.add(pid)
        for fd in fds:
            os.close(fd)
        control.send(json.dumps({"pid": pid}).encode())


def main(argv: list[str]) -> int:
    """``zygote FD``: say ready, serve ``FD``."""
    os.environ[NVML_CHECK] = "1"
    control = socket.socket(fileno=int(argv[1]))
    control.send(json.dumps({"ready": True}).encode())
    try:
        # Set once when the engine starts the zygote (one for every GPU of the run), so it
        # is read here once rather than on every fork request.
        serve(control, parse_sm(os.environ.get(SM_VARIABLE)))
    finally:
        control.close()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
