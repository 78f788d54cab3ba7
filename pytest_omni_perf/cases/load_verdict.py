"""Load bounds judged on intervals: PASS, FAIL or INCONCLUSIVE for each bound of a level.

The same rule as single-request gates (``judge.py``): a bound PASSES only when the whole
interval of its metric (``measure/load_stats.py``) lies on the right side of it, FAILS only
when the whole interval lies on the wrong side, and is otherwise INCONCLUSIVE, naming the
metric, the interval, the bound and how many completed requests would decide it. A case
file's ``baseline`` numbers (``cases/bounds.py``) and ``omni_bounds``' load bounds
(``load_runs.py``) both become ``Bound``s and are judged here. Peak memory is not a timing
(the server reports one peak per request, the same under any interference) and is judged
as a point, as single-request gates judge VRAM.

Units: latency seconds, throughput requests per second, memory MB (2**20 bytes).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Literal

from pytest_omni_perf.measure.load_stats import (
    MIN_REQUESTS, QUANTILES, LoadInterval, LoadSample, Side, load_intervals, requests_needed,
)

if TYPE_CHECKING:
    from pytest_omni_perf.cases.load import LoadResult

Direction = Literal["max", "min"]
METRICS: Mapping[str, tuple[Direction, str]] = {
    "throughput_qps": ("min", "req/s"),
    "latency_mean": ("max", "s"),
    "latency_median": ("max", "s"),
    "latency_p50": ("max", "s"),
    "latency_p95": ("max", "s"),
    "latency_p99": ("max", "s"),
    "peak_memory_mb_max": ("max", "MB"),
    "peak_memory_mb_mean": ("max", "MB"),
}
"""Every metric a load bound may name: its direction (a maximum or a minimum) and unit."""
POINT_METRICS = frozenset({"peak_memory_mb_max", "peak_memory_mb_mean"})
"""Metrics judged as points (no interval): the server's memory peaks."""
Outcome = Literal["pass", "fail", "inconclusive"]
STRADDLE_ADVICE = ", or a quieter machine"
"""The end of an undecided bound's advice, which a busy host replaces."""
BUSY_SLOWDOWN_LIMIT = 100.0
"""The most a busy host is taken to slow a server: a timing bound missed by more than this
factor (the interval's near end beyond ``limit`` x 100, or under ``limit`` / 100 for a
throughput) fails even on a busy host. The worst slowdowns by load measured here: tiny-flux's
64x64 2-step load through the shipped server took 1.77 s [1.21, 2.62] a request beside a CI
run, a newcomer's main job and two spinning processes (``.ci/run`` of b92b29a, 2026-12-06),
against 0.14-0.19 s with the machine nearly quiet: 8-12x; the main job's pytest run took
33 min 8 s beside CI against 6 min 13 s quiet, 5.3x (results/cpu/perf-suite-quiet-1749ca2.log,
newcomer-mainjob-d7f40d3-beside-ci.log). A first limit of 10 was refuted by the former."""


@dataclasses.dataclass(frozen=True)
class Bound:
    """One absolute bound: ``metric`` must stay at or below (max) / above (min) ``limit``."""

    metric: str
    limit: float
    direction: Direction
    field: str
    """Where it came from: a path in a case entry (``baseline.H100.latency_mean[1]``) or an
    ``omni_bounds`` field (``max_latency_p99_s``)."""

    def violated_by(self, value: float) -> bool:
        return value > self.limit if self.direction == "max" else value < self.limit

    def describe(self, value: float) -> str:
        """A point value against the bound, e.g. for peak memory."""
        unit = METRICS[self.metric][1]
        sign = ">" if self.direction == "max" else "<"
        word = "maximum" if self.direction == "max" else "minimum"
        return (f"{self.field}: measured {self.metric} {value:.4g} {unit} {sign} "
                f"{word} {self.limit:g} {unit}")


@dataclasses.dataclass(frozen=True)
class BoundVerdict:
    """One bound's outcome at one level, with what it was judged on."""

    field: str
    metric: str
    direction: Direction
    limit: float
    unit: str
    outcome: Outcome
    value: float
    """The point value (mean, quantile, throughput, peak)."""
    interval: LoadInterval | None
    """What was compared; None for a point metric (memory)."""
    message: str
    needed: int | None = None
    """Inconclusive: about how many completed requests would decide it (None: none would,
    the estimate sits on the bound)."""

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready; the interval as ``LoadInterval.to_dict``."""
        found = dataclasses.asdict(self)
        found["interval"] = None if self.interval is None else self.interval.to_dict()
        return found


@dataclasses.dataclass
class LoadJudgement:
    """Every bound of one level, and notes for bounds that could not be applied."""

    verdicts: list[BoundVerdict] = dataclasses.field(default_factory=list)
    notes: list[str] = dataclasses.field(default_factory=list)

    def messages(self, outcome: Outcome) -> list[str]:
        return [v.message for v in self.verdicts if v.outcome == outcome]

    @property
    def violations(self) -> list[str]:
        """The failed bounds' messages."""
        return self.messages("fail")

    @property
    def undecided(self) -> list[str]:
        """The inconclusive bounds' messages."""
        return self.messages("inconclusive")

    @property
    def verdict(self) -> Outcome:
        """``fail`` when a bound failed, ``inconclusive`` when one is undecided, else ``pass``."""
        outcomes = {v.outcome for v in self.verdicts}
        return "fail" if "fail" in outcomes else \
            "inconclusive" if "inconclusive" in outcomes else "pass"


