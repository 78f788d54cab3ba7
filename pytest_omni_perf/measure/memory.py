"""Peak memory of an engine's process tree, sampled in a background thread during the rounds.

On GPUs: NVML per-process ``usedGpuMemory`` summed over the engine's processes (multi-process
engines hold memory in several), which includes the CUDA context, as a user's ``nvidia-smi``
would show. Without a GPU: resident set size (RSS) of the same processes, labelled as such,
because CPU runs have no VRAM and must not pretend to.

A measurement that saw nothing says so. Inside a container with its own PID namespace NVML
lists the engine's processes under their host PIDs, which never match ours. When a GPU then
holds exactly one process and its PID is not a process of this namespace, that process is
counted as the engine's (the label says so); otherwise the peak is of kind ``none`` with the
reason, and :func:`with_engine_peak` falls back to the allocator peak the engine reports
(``torch_peak_bytes`` of the diffusers runner, ``peak_memory_mb`` of vLLM-Omni), kind
``engine``. VRAM bounds refuse a ``none`` peak instead of passing on a 0.

An engine with no process on this machine (a server attached with ``--omni-server-url``) is
not sampled at all: its peak is kind ``none``, then what the server reports, if anything.
"""

from __future__ import annotations

import dataclasses
import math
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Literal

MemoryKind = Literal["nvml", "rss", "engine", "none"]
NO_LOCAL_PROCESS = ("the engine has no process on this machine to measure (a server attached "
                    "with --omni-server-url): only what the server reports counts")
_LABELS: dict[str, str] = {
    "nvml": "VRAM (NVML)",
    "rss": "peak RSS (CPU run, no VRAM)",
    "engine": "VRAM (allocator peak reported by the engine)",
    "none": "VRAM not measured",
}


@dataclasses.dataclass(frozen=True)
class MemoryPeak:
    """The highest total seen, and what it measured."""

    kind: MemoryKind
    """``nvml`` (per-process VRAM), ``engine`` (the engine's own allocator peak, without
    the CUDA context), ``rss`` (CPU run) or ``none`` (nothing measured: ``note`` says why)."""
    peak_bytes: int
    """Highest total over the engine's processes (and GPUs)."""
    samples: int
    device_peak_bytes: int | None = None
    """NVML only: the highest amount on any one GPU. For a multi-GPU profile this, not the
    total, says whether a model fits, so ratios against a one-GPU baseline use it."""
    note: str = ""
    """How the processes were attributed, what reported the number, or why there is none."""
    held_over: str = ""
    """Why this NVML peak may still hold an earlier, larger request's memory ("its engine
    served 1024x1024 before ..."), or "": a process keeps what its allocator took, and only
    the diffusers runner gives it back on a shape change. Such a peak is not compared."""

    @property
    def peak_gib(self) -> float:
        return self.peak_bytes / 2**30

    @property
    def per_gpu_bytes(self) -> int:
        """What one GPU had to hold at most (the total for one GPU or a CPU run)."""
        return self.peak_bytes if self.device_peak_bytes is None else self.device_peak_bytes

    @property
    def is_vram(self) -> bool:
        """Whether ``peak_bytes`` is GPU memory (VRAM bounds apply to it)."""
        return self.kind in ("nvml", "engine")

    @property
    def unmeasured(self) -> str | None:
        """Why GPU memory was not measured (kind ``none``), else None."""
        return (self.note or "no reading") if self.kind == "none" else None

    @property
    def label(self) -> str:
        return _LABELS[self.kind] + (f": {self.note}" if self.note else "")

    def to_dict(self) -> dict[str, Any]:
        found: dict[str, Any] = {"kind": self.kind, "peak_bytes": self.peak_bytes,
                                 "samples": self.samples, "label": self.label}
        if self.device_peak_bytes is not None:
            found["device_peak_bytes"] = self.device_peak_bytes
        if self.held_over:
            found["held_over"] = self.held_over
        return found


def rss_bytes(pids: Sequence[int]) -> int:
    """Sum of the resident set sizes of ``pids`` (psutil; 0 for processes that are gone)."""
    import psutil

    total = 0
    for pid in pids:
        try:
            total += int(psutil.Process(pid).memory_info().rss)
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            continue
    return total


