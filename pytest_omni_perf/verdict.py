"""From measurements to a judged ``PerfResult``: intervals, quality, stored references.

``harness`` produces ``Measurement``s; this module computes what is compared (speedup and
stored-latency intervals, SSIM, memory ratios), reads the stored run of the same test,
profile and hardware key, asks ``judge`` for the outcome of every bound, and writes the
stored run in a record run (``--omni-update-baselines``), then lets ``busy_host`` withdraw
the latency verdicts a contended CPU cannot support. ``latency_gates`` is the part the
harness calls between looks to learn whether more rounds could still decide something.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, Protocol

from pytest_omni_perf import busy_host, judge, stored_metrics
from pytest_omni_perf.baseline_messages import baseline_label, request_diff
from pytest_omni_perf.baseline_view import apply_view, choose_view, comparable
from pytest_omni_perf.baselines import (
    METRICS, BaselineError, BaselineStore, CorruptBaseline, StoredBaseline,
)
from pytest_omni_perf.hardware import CPU_KEY, HardwareInfo, fingerprint
from pytest_omni_perf.measure.stats import (
    Arm, RatioInterval, ratio_interval, ratio_to_level, speedup_interval, widened,
)
from pytest_omni_perf.profiles import Bounds, Profile
from pytest_omni_perf.results import Measurement, PerfResult, Violation

if TYPE_CHECKING:
    from pytest_omni_perf.quality import QualityResult


@dataclasses.dataclass(frozen=True)
class StoredLookup:
    """The stored run a measurement is compared with, or why there is none.

    ``baseline``: the loaded run (None when missing, unreadable or in a record run);
    ``problem``: the violation to report instead (None when fine or recording)."""

    name: str
    baseline: StoredBaseline | None = None
    problem: Violation | None = None
    note: str | None = None
    """Said instead of a problem: a missing run where ``References.missing_ok``."""


@dataclasses.dataclass(frozen=True)
class SeriesHistory:
    """What the history knows of one series (test, profile, label, hardware key)."""

    spread: float | None = None
    """Its own run-to-run spread (pooled with the default), or None: the default applies."""
    spread_note: str | None = None
    level: float | None = None
    """The level of its accepted runs in the units of a latency arm's value: seconds for a
    reference profile, latency relative to the baseline profile (1 / speedup) otherwise;
    None with too few accepted runs (the stored run is the reference then)."""
    level_runs: int = 0
    level_note: str | None = None


class HistorySource(Protocol):
    """Reads one series from the history (``history.session.history_source``)."""

    def __call__(self, nodeid: str, profile: str, label: str, relative: bool,
                 prior: float) -> SeriesHistory | None: ...


@dataclasses.dataclass(frozen=True)
class References:
    """Where stored runs live, what a run does with them, and how much unchanged runs of
    this hardware differ."""

    store: BaselineStore
    update: bool
    """Record run: write the stored run instead of comparing."""
    refresh_command: str
    reference_fails: bool = False
    """A reference profile's latency regression fails on GPU keys (else it warns)."""
    spread: float = 0.0
    """Run-to-run sd of the log of a ratio on this hardware (measure.stats.RUN_SPREAD_*),
    folded into every interval: one run's rounds cannot show it."""
    spread_origin: str = ""
    """Where ``spread`` came from, said beside it (``RatioInterval.spread_origin``)."""
    history_for: HistorySource | None = None
    """Where a series' own spread and level are read (the history), if anywhere."""
    series: SeriesHistory | None = None
    """What the history knows of the series being measured (set by :meth:`for_series`)."""
    missing_ok: bool = False
    """A missing stored run is a note, not a violation: the zero-code suite's first run of a
    model is judged against the baseline profile measured beside it alone."""

    def for_series(self, nodeid: str, profile: Profile, label: str) -> References:
        """These references with what the history knows of (test, profile, label): its
        own spread and its level, where it holds enough runs; unchanged otherwise."""
        if self.history_for is None:
            return self
        found = self.history_for(nodeid, profile.name, label, profile.baseline is not None,
                                 self.spread)
        if found is None:
            return self
        if found.spread is None:
            return dataclasses.replace(self, series=found)
        return dataclasses.replace(self, spread=found.spread, series=found,
                                   spread_origin="this series' history")

    @property
    def strict(self) -> bool:
        """Latency and memory regressions fail (GPU keys) rather than warn ('cpu')."""
        return self.store.hardware_key != CPU_KEY

    def lookup(self, nodeid: str, profile: Profile, label: str) -> StoredLookup:
        """Load the stored run of (test, profile, label) before measuring."""
        name = profile.name if not label else f"{profile.name}@{label}"
        if self.update:
            return StoredLookup(name)
        try:
            stored = self.store.load(nodeid, name)
            if stored is not None and (why := stored_metrics.problem(stored.metrics)):
                raise CorruptBaseline(stored.path, METRICS, f"{METRICS}: {why}")
        except BaselineError as exc:
            return StoredLookup(name, problem=Violation("baseline", (
                f"stored baseline is unreadable: {exc}; recreate it with: "
                f"{self.refresh_command}")))
        if stored is None and self.missing_ok:
            return StoredLookup(name, note=(
                f"no stored run of {baseline_label(nodeid, name)} on hardware key "
                f"{self.store.hardware_key!r} yet: judged against the baseline profile "
                f"measured in this session only; record one with: {self.refresh_command}"))
        if stored is None:
            others = self.store.other_hardware_keys(nodeid, name)
            elsewhere = f" (there are baselines for {', '.join(others)})" if others else ""
            return StoredLookup(name, problem=Violation("baseline", (
                f"no stored baseline for {baseline_label(nodeid, name)} on hardware key "
                f"{self.store.hardware_key!r} at {self.store.folder(nodeid, name)}{elsewhere};"
                f" create it with: {self.refresh_command}")))
        return StoredLookup(name, baseline=stored)


