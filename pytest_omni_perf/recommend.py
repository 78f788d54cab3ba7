"""The guide's decision flowchart, answered from the run's measurements: the best profile
per budget. Pure: it reads serialized results (``PerfResult.to_dict()``).

Branches (seed-diffusion-perf-guide.txt, "Decision Flowchart"), per model and request:

- fastest lossless on one GPU ("CPU" in its name for a run without GPUs): profiles not
  marked lossy, spanning at most one GPU;
- fastest within the SSIM budget (``--omni-ssim-budget``, default 0.98): any one-GPU
  profile whose output's mean SSIM against its baseline profile's is at least the budget;
- lowest peak memory within the SSIM budget (the "OOM?" branch): the smallest peak memory
  ratio, if clearly below what profiles that hold the same measure: 0.95 or less for GPU
  memory (``MEMORY_SAVING``), 0.80 or less for a CPU run's RSS (``RSS_SAVING``);
- fastest on N GPUs, when profiles spanning several GPUs were measured;
- the combinations the guide suggests (FP8 + Cache-DiT, compile + Cache-DiT), where
  measured, beside the numbers of their parts alone.

"Faster" means the whole speedup interval lies above 1: a profile whose interval reaches 1
or below is never recommended as faster, however high its estimate, and neither is one
measured while the host was busy (``busy_host``: its interval can be wrong either way). The
memory ratio is one peak against another (no interval), so it is reported as measured.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from pytest_omni_perf.support import Measured, measured_of, model_of, ran_on_gpu


@dataclasses.dataclass(frozen=True)
class ProfileFacts:
    """What the flowchart needs to know of a profile besides its measurements."""

    lossy: bool
    gpus: int


@dataclasses.dataclass(frozen=True)
class Recommendation:
    """One branch's answer: the chosen profile (None: none qualifies) and why."""

    model: str
    label: str
    branch: str
    profile: str | None
    text: str

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def faster(m: Measured) -> bool:
    """The speedup interval lies wholly above 1."""
    return m.low is not None and m.low > 1.0


def numbers(profile: str, baseline: str, m: Measured) -> str:
    """``cache_dit 1.42x [1.31-1.50] vs eager, SSIM 0.9876, peak memory 0.97x``."""
    parts = [f"{profile} {m.speedup_text()} vs {baseline}"]
    if m.ssim is not None:
        parts.append(f"SSIM {m.ssim:.4f}")
    if m.memory_ratio is not None:
        parts.append(f"peak memory {m.memory_ratio:.2f}x")
    if m.verdict and m.verdict != "pass":
        parts.append(f"verdict {m.verdict}")
    return ", ".join(parts)


MEMORY_SAVING = 0.95
"""A GPU memory ratio (NVML, or the engine's allocator) counts as a saving at or below
this: one peak against another has no interval, and on GPUs profiles that hold what their
baseline holds measure 0.98-1.02 (cache_dit 0.997-1.017 in the committed H100 and H200
runs)."""
RSS_SAVING = 0.80
"""A CPU run's peak RSS ratio counts as a saving at or below this. RSS of two separate
engine processes moves far more than VRAM: in the committed CPU runs (results/cpu/), profiles
that hold what their baseline holds read 0.88-1.15x of its peak (fewer_steps in an engine of
its own 0.88-1.15x, vae_slicing on a batch of one 0.97-1.11x, cache_dit 0.89-1.08x), on
quiet runs (suite-launch/: 0.89-1.15x) as on busy ones. A newcomer's main job beside CI was
offered cache_dit as "lowest peak memory" at 0.89x and 0.94x: inside that spread."""
RSS_NOISE = "0.88-1.15x"
"""The spread of RSS_SAVING's docstring, as the recommendation says it."""

COMBINATIONS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("fp8_cachedit", ("fp8", "cache_dit")), ("compile_cachedit", ("compile", "cache_dit")))
"""The pairs the guide's tips suggest, shown beside their parts where measured."""

Candidate = tuple[str, str, Measured]
"""(profile, its baseline profile, its measurement)."""


def _fastest(branch: str, model: str, label: str, pool: Sequence[Candidate]
             ) -> Recommendation:
    winners = [c for c in pool if faster(c[2]) and not c[2].busy_host]
    if winners:
        best = max(winners, key=lambda c: c[2].speedup or 0.0)
        return Recommendation(model, label, branch, best[0], numbers(*best))
    if not pool:
        return Recommendation(model, label, branch, None, "none measured")
    # A newcomer's busy run recommended fewer_steps at 2.91x [1.48-7.76] from an
    # inconclusive result: a busy host's interval is no evidence either way.
    busy = [c for c in pool if faster(c[2])]
    if busy:
        shown = "; ".join(f"{numbers(*c)} ({c[2].busy_host})" for c in busy[:3])
        return Recommendation(model, label, branch, None, (
            f"none: the faster-looking ones were measured while the host was busy ({shown}); "
            "run them on a quiet host"))
    shown = "; ".join(numbers(*c) for c in sorted(pool, key=lambda c: -(c[2].speedup or 0))[:3])
    return Recommendation(model, label, branch, None,
                          f"none: no speedup interval lies wholly above 1 ({shown})")


