"""The hardware a run has, as data: its GPUs and the key its baselines are filed under.

Below ``hardware`` (the NVML probe) and ``accelerators`` (ROCm and Ascend through torch),
which both build these, so neither has to import the other's types.
"""

from __future__ import annotations

import dataclasses
import re

CPU_KEY = "cpu"


@dataclasses.dataclass(frozen=True)
class GpuInfo:
    """One visible GPU."""

    index: int
    """Physical NVML index (what ``CUDA_VISIBLE_DEVICES`` names)."""
    name: str
    sm: tuple[int, int]
    vram_gib: float
    uuid: str = ""
    vendor: str = "nvidia"
    """"nvidia" (NVML), "amd" (ROCm) or "ascend" (torch_npu); sm is (0, 0) for the latter
    two, which have no CUDA compute capability."""


@dataclasses.dataclass(frozen=True)
class HardwareInfo:
    """The GPUs this process may use, and how we learned it."""

    gpus: tuple[GpuInfo, ...] = ()
    driver: str = ""
    cuda_driver: str = ""
    note: str = "no GPU"
    """How the probe ended ("nvml", or why no GPU was found)."""

    @property
    def gpu_count(self) -> int:
        return len(self.gpus)

    @property
    def min_sm(self) -> tuple[int, int] | None:
        return min((g.sm for g in self.gpus), default=None)

    @property
    def min_vram_gib(self) -> float | None:
        return min((g.vram_gib for g in self.gpus), default=None)

    @property
    def key(self) -> str:
        """Baseline folder name: the GPU model (``nvidia-h100-80gb-hbm3``,
        ``amd-instinct-mi300x``, ``ascend910-9392-atlas-a3``), or ``cpu``."""
        if not self.gpus:
            return CPU_KEY
        return hardware_key(self.gpus[0].name)

    def summary(self) -> str:
        """One line for the report header."""
        if not self.gpus:
            return f"no GPU ({self.note}); hardware key 'cpu'"
        names = ", ".join(sorted({g.name for g in self.gpus}))
        sm = ".".join(map(str, self.min_sm or (0, 0)))
        arch = f"SM {sm}, " if all(g.vendor == "nvidia" for g in self.gpus) else ""
        return (f"{self.gpu_count} x {names} ({arch}{self.min_vram_gib:.0f} GiB), "
                f"driver {self.driver}; hardware key {self.key!r}")


def hardware_key(gpu_name: str) -> str:
    """A file-name-safe slug of a GPU model name."""
    return re.sub(r"[^a-z0-9]+", "-", gpu_name.lower()).strip("-") or CPU_KEY
