"""GPUs as a pool, through real pytest runs on two fake GPUs (the probe hook) with stand-in
engines in real worker processes: which ``CUDA_VISIBLE_DEVICES`` each engine was started
with, and when it ran, comes from the engines themselves (``STANDIN_DEVICES_LOG``)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

import standin
from pytest_omni_perf.gpu_leases import Holder, LeaseDir

FAKE_GPUS = """
from pytest_omni_perf.hardware import GpuInfo, HardwareInfo

def pytest_omni_perf_probe_hardware(config):
    gpus = tuple(GpuInfo(i, "Fake GPU", (9, 0), 80.0) for i in range(2))
    return HardwareInfo(gpus=gpus, driver="0", note="fake")
"""
# A 2-GPU profile the stand-in can run (it ignores options); its baseline is 1-GPU eager.
TWO_GPU_PROFILE = """
[profiles.two]
description = "spans two GPUs"
options = { ulysses_degree = 2 }
"""
WAIT_FOR = """
import os, time
from pathlib import Path

def wait_for(pattern, folder=Path(os.environ["MARKS"])):
    deadline = time.monotonic() + 30
    while not list(folder.glob(pattern)):
        assert time.monotonic() < deadline, f"nobody made {pattern} in {folder}"
        time.sleep(0.05)

def mark(name):
    (Path(os.environ["MARKS"]) / name).touch()
"""


@pytest.fixture
def gpu_run(standin_pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch,
            tmp_path: Path) -> pytest.Pytester:
    """Two fake GPUs, private lock and marker folders, isolated stand-in engines."""
    standin_pytester.makeconftest(standin.conftest_source() + FAKE_GPUS)
    standin_pytester.makefile(".toml", profiles=TWO_GPU_PROFILE)
    standin_pytester.makeini("[pytest]\nomni_profile_files = profiles.toml\n")
    for name in ("locks", "marks"):
        (tmp_path / name).mkdir()
    monkeypatch.setenv("MARKS", str(tmp_path / "marks"))
    monkeypatch.setenv("LOCKS", str(tmp_path / "locks"))
    monkeypatch.setenv("STANDIN_ISOLATED", "1")
    monkeypatch.setenv("STANDIN_DEVICES_LOG", str(tmp_path / "devices.jsonl"))
    monkeypatch.setenv("STANDIN_DELAY_EAGER", "0.05")
    monkeypatch.setenv("STANDIN_DELAY_TWO", "0.05")
    return standin_pytester


def run(pytester: pytest.Pytester, *args: str) -> pytest.RunResult:
    return pytester.runpytest_subprocess(
        "-p", "no:cacheprovider", "--omni-rounds=2", "--omni-warmup=0",
        "--omni-update-baselines", f"--omni-gpu-lock-dir={os.environ['LOCKS']}",
        # A lease that is never given back fails in 30 s instead of hanging the suite.
        "--omni-report-json=report.json", "--omni-gpu-wait=30", *args)


def engine_log() -> list[dict[str, Any]]:
    """One line per request the stand-in engines served, in the order they ended."""
    lines = Path(os.environ["STANDIN_DEVICES_LOG"]).read_text().splitlines()
    return sorted((json.loads(line) for line in lines), key=lambda r: float(r["end"]))


def report(pytester: pytest.Pytester) -> list[dict[str, Any]]:
    results: list[dict[str, Any]] = json.loads((pytester.path / "report.json").read_text())[
        "results"]
    return results


def no_lock_left() -> None:
    leases = LeaseDir(Path(os.environ["LOCKS"]))
    assert leases.holders((0, 1)) == {}
    assert leases.tickets() == []


CONCURRENT = WAIT_FOR + """
import pytest

@pytest.mark.omni_profiles("eager")
def test_a(omni_perf):
    mark("a-holds")      # the fixture leased a GPU before the body runs
    wait_for("b-holds")  # so both hold one at the same time
    omni_perf.measure(width=16, height=16, num_inference_steps=2)

