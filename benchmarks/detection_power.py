"""Detection power and false-alarm rate of the latency-regression decision, on a real engine.

    python benchmarks/detection_power.py [--trials 60] [--rounds 3,5,8,10,15] \
        [--width 64 --height 64 --steps 4] [--restart-every 10] [--max-minutes 9] \
        [--out results/cpu/detection-power.txt]

Two real diffusers engines of the built-in tiny model run in their own worker processes,
as the plugin runs them: a reference engine and a "candidate" engine. In a "slow" trial
every candidate request is followed by a sleep of 0.10 x the time the request itself took,
so the candidate is exactly 10% slower while keeping the engine's own noise; in a "same"
trial nothing changes. Trials of the two kinds alternate, so machine load hits both alike.
Each trial runs the default warmup on each engine, then the largest round count with the
two engines' rounds alternating (the harness's interleaving, timed by the harness's own
``_Rounds``), and every rule is applied to the first r rounds for each r asked for:

- the plugin's decision, ``measure.stats.latency_regression`` (median ratio over the
  tolerance and one-sided Mann-Whitney p < alpha), at its default tolerance
  (``Bounds().max_regression``) and at smaller ones, for the tuning table;
- "mean regressed by > 5%", pytest-benchmark's ``--benchmark-compare-fail=mean:5%``;
- a paired rule for comparison: median of the per-round ratios over the tolerance and an
  exact one-sided sign test, possible because the harness interleaves rounds.

Both engines are restarted every ``--restart-every`` trials so that differences between
two starts of one configuration (memory layout, thread placement) are part of the noise.
Rates carry Wilson 95% intervals. Not a test: the numbers depend on the machine's load.
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
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from pytest_omni_perf.engines.base import (  # noqa: E402
    EngineSpec, GenerationOutput, GenerationRequest,
)
from pytest_omni_perf.engines.pool import LiveEngine  # noqa: E402
from pytest_omni_perf.harness import _Rounds  # noqa: E402
from pytest_omni_perf.measure.memory import sampler_for  # noqa: E402
from pytest_omni_perf.measure.stats import latency_regression  # noqa: E402
from pytest_omni_perf.profiles import Bounds, load_builtin  # noqa: E402

Rule = Callable[[Sequence[float], Sequence[float]], bool]


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


def sign_test_greater(diffs: Sequence[float]) -> float:
    """Exact one-sided sign-test p-value that the paired differences are positive."""
    nonzero = [d for d in diffs if d != 0]
    n, k = len(nonzero), sum(d > 0 for d in nonzero)
    if n == 0:
        return 1.0
    return float(sum(math.comb(n, i) for i in range(k, n + 1)) / 2**n)


def rules(default_tol: float) -> dict[str, Rule]:
    def plugin(tol: float, alpha: float) -> Rule:
        return lambda cur, ref: latency_regression(cur, ref, tolerance=tol, alpha=alpha).regressed

    def paired(tol: float, alpha: float) -> Rule:
        def decide(cur: Sequence[float], ref: Sequence[float]) -> bool:
            ratios = [c / r for c, r in zip(cur, ref)]
            return statistics.median(ratios) > 1 + tol and \
                sign_test_greater([x - 1 for x in ratios]) < alpha
        return decide

    found: dict[str, Rule] = {
        f"plugin default (median>+{default_tol:.0%}, MW p<0.05)": plugin(default_tol, 0.05),
        "plugin, tolerance 5% (median>+5%, MW p<0.05)": plugin(0.05, 0.05),
        "plugin, tolerance 3% (median>+3%, MW p<0.05)": plugin(0.03, 0.05),
        "plugin, tolerance 5%, MW p<0.01": plugin(0.05, 0.01),
        "mean > +5% (pytest-benchmark compare-fail)":
            lambda cur, ref: statistics.fmean(cur) > 1.05 * statistics.fmean(ref),
        "paired: median ratio>+5%, sign test p<0.05": paired(0.05, 0.05),
    }
    return found


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


def start_pair(args: argparse.Namespace) -> tuple[Any, Slowed]:
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
    return engines[0], Slowed(engines[1], args.slowdown)


def run_trial(kind: str, reference: Any, candidate: Slowed, request: GenerationRequest,
              rounds: int, warmup: int) -> Trial:
    profile = load_builtin()["eager"]
    runs = []
    for engine in (reference, candidate):
        live = LiveEngine(engine=engine, key=(engine.spec.model, engine.spec.profile_name,
                                              "diffusers", ()), start_s=0.0)
        runs.append(_Rounds(profile, engine.spec, request, live, True,
                            sampler_for(live.pids, [])))
    candidate.slow = kind == "slow"
    for run in runs:
        for _ in range(warmup):
            run.send()
    for run in runs:
        run.sampler.start()
    try:
        for _ in range(rounds):
            for run in runs:
                run.one()
    finally:
        for run in runs:
            run.sampler.stop()
    return Trial(kind, runs[0].samples, runs[1].samples)


def report(trials: list[Trial], round_counts: list[int], default_tol: float,
           header: str) -> str:
    lines = [header]
    for name, rule in rules(default_tol).items():
        lines.append(f"\n{name}")
        lines.append(f"  {'rounds':>6}  {'detected (10% slower)':>30}  {'false alarms (same)':>30}")
        for r in round_counts:
            cells = []
            for kind in ("slow", "same"):
                chosen = [t for t in trials if t.kind == kind]
                k = sum(rule(t.candidate[:r], t.reference[:r]) for t in chosen)
                lo, hi = wilson(k, len(chosen))
                cells.append(f"{k:3d}/{len(chosen):<3d} {k / max(1, len(chosen)):6.1%} "
                             f"[{lo:5.1%}, {hi:5.1%}]")
            lines.append(f"  {r:>6}  {cells[0]:>30}  {cells[1]:>30}")
    ratios = {kind: [statistics.median(t.candidate) / statistics.median(t.reference)
                     for t in trials if t.kind == kind] for kind in ("slow", "same")}
    for kind, values in ratios.items():
        if len(values) >= 2:
            lines.append(f"\nmedian ratio candidate/reference over all rounds, {kind} trials: "
                         f"median {statistics.median(values):.3f}, min {min(values):.3f}, "
                         f"max {max(values):.3f}, stdev {statistics.stdev(values):.3f}")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--trials", type=int, default=60, help="trials of each kind")
    parser.add_argument("--rounds", default="3,5,8,10,15")
    parser.add_argument("--warmup", type=int, default=1, help="default: --omni-warmup's")
    parser.add_argument("--slowdown", type=float, default=0.10)
    parser.add_argument("--model", default="tiny-flux")
    parser.add_argument("--width", type=int, default=64)
    parser.add_argument("--height", type=int, default=64)
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--restart-every", type=int, default=10)
    parser.add_argument("--max-minutes", type=float, default=9.0,
                        help="stop starting trials after this long and report what ran")
    parser.add_argument("--cache-dir", default=os.environ.get("OMNI_PERF_CACHE_DIR", ""))
    parser.add_argument("--out", type=Path, help="also write the table here (and .json beside)")
    args = parser.parse_args()
    round_counts = sorted({int(r) for r in args.rounds.split(",")})
    request = GenerationRequest(width=args.width, height=args.height,
                                num_inference_steps=args.steps)
    default_tol = Bounds().max_regression or 0.0
    trials: list[Trial] = []
    began = time.perf_counter()
    reference, candidate = start_pair(args)
    try:
        for i in range(2 * args.trials):
            if i % 2 == 0 and time.perf_counter() - began > 60 * args.max_minutes:
                print(f"time budget reached after {i} trials", file=sys.stderr)
                break
            if i and i % (2 * args.restart_every) == 0:
                reference.stop()
                candidate.stop()
                reference, candidate = start_pair(args)
            trials.append(run_trial("slow" if i % 2 == 0 else "same", reference, candidate,
                                    request, max(round_counts), args.warmup))
            if (i + 1) % 10 == 0:
                print(f"{i + 1} trials, {time.perf_counter() - began:.0f} s", file=sys.stderr)
    finally:
        reference.stop()
        candidate.stop()
    elapsed = time.perf_counter() - began
    all_ref = [s for t in trials for s in t.reference]
    header = (
        f"{args.model} {args.width}x{args.height} {args.steps} steps, reference median "
        f"{statistics.median(all_ref) * 1000:.0f} ms; {len(trials) // 2} trials per kind "
        f"(alternating), warmup {args.warmup}, candidate {args.slowdown:.0%} slower in 'slow' "
        f"trials; engines restarted every {args.restart_every} trial pairs; {elapsed:.0f} s "
        f"in all; {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f} at the end")
    text = report(trials, round_counts, default_tol, header)
    print(text)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n")
        args.out.with_suffix(".json").write_text(json.dumps(
            {"args": {k: str(v) for k, v in vars(args).items()},
             "trials": [dataclasses.asdict(t) for t in trials]}, indent=1))


if __name__ == "__main__":
    main()
