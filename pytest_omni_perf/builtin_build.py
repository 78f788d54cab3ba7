"""Building a built-in pipeline from its recipe: random weights that are bit-identical on
every machine and torch version (numpy's PCG64 raw stream, never torch's initializers).

``builtin_models`` holds the recipes, the cache and the digests; this module turns one
recipe into a saved diffusers pipeline. Heavy imports (torch, diffusers, transformers) happen
inside the functions, when a model is really built.
"""

from __future__ import annotations

import contextlib
import os
import zlib
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from pytest_omni_perf import builtin_qwen

if TYPE_CHECKING:
    import pathlib

    import torch

_SEED = 0
_CHUNK = 1 << 22  # draws per fill job: a 1B model splits into ~250 jobs
# Random weights make every step's first-block residual differ by ~0.5, so cache-dit never
# caches; shrinking the timestep embedder makes consecutive steps alike, as in trained models.
_DAMPED = {"flux": "time_text_embed.timestep_embedder.", "wan": "condition_embedder.time_embedder.",
           "qwen": "time_text_embed.timestep_embedder."}
_DAMPING = 0.1

@dataclass(frozen=True)
class Recipe:
    """Constructor arguments of every component of one built-in pipeline."""

    family: str  # "flux", "wan" or "qwen"
    dtype: str  # the dtype components are built and saved in
    transformer: dict[str, Any]
    vae: dict[str, Any]
    text_encoder: dict[str, Any]  # CLIP for flux, UMT5 for wan, Qwen2.5-VL text/vision for qwen
    t5: dict[str, Any] | None = None  # flux's second text encoder
    pipeline: str | None = None
    """The diffusers pipeline class, when not the family's text-to-X one (FluxPipeline,
    WanPipeline, QwenImageEditPlusPipeline): e.g. FluxKontextPipeline, which takes Flux's
    components unchanged, or WanImageToVideoPipeline (a transformer of 36 input channels, no
    image encoder)."""


def build(recipe: Recipe, folder: pathlib.Path) -> None:
    """Build the pipeline ``recipe`` describes and ``save_pretrained`` it into ``folder``.

    Raises ImportError without diffusers/transformers/torch (the ``diffusers`` extra)."""
    import torch

    # Built directly in the saved dtype: halves the memory touched, which dominates the build.
    default_dtype = torch.get_default_dtype()
    torch.set_default_dtype(getattr(torch, recipe.dtype))
    try:
        with _zeroed_random_init():
            pipe = _MAKERS[recipe.family](recipe)
    finally:
        torch.set_default_dtype(default_dtype)
    for component, module in pipe.components.items():
        if isinstance(module, torch.nn.Module):
            damped = _DAMPED[recipe.family] if component == "transformer" else None
            with torch.no_grad():
                _fill(module, component, damped)
    pipe.save_pretrained(folder)
    _drop_absent_components(folder)
    if recipe.family == "qwen":
        builtin_qwen.save_processor(folder)


def _drop_absent_components(folder: pathlib.Path) -> None:
    """Remove the ``[null, null]`` entries diffusers' ``save_pretrained`` writes into
    model_index.json for optional components a pipeline was built without.

    vLLM-Omni's ``Wan22I2VPipeline`` (``diffusion/models/wan2_2/pipeline_wan2_2_i2v.py``, 0.26
    and 0.30) reads ``"transformer_2" in model_index`` as "has a second transformer" and then
    fails to start with "Cannot find any model weights" (medium-wan-i2v on an H100,
    results/h100/support/omni-wan-i2v-1.log). A missing key means the same to diffusers,
    which fills optional components with None."""
    import json

    index = folder / "model_index.json"
    entries = json.loads(index.read_text())
    kept = {k: v for k, v in entries.items() if v != [None, None]}
    index.write_text(json.dumps(kept, indent=2, sort_keys=True) + "\n")


def _make_flux(recipe: Recipe) -> Any:
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
    return getattr(d, recipe.pipeline or "FluxPipeline")(
        scheduler=scheduler, vae=d.AutoencoderKL(**recipe.vae),
        text_encoder=t.CLIPTextModel(clip), tokenizer=tokenizer, tokenizer_2=tokenizer_2,
        text_encoder_2=t.T5EncoderModel(_t5_config(t.T5Config, tokenizer_2, recipe.t5 or {})),
        transformer=d.FluxTransformer2DModel(**recipe.transformer))


def _make_wan(recipe: Recipe) -> Any:
    import diffusers
    import transformers

    d: Any = diffusers
    t: Any = transformers
    tokenizer = _t5_tokenizer()
    # Wan2.1 480p's scheduler.
    scheduler = d.UniPCMultistepScheduler(prediction_type="flow_prediction",
                                          use_flow_sigmas=True, flow_shift=3.0,
                                          num_train_timesteps=1000)
    components = {
        "tokenizer": tokenizer, "scheduler": scheduler, "vae": d.AutoencoderKLWan(**recipe.vae),
        "text_encoder": t.UMT5EncoderModel(_t5_config(t.UMT5Config, tokenizer,
                                                      recipe.text_encoder)),
        "transformer": d.WanTransformer3DModel(**recipe.transformer)}
    if recipe.pipeline == "WanImageToVideoPipeline":
        # Wan2.2-I2V-A14B's layout (diffusers 0.40 pipeline_wan_i2v.py): no CLIP image encoder
        # (the transformer's image_dim is None, so the pipeline never calls one), the input
        # image enters as VAE latents; one transformer for every step (boundary_ratio None).
        components.update(image_encoder=None, image_processor=None, transformer_2=None,
                          boundary_ratio=None, expand_timesteps=False)
    return getattr(d, recipe.pipeline or "WanPipeline")(**components)


_MAKERS = {"flux": _make_flux, "wan": _make_wan, "qwen": builtin_qwen.make_pipeline}


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
