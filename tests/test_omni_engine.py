"""The offline ``omni`` adapter's pure parts on CPU: Omni kwargs and dtype, sampling fields,
output conversion from OmniRequestOutput-like objects of 0.26 and 0.30, capability gating,
and the runner's lifecycle against a fake ``vllm_omni`` (in-process and in the worker, where
the fake spawns a child the way vLLM-Omni does). The real engine needs a GPU.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import struct
import sys
import types
from pathlib import Path
from typing import Any

import pytest

np = pytest.importorskip("numpy")
Image = pytest.importorskip("PIL.Image")

from pytest_omni_perf.capabilities import ModelCapabilities  # noqa: E402
from pytest_omni_perf.engines import omni_engine as oe  # noqa: E402
from pytest_omni_perf.engines.base import (  # noqa: E402
    EngineError, EngineSpec, GenerationRequest, ProfileUnsupported,
)
from pytest_omni_perf.hardware import GpuInfo, HardwareInfo  # noqa: E402

FLUX_CAPS = ModelCapabilities(  # what discover() reports for FluxPipeline on 0.30
    pipeline_class="FluxPipeline", compile=True, sequence_parallel=False, cfg_parallel=True,
    tensor_parallel=True, layerwise_offload=True, cache_acceleration=True, tea_cache=True,
    hsdp=True, expert_parallel=False, transformer_classes=("FluxTransformer2DModel",))
H100 = HardwareInfo(gpus=(GpuInfo(0, "NVIDIA H100 80GB HBM3", (9, 0), 79.6),), note="nvml")


def write_safetensors(path: Path, dtypes: list[str]) -> None:
    """A safetensors file whose header names ``dtypes`` (tensors of one element)."""
    sizes = {"F32": 4, "BF16": 2, "F16": 2, "I64": 8}
    header: dict[str, Any] = {"__metadata__": {"format": "pt"}}
    offset = 0
    for index, dtype in enumerate(dtypes):
        header[f"t{index}"] = {"dtype": dtype, "shape": [1],
                               "data_offsets": [offset, offset + sizes[dtype]]}
        offset += sizes[dtype]
    raw = json.dumps(header).encode()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(struct.pack("<Q", len(raw)) + raw + bytes(offset))


def model_folder(root: Path, dtypes: list[str], class_name: str = "FluxPipeline") -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "model_index.json").write_text(json.dumps({"_class_name": class_name}))
    write_safetensors(root / "transformer" / "diffusion_pytorch_model.safetensors", dtypes)
    (root / "transformer" / "config.json").write_text(json.dumps({"_class_name": "X"}))
    return root


# -- kwargs, dtype and sampling fields ---------------------------------------------------------

def test_folder_dtype_reads_the_safetensors_header(tmp_path: Path) -> None:
    assert oe.folder_dtype(str(model_folder(tmp_path / "a", ["F32", "F32", "I64"]))) == "float32"
    assert oe.folder_dtype(str(model_folder(tmp_path / "b", ["BF16", "BF16", "F32"]))) == \
        "bfloat16"
    declared = model_folder(tmp_path / "c", ["F32"])
    (declared / "transformer" / "config.json").write_text(json.dumps({"torch_dtype": "float16"}))
    assert oe.folder_dtype(str(declared)) == "float16"  # a declared dtype wins
    assert oe.folder_dtype(str(tmp_path / "missing")) is None
    assert oe.folder_dtype("Qwen/Qwen-Image") is None  # a hub id: vLLM-Omni's default applies


@pytest.mark.parametrize(("options", "saved", "expected"), [
    ({"enforce_eager": True}, "float32", {"enforce_eager": True, "dtype": "float32"}),
    ({"enforce_eager": True, "dtype": "auto"}, "float32", {"enforce_eager": True,
                                                           "dtype": "float32"}),
    ({"dtype": "bfloat16"}, "float32", {"dtype": "bfloat16"}),  # the profile's choice wins
    ({"enforce_eager": False}, None, {"enforce_eager": False}),
    ({"quantization": "fp8", "cache_backend": "cache_dit", "cache_config": {"Fn_compute_blocks": 2},
      "ulysses_degree": 2}, "bfloat16",
     {"quantization_config": "fp8", "cache_backend": "cache_dit",
      "cache_config": {"Fn_compute_blocks": 2}, "ulysses_degree": 2, "dtype": "bfloat16"}),
])
def test_engine_kwargs(options: dict[str, Any], saved: str | None,
                       expected: dict[str, Any]) -> None:
    assert oe.engine_kwargs(options, saved) == expected


def test_sampling_fields_and_prompt() -> None:
    image = GenerationRequest(width=96, height=64, num_inference_steps=7, seed=3)
    assert oe.sampling_fields(image) == {"height": 64, "width": 96, "num_inference_steps": 7,
                                         "seed": 3}
    video = GenerationRequest(num_frames=9, guidance_scale=5.0, negative_prompt="blurry")
    assert oe.sampling_fields(video)["num_frames"] == 9
    assert oe.sampling_fields(video)["guidance_scale"] == 5.0
    assert oe.prompt_of(image) == image.prompt
    assert oe.prompt_of(video) == {"prompt": video.prompt, "negative_prompt": "blurry"}


# -- output conversion ------------------------------------------------------------------------

RGB = np.arange(4 * 6 * 3, dtype=np.uint8).reshape(4, 6, 3)


@pytest.mark.parametrize("images", [
    [Image.fromarray(RGB)],
    [RGB.astype(np.float32) / 255.0],  # float HxWxC in [0, 1]
    [(RGB.astype(np.float32) / 255.0 * 2 - 1).transpose(2, 0, 1)],  # CHW in [-1, 1]
    [[Image.fromarray(RGB)]],  # layered models nest one level
    RGB[None].astype(np.float32) / 255.0,  # a batch array
], ids=["pil", "float-hwc", "chw-signed", "nested", "batch"])
def test_image_outputs_become_uint8_frames(images: Any) -> None:
    (frame,) = oe.output_frames(images, video=False)
    assert frame.dtype == np.uint8 and frame.shape == (4, 6, 3)
    assert np.abs(frame.astype(int) - RGB).max() <= 1  # float round trips may move one level


VIDEO = np.random.default_rng(0).random((5, 4, 6, 3), dtype=np.float32)
VIDEO_U8 = (VIDEO * 255).round().astype(np.uint8)


@pytest.mark.parametrize("images", [
    [VIDEO[None]],  # (1, T, H, W, C) as vLLM-Omni's Wan returns
    VIDEO[None],
    [VIDEO.transpose(3, 0, 1, 2)],  # (C, T, H, W)
    [VIDEO.transpose(0, 3, 1, 2)],  # (T, C, H, W)
    [[Image.fromarray(f) for f in VIDEO_U8]],  # one video as a list of PIL frames
    [Image.fromarray(f) for f in VIDEO_U8],  # the frames themselves
], ids=["list-5d", "5d", "cthw", "tchw", "nested-pil", "pil-frames"])
def test_video_outputs_become_frames(images: Any) -> None:
    frames = oe.output_frames(images, video=True)
    assert len(frames) == 5
    assert all(f.dtype == np.uint8 and f.shape == (4, 6, 3) for f in frames)
    assert all((f == g).all() for f, g in zip(frames, VIDEO_U8))


def test_bfloat16_tensor_video() -> None:
    torch = pytest.importorskip("torch")
    tensor = torch.from_numpy(VIDEO).to(torch.bfloat16)  # bf16 has no numpy dtype
    frames = oe.output_frames([tensor], video=True)
    assert len(frames) == 5
    assert np.abs(frames[0].astype(int) - VIDEO_U8[0]).max() <= 2  # bf16 keeps 8 bits


@pytest.mark.parametrize(("images", "video"), [
    (None, False), ([], True), ([np.zeros((5, 5, 2))], False), ([np.zeros(4)], True),
], ids=["none", "empty", "two-channels", "1d"])
def test_unusable_outputs_raise(images: Any, video: bool) -> None:
    with pytest.raises(EngineError, match="vLLM-Omni returned"):
        oe.output_frames(images, video=video)


@dataclasses.dataclass
class Output026:
    """0.26's OmniRequestOutput shape: a dataclass whose LLM part must never be read."""

    images: list[Any]
    stage_durations: dict[str, float]
    peak_memory_mb: float
    metrics: dict[str, Any] = dataclasses.field(default_factory=dict)
    final_output_type: str = "image"

    @property
    def request_output(self) -> Any:
        raise AssertionError("the adapter must not touch request_output")


