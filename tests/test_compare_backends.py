"""scripts/compare_backends.py: the side-by-side table the GPU driver prints (and saves as
summary.txt) from the JSON reports of several backends."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "compare_backends.py"


@pytest.fixture(scope="module")
def compare() -> ModuleType:
    spec = importlib.util.spec_from_file_location("compare_backends", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def result(profile: str, median: float | None, **extra: Any) -> dict[str, Any]:
    measurement = None if median is None else {
        "latency": {"median": median}, "memory": {"peak_bytes": 3 * 2**30}, "start_s": 31.4}
    return {"profile": profile, "measurement": measurement, **extra}


def write(path: Path, backend: str, results: list[dict[str, Any]]) -> Path:
    path.write_text(json.dumps({"backend": {"name": backend}, "results": results}))
    return path


def test_side_by_side_table(tmp_path: Path, compare: ModuleType) -> None:
    diffusers = write(tmp_path / "d.json", "diffusers", [
        result("eager", 0.5), result("cache_dit", 0.25, speedup=2.0,
                                     quality={"ssim_mean": 0.99951})])
    omni = write(tmp_path / "o.json", "omni", [
        result("eager", 0.55), result("tea_cache", None, outcome="skipped",
                                      notes=["no TeaCache coefficients"]),
        result("cache_dit", 0.5, speedup=1.1)])
    lines = compare.table([compare.load(diffusers), compare.load(omni)]).splitlines()
    assert lines[0].split()[:2] == ["profile", "diffusers"] and lines[0].endswith("omni/diffusers")
    rows = {line.split()[0]: line.split() for line in lines[1:]}
    assert list(rows) == ["eager", "cache_dit", "tea_cache"]
    assert rows["eager"][1] == "0.500" and rows["eager"][4] == "3.00" and rows["eager"][5] == "31"
    assert rows["eager"][-1] == "1.10"  # 0.55 / 0.5, each backend's own median
    assert rows["cache_dit"][2:4] == ["2.00", "0.9995"] and rows["cache_dit"][-1] == "2.00"
    assert "(not run)" in lines[3] and "(no TeaCache" in lines[3]
    assert rows["tea_cache"][-1] == "-"


def test_cli_names_missing_reports(tmp_path: Path) -> None:
    report = write(tmp_path / "d.json", "diffusers", [result("eager", 0.5)])
    done = subprocess.run([sys.executable, str(SCRIPT), str(report), str(tmp_path / "none.json")],
                          capture_output=True, text=True, check=False)
    assert done.returncode == 0 and "(no report:" in done.stdout and "eager" in done.stdout
    nothing = subprocess.run([sys.executable, str(SCRIPT), str(tmp_path / "none.json")],
                             capture_output=True, text=True, check=False)
    assert nothing.returncode == 1
