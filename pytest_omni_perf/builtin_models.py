"""Built-in random-weight diffusion pipelines, generated offline and cached on disk.

``tiny-flux`` / ``tiny-wan`` run anywhere (CPU CI); ``medium-flux`` / ``medium-wan`` are sized
for one H100. Committed baselines are compared against these models' outputs, so the weights
must be bit-identical on every machine and torch version: every parameter is drawn from numpy's
PCG64 raw stream (whose bits numpy guarantees), never from torch's initializers, and
``EXPECTED_DIGESTS`` pins the result for the tiny models.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import pathlib
import shutil
import struct
import tempfile
import zlib
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Iterator

if TYPE_CHECKING:
    import torch

BUILTIN_MODELS: tuple[str, ...] = ("tiny-flux", "tiny-wan", "medium-flux", "medium-wan")
RECIPE_VERSION: int = 1

# weights_digest of a fresh build; a change means baselines of these models are stale.
EXPECTED_DIGESTS: dict[str, str] = {
    "tiny-flux": "2f200020a4a7a498d2a6e4749522adc3a50360e4b9dcfc7ec0189e437d66272c",
    "tiny-wan": "a37a0e7f5a6d6ce090ecf0a08262a523940159198770fff942713ac6c880bf85",
}

_SEED = 0
_CHUNK = 1 << 22  # draws per fill job: a 1B model splits into ~250 jobs
# Random weights make every step's first-block residual differ by ~0.5, so cache-dit never
# caches; shrinking the timestep embedder makes consecutive steps alike, as in trained models.
_DAMPED = {"flux": "time_text_embed.timestep_embedder.", "wan": "condition_embedder.time_embedder."}
_DAMPING = 0.1
# Substrings of model_index.json's _class_name that mark a video pipeline.
_VIDEO_MARKERS = ("Video", "Wan", "LTX", "Mochi", "Allegro", "Latte", "AnimateDiff",
                  "I2VGenXL", "SkyReels", "EasyAnimate", "ConsisID", "ToWorld")


@dataclass(frozen=True)
class _Recipe:
    """Constructor arguments of every component of one built-in pipeline."""

    family: str  # "flux" or "wan"
    dtype: str  # the dtype components are built and saved in
    transformer: dict[str, Any]
    vae: dict[str, Any]
    text_encoder: dict[str, Any]  # CLIP for flux, UMT5 for wan
    t5: dict[str, Any] | None = None  # flux's second text encoder


def _flux_dit(double: int, single: int, heads: int, head_dim: int, joint: int, pooled: int,
              rope: tuple[int, int, int]) -> dict[str, Any]:
    # guidance_embeds off (schnell-like): guidance_scale must not change what is measured.
    return {"patch_size": 1, "in_channels": 64, "num_layers": double, "num_single_layers": single,
            "attention_head_dim": head_dim, "num_attention_heads": heads,
            "joint_attention_dim": joint, "pooled_projection_dim": pooled,
            "guidance_embeds": False, "axes_dims_rope": rope}


def _wan_dit(heads: int, text_dim: int, ffn_dim: int, layers: int, head_dim: int
             ) -> dict[str, Any]:
    return {"patch_size": (1, 2, 2), "num_attention_heads": heads, "attention_head_dim": head_dim,
            "in_channels": 16, "out_channels": 16, "text_dim": text_dim, "freq_dim": 256,
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

_RECIPES: dict[str, _Recipe] = {
    "tiny-flux": _Recipe(  # ~9M-param transformer, 38 MiB fp32
        "flux", "float32", _flux_dit(2, 4, 4, 64, 64, 64, (16, 24, 24)),
        {**_FLUX_VAE, "block_out_channels": (32, 32, 64, 64), "layers_per_block": 1,
         "sample_size": 64},
        _clip(64, 128, 2, 4), _t5(64, 128, 2, 4, 16)),
    "medium-flux": _Recipe(  # 636M transformer + real VAE + CLIP-L-sized CLIP + small T5: 0.91B
        "flux", "bfloat16", _flux_dit(4, 8, 12, 128, 1024, 768, (16, 56, 56)), _FLUX_VAE,
        _clip(768, 3072, 12, 12), _t5(1024, 2816, 8, 16, 64)),
    "tiny-wan": _Recipe(  # ~9M-param transformer, 36 MiB fp32
        "wan", "float32", _wan_dit(4, 64, 1024, 8, 64),
        {"base_dim": 8, "z_dim": 16, "dim_mult": [1, 1, 2, 2], "num_res_blocks": 1,
         "temperal_downsample": [False, True, True]},
        _t5(64, 128, 2, 4, 16)),
    "medium-wan": _Recipe(  # Wan2.1-1.3B's width and FFN, 20 of its 30 layers: 0.95B + VAE
        "wan", "bfloat16", _wan_dit(12, 768, 8960, 20, 128), _WAN_VAE, _t5(768, 2048, 4, 12, 64)),
}


def is_builtin(name: str) -> bool:
    """Return whether ``name`` is one of ``BUILTIN_MODELS``."""
    return name in BUILTIN_MODELS


def default_cache_dir() -> pathlib.Path:
    """Return ``$OMNI_PERF_CACHE_DIR``, or ``~/.cache/pytest-omni-perf`` when it is unset."""
    env = os.environ.get("OMNI_PERF_CACHE_DIR")
    return pathlib.Path(env) if env else pathlib.Path.home() / ".cache" / "pytest-omni-perf"


def ensure_model(name: str, cache_dir: pathlib.Path | None = None) -> pathlib.Path:
    """Return the folder of built-in model ``name``, building it on first use.

    The folder is ``<cache_dir>/models/<name>-r<RECIPE_VERSION>``. It is built in a temporary
    sibling and renamed into place, so a half-written folder is never visible; when another
    process (an xdist worker) publishes first, its folder is used and ours is removed.
    """
    if not is_builtin(name):
        raise ValueError(f"unknown built-in model {name!r}; built-ins: {', '.join(BUILTIN_MODELS)}")
    models = (cache_dir if cache_dir is not None else default_cache_dir()) / "models"
    final = models / f"{name}-r{RECIPE_VERSION}"
    if final.is_dir():
        return final
    models.mkdir(parents=True, exist_ok=True)
    with _build_lock(models / f".{final.name}.lock"):
        if final.is_dir():  # built by whoever held the lock before us
            return final
        tmp = pathlib.Path(tempfile.mkdtemp(prefix=f".{final.name}.", suffix=".tmp", dir=models))
        try:
            _build(name, tmp)
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
    index = pathlib.Path(folder) / "model_index.json"
    try:
        class_name = str(json.loads(index.read_text(encoding="utf-8"))["_class_name"])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ValueError(f"{folder} is not a diffusers pipeline folder "
                         f"(no readable model_index.json with _class_name): {exc}") from exc
    return "video" if any(m in class_name for m in _VIDEO_MARKERS) else "image"


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


# --- building -------------------------------------------------------------------------------


def _build(name: str, folder: pathlib.Path) -> None:
    """Build built-in ``name`` from its recipe and ``save_pretrained`` it into ``folder``."""
    import torch

    recipe = _RECIPES[name]
    # Built directly in the saved dtype: halves the memory touched, which dominates the build.
    default_dtype = torch.get_default_dtype()
    torch.set_default_dtype(getattr(torch, recipe.dtype))
    try:
        with _zeroed_random_init():
            pipe = _make_flux(recipe) if recipe.family == "flux" else _make_wan(recipe)
    finally:
        torch.set_default_dtype(default_dtype)
    for component, module in pipe.components.items():
        if isinstance(module, torch.nn.Module):
            damped = _DAMPED[recipe.family] if component == "transformer" else None
            with torch.no_grad():
                _fill(module, component, damped)
    pipe.save_pretrained(folder)


def _make_flux(recipe: _Recipe) -> Any:
    import diffusers
    import transformers

    d: Any = diffusers  # untyped: calls through Any keep mypy --strict quiet
    t: Any = transformers
    tokenizer, tokenizer_2 = _clip_tokenizer(), _t5_tokenizer()
    clip = t.CLIPTextConfig(vocab_size=len(tokenizer), eos_token_id=tokenizer.eos_token_id,
                            bos_token_id=tokenizer.bos_token_id,
                            pad_token_id=tokenizer.pad_token_id, **recipe.text_encoder)
    # FLUX.1-dev's scheduler: the shift follows the image's token count.
    scheduler = d.FlowMatchEulerDiscreteScheduler(
        shift=3.0, use_dynamic_shifting=True, base_shift=0.5, max_shift=1.15,
        base_image_seq_len=256, max_image_seq_len=4096)
    return d.FluxPipeline(
        scheduler=scheduler, vae=d.AutoencoderKL(**recipe.vae),
        text_encoder=t.CLIPTextModel(clip), tokenizer=tokenizer, tokenizer_2=tokenizer_2,
        text_encoder_2=t.T5EncoderModel(_t5_config(t.T5Config, tokenizer_2, recipe.t5 or {})),
        transformer=d.FluxTransformer2DModel(**recipe.transformer))


def _make_wan(recipe: _Recipe) -> Any:
    import diffusers
    import transformers

    d: Any = diffusers
    t: Any = transformers
    tokenizer = _t5_tokenizer()
    # Wan2.1 480p's scheduler.
    scheduler = d.UniPCMultistepScheduler(prediction_type="flow_prediction",
                                          use_flow_sigmas=True, flow_shift=3.0,
                                          num_train_timesteps=1000)
    return d.WanPipeline(
        tokenizer=tokenizer, scheduler=scheduler, vae=d.AutoencoderKLWan(**recipe.vae),
        text_encoder=t.UMT5EncoderModel(_t5_config(t.UMT5Config, tokenizer, recipe.text_encoder)),
        transformer=d.WanTransformer3DModel(**recipe.transformer))


def _t5_config(config_cls: Any, tokenizer: Any, sizes: dict[str, Any]) -> Any:
    # T5 v1.1 / UMT5 style (gated GELU), encoder only, as Flux and Wan use it.
    return config_cls(vocab_size=len(tokenizer), feed_forward_proj="gated-gelu",
                      is_encoder_decoder=False, pad_token_id=tokenizer.pad_token_id,
                      eos_token_id=tokenizer.eos_token_id, decoder_start_token_id=0, **sizes)


def _clip_tokenizer() -> Any:
    """A byte-level BPE with no merges: every character is a token, so any text encodes."""
    from tokenizers import pre_tokenizers
    from transformers import CLIPTokenizer

    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    tokens = alphabet + [c + "</w>" for c in alphabet] + ["<|startoftext|>", "<|endoftext|>"]
    return CLIPTokenizer(vocab={t: i for i, t in enumerate(tokens)}, merges=[],
                         model_max_length=77)


def _t5_tokenizer() -> Any:
    """A unigram vocabulary of printable ASCII characters, with and without the word marker."""
    import string

    import transformers

    t: Any = transformers  # T5TokenizerFast is a lazy attribute mypy cannot see
    chars = string.ascii_letters + string.digits + string.punctuation
    vocab = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0), ("\u2581", -2.0)]
    vocab += [("\u2581" + c, -2.5) for c in chars] + [(c, -3.0) for c in chars]
    return t.T5TokenizerFast(vocab=vocab, extra_ids=0, model_max_length=512)


def _fill(module: torch.nn.Module, component: str, damped: str | None) -> None:
    """Overwrite every parameter of ``module`` with numpy PCG64 uniform +-1/sqrt(fan_in).

    Parameters owned by normalization layers keep their constant init (ones/zeros); one that
    is not constant was randomly initialized by torch and is filled like the rest. Parameters
    under ``damped`` get a tenth of the range. Each parameter's stream is cut into chunks
    (``advance`` makes a chunk's bits those of a sequential draw), filled by a thread pool.
    """
    import numpy as np

    owners: dict[int, torch.nn.Module] = {}
    for sub in module.modules():
        for p in sub.parameters(recurse=False):
            owners.setdefault(id(p), sub)
    jobs = []
    for name, param in module.named_parameters():
        owner = owners[id(param)]
        if "norm" in type(owner).__name__.lower() and _is_constant(param):
            continue
        bound = np.float32(1.0 / np.sqrt(_fan_in(owner, name, param)))
        if damped is not None and name.startswith(damped):
            bound *= np.float32(_DAMPING)
        seed = [_SEED, zlib.crc32(component.encode()), zlib.crc32(name.encode())]
        flat = param.detach().view(-1)
        jobs += [(seed, flat, start, bound) for start in range(0, flat.numel(), _CHUNK)]
    with ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1)) as pool:
        list(pool.map(lambda job: _uniform_into(*job), jobs))  # numpy and torch drop the GIL


def _uniform_into(seed: list[int], out: torch.Tensor, start: int, bound: Any) -> None:
    """Write draws ``start``.. of stream ``seed``, uniform on [-bound, bound), into ``out``.

    Uses PCG64's raw 64-bit words, the part of numpy's random API whose bits are guaranteed
    across versions; the top 24 bits of a word make an exact float32. The arithmetic is
    float32; torch then casts into ``out``'s dtype (round to nearest even).
    """
    import numpy as np
    import torch

    bits: Any = np.random.default_rng(seed).bit_generator  # PCG64 (advance is not on the base)
    bits.advance(start)
    raw = bits.random_raw(min(_CHUNK, out.numel() - start))
    raw >>= np.uint64(40)
    values = raw.astype(np.float32)
    values *= np.float32(2.0**-23)  # [0, 2), exact
    values -= np.float32(1.0)  # [-1, 1), exact
    values *= bound
    out[start:start + values.size].copy_(torch.from_numpy(values))


def _fan_in(owner: torch.nn.Module, name: str, param: torch.Tensor) -> int:
    """torch's fan_in for weights; a bias uses its layer's weight, as torch's init does."""
    shape = tuple(param.shape)
    weight = getattr(owner, "weight", None)
    if len(shape) == 1 and name.endswith("bias") and weight is not None and weight.dim() >= 2:
        shape = tuple(weight.shape)
    fan_in = 1
    for dim in shape[1:] if len(shape) > 1 else shape:
        fan_in *= dim
    return max(fan_in, 1)


def _is_constant(param: torch.Tensor) -> bool:
    flat = param.detach().reshape(-1)
    return bool(flat.numel() > 0 and (flat == flat[0]).all())


@contextlib.contextmanager
def _zeroed_random_init() -> Iterator[None]:
    """Make ``torch.nn.init``'s random initializers write zeros (process-wide) meanwhile.

    ``_fill`` overwrites their draws, which on CPU cost more than the fill itself. Zeros,
    not no-ops, so a parameter that nothing else writes is still deterministic.
    """
    import torch

    names = ("uniform_", "normal_", "kaiming_uniform_", "kaiming_normal_", "xavier_uniform_",
             "xavier_normal_", "trunc_normal_", "orthogonal_", "sparse_")
    saved = {n: getattr(torch.nn.init, n) for n in names}

    def zero(tensor: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
        with torch.no_grad():
            return tensor.zero_()

    try:
        for n in names:
            setattr(torch.nn.init, n, zero)
        yield
    finally:
        for n, fn in saved.items():
            setattr(torch.nn.init, n, fn)
