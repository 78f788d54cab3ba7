"""Does measuring fewer_steps in eager's engine give the numbers separate engines give?

    python benchmarks/engine_sharing.py [--trials 40] [--rounds 10] [--model tiny-flux] \
        [--width 64 --height 64 --steps 4] [--max-minutes 20] \
        [--out results/cpu/engine-sharing/sharing.txt]

Two real diffusers engines of one model with the eager options run in their own worker
processes, as the plugin starts them (``detection_power.start_eager_engines``). Each trial
measures the speedup of ``fewer_steps`` (half the steps, ``profiles.toml``) over eager the
way the harness does: a warmup request each, then ``--rounds`` rounds alternating eager and
fewer_steps, and the plugin's estimate and paired 95% bootstrap interval
(``measure.stats.speedup_interval``, Harrell-Davis 20% quantile ratio). "separate" trials
send fewer_steps to the second engine (``--omni-separate-engines``); "shared" trials send it
to eager's own engine (the default since engines of equal options are shared). The two
kinds alternate trial by trial so that load changes hit both alike; both engines are
restarted every ``--restart-every`` trials. Printed side by side: the median speedup, its
spread over trials and the interval widths. Not a test: the numbers depend on the load.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from detection_power import rounds_on, start_eager_engines, write_results  # noqa: E402

from pytest_omni_perf.engines.base import GenerationRequest  # noqa: E402
from pytest_omni_perf.harness import profile_request  # noqa: E402
from pytest_omni_perf.measure.stats import speedup_interval  # noqa: E402
from pytest_omni_perf.profiles import load_builtin  # noqa: E402


@dataclasses.dataclass
class Trial:
    kind: str  # "shared" | "separate"
    eager: list[float]
    fewer: list[float]
    speedup: float
    low: float
    high: float


def run_trial(kind: str, engines: list[Any], request: GenerationRequest, rounds: int
              ) -> Trial:
    profiles = load_builtin()
    eager, fewer = profiles["eager"], profiles["fewer_steps"]
    chosen = [engines[0], engines[0] if kind == "shared" else engines[1]]
    runs = [rounds_on(engine, profile, profile_request(request, profile))
            for profile, engine in zip((eager, fewer), chosen)]
    for run in runs:
        run.send()  # warmup, as --omni-warmup=1
    for _ in range(rounds):
        for run in runs:
            run.one()
    interval = speedup_interval(runs[0].samples, runs[1].samples, paired=True)
    return Trial(kind, runs[0].samples, runs[1].samples, interval.estimate, interval.low,
                 interval.high)


def report(trials: list[Trial], header: str) -> str:
    lines = [header, "", f"  {'kind':<9} {'trials':>6}  {'median speedup':>14}  "
             f"{'stdev':>6}  {'min':>6}  {'max':>6}  {'median CI width':>15}"]
    for kind in ("shared", "separate"):
        chosen = [t for t in trials if t.kind == kind]
        if len(chosen) < 2:
            continue
        values = [t.speedup for t in chosen]
        widths = [t.high - t.low for t in chosen]
        lines.append(f"  {kind:<9} {len(chosen):>6}  {statistics.median(values):>14.3f}  "
                     f"{statistics.stdev(values):>6.3f}  {min(values):>6.3f}  "
                     f"{max(values):>6.3f}  {statistics.median(widths):>15.3f}")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--trials", type=int, default=40, help="of each kind")
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--model", default="tiny-flux")
    parser.add_argument("--width", type=int, default=64)
    parser.add_argument("--height", type=int, default=64)
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--restart-every", type=int, default=10)
    parser.add_argument("--max-minutes", type=float, default=20.0)
    parser.add_argument("--cache-dir", default=os.environ.get("OMNI_PERF_CACHE_DIR", ""))
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    request = GenerationRequest(width=args.width, height=args.height,
                                num_inference_steps=args.steps)
    order = ["shared", "separate"] * args.trials
    trials: list[Trial] = []
    began = time.perf_counter()
    engines = start_eager_engines(args)
    try:
        for i, kind in enumerate(order):
            if time.perf_counter() - began > 60 * args.max_minutes:
                print(f"time budget reached after {i} trials", file=sys.stderr)
                break
            if i and i % (2 * args.restart_every) == 0:
                for engine in engines:
                    engine.stop()
                engines = start_eager_engines(args)
            trials.append(run_trial(kind, engines, request, args.rounds))
    finally:
        for engine in engines:
            engine.stop()
    header = (
        f"fewer_steps vs eager on {args.model} {args.width}x{args.height} {args.steps} steps "
        f"(fewer_steps: {args.steps // 2}), {args.rounds} rounds per trial after 1 warmup; "
        f"speedup = hd20 ratio with its paired 95% bootstrap interval; shared = both in one "
        f"engine process, separate = one engine each; trials alternate; engines restarted "
        f"every {args.restart_every} trial pairs; {time.perf_counter() - began:.0f} s in all; "
        f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f} at the end")
    text = report(trials, header)
    print(text)
    if args.out:
        write_results(args.out, text, args, trials)


if __name__ == "__main__":
    main()
