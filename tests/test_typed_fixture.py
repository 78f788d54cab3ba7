"""``OmniPerf`` is a public, typed class: a test annotated with it type-checks under mypy
--strict, and a wrong argument to ``measure()`` is a type error a test author sees."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

import pytest_omni_perf

GOOD = '''
from pytest_omni_perf import OmniPerf, PerfResult


def test_image(omni_perf: OmniPerf) -> None:
    result: PerfResult = omni_perf.measure(prompt="a fox", width=64, height=64,
                                           num_inference_steps=4, label="small")
    assert result.median_s > 0 and result.verdict in ("pass", "fail", "inconclusive")
    interval = result.speedup_interval
    if interval is not None:
        assert interval.low <= interval.estimate <= interval.high
'''
BAD = '''
from pytest_omni_perf import OmniPerf


def test_image(omni_perf: OmniPerf) -> None:
    omni_perf.measure(width="64", steps=4)
'''


def _mypy(tmp_path: Path, source: str) -> subprocess.CompletedProcess[str]:
    pytest.importorskip("mypy")
    path = tmp_path / "test_typed.py"
    path.write_text(source)
    return subprocess.run(
        [sys.executable, "-m", "mypy", "--strict", "--no-incremental",
         "--follow-imports=silent",
         "--cache-dir", str(tmp_path / ".mypy"), str(path)],
        capture_output=True, text=True, cwd=tmp_path, timeout=300,
        # An editable install is a meta-path finder that mypy cannot follow; the folder
        # holding the package is what an installed wheel (with py.typed) gives it, and
        # --follow-imports=silent keeps the package's own imports out of the verdict, as
        # mypy does for an installed package.
        env={**os.environ, "MYPYPATH": str(Path(pytest_omni_perf.__file__).parents[1])})


def test_a_test_using_omni_perf_type_checks_under_mypy_strict(tmp_path: Path) -> None:
    done = _mypy(tmp_path, GOOD)
    assert done.returncode == 0, done.stdout + done.stderr


def test_a_wrong_measure_argument_is_a_type_error(tmp_path: Path) -> None:
    done = _mypy(tmp_path, BAD)
    assert done.returncode == 1
    assert 'Unexpected keyword argument "steps"' in done.stdout
    assert 'Argument "width" to "measure" of "OmniPerf" has incompatible type "str"' \
        in done.stdout
