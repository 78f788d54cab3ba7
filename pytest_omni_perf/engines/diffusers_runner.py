"""In-process diffusers runner: load a pipeline folder, apply a profile, run requests.

The worker subprocess of the ``diffusers`` engine hosts one ``DiffusersRunner``; tests may
host several in one process (cache-dit's class-level patching is kept per pipeline).
"""

from __future__ import annotations

import gc
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from . import diffusers_options as opts
from . import diffusers_parallel
from .diffusers_sampling import request_scheduler
from .diffusers_inputs import input_kwargs
from .vl_processor import processor_override
from ..hardware import installed_versions
from .base import GenerationOutput, GenerationRequest, ProfileUnsupported

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt

_DISTRIBUTIONS = {"torch": "torch", "diffusers": "diffusers", "cache_dit": "cache-dit",
                  "torchao": "torchao", "transformers": "transformers",
                  "accelerate": "accelerate"}


class DiffusersRunner:
    """One diffusers pipeline with one profile's options applied.

    ``dtype`` is the default precision; a ``dtype`` in ``options`` wins (it is a canonical
    option). ``auto`` means float32 on CPU and bfloat16 on CUDA. With ``world_size > 1`` this
    is rank ``rank`` of a process group that runs a multi-GPU profile; it uses visible CUDA
    device ``rank`` and only rank 0 returns the frames.
    """

    def __init__(self, folder: str, options: Mapping[str, Any], *, device: str,
                 dtype: str = "auto", rank: int = 0, world_size: int = 1) -> None:
        self.folder = str(folder)
        self.options: dict[str, Any] = dict(options)
        self.rank = rank
        self.world_size = world_size
        if world_size > 1 and device.startswith("cuda"):
            device = f"cuda:{rank}"
        self.device = device
        self.dtype = opts.resolve_dtype(str(self.options.get("dtype") or dtype),
                                        "cpu" if device == "cpu" else "cuda")
        self.applied: dict[str, Any] = {}
        self._pipe: Any = None
        self._cache_config: dict[str, Any] | None = None
        self._cache_key: tuple[int, bool | None] | None = None
        self._request_shape: tuple[int, int, int | None, int] | None = None
        self._cache_described = ""
        self._phases: dict[str, Any] = {}

    @property
    def pipe(self) -> Any:
        """The loaded pipeline (raises RuntimeError before ``load``)."""
        if self._pipe is None:
            raise RuntimeError("DiffusersRunner.load() has not been called (or close() was)")
        return self._pipe

    def _is_cuda(self) -> bool:
        return self.device.startswith("cuda")

    def _hardware(self) -> tuple[tuple[int, int] | None, int]:
        if not self._is_cuda():
            return None, 0
        import torch

        if not torch.cuda.is_available():
            return None, 0
        index = torch.device(self.device).index or 0
        major, minor = torch.cuda.get_device_capability(index)
        return (major, minor), torch.cuda.device_count()

    def load(self) -> dict[str, Any]:
        """Load the folder (offline), apply the options; return how each was honoured.

        Raises ProfileUnsupported (before loading the model when the options alone decide;
        the libraries are imported first, timed as start-up phase (b), since on CUDA the
        device query below imports torch; the parent refused such profiles before ever
        starting this worker).
        """
        began = time.perf_counter()
        import_pipeline_modules(self.folder)
        imported = time.perf_counter()
        sm, gpu_count = self._hardware()
        reason = opts.unsupported_reason(self.options, device="cuda" if self._is_cuda()
                                         else "cpu", sm=sm, gpu_count=gpu_count)
        if reason is not None:
            raise ProfileUnsupported(reason)
        self._cache_config = opts.cache_dit_config(self.options)
        if self.world_size > 1:
            # Before loading: every rank must reach the rendezvous, or the others wait for
            # it until the start timeout.
            diffusers_parallel.init_process_group(self.rank, self.world_size, self.device)
        import torch
        from diffusers import DiffusionPipeline

        dtype = getattr(torch, self.dtype)
        started = time.perf_counter()
        extra: dict[str, Any] = {}
        if self.options.get("quantization") == "gguf":
            extra["transformer"] = opts.load_gguf_transformer(
                self.folder, str(self.options["gguf_model"]), dtype)
        # Qwen-Image-Edit's Qwen2-VL processor, loaded without torchvision (vl_processor).
        extra.update(processor_override(self.folder))
        loader: Any = DiffusionPipeline  # untyped library
        pretrained = time.perf_counter()
        pipe = loader.from_pretrained(self.folder, dtype=dtype, local_files_only=True, **extra)
        pipe.set_progress_bar_config(disable=True)
        self._pipe = pipe
        loaded = time.perf_counter()
        try:
            applied = opts.apply_options(pipe, self.options, device=self.device)
        except BaseException:
            self.close()
            raise
        done = time.perf_counter()
        # compile_repeated_blocks only wraps the blocks: tracing and code generation run on
        # the first call, so compile time is inside the first request, not a phase here.
        self._phases = {"imports_s": imported - began, "load_s": loaded - started,
                        "apply_s": done - loaded, "compile_s": None,
                        "compile": "first_request" if opts.compile_enabled(self.options)
                        else "none"}
        # applied's load_s, as before: from_pretrained and the options together.
        self.applied = {"pipeline": type(pipe).__name__, "dtype": self.dtype, **applied,
                        "load_s": round(done - pretrained, 3)}
        return dict(self.applied)

    def startup_phases(self) -> dict[str, Any]:
        """Seconds of each start-up phase ``load`` went through (engines/startup.py): the
        heavy imports, ``from_pretrained``, the options; empty before ``load``."""
        return dict(self._phases)

    def _prepare(self, request: GenerationRequest) -> dict[str, Any]:
        """Per-request settings: cache-dit's step count and CFG mode, VAE tile sizes."""
        pipe = self.pipe
        prepared: dict[str, Any] = {}
        if self._cache_config is not None:
            key = (request.num_inference_steps, opts.uses_separate_cfg(pipe, request))
            if key != self._cache_key:
                # cache-dit bakes the step count (SCM mask) and CFG mode into its context:
                # re-enable it whenever they change, as vLLM-Omni refreshes its context.
                opts.disable_cache_dit(pipe)
                self._cache_described = opts.enable_cache_dit(
                    pipe, self._cache_config, num_inference_steps=key[0], separate_cfg=key[1])
                self._cache_key = key
        if getattr(pipe.vae, "use_tiling", False):
            prepared["vae_tiles"] = fit_vae_tiles(pipe.vae, request.height, request.width)
        return prepared

    def generate(self, request: GenerationRequest) -> GenerationOutput:
        """Run ``request``; latency is the pipeline call alone, synchronized on CUDA."""
        import torch

        pipe = self.pipe
        metrics = self._prepare(request)
        kwargs = opts.pipeline_call_kwargs(pipe, request, self.options)
        kwargs.update(input_kwargs(pipe, request))
        cuda = self._is_cuda()
        if cuda:
            torch.cuda.synchronize(self.device)
            if release_cached_blocks(self._request_shape, request):
                # NVML counts what the caching allocator holds: without this, a reused engine
                # that served a larger request reports that request's memory for a smaller
                # one (on one H200 the eager baseline read 6.96 GiB at 512x512 after serving
                # 1024x1024, against 3.56 GiB fresh: results/h200/support/).
                torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats(self.device)
            # CUDA events time the same call on the GPU's own clock: a cross-check of the
            # host-side timings the gates use (they must agree within a few percent).
            events = (torch.cuda.Event(enable_timing=True),  # type: ignore[no-untyped-call]
                      torch.cuda.Event(enable_timing=True))  # type: ignore[no-untyped-call]
            events[0].record()
        self._request_shape = request_shape(request)
        started = time.perf_counter()
        with request_scheduler(pipe, request):
            output = pipe(**kwargs)
        if cuda:
            events[1].record()
            torch.cuda.synchronize(self.device)
        latency = time.perf_counter() - started
        if cuda:
            metrics["torch_peak_bytes"] = int(torch.cuda.max_memory_allocated(self.device))
            metrics["cuda_event_s"] = events[0].elapsed_time(events[1]) / 1000.0
        if self._cache_config is not None:
            metrics["cache"] = {**opts.cache_stats(pipe), "config": self._cache_described}
        if "max_sequence_length" in kwargs:
            metrics["max_sequence_length"] = kwargs["max_sequence_length"]
        if request.fps is not None:
            metrics["fps"] = request.fps  # the frames' rate, also where __call__ has no fps
        # Every rank holds the same gathered output; only rank 0's travels to the parent.
        frames = output_frames(output) if self.rank == 0 else []
        return GenerationOutput(frames=frames, engine_latency_s=latency,
                                engine_metrics=metrics)

    def close(self) -> None:
        """Drop the pipeline and free its memory. Safe to call twice."""
        pipe, self._pipe = self._pipe, None
        if self.world_size > 1:
            diffusers_parallel.destroy_process_group()
        if pipe is None:
            return
        if self._cache_config is not None:
            opts.disable_cache_dit(pipe)
        self._cache_key = None
        del pipe
        gc.collect()
        if self._is_cuda():
            import torch

            torch.cuda.empty_cache()

    def versions(self) -> dict[str, str]:
        """Installed versions of the libraries that shape the results."""
        return installed_versions(_DISTRIBUTIONS)


