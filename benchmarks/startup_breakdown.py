"""Where an engine start goes: each start-up phase of the built-in tiny models, N starts each.

    python benchmarks/startup_breakdown.py [--models tiny-flux,tiny-wan] [--profile eager] \
        [--repeats 5] [--launches exec,zygote] [--out results/cpu/startup-breakdown.txt]

Each start goes through the plugin's own path: ``EnginePool.get`` starts a diffusers engine
in its worker process (``start_s`` is what the pool measures, as in every report), then one
request of the suite's short size is timed around ``generate`` as the harness times the
first request, and the engine is stopped. The phases are the ones the engine reports
(engines/startup.py): (a) the worker's launch until its ``main`` runs, (b) heavy imports,
(c) ``from_pretrained``, (d) the profile's options, the rest of ``start_s`` as ``other``,
and (e) the first request. Each model is started with each worker launch of
``--omni-engine-launch`` (exec: a fresh interpreter; zygote: forked from a process that has
made the imports, engines/zygote.py). Models and launches alternate start by start, so load
hits all alike; the load average is recorded at every start, as the numbers move with it.

Not a test: the numbers depend on the machine and on what else runs on it.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from pytest_omni_perf import builtin_models  # noqa: E402
from pytest_omni_perf.engines import diffusers_engine  # noqa: E402
from pytest_omni_perf.engines.base import EngineSpec, GenerationRequest  # noqa: E402
from pytest_omni_perf.engines.engine_pool import EnginePool  # noqa: E402
from pytest_omni_perf.hardware import probe  # noqa: E402
from pytest_omni_perf.profiles import load_builtin  # noqa: E402
from pytest_omni_perf.suite_requests import PROMPTS, SHORT  # noqa: E402

ROWS = (("interpreter_s", "(a) interpreter start"), ("imports_s", "(b) heavy imports"),
        ("load_s", "(c) from_pretrained"), ("apply_s", "(d) apply_options"),
        ("other_s", "    other (spawn, messages)"), ("start_s", "engine start (start_s)"),
        ("first_request_s", "(e) first request"), ("cold_start_s", "cold start"))


def one_start(spec: EngineSpec, request: GenerationRequest) -> dict[str, Any]:
    """Start ``spec`` through the engine pool, time its first request, stop it."""
    hardware = probe()
    pool = EnginePool(lambda s: (diffusers_engine.create(s, hardware), True))
    load_1m = os.getloadavg()[0]
    try:
        live = pool.get(spec)
        began = time.perf_counter()
        live.engine.generate(request)
        first = time.perf_counter() - began
        phases = live.engine.describe().startup.completed(start_s=live.start_s,
                                                          first_request_s=first)
    finally:
        pool.close()
    return {**phases.to_dict(), "start_s": live.start_s, "cold_start_s": live.start_s + first,
            "load_avg_1m": load_1m}


def cell(values: list[float]) -> str:
    return (f"{statistics.median(values):7.3f} [{min(values):6.3f}-{max(values):6.3f}]"
            if values else f"{'-':>7}")


def table(rows: dict[str, list[dict[str, Any]]]) -> list[str]:
    models = list(rows)
    width = max(len(label) for _, label in ROWS)
    lines = [f"{'phase (s): median [min-max]':<{width}}  " + "  ".join(f"{m:<24}" for m in models)]
    for key, label in ROWS:
        cells = [cell([r[key] for r in rows[m] if r.get(key) is not None]) for m in models]
        lines.append(f"{label:<{width}}  " + "  ".join(f"{c:<24}" for c in cells))
    return lines


def machine() -> str:
    model = ""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            model = next((line.split(":", 1)[1].strip() for line in handle
                          if line.startswith("model name")), "")
    except OSError:
        pass
    loads = ", ".join(f"{v:.2f}" for v in os.getloadavg())
    return (f"machine: {platform.node()}, {os.cpu_count()} CPU cores ({model or '?'}), "
            f"{platform.system()} {platform.release()}, Python {platform.python_version()}; "
            f"load average (1, 5, 15 min) {loads}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", default="tiny-flux,tiny-wan")
    parser.add_argument("--profile", default="eager")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--launches", default="exec,zygote",
                        help="worker launches to alternate (--omni-engine-launch's values)")
    parser.add_argument("--cache-dir", type=Path, default=None,
                        help="where the built-in models are (default: the plugin's)")
    parser.add_argument("--out", type=Path, help="also write the table here (and .json beside)")
    args = parser.parse_args()
    cache = args.cache_dir or builtin_models.default_cache_dir()
    models = [m.strip() for m in args.models.split(",") if m.strip()]
    # A first build is not part of any start; the folder says image or video.
    kinds = {m: builtin_models.model_kind(builtin_models.ensure_model(m, cache)) for m in models}
    requests = {m: {"prompt": PROMPTS[kinds[m]], **SHORT[kinds[m]]} for m in models}
    profile = load_builtin()[args.profile]
    header = [f"command: python {' '.join(sys.argv)}",
              f"date: {datetime.datetime.now(datetime.timezone.utc).isoformat(timespec='seconds')}",
              f"before: {machine()}"]
    print("\n".join(header), flush=True)
    launches = [x.strip() for x in args.launches.split(",") if x.strip()]
    columns = [(m, launch) for m in models for launch in launches]
    rows: dict[str, list[dict[str, Any]]] = {f"{m} {launch}": [] for m, launch in columns}
    for repeat in range(args.repeats):
        for model, launch in columns:
            request = GenerationRequest(**requests[model])
            spec = EngineSpec(model=model, profile_name=profile.name, options=profile.options,
                              backend="diffusers", cache_dir=str(cache), launch=launch,
                              start_timeout_s=1800, request_timeout_s=1800)
            row = one_start(spec, request)
            rows[f"{model} {launch}"].append(row)
            print(f"repeat {repeat} {model} {launch}: " + ", ".join(
                f"{k} {row[k]:.3f}" for k, _ in ROWS if row.get(k) is not None)
                + f" (load {row['load_avg_1m']:.2f})", flush=True)
    from pytest_omni_perf.engines import zygote_host

    zygote_host.stop_all()
    device = "cuda" if probe().gpus else "CPU"
    loads = [r["load_avg_1m"] for model_rows in rows.values() for r in model_rows]
    lines = [*header, f"after: {machine()}",
             f"1-minute load average at the {len(loads)} starts: {min(loads):.2f}-{max(loads):.2f}"
             f" (median {statistics.median(loads):.2f})",
             f"profile {profile.name}, backend diffusers on {device}, {args.repeats} starts per "
             f"model and launch (launches alternate; a zygote is started once and kept, so "
             f"its first start pays the imports: the max of a zygote column), "
             "first request: " + "; ".join(
                 f"{m} {r['width']}x{r['height']} {r['num_inference_steps']} steps"
                 + (f" {r['num_frames']} frames" if r.get("num_frames") else "")
                 for m, r in requests.items()),
             "compile: " + ", ".join(sorted({str(r.get('compile')) for rs in rows.values()
                                             for r in rs})),
             "", *table(rows)]
    print("\n" + "\n".join(lines[len(header):]))
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text("\n".join(lines) + "\n")
        args.out.with_suffix(".json").write_text(json.dumps(
            {"header": lines[:len(header) + 3], "requests": requests, "rows": rows},
            indent=1) + "\n")
        print(f"written: {args.out} and {args.out.with_suffix('.json')}")


if __name__ == "__main__":
    main()
