"""Do two identical engines still disagree when their threads share the same CPUs?

    python benchmarks/cpu_pinning.py [--model medium-flux --width 1024 --height 1024 \
        --steps 20] [--rounds 15] [--max-minutes 7] [--out results/h200/trust/G/pinning.txt]

Two real diffusers engines of one model with the eager profile (identical work) run in their
own worker processes, as the plugin runs them, and alternate requests (round i: reference,
then candidate). Trials of ``--rounds`` rounds rotate between four CPU placements of the two
processes' threads (``benchmarks/cpu_affinity.py``):

- ``free``: the scheduler decides (the plugin's behaviour before this benchmark);
- ``main1``: the main (request) threads of both processes on one CPU, other threads free;
- ``main2``: the main threads of both processes on the same two CPUs;
- ``split``: reference's main thread on one CPU, candidate's on another (does the CPU
  decide the speed?);
- ``all2``: every thread of both processes on the same two CPUs.

Per trial: the plugin's gate estimate, candidate/reference ratio of Harrell-Davis 20%
quantiles with its paired 95% bootstrap interval (``measure.stats.speedup_interval``), and
the CPU each main thread was last seen on. The answer sought: does sharing CPUs keep the
no-op ratio within 1.00 +- 0.03 where ``free`` does not. Not a test: numbers depend on the
host.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import psutil

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from pytest_omni_perf.engines.base import GenerationRequest  # noqa: E402
from cpu_affinity import available_cpus, pin  # noqa: E402  (this folder)
from detection_power import start_eager_engines  # noqa: E402  (this folder)
from pytest_omni_perf.measure.stats import speedup_interval  # noqa: E402

PLACEMENTS = ("free", "main1", "main2", "split", "all2")


def place(placement: str, engines: list[Any], cpus: tuple[int, ...]) -> list[Any]:
    """Pin the engines' threads as ``placement`` says; the pinnings to undo afterwards."""
    pids = [list(engine.pids()) for engine in engines]
    if placement == "main1":
        return [pin(pids[0] + pids[1], cpus[:1])]
    if placement == "main2":
        return [pin(pids[0] + pids[1], cpus[:2])]
    if placement == "split":
        return [pin(pids[0], cpus[:1]), pin(pids[1], cpus[2:3])]
    if placement == "all2":
        return [pin(pids[0] + pids[1], cpus[:2], main_only=False)]
    return []


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="medium-flux")
    parser.add_argument("--width", type=int, default=1024)
    parser.add_argument("--height", type=int, default=1024)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--max-minutes", type=float, default=7.0)
    parser.add_argument("--cache-dir", default=os.environ.get("OMNI_PERF_CACHE_DIR", ""))
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    cpus = available_cpus()
    # CPUs 2-4, leaving 0-1 to this process and the system (wrapping round on a small
    # machine, where the benchmark is only a smoke test).
    chosen = tuple(cpus[(2 + i) % len(cpus)] for i in range(3))
    request = GenerationRequest(width=args.width, height=args.height,
                                num_inference_steps=args.steps)
    began = time.perf_counter()
    engines = start_eager_engines(args)
    trials: list[dict[str, Any]] = []
    try:
        for engine in engines:
            for _ in range(args.warmup):
                engine.generate(request)
        while time.perf_counter() - began < 60 * args.max_minutes:
            placement = PLACEMENTS[len(trials) % len(PLACEMENTS)]
            pinnings = place(placement, engines, chosen)
            samples: list[list[float]] = [[], []]
            seen_cpus: list[list[int]] = [[], []]
            for _ in range(args.rounds):
                for i, engine in enumerate(engines):
                    start = time.perf_counter()
                    engine.generate(request)
                    samples[i].append(time.perf_counter() - start)
                    try:
                        seen_cpus[i].append(psutil.Process(engine.pids()[0]).cpu_num())
                    except psutil.Error:
                        seen_cpus[i].append(-1)
            for pinning in pinnings:
                pinning.restore()
            # speedup of the candidate over the reference, inverted: candidate/reference.
            interval = speedup_interval(samples[1], samples[0], paired=True)
            trial = {"placement": placement, "ratio": interval.estimate,
                     "low": interval.low, "high": interval.high,
                     "reference_s": samples[0], "candidate_s": samples[1],
                     "reference_cpus": seen_cpus[0], "candidate_cpus": seen_cpus[1],
                     "pinning": [p.describe() for p in pinnings]}
            trials.append(trial)
            print(f"{len(trials):3d} {placement:<8} {interval.estimate:.3f} "
                  f"[{interval.low:.3f}, {interval.high:.3f}]  cpus ref "
                  f"{sorted(set(seen_cpus[0]))} cand {sorted(set(seen_cpus[1]))}",
                  file=sys.stderr, flush=True)
    finally:
        for engine in engines:
            engine.stop()
    lines = [f"{args.model} {args.width}x{args.height} {args.steps} steps, two eager engines "
             f"alternating, {args.rounds} rounds per trial, {len(cpus)} CPUs (pinned onto "
             f"{list(chosen)}), {time.perf_counter() - began:.0f} s in all", "",
             f"  {'placement':<9} {'trials':>6} {'median':>7} {'min':>6} {'max':>6} "
             f"{'|r-1|>0.03':>10} {'mean CI width':>13} {'median ms':>9}"]
    for placement in PLACEMENTS:
        chosen_trials = [t for t in trials if t["placement"] == placement]
        if not chosen_trials:
            continue
        ratios = [t["ratio"] for t in chosen_trials]
        off = sum(abs(r - 1.0) > 0.03 for r in ratios)
        width = statistics.fmean(t["high"] - t["low"] for t in chosen_trials)
        ms = statistics.median(s for t in chosen_trials for s in t["reference_s"]) * 1000
        lines.append(f"  {placement:<9} {len(ratios):>6} {statistics.median(ratios):7.3f} "
                     f"{min(ratios):6.3f} {max(ratios):6.3f} {off:>6}/{len(ratios):<3} "
                     f"{width:13.3f} {ms:9.0f}")
    text = "\n".join(lines)
    print(text)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n")
        args.out.with_suffix(".json").write_text(json.dumps(
            {"args": {k: str(v) for k, v in vars(args).items()}, "trials": trials}, indent=1))


if __name__ == "__main__":
    main()
