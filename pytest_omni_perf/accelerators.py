"""Accelerators NVML cannot see: AMD GPUs through ROCm and Huawei Ascend NPUs, named as torch
reports them, so their runs get a hardware key of their own instead of ``cpu``.

Looked for only where the machine shows such a device (``/dev/kfd`` for ROCm, ``/dev/davinci*``
for Ascend), because naming them needs torch (and ``torch_npu``), which the plugin never
imports on a machine without them. Where a device is present but torch cannot name it, the
probe says so in its note (the run then uses the ``cpu`` key, visibly, never silently).

Ascend names carry their Atlas family, the SKU vLLM-Omni's nightly case baselines key by
(``A2``, ``A3``): vllm-ascend tells them apart by SoC, 910B parts being Atlas A2 and
910_93xx parts Atlas A3; ``hardware.names_this_machine`` then matches ``{"A3": ...}``.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pytest_omni_perf.hardware_info import GpuInfo, HardwareInfo

Importer = Callable[[str], Any]
_ATLAS = ((re.compile(r"^Ascend910_?93", re.IGNORECASE), "A3"),
          (re.compile(r"^Ascend910B", re.IGNORECASE), "A2"))


def _import(name: str) -> Any:
    import importlib

    return importlib.import_module(name)


def atlas_family(name: str) -> str | None:
    """``A3`` for an Ascend 910_93xx, ``A2`` for a 910B, else None."""
    return next((family for pattern, family in _ATLAS if pattern.match(name.strip())), None)


def probe_other(dev: Path = Path("/dev"), importer: Importer = _import) -> HardwareInfo | None:
    """The ROCm GPUs or Ascend NPUs here, a HardwareInfo whose note says why they could not
    be named, or None where the machine shows neither kind of device."""
    if (dev / "kfd").exists():
        return _rocm(importer)
    if any(dev.glob("davinci[0-9]*")):
        return _ascend(importer)
    return None


def _rocm(importer: Importer) -> HardwareInfo:

    try:
        torch = importer("torch")
        hip = getattr(torch.version, "hip", None)
        if not hip:
            return HardwareInfo(note=f"/dev/kfd (ROCm) is present, but torch "
                                f"{torch.__version__} is not a ROCm build: cannot name the GPU")
        gpus = []
        for index in range(torch.cuda.device_count()):  # HIP devices answer torch.cuda
            props = torch.cuda.get_device_properties(index)
            gpus.append(GpuInfo(index=index, name=str(torch.cuda.get_device_name(index)),
                                sm=(0, 0), vram_gib=props.total_memory / 2**30,
                                vendor="amd"))
    except Exception as exc:  # any failure of a driver probe means "not named here"
        return HardwareInfo(note=f"/dev/kfd (ROCm) is present, but torch could not name the "
                            f"GPU: {type(exc).__name__}: {exc}")
    note = "rocm" if gpus else "/dev/kfd (ROCm) is present, but torch sees no HIP device"
    return HardwareInfo(gpus=tuple(gpus), driver=f"HIP {hip}", note=note)


def _ascend(importer: Importer) -> HardwareInfo:

    try:
        torch = importer("torch")
        importer("torch_npu")  # registers torch.npu
        npu = torch.npu
        gpus = []
        for index in range(npu.device_count()):
            name = str(npu.get_device_name(index))
            family = atlas_family(name)
            props = npu.get_device_properties(index)
            gpus.append(GpuInfo(
                index=index, name=f"{name} (Atlas {family})" if family else name, sm=(0, 0),
                vram_gib=getattr(props, "total_memory", 0) / 2**30, vendor="ascend"))
    except Exception as exc:  # as above: an unnamed device is reported, never hidden
        return HardwareInfo(note=f"/dev/davinci* (Ascend NPU) is present, but torch_npu could "
                            f"not name it: {type(exc).__name__}: {exc}")
    note = "torch_npu" if gpus else "/dev/davinci* is present, but torch_npu sees no NPU"
    return HardwareInfo(gpus=tuple(gpus), driver="", note=note)
