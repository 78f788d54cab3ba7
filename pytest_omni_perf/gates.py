"""Bounds -> violations, as pure functions of numbers.

Each message names the metric, the measured value, the reference, the bound and what to do,
because it is read in a CI log by someone who did not write the test.
"""

from __future__ import annotations

import dataclasses

from pytest_omni_perf.measure.stats import RegressionVerdict
from pytest_omni_perf.profiles import Bounds
from pytest_omni_perf.results import Violation


@dataclasses.dataclass(frozen=True)
class SessionFacts:
    """Numbers measured in this session, profile against its baseline profile."""

    profile: str
    baseline: str | None
    speedup: float | None
    ssim: float | None
    ssim_worst: float | None
    memory_gib: float
    memory_ratio: float | None
    memory_is_vram: bool
    memory_unmeasured: str | None = None
    """Why GPU memory was not measured on a GPU run (VRAM bounds then refuse), or None."""


def session_gates(bounds: Bounds, facts: SessionFacts) -> tuple[list[Violation], list[str]]:
    """Speedup, SSIM against the baseline profile, and VRAM bounds (violations, notes)."""
    violations: list[Violation] = []
    notes: list[str] = []
    against = f"baseline profile {facts.baseline!r} measured in this session"
    if bounds.min_speedup is not None and facts.speedup is not None \
            and facts.speedup < bounds.min_speedup:
        violations.append(Violation("speedup", (
            f"{facts.profile} is {facts.speedup:.3f}x against {against}, below the bound "
            f"min_speedup={bounds.min_speedup:g}: the optimization does not pay off here")))
    if bounds.min_ssim is not None and facts.ssim is not None and facts.ssim < bounds.min_ssim:
        worst = "" if facts.ssim_worst in (None, facts.ssim) else \
            f" (worst frame {facts.ssim_worst:.4f})"
        violations.append(Violation("ssim", (
            f"output SSIM {facts.ssim:.4f}{worst} against the output of {against}, below the "
            f"bound min_ssim={bounds.min_ssim:g}: quality broke")))
    vram_bounds = bounds.max_vram_gib is not None or bounds.max_vram_ratio is not None
    if facts.memory_unmeasured is not None:
        if not vram_bounds:
            notes.append(f"peak VRAM not measured: {facts.memory_unmeasured}")
            return violations, notes
        # A 0 that measured nothing must not pass a bound: refuse, saying why.
        violations.append(Violation("vram", (
            f"VRAM bounds cannot be checked: {facts.memory_unmeasured}; run the container "
            "with --pid=host, or have the engine report torch_peak_bytes in engine_metrics")))
        return violations, notes
    if vram_bounds and not facts.memory_is_vram:
        notes.append("VRAM bounds not applied: CPU run (peak RSS is reported instead)")
        return violations, notes
    if bounds.max_vram_gib is not None and facts.memory_gib > bounds.max_vram_gib:
        violations.append(Violation("vram", (
            f"peak VRAM {facts.memory_gib:.2f} GiB is above the bound "
            f"max_vram_gib={bounds.max_vram_gib:g}")))
    if bounds.max_vram_ratio is not None and facts.memory_ratio is not None \
            and facts.memory_ratio > bounds.max_vram_ratio:
        violations.append(Violation("vram_ratio", (
            f"peak VRAM is {facts.memory_ratio:.3f}x that of {against}, above the bound "
            f"max_vram_ratio={bounds.max_vram_ratio:g}: the memory optimization does not save")))
    return violations, notes


@dataclasses.dataclass(frozen=True)
class StoredFacts:
    """This run against the stored baseline of the same test, profile and hardware."""

    stored_path: str
    ssim: float | None
    regression: RegressionVerdict | None
    relative_to: str | None
    """Baseline profile the latencies were divided by (None: absolute latencies)."""
    memory_gib: float
    stored_memory_gib: float | None
    strict: bool
    """False for the shared 'cpu' key: CPU machines differ, so timing and memory only warn."""
    refresh_command: str


def stored_gates(bounds: Bounds, facts: StoredFacts) -> tuple[list[Violation], list[str]]:
    """SSIM against the stored image, latency and memory regressions (violations, notes)."""
    violations: list[Violation] = []
    notes: list[str] = []
    refresh = f"if the change is intended, refresh it with: {facts.refresh_command}"
    if bounds.min_ssim is not None and facts.ssim is not None and facts.ssim < bounds.min_ssim:
        violations.append(Violation("stored_ssim", (
            f"output SSIM {facts.ssim:.4f} against the stored baseline image in "
            f"{facts.stored_path} is below min_ssim={bounds.min_ssim:g}; {refresh}")))
    verdict = facts.regression
    if bounds.max_regression is not None and verdict is not None and verdict.regressed:
        what = "warm median" if facts.relative_to is None else \
            f"warm median relative to {facts.relative_to!r} (both measured alongside)"
        message = (f"{what} is {verdict.ratio:.3f}x the stored baseline's (bound "
                   f"+{bounds.max_regression:.0%}, Mann-Whitney p={verdict.p_value:.4f} < "
                   f"{verdict.alpha:g}) in {facts.stored_path}; {refresh}")
        if not facts.strict:
            notes.append(f"latency_regression (warning only on the 'cpu' key): {message}")
        elif facts.relative_to is None:
            # A reference profile has nothing alongside to normalize by, and hosts of one
            # GPU model differ by more than any useful tolerance: report, do not fail.
            notes.append(f"latency_regression (warning only: absolute latency of a reference "
                         f"profile varies between hosts): {message}")
        else:
            violations.append(Violation("latency_regression", message))
    if bounds.max_vram_regression is not None and facts.stored_memory_gib:
        ratio = facts.memory_gib / facts.stored_memory_gib
        if ratio > 1.0 + bounds.max_vram_regression:
            message = (f"peak memory {facts.memory_gib:.2f} GiB is {ratio:.3f}x the stored "
                       f"{facts.stored_memory_gib:.2f} GiB (bound +{bounds.max_vram_regression:.0%})"
                       f" in {facts.stored_path}; {refresh}")
            if facts.strict:
                violations.append(Violation("vram_regression", message))
            else:
                notes.append(f"memory_regression (warning only on the 'cpu' key): {message}")
    return violations, notes
