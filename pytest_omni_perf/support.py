"""A model's support-table row: for each method of the guide, measured, unsupported by the
model, or not runnable here. Pure: it reads serialized results and skip records.

The methods are those of ``seed-diffusion-perf-guide.txt`` (Step 1 and Step 2), each
measured by its single-method built-in profile. Parallelism columns carry the names of
vLLM-Omni's own support table (docs/user_guide/diffusion/parallelism_acceleration.md:
Ulysses-SP, Ring-SP, CFG-Parallel, Tensor-Parallel, VAE-Patch-Parallel, HSDP); the others
are named after the guide's sections.

A skip reason is sorted by where it comes from: the plugin's hardware checks
(``markers.skip_reason``: "requires 2 GPU(s), found ..."), the diffusers backend's refusals
("diffusers backend: ...") and vLLM-Omni version checks ("vLLM-Omni 0.26: ...") say the
method cannot run *here*; anything else an engine raised (``capabilities.unsupported_reason``:
"... has no _sp_plan", "_NO_CACHE_ACCELERATION", a cache-dit adapter missing) says the
*model* lacks it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

SUPPORTED = "supported"
UNSUPPORTED = "unsupported by the model"
NOT_RUNNABLE = "not runnable here"
NOT_MEASURED = "not measured"


@dataclasses.dataclass(frozen=True)
class Method:
    """One method of the guide: its table column and the profile that measures it alone."""

    column: str
    profile: str
    guide: str
    """The guide's section, e.g. "1.2 Multi-GPU Parallelism"."""


METHODS: tuple[Method, ...] = (
    Method("torch.compile", "compile", "1.1 torch.compile"),
    Method("Ulysses-SP", "usp2", "1.2 Multi-GPU Parallelism"),
    Method("Ring-SP", "ring2", "1.2 Multi-GPU Parallelism"),
    Method("CFG-Parallel", "cfg2", "1.2 Multi-GPU Parallelism"),
    Method("Tensor-Parallel", "tp2", "1.2 Multi-GPU Parallelism"),
    Method("VAE-Patch-Parallel", "vae_patch2", "1.2 Multi-GPU Parallelism"),
    Method("HSDP", "hsdp2", "1.2 Multi-GPU Parallelism"),
    Method("Expert-Parallel", "expert_parallel", "1.2 Multi-GPU Parallelism"),
    Method("CPU-Offload", "cpu_offload", "1.3 CPU Offload"),
    Method("Layerwise-Offload", "layerwise_offload", "1.3 CPU Offload"),
    Method("VAE-Slicing", "vae_slicing", "1.4 VAE Memory Optimizations"),
    Method("VAE-Tiling", "vae_tiling", "1.4 VAE Memory Optimizations"),
    Method("FP8", "fp8", "1.5 Quantization"),
    Method("GGUF", "gguf", "1.5 Quantization"),
    Method("TeaCache", "tea_cache", "2.1 TeaCache"),
    Method("Cache-DiT", "cache_dit", "2.2 Cache-DiT"),
    Method("Fewer-Steps", "fewer_steps", "2.3 Fewer Inference Steps"),
)

MIN_INTERVAL_ROUNDS = 5
"""Fewer rounds give no interval (as the terminal table and the gates hold)."""
_HERE = ("requires ", "diffusers backend:", "vLLM-Omni ")
_LEFT_OUT = "omni_profiles("


def classify_skip(reason: str) -> str:
    """NOT_RUNNABLE, UNSUPPORTED or NOT_MEASURED for one skip reason (see the module doc)."""
    text = reason.strip()
    if text.startswith(_LEFT_OUT):
        return NOT_MEASURED
    if text.startswith(_HERE) or "--omni-in-process" in text:
        return NOT_RUNNABLE
    return UNSUPPORTED


