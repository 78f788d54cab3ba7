"""Measurements, bounds and stored references -> verdicts, as pure functions of numbers.

A bound on a ratio that varies from round to round (speedup, latency relative to the stored
baseline) is judged on the ratio's confidence interval (measure/stats.py): it FAILS only when
the whole interval lies on the wrong side of the bound, PASSES when the whole interval lies
on the right side, and is otherwise UNDECIDED: the harness then measures more rounds, and
what is still undecided when the budget is spent is reported as inconclusive. Numbers that do
not vary between rounds (SSIM of a seeded output, a peak of memory) are judged as points.

Each message names the metric, the measured value with its interval, the reference, the
bound and what to do, because it is read in a CI log by someone who did not write the test.
"""

from __future__ import annotations

import dataclasses
from typing import Literal

from pytest_omni_perf.measure.stats import MIN_ROUNDS_FOR_INTERVAL, RatioInterval
from pytest_omni_perf.profiles import Bounds
from pytest_omni_perf.results import Violation

Outcome = Literal["pass", "fail", "undecided"]


def at_least(interval: RatioInterval, bound: float) -> Outcome:
    """``interval`` against a lower bound (e.g. min_speedup)."""
    if not interval.decisive:
        return "undecided"
    if interval.high < bound:
        return "fail"
    return "pass" if interval.low >= bound else "undecided"


def at_most(interval: RatioInterval, bound: float) -> Outcome:
    """``interval`` against an upper bound (e.g. 1 + max_regression)."""
    if not interval.decisive:
        return "undecided"
    if interval.low > bound:
        return "fail"
    return "pass" if interval.high <= bound else "undecided"


@dataclasses.dataclass
class Judgement:
    """What the bounds say: failed gates, gates left undecided, gates passed on an interval,
    and notes (warnings)."""

    violations: list[Violation] = dataclasses.field(default_factory=list)
    undecided: list[Violation] = dataclasses.field(default_factory=list)
    notes: list[str] = dataclasses.field(default_factory=list)
    passed: list[Violation] = dataclasses.field(default_factory=list)
    """Gates whose whole interval cleared the bound, each with the message that says so:
    kept because a pass is only as good as the conditions it was measured in (a busy host
    turns it undecided, ``verdict``); a warn-only gate's pass decides nothing, so it is not
    kept, as its undecided outcome is not."""
    narrowable: bool = False
    """Whether more rounds could still decide an undecided gate (its interval is not yet
    down to the run-to-run spread); the harness stops adding rounds when none can."""

    def add(self, outcome: Outcome, metric: str, message: str, *, warn_only: bool = False,
            why_warn: str = "", interval: RatioInterval | None = None) -> None:
        """File one gate's outcome; a warn-only gate turns a failure into a note."""
        if outcome == "pass" and not warn_only:
            self.passed.append(Violation(metric, message))
        elif outcome == "fail" and warn_only:
            self.notes.append(f"{metric} (warning only: {why_warn}): {message}")
        elif outcome == "fail":
            self.violations.append(Violation(metric, message))
        elif outcome == "undecided" and not warn_only:
            self.undecided.append(Violation(metric, message))
            self.narrowable |= interval is None or interval.narrowable

    def extend(self, other: Judgement) -> None:
        """Add another judgement's entries to this one."""
        self.violations += other.violations
        self.undecided += other.undecided
        self.notes += other.notes
        self.passed += other.passed
        self.narrowable |= other.narrowable


STRADDLE_ADVICE = ("more rounds (--omni-max-rounds, --omni-max-seconds) or a quieter machine "
                   "would decide it")
"""What an interval straddling its bound asks for (verdict.py narrows it on a busy host)."""
REFRESH_LEAD = "if the change is intended, refresh it with: "
"""How a regression message offers the refresh command (verdict.py withdraws it on a busy
host: a baseline recorded under load would be wrong)."""


def without_refresh(message: str, command: str) -> str:
    """``message`` less every clause that offers ``command`` (from the ``'; '`` before it to
    its end): "...; record one with: pytest ..." and "re-record it with: ..." as much as
    :data:`REFRESH_LEAD`. Unchanged when ``command`` is empty or absent."""
    while command and (end := message.find(command)) >= 0:
        start = message.rfind("; ", 0, end)
        message = message[:start if start >= 0 else end] + message[end + len(command):]
    return message


