"""Cold start of a compile profile with an empty compile cache and with the cache it left.

    python benchmarks/compile_cache.py [--model tiny-flux] [--profile compile] \
        [--width 128 --height 128 --steps 12] [--repeats 2] [--out results/cpu/compile-cache.txt]

Cold start is what the plugin reports: engine start (worker spawn, model load, profile
applied) plus the first request, where torch.compile does its work. Each repeat makes a
fresh cache folder (the built-in models are linked in, so only the compile cache is
empty), starts the engine cold, stops it, and starts it again on the cache the first start
left (``compile_cache.compile_cache_env``: inductor FX graph + AOT autograd caches and
Triton's kernels under ``<cache dir>/compile/<model>``). Cold and warm starts
alternate, so machine load hits both; the ratio is printed per repeat and over all.

On a GPU, run it unchanged with the medium model, e.g.
``--model medium-flux --width 1024 --height 1024 --steps 20``; ``--backend omni`` measures
vLLM-Omni instead of diffusers. Not a test: the numbers depend on the machine.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from pytest_omni_perf import builtin_models  # noqa: E402
from pytest_omni_perf.engines.base import EngineSpec, GenerationRequest  # noqa: E402
from pytest_omni_perf.engines.compile_cache import compile_cache_dir  # noqa: E402
from pytest_omni_perf.hardware import probe  # noqa: E402
from pytest_omni_perf.profiles import load_builtin  # noqa: E402


def cpu_seconds(pids: list[int]) -> float:
    """User + system CPU time of ``pids`` and their exited children so far (Linux /proc;
    0 elsewhere). Unlike wall time it hardly moves when other processes load the machine."""
    total = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat", "rb") as handle:
                fields = handle.read().decode().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        # utime, stime, and cutime, cstime of waited-for children (compile workers that
        # already exited): fields 14-17 of proc(5)
        total += sum(int(v) for v in fields[11:15])
    return total / os.sysconf("SC_CLK_TCK")


def cold_start(spec: EngineSpec, request: GenerationRequest, backend: str) -> dict[str, float]:
    """Start an engine, send one request, stop it: the seconds of each part."""
    if backend == "omni":
        from pytest_omni_perf.engines import omni_engine as module
    else:
        from pytest_omni_perf.engines import diffusers_engine as module  # type: ignore[no-redef]
    engine: Any = module.create(spec, probe())
    began = time.perf_counter()
    engine.start()
    started = time.perf_counter()
    try:
        engine.generate(request)
        first = time.perf_counter()
        cpu = cpu_seconds(engine.pids())
        engine.generate(request)
        warm = time.perf_counter() - first
    finally:
        engine.stop()
    return {"start_s": started - began, "first_request_s": first - started,
            "cold_start_s": first - began, "warm_request_s": warm, "cold_start_cpu_s": cpu}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="tiny-flux")
    parser.add_argument("--profile", default="compile")
    parser.add_argument("--backend", choices=("diffusers", "omni"), default="diffusers")
    parser.add_argument("--width", type=int, default=128)
    parser.add_argument("--height", type=int, default=128)
    parser.add_argument("--steps", type=int, default=12)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--cache-dir", type=Path, default=None,
                        help="where the built-in models are (default: the plugin's)")
    parser.add_argument("--out", type=Path, help="also write the table here (and .json beside)")
    args = parser.parse_args()
    if os.environ.pop("TORCHINDUCTOR_CACHE_DIR", None):
        print("ignoring TORCHINDUCTOR_CACHE_DIR: this benchmark chooses the cache folder",
              file=sys.stderr)
    models = (args.cache_dir or builtin_models.default_cache_dir()) / "models"
    if builtin_models.is_builtin(args.model):
        builtin_models.ensure_model(args.model, models.parent)  # not part of any cold start
    profile = load_builtin()[args.profile]
    request = GenerationRequest(width=args.width, height=args.height,
                                num_inference_steps=args.steps)
    rows: list[dict[str, Any]] = []
    for repeat in range(args.repeats):
        with tempfile.TemporaryDirectory(prefix="omni-compile-cache-") as tmp:
            (Path(tmp) / "models").symlink_to(models.resolve(), target_is_directory=True)
            spec = EngineSpec(model=args.model, profile_name=profile.name,
                              options=profile.options, backend=args.backend, cache_dir=tmp,
                              start_timeout_s=3600, request_timeout_s=3600)
            for kind in ("cold", "warm"):
                had = sum(1 for _ in compile_cache_dir(spec).rglob("*")) \
                    if compile_cache_dir(spec).exists() else 0
                row = {"repeat": repeat, "cache": kind, "files_before": had,
                       **cold_start(spec, request, args.backend)}
                rows.append(row)
                print(f"repeat {repeat} {kind:4}: start {row['start_s']:7.2f} s + first request "
                      f"{row['first_request_s']:7.2f} s = cold start {row['cold_start_s']:7.2f} s"
                      f" ({row['cold_start_cpu_s']:.1f} CPU s; warm request {row['warm_request_s']:.3f} s;"
                      f" {had} cache files before)",
                      file=sys.stderr)
    cold = [r["cold_start_s"] for r in rows if r["cache"] == "cold"]
    warm = [r["cold_start_s"] for r in rows if r["cache"] == "warm"]
    lines = [f"{args.model} [{args.profile}] ({args.backend}), {args.width}x{args.height} "
             f"{args.steps} steps; {probe().summary()}; load average "
             f"{os.getloadavg()[0]:.1f}",
             f"{'repeat':>6}  {'empty cache':>26}  {'warm cache':>26}  {'ratio':>6}"]
    for repeat in range(args.repeats):
        c, w = (next(r for r in rows if r["repeat"] == repeat and r["cache"] == k)
                for k in ("cold", "warm"))
        lines.append(f"{repeat:>6}  {c['cold_start_s']:8.2f} s ({c['first_request_s']:6.2f} s 1st)"
                     f"  {w['cold_start_s']:8.2f} s ({w['first_request_s']:6.2f} s 1st)"
                     f"  {c['cold_start_s'] / w['cold_start_s']:5.2f}x")
    cpu = {k: statistics.median(r["cold_start_cpu_s"] for r in rows if r["cache"] == k)
           for k in ("cold", "warm")}
    lines.append(f"median CPU time of the engine process during the cold start: empty cache "
                 f"{cpu['cold']:.1f} s, warm cache {cpu['warm']:.1f} s: "
                 f"{cpu['cold'] / max(cpu['warm'], 1e-9):.2f}x")
    lines.append(f"median cold start: empty cache {statistics.median(cold):.2f} s, warm cache "
                 f"{statistics.median(warm):.2f} s: {statistics.median(cold) / statistics.median(warm):.2f}x "
                 "faster with the cache")
    text = "\n".join(lines)
    print(text, flush=True)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n")
        args.out.with_suffix(".json").write_text(json.dumps(
            {"args": {k: str(v) for k, v in vars(args).items()}, "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
