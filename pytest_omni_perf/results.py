"""What a measurement produced, in plain dataclasses that serialize to JSON for reports."""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt

    from pytest_omni_perf.measure.interference import InterferenceReport
    from pytest_omni_perf.measure.memory import MemoryPeak
    from pytest_omni_perf.measure.stats import LatencyStats, RegressionVerdict
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
    devices: list[int] = dataclasses.field(default_factory=list)
    """Physical GPU indices the engine ran on ([] on CPU)."""
    interference: InterferenceReport | None = None
    """What the host did during each measured round (GPU busy, clocks, other load)."""

    @property
    def cold_start_s(self) -> float | None:
        return None if self.first_request_s is None else self.start_s + self.first_request_s

    def to_dict(self) -> dict[str, Any]:
        return {
            "profile": self.profile, "model": self.model, "backend": self.backend,
            "request": self.request, "samples_s": self.samples,
            "latency": self.latency.to_dict(), "engine_latency": self.engine_latency.to_dict(),
            "memory": self.memory.to_dict(), "start_s": self.start_s,
            "first_request_s": self.first_request_s, "cold_start_s": self.cold_start_s,
            "engine_reused": self.engine_reused, "applied": self.applied,
            "engine_metrics": self.engine_metrics, "interleaved_with": self.interleaved_with,
            "devices": self.devices,
            "interference": None if self.interference is None else self.interference.to_dict(),
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
class PerfResult:
    """Everything ``omni_perf.measure`` learned for one test, profile and request."""

    nodeid: str
    profile: str
    label: str
    bounds: dict[str, Any]
    measurement: Measurement
    baseline: Measurement | None = None
    speedup: float | None = None
    quality: QualityResult | None = None
    """Output against the baseline profile's output on the same request."""
    stored_quality: QualityResult | None = None
    """Output against the stored baseline image(s)."""
    regression: RegressionVerdict | None = None
    memory_ratio: float | None = None
    """Peak memory / baseline profile's peak (same kind of memory)."""
    stored_path: str | None = None
    violations: list[Violation] = dataclasses.field(default_factory=list)
    notes: list[str] = dataclasses.field(default_factory=list)
    fingerprint: dict[str, Any] = dataclasses.field(default_factory=dict)

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
        return not self.violations

    def to_dict(self) -> dict[str, Any]:
        def quality(q: QualityResult | None) -> dict[str, Any] | None:
            if q is None:
                return None
            return {"ssim_mean": q.ssim_mean, "ssim_min": q.ssim_min, "psnr_mean": q.psnr_mean,
                    "per_frame_ssim": list(q.per_frame_ssim), "worst_frame": q.worst_frame}

        return {
            "nodeid": self.nodeid, "profile": self.profile, "label": self.label,
            "bounds": self.bounds, "measurement": self.measurement.to_dict(),
            "baseline": None if self.baseline is None else self.baseline.to_dict(),
            "speedup": self.speedup, "quality": quality(self.quality),
            "stored_quality": quality(self.stored_quality),
            "regression": None if self.regression is None else dataclasses.asdict(self.regression),
            "memory_ratio": self.memory_ratio, "stored_path": self.stored_path,
            "violations": [dataclasses.asdict(v) for v in self.violations],
            "notes": self.notes, "verdict": "pass" if self.passed else "fail",
            "fingerprint": self.fingerprint,
        }
