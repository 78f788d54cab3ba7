"""A persistent torch.compile cache per model, for engine worker processes.

torch.compile's cold start (inductor code generation, Triton autotuning) dominates a
compile profile's first request: 25 s on 2 CPU cores for the tiny Flux, 240 s for float8
plus compile on an H100. Inductor's FX graph cache and AOT autograd cache skip that work
when a graph was compiled before, but only if their folder survives the run: inductor's
default lives under the system temp dir, which CI machines and containers throw away.
So each engine worker gets ``<cache dir>/compile/<model>/`` as its inductor cache.

One folder per model, not per profile: profiles of one model that compile the same blocks
(``compile``, ``compile_cachedit``, a recipe with compile) reuse each other's graphs, as
they would in a deployment's one cache (inductor's cache key covers the graph, options and
versions, so a profile that compiles something else misses and compiles). Measured on the
2-core CPU machine (2026-12-06): compile_cachedit's first request after compile in the
same session, empty cache, 18.8 s -> 5.6 s (tiny Flux) and 16.1 s -> 4.4 s (tiny Wan)
against per-profile folders, speedups unchanged. Inductor writes its entries atomically and
its default folder is already shared by every process of a user, so xdist workers can share
one. A profile's cold start is therefore cold only for the first profile of a session that
compiles those graphs; clear ``<cache dir>/compile/<model>`` to measure it cold again.

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
    return root / "compile" / path_component(spec.model)


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
