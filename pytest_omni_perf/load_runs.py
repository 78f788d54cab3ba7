"""``omni_perf.load()``: N requests at one or several concurrency levels (a sweep) against
the test's engine, judged on the load bounds of ``omni_bounds``: each bound on its metric's
confidence interval (``cases/load_verdict.py``), PASS, FAIL or INCONCLUSIVE per level.

Concurrency needs an engine that takes several requests at once: a server (``omni-server``,
or one attached with ``--omni-server-url``). In-process engines run one request at a time,
so ``load()`` skips on them with a reason naming the backend. The requests go through
``cases.load`` (the client the ``--omni-cases`` items use), so a load in a test and a row of
vLLM-Omni's case files measure the same way. Units: seconds, requests per second, MB, ms
for stage durations (as the server reports them).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

from pytest_omni_perf.cases.load_verdict import (
    Bound, BoundVerdict, Direction, Outcome, verdict_lines,
)
from pytest_omni_perf.numeric import Range
from pytest_omni_perf.profiles import Bounds

LOAD_PROPERTY = "omni_load"
"""user_properties entry of one ``load()`` call: ``LoadReport.to_dict()``."""
CASE_PROPERTY = "omni_case"
"""user_properties entry of one ``--omni-cases`` item: its file, row, entry, concurrency,
measured metrics, ``verdicts`` (``BoundVerdict.to_dict()``), ``verdict`` and notes."""
# bound field -> (metric of LoadResult.metrics, "max" or "min", unit)
LOAD_BOUNDS: Mapping[str, tuple[str, Direction, str]] = {
    "max_latency_p99_s": ("latency_p99", "max", "s"),
    "max_latency_mean_s": ("latency_mean", "max", "s"),
    "min_throughput_qps": ("throughput_qps", "min", "req/s"),
}
_COUNT = Range(1, whole=True)
_NON_NEGATIVE_COUNT = Range(0, whole=True)
_RATE = Range(0, low_open=True)


class LoadError(ValueError):
    """A load() argument is out of range; the message names it."""


@dataclasses.dataclass(frozen=True)
class LoadLevel:
    """What one concurrency level measured, and how its bounds judged it."""

    concurrency: int
    metrics: Mapping[str, float | None]
    """throughput_qps, completed, failed, latency_mean/median/p50/p95/p99 (s),
    peak_memory_mb_max/mean (MB; None when the server reported none)."""
    stage_durations_ms: Mapping[str, float]
    """Mean engine-reported duration of each stage over completed requests (ms)."""
    violations: tuple[str, ...]
    """Failed bounds (their interval wholly on the wrong side) and failed requests."""
    first_error: str = ""
    verdicts: tuple[BoundVerdict, ...] = ()
    """Each bound's outcome, interval, limit and message."""
    undecided: tuple[str, ...] = ()
    """Bounds whose interval straddles them or is open on the side that would decide."""
    host: str = ""
    """The host's conditions during the measured phase in plain words (``InterferenceReport.
    summary``, e.g. "other processes used 1.8 cores in 9 of 12 rounds", a round being a
    window of ``cases.load.HOST_WINDOW_S``), "quiet", or "" when not recorded."""

    @property
    def verdict(self) -> Outcome:
        """``fail``, ``inconclusive`` or ``pass``, as a measured result's."""
        return "fail" if self.violations else "inconclusive" if self.undecided else "pass"


@dataclasses.dataclass(frozen=True)
class LoadReport:
    """One ``load()`` call: its levels in order, the request shape, and notes (bounds not
    applied here, metrics the server did not report)."""

    nodeid: str
    profile: str
    label: str
    model: str
    backend: str
    num_prompts: int
    request_rate: float | None
    request: Mapping[str, Any]
    levels: tuple[LoadLevel, ...]
    notes: tuple[str, ...] = ()

    @property
    def violations(self) -> list[str]:
        """Every level's violations, each prefixed with its concurrency."""
        return [f"concurrency {level.concurrency}: {v}" for level in self.levels
                for v in level.violations]

    @property
    def undecided(self) -> list[str]:
        """Every level's inconclusive bounds, each prefixed with its concurrency."""
        return [f"concurrency {level.concurrency}: {v}" for level in self.levels
                for v in level.undecided]

    def level(self, concurrency: int) -> LoadLevel:
        """The level run at ``concurrency`` (KeyError when none was)."""
        for level in self.levels:
            if level.concurrency == concurrency:
                return level
        raise KeyError(concurrency)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready, with each level's ``verdict`` and the report's."""
        found = dataclasses.asdict(self)
        for level, raw in zip(self.levels, found["levels"]):
            raw["verdict"] = level.verdict
        verdicts = {level.verdict for level in self.levels}
        found["verdict"] = "fail" if "fail" in verdicts else \
            "inconclusive" if "inconclusive" in verdicts else "pass"
        return found


def concurrency_levels(raw: int | Sequence[int]) -> list[int]:
    """``max_concurrency`` as a list of levels; LoadError naming a bad one."""
    single = isinstance(raw, int) and not isinstance(raw, bool)
    listed = [raw] if single else raw
    if isinstance(listed, (str, bytes)) or not isinstance(listed, Sequence) or not listed:
        raise LoadError(f"max_concurrency: expected a whole number >= 1 or a non-empty list "
                        f"of them, got {raw!r}")
    return [int(_COUNT.check(v, "max_concurrency" if single else f"max_concurrency[{k}]",
                             LoadError)) for k, v in enumerate(listed)]


def check_counts(num_prompts: int, warmup_requests: int, request_rate: float | None) -> None:
    """The load's own numbers, checked before any request is sent."""
    _COUNT.check(num_prompts, "num_prompts", LoadError)
    _NON_NEGATIVE_COUNT.check(warmup_requests, "warmup_requests", LoadError)
    if request_rate is not None:
        _RATE.check(request_rate, "request_rate", LoadError)


def load_bounds(bounds: Bounds) -> list[Bound]:
    """The load bounds of ``omni_bounds`` in force, as ``Bound``s named by their field."""
    found = []
    for field, (metric, direction, _unit) in LOAD_BOUNDS.items():
        limit = getattr(bounds, field)
        if limit is not None:
            found.append(Bound(metric, float(limit), direction, field))
    return found


def summary_lines(loads: Sequence[Mapping[str, Any]]) -> list[str]:
    """Terminal lines: one per level of each load (throughput, latency, memory, stages)."""
    lines = []
    for load in loads:
        label = f"@{load['label']}" if load.get("label") else ""
        for level in load["levels"]:
            m = level["metrics"]

            def show(key: str, unit: str) -> str:
                value = m.get(key)
                return "-" if value is None else f"{value:.4g}{unit}"

            stages = ", ".join(f"{k} {v:.4g} ms" for k, v in level["stage_durations_ms"].items())
            lines.append(
                f"{load['nodeid']} [{load['profile']}{label}] c={level['concurrency']}: "
                f"{show('throughput_qps', ' req/s')}, latency mean {show('latency_mean', ' s')}"
                f" p50 {show('latency_p50', ' s')} p95 {show('latency_p95', ' s')} p99 "
                f"{show('latency_p99', ' s')}, peak {show('peak_memory_mb_max', ' MB')}, "
                f"{int(m.get('completed') or 0)} ok / {int(m.get('failed') or 0)} failed"
                + (f"; stages {stages}" if stages else ""))
            lines += verdict_lines(level.get("verdicts") or ())
            lines += [f"    violation: {v}" for v in level["violations"]
                      if not any(v == b.get("message") for b in level.get("verdicts") or ())]
        lines += [f"    note: {note}" for note in load.get("notes", ())]
    return lines
