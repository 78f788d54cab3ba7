"""The memory sampler: peaks of the engine's processes, with the process tree looked up
only now and then (scanning /proc every 20 ms cost 7% of a core on 2 cores)."""

from __future__ import annotations

import os
import time
from collections.abc import Sequence

from pytest_omni_perf.measure.memory import MemorySampler, rss_bytes


def test_tree_is_looked_up_at_start_stop_and_every_interval() -> None:
    lookups: list[float] = []
    reads: list[tuple[int, ...]] = []

    def pids() -> list[int]:
        lookups.append(time.monotonic())
        return [len(lookups)]  # a "new tree" each lookup, to see which one a read used

    def read(known: Sequence[int]) -> int:
        reads.append(tuple(known))
        return 100 * known[0]

    sampler = MemorySampler("rss", read, pids, interval_s=0.002, pids_every_s=0.05)
    began = time.monotonic()
    sampler.start()
    time.sleep(0.3)
    peak = sampler.stop()
    elapsed = time.monotonic() - began
    assert peak.samples == len(reads) > 50
    # start, at most one per 50 ms between, and stop: far fewer than the samples
    assert 3 <= len(lookups) <= 2 + elapsed / 0.05 + 1
    assert reads[0] == (1,) and reads[-1] == (len(lookups),)
    assert peak.peak_bytes == 100 * len(lookups)  # the last tree's reading is the peak


def test_rss_of_this_process_is_counted() -> None:
    sampler = MemorySampler("rss", rss_bytes, lambda: [os.getpid()], interval_s=0.01)
    sampler.start()
    block = bytearray(64 * 2**20)
    block[::4096] = b"x" * len(block[::4096])  # touch every page so it is resident
    time.sleep(0.05)
    peak = sampler.stop()
    assert peak.peak_bytes >= 64 * 2**20 and peak.kind == "rss"
    del block
