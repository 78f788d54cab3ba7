"""Faults on a real GPU: an engine that finds the GPU full, and an engine worker killed
mid-request. Both must fail their test quickly and clearly, and afterwards no process of
the plugin's engines may hold GPU memory (NVML's per-process list, as the plugin's own
memory sampler reads it). They skip on machines without a GPU.

Run on a GPU machine (one GPU is enough)::

    pytest tests/gpu -p no:cacheprovider -rs -v
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pytest_omni_perf.engines.process import running

pytestmark = pytest.mark.requires_gpus(1)

def _plugin_args() -> tuple[str, ...]:
    """``-p pytest_omni_perf.plugin`` where the package runs from a checkout (as on the GPU
    machines, PYTHONPATH only): without its entry point the inner pytest would not load it."""
    from importlib.metadata import entry_points

    installed = any(ep.value.startswith("pytest_omni_perf")
                    for ep in entry_points(group="pytest11"))
    return () if installed else ("-p", "pytest_omni_perf.plugin")


INNER = (*_plugin_args(), "-p", "no:cacheprovider", "--omni-backend=diffusers",
         "--omni-model=tiny-flux", "--omni-profile=eager", "--omni-update-baselines",
         "--omni-start-timeout=1800", "-rfE")

# Fills GPU 0 in chunks down to a few MiB, prints what is left, then waits to be killed.
HOG = """
import sys, time, torch
blocks = []
for size in (2**30, 2**26, 2**22):
    while True:
        try:
            blocks.append(torch.empty(size, dtype=torch.uint8, device="cuda:0"))
        except torch.OutOfMemoryError:
            break
free, total = torch.cuda.mem_get_info(0)
print(free, total, flush=True)
time.sleep(3600)
"""


def _gpu_pids() -> dict[int, int]:
    """pid -> bytes of every process NVML lists on any GPU of this machine."""
    from pytest_omni_perf.hardware import nvml

    found: dict[int, int] = {}
    with nvml() as pynvml:
        for index in range(pynvml.nvmlDeviceGetCount()):
            handle = pynvml.nvmlDeviceGetHandleByIndex(index)
            for proc in pynvml.nvmlDeviceGetComputeRunningProcesses(handle):
                found[proc.pid] = found.get(proc.pid, 0) + int(proc.usedGpuMemory or 0)
    return found


def _used_bytes(index: int = 0) -> int:
    from pytest_omni_perf.hardware import nvml

    with nvml() as pynvml:
        return int(pynvml.nvmlDeviceGetMemoryInfo(pynvml.nvmlDeviceGetHandleByIndex(index)).used)


def _new_on_gpu(before: set[int], allowed: set[int], within_s: float = 15.0) -> dict[int, int]:
    """GPU processes not there before (nor allowed), after the driver had time to let go."""
    deadline = time.monotonic() + within_s
    while True:
        left = {pid: used for pid, used in _gpu_pids().items()
                if pid not in before and pid not in allowed}
        if not left or time.monotonic() > deadline:
            return left
        time.sleep(0.2)


@pytest.fixture(autouse=True)
def _nvml() -> None:
    pytest.importorskip("pynvml", reason="pip install pytest-omni-perf[gpu]")
    pytest.importorskip("torch")
    pytest.importorskip("diffusers")


def test_full_gpu_at_start_fails_fast_with_out_of_memory(pytester: pytest.Pytester) -> None:
    before = set(_gpu_pids())
    hog = subprocess.Popen([sys.executable, "-c", HOG], stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, text=True)
    try:
        assert hog.stdout is not None
        line = hog.stdout.readline()  # blocks until the GPU is full
        assert line, f"the GPU filler failed: {hog.communicate()[1]}"
        free, total = map(int, line.split())
        assert free < 256 * 2**20, f"could not fill the GPU: {free} of {total} bytes free"
        pytester.makepyfile("""
