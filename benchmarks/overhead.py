"""Per-request overhead of the plugin's measuring loop, and its memory sampler's cost.

    python benchmarks/overhead.py [--delay 0.1] [--blocks 10] [--per-block 10]

A stand-in runner that sleeps ``--delay`` seconds per request (a "100 ms request") runs in a
real worker process. Three kinds of blocks rotate, so machine drift hits all of them alike:
bare ``engine.generate`` calls; the harness's rounds (``_Rounds.one``) without the memory
sampler; the same rounds with the sampler thread running, as ``omni_perf.measure`` does.
The sampler is the one the plugin would pick here: NVML per-process when a GPU is visible
(``--gpus`` to choose), else RSS from /proc. Medians and their ratios are printed side by
side, and the cost of one sample is timed apart (what the sampler thread takes from the
machine every 20 ms). Not a test: the numbers depend on the machine.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from pytest_omni_perf.engines.base import EngineSpec, GenerationRequest  # noqa: E402
from pytest_omni_perf.engines.hosting import IsolatedEngine  # noqa: E402
from pytest_omni_perf.engines.engine_pool import LiveEngine  # noqa: E402
from pytest_omni_perf.harness import _Rounds  # noqa: E402
from pytest_omni_perf.measure.memory import MemorySampler, sampler_for  # noqa: E402
from pytest_omni_perf.profiles import load_builtin  # noqa: E402


def _gpu_indices(given: str | None) -> list[int]:
    if given is not None:
        return [int(i) for i in given.split(",") if i.strip()]
    from pytest_omni_perf.hardware import probe

    return [g.index for g in probe().gpus]


def _per_sample_us(sampler: MemorySampler, lookup: bool, n: int = 500) -> float:
    """CPU time of one sample (thread time, so other processes' load does not count);
    ``lookup``: also find the engine's process tree again, as every sample once did."""
    began = time.thread_time()
    for _ in range(n):
        sampler.sample(lookup=lookup)
    return (time.thread_time() - began) / n * 1e6


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--delay", type=float, default=0.1)
    parser.add_argument("--blocks", type=int, default=10)
    parser.add_argument("--per-block", type=int, default=10)
    parser.add_argument("--gpus", help="GPU indices for the NVML sampler (default: all found)")
    args = parser.parse_args()
    os.environ["STANDIN_DELAY_EAGER"] = str(args.delay)
    devices = _gpu_indices(args.gpus)
    spec = EngineSpec(model="standin", profile_name="eager", options={}, backend="standin")
    engine = IsolatedEngine(spec, "standin:make", {"profile": "eager", "options": {}},
                            env={"PYTHONPATH": str(ROOT / "tests")})
    engine.start()
    request = GenerationRequest(width=128, height=128)
    live = LiveEngine(engine=engine, key=("standin", "eager", "standin", ()), start_s=0.0)
    profile = load_builtin()["eager"]
    times: dict[str, list[float]] = {"bare": [], "harness": [], "harness+sampler": []}
    samples = 0
    kind = ""

    def block(name: str, call: Callable[[], object]) -> None:
        for _ in range(args.per_block):
            began = time.perf_counter()
            call()
            times[name].append(time.perf_counter() - began)

    try:
        engine.generate(request)
        for _ in range(args.blocks):
            block("bare", lambda: engine.generate(request))
            quiet = _Rounds(profile, spec, request, live, False, sampler_for(live.pids, devices))
            block("harness", quiet.one)
            sampler = sampler_for(live.pids, devices)
            kind = sampler.kind
            run = _Rounds(profile, spec, request, live, False, sampler)
            sampler.start()
            try:
                block("harness+sampler", run.one)
            finally:
                samples += sampler.stop().samples
        probe = sampler_for(live.pids, devices)
        with_lookup, cached = _per_sample_us(probe, True), _per_sample_us(probe, False)
        probe.stop()
    finally:
        engine.stop()
    med = {name: statistics.median(values) for name, values in times.items()}
    bare = med["bare"]
    print(f"request delay {args.delay * 1000:.0f} ms, {len(times['bare'])} requests per kind, "
          f"blocks rotating; {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}")
    for name, value in med.items():
        print(f"{name:<17} median {value * 1000:9.3f} ms  ratio to bare {value / bare:.4f}  "
              f"({(value - bare) * 1000:+.3f} ms)")
    h, hs = med["harness"], med["harness+sampler"]
    print(f"sampler ({kind}, {samples} samples at 20 ms): {(hs - h) * 1000:+.3f} ms per request "
          f"= {(hs / h - 1) * 100:+.2f}% (harness with vs without it)")
    # Every 25th sample (0.5 s at 20 ms) looks the process tree up again.
    blended = (with_lookup + 24 * cached) / 25
    print(f"one {kind} sample: {with_lookup:.1f} us of CPU with a process-tree lookup, "
          f"{cached:.1f} us without; at 20 ms with a lookup every 0.5 s the sampler takes "
          f"{blended / 20000 * 100:.3f}% of one core (a lookup every sample: "
          f"{with_lookup / 20000 * 100:.3f}%)")


if __name__ == "__main__":
    main()