def test_metrics_of_026_and_030_outputs() -> None:
    old = Output026([Image.fromarray(RGB)], {"stage_0_gen_ms": 12.5}, 321.0, {"steps": 3})
    assert oe.output_metrics(old) == {"peak_memory_mb": 321.0,
                                      "stage_durations": {"stage_0_gen_ms": 12.5},
                                      "metrics": {"steps": 3}}
    new = types.SimpleNamespace(images=[RGB], stage_durations={}, peak_memory_mb=0.0,
                                metrics=None, error=None)
    assert oe.output_metrics(new) == {}  # 0.0 is vLLM-Omni's "not measured"
    text = types.SimpleNamespace(images=[])
    assert oe.pick_output([new, text]) is new  # the diffusion stage, not a text stage
    with pytest.raises(EngineError, match="no output"):
        oe.pick_output([])


# -- capability gating and the runner ----------------------------------------------------------

class FakeOmni:
    """Records what the runner passes; answers with fixed frames."""

    made: list[FakeOmni] = []

    def __init__(self, model: str, **kwargs: Any) -> None:
        self.model, self.kwargs = model, kwargs
        self.calls: list[tuple[Any, Any]] = []
        self.closed = 0
        self.fail = False
        self.error: str | None = None
        FakeOmni.made.append(self)

    def generate(self, prompt: Any, params: Any, use_tqdm: bool = True) -> list[Any]:
        self.calls.append((prompt, params))
        if self.fail:
            raise RuntimeError("engine dead")
        return [Output026([Image.fromarray(RGB)], {"stage_0_gen_ms": 1.5}, 77.0)] if \
            self.error is None else [types.SimpleNamespace(images=None, error=self.error)]

    def close(self) -> None:
        self.closed += 1