def saving_limit(kind: str) -> float:
    """The highest peak memory ratio that counts as a saving for a peak of ``kind``
    (``measure.memory.MemoryKind``: ``rss`` on CPU runs)."""
    return RSS_SAVING if kind == "rss" else MEMORY_SAVING


def _lowest_memory(branch: str, model: str, label: str, pool: Sequence[Candidate]
                   ) -> Recommendation:
    """The smallest memory ratio clearly below its baseline's, or why there is none."""
    measured = [c for c in pool if c[2].memory_ratio is not None]
    smaller = [c for c in measured
               if (c[2].memory_ratio or 0.0) <= saving_limit(c[2].memory_kind)]
    if smaller:
        best = min(smaller, key=lambda c: c[2].memory_ratio or 0.0)
        return Recommendation(model, label, branch, best[0], numbers(*best))
    rss = [c for c in measured if c[2].memory_kind == "rss"]
    if not rss:
        return Recommendation(model, label, branch, None, f"none measured "
                              f"{1 - MEMORY_SAVING:.0%} or more below its baseline's peak")
    lowest = min(rss, key=lambda c: c[2].memory_ratio or 0.0)
    return Recommendation(model, label, branch, None, (
        f"none: on CPU the peak is the RSS of separate engine processes, which reads "
        f"{RSS_NOISE} of the baseline's for profiles that hold the same, and none measured "
        f"{RSS_SAVING:.2f}x or below (lowest: {lowest[0]} {lowest[2].memory_ratio:.2f}x)"))


def recommend(results: Sequence[Mapping[str, Any]], facts: Callable[[str], ProfileFacts | None],
              ssim_budget: float) -> list[Recommendation]:
    """The flowchart's answers for every (model, request label) of the run, in order."""
    groups: dict[tuple[str, str], list[Candidate]] = {}
    on_gpu: set[tuple[str, str]] = set()
    for result in results:
        base = result.get("baseline")
        if not base:
            continue  # a reference profile: nothing to compare
        key = (model_of(result), str(result.get("label") or ""))
        groups.setdefault(key, []).append(
            (str(result["profile"]), str(base.get("profile", "?")), measured_of(result)))
        if ran_on_gpu(result):
            on_gpu.add(key)
    out: list[Recommendation] = []
    for (model, label), pool in groups.items():
        def known(c: Candidate) -> ProfileFacts:
            return facts(c[0]) or ProfileFacts(lossy=True, gpus=1)

        def within(c: Candidate) -> bool:
            return c[2].ssim is not None and c[2].ssim >= ssim_budget

        one_gpu = [c for c in pool if known(c).gpus <= 1]
        # A CPU run's answers say so: a newcomer read "1 GPU" on a machine without one.
        where = "1 GPU" if (model, label) in on_gpu else "CPU"
        out.append(_fastest(f"fastest lossless, {where}", model, label,
                            [c for c in one_gpu if not known(c).lossy]))
        out.append(_fastest(f"fastest with SSIM >= {ssim_budget:g}, {where}", model, label,
                            [c for c in one_gpu if within(c)]))
        out.append(_lowest_memory(f"lowest peak memory, SSIM >= {ssim_budget:g}", model,
                                  label, [c for c in pool if within(c)]))
        by_name = {c[0]: c for c in pool}
        for combo, parts in COMBINATIONS:
            if combo in by_name:
                shown = "; ".join(numbers(*by_name[p]) for p in parts if p in by_name)
                out.append(Recommendation(
                    model, label, f"combination {combo} (guide: {' + '.join(parts)})", combo,
                    numbers(*by_name[combo]) + (f" (alone: {shown})" if shown else "")))
        gpus = max((known(c).gpus for c in pool), default=1)
        if gpus > 1:
            out.append(_fastest(f"fastest on {gpus} GPUs, SSIM >= {ssim_budget:g}", model,
                                label, [c for c in pool if known(c).gpus > 1 and within(c)]))
    return out


def recommendation_lines(recs: Sequence[Recommendation]) -> list[str]:
    """Terminal lines: ``tiny-flux [short] fastest lossless, 1 GPU: compile 1.21x ...``."""
    return [f"{r.model}{f' [{r.label}]' if r.label else ''} {r.branch}: {r.text}"
            for r in recs]