@pytest.mark.omni_profiles("eager")
def test_b(omni_perf):
    mark("b-holds")
    wait_for("a-holds")
    omni_perf.measure(width=24, height=16, num_inference_steps=2)
"""


def test_two_workers_hold_disjoint_gpus_at_the_same_time(gpu_run: pytest.Pytester) -> None:
    gpu_run.makepyfile(CONCURRENT)
    result = run(gpu_run, "-n", "2")
    result.assert_outcomes(passed=2)
    log = engine_log()
    used = {width: {r["cuda_visible_devices"] for r in log if r["width"] == width}
            for width in (16, 24)}
    assert sorted([*used[16], *used[24]]) == ["0", "1"], used
    # ... and their requests really overlapped in time (the barrier made sure of it).
    a = [r for r in log if r["width"] == 16]
    b = [r for r in log if r["width"] == 24]
    assert min(r["begin"] for r in a) < max(r["end"] for r in b)
    assert min(r["begin"] for r in b) < max(r["end"] for r in a)
    devices = {r["measurement"]["request"]["width"]: r["measurement"]["devices"]
               for r in report(gpu_run)}
    assert sorted(devices.values()) == [[0], [1]]
    result.stdout.fnmatch_lines(["*test*profile*GPUs*median*", "*test_a*eager*? *"])
    no_lock_left()


SEQUENCE = WAIT_FOR + """
import pytest

@pytest.fixture
def after_one():
    if os.environ.get("EXPECT_WAITER"):
        wait_for("one-holds")  # set up before omni_perf: ask for GPUs only once test_one holds

@pytest.mark.omni_profiles("eager")
def test_one(omni_perf):
    omni_perf.measure(width=16, height=16, num_inference_steps=2)
    if os.environ.get("EXPECT_WAITER"):
        mark("one-holds")
        wait_for("wait-*.json", Path(os.environ["LOCKS"]))  # test_two queued for both GPUs
    omni_perf.measure(width=16, height=24, num_inference_steps=2)

@pytest.mark.omni_profiles("two")
def test_two(after_one, omni_perf):
    omni_perf.measure(width=32, height=16, num_inference_steps=2)
"""


def test_a_two_gpu_test_waits_until_both_are_free(gpu_run: pytest.Pytester,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EXPECT_WAITER", "1")
    gpu_run.makepyfile(SEQUENCE)
    result = run(gpu_run, "-n", "2")
    result.assert_outcomes(passed=2)
    log = engine_log()
    one = [r for r in log if r["width"] == 16]
    two = [r for r in log if r["width"] == 32]
    assert {r["cuda_visible_devices"] for r in one} <= {"0", "1"}
    # test_two asked while test_one held a GPU, and ran only after test_one let go.
    assert min(r["begin"] for r in two) > max(r["end"] for r in one)
    assert {r["cuda_visible_devices"] for r in two if r["profile"] == "two"} == {"0,1"}
    # Its baseline (1-GPU eager) ran on the first GPU of its lease.
    assert {r["cuda_visible_devices"] for r in two if r["profile"] == "eager"} == {"0"}
    [result_two] = [r for r in report(gpu_run) if r["profile"] == "two"]
    assert result_two["measurement"]["devices"] == [0, 1]
    assert result_two["baseline"]["devices"] == [0]
    no_lock_left()


def test_serial_run_reuses_the_lease_and_re_leases_for_another_count(
        gpu_run: pytest.Pytester) -> None:
    gpu_run.makepyfile(SEQUENCE)
    result = run(gpu_run)
    result.assert_outcomes(passed=2)
    log = engine_log()
    assert [r["cuda_visible_devices"] for r in log if r["width"] == 16] == ["0"] * 4
    assert {r["cuda_visible_devices"] for r in log
            if r["width"] == 32 and r["profile"] == "two"} == {"0,1"}
    # One eager engine served test_one's two requests and test_two's baseline would have
    # reused it, but a 2-GPU lease means a new one: its pid differs.
    eager_pids = {r["pid"] for r in log if r["profile"] == "eager"}
    assert len(eager_pids) == 2
    no_lock_left()


KILLED = """
import os, signal
import pytest

