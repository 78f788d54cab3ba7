"""An export in pytest-benchmark's JSON format (``--omni-report-benchmark=PATH``), so
``pytest-benchmark compare A.json B.json`` compares warm latencies across commits.

The layout follows pytest-benchmark 5.x, read in 5.3.1 (``pytest_benchmark.plugin.
pytest_benchmark_generate_json``, ``stats.Metadata.as_dict``, ``stats.Stats``): top-level
``machine_info``, ``commit_info``, ``benchmarks``, ``datetime``, ``version``; each benchmark
``group, name, fullname, params, param, extra_info, options, stats``, and ``stats`` holds
Stats' fields computed the way pytest-benchmark computes them (quartiles by its methods 2
and 3, Tukey 1.5 IQR fences) plus ``data`` (the warm samples, seconds) and ``iterations``.

One benchmark per test x profile x request; its group is the test (without the profile
parameter) and request label, so a compare table lists a test's profiles side by side.
``extra_info`` carries what pytest-benchmark has no column for: speedup, SSIM, peak memory,
cold start and the omni-perf verdict.
"""

from __future__ import annotations

import datetime
import os
import platform
import statistics
import subprocess
from bisect import bisect_left, bisect_right
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

FORMAT_VERSION = "5.3.1"
"""The pytest-benchmark version whose JSON layout this export reproduces."""