def judge_load(bounds: Sequence[Bound], measured: Mapping[str, float | None],
               sample: LoadSample, confidence: float) -> LoadJudgement:
    """Each bound on ``sample``'s interval of its metric (memory: on ``measured``'s point).
    A memory bound the server reported nothing for is a note, never a silent pass."""
    judged = LoadJudgement()
    intervals = load_intervals(sample, confidence)
    for bound in bounds:
        unit = METRICS[bound.metric][1]
        value = measured.get(bound.metric)
        if bound.metric in POINT_METRICS:
            if value is None:
                judged.notes.append(f"{bound.field}: {bound.metric} was not measured here "
                                    "(the server reported none), bound not applied")
            else:
                failed = bound.violated_by(value)
                message = bound.describe(value) if failed else (
                    f"{bound.field}: measured {bound.metric} {value:.4g} {unit}, within the "
                    f"{_word(bound)} {bound.limit:g} {unit}")
                judged.verdicts.append(_verdict(bound, "fail" if failed else "pass", value,
                                                None, message))
            continue
        interval = intervals.get(bound.metric) or LoadInterval(
            bound.metric, math.nan if value is None else value, None, None, confidence,
            sample.requests, "", requests_needed(bound.metric, confidence))
        judged.verdicts.append(_on_interval(bound, interval))
    return judged


def _word(bound: Bound) -> str:
    return "maximum" if bound.direction == "max" else "minimum"


def _verdict(bound: Bound, outcome: Outcome, value: float, interval: LoadInterval | None,
             message: str, needed: int | None = None) -> BoundVerdict:
    return BoundVerdict(bound.field, bound.metric, bound.direction, bound.limit,
                        METRICS[bound.metric][1], outcome, value, interval, message, needed)


def _on_interval(bound: Bound, interval: LoadInterval) -> BoundVerdict:
    """PASS: the whole interval on the bound's right side; FAIL: wholly on the wrong side;
    else INCONCLUSIVE, saying what would decide it."""
    unit = METRICS[bound.metric][1]
    word = _word(bound)
    lead = (f"{bound.field}: measured {bound.metric} {interval.describe(unit)}, {word} "
            f"{bound.limit:g} {unit}")
    low, high = interval.low, interval.high
    upper = bound.direction == "max"
    if upper:
        passed = high is not None and high <= bound.limit
        failed = low is not None and low > bound.limit
    else:
        passed = low is not None and low >= bound.limit
        failed = high is not None and high < bound.limit
    if passed or failed:
        where = "below" if upper == passed else "above"
        return _verdict(bound, "pass" if passed else "fail", interval.estimate, interval,
                        f"{lead}: the whole interval is {where} the {word}")
    why, needed = _undecided(bound, interval)
    return _verdict(bound, "inconclusive", interval.estimate, interval, f"{lead}: {why}",
                    needed)


def _undecided(bound: Bound, interval: LoadInterval) -> tuple[str, int | None]:
    """Why the bound is undecided, and about how many completed requests would decide it."""
    n, estimate, limit = interval.requests, interval.estimate, bound.limit
    # The end that must cross the bound: toward it from the estimate.
    toward_pass = not math.isfinite(estimate) or (
        estimate <= limit if bound.direction == "max" else estimate >= limit)
    side: Side = "high" if toward_pass == (bound.direction == "max") else "low"
    need_end = interval.needs.get(side, MIN_REQUESTS)
    if n < MIN_REQUESTS:
        done = f"only {n} requests completed" if n else "no request completed"
        return (f"{done}, an interval needs at least {MIN_REQUESTS}; send at least "
                f"{need_end} (num_prompts)"), need_end
    end = interval.end(side)
    if end is None:
        p = QUANTILES.get(bound.metric, 0.5)
        word = "an upper" if side == "high" else "a lower"
        return (f"{word} end of the {interval.confidence:.0%} interval of the "
                f"{_ordinal(p)} percentile needs {need_end} completed requests (this level "
                f"had {n}), so it cannot show the {bound.metric} "
                f"{'below' if side == 'high' else 'above'} {limit:g}; send at least "
                f"{need_end} (num_prompts) or bound a lower percentile"), need_end
    gap = abs(limit - estimate)
    if gap == 0:
        return ("the estimate sits on the bound, so no number of requests decides it; "
                "a bound further from the measured value would"), None
    # Interval half-widths shrink as 1/sqrt(n): how many requests bring this end inside.
    needed = max(need_end, math.ceil(n * (abs(end - estimate) / gap) ** 2))
    return (f"the interval straddles the bound; about {needed} completed requests would "
            f"decide it at this spread (num_prompts){STRADDLE_ADVICE}"), needed


