"""Running rounds: warmup, adaptive interleaved rounds, the baseline profile beside them.

The harness measures; ``judge`` and ``verdict`` decide. Rounds are adaptive: after
``RoundBudget.first`` rounds the gates that more rounds can decide (speedup, latency against
the stored run) are judged on their intervals; while one straddles its bound and the budget
allows, more rounds follow (looks at 5, 10, 15, 22, 30 rounds by default). Callable outside a test function (a sweep builds a ``Harness``
directly); pytest only supplies the session state and collects ``results``.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from pytest_omni_perf import judge, verdict
from pytest_omni_perf.engines.base import EngineError, EngineSpec, GenerationRequest
from pytest_omni_perf.engines.engine_pool import EnginePool, LiveEngine
from pytest_omni_perf.engines.startup import startup_of
from pytest_omni_perf.hardware import HardwareInfo
# Re-exported: the budget is the harness's parameter (plugin.py, benchmarks build it).
from pytest_omni_perf.measure.budget import RoundBudget as RoundBudget
from pytest_omni_perf.measure.interference import InterferenceMonitor, monitor_for
from pytest_omni_perf.measure.memory import (
    MemorySampler, held_over, sampler_for, with_engine_peak,
)
from pytest_omni_perf.parity import latency_gate as parity_gate
from pytest_omni_perf.parity import parity_backend
from pytest_omni_perf.profiles import Bounds, Profile
from pytest_omni_perf.request_inputs import shown_inputs
from pytest_omni_perf.results import Measurement, PerfResult
from pytest_omni_perf.suite_cost import SuiteCost

RequestKey = tuple[str, str, str, str]
"""(model, backend, profile, ``GenerationRequest.key()``): inputs count by pixel digest."""


def profile_request(request: GenerationRequest, profile: Profile) -> GenerationRequest:
    """The request as this profile sends it (``fewer_steps`` scales the step count)."""
    scale = profile.request.get("steps_scale")
    if scale is None:
        return request
    steps = max(1, round(request.num_inference_steps * float(scale)))
    return dataclasses.replace(request, num_inference_steps=steps)


@dataclasses.dataclass
class _Rounds:
    """One engine's rounds in progress."""

    profile: Profile
    spec: EngineSpec
    generation: GenerationRequest
    live: LiveEngine
    reused: bool
    sampler: MemorySampler
    monitor: InterferenceMonitor = dataclasses.field(
        default_factory=lambda: InterferenceMonitor([], []))
    """What the host did in each round (GPU busy, clocks, other load)."""
    samples: list[float] = dataclasses.field(default_factory=list)
    engine_samples: list[float] = dataclasses.field(default_factory=list)
    gpu_samples: list[float] = dataclasses.field(default_factory=list)
    last: Any = None
    after_larger: str = ""
    """The larger request its engine served before these rounds ("1024x1024"), or ""."""

    def send(self) -> tuple[Any, float, bool]:
        """One request, timed around the call: (output, seconds, first since engine start)."""
        began = time.perf_counter()
        output = self.live.engine.generate(self.generation)
        elapsed = time.perf_counter() - began
        first = self.live.first_request_s is None
        if first:
            self.live.first_request_s = elapsed
        self.live.served(self.generation)
        self.last = output
        return output, elapsed, first

    def one(self) -> None:
        """One measured round."""
        self.monitor.begin_round()
        output, elapsed, _ = self.send()
        self.monitor.end_round()
        self.samples.append(elapsed)
        self.engine_samples.append(output.engine_latency_s)
        if "cuda_event_s" in output.engine_metrics:
            self.gpu_samples.append(float(output.engine_metrics["cuda_event_s"]))


Undecided = Callable[[list[_Rounds]], str]
"""Given the rounds so far: 'open' (a gate is undecided and more rounds could decide it),
'within_spread' (undecided, but within the run-to-run spread more rounds cannot narrow) or
'decided'."""