def _quartiles(ordered: Sequence[float]) -> tuple[float, float]:
    # pytest-benchmark's Stats.q1/q3 (Wikipedia "Quartile", methods 3 for odd, 2 for even).
    n = len(ordered)
    if n == 1:
        return ordered[0], ordered[0]
    if n % 2:
        k, r = n // 4, n % 4
        if r == 1:
            q1 = 0.25 * ordered[k - 1] + 0.75 * ordered[k]
            q3 = 0.75 * ordered[3 * k] + 0.25 * ordered[3 * k + 1]
        else:
            q1 = 0.75 * ordered[k] + 0.25 * ordered[k + 1]
            q3 = 0.25 * ordered[3 * k + 1] + 0.75 * ordered[3 * k + 2]
        return q1, q3
    return statistics.median(ordered[: n // 2]), statistics.median(ordered[n // 2:])


def benchmark_stats(samples: Sequence[float]) -> dict[str, Any]:
    """pytest-benchmark's ``stats`` object for one set of samples (seconds, n >= 1)."""
    data = [float(s) for s in samples]
    if not data:
        raise ValueError("benchmark_stats needs at least one sample")
    ordered = sorted(data)
    n = len(data)
    mean = statistics.mean(data)
    stddev = statistics.stdev(data) if n > 1 else 0.0
    q1, q3 = _quartiles(ordered)
    iqr = q3 - q1
    low, high = q1 - 1.5 * iqr, q3 + 1.5 * iqr
    iqr_outliers = sum(1 for v in data if v < low or v > high)
    stddev_outliers = sum(1 for v in data if v < mean - stddev or v > mean + stddev)
    total = sum(data)
    if n == 1:
        ld15iqr = hd15iqr = data[0]
    else:
        ld15iqr = ordered[bisect_left(ordered, low)]
        hd15iqr = ordered[bisect_right(ordered, high) - 1]
    return {
        "min": ordered[0], "max": ordered[-1], "mean": mean, "stddev": stddev, "rounds": n,
        "median": statistics.median(ordered), "iqr": iqr, "q1": q1, "q3": q3,
        "iqr_outliers": iqr_outliers, "stddev_outliers": stddev_outliers,
        "outliers": f"{stddev_outliers};{iqr_outliers}", "ld15iqr": ld15iqr,
        "hd15iqr": hd15iqr, "ops": n / total if total else 0, "total": total,
        "data": data, "iterations": 1,
    }


def _split_nodeid(nodeid: str) -> tuple[str, str | None]:
    """(node id without its parameter part, the parameter id or None)."""
    if nodeid.endswith("]") and "[" in nodeid:
        at = nodeid.index("[", nodeid.rfind("::") + 2 if "::" in nodeid else 0)
        return nodeid[:at], nodeid[at + 1:-1]
    return nodeid, None


def benchmark_entry(result: Mapping[str, Any], warmup: int | None = None) -> dict[str, Any]:
    """One pytest-benchmark ``benchmarks`` item from an omni-perf result dict."""
    measured = result["measurement"]
    base, param = _split_nodeid(result["nodeid"])
    label = f"@{result['label']}" if result.get("label") else ""
    name = base.rsplit("::", 1)[-1] + (f"[{param}]" if param is not None else "") + label
    quality = result.get("quality") or {}
    memory = measured["memory"]
    samples = measured.get("samples_s") or measured["latency"].get("samples") or []
    return {
        "group": base + label,
        "name": name,
        "fullname": result["nodeid"] + label,
        "params": {"omni_profile": result["profile"]},
        "param": param,
        "extra_info": {
            "profile": result["profile"], "label": result.get("label", ""),
            "speedup": result.get("speedup"), "ssim": quality.get("ssim_mean"),
            "peak_memory_bytes": memory["peak_bytes"], "memory_kind": memory["kind"],
            "cold_start_s": measured.get("cold_start_s"),
            "verdict": result.get("verdict", "fail" if result.get("violations") else "pass"),
            "model": measured.get("model"), "backend": measured.get("backend"),
            "request": measured.get("request"),
        },
        "options": {"disable_gc": False, "timer": "perf_counter", "min_rounds": len(samples),
                    "max_time": None, "min_time": None, "warmup": bool(warmup)},
        "stats": benchmark_stats(samples),
    }


def _git(root: Path, *args: str) -> str:
    done = subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, timeout=10,
                          check=True)
    return done.stdout.strip()


def commit_info(root: Path) -> dict[str, Any]:
    """pytest-benchmark's ``commit_info`` for the git checkout at ``root`` (read-only git)."""
    info: dict[str, Any] = {"id": "unversioned", "time": None, "author_time": None,
                            "dirty": False, "project": root.name, "branch": "(unknown)"}
    try:
        described = _git(root, "describe", "--dirty", "--always", "--long", "--abbrev=40")
    except (OSError, subprocess.SubprocessError):
        return info  # not a checkout, or no git: pytest-benchmark says "unversioned" too
    parts = described.split("-")
    if parts[-1] == "dirty":
        info["dirty"] = True
        parts.pop()
    info["id"] = parts[-1].lstrip("g")
    try:
        info["time"] = _git(root, "show", "-s", "--pretty=format:%cI")
        info["author_time"] = _git(root, "show", "-s", "--pretty=format:%aI")
        branch = _git(root, "rev-parse", "--abbrev-ref", "HEAD")
        info["branch"] = "(detached head)" if branch == "HEAD" else branch
    except (OSError, subprocess.SubprocessError) as exc:
        info["error"] = repr(exc)
    return info


def machine_info(hardware: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """pytest-benchmark's ``machine_info`` keys, plus the GPUs and hardware key."""
    cpu: dict[str, Any] = {"arch": platform.machine(), "count": os.cpu_count()}
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu["brand_raw"] = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    info: dict[str, Any] = {
        "node": platform.node(), "processor": platform.processor(),
        "machine": platform.machine(), "python_compiler": platform.python_compiler(),
        "python_implementation": platform.python_implementation(),
        "python_implementation_version": platform.python_version(),
        "python_version": platform.python_version(), "python_build": list(platform.python_build()),
        "release": platform.release(), "system": platform.system(), "cpu": cpu,
    }
    if hardware is not None:
        info["gpus"] = hardware.get("gpus", [])
        info["hardware_key"] = hardware.get("key")
    return info


def benchmark_document(results: Sequence[Mapping[str, Any]], *,
                       machine: Mapping[str, Any], commit: Mapping[str, Any],
                       warmup: int | None = None,
                       created: datetime.datetime | None = None) -> dict[str, Any]:
    """The whole export; results without latency samples are left out."""
    when = created or datetime.datetime.now(datetime.timezone.utc)
    return {
        "machine_info": dict(machine),
        "commit_info": dict(commit),
        "benchmarks": [benchmark_entry(r, warmup) for r in results
                       if r["measurement"].get("samples_s")
                       or r["measurement"]["latency"].get("samples")],
        "datetime": when.isoformat(),
        "version": FORMAT_VERSION,
    }
