"""``python -m pytest_omni_perf.support_table``: one table from the JSON reports of several
runs (a model's profiles split between sessions), and refusals that name the file."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from pytest_omni_perf.support_table import main


def report(path: Path, profile: str, *, key: str = "nvidia-h200",
           skipped: list[dict[str, str]] | None = None, ssim: float = 0.999) -> Path:
    result = {"nodeid": f"s::t[{profile}]", "profile": profile, "label": "short",
              "verdict": "pass", "speedup": 1.5, "memory_ratio": 0.9,
              "baseline": {"profile": "eager"},
              "speedup_interval": {"estimate": 1.5, "low": 1.3, "high": 1.7,
                                   "confidence": 0.95, "rounds": 10},
              "quality": {"ssim_mean": ssim},
              "measurement": {"model": "medium-flux", "cold_start_s": 20.0, "request": {}}}
    data: dict[str, Any] = {"results": [result], "skipped": skipped or [],
                            "backend": {"name": "diffusers"},
                            "hardware": {"key": key, "summary": f"1 x GPU; hardware key {key!r}"}}
    path.write_text(json.dumps(data), encoding="utf-8")
    return path


def test_two_runs_make_one_row(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    first = report(tmp_path / "a.json", "cache_dit")
    second = report(tmp_path / "b.json", "compile", skipped=[
        {"model": "medium-flux", "profile": "usp2", "reason": "requires 2 GPU(s), found 1 visible"}])
    out = tmp_path / "table.md"
    assert main([str(first), str(second), "-o", str(out)]) == 0
    text = out.read_text(encoding="utf-8")
    assert "| Cache-DiT | cache_dit | supported | short | 1.50x [1.30-1.70 95%] |" in text
    assert "| torch.compile | compile | supported | short | 1.50x [1.30-1.70 95%] |" in text
    assert "| Ulysses-SP | usp2 | not runnable here |" in text
    assert "hardware key 'nvidia-h200'" in text
    assert "written to" in capsys.readouterr().out


def test_a_later_report_replaces_the_same_measurement(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """fp8 run again after a fix: the table shows the second run's row only, and says so."""
    broken = report(tmp_path / "a.json", "fp8", ssim=0.0001)
    fixed = report(tmp_path / "b.json", "fp8", ssim=0.9959)
    other = report(tmp_path / "c.json", "cache_dit")
    assert main([str(broken), str(other), str(fixed)]) == 0
    captured = capsys.readouterr()
    rows = [line for line in captured.out.splitlines() if line.startswith("| FP8 | fp8 |")]
    assert len(rows) == 1 and "0.9959" in rows[0]
    assert "| Cache-DiT | cache_dit | supported |" in captured.out
    assert "1 measurement(s) of an earlier report replaced" in captured.err
    assert main([str(fixed), str(broken)]) == 0  # the order given decides, not the file names
    assert "0.0001" in capsys.readouterr().out


def test_reports_of_other_machines_are_refused(tmp_path: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    first = report(tmp_path / "a.json", "cache_dit")
    other = report(tmp_path / "b.json", "compile", key="nvidia-h100-80gb-hbm3")
    assert main([str(first), str(other)]) == 2
    err = capsys.readouterr().err
    assert "b.json" in err and "'nvidia-h100-80gb-hbm3'" in err and "one machine kind" in err


@pytest.mark.parametrize("content", ["{not json", '{"results": 3}', "[]"])
def test_unreadable_or_foreign_files_are_refused_by_name(
        tmp_path: Path, content: str, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text(content, encoding="utf-8")
    assert main([str(bad)]) == 2
    assert f"error: {bad}:" in capsys.readouterr().err


def test_runs_as_a_module(tmp_path: Path) -> None:
    done = subprocess.run([sys.executable, "-m", "pytest_omni_perf.support_table",
                           str(report(tmp_path / "a.json", "cache_dit"))],
                          capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("# Measured support table (pytest-omni-perf)")
