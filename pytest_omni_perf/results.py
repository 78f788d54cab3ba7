"""What a measurement produced, in plain dataclasses that serialize to JSON for reports."""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any

from pytest_omni_perf.engines.startup import StartupPhases

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt

    from pytest_omni_perf.measure.interference import InterferenceReport
    from pytest_omni_perf.measure.memory import MemoryPeak
    from pytest_omni_perf.measure.stats import LatencyStats, RatioInterval
    from pytest_omni_perf.quality import QualityResult


@dataclasses.dataclass
class Measurement:
    """One profile measured on one request: warm rounds, cold start, memory, output."""

    profile: str
    model: str
    backend: str
    request: dict[str, Any]
    samples: list[float]
    """Warm latencies in seconds, measured around each request (what a caller waits)."""
    latency: LatencyStats
    engine_latency: LatencyStats
    """The same requests timed inside the engine (no transport)."""
    memory: MemoryPeak
    start_s: float
    first_request_s: float | None
    engine_reused: bool
    """True when the engine was already warm from an earlier test (its cold start is reused)."""
    applied: dict[str, Any]
    engine_metrics: dict[str, Any]
    frames: list[npt.NDArray[np.uint8]] = dataclasses.field(repr=False, default_factory=list)
    interleaved_with: str | None = None
    """Baseline profile whose rounds alternated with these, if any."""
    engine_profile: str = ""
    """The profile whose engine ran these rounds when not this one's own (profiles of equal
    engine options share one engine: ``engines/engine_pool.py``); "" for its own engine."""
    devices: list[int] = dataclasses.field(default_factory=list)
    """Physical GPU indices the engine ran on ([] on CPU)."""
    stopped_by: str = ""
    """Why the rounds stopped: 'decided' (every gate's interval cleared its bound),
    'within_spread' (a gate undecided within the run-to-run spread, which more rounds cannot
    narrow), 'max_rounds' or 'max_seconds' (the budget spent with a gate still undecided)."""
    interference: InterferenceReport | None = None
    """What the host did during each measured round (GPU busy, clocks, other load)."""
    startup: StartupPhases = dataclasses.field(default_factory=StartupPhases)
    """Where the engine's start went, phase by phase (None where the engine cannot see it)."""

    @property
    def cold_start_s(self) -> float | None:
        return None if self.first_request_s is None else self.start_s + self.first_request_s

    def shared_engine_note(self, base: Measurement | None) -> str | None:
        """What to tell when these rounds alternated with ``base``'s in one engine."""
        engine = self.engine_profile or self.profile
        if base is None or self.interleaved_with != base.profile \
                or engine != (base.engine_profile or base.profile):
            return None
        return (f"{self.profile} and {base.profile} ran in one engine, {engine}'s, their rounds "
                "alternating in one process: their engine options are equal "
                "(--omni-separate-engines starts one per profile)")

    def to_dict(self) -> dict[str, Any]:
        return {
            "profile": self.profile, "model": self.model, "backend": self.backend,
            "request": self.request, "samples_s": self.samples,
            "latency": self.latency.to_dict(), "engine_latency": self.engine_latency.to_dict(),
            "memory": self.memory.to_dict(), "start_s": self.start_s,
            "first_request_s": self.first_request_s, "cold_start_s": self.cold_start_s,
            "engine_reused": self.engine_reused, "applied": self.applied,
            "engine_metrics": self.engine_metrics, "interleaved_with": self.interleaved_with,
            "engine_profile": self.engine_profile or self.profile,
            "devices": self.devices, "rounds": len(self.samples), "stopped_by": self.stopped_by,
            "interference": None if self.interference is None else self.interference.to_dict(),
            "startup": self.startup.to_dict(),
            "output_shape": list(self.frames[0].shape) if self.frames else None,
            "output_frames": len(self.frames),
        }


@dataclasses.dataclass(frozen=True)
class Violation:
    """One gate that failed: what, measured, against what, the bound, and how to fix it."""

    metric: str
    message: str

    def __str__(self) -> str:
        return f"{self.metric}: {self.message}"


