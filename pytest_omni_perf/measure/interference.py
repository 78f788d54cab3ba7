"""What the host did during each measured round, and a plain-words summary of it.

On shared GPU hosts latency is bimodal because interference comes and goes (FACTS.md, the
H200 machines: slow rounds had GPU utilization 59-77 %, fast ones 91-100 %). A monitor records
for every round:

- GPU (NVML, polled every 25 ms in a thread; see ``gpu_conditions`` for what NVML's
  utilization averages over): mean utilization, lowest SM clock, clock-event reasons,
  compute processes on the engine's GPUs that are not the engine's.
- CPU (psutil, read when a round begins and ends, nothing in between): host busy share, the
  CPU time of processes other than the engine's tree and this pytest process per second of
  the round ("other load", in cores), hypervisor steal, and the 1-minute load average.

The kernel counts CPU time in ticks of 10 ms (USER_HZ), so over a round of 20 ms one tick
on either end is half a core of error: rounds shorter than ``CPU_MIN_ROUND_S`` get None for
the CPU shares rather than a number that is mostly rounding. Processes that exit during a
round take their CPU time with them; it then counts as other load.

Nothing here raises: NVML errors, processes that are gone, no psutil or no GPU give None.
"""

from __future__ import annotations

import dataclasses
import math
import os
import time
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from pytest_omni_perf.measure.gpu_conditions import GpuRound, NvmlPoller, aggregate

# -- what counts as notable (each a property of one round) -----------------------------------
GPU_BUSY_BELOW_PCT = 85.0
"""On the H200 machines the medium Flux's fast rounds ran the GPU 91-100 %, its slow
(interfered) ones 59-77 %; 85 lies between. Below it the host, not the GPU, sets the pace."""
SM_CLOCK_DROP_RATIO = 0.95
"""Quiet H100/H200 runs held the SM clock within 1 % (1965-1980 MHz); a round whose lowest
clock is 5 % under the run's highest was slowed by the clock, not by the code."""
BENIGN_REASONS = frozenset({"sw_power_cap", "sync_boost"})
"""Reasons seen briefly on every busy quiet H200 run; they matter only with a clock drop,
which ``SM_CLOCK_DROP_RATIO`` catches. Every other reason (thermal, hw_slowdown, power brake)
is notable by itself."""
OTHER_CORES_ABOVE = 0.5
"""Half a core of other processes: a launch-bound engine needs one core for its Python
thread, and on the 2-core CI machines half a core of other load already contests it. Idle
daemons stay well under 0.1."""
STEAL_ABOVE_PCT = 5.0
"""A few percent of steal means the hypervisor gives our vCPUs to other guests; a quiet
cloud VM shows about 0."""
NOTABLE_SHARE = 0.2
"""A condition enters the summary when it held in at least a fifth of the rounds (and at
least one): fewer cannot move a median or a low quantile of the rounds."""
CPU_MIN_ROUND_S = 0.1
"""Shortest round given CPU shares: 10 ms ticks on both ends are then at most ~0.2 core of
error on two CPUs instead of a whole core."""
GPU_MIN_ROUND_S = 0.2
"""Shortest round given a GPU utilization: NVML averages utilization over its own sample
period (1/6 s to 1 s), so a 1 ms request read "GPU busy 0 %" on an H200 (results/h200/trust/
A/pidns): a figure about the idle time around it, not about the round."""
TREE_EVERY_S = 0.5
"""How often the engine's process tree is looked up again: finding descendants scans all of
/proc (a few ms on a loaded 2-core machine), while reading known processes' times is cheap."""
QUIET = "quiet"


@dataclasses.dataclass(frozen=True)
class RoundConditions:
    """One round's host conditions (None: not measurable here or unreadable)."""

    duration_s: float
    gpu_util_pct: float | None = None
    """Mean NVML utilization over the engine's GPUs during the round (None on CPU)."""
    sm_clock_mhz: int | None = None
    """Lowest SM clock seen during the round."""
    clock_event_reasons: tuple[str, ...] = ()
    """NVML clock-event (throttle) reasons seen, e.g. "sw_power_cap", "hw_slowdown"."""
    other_gpu_processes: int | None = None
    """Compute processes on the engine's GPUs that are not the engine's (most seen)."""
    host_cpu_busy_pct: float | None = None
    """Share of all CPUs busy (user, system, irq; not idle, iowait or steal), percent."""
    others_cpu_cores: float | None = None
    """CPU seconds of processes other than the engine's tree and this pytest process, per
    second of the round: cores' worth of other load."""
    steal_pct: float | None = None
    """Share of all CPU time stolen by the hypervisor, percent (None where not reported)."""
    load_avg_1m: float | None = None
    """1-minute load average when the round ended (includes the engine itself)."""


