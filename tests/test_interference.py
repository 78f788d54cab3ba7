"""Interference diagnostics: per-round host conditions and their plain-words summary.

CPU figures are checked against real busy processes by accounting identities (a stranger's
CPU time shows up as other load, the engine's own tree does not), never against timings.
GPU figures come from a pynvml stand-in modelled on NVML (tests/nvml_double.py).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import psutil
import pytest

from nvml_double import FakeNvml, Gpu
from pytest_omni_perf.measure import interference as itf
from pytest_omni_perf.measure.gpu_conditions import reason_names
from pytest_omni_perf.measure.interference import (
    InterferenceMonitor,
    InterferenceReport,
    RoundConditions,
    monitor_for,
)

BURN = "import sys, time\nend = time.monotonic() + float(sys.argv[1])\nwhile time.monotonic() < end: pass"
# An "engine" whose busy work happens in a child, to show the monitor follows the tree.
ENGINE = (f"import subprocess, sys\nsubprocess.run([sys.executable, '-c', {BURN!r}, '60'])")
NO_POLLING = 3600.0  # the poller thread never wakes: GPU figures come from end-of-round reads


@pytest.fixture
def spawn() -> Iterator[Callable[[str], subprocess.Popen[bytes]]]:
    """Start bounded busy processes (60 s at most) and kill each one at the end."""
    started: list[subprocess.Popen[bytes]] = []

    def start(code: str) -> subprocess.Popen[bytes]:
        proc = subprocess.Popen([sys.executable, "-c", code, "60"])
        started.append(proc)
        return proc

    yield start
    for proc in started:
        try:
            children = psutil.Process(proc.pid).children(recursive=True)
        except psutil.Error:
            children = []
        for child in children:
            child.kill()
        proc.kill()
        proc.wait()


def cpu_s(pid: int) -> float:
    times = psutil.Process(pid).cpu_times()
    return float(times.user + times.system)


def busy_round(monitors: list[InterferenceMonitor], pid: int, at_least_s: float = 0.2
               ) -> tuple[list[RoundConditions], float]:
    """One round on every monitor, lasting until ``pid`` has burned ``at_least_s`` of CPU
    (however slowly a loaded machine schedules it); returns the rounds and what it burned."""
    before = cpu_s(pid)
    for monitor in monitors:
        monitor.begin_round()
    deadline = time.monotonic() + 30
    while cpu_s(pid) - before < at_least_s and time.monotonic() < deadline:
        time.sleep(0.05)
    rounds = [monitor.end_round() for monitor in monitors]
    return rounds, cpu_s(pid) - before


# -- CPU, with real busy processes ------------------------------------------------------------
def test_a_strangers_busy_loop_is_other_load_and_the_summary_says_so(spawn: Callable[
        [str], subprocess.Popen[bytes]]) -> None:
    burners = [spawn(BURN), spawn(BURN)]
    monitor = monitor_for([], [])
    monitor.start()
    for _ in range(3):
        (r,), burned = busy_round([monitor], burners[0].pid)
        assert r.others_cpu_cores is not None and r.host_cpu_busy_pct is not None
        # Every CPU second of the stranger is in "other load" (10 ms ticks: a small margin).
        assert r.others_cpu_cores * r.duration_s >= burned - 0.05
        assert 0 <= r.others_cpu_cores <= (os.cpu_count() or 1) + 0.5
    report = monitor.stop()
    assert not report.rounds[0].clock_event_reasons and report.rounds[0].gpu_util_pct is None
    assert report.noisy_rounds() >= 1
    assert "other processes used" in report.summary() and report.notable


def test_the_engines_own_tree_is_not_other_load(spawn: Callable[
        [str], subprocess.Popen[bytes]]) -> None:
    engine = spawn(ENGINE)
    deadline = time.monotonic() + 30
    while not psutil.Process(engine.pid).children() and time.monotonic() < deadline:
        time.sleep(0.02)
    (child,) = psutil.Process(engine.pid).children()
    knows, stranger = InterferenceMonitor([engine.pid], []), InterferenceMonitor([], [])
    for _ in range(2):
        (mine, theirs), burned = busy_round([knows, stranger], child.pid)
        assert mine.others_cpu_cores is not None and theirs.others_cpu_cores is not None
        # Same window, same host: the only difference is the engine's child's CPU time.
        gap = (theirs.others_cpu_cores - mine.others_cpu_cores) * mine.duration_s
        assert burned - 0.05 <= gap <= burned * 1.1 + 0.05
    assert len(knows.stop().rounds) == 2


def test_short_rounds_get_no_cpu_shares_rather_than_rounding_noise() -> None:
    monitor = monitor_for([], [])
    monitor.start()
    monitor.begin_round()
    r = monitor.end_round()
    assert r.duration_s < itf.CPU_MIN_ROUND_S
    assert r.others_cpu_cores is None and r.host_cpu_busy_pct is None and r.steal_pct is None
    assert r.load_avg_1m == pytest.approx(os.getloadavg()[0], abs=5)


def test_nothing_escapes_the_monitor(monkeypatch: pytest.MonkeyPatch) -> None:
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    monitor = InterferenceMonitor([gone.pid, 2**22 + 7], [])  # an exited and a made-up pid
    monitor.end_round()  # without begin_round
    monitor.begin_round()
    time.sleep(itf.CPU_MIN_ROUND_S)
    assert monitor.end_round().others_cpu_cores is not None  # gone pids are simply skipped
    monkeypatch.setattr(psutil, "cpu_times", lambda: 1 / 0)
    monitor.begin_round()
    time.sleep(itf.CPU_MIN_ROUND_S)
    broken = monitor.end_round()
    assert broken.others_cpu_cores is None and broken.duration_s >= itf.CPU_MIN_ROUND_S
    report = monitor.stop()
    assert len(report.rounds) == 3 and monitor.stop() == report  # idempotent


# -- GPU, through the NVML stand-in -----------------------------------------------------------
def gpu_monitor(nvml: FakeNvml, devices: list[int], engine: list[int],
                interval_s: float = NO_POLLING) -> InterferenceMonitor:
    nvml.nvmlInit()  # as monitor_for does with the real pynvml
    monitor = InterferenceMonitor(engine, devices, nvml, interval_s)
    monitor.start()
    return monitor


def test_gpu_fields_and_summary_follow_nvml(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(itf, "GPU_MIN_ROUND_S", 0.0)  # these rounds are instants
    engine = 4242
    gpus = [Gpu(util=97, sm_clock=1980, reasons=0, pids=[engine]),
            Gpu(util=93, sm_clock=1965, reasons=0x4, pids=[engine])]  # sw_power_cap: benign
    nvml = FakeNvml(gpus)
    monitor = gpu_monitor(nvml, [0, 1], [engine])
    for _ in range(3):
        monitor.begin_round()
        quiet = monitor.end_round()
    assert quiet.gpu_util_pct == 95 and quiet.sm_clock_mhz == 1965
    assert quiet.clock_event_reasons == ("sw_power_cap",) and quiet.other_gpu_processes == 0
    assert monitor.stop().summary() == "quiet"

    monitor = gpu_monitor(nvml, [0, 1], [engine])
    for i in range(6):
        slow = i >= 3
        gpus[0].util = 60 if slow else 97
        gpus[0].sm_clock = 1410 if i >= 4 else 1980
        gpus[1].reasons = 0x1 | 0x2 | 0x4 | (0x8 if slow else 0)  # idle/app clocks: ignored
        gpus[1].pids = [engine, 777] if i >= 4 else [engine]
        monitor.begin_round()
        r = monitor.end_round()
        assert r.clock_event_reasons == (("sw_power_cap", "hw_slowdown") if slow
                                         else ("sw_power_cap",))
        assert r.other_gpu_processes == (1 if i >= 4 else 0)
    report = monitor.stop()
    assert [r.gpu_util_pct for r in report.rounds] == [95, 95, 95, 76.5, 76.5, 76.5]
    assert report.noisy_rounds() == 3
    assert report.summary() == (
        "GPU busy 76 % in 3 of 6 rounds: host-bound, cross-host comparisons unreliable; "
        "SM clock down to 1410 MHz (highest 1965) in 2 of 6 rounds; "
        "clock events hw_slowdown in 3 of 6 rounds; 1 other process on the GPU in 2 of 6 rounds")
    assert nvml.inits == 0  # each monitor shut down the NVML it was given


def test_the_thread_samples_are_averaged_per_round(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(itf, "GPU_MIN_ROUND_S", 0.0)  # these rounds are instants
    gpu = Gpu(utils=[40, 100], pids=[1])
    monitor = gpu_monitor(FakeNvml([gpu]), [0], [1], interval_s=0.002)
    monitor.begin_round()
    # Reads counted from the round's start: the thread may have read before it began.
    start, deadline = gpu.reads, time.monotonic() + 30
    while gpu.reads < start + 6 and time.monotonic() < deadline:
        time.sleep(0.01)
    r = monitor.end_round()
    monitor.stop()
    assert r.gpu_util_pct is not None and 40 < r.gpu_util_pct < 100  # both values were seen


@pytest.mark.parametrize("binding", ["current", "old_binding", "old_driver"])
def test_clock_reasons_on_every_binding_and_driver(binding: str) -> None:
    nvml = FakeNvml([Gpu(reasons=0x20 | 0x40, pids=[1])], binding)  # type: ignore[arg-type]
    monitor = gpu_monitor(nvml, [0], [1])
    monitor.begin_round()
    assert monitor.end_round().clock_event_reasons == ("sw_thermal", "hw_thermal")
    assert "clock events hw_thermal, sw_thermal in 1 of 1 rounds" in monitor.stop().summary()


def test_nvml_errors_become_none() -> None:
    gpus = [Gpu(util=90, pids=[1], mig=True), Gpu(util=90, pids=[1])]
    nvml = FakeNvml(gpus)
    monitor = gpu_monitor(nvml, [0], [1])
    monitor.begin_round()
    mig = monitor.end_round()
    assert mig.gpu_util_pct is None and mig.sm_clock_mhz == 1980  # MIG: no utilization
    gpus[0].lost = True
    monitor.begin_round()
    lost = monitor.end_round()
    assert (lost.gpu_util_pct, lost.sm_clock_mhz, lost.other_gpu_processes) == (None,) * 3
    monitor.stop()
    assert monitor.stop().rounds[1] == lost and nvml.inits == 0
    nvml.nvmlInit()
    bad_index = InterferenceMonitor([1], [5], nvml)  # NVML refuses the handle: CPU figures
    assert not bad_index.on_gpu
    bad_index.begin_round()
    assert bad_index.end_round().gpu_util_pct is None


def test_processes_of_another_pid_namespace_are_not_called_others() -> None:
    monitor = gpu_monitor(FakeNvml([Gpu(pids=[90001, 90002])]), [0], [os.getpid() + 10**6])
    monitor.begin_round()
    assert monitor.end_round().other_gpu_processes is None
    monitor.stop()


def test_without_pynvml_the_monitor_is_cpu_only(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "pynvml", None)  # import pynvml -> ImportError
    assert not monitor_for([1], [0]).on_gpu
    assert not monitor_for([1], []).on_gpu


def test_reason_names_keep_unknown_bits() -> None:
    assert reason_names(0x1 | 0x2) == ()
    assert reason_names(0x4 | 0x80 | 0x800) == ("sw_power_cap", "hw_power_brake", "reason_0x800")


# -- the summary and the JSON form -------------------------------------------------------------
def rounds(n: int, **fields: object) -> list[RoundConditions]:
    return [RoundConditions(duration_s=0.5, **fields) for _ in range(n)]  # type: ignore[arg-type]


def test_summary_needs_a_fifth_of_the_rounds() -> None:
    calm = rounds(13, others_cpu_cores=0.1, steal_pct=0.0)
    assert InterferenceReport(tuple(calm + rounds(2, others_cpu_cores=1.6))).summary() == "quiet"
    loud = InterferenceReport(tuple(calm[:12] + rounds(3, others_cpu_cores=1.6, steal_pct=9.0)))
    assert loud.summary() == ("other processes used 1.6 cores in 3 of 15 rounds; "
                              "hypervisor stole 9 % of the CPU in 3 of 15 rounds")
    assert loud.noisy_rounds() == 3 and loud.notable
    assert InterferenceReport(()).summary() == "" and not InterferenceReport(()).notable


def test_report_round_trips_through_json() -> None:
    report = InterferenceReport(tuple(
        rounds(2, gpu_util_pct=64.0, sm_clock_mhz=1980, clock_event_reasons=("hw_slowdown",),
               other_gpu_processes=2, host_cpu_busy_pct=50.0, others_cpu_cores=0.2,
               steal_pct=None, load_avg_1m=1.5)))
    data = json.loads(json.dumps(report.to_dict(), allow_nan=False))
    assert data["summary"] == report.summary() and data["noisy_rounds"] == 2
    assert InterferenceReport.from_dict(data) == report


@pytest.mark.parametrize(("data", "message"), [
    ({"rounds": "x"}, "interference.rounds: expected a list, got 'x'"),
    ({"rounds": [{"duration_s": None}]},
     "interference.rounds[0].duration_s: expected a number, got None"),
    ({"rounds": [{"duration_s": 1, "gpu_util_pct": "64"}]},
     "interference.rounds[0].gpu_util_pct: expected a number or null, got '64'"),
    ({"rounds": [{"duration_s": 1, "clock_event_reasons": [4]}]},
     "interference.rounds[0].clock_event_reasons: expected a list of names, got [4]"),
])
def test_bad_json_names_the_field(data: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError) as caught:
        InterferenceReport.from_dict(data)
    assert str(caught.value) == message


def test_contention_needs_most_rounds_busy() -> None:
    from pytest_omni_perf.measure.contention import contended
    from pytest_omni_perf.measure.interference import InterferenceReport, RoundConditions

    busy, idle, short = (RoundConditions(0.2, others_cpu_cores=1.5),
                         RoundConditions(0.2, others_cpu_cores=0.05), RoundConditions(0.02))
    assert contended(InterferenceReport((busy, busy, busy, idle, idle))) == \
        "other processes used 1.5 cores in 3 of 5 rounds"
    assert contended(InterferenceReport((busy, busy, idle, idle, idle))) is None
    assert contended(InterferenceReport((short,) * 5)) is None  # no CPU shares: not contended
    stolen = RoundConditions(0.2, steal_pct=20.0)
    assert contended(InterferenceReport((stolen,) * 2)) == \
        "the hypervisor stole CPU in 2 of 2 rounds"
    assert contended(InterferenceReport(())) is None


def test_inconclusive_latency_gates_name_a_busy_host() -> None:
    """A newcomer on a loaded machine read 12 inconclusive lines that never said why; the
    load was only in the interference lines further down."""
    from types import SimpleNamespace
    from typing import Any

    from pytest_omni_perf import busy_host, judge
    from pytest_omni_perf.measure.interference import InterferenceReport, RoundConditions
    from pytest_omni_perf.results import Violation

    busy = RoundConditions(0.2, others_cpu_cores=1.5)
    measured: Any = SimpleNamespace(interference=InterferenceReport((busy,) * 4))
    judged = judge.Judgement()
    judged.undecided = [Violation("speedup", f"speedup straddles; {judge.STRADDLE_ADVICE}"),
                        Violation("ssim", "ssim unknown")]
    judged.add("fail", "latency_regression",
               f"latency is 1.31x; {judge.REFRESH_LEAD}pytest x --omni-update-baselines",
               warn_only=True, why_warn="on the 'cpu' key, machines differ")
    judged.add("fail", "vram_regression", "peak memory is 1.4x", warn_only=True,
               why_warn="on the 'cpu' key, machines differ")
    busy_host.cannot_decide(judged, measured, None,
                                     refresh="pytest x --omni-update-baselines")
    # More rounds cannot decide a timing on a busy host (they end "not passed"): a newcomer
    # was told "more rounds ... or a quieter machine", and only the second is advice.
    assert [u.message for u in judged.undecided] == [
        "speedup straddles; a quieter machine would decide it (the host was busy: this "
        "profile: other processes used 1.5 cores in 4 of 4 rounds)", "ssim unknown"]
    # A warning about a timing names the load as well and withdraws the refresh command (a
    # loaded run must not become the baseline); one about memory does not.
    assert judged.notes == [
        "latency_regression (warning only: on the 'cpu' key, machines differ): latency is "
        "1.31x (the host was busy: this profile: other processes used 1.5 cores in 4 of 4 "
        "rounds; do not refresh the baseline from this run)",
        "vram_regression (warning only: on the 'cpu' key, machines differ): peak memory is 1.4x"]


def test_no_message_of_a_busy_host_offers_the_refresh_command(tmp_path: Path) -> None:
    """Only the latency warning withdrew the refresh command on a busy host; a memory
    warning, the suite's "record one with", a stored run too old to compare and a strict
    latency failure turned inconclusive still offered it, so a newcomer could record a
    loaded run as the baseline later runs are judged against."""
    from types import SimpleNamespace
    from typing import Any

    from pytest_omni_perf import busy_host, judge, verdict
    from pytest_omni_perf.baselines import BaselineStore
    from pytest_omni_perf.measure.stats import RatioInterval
    from pytest_omni_perf.profiles import Bounds, Profile

    command = "pytest 't.py::test_x[cache_dit]' --omni-profile=cache_dit --omni-update-baselines"
    busy = RoundConditions(0.2, others_cpu_cores=1.3)
    measured: Any = SimpleNamespace(interference=InterferenceReport((busy,) * 5))
    slower = RatioInterval(1.4, 1.2, 1.6, 0.95, 10)
    bounds = Bounds(min_ssim=0.99)  # and the defaults max_regression, max_vram_regression

    def facts(**changes: Any) -> judge.StoredFacts:
        return judge.StoredFacts(**{
            "stored_path": "baselines/x", "ssim": 0.9, "latency": slower,
            "relative_to": "eager", "memory_gib": 2.0, "stored_memory_gib": 1.0,
            "strict": True, "refresh_command": command, **changes})

    judged = judge.stored_judgement(bounds, facts())  # latency, SSIM and VRAM fail
    judged.extend(judge.latency_judgement(bounds, facts(paired_reference=False)))
    judged.extend(judge.stored_judgement(Bounds(max_regression=None), facts(strict=False)))
    references = verdict.References(BaselineStore(tmp_path, "cpu"), update=False,
                                    refresh_command=command, missing_ok=True)
    note = references.lookup("t.py::test_x[cache_dit]", Profile("cache_dit", {}), "").note
    assert note is not None and command in note
    judged.notes.append(note)
    offered = judged.violations + judged.undecided
    assert len(judged.notes) == 3 and all(command in m for m in judged.notes)
    assert len(offered) == 3 and all(command in v.message for v in offered)

    load = "this profile: other processes used 1.3 cores in 5 of 5 rounds"
    assert busy_host.cannot_decide(judged, measured, None, refresh=command) == load
    # Notes withdraw it and say why.
    assert [n[:24] for n in judged.notes] == [
        "latency_regression (warn", "vram_regression (warning", "no stored run of t.py::t"]
    for message in judged.notes:
        assert "--omni-update-baselines" not in message and "with:" not in message
        assert message.endswith(f"(the host was busy: {load}; do not refresh the baseline "
                                "from this run)")
    assert "baseline profile): latency relative to 'eager'" in judged.notes[0]
    # The latency failure is a timing: inconclusive, without the command.
    assert [u.metric for u in judged.undecided] == ["latency_regression"]
    assert "--omni-update-baselines" not in judged.undecided[0].message
    assert "the whole interval is above the bound; not failed, because the host was busy" \
        in judged.undecided[0].message
    # SSIM and VRAM failures stand: the command is what fixes them, on a quiet host.
    assert [v.metric for v in judged.violations] == ["stored_ssim", "vram_regression"]
    for violation in judged.violations:
        assert violation.message.endswith(
            f"; {judge.REFRESH_LEAD}{command} (on a quiet host: this one was busy, {load})")


def test_a_busy_host_turns_a_latency_pass_undecided_and_leaves_quality_and_memory() -> None:
    """A no-op profile identical to eager passed min_speedup=1.05 at 2.004x [1.148, 10.075]
    on a busy 2-core machine (results/cpu/noop-drill-busy-3/): under that load an interval
    can be wrong in either direction, so a latency pass is undecided too, naming the load;
    an SSIM or VRAM verdict is not a timing and stands."""
    import dataclasses
    from types import SimpleNamespace
    from typing import Any

    from pytest_omni_perf import busy_host, judge
    from pytest_omni_perf.measure.stats import RatioInterval
    from pytest_omni_perf.profiles import Bounds

    busy = RoundConditions(0.2, others_cpu_cores=1.0)
    quiet = RoundConditions(0.2, others_cpu_cores=0.05)
    bounds = Bounds(min_speedup=1.05, min_ssim=0.98, max_vram_gib=5.0, max_latency_s=2.0)

    def judged_on(measured: Any, base: Any) -> judge.Judgement:
        judged = judge.session_judgement(bounds, judge.SessionFacts(
            profile="compile_off", baseline="eager",
            speedup=RatioInterval(2.004, 1.148, 10.075, 0.95, 7), ssim=0.9, ssim_worst=None,
            memory_gib=6.0, memory_ratio=None, memory_is_vram=True))
        judged.extend(judge.absolute_latency_judgement(
            bounds, RatioInterval(0.5, 0.4, 0.6, 0.95, 7)))
        busy_host.cannot_decide(judged, measured, base)
        return judged

    on_quiet = judged_on(SimpleNamespace(interference=InterferenceReport((quiet,) * 7)), None)
    assert [p.metric for p in on_quiet.passed] == ["speedup", "max_latency"]
    assert on_quiet.undecided == [] and [v.metric for v in on_quiet.violations] == [
        "ssim", "vram"]
    assert on_quiet.passed[0].message.endswith(
        "bound min_speedup=1.05: the whole interval clears the bound")

    on_busy = judged_on(SimpleNamespace(interference=InterferenceReport((busy,) * 7)), None)
    assert on_busy.passed == [] and on_busy.violations == on_quiet.violations
    assert [u.metric for u in on_busy.undecided] == ["speedup", "max_latency"]
    assert on_busy.undecided[0].message == (
        "compile_off is 2.004x [1.148, 10.075] (95% CI, 7 rounds) against baseline profile "
        "'eager' measured in this session, bound min_speedup=1.05: the whole interval clears "
        "the bound, but not passed, because the host was busy (this profile: other processes "
        "used 1.0 cores in 7 of 7 rounds): a pass cannot be told apart from the load here; "
        "run it on a quiet host")
    # The baseline's engine under load is as much the load as this profile's.
    base_busy = judged_on(SimpleNamespace(interference=InterferenceReport((quiet,) * 7)),
                          SimpleNamespace(interference=InterferenceReport((busy,) * 7)))
    assert [u.metric for u in base_busy.undecided] == ["speedup", "max_latency"]
    assert "because the host was busy (its baseline: other processes used 1.0 cores in 7 " \
        "of 7 rounds)" in base_busy.undecided[1].message
    # extend keeps the passes of both judgements, as it keeps everything else.
    merged = judge.Judgement()
    merged.extend(dataclasses.replace(on_quiet, passed=on_quiet.passed[:1]))
    merged.extend(dataclasses.replace(on_quiet, passed=on_quiet.passed[1:]))
    assert merged.passed == on_quiet.passed


def test_a_baseline_recorded_on_a_busy_host_says_so() -> None:
    """``--omni-update-baselines`` on a busy host wrote the baseline with only "baseline
    written to ...": its slowed latencies would let every later slowdown pass against it."""
    from types import SimpleNamespace
    from typing import Any

    from pytest_omni_perf import busy_host, judge

    def recorded(cores: float) -> list[str]:
        measured: Any = SimpleNamespace(interference=InterferenceReport(
            (RoundConditions(0.2, others_cpu_cores=cores),) * 5))
        judged = judge.Judgement()
        judged.notes.append(f"{busy_host.BASELINE_WRITTEN} baselines/cpu/t/eager")
        busy_host.cannot_decide(judged, measured, None)
        return judged.notes

    assert recorded(0.05) == ["baseline written to baselines/cpu/t/eager"]
    assert recorded(1.2) == [
        "baseline written to baselines/cpu/t/eager while the host was busy (this profile: "
        "other processes used 1.2 cores in 5 of 5 rounds): its latencies hold that load and "
        "later runs judged against it would pass slowdowns; record it again on a quiet host"]