def _ordinal(p: float) -> str:
    return "50th (median)" if p == 0.5 else f"{100 * p:.0f}th"


def busy_host_cannot_fail(judged: LoadJudgement, why: str) -> None:
    """Turn failed timing bounds (latency, throughput) into undecided ones when the host's
    CPU was contended in most of the load's windows (``measure.contention``), naming the
    load, unless missed by more than ``BUSY_SLOWDOWN_LIMIT`` times; undecided ones whose
    interval straddles the bound name it too and advise only a quieter machine. Passes
    stand: other processes can only slow a server, so a bound met under load is met without
    it (unlike a speedup, where the load may fall on either engine of a pair). Memory bounds
    stand."""
    for i, v in enumerate(judged.verdicts):
        if v.metric in POINT_METRICS or v.outcome == "pass" or (
                v.outcome == "inconclusive" and STRADDLE_ADVICE not in v.message):
            # Too few requests for an interval or an open end (more requests decide it, load
            # or not), or an estimate on the bound (nothing decides it): only an interval
            # across the bound, whose advice names a quieter machine, is the load's to widen.
            continue
        if v.outcome == "fail" and _beyond_any_load(v):
            judged.verdicts[i] = dataclasses.replace(v, message=(
                f"{v.message} (the host was busy: {why}; failed all the same: missed by more "
                f"than the {BUSY_SLOWDOWN_LIMIT:g}-fold slowdown a load is taken to explain)"))
            continue
        if v.outcome == "fail":
            message = (f"{v.message}; not failed because the host was busy ({why}): a "
                       "slowdown cannot be told apart from the load here; run it on a quiet "
                       "host")
        else:
            message = (f"{v.message.replace(STRADDLE_ADVICE, '')}; a quieter machine would "
                       f"decide it (the host was busy: {why})")
        judged.verdicts[i] = dataclasses.replace(v, outcome="inconclusive", message=message)


def _beyond_any_load(v: BoundVerdict) -> bool:
    """Whether a failed bound's interval lies beyond ``BUSY_SLOWDOWN_LIMIT`` times it."""
    if v.interval is None:
        return False
    if v.direction == "max":
        return v.interval.low is not None and v.interval.low > v.limit * BUSY_SLOWDOWN_LIMIT
    return v.interval.high is not None and v.interval.high < v.limit / BUSY_SLOWDOWN_LIMIT


def judged_level(run: Callable[[bool], LoadResult], bounds: Sequence[Bound], *,
                 confidence: float, retry: bool) -> tuple[LoadResult, LoadJudgement, list[str]]:
    """Run one level's load (``run(True)``) and judge ``bounds`` on it; with ``retry``
    (``--omni-inconclusive=retry``) a level left undecided is run once more
    (``run(False)``: no warmup needed, the server is warm) and judged on both runs'
    requests together, as a measured test spends its round budget once more. On a host
    contended in most windows (``busy_host_cannot_fail``) no timing bound fails and nothing
    is run again. Returns (the result, its judgement, notes)."""
    result = run(True)
    judged = judge_load(bounds, result.metrics(), result.sample(), confidence)
    notes = []
    if retry and judged.undecided and not judged.violations and result.busy is None:
        first = result.completed
        result = result.then(run(False))
        judged = judge_load(bounds, result.metrics(), result.sample(), confidence)
        notes.append(f"undecided after {first} completed requests, run once more "
                     f"(--omni-inconclusive=retry): judged on {result.completed}")
    if (why := result.busy) is not None:
        busy_host_cannot_fail(judged, why)
    if result.interference is None:
        notes.append("host load not recorded: the server's processes are not the plugin's "
                     "(an attached server), so a busy host cannot be told from a slow server")
    elif result.interference.notable:
        notes.append(f"host: {result.host}")
    return result, judged, notes


def verdict_lines(verdicts: Sequence[Mapping[str, Any]], indent: str = "    ") -> list[str]:
    """Terminal lines for ``BoundVerdict.to_dict()``s: ``PASS|FAIL|INCONCLUSIVE message``."""
    words = {"pass": "PASS", "fail": "FAIL", "inconclusive": "INCONCLUSIVE"}
    return [f"{indent}{words.get(str(v.get('outcome')), '?')} {v.get('message', '')}"
            for v in verdicts]
