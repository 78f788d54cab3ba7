"""Which latency estimator should the gates use?  A pure analysis of the committed samples.

    python benchmarks/estimator_choice.py [--sims 1000] [--resamples 1000] [--seed 0] \
        [--out results/estimators/estimator-choice]

Issue 16 item 1: choose, by measurement, a location estimate of warm latencies that additive
interference (a slow regime of the host that comes and goes within seconds) cannot move,
and the confidence level and look schedule of the bootstrap interval that the verdicts use.
No engine runs and no GPU is needed: it reads only data already in the repository.

Data read (paths relative to the repository root):

- ``results/**/*.json``, JSON reports of the plugin: per result ``measurement.samples_s`` and,
  when ``measurement.interleaved_with`` is set, ``baseline.samples_s`` of the baseline profile
  (eager) measured in the same session with rounds alternating (baseline, candidate), so the
  i-th samples of the two arms form a pair. ``results/h100/repeat-runs/`` holds five
  unchanged runs on other H100 hosts and ``slowed.json``, the drill
  ``benchmarks/compile-silently-off.toml`` (a ``compile`` profile identical to eager);
  ``results/h200/`` and ``results/h100/medium-flux-image.json`` one run each.
- ``results/cpu/detection-power.json``: 252 trials of ``benchmarks/detection_power.py`` on
  the 2-core CPU machine, each 15 interleaved rounds of a reference and a candidate tiny-flux
  engine; the candidate is exactly 10% slower in the 'slow' trials and unchanged in 'same'.
- ``baselines/**/metrics.json`` (``samples_s``): stored baselines; those identical to a
  report's samples are counted once.

What it prints (and writes to ``<out>.txt`` and ``<out>.json``, atomically):

(a) A/A stability: the spread of a profile's ratio to eager across unchanged runs (H100
    hosts), the ratio of the no-op drill, and the ratio of the CPU 'same' trials.
(b) Sensitivity: separation of the CPU 'slow' from 'same' trials (d' and AUC), and how many
    standard deviations of the unchanged compile ratio the no-op drill lands from it.
(c) Bias with n: an estimate from the first k rounds against the one from all 15 (CPU arms)
    or 5 (GPU arms); rounds will be adaptive, so an estimator that drifts with n biases every
    comparison between measurements of different lengths (e.g. against a stored baseline).
(d) Bootstrap intervals (``scipy.stats.bootstrap``, paired, percentile) with adaptive looks:
    on the real CPU trials (looks 5, 10, 15), and on arms drawn from pooled A/A rounds (looks
    up to 30), the rate at which the interval excludes 1.0 (A/A) or lies above 1.0 / above the
    gate bound (10% slower), at 95% and 99%.
"""

from __future__ import annotations

import argparse
import dataclasses
import glob
import json
import math
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import TypedDict

import numpy as np
from scipy import stats
from scipy.stats import mstats

ROOT = Path(__file__).resolve().parents[1]
Arr = np.ndarray
GPU_BOUND = 1.05  # the regression tolerance the CPU detection benchmark found usable (5%)


@dataclasses.dataclass(frozen=True)
class Pair:
    """Candidate and baseline arms measured interleaved in one session (seconds)."""

    source: str
    host: str  # hardware key
    workload: str  # model and request size
    profile: str
    cand: Arr
    base: Arr
    noop: bool = False  # the candidate is identical to the baseline profile


# ---------------------------------------------------------------- estimators of one arm


def half_sample_mode(x: Arr) -> float:
    """Bickel & Fruehwirth's half-sample mode: repeatedly keep the densest half."""
    y = np.sort(np.asarray(x, dtype=float))
    while len(y) > 3:
        h = (len(y) + 1) // 2
        widths = y[h - 1:] - y[:len(y) - h + 1]
        i = int(np.argmin(widths))
        y = y[i:i + h]
    if len(y) == 3:  # the two closer points, or the middle one on a tie
        d1, d2 = y[1] - y[0], y[2] - y[1]
        return float(np.mean(y[:2]) if d1 < d2 else np.mean(y[1:]) if d2 < d1 else y[1])
    return float(np.mean(y))


