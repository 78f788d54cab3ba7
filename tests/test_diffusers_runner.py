"""The in-process diffusers runner on CPU, with the real diffusers, cache-dit and torchao.

Built-in tiny models (random weights, built offline into a temporary cache) at 64-128 px and
a few steps keep the file fast; one test pays for a cold ``torch.compile``.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("diffusers")
cache_dit = pytest.importorskip("cache_dit")
skimage_metrics = pytest.importorskip("skimage.metrics")

from pytest_omni_perf.builtin_models import ensure_model  # noqa: E402
from pytest_omni_perf.engines import diffusers_options as opts  # noqa: E402
from pytest_omni_perf.engines.base import GenerationRequest, ProfileUnsupported  # noqa: E402
from pytest_omni_perf.engines.diffusers_runner import (  # noqa: E402
    DiffusersRunner, fit_vae_tiles, release_cached_blocks, request_shape,
)

EAGER = {"enforce_eager": True}
CACHE_DIT = {"enforce_eager": True, "cache_backend": "cache_dit"}
IMAGE = GenerationRequest(width=128, height=128, num_inference_steps=10)
SMALL_IMAGE = GenerationRequest(width=64, height=64, num_inference_steps=2)
VIDEO = GenerationRequest(width=64, height=64, num_inference_steps=6, num_frames=5,
                          guidance_scale=1.0)


def ssim(a: Any, b: Any) -> float:
    return float(skimage_metrics.structural_similarity(a, b, channel_axis=-1, data_range=255))


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    cache = tmp_path_factory.mktemp("models")
    return {name: ensure_model(name, cache) for name in ("tiny-flux", "tiny-wan")}


@contextlib.contextmanager
def loaded(folder: Path, options: Mapping[str, Any]) -> Iterator[DiffusersRunner]:
    runner = DiffusersRunner(str(folder), options, device="cpu")
    runner.load()
    try:
        yield runner
    finally:
        runner.close()


@pytest.fixture(scope="module")
def flux_eager(models: dict[str, Path]) -> Iterator[DiffusersRunner]:
    with loaded(models["tiny-flux"], EAGER) as runner:
        yield runner


@pytest.fixture(scope="module")
def flux_eager_image(flux_eager: DiffusersRunner) -> Any:
    return flux_eager.generate(IMAGE).frames[0]


@pytest.fixture(scope="module")
def wan_eager(models: dict[str, Path]) -> Iterator[DiffusersRunner]:
    with loaded(models["tiny-wan"], EAGER) as runner:
        yield runner


# --- decisions without a pipeline ----------------------------------------------------------

@pytest.mark.parametrize(("options", "device", "sm", "expected"), [
    ({"cache_backend": "tea_cache"}, "cpu", None,
     "tea_cache: the diffusers backend has no TeaCache (use --omni-backend=omni)"),
    ({"quantization": "fp8"}, "cpu", None,
     "quantization=fp8 needs a CUDA GPU with SM >= 8.9 (found: no GPU)"),
    ({"quantization": "fp8"}, "cuda", (8, 0),
     "quantization=fp8 needs a CUDA GPU with SM >= 8.9 (found: SM 8.0)"),
    ({"quantization": "gguf"}, "cuda", (9, 0), "gguf needs a pre-quantized GGUF file (gguf_model)"),
    ({"tensor_parallel_size": 4}, "cuda", (9, 0), "needs 4 GPUs, 2 visible to this engine"),
    ({"use_hsdp": True}, "cuda", (9, 0),
     "use_hsdp=True: HSDP weight sharding (a vLLM-Omni feature); run it with "
     "--omni-backend=omni"),
    ({"enable_cpu_offload": True}, "cpu", None, "enable_cpu_offload needs an accelerator"),
    ({"enable_layerwise_offload": True}, "cpu", None, "enable_layerwise_offload needs CUDA"),
    ({"step_execution": True, "max_num_seqs": 2}, "cpu", None,
     "pass-through option(s) step_execution, max_num_seqs: vLLM-Omni options the diffusers "
     "backend cannot honour"),
    ({"ignored_layers": ["img_mod"]}, "cpu", None,
     "unknown option(s) for the diffusers backend: ignored_layers"),
    ({"cache_backend": "cache_dit", "cache_config": {"rel_l1_thresh": 0.2}}, "cpu", None,
     "cache_config key(s) cache_dit does not take: rel_l1_thresh"),
    ({"cache_backend": "cache_dit", "cache_config": {"scm_steps_mask_policy": "warp"}}, "cpu",
     None, "scm_steps_mask_policy='warp'"),
])
def test_unsupported_reason_names_the_problem(options: dict[str, Any], device: str,
                                               sm: tuple[int, int] | None,
                                               expected: str) -> None:
    reason = opts.unsupported_reason(options, device=device, sm=sm,
                                     gpu_count=0 if device == "cpu" else 2)
    assert reason is not None and expected in reason


@pytest.mark.parametrize("name", ["cfg_parallel_size", "vae_patch_parallel_size",
                                  "hsdp_shard_size"])
def test_vllm_omni_only_parallelism_is_refused(name: str) -> None:
    reason = opts.unsupported_reason({name: 2}, device="cuda", sm=(9, 0), gpu_count=8)
    assert reason is not None and reason.startswith(f"{name}=2: ")
    assert reason.endswith("run it with --omni-backend=omni")


@pytest.mark.parametrize("name", ["ulysses_degree", "ring_degree", "tensor_parallel_size"])
def test_sequence_and_tensor_parallelism_run_on_enough_gpus(name: str) -> None:
    assert opts.unsupported_reason({name: 2}, device="cuda", sm=(9, 0), gpu_count=2) is None


@pytest.mark.parametrize(("options", "device", "sm"), [
    (EAGER, "cpu", None),
    ({}, "cpu", None),  # compile
    ({**CACHE_DIT, "cache_config": {"enable_taylorseer": True, "scm_steps_mask_policy": "fast"},
      "vae_use_tiling": True, "vae_use_slicing": True, "tensor_parallel_size": 1}, "cpu", None),
    ({"quantization": "fp8", "enable_layerwise_offload": True}, "cuda", (8, 9)),
    ({"enable_cpu_offload": True, "dtype": "bfloat16"}, "cuda", (8, 0)),
])
def test_supported_options_have_no_reason(options: dict[str, Any], device: str,
                                          sm: tuple[int, int] | None) -> None:
    gpus = 0 if device == "cpu" else 1
    assert opts.unsupported_reason(options, device=device, sm=sm, gpu_count=gpus) is None


def test_load_refuses_before_loading(tmp_path: Path) -> None:
    runner = DiffusersRunner(str(tmp_path / "no-such-model"), {"cache_backend": "tea_cache"},
                             device="cpu")
    with pytest.raises(ProfileUnsupported, match="TeaCache"):
        runner.load()


# --- one pipeline per profile ----------------------------------------------------------------

def test_same_seed_same_frames_other_seed_other_frames(flux_eager: DiffusersRunner,
                                                       flux_eager_image: Any) -> None:
    again = flux_eager.generate(IMAGE)
    other = flux_eager.generate(GenerationRequest(width=128, height=128, num_inference_steps=10,
                                                  seed=1))
    assert (again.frames[0] == flux_eager_image).all()
    assert not (other.frames[0] == flux_eager_image).all()
    assert flux_eager_image.shape == (128, 128, 3) and flux_eager_image.dtype.name == "uint8"
    assert again.engine_latency_s > 0 and "torch_peak_bytes" not in again.engine_metrics


def test_request_steps_drive_the_transformer(flux_eager: DiffusersRunner) -> None:
    calls = []
    hook = flux_eager.pipe.transformer.register_forward_hook(lambda *a: calls.append(1))
    try:
        for steps in (3, 5):
            calls.clear()
            flux_eager.generate(GenerationRequest(width=64, height=64, num_inference_steps=steps))
            assert len(calls) == steps
    finally:
        hook.remove()


@pytest.mark.parametrize("cache_config", [
    {},
    {"enable_taylorseer": True, "taylorseer_order": 1},
], ids=["dbcache", "taylorseer"])
def test_cache_dit_caches_steps_close_to_eager(models: dict[str, Path], flux_eager_image: Any,
                                               cache_config: dict[str, Any]) -> None:
    with loaded(models["tiny-flux"], {**CACHE_DIT, "cache_config": cache_config}) as runner:
        if cache_config:
            assert "TaylorSeer" in runner.applied["cache_backend"]
        out = runner.generate(IMAGE)
        stats = out.engine_metrics["cache"]
        assert stats["cached_steps"] > 0 and stats["executed_steps"] == IMAGE.num_inference_steps
        assert ssim(out.frames[0], flux_eager_image) > 0.9


def test_scm_mask_follows_each_requests_step_count(models: dict[str, Path]) -> None:
    options = {**CACHE_DIT, "cache_config": {"scm_steps_mask_policy": "medium"}}
    with loaded(models["tiny-flux"], options) as runner:
        for steps in (12, 8):
            mask = cache_dit.steps_mask(mask_policy="medium", total_steps=steps)
            out = runner.generate(GenerationRequest(width=64, height=64,
                                                    num_inference_steps=steps))
            cached = set(out.engine_metrics["cache"]["cached_step_indices"])
            assert cached and cached <= {i for i, m in enumerate(mask) if m == 0}


def test_cache_dit_leaves_other_pipelines_of_the_class_alone(
        models: dict[str, Path], flux_eager: DiffusersRunner) -> None:
    from diffusers import FluxPipeline

    with loaded(models["tiny-flux"], CACHE_DIT) as runner:
        assert runner.pipe._is_cached and not getattr(flux_eager.pipe, "_is_cached", False)
        assert not hasattr(FluxPipeline, "_original_call")
        assert runner.generate(SMALL_IMAGE).engine_metrics["cache"]
        assert "cache" not in flux_eager.generate(SMALL_IMAGE).engine_metrics


def test_compile_compiles_the_repeated_blocks(models: dict[str, Path],
                                              flux_eager: DiffusersRunner) -> None:
    from torch._dynamo.utils import counters

    graphs_before = counters["stats"]["unique_graphs"]
    with loaded(models["tiny-flux"], {}) as runner:  # enforce_eager absent: compile
        assert "compile_repeated_blocks" in runner.applied["compile"]
        blocks = [*runner.pipe.transformer.transformer_blocks,
                  *runner.pipe.transformer.single_transformer_blocks]
        assert all(b._compiled_call_impl is not None for b in blocks)
        out = runner.generate(SMALL_IMAGE)
        assert counters["stats"]["unique_graphs"] > graphs_before
        assert ssim(out.frames[0], flux_eager.generate(SMALL_IMAGE).frames[0]) > 0.98


def test_load_reports_its_startup_phases(models: dict[str, Path],
                                         flux_eager: DiffusersRunner) -> None:
    phases = flux_eager.startup_phases()
    assert phases["compile"] == "none" and phases["compile_s"] is None
    assert all(phases[name] >= 0 for name in ("imports_s", "load_s", "apply_s"))
    with loaded(models["tiny-flux"], {}) as runner:  # compile: wrapped now, traced on 1st call
        assert runner.startup_phases()["compile"] == "first_request"
        assert runner.startup_phases()["compile_s"] is None


def test_vae_tiling_tiles_and_slicing_is_set(models: dict[str, Path],
                                             flux_eager: DiffusersRunner) -> None:
    options = {**EAGER, "vae_use_tiling": True, "vae_use_slicing": True}
    with loaded(models["tiny-flux"], options) as tiling:
        for runner in (flux_eager, tiling):
            _check_tiling(runner, tiled=runner is tiling)
        # tiny-flux's VAE tiles are 64 px: kept at 128 px (above), halved at 64 px
        assert fit_vae_tiles(tiling.pipe.vae, 64, 64) == {"tile_sample_min_size": 32,
                                                          "tile_latent_min_size": 4}


def _check_tiling(runner: DiffusersRunner, *, tiled: bool) -> None:
    vae = runner.pipe.vae
    calls = []
    original = vae.tiled_decode

    def spy(*args: Any, **kwargs: Any) -> Any:
        calls.append(args)
        return original(*args, **kwargs)

    vae.tiled_decode = spy
    try:
        out = runner.generate(IMAGE)
    finally:
        del vae.tiled_decode
    assert (len(calls) > 0) == tiled and vae.use_slicing == tiled
    if tiled:
        assert out.engine_metrics["vae_tiles"] == {"tile_sample_min_size": 64,
                                                   "tile_latent_min_size": 8}


@pytest.mark.parametrize(("size", "tile"), [(48, 32), (64, 32), (80, 64)])
def test_vae_tiles_return_the_image_at_its_size(models: dict[str, Path], size: int,
                                                tile: int) -> None:
    with loaded(models["tiny-flux"], {**EAGER, "vae_use_tiling": True}) as runner:
        out = runner.generate(GenerationRequest(width=size, height=size, num_inference_steps=2))
        assert out.engine_metrics["vae_tiles"]["tile_sample_min_size"] == tile
        assert out.frames[0].shape == (size, size, 3)


def test_image_too_small_to_tile_exactly_is_unsupported(models: dict[str, Path]) -> None:
    with loaded(models["tiny-flux"], {**EAGER, "vae_use_tiling": True}) as runner:
        with pytest.raises(ProfileUnsupported, match=r"a 32x32 image is too small .* 64x64"):
            runner.generate(GenerationRequest(width=32, height=32, num_inference_steps=2))


def test_fit_vae_tiles_keeps_defaults_for_large_images(models: dict[str, Path]) -> None:
    with loaded(models["tiny-wan"], {**EAGER, "vae_use_tiling": True}) as runner:
        small = fit_vae_tiles(runner.pipe.vae, 64, 64)
        large = fit_vae_tiles(runner.pipe.vae, 480, 832)
        assert small["tile_sample_min_height"] == 32 < 64
        assert large == {"tile_sample_min_height": 256, "tile_sample_min_width": 256,
                         "tile_sample_stride_height": 192, "tile_sample_stride_width": 192}


def test_video_has_num_frames_frames(wan_eager: DiffusersRunner) -> None:
    out = wan_eager.generate(VIDEO)
    assert len(out.frames) == VIDEO.num_frames
    assert {(f.shape, f.dtype.name) for f in out.frames} == {((64, 64, 3), "uint8")}


def test_cache_dit_on_video_counts_cfg_per_request(models: dict[str, Path],
                                                   wan_eager: DiffusersRunner) -> None:
    assert opts.uses_separate_cfg(wan_eager.pipe, VIDEO) is False  # guidance 1.0
    assert opts.uses_separate_cfg(wan_eager.pipe, GenerationRequest(num_frames=5)) is True
    with loaded(models["tiny-wan"], CACHE_DIT) as runner:
        stats = runner.generate(VIDEO).engine_metrics["cache"]
        assert stats["cached_steps"] > 0 and "cfg_cached_steps" not in stats
        assert stats["executed_steps"] == VIDEO.num_inference_steps


def test_flow_shift_sets_the_scheduler_or_refuses(models: dict[str, Path]) -> None:
    with loaded(models["tiny-wan"], {**EAGER, "flow_shift": 5.0}) as runner:
        assert runner.pipe.scheduler.config.flow_shift == 5.0
    flux = DiffusersRunner(str(models["tiny-flux"]), {**EAGER, "flow_shift": 5.0}, device="cpu")
    with pytest.raises(ProfileUnsupported, match="flow_shift"):
        flux.load()
    wan = DiffusersRunner(str(models["tiny-wan"]), {**EAGER, "boundary_ratio": 0.9},
                          device="cpu")
    with pytest.raises(ProfileUnsupported, match="two-transformer"):
        wan.load()


def test_call_kwargs_match_the_pipeline(flux_eager: DiffusersRunner,
                                        wan_eager: DiffusersRunner) -> None:
    kwargs = opts.pipeline_call_kwargs(flux_eager.pipe, IMAGE, EAGER)
    assert kwargs["max_sequence_length"] == opts.SMALL_MAX_SEQUENCE_LENGTH
    assert "num_frames" not in kwargs and "guidance_scale" not in kwargs
    with pytest.raises(ValueError, match="makes images"):
        opts.pipeline_call_kwargs(flux_eager.pipe, VIDEO, EAGER)
    with pytest.raises(ValueError, match="makes videos"):
        opts.pipeline_call_kwargs(wan_eager.pipe, IMAGE, EAGER)


def test_close_is_idempotent_and_final(models: dict[str, Path]) -> None:
    runner = DiffusersRunner(str(models["tiny-flux"]), EAGER, device="cpu")
    runner.load()
    runner.close()
    runner.close()
    with pytest.raises(RuntimeError, match="load"):
        runner.generate(SMALL_IMAGE)
    assert set(runner.versions()) >= {"torch", "diffusers", "cache_dit", "torchao",
                                      "transformers"}


def test_cuda_cache_is_emptied_only_when_the_request_shape_changes() -> None:
    """A reused engine must not report a larger earlier request's memory (NVML counts the
    caching allocator's blocks), yet must not free and retake memory in every round."""
    assert not release_cached_blocks(None, IMAGE)  # first request of the engine
    assert not release_cached_blocks(request_shape(IMAGE), IMAGE)  # next round, same shape
    assert release_cached_blocks(request_shape(IMAGE), SMALL_IMAGE)
    assert release_cached_blocks(request_shape(SMALL_IMAGE), VIDEO)
