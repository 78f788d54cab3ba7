"""The GPU lease primitive across real processes: all or nothing, no deadlock between
competitors, locks gone with a killed holder, a first-come-first-served queue, and a timeout
that names who holds what. Each test uses its own lock folder, so runs never meet."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from pytest_omni_perf.gpu_leases import Holder, LeaseDir, LeaseTimeout

POOL = (0, 1, 2, 3)

# A competitor in its own process: lease N GPUs, report them, hold, release, repeat.
COMPETITOR = textwrap.dedent("""
    import json, sys, time
    from pathlib import Path
    from pytest_omni_perf.gpu_leases import Holder, LeaseDir

    folder, pool, n, rounds, hold_s, out, name = sys.argv[1:8]
    leases = LeaseDir(Path(folder))
    pool = [int(i) for i in pool.split(",")]
    for r in range(int(rounds)):
        lease = leases.acquire(pool, int(n), Holder(0, name, f"{name}-{r}"), timeout_s=60)
        began = time.time()
        print(json.dumps({"name": name, "devices": list(lease.devices)}), flush=True)
        time.sleep(float(hold_s))
        ended = time.time()
        lease.release()
        with open(out, "a") as handle:
            handle.write(json.dumps({"name": name, "devices": list(lease.devices),
                                     "began": began, "ended": ended}) + "\\n")
    if len(sys.argv) > 8:  # hold forever (until killed) after reporting
        lease = leases.acquire(pool, int(n), Holder(0, name, sys.argv[8]), timeout_s=60)
        print(json.dumps({"name": name, "devices": list(lease.devices)}), flush=True)
        time.sleep(3600)