@dataclasses.dataclass(frozen=True)
class _Latency:
    """The intervals of one measurement so far."""

    speedup: RatioInterval | None
    stored: RatioInterval | None
    relative_to: str | None
    paired_reference: bool
    against: str | None = None
    """What the stored latency was compared with, when not the stored run itself."""
    absolute: RatioInterval | None = None
    """The robust latency estimate in seconds (for max_latency_s), when it is bounded."""


def _intervals(profile: Profile, samples: Sequence[float], reference: Sequence[float] | None,
               paired: bool, stored: StoredLookup, request: Mapping[str, Any],
               confidence: float, references: References, bounds: Bounds) -> _Latency:
    spread, origin = references.spread, references.spread_origin
    # Seconds: the estimate over a level of 1 s, widened as any run is.
    absolute = None if bounds.max_latency_s is None else widened(
        ratio_to_level(Arm(tuple(samples)), 1.0, confidence=confidence), spread, origin=origin)
    speedup = None if reference is None else widened(speedup_interval(
        reference, samples, paired=paired, confidence=confidence), spread, origin=origin)
    run, relative_to, paired_reference, against = None, None, True, None
    if stored.baseline is not None and stored.baseline.metrics.get("request") == dict(request):
        metrics = stored.baseline.metrics
        relative = reference is not None and profile.baseline is not None
        then = stored_metrics.stored_arm(metrics, relative=relative)
        now = Arm(tuple(samples), None if reference is None else tuple(reference),
                  paired=paired) if relative else Arm(tuple(samples))
        series = references.series
        if series is not None and series.level is not None:
            # The level of the accepted runs, not one recording run, is the reference; it
            # carries the spread of a mean of level_runs runs beside this run's own.
            run = widened(ratio_to_level(now, series.level, confidence=confidence), spread,
                          runs=1 + 1 / series.level_runs, origin=origin)
            relative_to = profile.baseline if relative else None
            against = series.level_note
        elif then is not None and (not relative or then.relative):
            # Two runs' worth of run-to-run variation: this one and the stored one.
            run = widened(ratio_interval(now, then, confidence=confidence), spread, runs=2,
                          origin=origin)
            relative_to = profile.baseline if relative else None
            paired_reference = then.reference is not None
    return _Latency(speedup, run, relative_to, paired_reference, against, absolute)


def latency_gates(*, bounds: Bounds, profile: Profile, samples: Sequence[float],
                  reference: Sequence[float] | None, paired: bool, stored: StoredLookup,
                  request: Mapping[str, Any], references: References,
                  confidence: float) -> judge.Judgement:
    """The gates more rounds can decide (speedup, stored latency), on the rounds so far."""
    found = _intervals(profile, samples, reference, paired, stored, request, confidence,
                       references, bounds)
    judged = judge.speedup_judgement(bounds, judge.SessionFacts(
        profile=profile.name, baseline=profile.baseline, speedup=found.speedup, ssim=None,
        ssim_worst=None, memory_gib=0.0, memory_ratio=None, memory_is_vram=False))
    judged.extend(judge.absolute_latency_judgement(bounds, found.absolute))
    if found.stored is not None and stored.baseline is not None:
        judged.extend(judge.latency_judgement(bounds, _stored_facts(
            stored.baseline, found, None, 0.0, None, references, memory_is_vram=False)))
    return judged


