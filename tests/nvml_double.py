"""A stand-in for ``pynvml`` (nvidia-ml-py 13.x), modelled on real NVML behaviour, for the
interference monitor's GPU fields on machines without a GPU.

What it copies from NVML and its Python binding:
- every call before ``nvmlInit`` (or after the matching ``nvmlShutdown``; inits are counted)
  raises ``NVMLError`` with NVML_ERROR_UNINITIALIZED; a bad index NVML_ERROR_INVALID_ARGUMENT;
- ``nvmlDeviceGetUtilizationRates`` returns a struct with ``gpu`` and ``memory`` percentages
  (NVML's own average over its last sample period; MIG instances answer NOT_SUPPORTED);
- ``nvmlDeviceGetClockInfo(handle, NVML_CLOCK_SM)`` returns MHz;
- clock-event reasons are a bit mask; an idle GPU reports GpuIdle (0x1); a GPU under load
  often SwPowerCap (0x4); bits as nvmlClocksEventReason*. nvidia-ml-py >= 12.535 has both
  ``...ClocksEventReasons`` and the older ``...ClocksThrottleReasons``; an older binding has
  only the latter, and a new binding on an old driver raises FUNCTION_NOT_FOUND for the
  former;
- ``nvmlDeviceGetComputeRunningProcesses`` lists objects with ``pid`` and ``usedGpuMemory``;
- a GPU that fell off the bus raises NVML_ERROR_GPU_IS_LOST from every call.
"""

from __future__ import annotations

import dataclasses
from typing import Literal

NVML_ERROR_UNINITIALIZED = 1
NVML_ERROR_INVALID_ARGUMENT = 2
NVML_ERROR_NOT_SUPPORTED = 3
NVML_ERROR_FUNCTION_NOT_FOUND = 13
NVML_ERROR_GPU_IS_LOST = 15
NVML_CLOCK_GRAPHICS, NVML_CLOCK_SM, NVML_CLOCK_MEM, NVML_CLOCK_VIDEO = 0, 1, 2, 3

nvmlClocksEventReasonGpuIdle = 0x1
nvmlClocksEventReasonApplicationsClocksSetting = 0x2
nvmlClocksEventReasonSwPowerCap = 0x4
nvmlClocksThrottleReasonHwSlowdown = 0x8
nvmlClocksEventReasonSwThermalSlowdown = 0x20
nvmlClocksThrottleReasonHwThermalSlowdown = 0x40

_MESSAGES = {1: "Uninitialized", 2: "Invalid Argument", 3: "Not Supported",
             13: "Function Not Found", 15: "GPU is lost"}


class NVMLError(Exception):
    def __init__(self, value: int) -> None:
        super().__init__(value)
        self.value = value

    def __str__(self) -> str:
        return _MESSAGES.get(self.value, f"Unknown Error {self.value}")


@dataclasses.dataclass
class Utilization:
    gpu: int
    memory: int


@dataclasses.dataclass
class ProcessInfo:
    pid: int
    usedGpuMemory: int | None  # noqa: N815 (NVML's field name)


@dataclasses.dataclass
class Gpu:
    """What the driver would say about one GPU right now (tests change it between rounds)."""

    util: int = 0
    sm_clock: int = 1980
    reasons: int = nvmlClocksEventReasonGpuIdle
    pids: list[int] = dataclasses.field(default_factory=list)
    mig: bool = False
    lost: bool = False
    utils: list[int] | None = None
    """When set, successive utilization reads cycle through these values."""
    reads: int = 0


@dataclasses.dataclass(frozen=True)
class Handle:
    index: int


Binding = Literal["current", "old_binding", "old_driver"]


class FakeNvml:
    """Module-like: the monitor calls ``nvml.nvmlDeviceGet...(handle)`` as on ``pynvml``."""

    NVMLError = NVMLError

    def __init__(self, gpus: list[Gpu], binding: Binding = "current") -> None:
        self.gpus = gpus
        self.inits = 0
        self.binding = binding

    # -- library ----------------------------------------------------------------------------
    def nvmlInit(self) -> None:
        self.inits += 1

    def nvmlShutdown(self) -> None:
        self._initialized()
        self.inits -= 1

    def _initialized(self) -> None:
        if self.inits <= 0:
            raise NVMLError(NVML_ERROR_UNINITIALIZED)

    def _gpu(self, handle: Handle) -> Gpu:
        self._initialized()
        gpu = self.gpus[handle.index]
        if gpu.lost:
            raise NVMLError(NVML_ERROR_GPU_IS_LOST)
        return gpu

    # -- devices ----------------------------------------------------------------------------
    def nvmlDeviceGetHandleByIndex(self, index: int) -> Handle:
        self._initialized()
        if not 0 <= index < len(self.gpus):
            raise NVMLError(NVML_ERROR_INVALID_ARGUMENT)
        return Handle(index)

    def nvmlDeviceGetUtilizationRates(self, handle: Handle) -> Utilization:
        gpu = self._gpu(handle)
        if gpu.mig:
            raise NVMLError(NVML_ERROR_NOT_SUPPORTED)
        gpu.reads += 1
        value = gpu.util if not gpu.utils else gpu.utils[(gpu.reads - 1) % len(gpu.utils)]
        return Utilization(gpu=value, memory=value // 2)

    def nvmlDeviceGetClockInfo(self, handle: Handle, clock_type: int) -> int:
        gpu = self._gpu(handle)
        if clock_type not in (0, 1, 2, 3):
            raise NVMLError(NVML_ERROR_INVALID_ARGUMENT)
        return gpu.sm_clock if clock_type in (NVML_CLOCK_GRAPHICS, NVML_CLOCK_SM) else 2619

    def nvmlDeviceGetCurrentClocksThrottleReasons(self, handle: Handle) -> int:
        return self._gpu(handle).reasons

    def nvmlDeviceGetComputeRunningProcesses(self, handle: Handle) -> list[ProcessInfo]:
        return [ProcessInfo(pid, 2**30) for pid in self._gpu(handle).pids]

    def __getattr__(self, name: str) -> object:
        # Only reached for names not defined above: the Event spelling depends on the binding.
        if name == "nvmlDeviceGetCurrentClocksEventReasons" and self.binding != "old_binding":
            return self._event_reasons
        raise AttributeError(name)

    def _event_reasons(self, handle: Handle) -> int:
        if self.binding == "old_driver":
            self._initialized()
            raise NVMLError(NVML_ERROR_FUNCTION_NOT_FOUND)
        return self._gpu(handle).reasons
