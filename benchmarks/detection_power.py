"""Detection power and false-alarm rate of the plugin's latency verdict, on a real engine.

    python benchmarks/detection_power.py [--same 300 --slow 150] [--model tiny-flux] \
        [--width 64 --height 64 --steps 4] [--restart-every 20] [--max-minutes 40] \
        [--out results/cpu/detection-power-intervals.txt]

Two real diffusers engines of one model run in their own worker processes, as the plugin
runs them: a reference engine and a "candidate" engine. In a "slow" trial every candidate
request is followed by a sleep of 0.10 x the time the request itself took, so the candidate
is exactly 10% slower while keeping the engine's own noise; in a "same" trial nothing
changes. Each trial does what the harness does for one measurement: warmup, then rounds of
the two engines alternating (timed by the harness's own ``_Rounds``), a look at the gate
after the harness's schedule (``harness.RoundBudget``: 5, 10, 15, 22, 30 rounds), and a stop
as soon as the gate is decided. The gate is the plugin's: the Harrell-Davis 20% quantile
ratio candidate/reference with its paired 95% bootstrap interval
(``measure.stats.speedup_interval``) against the default tolerance (``Bounds().max_regression``,
5%) through ``judge.at_most``: "fail" = detected, "pass" = cleared, "undecided" at 30 rounds
= inconclusive. Trials interleave two "same" for each "slow" (false alarms need more trials
to bound), and both engines are restarted every ``--restart-every`` trials so that
differences between two starts of one configuration are part of the noise. Rates carry
Wilson 95% intervals. Not a test: the numbers depend on the machine's load.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from pytest_omni_perf.engines.base import (  # noqa: E402
    EngineSpec, GenerationOutput, GenerationRequest,
)
from pytest_omni_perf.engines.engine_pool import LiveEngine  # noqa: E402
from pytest_omni_perf.harness import RoundBudget, _Rounds, adaptive_rounds  # noqa: E402
from pytest_omni_perf.judge import at_most  # noqa: E402
from pytest_omni_perf.measure.memory import sampler_for  # noqa: E402
from pytest_omni_perf.measure.stats import RatioInterval, speedup_interval  # noqa: E402
from pytest_omni_perf.profiles import Bounds, Profile, load_builtin  # noqa: E402


class Slowed:
    """A real engine whose requests take ``1 + factor`` times as long when ``slow`` is set."""

    def __init__(self, engine: Any, factor: float) -> None:
        self.engine = engine
        self.spec = engine.spec
        self.factor = factor
        self.slow = False

    def generate(self, request: GenerationRequest) -> GenerationOutput:
        began = time.perf_counter()
        output: GenerationOutput = self.engine.generate(request)
        if self.slow:
            time.sleep(self.factor * (time.perf_counter() - began))
        return output

    def start(self) -> None:
        self.engine.start()

    def stop(self) -> None:
        self.engine.stop()

    def describe(self) -> Any:
        return self.engine.describe()

    def pids(self) -> list[int]:
        return list(self.engine.pids())


def wilson(k: int, n: int, z: float = 1.96) -> tuple[float, float]:
    if n == 0:
        return (0.0, 1.0)
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


@dataclasses.dataclass
class Trial:
    kind: str  # "slow" | "same"
    reference: list[float]
    candidate: list[float]
    outcome: str  # "fail" (detected) | "pass" | "undecided" (inconclusive at the budget)
    ratio: float
    low: float
    high: float
    seconds: float


def start_eager_engines(args: argparse.Namespace) -> list[Any]:
    """Two started diffusers engines of ``args.model`` with the eager profile, each in its
    own worker process: "reference" and "candidate" (also used by cpu_pinning.py)."""
    from pytest_omni_perf.engines import diffusers_engine
    from pytest_omni_perf.hardware import probe

    hw = probe()
    options = load_builtin()["eager"].options
    engines = []
    for name in ("reference", "candidate"):
        spec = EngineSpec(model=args.model, profile_name=f"eager-{name}", options=options,
                          backend="diffusers", cache_dir=args.cache_dir)
        engine = diffusers_engine.create(spec, hw)
        engine.start()
        engines.append(engine)
    return engines


def start_pair(args: argparse.Namespace) -> tuple[Any, Slowed]:
    reference, candidate = start_eager_engines(args)
    return reference, Slowed(candidate, args.slowdown)


def rounds_on(engine: Any, profile: Profile, request: GenerationRequest) -> _Rounds:
    """The harness's round series of ``profile`` on a started ``engine`` (also used by
    engine_sharing.py)."""
    live = LiveEngine(engine=engine, key=(engine.spec.model, engine.spec.profile_name,
                                          "diffusers", ()), start_s=0.0)
    return _Rounds(profile, engine.spec, request, live, True, sampler_for(live.pids, []))


def write_results(out: Path, text: str, args: argparse.Namespace, trials: list[Any]) -> None:
    """The table at ``out`` and, beside it as .json, the arguments and every trial."""
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text + "\n")
    out.with_suffix(".json").write_text(json.dumps(
        {"args": {k: str(v) for k, v in vars(args).items()},
         "trials": [dataclasses.asdict(t) for t in trials]}, indent=1))


def run_trial(kind: str, reference: Any, candidate: Slowed, request: GenerationRequest,
              budget: RoundBudget, warmup: int, tolerance: float) -> Trial:
    profile = load_builtin()["eager"]
    runs = [rounds_on(engine, profile, request) for engine in (reference, candidate)]
    candidate.slow = kind == "slow"
    for run in runs:
        for _ in range(warmup):
            run.send()
    began = time.perf_counter()
    judged: list[tuple[str, RatioInterval]] = []  # the last look's outcome and interval

    def open_gates(rounds: list[_Rounds]) -> str:
        # candidate/reference: the speedup of the reference over the candidate.
        interval = speedup_interval(rounds[1].samples, rounds[0].samples, paired=True,
                                    confidence=budget.confidence)
        judged.append((at_most(interval, 1.0 + tolerance), interval))
        return "open" if judged[-1][0] == "undecided" else "decided"

    adaptive_rounds(runs, open_gates, budget)
    outcome, interval = judged[-1]
    return Trial(kind, runs[0].samples, runs[1].samples, outcome, interval.estimate,
                 interval.low, interval.high, time.perf_counter() - began)


def report(trials: list[Trial], header: str) -> str:
    lines = [header, "", f"  {'kind':<5} {'trials':>6}  {'FAIL (detected)':>26}  "
             f"{'PASS':>7}  {'INCONCLUSIVE':>12}  {'mean rounds':>11}  {'s/trial':>7}"]
    for kind in ("slow", "same"):
        chosen = [t for t in trials if t.kind == kind]
        if not chosen:
            continue
        k = sum(t.outcome == "fail" for t in chosen)
        lo, hi = wilson(k, len(chosen))
        lines.append(
            f"  {kind:<5} {len(chosen):>6}  {k:4d} {k / len(chosen):6.1%} [{lo:5.1%}, {hi:5.1%}]"
            f"  {sum(t.outcome == 'pass' for t in chosen):>7}"
            f"  {sum(t.outcome == 'undecided' for t in chosen):>12}"
            f"  {statistics.fmean(len(t.reference) for t in chosen):>11.1f}"
            f"  {statistics.fmean(t.seconds for t in chosen):>7.2f}")
    for kind in ("slow", "same"):
        values = [t.ratio for t in trials if t.kind == kind]
        if len(values) >= 2:
            lines.append(f"\nhd20 ratio candidate/reference at the last look, {kind} trials: "
                         f"median {statistics.median(values):.3f}, min {min(values):.3f}, "
                         f"max {max(values):.3f}, stdev {statistics.stdev(values):.3f}")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--same", type=int, default=300, help="unchanged trials")
    parser.add_argument("--slow", type=int, default=150, help="10%%-slower trials")
    parser.add_argument("--warmup", type=int, default=1, help="default: --omni-warmup's")
    parser.add_argument("--slowdown", type=float, default=0.10)
    parser.add_argument("--model", default="tiny-flux")
    parser.add_argument("--width", type=int, default=64)
    parser.add_argument("--height", type=int, default=64)
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--restart-every", type=int, default=20)
    parser.add_argument("--max-minutes", type=float, default=40.0,
                        help="stop starting trials after this long and report what ran")
    parser.add_argument("--cache-dir", default=os.environ.get("OMNI_PERF_CACHE_DIR", ""))
    parser.add_argument("--out", type=Path, help="also write the table here (and .json beside)")
    args = parser.parse_args()
    request = GenerationRequest(width=args.width, height=args.height,
                                num_inference_steps=args.steps)
    tolerance = Bounds().max_regression or 0.0
    budget = RoundBudget()
    # The two kinds spread evenly over the run, so load changes hit both alike.
    order = [kind for _, kind in sorted(
        [((i + 0.5) / args.slow, "slow") for i in range(args.slow)]
        + [((i + 0.5) / args.same, "same") for i in range(args.same)])]
    trials: list[Trial] = []
    began = time.perf_counter()
    reference, candidate = start_pair(args)
    try:
        for i, kind in enumerate(order):
            if time.perf_counter() - began > 60 * args.max_minutes:
                print(f"time budget reached after {i} trials", file=sys.stderr)
                break
            if i and i % args.restart_every == 0:
                reference.stop()
                candidate.stop()
                reference, candidate = start_pair(args)
            trials.append(run_trial(kind, reference, candidate, request, budget, args.warmup,
                                    tolerance))
            if (i + 1) % 25 == 0:
                print(f"{i + 1} trials, {time.perf_counter() - began:.0f} s", file=sys.stderr)
    finally:
        reference.stop()
        candidate.stop()
    elapsed = time.perf_counter() - began
    all_ref = [s for t in trials for s in t.reference]
    header = (
        f"{args.model} {args.width}x{args.height} {args.steps} steps, reference median "
        f"{statistics.median(all_ref) * 1000:.0f} ms; candidate {args.slowdown:.0%} slower in "
        f"'slow' trials; gate: hd20 ratio's paired {budget.confidence:.0%} interval against "
        f"+{tolerance:.0%}, looks at {budget.first} rounds and on up to {budget.max_rounds}; "
        f"warmup {args.warmup}; engines restarted every {args.restart_every} trials; "
        f"{elapsed:.0f} s in all; {os.cpu_count()} CPUs, load average "
        f"{os.getloadavg()[0]:.1f} at the end")
    text = report(trials, header)
    print(text)
    if args.out:
        write_results(args.out, text, args, trials)


if __name__ == "__main__":
    main()
