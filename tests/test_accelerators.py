"""Hardware keys for accelerators NVML cannot see (ROCm GPUs, Ascend NPUs), from stand-in
torch modules: each gets a key of its own, and a device torch cannot name is said, never
silently the ``cpu`` key."""

from __future__ import annotations

import types
from pathlib import Path
from typing import Any

import pytest

from pytest_omni_perf import accelerators, hardware
from pytest_omni_perf.cases.bounds import bounds_for


def _torch(hip: str | None = "6.2.41133", names: tuple[str, ...] = ("AMD Instinct MI300X",)
           ) -> Any:
    props = types.SimpleNamespace(total_memory=192 * 2**30)
    device = types.SimpleNamespace(
        device_count=lambda: len(names), get_device_name=lambda i: names[i],
        get_device_properties=lambda i: props)
    return types.SimpleNamespace(__version__="2.5.1+rocm6.2", version=types.SimpleNamespace(
        hip=hip), cuda=device, npu=device)


def _dev(tmp_path: Path, *names: str) -> Path:
    for name in names:
        (tmp_path / name).touch()
    return tmp_path


def test_rocm_gpu_gets_its_own_key(tmp_path: Path) -> None:
    found = accelerators.probe_other(_dev(tmp_path, "kfd"), lambda name: _torch())
    assert found is not None
    assert found.key == "amd-instinct-mi300x"
    assert found.gpus[0].vendor == "amd" and round(found.gpus[0].vram_gib) == 192
    assert found.summary() == ("1 x AMD Instinct MI300X (192 GiB), driver HIP 6.2.41133; "
                               "hardware key 'amd-instinct-mi300x'")
    assert hardware.names_this_machine("MI300X", [g.name for g in found.gpus], found.key)


@pytest.mark.parametrize(("name", "family", "key"), [
    ("Ascend910_9392", "A3", "ascend910-9392-atlas-a3"),
    ("Ascend910B3", "A2", "ascend910b3-atlas-a2"),
])
def test_ascend_npu_is_named_with_its_atlas_family(tmp_path: Path, name: str, family: str,
                                                   key: str) -> None:
    imported: list[str] = []

    def importer(module: str) -> Any:
        imported.append(module)
        return _torch(names=(name,))

    found = accelerators.probe_other(_dev(tmp_path, "davinci0"), importer)
    assert found is not None and found.key == key
    assert imported == ["torch", "torch_npu"]
    names = [g.name for g in found.gpus]
    # vLLM-Omni's case baselines key NPU numbers by Atlas family: {"A3": {...}}.
    bounds, notes = bounds_for({"H100": {"latency_mean": 1.0}, family: {"latency_mean": 9.0}},
                               None, names, found.key)
    assert [b.field for b in bounds] == [f"baseline.{family}.latency_mean"] and notes == []


@pytest.mark.parametrize(("devices", "torch", "note"), [
    (("kfd",), _torch(hip=None), "/dev/kfd (ROCm) is present, but torch 2.5.1+rocm6.2 is not "
                                 "a ROCm build: cannot name the GPU"),
    (("kfd",), _torch(names=()), "/dev/kfd (ROCm) is present, but torch sees no HIP device"),
    (("davinci0",), None, "/dev/davinci* (Ascend NPU) is present, but torch_npu could not "
                          "name it: ModuleNotFoundError: No module named 'torch_npu'"),
])
def test_a_device_torch_cannot_name_is_said(tmp_path: Path, devices: tuple[str, ...],
                                            torch: Any, note: str) -> None:
    def importer(module: str) -> Any:
        if torch is None and module == "torch_npu":
            raise ModuleNotFoundError(f"No module named {module!r}")
        return torch or _torch()

    found = accelerators.probe_other(_dev(tmp_path, *devices), importer)
    assert found is not None and not found.gpus and found.note == note
    assert found.summary() == f"no GPU ({note}); hardware key 'cpu'"


def test_no_such_device_leaves_the_nvml_answer(tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    assert accelerators.probe_other(tmp_path, lambda name: pytest.fail("imported")) is None
    nvml_none = hardware.HardwareInfo(note="no NVIDIA GPU device in /dev")
    monkeypatch.setattr(hardware, "_probe_nvml", lambda: nvml_none)
    monkeypatch.setattr(accelerators, "probe_other", lambda: None)
    assert hardware.probe() is nvml_none
    monkeypatch.undo()
    rocm = accelerators.probe_other(_dev(tmp_path, "kfd"), lambda name: _torch())
    monkeypatch.setattr(hardware, "_probe_nvml", lambda: nvml_none)
    monkeypatch.setattr(accelerators, "probe_other", lambda: rocm)
    assert hardware.probe().key == "amd-instinct-mi300x"
