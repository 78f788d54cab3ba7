"""The gate functions on synthetic numbers: which facts fail a test, which only warn."""

from __future__ import annotations

from pytest_omni_perf import gates
from pytest_omni_perf.measure.stats import latency_regression
from pytest_omni_perf.profiles import Bounds

SESSION = gates.SessionFacts(profile="cache_dit", baseline="eager", speedup=1.5, ssim=0.99,
                             ssim_worst=0.97, memory_gib=6.0, memory_ratio=1.0,
                             memory_is_vram=True)


def stored(**changes: object) -> gates.StoredFacts:
    facts = dict(stored_path="baselines/x", ssim=0.999, regression=None, relative_to="eager",
                 memory_gib=6.0, stored_memory_gib=6.0, strict=True,
                 refresh_command="pytest x --omni-update-baselines")
    facts.update(changes)
    return gates.StoredFacts(**facts)  # type: ignore[arg-type]


def test_session_gates_pass_and_fail() -> None:
    assert gates.session_gates(Bounds(min_speedup=1.2, min_ssim=0.98), SESSION) == ([], [])
    violations, _ = gates.session_gates(Bounds(min_speedup=1.6, min_ssim=0.995), SESSION)
    assert [v.metric for v in violations] == ["speedup", "ssim"]
    assert "1.500x against baseline profile 'eager'" in violations[0].message
    assert "(worst frame 0.9700)" in violations[1].message


def test_vram_bounds_only_on_gpu_memory() -> None:
    bounds = Bounds(max_vram_gib=5.0, max_vram_ratio=0.9)
    violations, _ = gates.session_gates(bounds, SESSION)
    assert [v.metric for v in violations] == ["vram", "vram_ratio"]
    cpu = gates.SessionFacts(**{**SESSION.__dict__, "memory_is_vram": False})
    violations, notes = gates.session_gates(bounds, cpu)
    assert violations == [] and "VRAM bounds not applied: CPU run" in notes[0]


def test_relative_latency_regression_fails_on_gpu_keys() -> None:
    verdict = latency_regression([1.3] * 6, [1.0] * 6)
    violations, _ = gates.stored_gates(Bounds(), stored(regression=verdict))
    assert violations[0].metric == "latency_regression"
    assert "relative to 'eager' (both measured alongside) is 1.300x" in violations[0].message
    assert "refresh it with: pytest x --omni-update-baselines" in violations[0].message


def test_absolute_and_cpu_regressions_only_warn() -> None:
    verdict = latency_regression([1.3] * 6, [1.0] * 6)
    for facts, why in ((stored(regression=verdict, relative_to=None), "reference profile"),
                       (stored(regression=verdict, strict=False), "'cpu' key")):
        violations, notes = gates.stored_gates(Bounds(), facts)
        assert violations == [] and why in notes[0]


def test_noise_is_not_a_regression() -> None:
    verdict = latency_regression([1.0, 1.02, 0.99, 1.01, 1.0], [1.0, 0.98, 1.01, 1.0, 1.02])
    assert gates.stored_gates(Bounds(), stored(regression=verdict)) == ([], [])


def test_memory_regression_and_stored_ssim() -> None:
    violations, _ = gates.stored_gates(Bounds(min_ssim=0.99),
                                       stored(ssim=0.9, memory_gib=7.0, stored_memory_gib=6.0))
    assert [v.metric for v in violations] == ["stored_ssim", "vram_regression"]
