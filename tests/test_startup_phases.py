"""Where an engine start goes: the phases each engine reports, as the JSON report and the
``-v`` summary carry them; None, never 0, for a phase an engine cannot see."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest

from pytest_omni_perf.engines.base import EngineSpec
from pytest_omni_perf.engines.hosting import IsolatedEngine
from pytest_omni_perf.engines.startup import PHASES, StartupPhases, interpreter_seconds
from pytest_omni_perf.report.terminal import startup_line

TESTS_DIR = str(Path(__file__).parent)
SLACK_S = 0.05
"""Sum of the phases against ``start_s``: the parent's clock reads around the worker's."""

ONE_TEST = """
def test_image(omni_perf):
    omni_perf.measure(width=32, height=32, num_inference_steps=2)
"""


def _report(pytester: pytest.Pytester) -> list[dict[str, Any]]:
    return [r["measurement"] for r in
            json.loads((pytester.path / "out" / "r.json").read_text())["results"]]


# -- the diffusers backend, as a user runs it --------------------------------------------------

def test_diffusers_measurement_carries_every_phase(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_x=ONE_TEST)
    result = pytester.runpytest_subprocess(
        "-p", "no:cacheprovider", "-v", "--omni-rounds=3", "--omni-warmup=1",
        "--omni-profile=eager", "--omni-update-baselines", "--omni-report-json=out/r.json")
    result.assert_outcomes(passed=1)
    (measured,) = _report(pytester)
    startup = measured["startup"]
    assert set(startup) == {*PHASES, "first_request_s", "other_s", "compile"}
    seen = ("interpreter_s", "imports_s", "load_s", "apply_s", "other_s", "first_request_s")
    for name in seen:
        assert isinstance(startup[name], float) and startup[name] >= 0, name
    assert startup["compile_s"] is None and startup["compile"] == "none"  # eager
    assert startup["first_request_s"] == measured["first_request_s"]
    inside = sum(startup[name] for name in ("interpreter_s", "imports_s", "load_s", "apply_s"))
    assert inside <= measured["start_s"] + SLACK_S
    assert math.isclose(inside + startup["other_s"], measured["start_s"], abs_tol=SLACK_S)
    assert startup["imports_s"] > startup["apply_s"]  # torch and diffusers vs a .to("cpu")
    result.stdout.fnmatch_lines([
        "startup ?eager? test_x.py::test_image?eager?: start * s = interpreter * + imports * "
        "+ load * + apply * + other *; first request * s (no compile)"])


# -- engines that see less ---------------------------------------------------------------------

@pytest.mark.parametrize("isolated", [False, True], ids=["in-process", "worker"])
def test_unknown_phases_are_none_not_zero(standin_pytester: pytest.Pytester,
                                          monkeypatch: pytest.MonkeyPatch,
                                          isolated: bool) -> None:
    """The stand-in's runner reports no phase: in pytest's process nothing is known, in a
    worker only the launch, which the host measures for every runner; no line without -v."""
    if isolated:
        monkeypatch.setenv("STANDIN_ISOLATED", "1")
    standin_pytester.makepyfile(test_x=ONE_TEST)
    result = standin_pytester.runpytest_subprocess(
        "-p", "no:cacheprovider", "--omni-rounds=3", "--omni-warmup=1", "--omni-profile=eager",
        "--omni-update-baselines", "--omni-report-json=out/r.json")
    result.assert_outcomes(passed=1)
    (measured,) = _report(standin_pytester)
    startup = measured["startup"]
    unknown = ["imports_s", "load_s", "apply_s", "compile_s", "other_s", "compile"]
    if isolated:
        assert 0 <= startup["interpreter_s"] <= measured["start_s"] + SLACK_S
    else:
        unknown.append("interpreter_s")
    assert {name: startup[name] for name in unknown} == dict.fromkeys(unknown)
    assert startup["first_request_s"] == measured["first_request_s"] >= 0
    assert "startup [" not in result.stdout.str()  # quiet unless -v


def test_worker_launch_is_measured_from_the_parent(tmp_path: Path) -> None:
    engine = IsolatedEngine(
        EngineSpec(model="standin", profile_name="eager", options={}, backend="standin"),
        "standin:make", {"profile": "eager", "options": {}}, env={"PYTHONPATH": TESTS_DIR},
        log_dir=tmp_path)
    engine.start()
    try:
        phases = engine.describe().startup
    finally:
        engine.stop()
    assert phases.interpreter_s is not None and 0 < phases.interpreter_s < 60
    assert not any(getattr(phases, name) is not None for name in PHASES[1:])


def test_a_server_reports_no_phase() -> None:
    from pytest_omni_perf.engines.hosting import ProcessHost

    assert ProcessHost().startup() == StartupPhases()  # what OmniServerEngine inherits
    assert not StartupPhases().known()


# -- the structure -----------------------------------------------------------------------------

def test_reported_values_are_checked() -> None:
    phases = StartupPhases.from_reported(
        {"imports_s": 2, "load_s": -1.0, "apply_s": float("nan"), "compile_s": True,
         "compile": "sometimes", "worker_s": 3.0, "surprise": 1}, interpreter_s=0.25)
    assert phases == StartupPhases(interpreter_s=0.25, imports_s=2.0)
    assert StartupPhases.from_reported(None) == StartupPhases()


def test_completed_adds_the_first_request_and_the_rest() -> None:
    phases = StartupPhases(interpreter_s=0.5, imports_s=2.0, load_s=0.25, apply_s=0.25,
                           compile="first_request")
    done = phases.completed(start_s=3.5, first_request_s=9.0)
    assert (done.other_s, done.first_request_s) == (0.5, 9.0)
    partial = StartupPhases(interpreter_s=0.5).completed(start_s=3.5, first_request_s=None)
    assert partial.other_s is None and partial.first_request_s is None
    assert interpreter_seconds(3.0, 2.5) == 0.5 and interpreter_seconds(3.0, None) is None
    assert interpreter_seconds(1.0, 1.2) == 0.0  # clocks read a hair apart


def test_summary_line_marks_what_is_unknown() -> None:
    known = StartupPhases(interpreter_s=0.3, imports_s=2.0, load_s=0.5, apply_s=0.01,
                          compile="first_request").completed(start_s=3.0, first_request_s=40.0)
    line = startup_line({"start_s": 3.0, "startup": known.to_dict()})
    assert line == ("start 3.00 s = interpreter 0.30 + imports 2.00 + load 0.50 + apply 0.01 + "
                    "other 0.19; first request 40.00 s (compile inside it)")
    omni = StartupPhases(interpreter_s=0.3, imports_s=9.0).completed(start_s=60.0,
                                                                      first_request_s=1.0)
    assert startup_line({"start_s": 60.0, "startup": omni.to_dict()}) == (
        "start 60.00 s = interpreter 0.30 + imports 9.00 + load ? + apply ? + other ?; "
        "first request 1.00 s")
    assert startup_line({"start_s": 1.0, "startup": StartupPhases().to_dict()}) is None
    assert startup_line({"start_s": 1.0}) is None  # a report written before this field
