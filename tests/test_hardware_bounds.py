"""Absolute latency bounds keyed by hardware (``omni_bounds(max_latency_s={"H100": 3.5})``),
through real pytest runs with the stand-in engine (20 ms a request) on the 'cpu' key."""

from __future__ import annotations

import pytest

from pytest_omni_perf.hardware import names_this_machine
from pytest_omni_perf.hardware_bounds import resolve_keyed
from pytest_omni_perf.profiles import ProfileError

TESTS = """
import pytest

@pytest.mark.omni_bounds(max_latency_s={"H100": 0.001, "cpu": 0.005})
def test_too_slow_here(omni_perf):
    omni_perf.measure(width=32, height=32, num_inference_steps=2)

@pytest.mark.omni_bounds(max_latency_s={"cpu": 1.0})
def test_fast_enough(omni_perf):
    omni_perf.measure(width=32, height=32, num_inference_steps=2)

@pytest.mark.omni_bounds(max_latency_s={"H100": 0.001, "nvidia-h200": 0.001})
def test_no_key_for_this_machine(omni_perf):
    omni_perf.measure(width=32, height=32, num_inference_steps=2)

@pytest.mark.omni_bounds(max_latency_s=0.005)
def test_plain_number(omni_perf):
    omni_perf.measure(width=32, height=32, num_inference_steps=2)
"""


@pytest.mark.parametrize("xdist", [[], ["-n", "2"]], ids=["serial", "xdist"])
def test_keyed_latency_bounds_apply_to_this_machine_only(standin_pytester: pytest.Pytester,
                                                         xdist: list[str]) -> None:
    standin_pytester.makepyfile(test_keyed=TESTS)
    result = standin_pytester.runpytest_subprocess(
        "-p", "no:cacheprovider", "--omni-rounds=5", "--omni-warmup=1",
        "--omni-update-baselines", "-rA", *xdist)
    result.assert_outcomes(passed=2, failed=2)
    result.stdout.fnmatch_lines_random([
        "FAILED test_keyed.py::test_too_slow_here?eager?*",
        "FAILED test_keyed.py::test_plain_number?eager?*",
        "[[]eager[]] max_latency: latency is 0.0* s [[]0.0*, 0.0*[]] (95% CI, 5 rounds*), "
        "bound max_latency_s=0.005 s: the whole interval is above the bound",
        "*test_no_key_for_this_machine*: @pytest.mark.omni_bounds.max_latency_s is keyed by "
        "H100, nvidia-h200: no key names this machine (no GPU; hardware key 'cpu'), so the "
        "bound is not applied",
    ])
    assert "test_fast_enough" not in "\n".join(
        line for line in result.outlines if "max_latency" in line)


def test_bad_keyed_values_are_collection_errors(pytester: pytest.Pytester) -> None:
    pytester.makepyfile("""
import pytest

@pytest.mark.omni_bounds(max_latency_s={"H100": float("nan")})
def test_a(omni_perf): pass

@pytest.mark.omni_bounds(max_vram_gib={})
def test_b(omni_perf): pass

@pytest.mark.omni_bounds(min_speedup={"H100": 2.0})
def test_c(omni_perf): pass
""")
    result = pytester.runpytest("--omni-profile=eager")
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines_random([
        "*test_a: @pytest.mark.omni_bounds.max_latency_s[[]'H100'[]]: expected a finite number "
        "> 0*got nan*",
        "*test_b: @pytest.mark.omni_bounds.max_vram_gib: an empty mapping names no hardware*",
        "*test_c: @pytest.mark.omni_bounds.min_speedup: expected a*number*",
    ])


@pytest.mark.parametrize(("key", "matches"), [
    ("H100", True), ("h100", True), ("nvidia-h100-80gb-hbm3", True), ("H200", False),
    ("80GB", True), ("cpu", False), ("A100", False)])
def test_which_keys_name_a_machine(key: str, matches: bool) -> None:
    assert names_this_machine(key, ["NVIDIA H100 80GB HBM3"], "nvidia-h100-80gb-hbm3") is matches
    assert names_this_machine("cpu", [], "cpu")


def test_the_first_key_naming_the_machine_wins() -> None:
    raw = {"max_latency_s": {"L4": 9.0, "H100": 3.5, "nvidia-h100-80gb-hbm3": 1.0},
           "min_speedup": 1.2}
    resolved, notes = resolve_keyed(raw, "m", ProfileError,
                                    ("nvidia-h100-80gb-hbm3", ["NVIDIA H100 80GB HBM3"]))
    assert resolved == {"max_latency_s": 3.5, "min_speedup": 1.2} and notes == []
    checked_only, notes = resolve_keyed(raw, "m", ProfileError, None)
    assert checked_only == {"min_speedup": 1.2} and notes == []
