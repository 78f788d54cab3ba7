"""Fixtures of the vLLM-Omni contract tests: the CPU import shim and a config-only model."""

from __future__ import annotations

import importlib.util
import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest


def _load_shim() -> Any:
    # By file path: pytest may import this module with or without its package (import modes).
    name = "omni_perf_contract_vllm_omni_cpu_shim"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, Path(__file__).with_name("vllm_omni_cpu_shim.py"))
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def omni() -> Iterator[Any]:
    """The shim module, with vllm_omni imported; skips where vllm_omni is unavailable."""
    if importlib.util.find_spec("vllm_omni") is None:
        pytest.skip(
            "vllm_omni is not installed in this interpreter: build a venv with "
            "scripts/install-vllm-omni-cpu.sh VENV and run VENV/bin/python -m pytest tests/contract"
        )
    shim = _load_shim()
    try:
        shim.prepare_vllm_omni_import()
        import vllm_omni  # noqa: F401
    except ImportError as exc:  # pragma: no cover - depends on the environment
        pytest.skip(f"vllm_omni is installed but not importable here: {exc}")
    yield shim


@pytest.fixture(scope="module")
def qwen_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A local folder holding only a model_index.json: enough for configs, no hub access."""
    folder = tmp_path_factory.mktemp("qwen-image")
    (folder / "model_index.json").write_text(json.dumps({"_class_name": "QwenImagePipeline"}))
    return folder