def test_image(omni_perf):
    omni_perf.measure(width=256, height=256, num_inference_steps=4)
""")
        began = time.monotonic()
        result = pytester.runpytest_subprocess(*INNER, "--omni-rounds=2", "--omni-warmup=0")
        elapsed = time.monotonic() - began
        text = result.stdout.str()
        outcomes = result.parseoutcomes()
        assert outcomes.get("failed", 0) + outcomes.get("errors", 0) == 1, text
        assert "INTERNALERROR" not in text, text
        headline = next(line for line in result.outlines if line.startswith("engine "))
        assert "out of memory" in headline.lower(), text
        assert elapsed < 180, (elapsed, text)
        # The failed engine left nothing on the GPU; the hog is the only newcomer.
        assert _new_on_gpu(before, {hog.pid}) == {}
    finally:
        hog.kill()
        hog.wait()


KILLED = """
import json, os, signal, threading

RECORD = os.environ["GPU_FAULT_RECORD"]


def _record(name, pids):
    with open(RECORD, "a") as handle:
        handle.write(json.dumps({"test": name, "pids": pids}) + "\\n")


def test_killed(omni_engine, omni_perf):
    pids = omni_engine.pids()
    _record("killed", pids)
    # A long run of long requests: the kill lands in one of them.
    threading.Timer(5.0, os.kill, (pids[0], signal.SIGKILL)).start()
    omni_perf.measure(width=1024, height=1024, num_inference_steps=50)


def test_fresh(omni_engine, omni_perf):
    _record("fresh", omni_engine.pids())
    omni_perf.measure(width=256, height=256, num_inference_steps=4)
"""


def test_worker_killed_mid_request_frees_the_gpu_and_the_next_test_runs(
        pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> None:
    before = set(_gpu_pids())
    used_before = _used_bytes()
    record = pytester.path / "pids.jsonl"
    monkeypatch.setenv("GPU_FAULT_RECORD", str(record))
    pytester.makepyfile(KILLED)
    result = pytester.runpytest_subprocess(*INNER, "--omni-rounds=200", "--omni-warmup=1")
    text = result.stdout.str()
    result.assert_outcomes(failed=1, passed=1)
    result.stdout.fnmatch_lines([
        "*_ test_killed?eager? _*",
        "engine worker for 'eager' (diffusers, model tiny-flux) died during the request:"
        " killed by signal 9; log: *"])
    rows = [json.loads(line) for line in record.read_text().splitlines()]
    killed = next(r["pids"] for r in rows if r["test"] == "killed")
    fresh = next(r["pids"] for r in rows if r["test"] == "fresh")
    assert killed and fresh and not set(killed) & set(fresh), rows  # a new worker
    # Neither the killed worker nor the session's engines hold GPU memory now.
    assert _new_on_gpu(before, set()) == {}, text
    assert not any(running(pid) for pid in killed + fresh)
    # And the device's own count is back (CUDA contexts included), within 1 GiB.
    deadline = time.monotonic() + 15
    while _used_bytes() - used_before > 2**30 and time.monotonic() < deadline:
        time.sleep(0.2)
    assert _used_bytes() - used_before <= 2**30, (used_before, _used_bytes())


def test_gpu_processes_are_listed() -> None:
    """The checks above can fail: NVML lists a process while it holds GPU memory, and
    no longer once it is killed."""
    probe = subprocess.Popen([sys.executable, "-c", (
        "import torch, time; x = torch.empty(2**28, dtype=torch.uint8, device='cuda:0'); "
        "print('ready', flush=True); time.sleep(600)")], stdout=subprocess.PIPE, text=True)
    try:
        assert probe.stdout is not None and probe.stdout.readline().strip() == "ready"
        assert _gpu_pids().get(probe.pid, 0) >= 2**28
    finally:
        probe.kill()
        probe.wait()
    deadline = time.monotonic() + 15
    while probe.pid in _gpu_pids() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert probe.pid not in _gpu_pids()
