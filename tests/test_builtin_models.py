"""Tests of pytest_omni_perf.builtin_models: deterministic offline builds, the cache folder,
reloading, model kinds and digests. The medium models are checked by config, never built."""

from __future__ import annotations

import json
import os
import pathlib
import subprocess
import sys
from typing import Any

import pytest

pytest.importorskip("numpy")
pytest.importorskip("torch")
pytest.importorskip("diffusers")
pytest.importorskip("transformers")

import dataclasses  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402

from pytest_omni_perf import builtin_build as bb  # noqa: E402
from pytest_omni_perf import builtin_models as bm  # noqa: E402

TINY = ("tiny-flux", "tiny-wan", "tiny-flux-kontext", "tiny-wan-i2v", "tiny-qwen-image-edit-plus")
_ROOT = str(pathlib.Path(bm.__file__).resolve().parents[1])


def _env() -> dict[str, str]:
    env = dict(os.environ, HF_HUB_OFFLINE="1", PYTHONPATH=_ROOT)
    env.pop("OMNI_PERF_CACHE_DIR", None)
    return env


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> dict[str, pathlib.Path]:
    """Each tiny model built once for this module, in a fresh cache."""
    cache = tmp_path_factory.mktemp("cache")
    return {name: bm.ensure_model(name, cache) for name in TINY}


@pytest.mark.parametrize("name", TINY)
def test_digest_is_the_expected_one(built: dict[str, pathlib.Path], name: str) -> None:
    assert bm.weights_digest(built[name]) == bm.EXPECTED_DIGESTS[name]


@pytest.mark.parametrize("name", TINY)
def test_folder_layout(built: dict[str, pathlib.Path], name: str) -> None:
    folder = built[name]
    assert folder.name == f"{name}-r{bm.RECIPE_VERSION}"
    assert folder.parent.name == "models"
    assert (folder / "model_index.json").is_file()
    assert sorted(p.name for p in folder.parent.iterdir() if p.is_dir()) == sorted(
        f"{n}-r{bm.RECIPE_VERSION}" for n in TINY)  # no temporary folders left behind


def test_ensure_model_reuses_the_folder(built: dict[str, pathlib.Path]) -> None:
    folder = built["tiny-flux"]
    stamp = (folder / "model_index.json").stat().st_mtime_ns
    assert bm.ensure_model("tiny-flux", folder.parent.parent) == folder
    assert (folder / "model_index.json").stat().st_mtime_ns == stamp


@pytest.mark.parametrize("name", TINY)
def test_rebuild_under_another_torch_seed_gives_the_same_weights(
        built: dict[str, pathlib.Path], name: str, tmp_path: pathlib.Path) -> None:
    torch.manual_seed(12345)  # torch's RNG must play no part
    again = bm.ensure_model(name, tmp_path)
    assert again != built[name]
    assert bm.weights_digest(again) == bm.weights_digest(built[name])