@dataclasses.dataclass(frozen=True)
class Measured:
    """One measured request of a method (label ``short``/``realistic``, or a test's own)."""

    label: str
    nodeid: str
    speedup: float | None
    low: float | None
    high: float | None
    """The speedup's interval (``confidence``, e.g. 0.95), None where there is none."""
    confidence: float | None
    memory_ratio: float | None
    ssim: float | None
    cold_start_s: float | None
    verdict: str
    memory_kind: str = ""
    """What the peak memory counted (``measure.memory.MemoryKind``: ``rss`` on CPU runs)."""
    busy_host: str = ""
    """Why the host was busy in most rounds (``PerfResult.busy_host``), or "": the speedup
    of a busy run is no evidence either way."""

    def speedup_text(self) -> str:
        """``1.42x [1.31-1.50 95%]``, ``1.42x`` (no interval) or ``-``."""
        if self.speedup is None:
            return "-"
        if self.low is None or self.high is None:
            return f"{self.speedup:.2f}x"
        level = f" {self.confidence:.0%}" if self.confidence else ""
        return f"{self.speedup:.2f}x [{self.low:.2f}-{self.high:.2f}{level}]"

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclasses.dataclass(frozen=True)
class Entry:
    """One method's cell of the row: its status, why, and what was measured."""

    method: Method
    status: str
    reason: str = ""
    measured: tuple[Measured, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {"method": self.method.column, "profile": self.method.profile,
                "guide": self.method.guide, "status": self.status, "reason": self.reason,
                "measured": [m.to_dict() for m in self.measured]}


def measured_of(result: Mapping[str, Any]) -> Measured:
    """The numbers of one serialized result (``PerfResult.to_dict()``) the table shows."""
    interval = dict(result.get("speedup_interval") or {})
    if interval.get("rounds", 0) < MIN_INTERVAL_ROUNDS or interval.get("low") == interval.get("high"):
        # Too few rounds for an interval (the gates say "no interval" then, too).
        interval = {}
    quality = result.get("quality") or {}
    return Measured(
        label=str(result.get("label") or ""), nodeid=str(result.get("nodeid", "")),
        speedup=result.get("speedup"), low=interval.get("low"), high=interval.get("high"),
        confidence=interval.get("confidence"), memory_ratio=result.get("memory_ratio"),
        ssim=quality.get("ssim_mean"),
        cold_start_s=(result.get("measurement") or {}).get("cold_start_s"),
        verdict=str(result.get("verdict", "")),
        memory_kind=str(((result.get("measurement") or {}).get("memory") or {}).get("kind", "")),
        busy_host=str(result.get("busy_host") or ""))


def ran_on_gpu(result: Mapping[str, Any]) -> bool:
    """Whether a serialized result was measured on a GPU: its measurement names devices
    (a CPU run names none), so CPU runs are not described as "1 GPU"."""
    measurement = result.get("measurement")
    return isinstance(measurement, Mapping) and bool(measurement.get("devices"))


def model_of(result: Mapping[str, Any]) -> str:
    """The model a serialized result measured."""
    return str((result.get("measurement") or {}).get("model", "?"))


def models(results: Iterable[Mapping[str, Any]], skips: Iterable[Mapping[str, Any]]
           ) -> list[str]:
    """Every model of the run (measured or skipped), in first-seen order."""
    names = [model_of(r) for r in results] + [str(s.get("model", "?")) for s in skips]
    return list(dict.fromkeys(names))


def support_row(model: str, results: Sequence[Mapping[str, Any]],
                skips: Sequence[Mapping[str, Any]]) -> list[Entry]:
    """One Entry per method of ``METHODS`` for ``model``: SUPPORTED with its measurements
    when its profile was measured, else the status of its skip reason (several distinct
    reasons joined with "; "), else NOT_MEASURED."""
    entries = []
    for method in METHODS:
        mine = [r for r in results
                if model_of(r) == model and r.get("profile") == method.profile]
        if mine:
            entries.append(Entry(method, SUPPORTED, measured=tuple(measured_of(r) for r in mine)))
            continue
        reasons = list(dict.fromkeys(
            str(s.get("reason", "")) for s in skips
            if s.get("model") == model and s.get("profile") == method.profile))
        statuses = [classify_skip(r) for r in reasons]
        # Unsupported by the model wins: it holds on any machine.
        status = next((s for s in (UNSUPPORTED, NOT_RUNNABLE) if s in statuses), NOT_MEASURED)
        reason = "; ".join(r for r, s in zip(reasons, statuses) if s == status)
        entries.append(Entry(method, status, reason))
    return entries


def support_document(results: Sequence[Mapping[str, Any]],
                     skips: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """The JSON report's ``support`` section: ``{model: [entry, ...]}`` (see Entry)."""
    return {model: [e.to_dict() for e in support_row(model, results, skips)]
            for model in models(results, skips)}
