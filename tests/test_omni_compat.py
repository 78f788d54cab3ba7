"""The bridges between vLLM-Omni 0.26 (what runs on the H100 image) and 0.30 (the CPU contract
tests): features 0.26 lacks are refused before an engine starts, TeaCache extractors are
found the way each release looks them up, and ``vllm serve`` gets the folder's dtype.
"""

from __future__ import annotations

import importlib.util
import json
import struct
from pathlib import Path
from typing import Any, Callable

import pytest

from pytest_omni_perf.capabilities import ModelCapabilities, has_tea_cache_extractor
from pytest_omni_perf.engines import omni_compat, omni_engine, omni_server
from pytest_omni_perf.engines.base import EngineSpec, ProfileUnsupported
from pytest_omni_perf.hardware import HardwareInfo

SEA = {"enforce_eager": True, "cache_backend": "sea_cache"}
GGUF = {"enforce_eager": True, "quantization": "gguf", "gguf_model": "x.gguf"}


@pytest.mark.parametrize(("version", "release"), [
    ("0.26.0", (0, 26)), ("0.30.1.dev3+g1a2b", (0, 30)), ("1.2", (1, 2)), ("dev", None)])
def test_release(version: str, release: tuple[int, int] | None) -> None:
    assert omni_compat.release(version) == release


@pytest.mark.parametrize(("options", "version", "refused"), [
    (SEA, "0.26.0", "sea_cache' needs vLLM-Omni 0.30"),
    (GGUF, "0.26.0", "gguf' needs vLLM-Omni 0.30"),
    (SEA, "0.30.0", None),
    (GGUF, "0.31.0", None),
    (SEA, None, None),  # version unknown: let vLLM-Omni decide
    ({"enforce_eager": True, "cache_backend": "tea_cache"}, "0.26.0", None),
    ({"enforce_eager": True, "quantization": "fp8"}, "0.26.0", None),
])
def test_version_reason(options: dict[str, Any], version: str | None,
                        refused: str | None) -> None:
    reason = omni_compat.version_reason(options, version)
    if refused is None:
        assert reason is None
    else:
        assert reason is not None and refused in reason and f"vLLM-Omni {version}" in reason


# -- TeaCache extractor lookup: stand-ins with each release's get_extractor semantics ---------

class FluxTransformer2DModel:
    pass


class WrappedFlux(FluxTransformer2DModel):  # e.g. a runtime wrapper subclass
    pass


REGISTRY = {"FluxTransformer2DModel": object()}


def get_extractor_026(transformer_cls_name: str) -> object:
    """0.26: exact-name lookup only (a class is never a key)."""
    if transformer_cls_name in REGISTRY:
        return REGISTRY[transformer_cls_name]
    raise ValueError(f"Unknown model type: '{transformer_cls_name}'")


def get_extractor_030(transformer_type: str | type) -> object:
    """0.30: a name, or a class looked up along its MRO."""
    names = (transformer_type,) if isinstance(transformer_type, str) else \
        tuple(c.__name__ for c in transformer_type.__mro__)
    for name in names:
        if name in REGISTRY:
            return REGISTRY[name]
    raise ValueError(f"Unknown model type: '{transformer_type}'")


@pytest.mark.parametrize(("get_extractor", "cls", "found"), [
    (get_extractor_026, FluxTransformer2DModel, True),  # passing the class alone said False
    (get_extractor_030, FluxTransformer2DModel, True),
    (get_extractor_030, WrappedFlux, True),
    (get_extractor_026, WrappedFlux, False),  # 0.26's runtime would not find it either
    (get_extractor_026, WrappedFlux.__mro__[-1], False),
])
def test_tea_cache_extractor_lookup(get_extractor: Callable[[Any], object], cls: type,
                                    found: bool) -> None:
    assert has_tea_cache_extractor(get_extractor, cls) is found


# -- the adapters refuse before anything starts -----------------------------------------------