def _in_this_namespace(pid: int) -> bool:
    import psutil

    return bool(psutil.pid_exists(pid))


def _pid_list(pids: Sequence[int] | set[int], most: int = 6) -> str:
    shown = sorted(pids)
    more = f" and {len(shown) - most} more" if len(shown) > most else ""
    return ", ".join(map(str, shown[:most])) + more


class NvmlReader:
    """Per-process GPU memory of a set of pids over given physical GPUs.

    Keeps what it saw besides the sum, so :meth:`finish` can say when the sum means nothing:
    no listed process was the engine's (a PID namespace of its own), or NVML withheld the
    per-process numbers (``usedGpuMemory`` None: NVML_VALUE_NOT_AVAILABLE).
    """

    def __init__(self, device_indices: Sequence[int]) -> None:
        import pynvml

        self._nvml = pynvml
        pynvml.nvmlInit()
        self._devices = [(i, pynvml.nvmlDeviceGetHandleByIndex(i)) for i in device_indices]
        self.device_peak = 0
        """Highest per-GPU amount seen by ``used_bytes`` so far."""
        self._matched = False
        self._withheld = False
        self._ours: set[int] = set()
        self._others: dict[int, set[int]] = {}
        self._sole: dict[int, int] = {}

    def used_bytes(self, pids: Sequence[int]) -> int:
        wanted = set(pids)
        self._ours |= wanted
        total = 0
        for index, handle in self._devices:
            listed = list(self._nvml.nvmlDeviceGetComputeRunningProcesses(handle))
            mine = [p for p in listed if p.pid in wanted]
            if mine:
                self._matched = True
                known = [int(p.usedGpuMemory) for p in mine if p.usedGpuMemory is not None]
                self._withheld |= len(known) < len(mine)
                on_device = sum(known)
            elif len(listed) == 1 and listed[0].usedGpuMemory \
                    and not _in_this_namespace(listed[0].pid):
                # NVML's PIDs are another namespace's: the only process on a GPU leased to
                # this engine is the engine's own.
                self._sole[index] = listed[0].pid
                on_device = int(listed[0].usedGpuMemory)
            else:
                self._others.setdefault(index, set()).update(p.pid for p in listed)
                on_device = 0
            self.device_peak = max(self.device_peak, on_device)
            total += on_device
        return total

    def finish(self, peak: MemoryPeak) -> MemoryPeak:
        """``peak`` with the kind and note that say how it was measured, or why it was not."""
        if self._sole:
            where = ", ".join(f"GPU {i} (PID {pid})" for i, pid in sorted(self._sole.items()))
            note = (f"counted the only process on {where}: NVML's PIDs are not visible from "
                    "this PID namespace (a container without --pid=host)")
            return dataclasses.replace(peak, note=note)
        if self._matched and not self._withheld:
            return peak
        if self._matched:
            reason = ("NVML does not report per-process memory here (usedGpuMemory not "
                      "available)")
        elif any(self._others.values()):
            pids = set().union(*self._others.values())
            gpus = ", ".join(str(i) for i in sorted(self._others) if self._others[i])
            hidden = [pid for pid in pids if not _in_this_namespace(pid)]
            why = ("they are PIDs of another PID namespace (a container without --pid=host)"
                   if hidden else "other processes share the GPU")
            ours = f"({_pid_list(self._ours)})" if self._ours else "(it has no local process)"
            reason = (f"NVML lists processes {_pid_list(pids)} on GPU {gpus}, none of them the "
                      f"engine's {ours}: {why}")
        else:
            gpus = ", ".join(str(i) for i, _ in self._devices)
            reason = f"NVML listed no compute process on GPU {gpus} while the engine ran"
        return MemoryPeak(kind="none", peak_bytes=0, samples=peak.samples, note=reason)

    def close(self) -> None:
        self._nvml.nvmlShutdown()


