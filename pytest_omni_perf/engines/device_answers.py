"""Torch's CUDA device queries answered from NVML while the engine zygote imports a pipeline.

Why: on a GPU with torchao 0.17 installed, importing any diffusers pipeline class initializes
CUDA, after which no forked child may use it (``zygote.py``). One call does it: torchao's
``prototype/mx_formats/kernels.py`` asks ``torch.utils._triton.has_triton()`` at import time,
which reads the current device's properties through the CUDA runtime; the same module then
asks ``torch.cuda.get_device_capability()`` (``is_sm_at_least_100``). Measured on an H200
(results/h200/startup/fork-check.jsonl): that is the only ``torch._C._cuda_init`` of the
whole import, and it left every start 3.2-3.4 s of imports to pay after the fork.

Both questions only need the compute capability, which NVML reports without touching the
CUDA runtime (``nvmlDeviceGetCudaComputeCapability``, the value ``hardware.GpuInfo.sm`` holds).
``answered(sm)`` stands in for ``torch.cuda.current_device``, ``get_device_capability`` and
``get_device_properties`` while the imports run, calls ``has_triton()`` once so that its
``functools.cache`` keeps the answer, and puts the real functions back afterwards, also in
any module that bound a stand-in by name meanwhile, and drops what torch's inductor worker
caches (``torch/_dynamo/device_interface.py``, ``caching_worker_*``) took from them.

It is only sound where every GPU a forked worker may be given has that capability: the
zygote serves all of them (``CUDA_VISIBLE_DEVICES`` is set per child), so the engine sets
``SM_VARIABLE`` only when the visible GPUs agree (``uniform_sm``). The zygote still probes
after each import whether a child could use CUDA, and falls back to exec when not.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from types import SimpleNamespace

SM_VARIABLE = "OMNI_PERF_ZYGOTE_SM"
"""The engine environment's ``"major.minor"`` compute capability that the zygote may answer
device queries with during its imports; unset: it answers none (imports that ask CUDA are
then left to the worker, after the fork)."""

_REPLACED = ("current_device", "get_device_capability", "get_device_properties")


def uniform_sm(sms: Sequence[tuple[int, int]]) -> tuple[int, int] | None:
    """The compute capability all ``sms`` share (from ``GpuInfo.sm``); None when there are
    none or they differ."""
    return sms[0] if sms and all(sm == sms[0] for sm in sms) else None


def format_sm(sm: tuple[int, int]) -> str:
    """``(9, 0)`` -> ``"9.0"``, the form of ``SM_VARIABLE``."""
    return f"{sm[0]}.{sm[1]}"


def parse_sm(text: str | None) -> tuple[int, int] | None:
    """``"9.0"`` -> ``(9, 0)``; None for an unset or malformed value (then nothing is
    answered: the zygote behaves as without it)."""
    major, dot, minor = (text or "").partition(".")
    if not (dot and major.isdigit() and minor.isdigit()):
        return None
    return int(major), int(minor)


@contextmanager
def answered(sm: tuple[int, int]) -> Iterator[None]:
    """While open, torch's CUDA device queries get ``sm`` without the CUDA runtime; on exit
    every stand-in is gone again (see the module docstring). Imports torch."""
    import torch

    cuda = torch.cuda
    real = {name: getattr(cuda, name) for name in _REPLACED}
    properties = SimpleNamespace(major=sm[0], minor=sm[1])
    stand_ins = {
        "current_device": lambda: 0,
        "get_device_capability": lambda device=None: sm,
        "get_device_properties": lambda device=None: properties,
    }
    caches = _inductor_worker_caches()
    before = [set(cache) for cache in caches]
    known_modules = set(sys.modules)
    for name, function in stand_ins.items():
        setattr(cuda, name, function)
    try:
        if cuda.is_available():  # NVML's answer in the zygote (PYTORCH_NVML_BASED_CUDA_CHECK)
            try:
                from torch.utils._triton import has_triton
            except ImportError:  # a torch without it: nothing of it to cache
                pass
            else:
                has_triton()  # computed now from ``sm``, cached for every forked worker
        yield
    finally:
        for name in _REPLACED:
            setattr(cuda, name, real[name])
        _restore_bound_names(stand_ins, real, known_modules)
        for cache, keys in zip(caches, before):
            for key in set(cache) - keys:
                del cache[key]


def _inductor_worker_caches() -> list[dict[str, object]]:
    """torch's per-device caches of current device and properties for its compile workers,
    which ``has_triton`` fills from the stand-ins (empty where this torch has none)."""
    module = sys.modules.get("torch._dynamo.device_interface")
    if module is None:
        try:
            import torch._dynamo.device_interface as module
        except ImportError:
            return []
    found = [getattr(module, name, None) for name in
             ("caching_worker_device_properties", "caching_worker_current_devices")]
    return [cache for cache in found if isinstance(cache, dict)]


def _restore_bound_names(stand_ins: Mapping[str, object], real: Mapping[str, object],
                         known: set[str]) -> None:
    """A module imported meanwhile that did ``from torch.cuda import get_device_capability``
    holds a stand-in: give it the real function."""
    by_id = {id(function): real[name] for name, function in stand_ins.items()}
    for module_name in set(sys.modules) - known:
        namespace = getattr(sys.modules.get(module_name), "__dict__", None)
        if not isinstance(namespace, dict):
            continue
        for attribute, value in list(namespace.items()):
            if id(value) in by_id:
                namespace[attribute] = by_id[id(value)]