def _undecided(interval: RatioInterval) -> str:
    """Why a bound on ``interval`` is undecided, and what would decide it."""
    if not interval.decisive:
        return (f"{interval.rounds} rounds are too few for an interval (a verdict needs at "
                f"least {MIN_ROUNDS_FOR_INTERVAL}); raise --omni-max-rounds")
    if not interval.narrowable:
        return ("the bound lies within the run-to-run spread, which more "
                "rounds cannot narrow: it is not known whether it holds (a bound further "
                "from the measured value, or --omni-run-spread measured for this host, "
                "would decide it)")
    return f"the interval straddles the bound, so it is not known yet; {STRADDLE_ADVICE}"


def _then(origin: str) -> str:
    """``origin`` (where a bound came from) as the next clause of a message, if known."""
    return f"; {origin}" if origin else ""


def _not_failed(outcome: Outcome, interval: RatioInterval) -> str:
    """The end of a message for a gate that passed or is undecided: what the interval says."""
    return "the whole interval clears the bound" if outcome == "pass" else _undecided(interval)


@dataclasses.dataclass(frozen=True)
class PixelFacts:
    """PSNR and absolute pixel differences of an output against one reference."""

    psnr: float | None
    """dB over the dtype's range; ``inf`` for identical images (passes any min_psnr)."""
    mean_abs_diff: float | None
    """Pixel values, 0-255 for uint8."""
    p99_abs_diff: float | None


def pixel_judgement(bounds: Bounds, facts: PixelFacts | None, prefix: str, against: str,
                    tail: str = "") -> Judgement:
    """min_psnr, max_mean_abs_diff and max_p99_abs_diff against one reference, as points (a
    seeded output does not vary between rounds). ``prefix`` starts the gate names ('' for
    the baseline profile, 'stored_', 'parity_'); ``tail`` ends each message (what to do)."""
    judged = Judgement()
    if facts is None:
        return judged
    end = f"; {tail}" if tail else ""
    if bounds.min_psnr is not None and facts.psnr is not None and facts.psnr < bounds.min_psnr:
        judged.add("fail", f"{prefix}psnr", (
            f"output PSNR {facts.psnr:.2f} dB against {against}, below the bound "
            f"min_psnr={bounds.min_psnr:g} dB{end}"))
    for name, value, bound in (("mean", facts.mean_abs_diff, bounds.max_mean_abs_diff),
                               ("p99", facts.p99_abs_diff, bounds.max_p99_abs_diff)):
        if bound is not None and value is not None and value > bound:
            judged.add("fail", f"{prefix}pixel_diff", (
                f"{name} absolute pixel difference {value:.3f} (of 0-255) against {against}, "
                f"above the bound max_{name}_abs_diff={bound:g}{end}"))
    return judged


def parity_latency_judgement(bounds: Bounds, ratio: RatioInterval | None, profile: str,
                             backend: str, parity: str) -> Judgement:
    """max_latency_ratio: ``ratio`` is this backend's latency over the parity backend's."""
    judged = Judgement()
    if bounds.max_latency_ratio is None or ratio is None:
        return judged
    outcome = at_most(ratio, bounds.max_latency_ratio)
    lead = (f"{profile} on {backend!r} takes {ratio.describe()} the latency of the same "
            f"profile and request on {parity!r} measured alongside, bound "
            f"max_latency_ratio={bounds.max_latency_ratio:g}")
    if outcome == "fail":
        judged.add(outcome, "parity_latency", f"{lead}: the whole interval is above the bound, "
                   f"{backend!r} is slower than {parity!r} by more than the bound allows")
    else:
        judged.add(outcome, "parity_latency", f"{lead}: {_not_failed(outcome, ratio)}",
                   interval=ratio)
    return judged


@dataclasses.dataclass(frozen=True)
class SessionFacts:
    """Numbers measured in this session, profile against its baseline profile."""

    profile: str
    baseline: str | None
    speedup: RatioInterval | None
    ssim: float | None
    ssim_worst: float | None
    memory_gib: float
    memory_ratio: float | None
    memory_is_vram: bool
    memory_unmeasured: str | None = None
    """Why GPU memory was not measured on a GPU run (VRAM bounds then refuse), or None."""
    pixels: PixelFacts | None = None
    """PSNR and pixel differences against the baseline profile's output."""
    ssim_origin: str = ""
    """Where min_ssim came from and how to override it (``markers.bound_origin``), said when
    it fails: a reader of the CI log did not write the test and cannot tell a profile's
    bound from a test's."""