def hd(q: float) -> Callable[[Arr], float]:
    return lambda x: float(mstats.hdquantiles(np.asarray(x, dtype=float), prob=[q])[0])


def pct(q: float) -> Callable[[Arr], float]:
    return lambda x: float(np.quantile(x, q))


ARM: dict[str, Callable[[Arr], float]] = {
    "min": lambda x: float(np.min(x)),
    "p10": pct(0.10), "p20": pct(0.20), "p25": pct(0.25),
    "hd10": hd(0.10), "hd20": hd(0.20), "hd25": hd(0.25),
    "median": lambda x: float(np.median(x)),
    "mean": lambda x: float(np.mean(x)),
    "hsm": half_sample_mode,
}
# Ratio estimators: arm estimator of candidate / of baseline, and quantiles of the paired ratios.
RATIO: dict[str, Callable[[Arr, Arr], float]] = {
    name: (lambda f: (lambda p, b: f(p) / f(b)))(f) for name, f in ARM.items()}
RATIO["pair-median"] = lambda p, b: float(np.median(p / b))
RATIO["pair-p25"] = lambda p, b: float(np.quantile(p / b, 0.25))
RATIO["pair-hsm"] = lambda p, b: half_sample_mode(p / b)



def hd_vec(x: Arr, q: float, axis: int = -1) -> Arr:
    """Harrell-Davis quantile along ``axis``: beta-weighted sum of the order statistics
    (the weights ``mstats.hdquantiles`` uses), vectorized so that the bootstrap can resample it."""
    n = x.shape[axis]
    edges = stats.beta.cdf(np.arange(n + 1) / n, q * (n + 1), (1 - q) * (n + 1))
    return np.tensordot(np.sort(x, axis=axis), np.diff(edges), axes=([axis], [0]))


# Vectorized versions (axis=-1) for scipy.stats.bootstrap; HD and HSM are too slow to resample.
VEC: dict[str, Callable[..., Arr | np.floating]] = {
    "min": lambda p, b, axis=-1: np.min(p, axis=axis) / np.min(b, axis=axis),
    "p10": lambda p, b, axis=-1: np.quantile(p, 0.1, axis=axis) / np.quantile(b, 0.1, axis=axis),
    "p20": lambda p, b, axis=-1: np.quantile(p, 0.2, axis=axis) / np.quantile(b, 0.2, axis=axis),
    "hd20": lambda p, b, axis=-1: hd_vec(p, 0.2, axis) / hd_vec(b, 0.2, axis),
    "median": lambda p, b, axis=-1: np.median(p, axis=axis) / np.median(b, axis=axis),
    "mean": lambda p, b, axis=-1: np.mean(p, axis=axis) / np.mean(b, axis=axis),
    "pair-median": lambda p, b, axis=-1: np.median(p / b, axis=axis),
}
# (pair-p25 is left out of the intervals: a low quantile of p_i/b_i is below 1 when nothing
# changed, by construction, see table (a); it estimates no location of the ratio.)


# ---------------------------------------------------------------- data


def load_pairs() -> list[Pair]:
    pairs = []
    for path in sorted(glob.glob(str(ROOT / "results" / "**" / "*.json"), recursive=True)):
        data = json.loads(Path(path).read_text())
        if not isinstance(data, dict) or "results" not in data:
            continue
        rel = os.path.relpath(path, ROOT)
        for r in data["results"]:
            m, b = r.get("measurement") or {}, r.get("baseline") or {}
            if not m.get("interleaved_with") or not b.get("samples_s"):
                continue
            q = m["request"]
            work = f"{m['model']} {q['width']}x{q['height']} {q['num_inference_steps']} steps" \
                   f"{' ' + str(q['num_frames']) + ' frames' if q.get('num_frames') else ''}" \
                   f" {m['backend']}"
            pairs.append(Pair(rel, data["hardware"]["key"], work, r["profile"],
                              np.array(m["samples_s"]), np.array(b["samples_s"]),
                              noop="slowed" in rel))
    return pairs