def model_folder(root: Path, dtype: str = "F32") -> Path:
    """A local Flux folder: model_index.json and a transformer safetensors header."""
    (root / "transformer").mkdir(parents=True)
    (root / "model_index.json").write_text(json.dumps({"_class_name": "FluxPipeline"}))
    header = json.dumps({"w": {"dtype": dtype, "shape": [1], "data_offsets": [0, 4]}}).encode()
    (root / "transformer" / "diffusion_pytorch_model.safetensors").write_bytes(
        struct.pack("<Q", len(header)) + header + bytes(4))
    return root


def test_offline_runner_refuses_sea_cache_on_026(tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(omni_compat, "installed_version", lambda: "0.26.0")
    runner = omni_engine.OmniRunner(str(model_folder(tmp_path)), SEA)
    # Refused before vllm_omni is imported (it is not installed here: that would raise
    # ModuleNotFoundError instead).
    with pytest.raises(ProfileUnsupported, match="sea_cache.*needs vLLM-Omni 0.30"):
        runner.load()


FLUX = ModelCapabilities("FluxPipeline", compile=True, sequence_parallel=False,
                         cfg_parallel=True, tensor_parallel=True, layerwise_offload=True,
                         cache_acceleration=True, tea_cache=True, hsdp=True,
                         expert_parallel=False, transformer_classes=("FluxTransformer2DModel",))


@pytest.fixture
def vllm_server_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """This environment looks like one with vLLM-Omni 0.26 installed (discovery stubbed)."""
    monkeypatch.setattr(omni_engine, "capabilities_in_subprocess",
                        lambda folder, timeout_s: (FLUX, "capabilities of FluxPipeline checked"))
    monkeypatch.setattr(omni_server, "_CAPABILITIES", {})
    monkeypatch.setattr(omni_compat, "installed_version", lambda: "0.26.0")
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: object()
                        if name == "vllm_omni" else real_find_spec(name, *a))


def server_spec(model: Path, options: dict[str, Any], command: str) -> EngineSpec:
    return EngineSpec(model=str(model), profile_name="p", options=options,
                      backend="omni-server", server_command=command)


VLLM = "{python} -m vllm.entrypoints.cli.main serve {model} --omni --port {port}"
SHIPPED = "{python} -m pytest_omni_perf.serve {model} --omni --port {port}"


def test_server_refuses_sea_cache_on_026(tmp_path: Path, vllm_server_env: None) -> None:
    with pytest.raises(ProfileUnsupported, match="vLLM-Omni 0.26.0: cache_backend='sea_cache'"):
        omni_server.create(server_spec(model_folder(tmp_path), SEA, VLLM), HardwareInfo())


@pytest.mark.parametrize(("saved", "options", "flag"), [
    ("F32", {"enforce_eager": True}, ["--dtype", "float32"]),
    ("BF16", {"enforce_eager": True}, ["--dtype", "bfloat16"]),
    ("F32", {"enforce_eager": True, "dtype": "bfloat16"}, ["--dtype", "bfloat16"]),  # profile wins
])
def test_vllm_serve_gets_the_saved_dtype(tmp_path: Path, vllm_server_env: None, saved: str,
                                         options: dict[str, Any], flag: list[str]) -> None:
    engine = omni_server.create(server_spec(model_folder(tmp_path, saved), options, VLLM),
                                HardwareInfo())
    argv = omni_server.command_argv(VLLM, str(tmp_path), 1234, engine.spec.options)
    assert argv[argv.index("--dtype"):argv.index("--dtype") + 2] == flag
    assert argv.count("--dtype") == 1


def test_shipped_server_command_is_left_alone(tmp_path: Path, vllm_server_env: None) -> None:
    engine = omni_server.create(server_spec(model_folder(tmp_path), SEA, SHIPPED),
                                HardwareInfo())
    assert "dtype" not in engine.spec.options  # neither refused nor given a dtype
