"""This process's share of the machine's GPUs: which physical GPUs its engines may use.

A test needing n GPUs holds n of them (a lease, see gpu_leases.py) and its engines get those
indices as ``EngineSpec.devices`` (so ``CUDA_VISIBLE_DEVICES`` and NVML sampling follow).
Engines are reused across tests, so the lease is too: it is kept while the process's engines
live and given back, with the engines stopped first, when a test needs another count, when
another process waits for these GPUs (checked when a test ends), when no engine is left, and
when the session ends. Without GPUs nothing is leased and devices stay ``()``.

Why leases and not a fixed split per xdist worker (``pytest_configure_node``): a fixed split
of 2 GPUs over ``-n 2`` could never run a 2-GPU profile, and a split of 4 over ``-n 2`` would
leave a worker's second GPU idle under 1-GPU tests.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence

from pytest_omni_perf.gpu_leases import Holder, Lease, LeaseDir


def worker_name() -> str:
    """The xdist worker id (``gw0``), or ``main`` in a process without xdist."""
    return os.environ.get("PYTEST_XDIST_WORKER", "main")


class GpuPool:
    """One lease at a time for this process's engines."""

    def __init__(self, leases: LeaseDir, gpus: Sequence[int], timeout_s: float,
                 stop_engines: Callable[[], None], live_engines: Callable[[], int]) -> None:
        self.leases = leases
        self.gpus = tuple(gpus)
        """Physical indices this process may lease (the probe honours CUDA_VISIBLE_DEVICES)."""
        self.timeout_s = timeout_s
        self._stop_engines = stop_engines
        self._live_engines = live_engines
        self._lease: Lease | None = None

    @property
    def devices(self) -> tuple[int, ...]:
        """The GPUs held now (empty when none)."""
        return self._lease.devices if self._lease is not None else ()

    @property
    def lease_fds(self) -> tuple[int, ...]:
        """The held lease's locked descriptors (empty when nothing is leased)."""
        return self._lease.fds if self._lease is not None else ()

    def devices_for(self, n: int, test: str) -> tuple[int, ...]:
        """``n`` GPUs for ``test``: the held ones when the count matches, else a new lease
        (waits up to ``timeout_s``; gpu_leases.LeaseTimeout names the holders). ``()`` when
        this machine has no GPU; callers skip tests needing more GPUs than exist."""
        if not self.gpus:
            return ()
        holder = Holder(pid=os.getpid(), worker=worker_name(), test=test)
        if self._lease is not None and len(self._lease.devices) == n:
            self._lease.relabel(holder)
            return self._lease.devices
        # Give back before waiting: holding one GPU while waiting for two is how two
        # processes deadlock.
        self.release()
        self._lease = self.leases.acquire(self.gpus, n, holder, self.timeout_s)
        return self._lease.devices

    def after_test(self) -> None:
        """Give the GPUs back when nothing runs on them or another process waits for them."""
        if self._lease is None:
            return
        if self._live_engines() == 0 or self.leases.waited_for(self._lease.devices):
            self.release()

    def release(self) -> None:
        """Stop this process's engines, then unlock: an engine still running on a GPU that
        another process was just given would spoil both measurements."""
        if self._lease is None:
            return
        try:
            self._stop_engines()
        finally:
            self._lease.release()
            self._lease = None


def gpus_needed(*counts: int) -> int:
    """GPUs a test holds: the most any of its profiles or markers asks for, at least one."""
    return max((1, *counts))