def speedup_judgement(bounds: Bounds, facts: SessionFacts) -> Judgement:
    """The min_speedup bound alone: the one session gate that more rounds can decide."""
    judged = Judgement()
    if bounds.min_speedup is None or facts.speedup is None:
        return judged
    outcome = at_least(facts.speedup, bounds.min_speedup)
    against = f"baseline profile {facts.baseline!r} measured in this session"
    lead = (f"{facts.profile} is {facts.speedup.describe()} against {against}, "
            f"bound min_speedup={bounds.min_speedup:g}")
    if outcome == "fail":
        judged.add(outcome, "speedup", f"{lead}: the whole interval is below the bound, the "
                   "optimization does not pay off here")
    else:
        judged.add(outcome, "speedup", f"{lead}: {_not_failed(outcome, facts.speedup)}",
                   interval=facts.speedup)
    return judged


def absolute_latency_judgement(bounds: Bounds, latency: RatioInterval | None) -> Judgement:
    """The max_latency_s bound: ``latency`` is the robust estimate's interval in seconds."""
    judged = Judgement()
    if bounds.max_latency_s is None or latency is None:
        return judged
    outcome = at_most(latency, bounds.max_latency_s)
    lead = f"latency is {latency.describe(' s')}, bound max_latency_s={bounds.max_latency_s:g} s"
    if outcome == "fail":
        judged.add(outcome, "max_latency", f"{lead}: the whole interval is above the bound")
    else:
        judged.add(outcome, "max_latency", f"{lead}: {_not_failed(outcome, latency)}",
                   interval=latency)
    return judged


def session_judgement(bounds: Bounds, facts: SessionFacts) -> Judgement:
    """Speedup, SSIM against the baseline profile, and VRAM bounds."""
    judged = speedup_judgement(bounds, facts)
    against = f"baseline profile {facts.baseline!r} measured in this session"
    if bounds.min_ssim is not None and facts.ssim is not None and facts.ssim < bounds.min_ssim:
        worst = "" if facts.ssim_worst in (None, facts.ssim) else \
            f" (worst frame {facts.ssim_worst:.4f})"
        judged.add("fail", "ssim", (
            f"output SSIM {facts.ssim:.4f}{worst} against the output of {against}, below the "
            f"bound min_ssim={bounds.min_ssim:g}: quality broke{_then(facts.ssim_origin)}"))
    judged.extend(pixel_judgement(bounds, facts.pixels, "", f"the output of {against}"))
    vram_bounds = bounds.max_vram_gib is not None or bounds.max_vram_ratio is not None
    if facts.memory_unmeasured is not None:
        if not vram_bounds:
            judged.notes.append(f"peak VRAM not measured: {facts.memory_unmeasured}")
            return judged
        # A 0 that measured nothing must not pass a bound: refuse, saying why.
        fix = ("have the server report peak_memory_mb in its replies" if "--omni-server-url"
               in facts.memory_unmeasured else "run the container with --pid=host, or have "
               "the engine report torch_peak_bytes in engine_metrics")
        judged.add("fail", "vram", (
            f"VRAM bounds cannot be checked: {facts.memory_unmeasured}; {fix}"))
        return judged
    if vram_bounds and not facts.memory_is_vram:
        judged.notes.append("VRAM bounds not applied: CPU run (peak RSS is reported instead)")
        return judged
    if bounds.max_vram_gib is not None and facts.memory_gib > bounds.max_vram_gib:
        judged.add("fail", "vram", (
            f"peak VRAM {facts.memory_gib:.2f} GiB is above the bound "
            f"max_vram_gib={bounds.max_vram_gib:g}"))
    if bounds.max_vram_ratio is not None and facts.memory_ratio is not None \
            and facts.memory_ratio > bounds.max_vram_ratio:
        judged.add("fail", "vram_ratio", (
            f"peak VRAM is {facts.memory_ratio:.3f}x that of {against}, above the bound "
            f"max_vram_ratio={bounds.max_vram_ratio:g}: the memory optimization does not save"))
    return judged