def _stored_facts(baseline: StoredBaseline, found: _Latency, ssim: float | None,
                  memory_gib: float, stored_memory_gib: float | None,
                  references: References, *, memory_is_vram: bool) -> judge.StoredFacts:
    return judge.StoredFacts(
        stored_path=str(baseline.path), ssim=ssim, latency=found.stored,
        relative_to=found.relative_to, memory_gib=memory_gib,
        stored_memory_gib=stored_memory_gib, strict=references.strict,
        refresh_command=references.refresh_command, paired_reference=found.paired_reference,
        against=found.against, reference_fails=references.reference_fails,
        memory_is_vram=memory_is_vram)


def assess(*, nodeid: str, profile: Profile, label: str, bounds: Bounds,
           measured: Measurement, base: Measurement | None, stored: StoredLookup,
           references: References, fingerprint_devices: Sequence[int],
           hardware: HardwareInfo, confidence: float,
           parity: tuple[Measurement, Measurement] | None = None,
           ssim_origin: str = "") -> PerfResult:
    """Judge one measurement against every bound; in a record run, store it. ``parity``:
    (the profile on the parity backend, this backend's rounds beside it), see parity.py;
    ``ssim_origin``: where min_ssim came from, said when it fails (judge.SessionFacts)."""
    from pytest_omni_perf.quality import compare_frames

    result = PerfResult(
        nodeid=nodeid, profile=profile.name, label=label, bounds=dataclasses.asdict(bounds),
        measurement=measured, baseline=base,
        fingerprint=fingerprint(hardware, tuple(fingerprint_devices)),
    )
    paired = base is not None and measured.interleaved_with == base.profile
    found = _intervals(profile, measured.samples, None if base is None else base.samples,
                       paired, stored, measured.request, confidence, references, bounds)
    if base is not None:
        result.speedup_interval = found.speedup
        result.speedup = None if found.speedup is None else found.speedup.estimate
        result.quality = compare_frames(measured.frames, base.frames)
        against = f"the output of baseline profile {base.profile!r}"
        if (why := result.quality.explain(against)) is not None:
            if result.quality.comparable:
                result.notes.append(why)
            else:  # an optimization that changes the output's shape broke something
                result.violations.append(Violation("ssim", why))
        if (held := _held_over(base, measured, bounds)) is not None:
            result.notes.append(held)
        elif base.memory.peak_bytes and base.memory.kind == measured.memory.kind:
            # Per GPU: a 2-GPU profile "saves memory" when each GPU holds less.
            result.memory_ratio = measured.memory.per_gpu_bytes / base.memory.per_gpu_bytes
    judged = judge.session_judgement(bounds, judge.SessionFacts(
        profile=profile.name, baseline=profile.baseline, speedup=found.speedup,
        ssim=result.ssim, ssim_worst=None if result.quality is None else result.quality.ssim_min,
        memory_gib=measured.memory.peak_gib, memory_ratio=result.memory_ratio,
        memory_is_vram=measured.memory.is_vram, memory_unmeasured=measured.memory.unmeasured,
        pixels=_pixels(result.quality), ssim_origin=ssim_origin))
    judged.extend(judge.absolute_latency_judgement(bounds, found.absolute))
    if (loosened := _loosened_ssim(profile, bounds, result.ssim, ssim_origin)) is not None:
        judged.notes.append(loosened)
    if parity is not None:
        from pytest_omni_perf import parity as parity_mod

        judged.extend(parity_mod.assess(result, bounds, *parity, confidence=confidence,
                                        spread=references.spread, ssim_origin=ssim_origin,
                                        spread_origin=references.spread_origin))
    if references.update:
        folder = references.store.folder(nodeid, stored.name)
        busy = busy_host.busy_reason(measured, base, *(parity or ()))
        if busy is not None and folder.is_dir():
            # Checked before writing: a newcomer's refresh on a busy host replaced the
            # committed baseline and only then said the host was busy. A first baseline
            # has nothing to lose and is written, saying so (busy_host._busy_note).
            judged.undecided.append(Violation("baseline", busy_host.baseline_kept(
                str(folder), busy)))
        else:
            view = choose_view(measured.frames)
            path = references.store.save(nodeid, stored.name,
                                         stored_metrics.to_metrics(result, view),
                                         apply_view(measured.frames, view))
            result.stored_path = str(path)
            judged.notes.append(f"{busy_host.BASELINE_WRITTEN} {path}")
    elif stored.problem is not None:
        judged.violations.append(stored.problem)
    elif stored.note is not None:
        judged.notes.append(stored.note)
    elif stored.baseline is not None:
        judged.extend(_against_stored(result, stored.baseline, found, bounds, references,
                                      ssim_origin))
    result.busy_host = busy_host.cannot_decide(judged, measured, base, *(parity or ()),
                                               refresh=references.refresh_command)
    result.violations += judged.violations
    result.undecided += judged.undecided
    result.notes += judged.notes
    if references.series is not None and references.series.spread_note is not None:
        result.notes.append(references.series.spread_note)
    return result


