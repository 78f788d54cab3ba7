"""GPU conditions during rounds, polled from NVML in a background thread (for ``interference``).

Every ``interval_s`` (25 ms) one sample over the engine's GPUs: utilization, SM clock and
clock-event reasons (a few NVML calls, tens of microseconds each); every ``processes_every``
samples also the compute processes on those GPUs. A round's figures are then aggregated from
the samples whose timestamps fall inside it, plus one taken when it ends.

What NVML's utilization means (NVML API reference, ``nvmlUtilization_t``): "percent of time
over the past sample period during which one or more kernels was executing on the GPU", where
"each sample period may be between 1 second and 1/6 second, depending on the product". So a
reading is itself a moving average over up to a second: polling faster than that repeats
values, and a round shorter than the period blends in what ran just before it (in interleaved
runs, another engine's request). A low figure over several rounds is meaningful; one short
round's figure is not.

Every NVML error is swallowed here and turns the figure into None: diagnostics must never
fail a measurement.
"""

from __future__ import annotations

import dataclasses
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

# Bits of nvmlDeviceGetCurrentClocksEventReasons (formerly ...ThrottleReasons), named as
# NVML's nvmlClocksEventReason* macros. GpuIdle and ApplicationsClocksSetting are left out:
# they describe a GPU with nothing to do or an administrator's clock setting, not a slowdown
# that happened to a request.
_REASON_NAMES: dict[int, str] = {
    0x4: "sw_power_cap",
    0x8: "hw_slowdown",
    0x10: "sync_boost",
    0x20: "sw_thermal",
    0x40: "hw_thermal",
    0x80: "hw_power_brake",
    0x100: "display_clock",
    0x200: "board_limit",
    0x400: "reliability",
}
_IGNORED_REASONS = 0x1 | 0x2  # gpu_idle, applications_clocks_setting
_NVML_CLOCK_SM = 1  # NVML_CLOCK_SM in nvml.h


def reason_names(mask: int) -> tuple[str, ...]:
    """Readable names of a clock-event bit mask, idle and application-clock bits left out;
    bits this table does not know appear as ``reason_0x...`` rather than vanish."""
    mask &= ~_IGNORED_REASONS
    names = [name for bit, name in _REASON_NAMES.items() if mask & bit]
    unknown = mask & ~sum(_REASON_NAMES)
    bit = 1
    while unknown >= bit:
        if unknown & bit:
            names.append(f"reason_{bit:#x}")
        bit <<= 1
    return tuple(names)


@dataclasses.dataclass(frozen=True)
class GpuSample:
    """One poll over the engine's GPUs (None where NVML could not say)."""

    at: float
    """``time.monotonic()`` of the poll."""
    util_pct: float | None
    """Mean utilization over the GPUs (NVML's own moving average; see the module docstring)."""
    sm_clock_mhz: int | None
    """Lowest current SM clock over the GPUs."""
    reasons: int
    """Clock-event reason bits, OR-ed over the GPUs (0 when unreadable)."""
    other_processes: int | None
    """Compute processes on the GPUs that are not ours; None when not polled this time or
    when NVML's pids cannot be ours (another pid namespace)."""


@dataclasses.dataclass(frozen=True)
class GpuRound:
    """A round's GPU figures, aggregated from its samples."""

    util_pct: float | None
    sm_clock_mhz: int | None
    reasons: tuple[str, ...]
    other_processes: int | None


def aggregate(samples: Sequence[GpuSample]) -> GpuRound:
    """Mean utilization, lowest clock, every reason seen, most other processes seen."""
    utils = [s.util_pct for s in samples if s.util_pct is not None]
    clocks = [s.sm_clock_mhz for s in samples if s.sm_clock_mhz is not None]
    others = [s.other_processes for s in samples if s.other_processes is not None]
    mask = 0
    for sample in samples:
        mask |= sample.reasons
    return GpuRound(util_pct=sum(utils) / len(utils) if utils else None,
                    sm_clock_mhz=min(clocks) if clocks else None, reasons=reason_names(mask),
                    other_processes=max(others) if others else None)


