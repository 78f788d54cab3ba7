"""Process trees, liveness and resident memory through psutil: the same answers the
hand-read /proc gave (the reference below is that reader, kept here as the oracle)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator

import pytest

from pytest_omni_perf.engines.process import descendants, running
from pytest_omni_perf.measure.memory import rss_bytes

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")


def _proc_descendants(root: int) -> list[int]:
    """The former /proc reader: parent links from /proc/<pid>/stat."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        try:
            with open(f"/proc/{entry}/stat", "rb") as handle:
                stat = handle.read().decode(errors="replace")
        except (OSError, ValueError):
            continue
        if entry.isdigit():
            children.setdefault(int(stat[stat.rfind(")") + 2:].split()[1]), []).append(int(entry))
    found, stack = [], [root]
    while stack:
        for child in children.get(stack.pop(), []):
            found.append(child)
            stack.append(child)
    return found


def _vm_rss(pid: int) -> int:
    with open(f"/proc/{pid}/status", "rb") as handle:
        return next(int(line.split()[1]) * 1024 for line in handle if line.startswith(b"VmRSS:"))


@pytest.fixture
def tree() -> Iterator[subprocess.Popen[bytes]]:
    """sh -> (sh -> sleep, sleep): three descendants, two levels deep."""
    proc = subprocess.Popen(["sh", "-c", "sh -c 'sleep 60 & wait' & sleep 60 & wait"],
                            start_new_session=True)
    deadline = time.monotonic() + 10
    while len(_proc_descendants(proc.pid)) < 3 and time.monotonic() < deadline:
        time.sleep(0.02)
    yield proc
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


def test_descendants_are_the_whole_tree(tree: subprocess.Popen[bytes]) -> None:
    found = descendants(tree.pid)
    assert len(found) == 3 and sorted(found) == sorted(_proc_descendants(tree.pid))
    assert all(running(pid) for pid in [tree.pid, *found])
    assert rss_bytes([tree.pid, *found]) == sum(_vm_rss(p) for p in [tree.pid, *found])


def test_gone_and_zombie_processes() -> None:
    child = subprocess.Popen(["true"])
    deadline = time.monotonic() + 10
    while _state(child.pid) != "Z" and time.monotonic() < deadline:
        time.sleep(0.01)  # exited, not reaped yet: a zombie
    assert _state(child.pid) == "Z" and not running(child.pid)
    assert child.pid in descendants(os.getpid()) and child.pid in _proc_descendants(os.getpid())
    child.wait()
    assert not running(child.pid) and descendants(child.pid) == []
    assert rss_bytes([child.pid]) == 0 and rss_bytes([]) == 0


def _state(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/stat", "rb") as handle:
            return handle.read().rsplit(b")", 1)[-1].split()[0].decode()
    except OSError:
        return "gone"