def _held_over(base: Measurement, measured: Measurement, bounds: Bounds) -> str | None:
    """Why the two peaks are not compared (``MemoryPeak.held_over``), or None."""
    held = [f"{m.profile}'s: {m.memory.held_over}" for m in (measured, base)
            if m.memory.held_over]
    return _memory_not_compared(f"baseline profile {base.profile!r}", held, "max_vram_ratio",
                                bounds.max_vram_ratio is not None)


def _memory_not_compared(reference: str, held: Sequence[str], bound: str,
                         bound_set: bool) -> str | None:
    """The note for peaks not compared with ``reference`` because NVML may still count an
    earlier, larger request (``held``: whose peak and why; empty: they are compared), saying
    when that leaves ``bound`` unapplied."""
    if not held:
        return None
    unapplied = f"; {bound} not applied" if bound_set else ""
    return (f"peak memory not compared with {reference}: NVML may still count an earlier, "
            f"larger request ({'; '.join(held)}){unapplied}")


def _loosened_ssim(profile: Profile, bounds: Bounds, ssim: float | None,
                   origin: str) -> str | None:
    """A note when the SSIM passed only because the test lowered the profile's own
    min_ssim: a newcomer read tiny-wan's vae_tiling at SSIM 0.50 marked ``ok`` and could not
    tell the test had lowered vae_tiling's 0.70 to 0.4."""
    own, used = profile.bounds.min_ssim, bounds.min_ssim
    if ssim is None or own is None or used is None or not used <= ssim < own:
        return None
    said = f" ({origin})" if origin else ""
    return (f"output SSIM {ssim:.4f} passes min_ssim={used:g} only because the test lowered "
            f"the min_ssim of profile {profile.name!r} from {own:g}{said}")


def _pixels(quality: QualityResult | None) -> judge.PixelFacts | None:
    if quality is None or not quality.comparable:
        return None
    return judge.PixelFacts(quality.psnr_mean, quality.mean_abs_diff, quality.p99_abs_diff)


def _mapping(value: object) -> Mapping[str, Any] | None:
    return value if isinstance(value, Mapping) else None


def _against_stored(result: PerfResult, stored: StoredBaseline, found: _Latency,
                    bounds: Bounds, references: References,
                    ssim_origin: str = "") -> judge.Judgement:
    from pytest_omni_perf.quality import ImageSizeMismatch, compare_frames

    judged = judge.Judgement()
    measured = result.measurement
    result.stored_path = str(stored.path)
    refresh = references.refresh_command
    if stored.metrics.get("request") != measured.request:
        judged.violations.append(Violation("baseline", (
            f"the stored baseline in {stored.path} was recorded for another request ("
            f"{request_diff(_mapping(stored.metrics.get('request')), measured.request)}); "
            f"refresh it with: {refresh}")))
        return judged
    view = stored.metrics.get("view") or {}
    try:
        if (why := comparable(measured.frames, view)) is not None:
            raise ImageSizeMismatch(why)
        result.stored_quality = compare_frames(apply_view(measured.frames, view),
                                               stored.frames)
        if not result.stored_quality.comparable:
            raise ImageSizeMismatch(result.stored_quality.not_applicable)
        if (why := result.stored_quality.explain("the stored baseline image")) is not None:
            result.notes.append(why)
    except ImageSizeMismatch as exc:
        judged.violations.append(Violation("stored_ssim", (
            f"cannot compare with the stored baseline in {stored.path}: {exc}; refresh it "
            f"with: {refresh}")))
    result.latency_ratio = found.stored
    memory = stored.metrics.get("memory") or {}
    stored_gib = None
    held = [f"{which}: {why}" for which, why in (
        ("this run's", measured.memory.held_over), ("the stored one's", memory.get("held_over")))
        if why]
    if (note := _memory_not_compared("the stored baseline", held, "max_vram_regression",
                                     bounds.max_vram_regression is not None)) is not None:
        result.notes.append(note)
    elif memory.get("kind") == measured.memory.kind and memory.get("peak_bytes"):
        stored_gib = float(memory["peak_bytes"]) / 2**30
    facts = _stored_facts(
        stored, found, None if result.stored_quality is None
        else result.stored_quality.ssim_mean, measured.memory.peak_gib, stored_gib,
        references, memory_is_vram=measured.memory.is_vram)
    judged.extend(judge.stored_judgement(bounds, dataclasses.replace(
        facts, pixels=_pixels(result.stored_quality), ssim_origin=ssim_origin)))
    return judged
