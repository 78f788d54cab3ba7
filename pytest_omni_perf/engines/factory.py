"""Which engine serves a backend name: plugins first (hook), then the built-in adapters."""

from __future__ import annotations

import importlib.util

import pytest

from pytest_omni_perf.engines.base import Engine, EngineError, EngineSpec
from pytest_omni_perf.hardware import HardwareInfo


def resolve_backend(backend: str, hw: HardwareInfo, attached: bool = False) -> tuple[str, str]:
    """The concrete backend for ``auto``, and why it was chosen (printed in the header)."""
    if attached:
        return "omni-server", "attached to running servers with --omni-server-url"
    if backend != "auto":
        return backend, "chosen with --omni-backend"
    if importlib.util.find_spec("vllm_omni") is None:
        return "diffusers", "auto: vllm_omni is not installed"
    if not hw.gpus:
        return "diffusers", "auto: vllm_omni is installed but there is no GPU"
    return "omni", "auto: vllm_omni is installed and a GPU is present"


def make_engine(config: pytest.Config, spec: EngineSpec, hw: HardwareInfo
                ) -> tuple[Engine, bool]:
    """An unstarted engine for ``spec`` (ProfileUnsupported or EngineError when impossible),
    and whether its behaviour follows from ``spec.options`` and the request alone, so that
    profiles of equal options may share it: true of the built-in adapters, never assumed of
    a plugin's engine (a test double may act on the profile's name)."""
    engine: Engine | None = config.hook.pytest_omni_perf_make_engine(
        config=config, spec=spec, hardware=hw)
    if engine is not None:
        return engine, False
    return _built_in(spec, hw), True


def _built_in(spec: EngineSpec, hw: HardwareInfo) -> Engine:
    if spec.backend == "diffusers":
        from pytest_omni_perf.engines import diffusers_engine

        return diffusers_engine.create(spec, hw)
    if spec.backend == "omni":
        from pytest_omni_perf.engines import omni_engine

        return omni_engine.create(spec, hw)
    if spec.backend == "omni-server" and spec.server_url:
        from pytest_omni_perf.engines.omni_attached import AttachedServerEngine

        return AttachedServerEngine(spec)
    if spec.backend == "omni-server":
        from pytest_omni_perf.engines import omni_server

        return omni_server.create(spec, hw)
    raise EngineError(
        f"backend {spec.backend!r} has no engine here: the built-in ones are diffusers, omni "
        "and omni-server; others "
        "come from a plugin implementing pytest_omni_perf_make_engine")