@dataclasses.dataclass
class ParityResult:
    """The same profile and request on another backend (``omni_bounds(parity=...)``)."""

    backend: str
    measurement: Measurement
    """The parity backend's rounds, interleaved with this backend's where both fit."""
    beside: list[float]
    """This backend's latencies (s) from the rounds alongside the parity backend's."""
    latency_ratio: RatioInterval | None = None
    """Robust latency here / on the parity backend, with its interval."""
    quality: QualityResult | None = None
    """This backend's output against the parity backend's."""

    def to_dict(self) -> dict[str, Any]:
        return {
            "backend": self.backend, "measurement": self.measurement.to_dict(),
            "beside_samples_s": self.beside,
            "latency_ratio": None if self.latency_ratio is None
            else self.latency_ratio.to_dict(),
            "quality": None if self.quality is None else self.quality.to_dict(),
        }


@dataclasses.dataclass
class PerfResult:
    """Everything ``omni_perf.measure`` learned for one test, profile and request."""

    nodeid: str
    profile: str
    label: str
    bounds: dict[str, Any]
    measurement: Measurement
    baseline: Measurement | None = None
    speedup: float | None = None
    """Robust baseline latency / this profile's (see measure/stats.py); the interval is
    ``speedup_interval``."""
    speedup_interval: RatioInterval | None = None
    quality: QualityResult | None = None
    """Output against the baseline profile's output on the same request."""
    stored_quality: QualityResult | None = None
    """Output against the stored baseline image(s)."""
    latency_ratio: RatioInterval | None = None
    """This run's latency / the stored baseline's (relative to the baseline profile
    measured alongside, where there is one), with its interval."""
    memory_ratio: float | None = None
    """Peak memory / baseline profile's peak (same kind of memory)."""
    stored_path: str | None = None
    violations: list[Violation] = dataclasses.field(default_factory=list)
    undecided: list[Violation] = dataclasses.field(default_factory=list)
    """Gates whose interval still straddled the bound when the round budget was spent."""
    notes: list[str] = dataclasses.field(default_factory=list)
    fingerprint: dict[str, Any] = dataclasses.field(default_factory=dict)
    inputs: list[tuple[str, Any]] = dataclasses.field(default_factory=list, repr=False)
    """The request's conditioning inputs, (caption, ``InputImage``), for the HTML report's
    thumbnails; not serialized (the request dict holds their digests)."""
    parity: ParityResult | None = None
    """The same profile on the backend ``omni_bounds(parity=...)`` names, or None."""
    busy_host: str | None = None
    """Why the host was busy in most rounds (``busy_host.cannot_decide``: "this profile:
    other processes used 1.5 cores in 9 of 10 rounds"), or None: when set, no latency gate
    passed or failed and the speedup is no evidence either way."""

    # Convenience accessors a test body reads.
    @property
    def median_s(self) -> float:
        return self.measurement.latency.median

    @property
    def cold_start_s(self) -> float | None:
        return self.measurement.cold_start_s

    @property
    def peak_memory_gib(self) -> float:
        return self.measurement.memory.peak_gib

    @property
    def ssim(self) -> float | None:
        return None if self.quality is None else self.quality.ssim_mean

    @property
    def frames(self) -> list[npt.NDArray[np.uint8]]:
        return self.measurement.frames

    @property
    def passed(self) -> bool:
        """No gate failed (undecided ones may remain: see ``verdict``)."""
        return not self.violations

    @property
    def verdict(self) -> str:
        """``fail`` (a gate failed), ``inconclusive`` (a gate undecided at the budget) or
        ``pass``."""
        if self.violations:
            return "fail"
        return "inconclusive" if self.undecided else "pass"

    def to_dict(self) -> dict[str, Any]:
        def quality(q: QualityResult | None) -> dict[str, Any] | None:
            return None if q is None else q.to_dict()

        def interval(i: RatioInterval | None) -> dict[str, Any] | None:
            return None if i is None else i.to_dict()

        return {
            "nodeid": self.nodeid, "profile": self.profile, "label": self.label,
            "bounds": self.bounds, "measurement": self.measurement.to_dict(),
            "baseline": None if self.baseline is None else self.baseline.to_dict(),
            "speedup": self.speedup,
            "speedup_interval": interval(self.speedup_interval),
            "quality": quality(self.quality),
            "stored_quality": quality(self.stored_quality),
            "latency_ratio": interval(self.latency_ratio),
            "memory_ratio": self.memory_ratio, "stored_path": self.stored_path,
            "violations": [dataclasses.asdict(v) for v in self.violations],
            "undecided": [dataclasses.asdict(v) for v in self.undecided],
            "notes": self.notes, "verdict": self.verdict,
            "fingerprint": self.fingerprint,
            "parity": None if self.parity is None else self.parity.to_dict(),
            "busy_host": self.busy_host,
        }