def load_cpu_trials() -> dict[str, list[tuple[Arr, Arr]]]:
    """(candidate, reference) per trial, by kind ('same' or 'slow')."""
    data = json.loads((ROOT / "results/cpu/detection-power.json").read_text())
    out: dict[str, list[tuple[Arr, Arr]]] = {"same": [], "slow": []}
    for t in data["trials"]:
        out[t["kind"]].append((np.array(t["candidate"]), np.array(t["reference"])))
    return out


def load_stored_arms(known: set[tuple[float, ...]]) -> list[Arr]:
    arms = []
    for path in sorted(glob.glob(str(ROOT / "baselines" / "**" / "metrics.json"), recursive=True)):
        s = tuple(json.loads(Path(path).read_text()).get("samples_s") or ())
        if len(s) >= 3 and s not in known:
            arms.append(np.array(s))
    return arms


# ---------------------------------------------------------------- analyses


def stability(pairs: list[Pair], cpu: dict[str, list[tuple[Arr, Arr]]]) -> dict[str, dict[str, float]]:
    """Per ratio estimator: spread over unchanged GPU runs, no-op drill, CPU 'same' trials."""
    groups: dict[tuple[str, str, str], list[Pair]] = {}
    for p in pairs:
        if not p.noop:
            groups.setdefault((p.host, p.workload, p.profile), []).append(p)
    groups = {k: v for k, v in groups.items() if len(v) >= 3}
    out = {}
    for name, f in RATIO.items():
        sds, spans = [], []
        for v in groups.values():
            logs = np.log([f(p.cand, p.base) for p in v])
            sds.append(np.std(logs, ddof=1))
            spans.append(math.exp(logs.max() - logs.min()))
        noop = [f(p.cand, p.base) for p in pairs if p.noop]
        same15 = np.log([f(c, r) for c, r in cpu["same"]])
        same5 = np.log([f(c[:5], r[:5]) for c, r in cpu["same"]])
        out[name] = {"gpu_sd_log": float(np.sqrt(np.mean(np.square(sds)))),
                     "gpu_max_span": float(max(spans)), "noop_ratio": float(noop[0]),
                     "cpu_same_sd_log_15": float(np.std(same15, ddof=1)),
                     "cpu_same_sd_log_5": float(np.std(same5, ddof=1)),
                     "cpu_same_p99_abs_15": float(np.expm1(np.quantile(np.abs(same15), 0.99))),
                     "cpu_same_median_15": float(np.exp(np.median(same15)))}
    out["_groups"] = {" | ".join(k): float(len(v)) for k, v in groups.items()}
    return out


def sensitivity(pairs: list[Pair], cpu: dict[str, list[tuple[Arr, Arr]]]) -> dict[str, dict[str, float]]:
    out = {}
    compile_runs = [p for p in pairs if p.profile == "compile" and not p.noop
                    and p.host.startswith("nvidia-h100") and "medium-flux 1024" in p.workload]
    drill = [p for p in pairs if p.noop][0]
    for name, f in RATIO.items():
        row = {}
        for n in (5, 15):
            slow = np.log([f(c[:n], r[:n]) for c, r in cpu["slow"]])
            same = np.log([f(c[:n], r[:n]) for c, r in cpu["same"]])
            pooled = math.sqrt((slow.var(ddof=1) + same.var(ddof=1)) / 2)
            row[f"cpu_dprime_{n}"] = float((slow.mean() - same.mean()) / pooled)
            u = stats.mannwhitneyu(slow, same).statistic
            row[f"cpu_auc_{n}"] = float(u / (len(slow) * len(same)))
            row[f"cpu_slow_ratio_{n}"] = float(np.exp(np.median(slow)))
        logs = np.log([f(p.cand, p.base) for p in compile_runs])
        row["drill_z"] = float((logs.mean() - math.log(f(drill.cand, drill.base)))
                               / logs.std(ddof=1))
        out[name] = row
    return out


