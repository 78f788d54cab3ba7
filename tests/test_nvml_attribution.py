"""A measurement that saw nothing says so: NVML inside a container with its own PID namespace
(host PIDs that never match the engine's), NVML withholding per-process memory, and a MIG
slice in CUDA_VISIBLE_DEVICES. NVML is the double in tests/nvml_double (pynvml's names)."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from pytest_omni_perf import hardware, judge
from pytest_omni_perf.measure.memory import (
    NO_LOCAL_PROCESS, MemoryPeak, sampler_for, with_engine_peak,
)
from pytest_omni_perf.profiles import Bounds

DOUBLE = Path(__file__).parent / "nvml_double"
GIB = 2**30
H100 = {"name": "NVIDIA H100 80GB HBM3", "uuid": "GPU-5a1c3c1e-0000-1111-2222-333344445555",
        "total": 80 * GIB, "used": 7 * GIB, "sm": [9, 0]}


@pytest.fixture
def nvml(monkeypatch: pytest.MonkeyPatch) -> Iterator[ModuleType]:
    """The NVML double as ``pynvml``; tests set its ``STATE``."""
    sys.path.insert(0, str(DOUBLE))
    try:
        sys.modules.pop("pynvml", None)
        import pynvml
    finally:
        sys.path.remove(str(DOUBLE))
    monkeypatch.setitem(sys.modules, "pynvml", pynvml)
    yield pynvml


def _state(nvml: ModuleType, *processes: dict[str, Any], **gpu: Any) -> None:
    vars(nvml)["STATE"] = {"gpus": [{**H100, **gpu, "processes": list(processes)}]}


def _measure() -> MemoryPeak:
    sampler = sampler_for(lambda: [os.getpid()], [0], interval_s=0.01)
    sampler.start()
    return sampler.stop()


def test_the_engines_own_pid_is_counted(nvml: ModuleType) -> None:
    _state(nvml, {"pid": "self", "used": 3 * GIB}, {"pid": 1, "used": 9 * GIB})
    peak = _measure()
    assert (peak.kind, peak.peak_bytes, peak.note, peak.label) == (
        "nvml", 3 * GIB, "", "VRAM (NVML)")


def test_the_only_process_on_the_gpu_under_a_host_pid_is_counted(nvml: ModuleType) -> None:
    _state(nvml, {"pid": "self", "offset": 100000, "used": 6 * GIB})
    peak = _measure()
    assert peak.kind == "nvml" and peak.peak_bytes == 6 * GIB and peak.is_vram
    assert peak.label == (
        f"VRAM (NVML): counted the only process on GPU 0 (PID {os.getpid() + 100000}): NVML's "
        "PIDs are not visible from this PID namespace (a container without --pid=host)")
    violations = judge.session_judgement(Bounds(max_vram_gib=4.0), _facts(peak)).violations
    assert [v.message for v in violations] == [
        "peak VRAM 6.00 GiB is above the bound max_vram_gib=4"]


def _facts(peak: MemoryPeak) -> judge.SessionFacts:
    return judge.SessionFacts(profile="layerwise_offload", baseline="eager", speedup=None,
                              ssim=1.0, ssim_worst=1.0, memory_gib=peak.peak_gib,
                              memory_ratio=None, memory_is_vram=peak.is_vram,
                              memory_unmeasured=peak.unmeasured)


@pytest.mark.parametrize(("processes", "reason"), [
    ([{"pid": "self", "offset": 100000, "used": GIB}, {"pid": "self", "offset": 100001,
                                                       "used": GIB}],
     "none of them the engine's ({me}): they are PIDs of another PID namespace"),
    ([{"pid": 1, "used": GIB}], "none of them the engine's ({me}): other processes share the GPU"),
    ([{"pid": "self", "used": None}], "NVML does not report per-process memory here"),
    ([], "NVML listed no compute process on GPU 0 while the engine ran"),
])
def test_nothing_attributable_is_not_a_zero(nvml: ModuleType, processes: list[dict[str, Any]],
                                            reason: str) -> None:
    _state(nvml, *processes)
    peak = _measure()
    assert peak.kind == "none" and peak.peak_bytes == 0 and not peak.is_vram
    assert reason.format(me=os.getpid()) in (peak.unmeasured or "")
    assert peak.label.startswith("VRAM not measured: ")
    judged = judge.session_judgement(Bounds(max_vram_ratio=0.85), _facts(peak))
    violations, notes = judged.violations, judged.notes
    assert [v.metric for v in violations] == ["vram"] and notes == []
    assert violations[0].message.startswith(f"VRAM bounds cannot be checked: {peak.unmeasured}")
    judged = judge.session_judgement(Bounds(), _facts(peak))
    violations, notes = judged.violations, judged.notes
    assert violations == [] and notes == [f"peak VRAM not measured: {peak.unmeasured}"]


def test_the_engines_allocator_peak_stands_in() -> None:
    none = MemoryPeak("none", 0, 5, note="NVML lists processes 7 on GPU 0")
    torch = with_engine_peak(none, {"torch_peak_bytes": 5 * GIB, "cuda_event_s": 0.1})
    assert (torch.kind, torch.peak_bytes, torch.is_vram) == ("engine", 5 * GIB, True)
    assert torch.label == ("VRAM (allocator peak reported by the engine): "
                           "torch.cuda.max_memory_allocated, without the CUDA context, because "
                           "NVML lists processes 7 on GPU 0")
    ranks = with_engine_peak(none, {"torch_peak_bytes": 3 * GIB,
                                    "rank_torch_peak_bytes": [3 * GIB, 2 * GIB]})
    assert (ranks.peak_bytes, ranks.per_gpu_bytes) == (5 * GIB, 3 * GIB)
    omni = with_engine_peak(none, {"peak_memory_mb": 1024.0})
    assert (omni.kind, omni.peak_bytes) == ("engine", GIB)
    for junk in ({}, {"torch_peak_bytes": 0}, {"torch_peak_bytes": float("nan")},
                 {"peak_memory_mb": True}, {"torch_peak_bytes": "5"}):
        assert with_engine_peak(none, junk) is none
    measured = MemoryPeak("nvml", GIB, 3)
    assert with_engine_peak(measured, {"torch_peak_bytes": 5 * GIB}) is measured


MIG_UUID = "MIG-7f1c2d3e-aaaa-bbbb-cccc-ddddeeeeffff"
A100_MIG = {**H100, "name": "NVIDIA A100-SXM4-80GB", "sm": [8, 0],
            "mig": [{"uuid": "MIG-0b0b0b0b-1111-2222-3333-444455556666",
                     "name": "NVIDIA A100-SXM4-80GB MIG 3g.40gb", "total": 39 * GIB,
                     "gi": 2, "ci": 0},
                    {"uuid": MIG_UUID, "name": "NVIDIA A100-SXM4-80GB MIG 1g.10gb",
                     "total": 9.75 * GIB, "gi": 9, "ci": 0}]}


@pytest.mark.parametrize("visible", [MIG_UUID, MIG_UUID[:12], f"MIG-{H100['uuid']}/9/0"])
def test_a_mig_slice_stops_with_what_it_is(nvml: ModuleType, monkeypatch: pytest.MonkeyPatch,
                                           visible: str) -> None:
    vars(nvml)["STATE"] = {"gpus": [A100_MIG]}
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", visible)
    with pytest.raises(pytest.UsageError) as error:
        hardware.probe()
    assert str(error.value) == (
        f"CUDA_VISIBLE_DEVICES={visible!r} names a MIG slice (NVIDIA A100-SXM4-80GB MIG "
        "1g.10gb, 9.8 GiB, on GPU 0). pytest-omni-perf places each engine on whole GPUs (it "
        "starts engines with CUDA_VISIBLE_DEVICES=<GPU index>), so it cannot measure on a MIG "
        "slice: set CUDA_VISIBLE_DEVICES to a whole GPU (an index or GPU-<uuid>), or to an "
        "empty value for a CPU run.")


def test_an_unknown_mig_slice_or_a_gpu_without_mig_stops_too(
        nvml: ModuleType, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "MIG-ffffffff")
    for gpu in (A100_MIG, H100):
        vars(nvml)["STATE"] = {"gpus": [gpu]}
        with pytest.raises(pytest.UsageError, match=r"\(no MIG slice of that name here\)"):
            hardware.probe()


def test_whole_gpus_are_found_and_a_bad_entry_is_named(nvml: ModuleType,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    vars(nvml)["STATE"] = {"gpus": [A100_MIG, H100]}
    for visible, key in (("1", "nvidia-h100-80gb-hbm3"), ("GPU-5a1c", "nvidia-a100-sxm4-80gb")):
        monkeypatch.setenv("CUDA_VISIBLE_DEVICES", visible)
        assert hardware.probe().key == key
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "GPU-deadbeef,0")
    found = hardware.probe()
    assert found.key == "cpu" and found.note == (
        "CUDA_VISIBLE_DEVICES entry 'GPU-deadbeef' names none of the 2 GPU(s) NVML sees, and "
        "CUDA ignores everything from it on")


BOUNDED_TEST = """
import pytest