def with_engine_peak(peak: MemoryPeak, engine_metrics: Mapping[str, Any]) -> MemoryPeak:
    """``peak``, or when it measured nothing, the allocator peak the engine reported.

    ``torch_peak_bytes`` (``torch.cuda.max_memory_allocated`` of the request, the largest
    rank's for a multi-GPU engine; ``rank_torch_peak_bytes`` per rank) or vLLM-Omni's
    ``peak_memory_mb`` (``max_memory_reserved`` on rank 0). Both leave out the CUDA context
    (about 0.5 GiB), so they are a lower bound of what NVML would show.
    """
    if peak.kind != "none":
        return peak
    torch_peak = _positive(engine_metrics.get("torch_peak_bytes"))
    ranks = engine_metrics.get("rank_torch_peak_bytes")
    reserved_mb = _positive(engine_metrics.get("peak_memory_mb"))
    if torch_peak is not None:
        per_rank = [_positive(r) for r in ranks] if isinstance(ranks, list) else []
        source = "torch.cuda.max_memory_allocated"
        device = int(torch_peak)
        total = sum(int(r) for r in per_rank if r is not None) \
            if per_rank and None not in per_rank else device
    elif reserved_mb is not None:
        source = "vLLM-Omni's peak_memory_mb"
        total = device = int(reserved_mb * 2**20)
    else:
        return peak
    return MemoryPeak(kind="engine", peak_bytes=total, samples=1,
                      device_peak_bytes=device if total != device else None,
                      note=f"{source}, without the CUDA context, because {peak.note}")


def _positive(value: object) -> float | None:
    """``value`` when it is a finite number > 0 (engines report what they like), else None."""
    if isinstance(value, (int, float)) and not isinstance(value, bool) \
            and math.isfinite(value) and value > 0:
        return float(value)
    return None


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
                 pids_every_s: float = 0.5,
                 finish: Callable[[MemoryPeak], MemoryPeak] | None = None) -> None:
        self.kind = kind
        self._finish = finish
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
        peak = MemoryPeak(kind=self.kind, peak_bytes=self._peak, samples=self._samples,
                          device_peak_bytes=device_peak)
        return peak if self._finish is None else self._finish(peak)


def sampler_for(pids: Callable[[], Sequence[int]], device_indices: Sequence[int],
                interval_s: float = 0.02) -> MemorySampler:
    """NVML over ``device_indices`` when there are GPUs and NVML works, else RSS; nothing
    when the engine has no process here (a server attached with --omni-server-url)."""
    if not pids():
        # Sampling would measure someone else's processes (the only one on a GPU) or a 0:
        # kind ``none``, and with_engine_peak takes what the server reports, if anything.
        return MemorySampler("none", lambda _: 0, pids, interval_s, finish=lambda peak: (
            dataclasses.replace(peak, note=NO_LOCAL_PROCESS)))
    if device_indices:
        try:
            reader = NvmlReader(device_indices)
        except Exception:  # no pynvml / driver: fall back to what we can measure honestly
            pass
        else:
            return MemorySampler("nvml", reader.used_bytes, pids, interval_s, reader.close,
                                 device_peak=lambda: reader.device_peak, finish=reader.finish)
    return MemorySampler("rss", rss_bytes, pids, interval_s)


RELEASES_CACHED_MEMORY = ("diffusers",)
"""Backends whose engine gives back its allocator's cache when the request shape changes
(``diffusers_runner.release_cached_blocks``), so NVML sees each request's own peak."""


def held_over(peak: MemoryPeak, backend: str, after_larger: str) -> MemoryPeak:
    """``peak``, marked when NVML may still count an earlier, larger request's memory
    (``after_larger``: that request, "1024x1024"; "" when none came before). On one H100,
    vLLM-Omni's engine for medium-flux-kontext read 6.44 GiB at 512x512 after serving
    1024x1024, cache_dit's fresh engine 3.43 GiB, and "peak memory 0.53x" was recommended as
    the lowest (results/h100/support/omni-kontext-1.json)."""
    if peak.kind != "nvml" or not after_larger or backend in RELEASES_CACHED_MEMORY:
        return peak
    return dataclasses.replace(peak, held_over=(
        f"its {backend} engine served a larger request ({after_larger}) before and keeps "
        "the memory it took"))
