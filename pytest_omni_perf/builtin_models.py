"""Built-in random-weight diffusion pipelines, generated offline and cached on disk.

``tiny-*`` run anywhere (CPU CI); ``medium-*`` are sized for one H100. Each family has a
text-to-X model (flux, wan) and one that takes an input image (flux-kontext: image edit,
wan-i2v: image to video); ``tiny-qwen-image-edit-plus`` edits from several input images
(Qwen-Image-Edit-2509's ``QwenImageEditPlusPipeline``). Committed baselines are compared
against these models' outputs, so the weights must be bit-identical on every machine and
torch version: every parameter is drawn from numpy's PCG64 raw stream (whose bits numpy
guarantees), never from torch's initializers, and ``EXPECTED_DIGESTS`` pins the result for
the tiny models.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import os
import pathlib
import shutil
import struct
import tempfile
from collections.abc import Iterator
from typing import Any

from pytest_omni_perf.builtin_build import Recipe, build

BUILTIN_MODELS: tuple[str, ...] = ("tiny-flux", "tiny-wan", "medium-flux", "medium-wan",
                                   "tiny-flux-kontext", "medium-flux-kontext",
                                   "tiny-wan-i2v", "medium-wan-i2v",
                                   "tiny-qwen-image-edit-plus")
EDIT_MODELS: tuple[str, ...] = ("tiny-flux-kontext", "medium-flux-kontext",
                                "tiny-qwen-image-edit-plus")
"""Built-ins that take an input image (image edit); the qwen one takes several."""
I2V_MODELS: tuple[str, ...] = ("tiny-wan-i2v", "medium-wan-i2v")
"""Built-ins that take an input image and make a video (image to video)."""
RECIPE_VERSION: int = 2
"""The built folders' layout: 2 drops model_index.json's null entries (builtin_build.
_drop_absent_components), so folders built as 1 are rebuilt; weights are unchanged."""

# weights_digest of a fresh build; a change means baselines of these models are stale.
EXPECTED_DIGESTS: dict[str, str] = {
    "tiny-flux": "2f200020a4a7a498d2a6e4749522adc3a50360e4b9dcfc7ec0189e437d66272c",
    "tiny-wan": "a37a0e7f5a6d6ce090ecf0a08262a523940159198770fff942713ac6c880bf85",
    # Flux's weights under FluxKontextPipeline: the same tensors, so the same digest.
    "tiny-flux-kontext": "2f200020a4a7a498d2a6e4749522adc3a50360e4b9dcfc7ec0189e437d66272c",
    "tiny-wan-i2v": "6d9e9bee7c9bbad2d597f1b503dee35e25fcb1d60145478decf56fa1d9a52fd1",
    "tiny-qwen-image-edit-plus":
        "619f6fb9b8533dd3837c4131ca632197a1e0c711293c93cba0bb250c62c6742a",
}

# Substrings of model_index.json's _class_name that mark a video pipeline.
_VIDEO_MARKERS = ("Video", "Wan", "LTX", "Mochi", "Allegro", "Latte", "AnimateDiff",
                  "I2VGenXL", "SkyReels", "EasyAnimate", "ConsisID", "ToWorld")
# Pipelines that make their output from an input image (edit, image to video): diffusers'
# FluxKontextPipeline, QwenImageEdit(Plus)Pipeline, WanImageToVideoPipeline, *Img2Img*;
# hub ids name them the same way (FLUX.1-Kontext-dev, Qwen-Image-Edit, Wan2.2-I2V-A14B).
_IMAGE_INPUT_MARKERS = ("Kontext", "Edit", "ImageToVideo", "Img2Img", "I2V")


def _flux_dit(double: int, single: int, heads: int, head_dim: int, joint: int, pooled: int,
              rope: tuple[int, int, int]) -> dict[str, Any]:
    # guidance_embeds off (schnell-like): guidance_scale must not change what is measured.
    return {"patch_size": 1, "in_channels": 64, "num_layers": double, "num_single_layers": single,
            "attention_head_dim": head_dim, "num_attention_heads": heads,
            "joint_attention_dim": joint, "pooled_projection_dim": pooled,
            "guidance_embeds": False, "axes_dims_rope": rope}


def _wan_dit(heads: int, text_dim: int, ffn_dim: int, layers: int, head_dim: int,
             in_channels: int = 16) -> dict[str, Any]:
    return {"patch_size": (1, 2, 2), "num_attention_heads": heads, "attention_head_dim": head_dim,
            "in_channels": in_channels, "out_channels": 16, "text_dim": text_dim, "freq_dim": 256,
            "ffn_dim": ffn_dim, "num_layers": layers, "cross_attn_norm": True,
            "qk_norm": "rms_norm_across_heads", "eps": 1e-6, "rope_max_seq_len": 1024}


def _clip(hidden: int, ffn: int, layers: int, heads: int) -> dict[str, Any]:
    return {"hidden_size": hidden, "intermediate_size": ffn, "num_hidden_layers": layers,
            "num_attention_heads": heads, "max_position_embeddings": 77, "projection_dim": hidden}


def _t5(d_model: int, d_ff: int, layers: int, heads: int, d_kv: int) -> dict[str, Any]:
    return {"d_model": d_model, "d_ff": d_ff, "num_layers": layers, "num_heads": heads,
            "d_kv": d_kv}


# The real FLUX.1 VAE (84M params); the tiny one keeps its 16 latent channels and 8x scale.
_FLUX_VAE: dict[str, Any] = {
    "block_out_channels": (128, 256, 512, 512), "layers_per_block": 2, "latent_channels": 16,
    "down_block_types": ("DownEncoderBlock2D",) * 4, "up_block_types": ("UpDecoderBlock2D",) * 4,
    "scaling_factor": 0.3611, "shift_factor": 0.1159, "use_quant_conv": False,
    "use_post_quant_conv": False, "sample_size": 1024}
_WAN_VAE: dict[str, Any] = {  # the real Wan2.1 VAE (AutoencoderKLWan's defaults)
    "base_dim": 96, "z_dim": 16, "dim_mult": [1, 2, 4, 4], "num_res_blocks": 2,
    "temperal_downsample": [False, True, True]}

_TINY_FLUX = Recipe(  # ~9M-param transformer, 38 MiB fp32
    "flux", "float32", _flux_dit(2, 4, 4, 64, 64, 64, (16, 24, 24)),
    {**_FLUX_VAE, "block_out_channels": (32, 32, 64, 64), "layers_per_block": 1,
     "sample_size": 64},
    _clip(64, 128, 2, 4), _t5(64, 128, 2, 4, 16))
_MEDIUM_FLUX = Recipe(  # 636M transformer + real VAE + CLIP-L-sized CLIP + small T5: 0.91B
    "flux", "bfloat16", _flux_dit(4, 8, 12, 128, 1024, 768, (16, 56, 56)), _FLUX_VAE,
    _clip(768, 3072, 12, 12), _t5(1024, 2816, 8, 16, 64))

_TINY_WAN_VAE: dict[str, Any] = {"base_dim": 8, "z_dim": 16, "dim_mult": [1, 1, 2, 2],
                                  "num_res_blocks": 1, "temperal_downsample": [False, True, True]}
# Image to video in Wan2.2-I2V-A14B's layout, without its image encoder: the transformer takes
# 36 channels (16 noise latents + 4 first-frame mask + 16 latents of the input image, in
# WanImageToVideoPipeline.prepare_latents' order), image_dim None (no CLIP image tokens). One
# transformer, no boundary_ratio: A14B's second (low-noise) transformer has the same shape and
# doubles the weights without changing what one denoising step costs.
_I2V_CHANNELS = 16 + 4 + 16

# ~1.3M params (the real one: 60 layers of 24 heads x 128). Two input images become ~8k
# latent tokens whatever their size (the pipeline VAE-encodes each at ~1 MP), so attention
# dominates on CPU: 2 heads, not 4, cut a denoising step by a third there.
_TINY_QWEN_DIT: dict[str, Any] = {
    "patch_size": 2, "in_channels": 64, "out_channels": 16, "num_layers": 2,
    "attention_head_dim": 64, "num_attention_heads": 2, "joint_attention_dim": 64,
    "guidance_embeds": False, "axes_dims_rope": (16, 24, 24)}
_TINY_QWEN_VL: dict[str, Any] = {  # ~0.2M params; mrope_section sums to head_dim / 2
    "text": {"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2,
             "num_attention_heads": 4, "num_key_value_heads": 2,
             "max_position_embeddings": 4096, "rope_parameters": {
                 "rope_type": "default", "mrope_section": [2, 3, 3], "rope_theta": 1e6}},
    "vision": {"depth": 2, "hidden_size": 32, "intermediate_size": 64, "num_heads": 2,
               "out_hidden_size": 64, "fullatt_block_indexes": [1]}}

_RECIPES: dict[str, Recipe] = {
    "tiny-flux": _TINY_FLUX,
    "medium-flux": _MEDIUM_FLUX,
    # Image edit: FluxKontextPipeline takes Flux's components unchanged (the input image's
    # latents join the sequence), so the Flux recipes serve, weights and all.
    "tiny-flux-kontext": dataclasses.replace(_TINY_FLUX, pipeline="FluxKontextPipeline"),
    "medium-flux-kontext": dataclasses.replace(_MEDIUM_FLUX, pipeline="FluxKontextPipeline"),
    "tiny-wan": Recipe(  # ~9M-param transformer, 36 MiB fp32
        "wan", "float32", _wan_dit(4, 64, 1024, 8, 64), _TINY_WAN_VAE, _t5(64, 128, 2, 4, 16)),
    "medium-wan": Recipe(  # Wan2.1-1.3B's width and FFN, 20 of its 30 layers: 0.95B + VAE
        "wan", "bfloat16", _wan_dit(12, 768, 8960, 20, 128), _WAN_VAE, _t5(768, 2048, 4, 12, 64)),
    # Qwen-Image-Edit-2509's layout (QwenImageEditPlusPipeline): an MMDiT over 2x2-packed
    # latents of 16 channels, the Wan-like Qwen-Image VAE, and a Qwen2.5-VL that sees the
    # input images (vision tower -> text model of width joint_attention_dim).
    "tiny-qwen-image-edit-plus": Recipe(
        "qwen", "float32", _TINY_QWEN_DIT, _TINY_WAN_VAE, _TINY_QWEN_VL,
        pipeline="QwenImageEditPlusPipeline"),
    "tiny-wan-i2v": Recipe(
        "wan", "float32", _wan_dit(4, 64, 1024, 8, 64, _I2V_CHANNELS), _TINY_WAN_VAE,
        _t5(64, 128, 2, 4, 16), pipeline="WanImageToVideoPipeline"),
    "medium-wan-i2v": Recipe(
        "wan", "bfloat16", _wan_dit(12, 768, 8960, 20, 128, _I2V_CHANNELS), _WAN_VAE,
        _t5(768, 2048, 4, 12, 64), pipeline="WanImageToVideoPipeline"),
}


def is_builtin(name: str) -> bool:
    """Return whether ``name`` is one of ``BUILTIN_MODELS``."""
    return name in BUILTIN_MODELS


def default_cache_dir() -> pathlib.Path:
    """Return ``$OMNI_PERF_CACHE_DIR``, or ``~/.cache/pytest-omni-perf`` when it is unset."""
    env = os.environ.get("OMNI_PERF_CACHE_DIR")
    return pathlib.Path(env) if env else pathlib.Path.home() / ".cache" / "pytest-omni-perf"


def folder_of(name: str, cache_dir: pathlib.Path | None = None) -> pathlib.Path:
    """Where built-in model ``name`` is (or will be) built: ``<cache_dir>/models/<name>-r
    <RECIPE_VERSION>``. ValueError for a name that is not a built-in."""
    if not is_builtin(name):
        raise ValueError(f"unknown built-in model {name!r}; built-ins: {', '.join(BUILTIN_MODELS)}")
    models = (cache_dir if cache_dir is not None else default_cache_dir()) / "models"
    return models / f"{name}-r{RECIPE_VERSION}"


def ensure_model(name: str, cache_dir: pathlib.Path | None = None) -> pathlib.Path:
    """Return the folder of built-in model ``name``, building it on first use.

    The folder is ``<cache_dir>/models/<name>-r<RECIPE_VERSION>``. It is built in a temporary
    sibling and renamed into place, so a half-written folder is never visible; when another
    process (an xdist worker) publishes first, its folder is used and ours is removed.
    """
    final = folder_of(name, cache_dir)
    models = final.parent
    if final.is_dir():
        return final
    models.mkdir(parents=True, exist_ok=True)
    with _build_lock(models / f".{final.name}.lock"):
        if final.is_dir():  # built by whoever held the lock before us
            return final
        tmp = pathlib.Path(tempfile.mkdtemp(prefix=f".{final.name}.", suffix=".tmp", dir=models))
        try:
            build(_RECIPES[name], tmp)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        return _publish(tmp, final)


@contextlib.contextmanager
def _build_lock(path: pathlib.Path) -> Iterator[None]:
    """Let concurrent workers build a model once, instead of each building (and holding) it.

    Correctness does not rest on it (``_publish`` settles races), so where ``fcntl`` is
    missing (Windows) or locking fails (some network file systems) it is a no-op.
    """
    fd: int | None = None
    try:
        import fcntl

        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        fcntl.flock(fd, fcntl.LOCK_EX)
    except (ImportError, OSError):
        pass
    try:
        yield
    finally:
        if fd is not None:
            os.close(fd)  # releases the flock


def _publish(tmp: pathlib.Path, final: pathlib.Path) -> pathlib.Path:
    """Rename the complete folder ``tmp`` to ``final``, or defer to a folder already there."""
    try:
        os.rename(tmp, final)
    except OSError:
        # rename(2) onto a non-empty directory fails: another process published first.
        shutil.rmtree(tmp, ignore_errors=True)
        if not final.is_dir():
            raise
    return final


def model_kind(folder: pathlib.Path) -> str:
    """Return ``"video"`` or ``"image"`` for a diffusers folder, from its pipeline class name."""
    return class_kind(model_class_name(folder))


def class_kind(name: str) -> str:
    """``"video"`` or ``"image"`` from a pipeline class name or a model id (``Wan-AI/...``)."""
    return "video" if any(m in name for m in _VIDEO_MARKERS) else "image"


def class_takes_image(name: str) -> bool:
    """Whether a pipeline class name or model id needs an input image (edit, image to
    video), by the markers diffusers' and the hub's names share (``_IMAGE_INPUT_MARKERS``)."""
    return any(m in name for m in _IMAGE_INPUT_MARKERS)


def model_class_name(folder: pathlib.Path) -> str:
    """The ``_class_name`` of a diffusers folder's ``model_index.json``; ValueError if none."""
    index = pathlib.Path(folder) / "model_index.json"
    try:
        return str(json.loads(index.read_text(encoding="utf-8"))["_class_name"])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ValueError(f"{folder} is not a diffusers pipeline folder "
                         f"(no readable model_index.json with _class_name): {exc}") from exc