class Harness:
    """Measures one test's profile (and its baseline profile) on requests, and judges."""

    def __init__(self, *, nodeid: str, profile: Profile, profiles: Mapping[str, Profile],
                 bounds: Bounds, model: str, backend: str, hardware: HardwareInfo,
                 pool: EnginePool, spec_for: Callable[[Profile], EngineSpec],
                 budget: RoundBudget, warmup: int, references: verdict.References,
                 baseline_cache: dict[RequestKey, Measurement],
                 cost: SuiteCost | None = None, bound_notes: Sequence[str] = (),
                 ssim_origin: str = "") -> None:
        self.nodeid = nodeid
        self.profile = profile
        self.profiles = profiles
        self.bounds = bounds
        self.model = model
        self.backend = backend
        self.hardware = hardware
        self.pool = pool
        self.spec_for = spec_for
        self.budget = budget
        self.warmup = warmup
        self.references = references
        self.baseline_cache = baseline_cache
        self.cost = cost if cost is not None else SuiteCost()
        self.bound_notes = tuple(bound_notes)
        """Why a bound of this test is not applied here (hardware_bounds.resolve_keyed)."""
        self.ssim_origin = ssim_origin
        """Where min_ssim came from (markers.bound_origin), said when it fails."""
        self.results: list[PerfResult] = []
        self.loads: list[Any] = []
        """``load_runs.LoadReport`` of each ``omni_perf.load()`` call, in call order."""

    def measure(self, request: GenerationRequest, label: str | None = None) -> PerfResult:
        """Measure the active profile on ``request`` (and its baseline profile beside it),
        judge every bound, and keep the result (the plugin fails the test on it later)."""
        label = label or (str(len(self.results) + 1) if self.results else "")
        baseline = self._baseline_profile()
        self.cost.measurements += 1
        references = self.references.for_series(self.nodeid, self.profile, label)
        stored = references.lookup(self.nodeid, self.profile, label)
        other, parity_note = parity_backend(self.bounds, self.backend)
        parity: tuple[Measurement, Measurement] | None = None
        if other is not None and baseline is None:
            # A reference profile's only partner is the parity backend: one pair serves.
            measured, partner = self._measure_pair(request, self.profile, stored, references,
                                                   partner_backend=other)
            assert partner is not None  # measured beside it or before it
            base, parity = None, (partner, measured)
        else:
            measured, base = self._measure_pair(request, baseline, stored, references)
            if other is not None:
                beside, partner = self._measure_pair(request, self.profile, stored,
                                                     references, partner_backend=other)
                assert partner is not None
                parity = (partner, beside)
        result = verdict.assess(
            nodeid=self.nodeid, profile=self.profile, label=label, bounds=self.bounds,
            measured=measured, base=base, stored=stored, references=references,
            fingerprint_devices=self.spec_for(self.profile).devices, hardware=self.hardware,
            confidence=self.budget.confidence, parity=parity, ssim_origin=self.ssim_origin)
        result.notes += [*self.bound_notes, *filter(None, [parity_note])]
        result.notes += filter(None, [measured.shared_engine_note(base)])
        result.inputs = shown_inputs(request.images, request.mask, request.video)
        self.results.append(result)
        return result

    # -- pairing ----------------------------------------------------------------------------
    def _baseline_profile(self) -> Profile | None:
        name = self.profile.baseline
        return None if name is None else self.profiles[name]

    def _spec(self, profile: Profile, backend: str | None = None) -> EngineSpec:
        """``profile``'s engine; on another ``backend``, a parity partner started here."""
        spec = self.spec_for(profile)
        if backend is None or backend == spec.backend:
            return spec
        return dataclasses.replace(spec, backend=backend, server_url="")

    def _key(self, profile: Profile, request: GenerationRequest, backend: str | None = None
             ) -> RequestKey:
        return (self.model, backend or self.backend, profile.name, request.key())

    def _measure_pair(self, request: GenerationRequest, baseline: Profile | None,
                      stored: verdict.StoredLookup, references: verdict.References,
                      partner_backend: str | None = None
                      ) -> tuple[Measurement, Measurement | None]:
        """This profile's measurement and its partner's: the baseline profile, or with
        ``partner_backend`` the same profile on that backend (parity)."""
        if baseline is None:
            # A reference profile: measured once per request and reused, also as a baseline.
            own_key = self._key(self.profile, request)
            if own_key not in self.baseline_cache:
                (self.baseline_cache[own_key],) = self._run(
                    [self.profile], request, self._open_gates(None, stored, references))
            else:
                self.cost.baseline_reused += 1
            return self.baseline_cache[own_key], None
        base_key = self._key(baseline, request, partner_backend)
        base_spec, spec = self._spec(baseline, partner_backend), self.spec_for(self.profile)
        backends = [partner_backend, None]
        parity = partner_backend is not None
        base = self.baseline_cache.get(base_key)
        cached = base is not None
        if base is None and not self._room_for_two(spec, base_spec, None):
            # One engine per GPU set until we know the baseline's footprint: measure it alone.
            (base,) = self._run([baseline], request, _nothing_open, backends=backends[:1])
        if cached and not self._room_for_two(spec, base_spec, base):
            self.cost.baseline_reused += 1  # too big to run beside: the earlier one serves
        if self._room_for_two(spec, base_spec, base):
            # Alternate the two engines' rounds, so drift (other load, clocks, thermals) hits
            # both alike; a baseline measured minutes earlier would not be a fair reference.
            base, measured = self._run([baseline, self.profile], request,
                                       self._open_gates(None, stored, references, parity),
                                       capacity=2, backends=backends)
        else:
            assert base is not None
            (measured,) = self._run([self.profile], request,
                                    self._open_gates(base, stored, references, parity))
        assert base is not None
        self.baseline_cache[base_key] = base
        return measured, base

    def _open_gates(self, base: Measurement | None, stored: verdict.StoredLookup,
                    references: verdict.References, parity: bool = False) -> Undecided:
        """The check between looks: are the speedup or stored-latency gates still open?
        ``base``: the baseline measured earlier (not alongside), if that is the reference.
        ``parity``: the reference is the parity backend's rounds, whose gate is
        max_latency_ratio (and a reference profile's own gates, measured only here)."""
        def undecided(runs: list[_Rounds]) -> str:
            mine = runs[-1].samples
            if len(runs) == 2:
                reference, paired = runs[0].samples, True
            elif base is not None:
                reference, paired = base.samples, False
            else:
                reference, paired = None, False
            own = not parity or self.profile.baseline is None
            judged = verdict.latency_gates(
                bounds=self.bounds, profile=self.profile, samples=mine,
                reference=None if parity else reference,
                paired=paired, stored=stored, request=runs[-1].generation.as_dict(),
                references=references,
                confidence=self.budget.confidence) if own else judge.Judgement()
            if parity and reference is not None:
                judged.extend(parity_gate(
                    self.bounds, profile=self.profile.name, backend=self.backend,
                    samples=mine, parity=reference, paired=paired,
                    confidence=self.budget.confidence, spread=references.spread))
            # Open while a gate is undecided and more rounds can still narrow its interval.
            if not judged.undecided:
                return "decided"
            return "open" if judged.narrowable else "within_spread"
        return undecided

    def _room_for_two(self, spec: EngineSpec, base_spec: EngineSpec,
                      base: Measurement | None) -> bool:
        """Both engines can live at once: on CPU, or when three times the baseline's measured
        peak fits the smallest GPU it uses (the profile may need more than the baseline), or
        when both are servers attached with --omni-server-url (neither holds memory here), or
        when the baseline's live engine serves the profile too (equal options)."""
        if spec.server_url and base_spec.server_url:
            return True
        if self.pool.shares(spec, base_spec):
            return True  # one engine serves both: nothing more to fit
        if base_spec.devices != spec.devices:
            return False
        if not self.hardware.gpus:
            return True
        if base is None or base.memory.kind != "nvml" or not base.memory.peak_bytes:
            return False
        used = [g for g in self.hardware.gpus if not spec.devices or g.index in spec.devices]
        smallest = min(g.vram_gib for g in used) * 2**30
        return 3 * base.memory.peak_bytes < smallest

    # -- rounds -----------------------------------------------------------------------------
    def _run(self, profiles: list[Profile], request: GenerationRequest, open_gates: Undecided,
             capacity: int = 1, backends: Sequence[str | None] = ()) -> list[Measurement]:
        """Measure ``profiles`` (on ``backends[i]``, else this run's), rounds alternating."""
        runs: list[_Rounds] = []
        for i, p in enumerate(profiles):
            runs.append(self._prepare(p, request, capacity,
                                      backends[i] if i < len(backends) else None, runs))
        # One sampler per engine process: two profiles sharing an engine share its peak.
        samplers = {id(run.sampler): run.sampler for run in runs}
        # Interleaved engines wait while the other one runs, so neither counts as the
        # other's interference.
        ours = [pid for run in runs for pid in run.live.pids()]
        for run in runs:
            run.monitor = monitor_for(
                ours, run.spec.devices or [g.index for g in self.hardware.gpus])
        self.cost.rounds_run += len(runs)
        self.cost.baseline_measured += sum(
            run.profile is not self.profile or run.spec.backend != self.backend for run in runs)
        try:
            for run in runs:
                for _ in range(self.warmup):
                    self._warm(run)
            for sampler in samplers.values():
                sampler.start()
            for run in runs:
                run.monitor.start()
            stopped_by = adaptive_rounds(runs, open_gates, self.budget)
        except EngineError:
            for run in runs:  # a failed engine is not reused: the next test gets a fresh one
                self.pool.discard(run.spec)
            raise
        finally:
            peaks = {key: sampler.stop() for key, sampler in samplers.items()}
            for run in runs:
                run.monitor.stop()  # never raises
        interleaved = profiles[0].name if len(profiles) > 1 else None
        return [self._to_measurement(run, peaks[id(run.sampler)], interleaved if i else None,
                                     stopped_by) for i, run in enumerate(runs)]

    def _prepare(self, profile: Profile, request: GenerationRequest, capacity: int,
                 backend: str | None = None, beside: Sequence[_Rounds] = ()) -> _Rounds:
        """``profile``'s round series; its engine's sampler is that of a run ``beside`` it
        in the same engine, if any."""
        spec = self._spec(profile, backend)
        live = self.pool.get(spec, capacity)
        reused = live.requests > 0
        sampler = next((run.sampler for run in beside if run.live is live), None) \
            or sampler_for(live.pids, spec.devices or [g.index for g in self.hardware.gpus])
        generation = profile_request(request, profile)
        return _Rounds(profile, spec, generation, live, reused, sampler,
                       after_larger=live.larger_than(generation))

    def _warm(self, run: _Rounds) -> None:
        _, elapsed, first = run.send()
        if first:
            spec = run.spec
            self.pool.progress(f"first request of {spec.model}[{spec.profile_name}] (warm-up, "
                               f"and compile if the profile compiles) took {elapsed:.1f} s")

    def _to_measurement(self, run: _Rounds, peak: Any, interleaved: str | None,
                        stopped_by: str) -> Measurement:
        from pytest_omni_perf.measure.stats import LatencyStats

        info = run.live.engine.describe()
        return Measurement(
            profile=run.profile.name, model=self.model, backend=run.spec.backend,
            request=run.generation.as_dict(), samples=run.samples,
            latency=LatencyStats.from_samples(run.samples),
            engine_latency=LatencyStats.from_samples(run.engine_samples),
            memory=held_over(with_engine_peak(peak, run.last.engine_metrics),
                             run.spec.backend, run.after_larger),
            start_s=run.live.start_s, first_request_s=run.live.first_request_s,
            engine_reused=run.reused, applied=dict(info.applied),
            engine_metrics={**run.last.engine_metrics,
                            **({"cuda_event_samples_s": run.gpu_samples} if run.gpu_samples
                               else {})},
            frames=list(run.last.frames),
            interleaved_with=interleaved, devices=list(run.spec.devices),
            engine_profile="" if run.live.key[1] == run.profile.name else run.live.key[1],
            stopped_by=stopped_by, interference=run.monitor.stop(),  # idempotent
            startup=startup_of(info).completed(start_s=run.live.start_s,
                                               first_request_s=run.live.first_request_s),
        )


def adaptive_rounds(runs: list[_Rounds], open_gates: Undecided, budget: RoundBudget) -> str:
    """Rounds of ``runs`` in alternation, a look after ``budget.first`` and at each
    ``budget.next_target``, until no gate is open or the budget is spent; says why it stopped
    ('decided', 'within_spread', 'max_rounds' or 'max_seconds'). The harness and
    benchmarks/detection_power.py share it, so the benchmark measures the plugin's rule."""
    scale, target = 1, budget.first
    measured_s = 0.0
    while True:
        while len(runs[0].samples) < target:
            began = time.perf_counter()
            for run in runs:
                run.one()
            measured_s += time.perf_counter() - began
        if (state := open_gates(runs)) != "open":
            return state
        done = len(runs[0].samples)
        target = budget.next_target(done, measured_s, scale)
        if target <= done and budget.retry and scale == 1:
            scale = 2  # --omni-inconclusive=retry: the same budget once more
            target = budget.next_target(done, measured_s, scale)
        if target <= done:
            return "max_rounds" if done >= budget.max_rounds * scale else "max_seconds"


def _nothing_open(runs: list[_Rounds]) -> str:
    """A baseline measured alone, before the profile: nothing of its own to decide."""
    return "decided"