""")


def competitor(folder: Path, n: int, rounds: int, hold_s: float, out: Path, name: str,
               *hold_forever_as: str, pool: tuple[int, ...] = POOL) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", COMPETITOR, str(folder), ",".join(map(str, pool)), str(n),
         str(rounds), str(hold_s), str(out), name, *hold_forever_as],
        stdout=subprocess.PIPE, text=True)


def holding(process: subprocess.Popen[str]) -> list[int]:
    """Wait until the competitor says it holds its GPUs; they are the answer."""
    assert process.stdout is not None
    line = process.stdout.readline()
    assert line, f"competitor exited with {process.wait()}"
    devices: list[int] = json.loads(line)["devices"]
    return devices


def me(test: str = "outer") -> Holder:
    return Holder(os.getpid(), "main", test)


def test_all_or_nothing_leaves_no_partial_hold(tmp_path: Path) -> None:
    leases = LeaseDir(tmp_path)
    other = competitor(tmp_path, 1, 0, 0, tmp_path / "log", "other", "the-other::test",
                       pool=(1,))
    try:
        assert holding(other) == [1]
        assert leases.try_acquire((0, 1), 2, me()) is None
        # GPU 0 was free and locked on the way; it must have been let go again.
        assert set(leases.holders((0, 1))) == {1}
        with leases.try_acquire((0, 1), 1, me()) as lease:  # type: ignore[union-attr]
            assert lease.devices == (0,)
    finally:
        other.kill()
        other.wait()


def test_competitors_never_share_a_gpu_and_never_deadlock(tmp_path: Path) -> None:
    """Five processes each wanting 2 of 4 GPUs, eight times each: every lease is
    disjoint from those held at the same time, and all of them finish."""
    log = tmp_path / "log.jsonl"
    procs = [competitor(tmp_path / "locks", 2, 8, 0.02, log, f"p{i}") for i in range(5)]
    for proc in procs:
        assert proc.wait(timeout=120) == 0
    spans = [json.loads(line) for line in log.read_text().splitlines()]
    assert len(spans) == 40
    for i, a in enumerate(spans):
        assert len(set(a["devices"])) == 2
        for b in spans[i + 1:]:
            overlap = a["began"] < b["ended"] and b["began"] < a["ended"]
            if overlap:
                assert not set(a["devices"]) & set(b["devices"]), (a, b)
    # Two could run at once on four GPUs, and did: the pool is shared, not serialized.
    assert any(a["began"] < b["ended"] and b["began"] < a["ended"]
               for i, a in enumerate(spans) for b in spans[i + 1:])


def test_a_killed_holder_leaves_nothing_locked(tmp_path: Path) -> None:
    leases = LeaseDir(tmp_path)
    victim = competitor(tmp_path, 4, 0, 0, tmp_path / "log", "victim", "victim::test")
    assert holding(victim) == [0, 1, 2, 3]
    assert leases.try_acquire(POOL, 1, me()) is None
    victim.send_signal(signal.SIGKILL)
    victim.wait()
    with leases.acquire(POOL, 4, me(), timeout_s=5) as lease:
        assert lease.devices == POOL
    assert leases.holders(POOL) == {}


def test_timeout_names_the_holder(tmp_path: Path) -> None:
    leases = LeaseDir(tmp_path)
    other = competitor(tmp_path, 1, 0, 0, tmp_path / "log", "gw7", "pkg/test_x.py::test_hog",
                       pool=(1,))
    try:
        assert holding(other) == [1]
        began = time.monotonic()
        with pytest.raises(LeaseTimeout) as info:
            leases.acquire((0, 1), 2, me(), timeout_s=0.5)
        assert time.monotonic() - began >= 0.5
    finally:
        other.kill()
        other.wait()
    message = str(info.value)
    assert f"for 2 of GPUs [0, 1] (locks in {tmp_path})" in message
    assert "GPU 1: held by pid 0 (gw7) for pkg/test_x.py::test_hog" in message
    assert "free: GPU 0" in message
    assert leases.tickets() == []  # the give-up took its ticket away


def test_the_oldest_waiter_goes_first(tmp_path: Path) -> None:
    """A waiter for 2 GPUs is not overtaken by a later request for 1, even though one GPU
    is free: otherwise a stream of 1-GPU tests could starve it forever."""
    leases = LeaseDir(tmp_path)
    mine = leases.try_acquire((0, 1), 1, me())
    assert mine is not None and mine.devices == (0,)
    log = tmp_path / "log.jsonl"
    big = competitor(tmp_path, 2, 1, 0.0, log, "big", pool=(0, 1))
    deadline = time.monotonic() + 10
    while not leases.tickets() and time.monotonic() < deadline:
        time.sleep(0.02)
    [ticket] = leases.tickets()
    assert ticket.n == 2 and ticket.holder is not None and ticket.holder.worker == "big"
    assert leases.waited_for((0,)) and not leases.waited_for((5,))
    with pytest.raises(LeaseTimeout, match="queued ahead: pid 0 .big. for big-0.*2 GPU"):
        leases.acquire((0, 1), 1, me("late"), timeout_s=0.3)
    mine.release()
    assert holding(big) == [0, 1]
    assert big.wait(timeout=10) == 0


def test_a_dead_waiters_ticket_is_swept(tmp_path: Path) -> None:
    leases = LeaseDir(tmp_path)
    mine = leases.try_acquire((0,), 1, me())
    assert mine is not None
    waiter = competitor(tmp_path, 1, 1, 0, tmp_path / "log", "w", pool=(0,))
    deadline = time.monotonic() + 10
    while not leases.tickets() and time.monotonic() < deadline:
        time.sleep(0.02)
    assert len(leases.tickets()) == 1
    waiter.send_signal(signal.SIGKILL)
    waiter.wait()
    assert leases.tickets() == []
    assert not list(tmp_path.glob("wait-*"))
    mine.release()
    with leases.acquire((0,), 1, me(), timeout_s=1) as lease:
        assert lease.devices == (0,)


def test_lease_relabel_and_bad_counts(tmp_path: Path) -> None:
    leases = LeaseDir(tmp_path)
    with pytest.raises(ValueError, match="cannot lease 3 GPU"):
        leases.try_acquire((0, 1), 3, me())
    lease = leases.try_acquire((0, 1), 2, me("first"))
    assert lease is not None
    lease.relabel(me("second"))
    assert {h.test for h in leases.holders((0, 1)).values() if h} == {"second"}
    lease.release()
    lease.release()  # twice is fine
    assert leases.holders((0, 1)) == {}