def _flags(r: RoundConditions, highest_clock: int | None) -> set[str]:
    flags = set()
    if r.gpu_util_pct is not None and r.gpu_util_pct < GPU_BUSY_BELOW_PCT:
        flags.add("gpu_busy")
    if (r.sm_clock_mhz is not None and highest_clock
            and r.sm_clock_mhz < SM_CLOCK_DROP_RATIO * highest_clock):
        flags.add("clock")
    if set(r.clock_event_reasons) - BENIGN_REASONS:
        flags.add("reasons")
    if r.other_gpu_processes:
        flags.add("gpu_processes")
    if r.others_cpu_cores is not None and r.others_cpu_cores > OTHER_CORES_ABOVE:
        flags.add("others")
    if r.steal_pct is not None and r.steal_pct > STEAL_ABOVE_PCT:
        flags.add("steal")
    return flags


def _mean(values: Iterable[float | None]) -> float:
    known = [v for v in values if v is not None]
    return sum(known) / len(known) if known else math.nan


@dataclasses.dataclass(frozen=True)
class InterferenceReport:
    """Every measured round's conditions, in order."""

    rounds: tuple[RoundConditions, ...]

    def _highest_clock(self) -> int | None:
        return max((r.sm_clock_mhz for r in self.rounds if r.sm_clock_mhz), default=None)

    def noisy_rounds(self) -> int:
        """Rounds in which any notable condition held (see the module's constants)."""
        highest = self._highest_clock()
        return sum(bool(_flags(r, highest)) for r in self.rounds)

    def summary(self) -> str:
        """Plain words, e.g. "GPU busy 64 % in 7 of 15 rounds: host-bound, cross-host
        comparisons unreliable"; ``"quiet"`` when nothing was notable; "" without rounds."""
        n = len(self.rounds)
        if not n:
            return ""
        highest = self._highest_clock()
        hit: dict[str, list[RoundConditions]] = {}
        for r in self.rounds:
            for flag in _flags(r, highest):
                hit.setdefault(flag, []).append(r)
        needed = max(1, math.ceil(NOTABLE_SHARE * n))
        parts = []
        for flag in ("gpu_busy", "clock", "reasons", "gpu_processes", "others", "steal"):
            rounds = hit.get(flag, [])
            if len(rounds) < needed:
                continue
            where = f"in {len(rounds)} of {n} rounds"
            if flag == "gpu_busy":
                parts.append(f"GPU busy {_mean(r.gpu_util_pct for r in rounds):.0f} % {where}: "
                             "host-bound, cross-host comparisons unreliable")
            elif flag == "clock":
                low = min(r.sm_clock_mhz or 0 for r in rounds)
                parts.append(f"SM clock down to {low} MHz (highest {highest}) {where}")
            elif flag == "reasons":
                names = sorted({x for r in rounds for x in r.clock_event_reasons}
                               - BENIGN_REASONS)
                parts.append(f"clock events {', '.join(names)} {where}")
            elif flag == "gpu_processes":
                most = max(r.other_gpu_processes or 0 for r in rounds)
                parts.append(f"{most} other process{'es' if most > 1 else ''} on the GPU {where}")
            elif flag == "others":
                parts.append(f"other processes used "
                             f"{_mean(r.others_cpu_cores for r in rounds):.1f} cores {where}")
            else:
                parts.append(f"hypervisor stole {_mean(r.steal_pct for r in rounds):.0f} % "
                             f"of the CPU {where}")
        return "; ".join(parts) or QUIET

    @property
    def notable(self) -> bool:
        """True when the summary names something (not quiet, not empty)."""
        return self.summary() not in ("", QUIET)

    def to_dict(self) -> dict[str, object]:
        """JSON-ready: ``{rounds: [{field: value}], summary, noisy_rounds, notable}``."""
        return {"rounds": [{**dataclasses.asdict(r),
                            "clock_event_reasons": list(r.clock_event_reasons)}
                           for r in self.rounds],
                "summary": self.summary(), "noisy_rounds": self.noisy_rounds(),
                "notable": self.notable}

    @classmethod
    def from_dict(cls, data: Mapping[str, object], where: str = "interference"
                  ) -> InterferenceReport:
        """The report back from ``to_dict`` output (derived keys are recomputed, not read).

        Raises ValueError naming ``where`` and the field that is wrong."""
        rounds = data.get("rounds") if isinstance(data, Mapping) else None
        if not isinstance(rounds, list):
            raise ValueError(f"{where}.rounds: expected a list, got {rounds!r}")
        return cls(tuple(_round_from(r, f"{where}.rounds[{i}]") for i, r in enumerate(rounds)))


