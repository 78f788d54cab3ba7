"""Pinning engine threads onto CPUs, for benchmarks/cpu_pinning.py only (not the plugin).

On the H200 hosts of results/h200/trust/ two engine processes doing identical work took
turns being slow for 4-10 rounds at a time (up to 1.31x over a whole trial) while nothing
else ran: eager diffusers at 1024x1024 is partly launch-bound, so a request is as fast as the
CPU its Python thread happens to run on, and the scheduler keeps each process on "its" CPU
for seconds. The idea tested: rounds alternate between the engines and only one of them works
at a time, so pinning the request threads of both processes to the same CPUs would make both
meet the same CPU within a second of each other, and pairing would cancel that CPU's speed.

Measured on a fresh H200 host (16 vCPUs), no placement brought the no-op ratio nearer 1.00
than leaving the scheduler free (results/h200/trust/G/pinning.txt), so the plugin does not
pin. Only the main thread of each process is pinned by default (an engine worker serves requests
there, engines/worker.py): pinning all threads put torch's OpenMP pool of a tiny-flux worker
on one CPU of a 2-CPU machine and made its requests 70x slower (59 ms -> 4055 ms, smoke run
of benchmarks/cpu_pinning.py), since the pool's threads spin waiting for each other.

Linux only (``os.sched_setaffinity`` takes a thread id there); elsewhere ``pin`` does
nothing and says so. Threads started after ``pin`` inherit their creator's CPUs.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Iterable, Sequence

import psutil


def available_cpus() -> tuple[int, ...]:
    """CPUs this process may run on (all of ``os.cpu_count()`` where affinity is unknown)."""
    getter = getattr(os, "sched_getaffinity", None)
    return tuple(sorted(getter(0))) if getter is not None else tuple(range(os.cpu_count() or 1))


def _ranges(cpus: Sequence[int]) -> str:
    parts: list[str] = []
    for cpu in cpus:
        if parts and parts[-1].split("-")[-1] == str(cpu - 1):
            parts[-1] = f"{parts[-1].split('-')[0]}-{cpu}"
        else:
            parts.append(str(cpu))
    return ",".join(parts)


@dataclasses.dataclass
class Pinning:
    """Threads moved onto shared CPUs, and the CPUs each had before (to ``restore``)."""

    cpus: tuple[int, ...]
    before: dict[int, set[int]] = dataclasses.field(default_factory=dict)
    problem: str | None = None
    """Why nothing was pinned (not Linux, no permission), or None."""

    def describe(self) -> str:
        """Plain words for reports, e.g. "engine threads shared CPUs 2-3 (41 threads)"."""
        if self.problem is not None:
            return f"engine threads not pinned: {self.problem}"
        return f"engine threads shared CPUs {_ranges(self.cpus)} ({len(self.before)} threads)"

    def restore(self) -> None:
        """Give every pinned thread that still runs its CPUs back."""
        for tid, cpus in self.before.items():
            try:
                os.sched_setaffinity(tid, cpus)
            except (ProcessLookupError, PermissionError, OSError):
                pass  # the thread ended, or the engine was stopped meanwhile
        self.before.clear()


def _threads(pids: Iterable[int], main_only: bool) -> list[int]:
    """Thread ids of every process in ``pids`` and their descendants (a server's workers);
    with ``main_only`` each process's main thread alone (its thread id is its pid)."""
    tids: set[int] = set()
    for pid in pids:
        try:
            process = psutil.Process(pid)
            tree = [process, *process.children(recursive=True)]
        except psutil.Error:
            continue
        for member in tree:
            if main_only:
                tids.add(member.pid)
                continue
            try:
                tids.update(thread.id for thread in member.threads())
            except psutil.Error:
                continue
    return sorted(tids)


def pin(pids: Iterable[int], cpus: Sequence[int], *, main_only: bool = True) -> Pinning:
    """Move the main thread (every thread unless ``main_only``) of ``pids`` and of their
    child processes onto ``cpus``.

    Returns a ``Pinning`` whose ``restore()`` undoes it; a thread that ends meanwhile is
    skipped. Never raises for an engine that cannot be pinned: ``Pinning.problem`` says why.
    """
    pinning = Pinning(tuple(cpus))
    if not hasattr(os, "sched_setaffinity"):
        pinning.problem = "this platform cannot set thread CPU affinity"
        return pinning
    for tid in _threads(pids, main_only):
        try:
            before = os.sched_getaffinity(tid)
            os.sched_setaffinity(tid, pinning.cpus)
        except ProcessLookupError:
            continue
        except (PermissionError, OSError) as exc:
            pinning.restore()
            pinning.problem = f"could not set the CPUs of thread {tid}: {exc}"
            return pinning
        pinning.before[tid] = before
    return pinning