@dataclasses.dataclass(frozen=True)
class StoredFacts:
    """This run against the stored baseline of the same test, profile and hardware."""

    stored_path: str
    ssim: float | None
    latency: RatioInterval | None
    """This run's latency / the stored run's, each relative to ``relative_to`` when set."""
    relative_to: str | None
    """Baseline profile the latencies were divided by (None: absolute latencies)."""
    memory_gib: float
    stored_memory_gib: float | None
    strict: bool
    """False for the shared 'cpu' key: CPU machines differ, so timing and memory only warn."""
    refresh_command: str
    paired_reference: bool = True
    """False when the stored run kept only its baseline profile's median (older files)."""
    against: str | None = None
    """What the latency was compared with when not the stored run (e.g. the history's
    level of accepted runs), in words."""
    reference_fails: bool = False
    """--omni-reference-regressions=fail: a reference profile's regression fails on GPU
    keys instead of warning."""
    memory_is_vram: bool = True
    """False when the memory is a CPU run's peak RSS: no memory regression is judged then."""
    pixels: PixelFacts | None = None
    """PSNR and pixel differences against the stored image(s)."""
    ssim_origin: str = ""
    """As ``SessionFacts.ssim_origin``."""


def latency_judgement(bounds: Bounds, facts: StoredFacts) -> Judgement:
    """The max_regression bound alone: the stored gate more rounds can decide."""
    judged = Judgement()
    interval = facts.latency
    if bounds.max_regression is None or interval is None:
        return judged
    limit = 1.0 + bounds.max_regression
    outcome = at_most(interval, limit)
    what = "latency" if facts.relative_to is None else \
        f"latency relative to {facts.relative_to!r} (both measured alongside)"
    reference = facts.against or f"the stored baseline's in {facts.stored_path}"
    lead = f"{what} is {interval.describe()} {reference}, bound +{bounds.max_regression:.0%}"
    refresh = f"{REFRESH_LEAD}{facts.refresh_command}"
    message = f"{lead}: the whole interval is above the bound; {refresh}" \
        if outcome == "fail" else f"{lead}: {_not_failed(outcome, interval)}"
    if not facts.strict:
        judged.add(outcome, "latency_regression", message, warn_only=True,
                   why_warn="on the 'cpu' key, machines differ", interval=interval)
    elif facts.relative_to is None and not facts.reference_fails:
        # A reference profile has nothing alongside to normalize by, and hosts of one
        # GPU model differ by more than any useful tolerance: report, do not fail.
        judged.add(outcome, "latency_regression", message, warn_only=True,
                   why_warn="absolute latency of a reference profile varies between hosts; "
                   "--omni-reference-regressions=fail makes it fail")
    elif not facts.paired_reference:
        judged.add(outcome, "latency_regression", message, warn_only=True,
                   why_warn="the stored baseline predates intervals and kept no samples of "
                   f"its baseline profile; re-record it with: {facts.refresh_command}")
    else:
        judged.add(outcome, "latency_regression", message, interval=interval)
    return judged


def stored_judgement(bounds: Bounds, facts: StoredFacts) -> Judgement:
    """SSIM against the stored image, latency and memory regressions."""
    judged = latency_judgement(bounds, facts)
    refresh = f"{REFRESH_LEAD}{facts.refresh_command}"
    if bounds.min_ssim is not None and facts.ssim is not None and facts.ssim < bounds.min_ssim:
        judged.add("fail", "stored_ssim", (
            f"output SSIM {facts.ssim:.4f} against the stored baseline image in "
            f"{facts.stored_path} is below min_ssim={bounds.min_ssim:g}"
            f"{_then(facts.ssim_origin)}; {refresh}"))
    judged.extend(pixel_judgement(bounds, facts.pixels, "stored_",
                                  f"the stored baseline image in {facts.stored_path}", refresh))
    # Not on a CPU run's peak RSS, as no VRAM bound is (the run says so once): a Python heap
    # moves by 10-30% between runs of one profile, and a newcomer's run under load printed
    # a "regression" for every profile.
    if bounds.max_vram_regression is not None and facts.stored_memory_gib \
            and facts.memory_is_vram:
        ratio = facts.memory_gib / facts.stored_memory_gib
        if ratio > 1.0 + bounds.max_vram_regression:
            judged.add("fail", "vram_regression", (
                f"peak memory {facts.memory_gib:.2f} GiB is {ratio:.3f}x the stored "
                f"{facts.stored_memory_gib:.2f} GiB (bound +{bounds.max_vram_regression:.0%})"
                f" in {facts.stored_path}; {refresh}"),
                warn_only=not facts.strict, why_warn="on the 'cpu' key, machines differ")
    return judged