_NUMBERS = tuple(f.name for f in dataclasses.fields(RoundConditions)
                 if f.name != "clock_event_reasons")


def _round_from(data: object, where: str) -> RoundConditions:
    if not isinstance(data, Mapping):
        raise ValueError(f"{where}: expected an object, got {data!r}")
    values: dict[str, Any] = {}
    for name in _NUMBERS:
        value = data.get(name)
        if value is None and name != "duration_s":
            values[name] = None
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            values[name] = int(value) if name in ("sm_clock_mhz", "other_gpu_processes") \
                else float(value)
        else:
            raise ValueError(f"{where}.{name}: expected a number"
                             f"{'' if name == 'duration_s' else ' or null'}, got {value!r}")
    reasons = data.get("clock_event_reasons", [])
    if not isinstance(reasons, list) or not all(isinstance(x, str) for x in reasons):
        raise ValueError(f"{where}.clock_event_reasons: expected a list of names, "
                         f"got {reasons!r}")
    return RoundConditions(clock_event_reasons=tuple(reasons), **values)


# -- the monitor ------------------------------------------------------------------------------
class InterferenceMonitor:
    """Records ``RoundConditions`` for each round between ``begin_round`` and ``end_round``.

    ``engine_pids``: the measurement's own processes: the engine's, and those of an engine
    whose rounds interleave with it (it waits meanwhile); descendants are found as rounds go;
    ``devices``: physical GPU indices the engine uses ([] on CPU); ``nvml``: an initialized
    ``pynvml`` module (or a stand-in), None for CPU figures only. No method raises.
    """

    def __init__(self, engine_pids: Sequence[int], devices: Sequence[int],
                 nvml: Any = None, interval_s: float = 0.025) -> None:
        self._engine_pids = list(engine_pids)
        self._rounds: list[RoundConditions] = []
        self._own: frozenset[int] = frozenset({os.getpid(), *self._engine_pids})
        self._began: float | None = None
        self._cpu_before: Any = None
        self._procs_before: dict[int, tuple[Any, float]] = {}
        self._tree: list[Any] = []
        self._tree_at = -math.inf
        self._stopped = False
        self._nvml = nvml
        self._poller: NvmlPoller | None = None
        try:
            import psutil
            self._psutil: Any = psutil
        except ImportError:
            self._psutil = None
        if nvml is not None and devices:
            try:
                self._poller = NvmlPoller(nvml, devices, lambda: self._own, interval_s)
            except Exception:  # no handle for these devices: CPU figures only
                self._poller = None

    @property
    def on_gpu(self) -> bool:
        """True when GPU figures are being sampled."""
        return self._poller is not None

    def start(self) -> None:
        """Start sampling (before the first measured round)."""
        try:
            if self._poller is not None:
                self._poller.start()
        except Exception:
            self._poller = None

    def begin_round(self) -> None:
        """Mark the start of a round (right before its request)."""
        try:
            self._procs_before = self._tree_times()
            self._own = frozenset(self._procs_before) | {os.getpid(), *self._engine_pids}
            self._cpu_before = self._psutil.cpu_times() if self._psutil else None
        except Exception:
            self._cpu_before = None
        self._began = time.monotonic()

    def end_round(self) -> RoundConditions:
        """The round that just ended (right after its request); also kept for ``stop``."""
        ended = time.monotonic()
        duration = ended - self._began if self._began is not None else 0.0
        try:
            conditions = self._conditions(self._began or ended, ended, duration)
        except Exception:
            conditions = RoundConditions(duration_s=duration)
        self._began = None
        self._rounds.append(conditions)
        return conditions

    def stop(self) -> InterferenceReport:
        """Stop sampling and return every round so far; safe to call again."""
        if not self._stopped:
            self._stopped = True
            try:
                if self._poller is not None:
                    self._poller.stop()
                if self._nvml is not None:
                    self._nvml.nvmlShutdown()  # NVML counts inits: this pairs with ours
            except Exception:
                pass
        return InterferenceReport(tuple(self._rounds))

    # -- reading ------------------------------------------------------------------------------
    def _tree_times(self) -> dict[int, tuple[Any, float]]:
        """CPU seconds (user + system) of the engine's processes, their descendants and this
        process, keyed by pid, with the psutil.Process to read again at the round's end."""
        if self._psutil is None:
            return {}
        now = time.monotonic()
        if now - self._tree_at >= TREE_EVERY_S:
            self._tree, self._tree_at = [self._psutil.Process()], now
            for pid in self._engine_pids:
                try:
                    root = self._psutil.Process(pid)
                    self._tree += [root, *root.children(recursive=True)]
                except self._psutil.Error:
                    continue  # gone: nothing of it to subtract
        found: dict[int, tuple[Any, float]] = {}
        for proc in self._tree:
            try:
                times = proc.cpu_times()
                found[proc.pid] = (proc, times.user + times.system)
            except self._psutil.Error:
                continue
        return found

    def _ours_seconds(self) -> float:
        total = 0.0
        for proc, before in self._procs_before.values():
            try:
                times = proc.cpu_times()
                total += max(0.0, times.user + times.system - before)
            except self._psutil.Error:
                continue  # exited mid-round: its time counts as other load (see module doc)
        return total

    def _cpu(self, duration: float) -> dict[str, float | None]:
        found: dict[str, float | None] = {}
        try:
            found["load_avg_1m"] = os.getloadavg()[0]
        except (OSError, AttributeError):
            found["load_avg_1m"] = None
        if self._psutil is None or self._cpu_before is None or duration < CPU_MIN_ROUND_S:
            return found
        ours = self._ours_seconds()
        after = self._psutil.cpu_times()
        delta = {name: getattr(after, name) - getattr(self._cpu_before, name)
                 for name in after._fields}
        # Linux counts guest time inside user time already (as psutil.cpu_percent does).
        total = sum(v for k, v in delta.items() if k not in ("guest", "guest_nice"))
        if total <= 0:
            return found
        idle = delta.get("idle", 0.0) + delta.get("iowait", 0.0)
        steal = delta.get("steal")
        busy = total - idle - (steal or 0.0)
        found["host_cpu_busy_pct"] = 100.0 * busy / total
        found["others_cpu_cores"] = max(0.0, busy - ours) / duration
        found["steal_pct"] = None if steal is None else 100.0 * steal / total
        return found

    def _gpu(self, began: float, ended: float) -> GpuRound | None:
        if self._poller is None:
            return None
        samples = self._poller.between(began, ended)
        # NVML's utilization averages the last 1/6-1 s: a sample taken now covers the round's
        # end even when the round was shorter than the polling interval.
        samples.append(self._poller.poll(processes=True))
        return aggregate(samples)

    def _conditions(self, began: float, ended: float, duration: float) -> RoundConditions:
        cpu = self._cpu(duration)
        gpu = self._gpu(began, ended)
        return RoundConditions(
            duration_s=duration,
            gpu_util_pct=None if gpu is None or duration < GPU_MIN_ROUND_S else gpu.util_pct,
            sm_clock_mhz=None if gpu is None else gpu.sm_clock_mhz,
            clock_event_reasons=() if gpu is None else gpu.reasons,
            other_gpu_processes=None if gpu is None else gpu.other_processes,
            host_cpu_busy_pct=cpu.get("host_cpu_busy_pct"),
            others_cpu_cores=cpu.get("others_cpu_cores"), steal_pct=cpu.get("steal_pct"),
            load_avg_1m=cpu.get("load_avg_1m"))


def monitor_for(engine_pids: Sequence[int], devices: Sequence[int]) -> InterferenceMonitor:
    """NVML-backed on ``devices`` when pynvml imports and initializes, CPU-only otherwise."""
    nvml = None
    if devices:
        try:
            import pynvml

            pynvml.nvmlInit()
            nvml = pynvml
        except Exception:  # no pynvml, no driver: CPU figures are still worth having
            nvml = None
    return InterferenceMonitor(engine_pids, devices, nvml)
