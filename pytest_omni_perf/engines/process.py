"""A child process we own with its whole tree: started in its own session, logged to a file,
and killed with every descendant, so no engine outlives the test that started it; and tied
to this process by the kernel's parent-death signal (``parent_death``), so no engine
outlives a pytest (or xdist worker) killed before it could stop it.

Process trees and liveness come from psutil (imported where used), not from /proc read by
hand.
"""

from __future__ import annotations

import errno
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

from pytest_omni_perf.engines import parent_death


def descendants(root: int) -> list[int]:
    """PIDs of every descendant of ``root`` (psutil; empty when ``root`` is gone).

    Exited children not yet reaped (zombies) are included, as the kernel still lists them
    under their parent.
    """
    import psutil

    try:
        return [child.pid for child in psutil.Process(root).children(recursive=True)]
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return []


def _signal_all(pids: Sequence[int], sig: int) -> None:
    for pid in pids:
        try:
            os.kill(pid, sig)
        except (ProcessLookupError, PermissionError):
            pass


class ManagedProcess:
    """``subprocess.Popen`` in a new session, output to ``log_path``, tree-wide termination."""

    def __init__(self, argv: Sequence[str], *, log_path: Path, env: Mapping[str, str] | None = None,
                 pass_fds: Sequence[int] = (), cwd: str | None = None) -> None:
        self.argv = list(argv)
        self.log_path = log_path
        self.env = dict(env) if env is not None else None
        self.pass_fds = tuple(pass_fds)
        self.cwd = cwd
        self._popen: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        """Start the process (OSError when it cannot be; a missing command raises here)."""
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self._check_command()
        with open(self.log_path, "ab") as log:
            def spawn() -> subprocess.Popen[bytes]:
                return subprocess.Popen(
                    # Through the parent-death trampoline: the process execs ``argv`` in
                    # place (same pid) and is sent SIGTERM when this process dies.
                    parent_death.guarded(self.argv), stdin=subprocess.DEVNULL, stdout=log,
                    stderr=subprocess.STDOUT, env=self.env, pass_fds=self.pass_fds,
                    cwd=self.cwd,
                    # Own session and process group: one killpg reaches workers it spawns too.
                    start_new_session=True,
                )

            # Forked from a thread that lasts as long as this process: the kernel sends the
            # parent-death signal when the forking *thread* ends (see parent_death).
            self._popen = parent_death.in_lasting_thread(spawn)

    def _check_command(self) -> None:
        """A command name not on PATH fails here, as Popen would fail for it without the
        trampoline (which could only report it from the child, as exit code 127)."""
        command = self.argv[0] if self.argv else ""
        if not command or os.sep in command:
            return  # a path: the trampoline execs it from ``cwd``, as Popen would
        path = (self.env if self.env is not None else os.environ).get("PATH", os.defpath)
        if shutil.which(command, path=path) is None:
            raise FileNotFoundError(errno.ENOENT, os.strerror(errno.ENOENT), command)

    @property
    def pid(self) -> int | None:
        return None if self._popen is None else self._popen.pid

    def poll(self) -> int | None:
        """Exit code, or None while running (or before start)."""
        return None if self._popen is None else self._popen.poll()

    def alive(self) -> bool:
        return self._popen is not None and self._popen.poll() is None

    def tree(self) -> list[int]:
        """The process and its living descendants (whose memory is the engine's)."""
        if not self.alive() or self.pid is None:
            return []
        return [self.pid, *descendants(self.pid)]

    def log_tail(self, lines: int = 40) -> str:
        return self.read_tail(self.log_path, lines)

    @staticmethod
    def read_tail(log_path: Path, lines: int = 40) -> str:
        """The last ``lines`` lines of a log (of its last 64 KiB); "" when unreadable."""
        try:
            with open(log_path, "rb") as handle:
                handle.seek(0, os.SEEK_END)
                handle.seek(max(0, handle.tell() - 64 * 1024))
                text = handle.read().decode(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def kill_keeping_tail(self, lines: int = 40) -> str:
        """Kill the tree quickly (it failed or hung) and return its last log lines."""
        tail = self.log_tail(lines)
        self.terminate_tree(grace_s=2.0)
        return tail

    @staticmethod
    def signal_tree(leader: int, pids: Sequence[int], sig: int) -> None:
        """Send ``sig`` to the process group ``leader`` leads and to each of ``pids``."""
        try:
            os.killpg(leader, sig)
        except (ProcessLookupError, PermissionError):
            pass
        _signal_all(pids, sig)

    def terminate_tree(self, grace_s: float = 10.0) -> None:
        """SIGTERM the whole tree, then SIGKILL what is left after ``grace_s``. Idempotent."""
        if self._popen is None:
            return
        # Descendants can leave the group (setsid): collect them before the parent dies.
        pids = self.tree()
        self.signal_tree(self._popen.pid, pids, signal.SIGTERM)
        deadline = time.monotonic() + grace_s
        while time.monotonic() < deadline:
            if self._popen.poll() is not None and not any(running(p) for p in pids):
                break
            time.sleep(0.05)
        self.signal_tree(self._popen.pid, [p for p in pids if running(p)], signal.SIGKILL)
        try:
            self._popen.wait(timeout=5)
        except subprocess.TimeoutExpired:  # pragma: no cover - a zombie we cannot reap
            pass


def running(pid: int) -> bool:
    """Whether ``pid`` is a live process (an exited zombie awaiting its reaper is not)."""
    import psutil

    try:
        return bool(psutil.Process(pid).status() != psutil.STATUS_ZOMBIE)
    except psutil.NoSuchProcess:
        return False
    except psutil.AccessDenied:
        return True  # it exists; only its state is hidden from us
