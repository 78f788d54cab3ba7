"""What the interference monitor costs per round on CPU (issue 16 item 4).

    python benchmarks/interference_cost.py [--rounds 40] [--round-s 0.15]

An "engine" subprocess with a child (both asleep) stands for a worker engine. Each round calls
``begin_round``, sleeps ``--round-s`` (long enough for CPU shares, see CPU_MIN_ROUND_S) and
calls ``end_round``; only the two calls are timed: wall time (what a round's bookkeeping adds
to a run; it lies outside the timed request) and this thread's CPU time (what it takes from
the machine). The process-tree lookup (every TREE_EVERY_S) is timed apart. Not a test: the
numbers depend on the machine and its load.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pytest_omni_perf.measure import interference  # noqa: E402

ENGINE = "import subprocess, sys\nsubprocess.run([sys.executable, '-c', 'import time; time.sleep(600)'])"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=40)
    parser.add_argument("--round-s", type=float, default=0.15)
    args = parser.parse_args()
    engine = subprocess.Popen([sys.executable, "-c", ENGINE])
    try:
        time.sleep(0.5)  # let the child start, so the tree has two processes
        monitor = interference.monitor_for([engine.pid], [])
        monitor.start()
        walls, cpus = [], []
        for _ in range(args.rounds):
            wall, cpu = time.perf_counter(), time.thread_time()
            monitor.begin_round()
            between_wall, between_cpu = time.perf_counter(), time.thread_time()
            time.sleep(args.round_s)
            resumed_wall, resumed_cpu = time.perf_counter(), time.thread_time()
            monitor.end_round()
            walls.append(between_wall - wall + time.perf_counter() - resumed_wall)
            cpus.append(between_cpu - cpu + time.thread_time() - resumed_cpu)
        report = monitor.stop()
        lookups = []
        for _ in range(20):
            monitor._tree_at = -1e9  # force the lookup, to time it alone
            began = time.thread_time()
            monitor._tree_times()
            lookups.append(time.thread_time() - began)
    finally:
        engine.kill()
        engine.wait()
    print(f"{args.rounds} rounds of {args.round_s * 1000:.0f} ms; {os.cpu_count()} CPUs, load "
          f"average {os.getloadavg()[0]:.1f}; tree looked up every "
          f"{interference.TREE_EVERY_S} s")
    print(f"begin_round + end_round: wall median {statistics.median(walls) * 1e3:.3f} ms "
          f"(max {max(walls) * 1e3:.3f}), CPU median {statistics.median(cpus) * 1e3:.3f} ms "
          f"(mean {statistics.mean(cpus) * 1e3:.3f})")
    print(f"one process-tree lookup: CPU median {statistics.median(lookups) * 1e3:.3f} ms")
    print(f"summary of these rounds: {report.summary()!r}")


if __name__ == "__main__":
    main()
