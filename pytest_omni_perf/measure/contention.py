"""Whether a measurement's CPU was contended enough that its latencies cannot show a
slowdown or a speedup apart from the host's load (``InterferenceReport`` rounds, see
``interference``)."""

from __future__ import annotations

from pytest_omni_perf.measure.interference import (
    OTHER_CORES_ABOVE, STEAL_ABOVE_PCT, InterferenceReport,
)

CONTENDED_SHARE = 0.5
"""A measurement whose CPU was contended in at least half its rounds can neither FAIL nor
PASS a latency gate: on an oversubscribed host the two engines of a pair do not share the
load evenly, so pairing no longer cancels it (the README's main job on a 2-core machine
beside two busy loops: compile measured 0.55x on video and 1.43x on images in one session;
a no-op profile passed min_speedup=1.05 at 2.004x, results/cpu/noop-drill-busy-3/)."""


def contended(report: InterferenceReport) -> str | None:
    """Why ``report``'s rounds were contended, or None: other processes took more than
    OTHER_CORES_ABOVE cores, or the hypervisor stole more than STEAL_ABOVE_PCT % of the
    CPU, in at least CONTENDED_SHARE of the rounds (rounds too short for CPU shares count
    as not contended)."""
    busy = [r for r in report.rounds if (r.others_cpu_cores or 0) > OTHER_CORES_ABOVE
            or (r.steal_pct or 0) > STEAL_ABOVE_PCT]
    if not busy or len(busy) < CONTENDED_SHARE * len(report.rounds):
        return None
    cores = [r.others_cpu_cores for r in busy if r.others_cpu_cores is not None]
    load = f"other processes used {sum(cores) / len(cores):.1f} cores" if cores else \
        "the hypervisor stole CPU"
    return f"{load} in {len(busy)} of {len(report.rounds)} rounds"
