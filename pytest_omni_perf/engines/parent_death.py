"""Engine processes that die with the process that started them, also when it is SIGKILLed.

Every engine runs in its own session (``ManagedProcess``), so one ``killpg`` ends its tree;
being in its own session it also outlives a parent that dies without running its cleanup:
pytest or an xdist worker SIGKILLed, killed by the OOM killer, or an xdist worker that
xdist's controller SIGKILLs because it was still stopping its engines (in
``pytest_unconfigure``, after it reported ``workerfinished``) when the controller's 10 s
shutdown wait ran out. Such an engine then kept running with PPID 1, holding its memory, its
port and its GPU lease. Linux lets a process ask for a signal when its parent dies:
``prctl(PR_SET_PDEATHSIG, SIGTERM)``; the kernel sends it even when no code of the parent
runs any more.

How it is set: the engine's argv is started through this file (``guarded``)::

    python -I -S .../parent_death.py PARENT_PID -- ARGV...

which arms the signal in itself, checks that its parent is still ``PARENT_PID`` (if not,
the parent died before the signal was armed and nobody will ever send it: it exits) and
execs ARGV in the same process. The setting survives ``execve`` (except into set-user-ID
programs), so it covers commands we do not own too (``vllm serve`` in
``--omni-server-command``), and no ``preexec_fn`` runs between fork and exec (unsafe in a
process with threads, which pytest with a memory sampler is). It costs one interpreter
start without site-packages (tens of milliseconds) per engine start.

Which thread spawns matters: the kernel sends the signal when the *thread* that forked the
child ends, not when its process does. ``in_lasting_thread`` therefore forks from the main
thread (CPython's main thread is the last one to end: it waits for the others at exit) and,
when called from any other thread (one that may end long before the engine should), from
one spawner thread of this module that lives until the interpreter shuts down.

What it does not change: ``fork`` clears the setting, so processes an engine starts itself
(vLLM-Omni's stage and GPU workers, inductor's compile workers) keep their own lifecycle,
as before: ``terminate_tree`` signals them while pytest lives, and their own parent-death
handling (vLLM's death pipes, inductor's parent-pid watch) after. SIGTERM keeps its meaning
in the engine: the shipped server stops cleanly on it, the worker dies at once.

Elsewhere than Linux there is no parent-death signal: ``guarded`` returns the argv
unchanged and only the parent's own cleanup (``terminate_tree``) ends engines.

This file runs as a script under ``-I -S``: it imports the standard library only.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, TypeVar

if TYPE_CHECKING:
    from concurrent.futures import ThreadPoolExecutor

PR_SET_PDEATHSIG = 1  # <linux/prctl.h>
EXIT_PARENT_GONE = 1
EXIT_CANNOT_EXEC = 127  # as a shell says "command not found"

T = TypeVar("T")
_spawner: ThreadPoolExecutor | None = None
_SPAWNER_LOCK = threading.Lock()


def supported() -> bool:
    """Whether this platform has a parent-death signal (Linux only)."""
    return sys.platform.startswith("linux")


def arm(expected_parent: int, sig: int = signal.SIGTERM) -> bool:
    """Have the kernel send ``sig`` to this process when its parent dies.

    False when the parent is already gone (this process was reparented, so its parent is no
    longer ``expected_parent``): the signal will never come, the caller should exit. True
    where the platform has no such signal (nothing is armed).
    """
    if not supported():
        return True
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_PDEATHSIG, int(sig), 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_PDEATHSIG) failed")
    # Checked after arming: a parent that dies from here on sends the signal.
    return os.getppid() == expected_parent


def guarded(argv: Sequence[str]) -> list[str]:
    """``argv`` started through this file, so that it dies with this process (see above);
    ``argv`` itself where that is not possible."""
    if not supported() or not sys.executable:
        return list(argv)
    return [sys.executable, "-I", "-S", os.path.abspath(__file__), str(os.getpid()), "--",
            *argv]


def in_lasting_thread(call: Callable[[], T]) -> T:
    """``call()`` (which forks a child) in a thread that lives as long as this process: this
    one if it is the main thread, else the module's spawner thread."""
    global _spawner
    if threading.current_thread() is threading.main_thread() or not supported():
        return call()
    from concurrent.futures import ThreadPoolExecutor

    with _SPAWNER_LOCK:
        if _spawner is None:
            # Its one thread waits for work until interpreter shutdown (the module keeps the
            # executor referenced, so it is never collected).
            _spawner = ThreadPoolExecutor(max_workers=1, thread_name_prefix="omni-perf-spawner")
        spawner = _spawner
    return spawner.submit(call).result()


def main(argv: Sequence[str]) -> int:
    """``parent_death.py PARENT_PID -- ARGV...``: arm, check the parent, exec ARGV."""
    if len(argv) < 4 or argv[2] != "--":
        print(f"usage: {argv[0]} PARENT_PID -- COMMAND [ARG...]", file=sys.stderr)
        return 2
    parent, command = int(argv[1]), list(argv[3:])
    try:
        alive = arm(parent)
    except OSError as exc:  # keep the engine: it is only not tied to its parent
        print(f"[pytest_omni_perf] warning: {exc}; this process may outlive pytest",
              file=sys.stderr, flush=True)
        alive = True
    if not alive:
        print(f"[pytest_omni_perf] not starting {command[0]}: its parent {parent} is gone",
              file=sys.stderr, flush=True)
        return EXIT_PARENT_GONE
    try:
        os.execvp(command[0], command)
    except OSError as exc:
        print(f"[pytest_omni_perf] cannot start {command[0]}: {exc}", file=sys.stderr,
              flush=True)
    return EXIT_CANNOT_EXEC


if __name__ == "__main__":
    sys.exit(main(sys.argv))
