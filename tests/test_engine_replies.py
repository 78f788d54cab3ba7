"""Numbers an engine sends back (a worker process, a server, a plugin's engine) are inputs
too: NaN, infinity, a negative time or a string where a number belongs fail the test with
a message naming the engine and the field, instead of reaching the gates, where NaN
passes every comparison.
"""

from __future__ import annotations

import json
import math
import os
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pytest_omni_perf.engines.base import EngineError, GenerationOutput, checked_output

SETTINGS = settings(max_examples=200, deadline=None, database=None)

numbers_ = st.one_of(st.floats(allow_nan=True, allow_infinity=True),
                     st.integers(-(10**20), 10**400), st.booleans())
keys = st.one_of(st.sampled_from(["peak_memory_mb", "torch_peak_bytes", "cuda_event_s",
                                  "stage_0_gen_ms", "steps", "ratio", "rank_latency_s"]),
                 st.text(max_size=4))
metrics = st.recursive(
    st.one_of(numbers_, st.text(max_size=3), st.none()),
    lambda inner: st.one_of(st.lists(inner, max_size=3),
                            st.dictionaries(keys, inner, max_size=3)),
    max_leaves=8,
).filter(lambda m: isinstance(m, dict)) | st.dictionaries(keys, numbers_, max_size=4)

UNITS = ("_s", "_ms", "_bytes", "_mb", "_gib")


def first_problem(value: Any, path: str, amount: bool) -> str | None:
    """The oracle: where the first non-finite (or negative amount) number sits."""
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        finite = isinstance(value, int) and abs(value) < 2**1000 or (
            isinstance(value, float) and math.isfinite(value))
        return None if finite and not (amount and value < 0) else path
    if isinstance(value, dict):
        for key, item in value.items():
            found = first_problem(item, f"{path}.{key}", amount or str(key).endswith(UNITS))
            if found:
                return found
    if isinstance(value, list):
        for i, item in enumerate(value):
            if found := first_problem(item, f"{path}[{i}]", amount):
                return found
    return None


@SETTINGS
@given(latency=numbers_, engine_metrics=metrics)
def test_checked_output(latency: Any, engine_metrics: dict[str, Any]) -> None:
    output = GenerationOutput(frames=[], engine_latency_s=latency, engine_metrics=engine_metrics)
    latency_ok = not isinstance(latency, bool) and first_problem(latency, "x", True) is None
    problem = first_problem(engine_metrics, "engine_metrics", False)
    if latency_ok and problem is None:
        checked = checked_output(output, "engine 'p' (fake)")
        assert checked.engine_latency_s == float(latency)
        assert checked.engine_metrics == engine_metrics
        return
    with pytest.raises(EngineError) as info:
        checked_output(output, "engine 'p' (fake)")
    message = str(info.value)
    assert message.startswith("engine 'p' (fake) replied ")
    if not latency_ok:
        assert "engine_latency_s" in message
    else:
        assert f"{problem}=" in message


def test_not_an_output_and_a_server_field_are_named() -> None:
    with pytest.raises(EngineError, match="engine 'p' answered a request with dict, not a "):
        checked_output({"frames": []}, "engine 'p'")
    reply = GenerationOutput(frames=[], engine_latency_s=math.nan,
                             engine_metrics={"engine_latency_source": "inference_time_s"})
    with pytest.raises(EngineError, match=r"^server for 'p' replied engine_latency_s \(from the "
                                          r"reply's inference_time_s\): expected a finite "
                                          r"number >= 0, got nan$"):
        checked_output(reply, "server for 'p'")


RUNNER = '''
import json, os, time
import numpy as np
from pytest_omni_perf.engines.base import GenerationOutput

class Runner:
    def load(self): return {}
    def versions(self): return {}
    def close(self): pass
    def generate(self, request):
        reply = json.loads(os.environ.get("REPLY", "{}"))
        frame = np.zeros((request.height, request.width, 3), np.uint8)
        return GenerationOutput(frames=[frame], engine_latency_s=reply.get("latency", 0.01),
                                engine_metrics=reply.get("metrics", {}))

def make(): return Runner()
'''
CONFTEST = '''
import os
from pytest_omni_perf.engines.hosting import InProcessEngine, IsolatedEngine

def pytest_omni_perf_make_engine(config, spec, hardware):
    if os.environ.get("ISOLATED"):
        return IsolatedEngine(spec, "replyrunner:make", {}, env={"PYTHONPATH": os.pathsep.join(
            [os.path.dirname(__file__), os.environ.get("PYTHONPATH", "")])})
    return InProcessEngine(spec, "replyrunner:make", {})
'''
TEST = '''
def test_a(omni_perf):
    omni_perf.measure(prompt="a fox", width=16, height=16, num_inference_steps=1, seed=0)
'''


@pytest.mark.parametrize("isolated", ["", "1"], ids=["in-process", "worker-process"])
@pytest.mark.parametrize(("reply", "message"), [
    ({"latency": math.nan}, "engine 'eager' (*) replied engine_latency_s: expected a finite "
                            "number >= 0, got nan"),
    ({"latency": -1.0}, "*replied engine_latency_s: expected a finite number >= 0, got -1.0"),
    ({"metrics": {"peak_memory_mb": math.inf}}, "engine 'eager' (*) replied "
     "engine_metrics.peak_memory_mb=inf: expected a finite number >= 0 (a time or an amount "
     "of memory)"),
    ({"metrics": {"stage_durations": {"denoise_ms": -3}}}, "*replied "
     "engine_metrics.stage_durations.denoise_ms=-3: expected a finite number >= 0*"),
])
def test_bad_engine_replies_fail_the_test_naming_engine_and_field(
        pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, isolated: str,
        reply: dict[str, Any], message: str) -> None:
    pytester.makepyfile(replyrunner=RUNNER, test_reply=TEST)
    pytester.makeconftest(CONFTEST)
    monkeypatch.setenv("REPLY", json.dumps(reply))  # Python's json carries NaN and Infinity
    monkeypatch.setenv("ISOLATED", isolated)
    monkeypatch.setenv("PYTHONPATH", os.environ.get("PYTHONPATH", ""))
    result = pytester.runpytest("--omni-rounds=2", "--omni-warmup=0", "--omni-profile=eager",
                                f"--omni-baseline-dir={pytester.path / 'bl'}",
                                "--omni-update-baselines")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines([f"*{message}*"])