def bias(cpu: dict[str, list[tuple[Arr, Arr]]], pairs: list[Pair],
         stored: list[Arr]) -> dict[str, dict[str, float]]:
    """Mean relative shift of an arm estimate from the first k rounds against all rounds."""
    cpu_arms = [a for kind in cpu.values() for t in kind for a in t]
    gpu_arms = [a for p in pairs for a in (p.cand, p.base) if len(a) == 5] + \
        [a for a in stored if len(a) == 5]
    out = {}
    for name, f in ARM.items():
        row = {}
        for k in (3, 5, 10):
            row[f"cpu_{k}_vs_15"] = float(np.mean([f(a[:k]) / f(a) - 1 for a in cpu_arms]))
        row["gpu_3_vs_5"] = float(np.mean([f(a[:3]) / f(a) - 1 for a in gpu_arms]))
        out[name] = row
    for name in ("pair-median", "pair-p25", "pair-hsm"):
        f2 = RATIO[name]
        row = {f"cpu_{k}_vs_15": float(np.mean([f2(c[:k], r[:k]) / f2(c, r) - 1
                                                for t in cpu.values() for c, r in t]))
               for k in (3, 5, 10)}
        row["gpu_3_vs_5"] = float(np.mean([f2(p.cand[:3], p.base[:3]) / f2(p.cand, p.base) - 1
                                           for p in pairs if len(p.cand) == 5]))
        out[name] = row
    return out


def intervals(p: Arr, b: Arr, name: str, resamples: int, seed: int,
              levels: tuple[float, ...]) -> dict[float, tuple[Arr, Arr]]:
    """Percentile bootstrap intervals of the ratio per row of (sims, n) arrays, per level."""
    res = stats.bootstrap((p, b), VEC[name], paired=True, vectorized=True, axis=-1,
                          n_resamples=resamples, method="percentile", batch=100,
                          random_state=seed)
    dist = res.bootstrap_distribution  # (sims, resamples)
    return {lv: (np.quantile(dist, (1 - lv) / 2, axis=-1), np.quantile(dist, (1 + lv) / 2, axis=-1))
            for lv in levels}


class Level(TypedDict):
    """Cumulative rates per look (fractions of the simulated comparisons) at one level."""

    by_look: list[dict[str, float]]
    mean_rounds: float


Sim = dict[str, dict[str, Level]]  # estimator -> confidence level -> rates


def simulate(p: Arr, b: Arr, looks: list[int], resamples: int, seed: int,
             levels: tuple[float, ...], bound: float) -> Sim:
    """Per estimator and level: rates at which the CI excludes 1 / lies above `bound` by look."""
    out: Sim = {}
    for name in VEC:
        per_look = {n: intervals(p[:, :n], b[:, :n], name, resamples, seed + n, levels)
                    for n in looks}
        for lv in levels:
            excl = np.zeros(len(p), bool)
            above1 = np.zeros(len(p), bool)
            fail = np.zeros(len(p), bool)
            passed = np.zeros(len(p), bool)
            decided = np.zeros(len(p), bool)
            first: list[int] = [looks[-1]] * len(p)
            cum: list[dict[str, float]] = []
            for n in looks:
                lo, hi = per_look[n][lv]
                excl |= (lo > 1) | (hi < 1)
                above1 |= lo > 1
                now = (lo > bound) | (hi < bound)
                fail |= (lo > bound) & ~decided
                passed |= (hi < bound) & ~decided
                for i in np.flatnonzero(now & ~decided):
                    first[i] = n
                decided |= now
                cum.append({"look": n, "excludes_1": float(excl.mean()),
                            "above_1": float(above1.mean()), "fails_bound": float(fail.mean()),
                            "passes_bound": float(passed.mean()),
                            "decided": float(decided.mean()),
                            "width": float(np.median(hi / lo - 1))})
            out.setdefault(name, {})[str(lv)] = {"by_look": cum,
                                                 "mean_rounds": float(np.mean(first))}
    return out