@pytest.mark.omni_profiles("eager")
def test_killed(omni_perf):
    omni_perf.measure(width=16, height=16, num_inference_steps=2)
    os.kill(os.getpid(), signal.SIGKILL)  # the xdist worker dies holding its GPU

@pytest.mark.omni_profiles("eager")
def test_other(omni_perf):
    omni_perf.measure(width=24, height=16, num_inference_steps=2)

@pytest.mark.omni_profiles("two")
def test_both(omni_perf):
    omni_perf.measure(width=32, height=16, num_inference_steps=2)
"""


def test_a_killed_worker_leaves_no_gpu_locked(gpu_run: pytest.Pytester) -> None:
    gpu_run.makepyfile(KILLED)
    # A lock left behind would make test_both wait out the 20 s and error.
    result = run(gpu_run, "-n", "2", "--omni-gpu-wait=20")
    result.assert_outcomes(passed=2, failed=1)
    result.stdout.fnmatch_lines(["*worker*crashed while running*test_killed*"])
    log = engine_log()
    assert {r["cuda_visible_devices"] for r in log if r["profile"] == "two"} == {"0,1"}
    no_lock_left()


HOGGED = """
import pytest

@pytest.mark.omni_profiles("eager")
def test_starved(omni_perf):
    omni_perf.measure(width=16, height=16, num_inference_steps=2)
"""


@pytest.mark.parametrize("xdist", [[], ["-n", "2"]], ids=["serial", "xdist"])
def test_a_wait_that_times_out_names_the_holder(gpu_run: pytest.Pytester,
                                                xdist: list[str]) -> None:
    """Another pytest session (here: this process) holds both GPUs for a long test."""
    gpu_run.makepyfile(HOGGED)
    leases = LeaseDir(Path(os.environ["LOCKS"]))
    holder = Holder(os.getpid(), "gw3", "other_session.py::test_long[usp2]")
    with leases.try_acquire((0, 1), 2, holder):  # type: ignore[union-attr]
        result = run(gpu_run, "--omni-gpu-wait=0.5", *xdist)
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines([
        "*test_starved?eager?: waited 0.* s for 1 of GPUs [[]0, 1[]]*did not come free;"
        f" GPU 0: held by pid {os.getpid()} (gw3) for other_session.py::test_long?usp2?,"
        f" * s ago; GPU 1: held by pid {os.getpid()} (gw3)*Raise --omni-gpu-wait*"])
    assert not Path(os.environ["STANDIN_DEVICES_LOG"]).exists()  # no engine started
    no_lock_left()


def test_no_gpu_no_lease(standin_pytester: pytest.Pytester, tmp_path: Path,
                         monkeypatch: pytest.MonkeyPatch) -> None:
    """On a machine without GPUs nothing is leased and engines get no device list."""
    monkeypatch.setenv("STANDIN_ISOLATED", "1")
    monkeypatch.setenv("STANDIN_DEVICES_LOG", str(tmp_path / "devices.jsonl"))
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    standin_pytester.makepyfile(HOGGED)
    result = standin_pytester.runpytest_subprocess(
        "-p", "no:cacheprovider", "--omni-rounds=2", "--omni-warmup=0",
        "--omni-update-baselines", f"--omni-gpu-lock-dir={tmp_path / 'locks'}")
    result.assert_outcomes(passed=1)
    log = [json.loads(line) for line in (tmp_path / "devices.jsonl").read_text().splitlines()]
    assert {r["cuda_visible_devices"] for r in log} == {None}
    assert not (tmp_path / "locks").exists()
    assert "GPUs" not in result.stdout.str()


def test_lease_timeout_option_is_validated(standin_pytester: pytest.Pytester) -> None:
    result = standin_pytester.runpytest("--omni-gpu-wait=0")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*--omni-gpu-wait: expected a finite number > 0, got *0*"])