class NvmlPoller:
    """Polls NVML over ``devices`` (physical indices) in a daemon thread.

    ``nvml`` is the ``pynvml`` module (nvidia-ml-py), already initialized by the caller, or a
    stand-in with the same functions; it ships no type hints, hence ``Any``. ``own_pids``
    returns the processes that are ours (engine tree and this process) for counting others.
    """

    def __init__(self, nvml: Any, devices: Sequence[int], own_pids: Callable[[], frozenset[int]],
                 interval_s: float = 0.025, processes_every: int = 10) -> None:
        self._nvml = nvml
        self._handles = [nvml.nvmlDeviceGetHandleByIndex(i) for i in devices]
        self._own_pids = own_pids
        self._interval_s = interval_s
        self._processes_every = processes_every
        self._reasons_fn: Callable[[Any], int] | None = None
        self._samples: list[GpuSample] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._polls = 0

    # -- one poll ---------------------------------------------------------------------------
    def _call(self, fn: Callable[..., Any], *args: Any) -> Any:
        try:
            return fn(*args)
        except Exception:  # NVMLError_* (not supported, GPU lost, ...): unknown, not fatal
            return None

    def _reasons(self, handle: Any) -> int:
        if self._reasons_fn is not None:
            return int(self._call(self._reasons_fn, handle) or 0)
        # The Event name is the current one (driver >= 535); older drivers and bindings
        # only have the Throttle name. Remember whichever answers first.
        for name in ("nvmlDeviceGetCurrentClocksEventReasons",
                     "nvmlDeviceGetCurrentClocksThrottleReasons"):
            fn = getattr(self._nvml, name, None)
            if fn is not None and (value := self._call(fn, handle)) is not None:
                self._reasons_fn = fn
                return int(value)
        return 0

    def _other_processes(self) -> int | None:
        mine = self._own_pids()
        seen: set[int] = set()
        for handle in self._handles:
            procs = self._call(self._nvml.nvmlDeviceGetComputeRunningProcesses, handle)
            if procs is None:
                return None
            seen.update(int(p.pid) for p in procs)
        if seen and mine and not seen & mine:
            # Not even the engine is listed: NVML reports pids of another namespace (some
            # containers), so "other" cannot be told apart from ours.
            return None
        return len(seen - mine)

    def poll(self, *, processes: bool = False) -> GpuSample:
        """One sample now (also called from the caller's thread at a round's end)."""
        utils: list[float] = []
        clocks: list[int] = []
        mask = 0
        for handle in self._handles:
            rates = self._call(self._nvml.nvmlDeviceGetUtilizationRates, handle)
            if rates is not None:
                utils.append(float(rates.gpu))
            clock = self._call(self._nvml.nvmlDeviceGetClockInfo, handle, _NVML_CLOCK_SM)
            if clock is not None:
                clocks.append(int(clock))
            mask |= self._reasons(handle)
        sample = GpuSample(
            at=time.monotonic(), util_pct=sum(utils) / len(utils) if utils else None,
            sm_clock_mhz=min(clocks) if clocks else None, reasons=mask,
            other_processes=self._other_processes() if processes else None)
        with self._lock:
            self._samples.append(sample)
        return sample

    # -- the thread -------------------------------------------------------------------------
    def _loop(self) -> None:
        while not self._stop.wait(self._interval_s):
            self._polls += 1
            try:
                self.poll(processes=self._polls % self._processes_every == 0)
            except Exception:  # a stand-in or driver misbehaving: stop sampling, keep the run
                return

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="omni-perf-interference",
                                        daemon=True)
        self._thread.start()

    def between(self, began: float, ended: float) -> list[GpuSample]:
        """Samples taken in ``[began, ended]``; older ones are dropped (rounds only move on)."""
        with self._lock:
            inside = [s for s in self._samples if began <= s.at <= ended]
            self._samples = [s for s in self._samples if s.at > ended]
        return inside

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None