# ---------------------------------------------------------------- report


def pool_aa(cpu: dict[str, list[tuple[Arr, Arr]]], pairs: list[Pair]) -> dict[str, Arr]:
    """Rounds of unchanged code, each run normalized by its own median (so hosts pool)."""
    cpu_pool = np.concatenate([a / np.median(r) for c, r in cpu["same"] for a in (c, r)])
    gpu_arms = [p.base for p in pairs if p.host.startswith("nvidia") and len(p.base) >= 4]
    gpu_arms += [p.cand for p in pairs if p.noop]
    gpu_pool = np.concatenate([a / np.median(a) for a in gpu_arms])
    return {"cpu": cpu_pool, "gpu": gpu_pool}


def fmt_sim(title: str, sim: Sim, key: str, lines: list[str]) -> None:
    lines.append(title)
    for name, by_level in sim.items():
        for lv, d in by_level.items():
            cells = "  ".join(f"n{c['look']:.0f}:{c[key]:6.1%}" for c in d["by_look"])
            w = d["by_look"][-1]["width"]
            dec = d["by_look"][-1]["decided"]
            lines.append(f"  {name:12s} {float(lv):.0%}  {cells}  width@last {w:6.1%}  "
                         f"decided {dec:6.1%}  mean rounds {d['mean_rounds']:5.1f}")


