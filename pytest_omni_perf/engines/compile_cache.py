"""A persistent torch.compile cache per model and profile, for engine worker processes.

torch.compile's cold start (inductor code generation, Triton autotuning) dominates a
compile profile's first request: 25 s on 2 CPU cores for the tiny Flux, 240 s for float8
plus compile on an H100. Inductor's FX graph cache and AOT autograd cache skip that work
when a graph was compiled before, but only if their folder survives the run: inductor's
default lives under the system temp dir, which CI machines and containers throw away.
So each engine worker gets ``<cache dir>/compile/<model>/<profile>/`` as its inductor
cache, one folder per model and profile so that one can be cleared (or measured cold)
alone and xdist workers compiling different profiles do not contend for one folder.

A user who set ``TORCHINDUCTOR_CACHE_DIR`` keeps it (and Triton's default): that is an
explicit choice.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

from pytest_omni_perf.engines.base import EngineSpec
from pytest_omni_perf.escape import path_component


def compile_cache_dir(spec: EngineSpec) -> Path:
    """``<cache dir>/compile/<model>/<profile>``; the cache dir defaults as the models' does."""
    from pytest_omni_perf.builtin_models import default_cache_dir

    root = Path(spec.cache_dir) if spec.cache_dir else default_cache_dir()
    # A model path or id may hold any character (a lone surrogate too): one path rule for all.
    return root / "compile" / path_component(spec.model) / path_component(spec.profile_name)


def compile_cache_env(spec: EngineSpec, environ: Mapping[str, str] | None = None
                      ) -> dict[str, str]:
    """Environment for an engine worker: inductor's caches, persistent, under the cache dir.

    Empty when ``environ`` (default: ``os.environ``) already names an inductor cache folder.
    """
    environ = os.environ if environ is None else environ
    if environ.get("TORCHINDUCTOR_CACHE_DIR"):
        return {}
    folder = compile_cache_dir(spec)
    return {
        "TORCHINDUCTOR_CACHE_DIR": str(folder),
        # Triton's own kernel cache defaults to ~/.triton, as ephemeral in CI as /tmp.
        "TRITON_CACHE_DIR": str(folder / "triton"),
        # Both are on by default in torch 2.13; set anyway, so an older torch or a site
        # default that turned them off still reuses the compiled graphs.
        "TORCHINDUCTOR_FX_GRAPH_CACHE": "1",
        "TORCHINDUCTOR_AUTOGRAD_CACHE": "1",
    }
