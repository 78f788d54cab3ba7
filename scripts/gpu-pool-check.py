"""GPU check of the GPU pool: two xdist workers, two single-GPU profiles of tiny-flux, run at
the same time on different GPUs. Needs a machine with at least 2 GPUs, pytest-xdist and
nvidia-ml-py.

    python3 scripts/gpu-pool-check.py --out "$OUT"          # from the repository root

Runs ``pytest -n 2 tests/perf/test_text_to_image.py --omni-profile=eager,cache_dit`` (each
worker gets one test), samples NVML every 0.1 s meanwhile (which GPU each engine worker
process was on, seen by the driver, not by the plugin), and checks:

1. the two results in the JSON report ran on different physical GPUs (``devices``), and
   cache_dit's baseline (eager) on its own test's GPU;
2. NVML saw engine worker processes on both of those GPUs at the same moments (overlap);
3. no engine process ran on a GPU other than the ones the report names;
4. no GPU lock is held after the run.

Writes under --out: pytest.log, report.json, nvml-timeline.jsonl, verdict.json; exit 0 when
every check passed. Baselines go to --out too (the repository's are not touched).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import psutil

from pytest_omni_perf.engines import worker

ROOT = Path(__file__).resolve().parents[1]


def engine_pids(pids: list[int]) -> list[int]:
    """Those of ``pids`` that are our engine workers (``python -m <worker module>``)."""
    found = []
    for pid in pids:
        try:
            cmdline = psutil.Process(pid).cmdline()
        except psutil.Error:  # gone, or not ours to read
            continue
        if worker.__name__ in cmdline:
            found.append(pid)
    return found


def sample(stop: threading.Event, out: Path) -> None:
    import pynvml

    pynvml.nvmlInit()
    try:
        handles = [pynvml.nvmlDeviceGetHandleByIndex(i)
                   for i in range(pynvml.nvmlDeviceGetCount())]
        with out.open("w") as log:
            while not stop.wait(0.1):
                row: dict[str, Any] = {"t": time.time(), "gpus": {}}
                for index, handle in enumerate(handles):
                    procs = pynvml.nvmlDeviceGetComputeRunningProcesses(handle)
                    row["gpus"][str(index)] = engine_pids([p.pid for p in procs])
                log.write(json.dumps(row) + "\n")
    finally:
        pynvml.nvmlShutdown()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path(os.environ.get("OUT", "gpu-pool-check")))
    parser.add_argument("pytest_args", nargs="*", help="extra pytest arguments")
    args = parser.parse_args()
    out: Path = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    locks = out / "locks"
    argv = [sys.executable, "-m", "pytest", "tests/perf/test_text_to_image.py",
            "-p", "pytest_omni_perf.plugin", "-p", "xdist", "-n", "2", "-p", "no:cacheprovider",
            "--omni-profile=eager,cache_dit", "--omni-model=tiny-flux",
            "--omni-backend=diffusers", "--omni-update-baselines", "-rs",
            f"--omni-baseline-dir={out / 'baselines'}", f"--omni-gpu-lock-dir={locks}",
            f"--omni-report-json={out / 'report.json'}", *args.pytest_args]
    stop = threading.Event()
    sampler = threading.Thread(target=sample, args=(stop, out / "nvml-timeline.jsonl"))
    sampler.start()
    began = time.time()
    with (out / "pytest.log").open("w") as log:
        code = subprocess.call(argv, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
    stop.set()
    sampler.join()
    verdict = judge(out, locks)
    verdict.update(pytest_exit=code, wall_s=round(time.time() - began, 1), argv=argv)
    (out / "verdict.json").write_text(json.dumps(verdict, indent=2))
    print(json.dumps(verdict, indent=2))
    return 0 if verdict["passed"] and code == 0 else 1


def judge(out: Path, locks: Path) -> dict[str, Any]:
    sys.path.insert(0, str(ROOT))
    from pytest_omni_perf.gpu_leases import LeaseDir

    checks: dict[str, Any] = {}
    results = json.loads((out / "report.json").read_text())["results"]
    devices = {r["profile"]: r["measurement"]["devices"] for r in results}
    checks["devices"] = devices
    checks["baseline_devices"] = {r["profile"]: (r["baseline"] or {}).get("devices")
                                  for r in results}
    ok_devices = (len(results) == 2 and all(len(d) == 1 for d in devices.values())
                  and len({tuple(d) for d in devices.values()}) == 2
                  and checks["baseline_devices"].get("cache_dit") == devices.get("cache_dit"))
    rows = [json.loads(line) for line in (out / "nvml-timeline.jsonl").read_text().splitlines()]
    reported = {str(d[0]) for d in devices.values() if d}
    both = [r for r in rows if reported and all(r["gpus"].get(i) for i in reported)]
    elsewhere = sorted({i for r in rows for i, pids in r["gpus"].items()
                        if pids and i not in reported})
    checks["nvml_samples"] = len(rows)
    checks["overlap_samples"] = len(both)
    checks["overlap_s"] = round(len(both) * 0.1, 1)
    checks["engines_on_other_gpus"] = elsewhere
    held = LeaseDir(locks).holders(range(16))
    checks["locks_held_after"] = {str(i): h.describe() if h else "?" for i, h in held.items()}
    checks["passed"] = bool(ok_devices and both and not elsewhere and not held)
    return checks


if __name__ == "__main__":
    raise SystemExit(main())