def test_two_processes_building_at_once_share_one_complete_folder(tmp_path: pathlib.Path) -> None:
    code = ("import pathlib, sys; from pytest_omni_perf.builtin_models import ensure_model; "
            "print(ensure_model('tiny-flux', pathlib.Path(sys.argv[1])))")
    procs = [subprocess.Popen([sys.executable, "-c", code, str(tmp_path)], env=_env(),
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(2)]
    results = [p.communicate(timeout=240) for p in procs]
    for proc, (_, err) in zip(procs, results):
        assert proc.returncode == 0, err[-2000:]
    folders = {out.strip().splitlines()[-1] for out, _ in results}
    assert folders == {str(tmp_path / "models" / f"tiny-flux-r{bm.RECIPE_VERSION}")}
    assert [p.name for p in (tmp_path / "models").iterdir() if p.is_dir()] == [
        f"tiny-flux-r{bm.RECIPE_VERSION}"]
    assert bm.weights_digest(pathlib.Path(folders.pop())) == bm.EXPECTED_DIGESTS["tiny-flux"]


def test_losing_the_race_keeps_the_winners_folder(tmp_path: pathlib.Path) -> None:
    final, ours = tmp_path / "m-r1", tmp_path / ".m-r1.x.tmp"
    final.mkdir()
    (final / "winner").write_text("1")
    ours.mkdir()
    (ours / "loser").write_text("2")
    assert bm._publish(ours, final) == final
    assert not ours.exists()
    assert [p.name for p in final.iterdir()] == ["winner"]


def test_failed_build_leaves_nothing_visible(tmp_path: pathlib.Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(recipe: object, folder: pathlib.Path) -> None:
        (folder / "model_index.json").write_text("{}")  # half written
        raise RuntimeError("out of disk")

    monkeypatch.setattr(bm, "build", broken)
    with pytest.raises(RuntimeError, match="out of disk"):
        bm.ensure_model("tiny-wan", tmp_path)
    assert [p for p in (tmp_path / "models").iterdir() if p.is_dir()] == []


def test_unknown_name_is_a_clear_value_error(tmp_path: pathlib.Path) -> None:
    with pytest.raises(ValueError, match="unknown built-in model 'tiny-sd'") as info:
        bm.ensure_model("tiny-sd", tmp_path)
    assert all(name in str(info.value) for name in bm.BUILTIN_MODELS)
    assert not (tmp_path / "models").exists()
    assert not bm.is_builtin("tiny-sd") and all(bm.is_builtin(n) for n in bm.BUILTIN_MODELS)


def test_default_cache_dir(monkeypatch: pytest.MonkeyPatch, tmp_path: pathlib.Path) -> None:
    monkeypatch.setenv("OMNI_PERF_CACHE_DIR", str(tmp_path))
    assert bm.default_cache_dir() == tmp_path
    monkeypatch.delenv("OMNI_PERF_CACHE_DIR")
    assert bm.default_cache_dir() == pathlib.Path.home() / ".cache" / "pytest-omni-perf"


_GENERATE = """
import json, sys, numpy as np, torch
from diffusers import DiffusionPipeline
from PIL import Image
from pytest_omni_perf.builtin_models import model_kind
from pytest_omni_perf.engines.vl_processor import processor_override
report = {}
for folder in sys.argv[1:]:
    video = model_kind(folder) == "video"
    kw = dict(prompt="a red cat on a mat", height=64, width=64, num_inference_steps=4,
              max_sequence_length=32, output_type="np")
    if video:
        kw["num_frames"] = 5
    outs = []
    for _ in range(2):  # two loads from the folder, one call each
        # The Qwen2-VL processor without torchvision, as the diffusers engine loads it.
        pipe = DiffusionPipeline.from_pretrained(folder, **processor_override(folder))
        if "ImageToVideo" in type(pipe).__name__:  # the first frame comes from an image
            kw["image"] = Image.fromarray(np.full((64, 64, 3), 200, np.uint8))
        if "EditPlus" in type(pipe).__name__:  # two input images; each is VAE-encoded at
            # ~1 MP whatever its size (the pipeline's VAE_IMAGE_SIZE): 2 steps keep it short
            kw.update(num_inference_steps=2, image=[
                Image.fromarray(np.full((64, 64, 3), 200, np.uint8)),
                Image.fromarray(np.full((48, 80, 3), 40, np.uint8))])
        pipe.set_progress_bar_config(disable=True)
        out = pipe(generator=torch.Generator().manual_seed(7), **kw)
        outs.append(np.asarray(out.frames if video else out.images))
    report[folder] = {"class": type(pipe).__name__, "shape": list(outs[0].shape),
                      "equal": bool(np.array_equal(outs[0], outs[1])),
                      "finite": bool(np.isfinite(outs[0]).all()), "std": float(outs[0].std())}
print(json.dumps(report))
"""


def test_reloaded_pipelines_run_offline_and_repeat_bitwise(built: dict[str, pathlib.Path]) -> None:
    proc = subprocess.run([sys.executable, "-c", _GENERATE, *(str(built[n]) for n in TINY)],
                          env=_env(), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    flux, wan = report[str(built["tiny-flux"])], report[str(built["tiny-wan"])]
    i2v = report[str(built["tiny-wan-i2v"])]
    plus = report[str(built["tiny-qwen-image-edit-plus"])]
    assert (flux["class"], flux["shape"]) == ("FluxPipeline", [1, 64, 64, 3])
    assert (wan["class"], wan["shape"]) == ("WanPipeline", [1, 5, 64, 64, 3])
    assert (i2v["class"], i2v["shape"]) == ("WanImageToVideoPipeline", [1, 5, 64, 64, 3])
    assert (plus["class"], plus["shape"]) == ("QwenImageEditPlusPipeline", [1, 64, 64, 3])
    for result in (flux, wan, i2v, plus):
        assert result["equal"] and result["finite"]
        assert result["std"] > 0.01  # an image, not a constant


def test_model_kind(built: dict[str, pathlib.Path], tmp_path: pathlib.Path) -> None:
    assert bm.model_kind(built["tiny-flux"]) == "image"
    assert bm.model_kind(built["tiny-wan"]) == "video"
    assert bm.model_kind(built["tiny-wan-i2v"]) == "video"
    cases = {"QwenImagePipeline": "image", "StableDiffusion3Pipeline": "image",
             "HunyuanVideoPipeline": "video", "LTXPipeline": "video",
             "WanImageToVideoPipeline": "video", "CogVideoXPipeline": "video"}
    for class_name, kind in cases.items():
        folder = tmp_path / class_name
        folder.mkdir()
        (folder / "model_index.json").write_text(json.dumps({"_class_name": class_name}))
        assert bm.model_kind(folder) == kind, class_name
    with pytest.raises(ValueError, match="not a diffusers pipeline folder"):
        bm.model_kind(tmp_path)


def test_digest_ignores_file_layout_but_not_content(built: dict[str, pathlib.Path],
                                                    tmp_path: pathlib.Path) -> None:
    from safetensors.torch import load_file, save_file

    src = built["tiny-wan"]
    copy = tmp_path / "copy"
    for path in src.rglob("*.safetensors"):
        tensors = load_file(str(path))
        names = sorted(tensors)
        (copy / path.parent.name).mkdir(parents=True)
        for i, part in enumerate((names[::2], names[1::2])):  # two shards, other names
            save_file({n: tensors[n] for n in part}, str(copy / path.parent.name / f"s{i}.safetensors"))
    assert bm.weights_digest(copy) == bm.weights_digest(src)
    shard = copy / "transformer" / "s0.safetensors"
    tensors = load_file(str(shard))
    name = sorted(tensors)[0]
    tensors[name] = tensors[name].clone()
    tensors[name].view(-1)[0] += 1
    save_file(tensors, str(shard))
    assert bm.weights_digest(copy) != bm.weights_digest(src)


def test_chunked_fill_equals_one_sequential_draw(monkeypatch: pytest.MonkeyPatch) -> None:
    whole = torch.empty(10_000)
    bb._uniform_into([0, 1, 2], whole, 0, np.float32(0.5))
    monkeypatch.setattr(bb, "_CHUNK", 999)
    chunked = torch.empty(10_000)
    for start in range(0, 10_000, 999):
        bb._uniform_into([0, 1, 2], chunked, start, np.float32(0.5))
    assert torch.equal(whole, chunked)
    assert float(whole.abs().max()) <= 0.5 and float(whole.std()) > 0.25


def test_norms_keep_constants_and_the_timestep_embedder_is_damped(
        built: dict[str, pathlib.Path]) -> None:
    from safetensors.torch import load_file

    weights = load_file(str(built["tiny-flux"] / "transformer" / "diffusion_pytorch_model.safetensors"))
    assert torch.equal(weights["transformer_blocks.0.attn.norm_q.weight"], torch.ones(64))
    damped = weights["time_text_embed.timestep_embedder.linear_2.weight"]  # fan_in 256
    plain = weights["time_text_embed.text_embedder.linear_2.weight"]  # fan_in 256
    assert float(damped.abs().max()) <= 0.1 / 16 < float(plain.abs().max()) <= 1 / 16


def _count(module: Any) -> int:
    return sum(p.numel() for p in module.parameters())


def test_medium_flux_sizes() -> None:
    recipe = bm._RECIPES["medium-flux"]
    with torch.device("meta"):  # sizes without allocating or filling ~0.9B params
        pipe = bb._make_flux(recipe)
    t = pipe.transformer.config
    assert (t.num_attention_heads * t.attention_head_dim, t.num_layers, t.num_single_layers) == (
        1536, 4, 8)
    assert tuple(pipe.vae.config.block_out_channels) == (128, 256, 512, 512)
    assert pipe.vae.config.latent_channels == 16
    assert 0.60e9 < _count(pipe.transformer) < 0.66e9
    total = sum(_count(m) for m in pipe.components.values() if isinstance(m, torch.nn.Module))
    assert 0.85e9 < total < 0.95e9
    assert recipe.dtype == "bfloat16"


@pytest.mark.parametrize("size", ["tiny", "medium"])
def test_flux_kontext_is_flux_under_the_edit_pipeline(size: str) -> None:
    """The edit built-ins reuse the Flux recipes whole: only the pipeline class differs."""
    kontext, flux = bm._RECIPES[f"{size}-flux-kontext"], bm._RECIPES[f"{size}-flux"]
    assert kontext.pipeline == "FluxKontextPipeline" and flux.pipeline is None
    assert dataclasses.replace(kontext, pipeline=None) == flux
    with torch.device("meta"):
        pipe = bb._make_flux(kontext)
    assert type(pipe).__name__ == "FluxKontextPipeline"
    assert bm.class_kind(type(pipe).__name__) == "image"


def test_qwen_image_edit_plus_folder_is_qwen_image_edit_2509s_layout(
        built: dict[str, pathlib.Path]) -> None:
    """model_index.json names the components as Qwen-Image-Edit-2509's does; the processor
    folder loads without torchvision and turns two images into vision tokens."""
    from PIL import Image

    from pytest_omni_perf.engines import vl_processor

    folder = built["tiny-qwen-image-edit-plus"]
    index = json.loads((folder / "model_index.json").read_text())
    assert index["_class_name"] == "QwenImageEditPlusPipeline"
    assert {k: v for k, v in index.items() if not k.startswith("_")} == {
        "processor": ["transformers", "Qwen2VLProcessor"],
        "scheduler": ["diffusers", "FlowMatchEulerDiscreteScheduler"],
        "text_encoder": ["transformers", "Qwen2_5_VLForConditionalGeneration"],
        "tokenizer": ["transformers", "Qwen2Tokenizer"],
        "transformer": ["diffusers", "QwenImageTransformer2DModel"],
        "vae": ["diffusers", "AutoencoderKLQwenImage"]}
    assert bm.model_kind(folder) == "image" and bm.class_takes_image(index["_class_name"])
    processor = vl_processor.processor_override(folder)["processor"]
    text = "Picture 1: <|vision_start|><|image_pad|><|vision_end|>" \
        "Picture 2: <|vision_start|><|image_pad|><|vision_end|>make it snow"
    pictures = [Image.new("RGB", (56, 56)), Image.new("RGB", (112, 56))]
    inputs = processor(text=[text], images=pictures, padding=True, return_tensors="pt")
    # 14 px patches merged 2x2: a 56x56 image is 2x2 vision tokens, 112x56 is 4x2.
    assert inputs["image_grid_thw"].tolist() == [[1, 4, 4], [1, 4, 8]]
    pad = processor.tokenizer.convert_tokens_to_ids("<|image_pad|>")
    assert int((inputs["input_ids"] == pad).sum()) == 4 + 8
    assert vl_processor.processor_override(built["tiny-flux-kontext"]) == {}


def test_medium_wan_sizes() -> None:
    import diffusers
    import transformers

    d: Any = diffusers
    t: Any = transformers
    recipe = bm._RECIPES["medium-wan"]
    with torch.device("meta"):  # component by component: the UniPC scheduler needs real data
        transformer = d.WanTransformer3DModel(**recipe.transformer)
        vae = d.AutoencoderKLWan(**recipe.vae)
        text = t.UMT5EncoderModel(bb._t5_config(t.UMT5Config, bb._t5_tokenizer(),
                                                 recipe.text_encoder))
    config = transformer.config
    assert config.num_attention_heads * config.attention_head_dim == 1536
    assert config.text_dim == text.config.d_model
    assert 0.5e9 < _count(transformer) < 1.3e9
    assert (vae.config.base_dim, vae.config.z_dim, vae.config.dim_mult) == (96, 16, [1, 2, 4, 4])
    assert _count(text) < 0.1e9
    assert recipe.dtype == "bfloat16"


def test_module_imports_no_heavy_dependency() -> None:
    code = ("import sys; import pytest_omni_perf.builtin_models; "
            "print(sorted({'torch', 'numpy', 'diffusers', 'transformers'} & set(sys.modules)))")
    out = subprocess.run([sys.executable, "-c", code], env=_env(), capture_output=True,
                         text=True, timeout=60, check=True).stdout
    assert out.strip() == "[]", out