@pytest.fixture
def fake_vllm_omni(monkeypatch: pytest.MonkeyPatch) -> type[FakeOmni]:
    FakeOmni.made = []
    package = types.ModuleType("vllm_omni")
    package.Omni = FakeOmni  # type: ignore[attr-defined]
    data = types.ModuleType("vllm_omni.inputs.data")
    data.OmniDiffusionSamplingParams = types.SimpleNamespace  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "vllm_omni", package)
    monkeypatch.setitem(sys.modules, "vllm_omni.inputs", types.ModuleType("vllm_omni.inputs"))
    monkeypatch.setitem(sys.modules, "vllm_omni.inputs.data", data)
    monkeypatch.setattr(oe, "discover_capabilities", lambda folder: (FLUX_CAPS, "checked"))
    return FakeOmni


def test_silently_ignored_option_is_refused_before_the_engine_starts(
        tmp_path: Path, fake_vllm_omni: type[FakeOmni]) -> None:
    runner = oe.OmniRunner(str(model_folder(tmp_path, ["F32"])), {"ulysses_degree": 2})
    with pytest.raises(ProfileUnsupported, match="ulysses_degree=2: FluxTransformer2DModel has "
                                                 "no _sp_plan"):
        runner.load()
    assert fake_vllm_omni.made == []


def test_runner_lifecycle(tmp_path: Path, fake_vllm_omni: type[FakeOmni]) -> None:
    folder = str(model_folder(tmp_path, ["F32"]))
    runner = oe.OmniRunner(folder, {"enforce_eager": True, "cache_backend": "cache_dit"})
    applied = runner.load()
    (omni,) = fake_vllm_omni.made
    assert omni.model == folder
    assert omni.kwargs == {"enforce_eager": True, "cache_backend": "cache_dit",
                           "dtype": "float32"}
    assert applied["omni_kwargs"] == omni.kwargs and applied["pipeline"] == "FluxPipeline"
    output = runner.generate(GenerationRequest(width=6, height=4, seed=5, negative_prompt="x"))
    prompt, (params,) = omni.calls[0]
    assert prompt == {"prompt": GenerationRequest.prompt, "negative_prompt": "x"}
    assert (params.width, params.height, params.seed) == (6, 4, 5)
    assert (output.frames[0] == RGB).all() and output.engine_latency_s >= 0
    assert output.engine_metrics["peak_memory_mb"] == 77.0
    omni.error = "CUDA out of memory"
    with pytest.raises(EngineError, match="CUDA out of memory"):
        runner.generate(GenerationRequest())
    omni.error, omni.fail = None, True
    with pytest.raises(RuntimeError, match="engine dead"):
        runner.generate(GenerationRequest())
    assert omni.closed == 1  # closed on failure: vLLM-Omni shut itself down anyway
    with pytest.raises(EngineError, match="not running"):
        runner.generate(GenerationRequest())
    runner.close()
    assert omni.closed == 1