def weights_digest(folder: pathlib.Path) -> str:
    """Return a sha256 over every tensor in the folder's ``*.safetensors`` files.

    Tensors are hashed in sorted ``component/name`` order, each with its dtype, shape and raw
    bytes, so sharding and file names do not change the digest. The files are read directly
    (a JSON header, then little-endian bytes), so no torch is needed.
    """
    root = pathlib.Path(folder)
    entries: dict[str, tuple[pathlib.Path, str, list[int], int, int]] = {}
    for path in sorted(root.rglob("*.safetensors")):
        component = path.parent.relative_to(root).as_posix()
        with path.open("rb") as f:
            (size,) = struct.unpack("<Q", f.read(8))
            header = json.loads(f.read(size))
        for tensor, meta in header.items():
            if tensor == "__metadata__":
                continue
            key = f"{component}/{tensor}"
            if key in entries:
                raise ValueError(f"tensor {key} is stored twice under {folder}")
            begin, end = meta["data_offsets"]
            entries[key] = (path, meta["dtype"], list(meta["shape"]), 8 + size + begin, end - begin)
    if not entries:
        raise ValueError(f"no *.safetensors weights under {folder}")
    digest = hashlib.sha256()
    for key in sorted(entries):
        path, dtype, shape, offset, length = entries[key]
        digest.update(f"{key}\0{dtype}\0{shape}\0{length}\0".encode())
        with path.open("rb") as f:
            f.seek(offset)
            while length > 0:
                chunk = f.read(min(length, 1 << 24))
                if not chunk:
                    raise ValueError(f"truncated safetensors file {path}")
                digest.update(chunk)
                length -= len(chunk)
    return digest.hexdigest()
