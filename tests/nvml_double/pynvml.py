"""A test double of nvidia-ml-py's ``pynvml``: the functions, constants and error classes the
plugin calls, answering as NVML does on the machines in the bug reports.

State is one JSON document, from the environment variable ``NVML_DOUBLE`` when the module is
imported (for pytester subprocess runs; put this folder first on PYTHONPATH) or assigned to
``STATE`` by a unit test::

    {"gpus": [{"name": "NVIDIA H100 80GB HBM3", "uuid": "GPU-...", "total": bytes,
               "used": bytes, "sm": [9, 0],
               "mig": [{"uuid": "MIG-...", "name": "... MIG 1g.10gb", "total": bytes,
                        "gi": 1, "ci": 0}],            # absent: MIG not supported
               "processes": [{"pid": 123 | "self", "offset": 100000, "used": bytes | null}]}]}

A process ``"pid": "self"`` is the calling process, shifted by ``offset``: how NVML lists a
process of a container with its own PID namespace (under its host PID). ``"used": null`` is
NVML_VALUE_NOT_AVAILABLE, which pynvml turns into None.
"""

from __future__ import annotations

import json
import os
from types import SimpleNamespace
from typing import Any

STATE: dict[str, Any] = json.loads(os.environ.get("NVML_DOUBLE", '{"gpus": []}'))

NVML_CLOCK_SM = 1
NVML_TEMPERATURE_GPU = 0
NVML_DEVICE_MIG_DISABLE = 0
NVML_DEVICE_MIG_ENABLE = 1
NVML_ERROR_NOT_SUPPORTED = 3
NVML_ERROR_NOT_FOUND = 6
NVML_ERROR_INVALID_ARGUMENT = 2


class NVMLError(Exception):
    """As pynvml's: ``value`` is the NVML return code; subclasses per code."""

    def __init__(self, value: int) -> None:
        super().__init__(value)
        self.value = value

    def __str__(self) -> str:
        return {3: "Not Supported", 6: "Not Found", 2: "Invalid Argument"}.get(self.value,
                                                                              "Unknown Error")


class NVMLError_NotSupported(NVMLError):  # noqa: N801 - pynvml's names
    def __init__(self) -> None:
        super().__init__(NVML_ERROR_NOT_SUPPORTED)


class NVMLError_NotFound(NVMLError):  # noqa: N801
    def __init__(self) -> None:
        super().__init__(NVML_ERROR_NOT_FOUND)


class NVMLError_InvalidArgument(NVMLError):  # noqa: N801
    def __init__(self) -> None:
        super().__init__(NVML_ERROR_INVALID_ARGUMENT)


def _gpu(handle: Any) -> dict[str, Any]:
    kind, index = handle[0], handle[1]
    if kind != "gpu":
        raise NVMLError_InvalidArgument()
    gpu: dict[str, Any] = STATE["gpus"][index]
    return gpu


def _mig(handle: Any) -> dict[str, Any]:
    if handle[0] != "mig":
        raise NVMLError_InvalidArgument()
    mig: dict[str, Any] = STATE["gpus"][handle[1]]["mig"][handle[2]]
    return mig


def nvmlInit() -> None:  # noqa: N802
    pass


def nvmlShutdown() -> None:  # noqa: N802
    pass


def nvmlDeviceGetCount() -> int:  # noqa: N802
    return len(STATE["gpus"])


def nvmlDeviceGetHandleByIndex(index: int) -> tuple[str, int]:  # noqa: N802
    if not 0 <= index < len(STATE["gpus"]):
        raise NVMLError_InvalidArgument()
    return ("gpu", index)


def nvmlDeviceGetUUID(handle: Any) -> str:  # noqa: N802
    return str((_mig(handle) if handle[0] == "mig" else _gpu(handle))["uuid"])


def nvmlDeviceGetName(handle: Any) -> str:  # noqa: N802
    return str((_mig(handle) if handle[0] == "mig" else _gpu(handle))["name"])


def nvmlDeviceGetCudaComputeCapability(handle: Any) -> tuple[int, int]:  # noqa: N802
    major, minor = _gpu(handle).get("sm", [9, 0])
    return int(major), int(minor)


def nvmlDeviceGetMemoryInfo(handle: Any) -> SimpleNamespace:  # noqa: N802
    found = _mig(handle) if handle[0] == "mig" else _gpu(handle)
    total, used = int(found["total"]), int(found.get("used", 0))
    return SimpleNamespace(total=total, used=used, free=total - used)


def nvmlSystemGetCudaDriverVersion_v2() -> int:  # noqa: N802
    return 12080


def nvmlSystemGetDriverVersion() -> str:  # noqa: N802
    return "570.86.15"


def nvmlDeviceGetClockInfo(handle: Any, clock: int) -> int:  # noqa: N802
    return 1980


def nvmlDeviceGetTemperature(handle: Any, sensor: int) -> int:  # noqa: N802
    return 40


def nvmlDeviceGetCurrentClocksThrottleReasons(handle: Any) -> int:  # noqa: N802
    return 0


def nvmlDeviceGetComputeRunningProcesses(handle: Any) -> list[SimpleNamespace]:  # noqa: N802
    listed = []
    for proc in _gpu(handle).get("processes", []):
        pid = os.getpid() if proc["pid"] == "self" else int(proc["pid"])
        listed.append(SimpleNamespace(pid=pid + int(proc.get("offset", 0)),
                                      usedGpuMemory=proc.get("used"),
                                      gpuInstanceId=0xFFFFFFFF, computeInstanceId=0xFFFFFFFF))
    return listed


def nvmlDeviceGetMigMode(handle: Any) -> list[int]:  # noqa: N802
    gpu = _gpu(handle)
    if "mig" not in gpu:
        raise NVMLError_NotSupported()
    mode = NVML_DEVICE_MIG_ENABLE if gpu["mig"] else NVML_DEVICE_MIG_DISABLE
    return [mode, mode]


def nvmlDeviceGetMaxMigDeviceCount(handle: Any) -> int:  # noqa: N802
    return 7 if "mig" in _gpu(handle) else 0


def nvmlDeviceGetMigDeviceHandleByIndex(  # noqa: N802
        handle: Any, index: int) -> tuple[str, int, int]:
    gpu = _gpu(handle)
    if index >= len(gpu.get("mig", [])):
        raise NVMLError_NotFound()  # an empty slot, as NVML answers for unused indices
    return ("mig", handle[1], index)


def nvmlDeviceGetGpuInstanceId(handle: Any) -> int:  # noqa: N802
    return int(_mig(handle)["gi"])


def nvmlDeviceGetComputeInstanceId(handle: Any) -> int:  # noqa: N802
    return int(_mig(handle)["ci"])
