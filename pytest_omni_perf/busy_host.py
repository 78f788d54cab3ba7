"""The busy-host rule: on a contended CPU, latency verdicts become undecided, naming the load.

``verdict.assess`` judges every bound first, then hands the judgement here. When either
engine's CPU was contended in most rounds (``measure.contention``), the engines of a pair do
not share the load evenly, so pairing no longer cancels it and a latency interval can be
wrong in either direction: a no-op profile identical to eager passed min_speedup=1.05 at
2.004x [1.148, 10.075] on a busy 2-core machine (results/cpu/noop-drill-busy-3/). Quality
and memory gates are not timings and stand. No message offers the refresh command as is: a
loaded run must not become the baseline later runs are judged against.
"""

from __future__ import annotations

from pytest_omni_perf import judge
from pytest_omni_perf.measure.contention import contended
from pytest_omni_perf.results import Measurement, Violation

BASELINE_WRITTEN = "baseline written to"
"""How a record run's note begins (``verdict.assess``); the rule adds what the latencies hold."""

LATENCY_GATES = ("speedup", "latency_regression", "max_latency", "parity_latency")
"""The metrics of ``Violation``s that are timings, the only ones a busy host can overturn."""

_WARN_ONLY = tuple(f"{metric} (warning only" for metric in LATENCY_GATES)


def busy_reason(measured: Measurement, base: Measurement | None,
                *parity: Measurement) -> str | None:
    """Why the host was busy for any arm of this comparison (``measured``, ``base``, the two
    ``parity`` measurements), e.g. "its baseline: other processes used 1.0 cores in 7 of 7
    rounds" (``measure.contention.contended``), or None when every arm was quiet."""
    arms = [("this profile", measured), ("its baseline", base),
            *zip(("its parity backend", "this profile beside it"), parity)]
    return next((f"{what}: {reason}" for what, m in arms
                 if m is not None and m.interference is not None
                 and (reason := contended(m.interference)) is not None), None)


def baseline_kept(folder: str, why: str) -> str:
    """Why ``--omni-update-baselines`` left the stored baseline in ``folder`` as it was: a
    run measured on a busy host (``why``, from :func:`busy_reason`) must not replace one."""
    return (f"baseline NOT refreshed: the host was busy ({why}), and a baseline recorded "
            "under that load would let later slowdowns pass against it; the stored baseline "
            f"in {folder} is kept as it was; refresh it on a quiet host")


def cannot_decide(judged: judge.Judgement, measured: Measurement, base: Measurement | None,
                  *parity: Measurement, refresh: str = "") -> str | None:
    """Rewrite ``judged`` in place when any arm (``measured``, ``base``, the two ``parity``
    measurements) was contended: failed and passed latency gates become undecided, gates
    already undecided and warn-only latency notes name the load, failures that stand ask for
    a quiet host instead of offering ``refresh`` (the ``--omni-update-baselines`` command).
    Returns why the host was busy ("its baseline: other processes used ..."), or None."""
    why = busy_reason(measured, base, *parity)
    if why is None:
        return None
    # More rounds on a busy host end "not passed" at best (below): only a quiet host decides.
    judged.undecided = [Violation(u.metric, (
        f"{u.message.replace(judge.STRADDLE_ADVICE, 'a quieter machine would decide it')} "
        f"(the host was busy: {why})")) if u.metric in LATENCY_GATES else u
        for u in judged.undecided]
    busy = f"because the host was busy ({why})"
    kept = []
    for violation in judged.violations:
        if violation.metric in LATENCY_GATES:
            judged.undecided.append(Violation(violation.metric, (
                f"{judge.without_refresh(violation.message, refresh)}; not failed, {busy}: a "
                "slowdown cannot be told apart from the load here; run it on a quiet host")))
        elif refresh and refresh in violation.message:  # quality, or no usable stored run
            kept.append(Violation(violation.metric, (
                f"{violation.message} (on a quiet host: this one was busy, {why})")))
        else:
            kept.append(violation)
    judged.violations = kept
    stood = []
    for passed in judged.passed:
        if passed.metric in LATENCY_GATES:
            judged.undecided.append(Violation(passed.metric, (
                f"{passed.message}, but not passed, {busy}: a pass cannot be told apart "
                "from the load here; run it on a quiet host")))
        else:
            stood.append(passed)
    judged.passed = stood
    judged.notes = [_busy_note(note, refresh, why) for note in judged.notes]
    return why


def _busy_note(note: str, refresh: str, why: str) -> str:
    """One note of a busy run, saying the load where it matters to the reader."""
    # Warn-only latency notes (a reference profile, the 'cpu' key) say the load: a newcomer
    # read "latency_regression (warning only ...)" beside a trend cell of "+0% vs level" and
    # could not tell the warning came from a busy machine. Every note offering the refresh
    # command withdraws it (a memory warning, the suite's "record one with", a stored run too
    # old to compare as much as a latency warning): a newcomer could record a loaded run as
    # the baseline every later run is judged against.
    if note.startswith(_WARN_ONLY) or (refresh and refresh in note):
        return (f"{judge.without_refresh(note, refresh)} (the host was busy: {why}; "
                "do not refresh the baseline from this run)")
    # A first baseline recorded on a busy host (--omni-update-baselines; a stored one is
    # kept instead, verdict.assess) is written as asked, saying what its latencies hold:
    # slowed ones would let every later slowdown pass against it.
    if note.startswith(BASELINE_WRITTEN):
        return (f"{note} while the host was busy ({why}): its latencies hold that load and "
                "later runs judged against it would pass slowdowns; record it again on a "
                "quiet host")
    return note