def test_create_needs_vllm_omni_and_a_gpu(monkeypatch: pytest.MonkeyPatch) -> None:
    spec = EngineSpec(model="tiny-flux", profile_name="eager", options={"enforce_eager": True},
                      backend="omni")
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "vllm_omni" else real_find_spec(name, *a))
    with pytest.raises(EngineError, match="needs vLLM-Omni"):
        oe.create(spec, H100)
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: object())
    with pytest.raises(EngineError, match="needs a CUDA GPU"):
        oe.create(spec, HardwareInfo())
    engine = oe.create(spec, H100)
    assert engine.factory == oe.FACTORY and engine.device == "cuda"


# -- in the worker process, with a fake vllm_omni that spawns like the real one ----------------

FAKE_PACKAGE = '''
import multiprocessing, types
import numpy as np
from PIL import Image

def _child():
    pass

class Omni:
    def __init__(self, model, **kwargs):
        # vLLM-Omni starts its workers with "spawn", which re-imports the parent's __main__.
        child = multiprocessing.get_context("spawn").Process(target=_child)
        child.start()
        child.join()
        if child.exitcode != 0:
            raise RuntimeError(f"spawned child failed with {child.exitcode}")
        self.kwargs = kwargs

    def generate(self, prompt, params, use_tqdm=True):
        (p,) = params
        image = Image.fromarray(np.full((p.height, p.width, 3), p.seed, np.uint8))
        return [types.SimpleNamespace(images=[image], peak_memory_mb=42.0,
                                      stage_durations={"stage_0_gen_ms": 1.5}, error=None)]

    def close(self):
        pass
'''
FAKE_DATA = '''
class OmniDiffusionSamplingParams:
    def __init__(self, **fields):
        self.__dict__.update(fields)
'''


def test_worker_hosts_the_runner_and_survives_spawn(tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    site = tmp_path / "site"
    (site / "vllm_omni" / "inputs").mkdir(parents=True)
    (site / "vllm_omni" / "__init__.py").write_text(FAKE_PACKAGE)
    (site / "vllm_omni" / "inputs" / "__init__.py").write_text("")
    (site / "vllm_omni" / "inputs" / "data.py").write_text(FAKE_DATA)
    monkeypatch.setenv("PYTHONPATH", str(site))
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: object())
    folder = model_folder(tmp_path / "model", ["BF16"])
    spec = EngineSpec(model=str(folder), profile_name="eager", options={"enforce_eager": True},
                      backend="omni", start_timeout_s=60, request_timeout_s=30)
    engine = oe.create(spec, H100)
    engine.start()
    try:
        info = engine.describe()
        assert info.applied["omni_kwargs"] == {"enforce_eager": True, "dtype": "bfloat16"}
        assert "not checked" in info.applied["capabilities"]  # the fake has no registry
        # Omni(...) loads, applies and warms up in one call: only launch and import are seen
        phases = info.startup
        assert phases.interpreter_s is not None and phases.imports_s is not None
        assert (phases.load_s, phases.apply_s, phases.compile_s, phases.compile) == (None,) * 4
        output = engine.generate(GenerationRequest(width=8, height=4, seed=9))
        assert output.frames[0].shape == (4, 8, 3) and int(output.frames[0][0, 0, 0]) == 9
        assert output.engine_metrics["stage_durations"] == {"stage_0_gen_ms": 1.5}
    finally:
        engine.stop()
    assert not engine.alive