def write_atomic(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name + ".")
    with os.fdopen(fd, "w") as fh:
        fh.write(text)
    os.chmod(tmp, 0o644)  # mkstemp's 0600 would hide the results from other readers
    os.replace(tmp, path)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sims", type=int, default=1000)
    ap.add_argument("--resamples", type=int, default=1000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default="results/estimators/estimator-choice")
    args = ap.parse_args()
    x = np.random.default_rng(1).lognormal(0, 0.2, (3, 15))
    assert np.allclose(hd_vec(x, 0.2), [hd(0.2)(row) for row in x]), "hd_vec != hdquantiles"
    pairs, cpu = load_pairs(), load_cpu_trials()
    stored = load_stored_arms({tuple(a) for p in pairs for a in (p.cand, p.base)})
    result: dict[str, object] = {"args": vars(args), "n_pairs": len(pairs),
                                 "n_cpu_trials": {k: len(v) for k, v in cpu.items()},
                                 "n_stored_arms": len(stored)}
    lines = [f"{len(pairs)} interleaved GPU/CPU report comparisons, "
             f"{len(cpu['same'])}+{len(cpu['slow'])} CPU detection trials (same+slow, 15 rounds), "
             f"{len(stored)} further stored arms"]

    st = stability(pairs, cpu)
    result["groups"] = st.pop("_groups")
    lines.append(f"\n(a) A/A stability. GPU groups (host | workload | profile: runs): {result['groups']}")
    lines.append(f"  {'estimator':12s} {'GPU sd log':>10} {'GPU max/min':>11} {'no-op drill':>11} "
                 f"{'CPU sd n5':>9} {'CPU sd n15':>10} {'CPU p99|r-1|':>12} {'CPU med':>7}")
    for n, r in st.items():
        lines.append(f"  {n:12s} {r['gpu_sd_log']:10.3f} {r['gpu_max_span']:11.3f} "
                     f"{r['noop_ratio']:11.3f} {r['cpu_same_sd_log_5']:9.3f} "
                     f"{r['cpu_same_sd_log_15']:10.3f} {r['cpu_same_p99_abs_15']:12.3f} "
                     f"{r['cpu_same_median_15']:7.3f}")
    result["stability"] = st

    se = sensitivity(pairs, cpu)
    lines.append("\n(b) Sensitivity: CPU slow (10%) vs same trials; drill z = sd of unchanged "
                 "H100 compile ratios between them and the no-op drill")
    lines.append(f"  {'estimator':12s} {'d-prime n5':>10} {'n15':>6} {'AUC n5':>7} {'n15':>6} "
                 f"{'slow ratio n15':>14} {'drill z':>8}")
    for n, r in se.items():
        lines.append(f"  {n:12s} {r['cpu_dprime_5']:10.2f} {r['cpu_dprime_15']:6.2f} "
                     f"{r['cpu_auc_5']:7.3f} {r['cpu_auc_15']:6.3f} {r['cpu_slow_ratio_15']:14.3f} "
                     f"{r['drill_z']:8.2f}")
    result["sensitivity"] = se

    bi = bias(cpu, pairs, stored)
    lines.append("\n(c) Bias with n: mean (estimate of first k rounds / estimate of all) - 1")
    lines.append(f"  {'estimator':12s} {'CPU k=3':>8} {'k=5':>7} {'k=10':>7} {'GPU 3 vs 5':>10}")
    for n, r in bi.items():
        lines.append(f"  {n:12s} {r['cpu_3_vs_15']:8.2%} {r['cpu_5_vs_15']:7.2%} "
                     f"{r['cpu_10_vs_15']:7.2%} {r['gpu_3_vs_5']:10.2%}")
    result["bias"] = bi

    levels = (0.95, 0.99)
    sims: dict[str, Sim] = {}
    # Real paired CPU trials, looks 5, 10, 15.
    for kind in ("same", "slow"):
        c = np.array([t[0] for t in cpu[kind]])
        ref = np.array([t[1] for t in cpu[kind]])
        sims[f"cpu-real-{kind}"] = simulate(c, ref, [5, 10, 15], args.resamples, args.seed,
                                            levels, GPU_BOUND)
    pools = pool_aa(cpu, pairs)
    rng = np.random.default_rng(args.seed)
    looks = [5, 10, 20, 30]
    for pname, pool in pools.items():
        b = rng.choice(pool, (args.sims, looks[-1]))
        c = rng.choice(pool, (args.sims, looks[-1]))
        sims[f"{pname}-pool-same"] = simulate(c, b, looks, args.resamples, args.seed, levels,
                                              GPU_BOUND)
        sims[f"{pname}-pool-slow"] = simulate(c * 1.10, b, looks, args.resamples, args.seed,
                                              levels, GPU_BOUND)
    result["pools"] = {k: {"n": len(v), "p99/p50": float(np.quantile(v, 0.99) / np.median(v))}
                       for k, v in pools.items()}
    lines.append(f"\n(d) Paired percentile bootstrap ({args.resamples} resamples), adaptive looks; "
                 f"cumulative over looks. Pools: {result['pools']}; bound for 'fails' = "
                 f"{GPU_BOUND} (regression tolerance 5%)")
    for key, sim in sims.items():
        if key.endswith("same"):
            fmt_sim(f"\n  {key}: CI excludes 1.0 at any look so far (A/A false alarm)",
                    sim, "excludes_1", lines)
            fmt_sim(f"  {key}: CI wholly above {GPU_BOUND} (false FAIL of a 5% gate)",
                    sim, "fails_bound", lines)
        else:
            fmt_sim(f"\n  {key}: CI wholly above 1.0 (10% slowdown detected)",
                    sim, "above_1", lines)
            fmt_sim(f"  {key}: CI wholly above {GPU_BOUND} (FAIL of a 5% gate)",
                    sim, "fails_bound", lines)
            fmt_sim(f"  {key}: CI wholly below {GPU_BOUND} (a 10% slowdown PASSES a 5% gate)",
                    sim, "passes_bound", lines)
    result["bootstrap"] = sims
    text = "\n".join(lines) + "\n"
    print(text)
    out = ROOT / args.out
    write_atomic(out.with_suffix(".txt"), text)
    write_atomic(out.with_suffix(".json"), json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