@pytest.mark.omni_bounds(max_vram_gib=4)
def test_fits(omni_perf):
    omni_perf.measure(width=16, height=16, num_inference_steps=2)
"""


@pytest.mark.parametrize(("host_processes", "expected"), [
    (1, ["*vram: peak VRAM 6.00 GiB is above the bound max_vram_gib=4*"]),
    (2, ["*vram: VRAM bounds cannot be checked: NVML lists processes * on GPU 0, none of them "
         "the engine's (*): they are PIDs of another PID namespace (a container without "
         "--pid=host); run the container with --pid=host, or have the engine report "
         "torch_peak_bytes in engine_metrics*"]),
])
def test_vram_bound_in_a_pid_namespace_is_checked_or_refused(
        standin_pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch,
        host_processes: int, expected: list[str]) -> None:
    import json

    processes = [{"pid": "self", "offset": 100000 + i, "used": 6 * GIB}
                 for i in range(host_processes)]
    monkeypatch.setenv("NVML_DOUBLE", json.dumps({"gpus": [{**H100, "processes": processes}]}))
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(DOUBLE), *sys.path]))
    standin_pytester.makepyfile(BOUNDED_TEST)
    result = standin_pytester.runpytest_subprocess(
        "-p", "no:cacheprovider", "--omni-rounds=3", "--omni-warmup=1", "--omni-profile=eager",
        "--omni-update-baselines", f"--omni-gpu-lock-dir={standin_pytester.path / 'locks'}")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*hardware key 'nvidia-h100-80gb-hbm3'*", *expected])


def test_an_engine_without_local_processes_is_not_a_zero(nvml: ModuleType) -> None:
    """A server attached with --omni-server-url: no PID of ours, on a GPU or on CPU. Not
    sampled at all: the only process on the GPU is not taken for the engine's."""
    _state(nvml, {"pid": 10**7, "used": GIB})  # another PID namespace's only process
    for devices in ([0], []):
        sampler = sampler_for(lambda: [], devices, interval_s=0.01)
        sampler.start()
        peak = sampler.stop()
        assert peak.kind == "none" and peak.peak_bytes == 0
        assert peak.label == f"VRAM not measured: {NO_LOCAL_PROCESS}"
    sampler = sampler_for(lambda: [os.getpid()], [], interval_s=0.01)
    sampler.start()
    assert sampler.stop().label == "peak RSS (CPU run, no VRAM)"


@pytest.mark.parametrize("args", [[], ["-q"], ["-q", "-n", "2"]], ids=["plain", "q", "q-xdist"])
def test_a_mig_slice_is_a_usage_error_of_the_run(standin_pytester: pytest.Pytester,
                                                 monkeypatch: pytest.MonkeyPatch,
                                                 args: list[str]) -> None:
    """Once, before any test: with -q (no header, which used to probe the hardware) it was
    a traceback per test at setup and exit code 1 (a newcomer's run of case F5)."""
    import json

    monkeypatch.setenv("NVML_DOUBLE", json.dumps({"gpus": [A100_MIG]}))
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(DOUBLE), *sys.path]))
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", MIG_UUID)
    standin_pytester.makepyfile(BOUNDED_TEST)
    result = standin_pytester.runpytest_subprocess("-p", "no:cacheprovider",
                                                   "--omni-profile=eager", *args)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    assert "Traceback" not in result.stdout.str() + result.stderr.str()
    result.stderr.fnmatch_lines([
        f"ERROR: CUDA_VISIBLE_DEVICES='{MIG_UUID}' names a MIG slice (NVIDIA A100-SXM4-80GB "
        "MIG 1g.10gb, 9.8 GiB, on GPU 0)*"])
