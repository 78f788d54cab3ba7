"""Peak memory of an engine's process tree, sampled in a background thread during the rounds.

On GPUs: NVML per-process ``usedGpuMemory`` summed over the engine's processes (multi-process
engines hold memory in several), which includes the CUDA context, as a user's ``nvidia-smi``
would show. Without a GPU: resident set size (RSS) of the same processes, labelled as such,
because CPU runs have no VRAM and must not pretend to.
"""

from __future__ import annotations

import dataclasses
import math
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any, Literal

MemoryKind = Literal["nvml", "rss"]
_PAGE_KIB = 1024


@dataclasses.dataclass(frozen=True)
class MemoryPeak:
    """The highest total seen, and what it measured."""

    kind: MemoryKind
    peak_bytes: int
    """Highest total over the engine's processes (and GPUs)."""
    samples: int
    device_peak_bytes: int | None = None
    """NVML only: the highest amount on any one GPU. For a multi-GPU profile this, not the
    total, says whether a model fits, so ratios against a one-GPU baseline use it."""

    @property
    def peak_gib(self) -> float:
        return self.peak_bytes / 2**30

    @property
    def per_gpu_bytes(self) -> int:
        """What one GPU had to hold at most (the total for one GPU or a CPU run)."""
        return self.peak_bytes if self.device_peak_bytes is None else self.device_peak_bytes

    @property
    def label(self) -> str:
        return "VRAM (NVML)" if self.kind == "nvml" else "peak RSS (CPU run, no VRAM)"

    def to_dict(self) -> dict[str, Any]:
        found = {"kind": self.kind, "peak_bytes": self.peak_bytes, "samples": self.samples}
        if self.device_peak_bytes is not None:
            found["device_peak_bytes"] = self.device_peak_bytes
        return found


def rss_bytes(pids: Sequence[int]) -> int:
    """Sum of VmRSS of ``pids`` (Linux /proc; 0 for processes that are gone)."""
    total = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/status", "rb") as handle:
                for line in handle:
                    if line.startswith(b"VmRSS:"):
                        total += int(line.split()[1]) * _PAGE_KIB
                        break
        except OSError:
            continue
    return total


class NvmlReader:
    """Per-process GPU memory of a set of pids over given physical GPUs."""

    def __init__(self, device_indices: Sequence[int]) -> None:
        import pynvml

        self._nvml = pynvml
        pynvml.nvmlInit()
        self._handles = [pynvml.nvmlDeviceGetHandleByIndex(i) for i in device_indices]
        self.device_peak = 0
        """Highest per-GPU amount seen by ``used_bytes`` so far."""

    def used_bytes(self, pids: Sequence[int]) -> int:
        wanted = set(pids)
        total = 0
        for handle in self._handles:
            on_device = sum(int(proc.usedGpuMemory)
                            for proc in self._nvml.nvmlDeviceGetComputeRunningProcesses(handle)
                            if proc.pid in wanted and proc.usedGpuMemory)
            self.device_peak = max(self.device_peak, on_device)
            total += on_device
        return total

    def close(self) -> None:
        self._nvml.nvmlShutdown()


class MemorySampler:
    """Samples ``read(pids())`` every ``interval_s`` between ``start()`` and ``stop()``.

    The process tree (``pids()``) is looked up again only every ``pids_every_s`` and at
    start and stop: finding descendants scans all of /proc, which cost 1.5 ms of CPU per
    sample on a 2-core machine (7% of a core at 20 ms, taken from the engine being
    measured; benchmarks/overhead.py), while reading the memory of known pids is cheap.
    A child started mid-round is counted from the next lookup on.
    """

    def __init__(self, kind: MemoryKind, read: Callable[[Sequence[int]], int],
                 pids: Callable[[], Sequence[int]], interval_s: float = 0.02,
                 close: Callable[[], None] | None = None,
                 device_peak: Callable[[], int] | None = None,
                 pids_every_s: float = 0.5) -> None:
        self.kind = kind
        self._device_peak = device_peak
        self._read = read
        self._pids = pids
        self._pids_every_s = pids_every_s
        self._known: Sequence[int] = ()
        self._looked_at = -math.inf
        self._interval_s = interval_s
        self._close = close
        self._peak = 0
        self._samples = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def sample(self, *, lookup: bool = False) -> None:
        now = time.monotonic()
        if lookup or now - self._looked_at >= self._pids_every_s:
            self._known, self._looked_at = self._pids(), now
        value = self._read(self._known)
        self._samples += 1
        self._peak = max(self._peak, value)

    def _loop(self) -> None:
        while not self._stop.wait(self._interval_s):
            self.sample()

    def start(self) -> None:
        self.sample(lookup=True)
        self._thread = threading.Thread(target=self._loop, name="omni-perf-memory", daemon=True)
        self._thread.start()

    def stop(self) -> MemoryPeak:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self.sample(lookup=True)
        if self._close is not None:
            self._close()
        device_peak = self._device_peak() if self._device_peak is not None else None
        return MemoryPeak(kind=self.kind, peak_bytes=self._peak, samples=self._samples,
                          device_peak_bytes=device_peak)


def sampler_for(pids: Callable[[], Sequence[int]], device_indices: Sequence[int],
                interval_s: float = 0.02) -> MemorySampler:
    """NVML over ``device_indices`` when there are GPUs and NVML works, else RSS."""
    if device_indices:
        try:
            reader = NvmlReader(device_indices)
        except Exception:  # no pynvml / driver: fall back to what we can measure honestly
            pass
        else:
            return MemorySampler("nvml", reader.used_bytes, pids, interval_s, reader.close,
                                 device_peak=lambda: reader.device_peak)
    return MemorySampler("rss", rss_bytes, pids, interval_s)
