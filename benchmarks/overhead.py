"""Per-request overhead of the plugin's measuring loop against a bare loop on the same engine.

    python benchmarks/overhead.py [--delay 0.1] [--blocks 10] [--per-block 10]

A stand-in runner that sleeps ``--delay`` seconds per request (a "100 ms request") runs in a
real worker process. Blocks of bare ``engine.generate`` calls and blocks of the harness's
rounds (``_Rounds.one`` with the memory sampler thread running, as ``omni_perf.measure`` does)
alternate, so machine drift hits both; the medians and their ratio are printed side by side.
Not a test: the numbers depend on the machine.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from pytest_omni_perf.engines.base import EngineSpec, GenerationRequest  # noqa: E402
from pytest_omni_perf.engines.hosting import IsolatedEngine  # noqa: E402
from pytest_omni_perf.engines.pool import LiveEngine  # noqa: E402
from pytest_omni_perf.harness import _Rounds  # noqa: E402
from pytest_omni_perf.measure.memory import sampler_for  # noqa: E402
from pytest_omni_perf.profiles import load_builtin  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--delay", type=float, default=0.1)
    parser.add_argument("--blocks", type=int, default=10)
    parser.add_argument("--per-block", type=int, default=10)
    args = parser.parse_args()
    import os

    os.environ["STANDIN_DELAY_EAGER"] = str(args.delay)
    spec = EngineSpec(model="standin", profile_name="eager", options={}, backend="standin")
    engine = IsolatedEngine(spec, "standin:make", {"profile": "eager", "options": {}},
                            env={"PYTHONPATH": str(ROOT / "tests")})
    engine.start()
    request = GenerationRequest(width=128, height=128)
    live = LiveEngine(engine=engine, key=("standin", "eager", "standin", ()), start_s=0.0)
    profile = load_builtin()["eager"]
    bare: list[float] = []
    harness: list[float] = []
    sampler_samples = 0
    try:
        engine.generate(request)
        for _ in range(args.blocks):
            for _ in range(args.per_block):
                began = time.perf_counter()
                engine.generate(request)
                bare.append(time.perf_counter() - began)
            sampler = sampler_for(live.pids, [])
            run = _Rounds(profile, spec, request, live, False, sampler)
            sampler.start()
            for _ in range(args.per_block):
                began = time.perf_counter()
                run.one()
                harness.append(time.perf_counter() - began)
            sampler_samples += sampler.stop().samples
    finally:
        engine.stop()
    b, h = statistics.median(bare), statistics.median(harness)
    print(f"request delay {args.delay * 1000:.0f} ms, {len(bare)} requests each, "
          f"blocks alternating; memory sampler: {sampler_samples} samples taken")
    print(f"bare loop median      {b * 1000:9.3f} ms")
    print(f"harness median        {h * 1000:9.3f} ms")
    print(f"overhead              {(h - b) * 1000:+9.3f} ms = {(h / b - 1) * 100:+.2f}% of the "
          "bare request")


if __name__ == "__main__":
    main()
