"""A real diffusers engine worker that runs out of memory while loading its model.

Test-only, and no option of the plugin: a conftest routes the engine's factory here (see
``conftest_source``). The factory runs inside the real worker process; it loads the model
once so that every library the load needs is imported and mapped, then caps the worker's
address space (``RLIMIT_AS``) at what it uses plus ``headroom_mib``, and hands back the
real runner, whose own ``load()`` then fails for want of memory, as it would on a
machine that is too small.
"""

from __future__ import annotations

import gc
import resource
from typing import Any

from pytest_omni_perf.engines.diffusers_engine import make_runner


def _address_space_bytes() -> int:
    with open("/proc/self/status", "rb") as handle:
        for line in handle:
            if line.startswith(b"VmSize:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmSize in /proc/self/status")


def make(headroom_mib: int, **kwargs: Any) -> Any:
    """The diffusers runner of ``kwargs``, in a worker capped before its real load."""
    runner = make_runner(**kwargs)
    import torch
    from diffusers import DiffusionPipeline

    # Loaded and dropped: imports and shared libraries stay mapped, the weights go.
    loader: Any = DiffusionPipeline  # untyped library
    loader.from_pretrained(runner.folder, dtype=torch.float32, local_files_only=True)
    gc.collect()
    cap = _address_space_bytes() + headroom_mib * 2**20
    resource.setrlimit(resource.RLIMIT_AS, (cap, resource.RLIM_INFINITY))
    return runner


CONFTEST = '''
import os, sys
sys.path.insert(0, {tests_dir!r})
from pytest_omni_perf.engines import diffusers_engine

def pytest_omni_perf_make_engine(config, spec, hardware):
    engine = diffusers_engine.create(spec, hardware)
    # The real engine and worker, with the factory wrapped to cap the worker's memory.
    engine.kwargs = {{"headroom_mib": {headroom_mib}, **engine.kwargs}}
    engine.factory = "memory_cap:make"
    return engine
'''


def conftest_source(tests_dir: str, headroom_mib: int = 8) -> str:
    """conftest.py text that starts every diffusers engine capped this way."""
    return CONFTEST.format(tests_dir=tests_dir, headroom_mib=headroom_mib)
