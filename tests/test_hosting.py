"""The worker process host: crashes, hangs and start-up failures end clearly, leave nothing."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from pytest_omni_perf.engines.base import (
    EngineError, EngineSpec, GenerationRequest, ProfileUnsupported,
)
from pytest_omni_perf.engines.hosting import IsolatedEngine
from pytest_omni_perf.engines.process import descendants, running

TESTS_DIR = str(Path(__file__).parent)
REQUEST = GenerationRequest(width=16, height=16)


def engine(tmp_path: Path, profile: str = "eager", **spec: float) -> IsolatedEngine:
    return IsolatedEngine(
        EngineSpec(model="standin", profile_name=profile, options={}, backend="standin", **spec),
        "standin:make", {"profile": profile, "options": {}},
        env={"PYTHONPATH": TESTS_DIR}, log_dir=tmp_path)


def gone(pid: int) -> bool:
    return not running(pid)


def test_generate_and_stop_leave_nothing(tmp_path: Path) -> None:
    eng = engine(tmp_path)
    eng.start()
    pids = eng.pids()
    assert pids and eng.describe().applied == {"standin": "eager"}
    output = eng.generate(REQUEST)
    assert output.frames[0].shape == (16, 16, 3)
    eng.stop()
    eng.stop()  # idempotent
    assert all(gone(p) for p in pids)


def test_worker_killed_mid_request_is_a_clear_error(tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STANDIN_CRASH_EAGER", "1")
    eng = engine(tmp_path)
    eng.start()
    pid = eng.pids()[0]
    with pytest.raises(EngineError, match=r"died during the request: exit code 3; log: "):
        eng.generate(REQUEST)
    assert gone(pid)
    eng.stop()


def test_hang_is_killed_at_the_request_timeout(tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STANDIN_HANG_EAGER", "1")
    eng = engine(tmp_path, request_timeout_s=1.0)
    eng.start()
    pid = eng.pids()[0]
    began = time.monotonic()
    with pytest.raises(EngineError, match=r"did not answer the request within 1 s: killed it"
                                          r" \(raise --omni-request-timeout"):
        eng.generate(REQUEST)
    assert time.monotonic() - began < 10
    assert gone(pid)


def test_unsupported_at_start(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STANDIN_UNSUPPORTED_EAGER", "1")
    eng = engine(tmp_path)
    with pytest.raises(ProfileUnsupported, match="unsupported on purpose"):
        eng.start()
    assert eng.pids() == []


def test_start_failure_reports_the_traceback_quickly(tmp_path: Path) -> None:
    eng = IsolatedEngine(
        EngineSpec(model="x", profile_name="eager", options={}, backend="standin"),
        "standin:no_such_factory", {}, env={"PYTHONPATH": TESTS_DIR}, log_dir=tmp_path)
    began = time.monotonic()
    with pytest.raises(EngineError, match=r"failed during start:[\s\S]*AttributeError"):
        eng.start()
    assert time.monotonic() - began < 30
    assert eng.pids() == []


def test_grandchildren_are_killed_with_the_tree(tmp_path: Path) -> None:
    from pytest_omni_perf.engines.process import ManagedProcess

    proc = ManagedProcess(["bash", "-c", "sleep 300 & sleep 300 & wait"],
                          log_path=tmp_path / "log")
    proc.start()
    deadline = time.monotonic() + 5
    while len(descendants(proc.pid or 0)) < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    tree = proc.tree()
    assert len(tree) == 3
    proc.terminate_tree(grace_s=2)
    assert all(gone(p) for p in tree)
    assert not os.path.exists(f"/proc/{tree[0]}") or gone(tree[0])


def test_engine_keeps_the_gpu_lease_locked_while_it_lives(tmp_path: Path) -> None:
    """The engine inherits the lease's locked descriptors: if the pytest process that took
    the lease dies (here: closes its copies without unlocking), the GPU stays locked until
    the engine is gone too, so nobody else is handed a GPU that still holds its memory."""
    from pytest_omni_perf.gpu_leases import Holder, LeaseDir

    leases = LeaseDir(tmp_path / "locks")
    lease = leases.try_acquire([0], 1, Holder(pid=os.getpid(), worker="main", test="t"))
    assert lease is not None
    eng = IsolatedEngine(
        EngineSpec(model="standin", profile_name="eager", options={}, backend="standin",
                   devices=(0,), lease_fds=lease.fds),
        "standin:make", {"profile": "eager", "options": {}},
        env={"PYTHONPATH": TESTS_DIR}, log_dir=tmp_path)
    eng.start()
    try:
        for fd in lease.fds:  # what the kernel does when the pytest worker is killed
            os.close(fd)
        other = Holder(pid=os.getpid(), worker="gw1", test="other")
        assert leases.try_acquire([0], 1, other) is None, "the live engine holds the lock"
    finally:
        eng.stop()
    after = leases.try_acquire([0], 1, Holder(pid=os.getpid(), worker="gw1", test="other"))
    assert after is not None, "the lock went with the engine"
    after.release()