def import_pipeline_modules(folder: str) -> None:
    """Import torch, diffusers and the modules of the folder's pipeline class (which import
    transformers' text encoders), so that start-up phase (b) holds the imports that
    diffusers would otherwise make lazily inside ``from_pretrained``."""
    import diffusers
    import torch  # noqa: F401

    from pytest_omni_perf.capabilities import pipeline_class_of

    # None for an unreadable folder: from_pretrained says what is wrong with it.
    if (name := pipeline_class_of(folder)) is not None:
        getattr(diffusers, name, None)  # a lazy module: the attribute imports it


def request_shape(request: GenerationRequest) -> tuple[int, int, int | None, int]:
    """(height, width, frames, steps): what sizes the activations a request allocates."""
    return (request.height, request.width, request.num_frames, request.num_inference_steps)


def release_cached_blocks(previous: tuple[int, int, int | None, int] | None,
                          request: GenerationRequest) -> bool:
    """Whether the CUDA cache must be emptied before ``request``: only when the engine
    served another shape before. Not every request, since freeing and taking back device
    memory in every round would add its own time to the latencies measured."""
    return previous is not None and previous != request_shape(request)


def fit_vae_tiles(vae: Any, height: int, width: int) -> dict[str, int]:
    """Tile sizes that really tile a ``height`` x ``width`` image; returns the ones set.

    The default tiles (512-1024 px) exceed small images, so tiling would silently not
    happen; then tiles are set to half the image (rounded to the VAE's scale), otherwise the
    defaults are kept. Handles AutoencoderKL (square tiles) and AutoencoderKLWan attributes.
    """
    defaults: dict[str, int] = getattr(vae, "_omni_perf_tile_defaults", None) or \
        opts.vae_tile_settings(vae)
    if "tile_sample_min_size" in defaults:  # AutoencoderKL
        scale = 2 ** (len(vae.config.block_out_channels) - 1)
        keep = max(height, width) > defaults["tile_sample_min_size"]
        tile = defaults["tile_sample_min_size"] if keep else _exact_kl_tile(
            height, width, scale, float(getattr(vae, "tile_overlap_factor", 0.25)))
        if tile is None:
            raise ProfileUnsupported(
                f"vae_use_tiling: a {width}x{height} image is too small for "
                f"{type(vae).__name__}'s tiled decode to return it at its size (no tile of "
                f"{2 * scale}..{max(height, width) - scale} px comes out exact); "
                "measure VAE tiling at 64x64 or more")
        settings = {"tile_sample_min_size": tile, "tile_latent_min_size": tile // scale}
    elif "tile_sample_min_height" in defaults:  # AutoencoderKLWan and its kin
        scale = int(getattr(vae, "spatial_compression_ratio", 8))
        keep = height > defaults["tile_sample_min_height"] or \
            width > defaults["tile_sample_min_width"]
        tile = _half(min(height, width), scale)
        stride = max(scale, tile * 3 // 4 // scale * scale)  # the defaults' 3/4 stride
        settings = {k: defaults[k] for k in defaults} if keep else {
            "tile_sample_min_height": tile, "tile_sample_min_width": tile,
            "tile_sample_stride_height": stride, "tile_sample_stride_width": stride}
    else:
        raise ProfileUnsupported(f"vae_use_tiling: unknown tile settings on {type(vae).__name__}")
    for name, value in settings.items():
        setattr(vae, name, value)
    return settings


def _exact_kl_tile(height: int, width: int, scale: int, overlap: float) -> int | None:
    """A square tile (pixels) smaller than the image whose AutoencoderKL tiled decode returns
    exactly ``height`` x ``width``, nearest half the image; None when there is none.

    diffusers' ``AutoencoderKL._tiled_decode`` steps ``int(latent_tile * (1 - overlap))``
    latents per tile and keeps ``tile - int(tile * overlap)`` pixels of each: unless the two
    agree (latent tiles a multiple of 4 at overlap 0.25) the output grows or shrinks (a 16 px
    tile turned 32x32 into 44x44 on tiny-flux)."""
    exact = [tile for tile in range(2 * scale, max(height, width), scale)
             if tile - int(tile * overlap) == int(tile // scale * (1 - overlap)) * scale]
    return min(exact, key=lambda tile: abs(tile - min(height, width) / 2), default=None)


def _half(size: int, scale: int) -> int:
    return max(2 * scale, size // 2 // scale * scale)


def output_frames(output: Any) -> list[npt.NDArray[np.uint8]]:
    """The first item of a pipeline output (``output_type="np"``) as HxWx3 uint8 frames."""
    import numpy as np

    data = getattr(output, "frames", None)
    if data is None:
        data = output.images
    first = np.asarray(data[0], dtype=np.float32)
    # diffusers' own numpy_to_pil rounding, so a PNG saved from PIL matches these bytes
    pixels = (np.clip(first, 0.0, 1.0) * 255).round().astype(np.uint8)
    return [pixels] if pixels.ndim == 3 else list(pixels)
