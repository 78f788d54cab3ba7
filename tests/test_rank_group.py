"""Multi-process (multi-GPU) profiles of the diffusers backend, run for real on CPU.

Ulysses sequence parallelism runs on CPU over gloo with the real diffusers context-parallel
hooks, so the whole path -- one worker per rank, rendezvous, lock-step requests, rank 0's
output, a dying rank taking the group down -- is tested here; GPU runs add NCCL, Ring and
tensor parallelism (docs/gpu-runs.md).
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator, Mapping
from pathlib import Path

import pytest

pytest.importorskip("diffusers")
skimage_metrics = pytest.importorskip("skimage.metrics")

from pytest_omni_perf.engines import diffusers_engine, diffusers_parallel  # noqa: E402
from pytest_omni_perf.engines.base import (  # noqa: E402
    EngineError, EngineSpec, GenerationRequest, ProfileUnsupported,
)
from pytest_omni_perf.engines.process import running  # noqa: E402
from pytest_omni_perf.engines.rank_group import RankGroupEngine  # noqa: E402
from pytest_omni_perf.hardware import HardwareInfo  # noqa: E402

USP2 = {"enforce_eager": True, "ulysses_degree": 2}
REQUEST = GenerationRequest(width=64, height=64, num_inference_steps=3)
NO_GPU = HardwareInfo()


def _spec(cache: Path, name: str, options: Mapping[str, object], *, model: str = "tiny-flux",
          in_process: bool = False) -> EngineSpec:
    return EngineSpec(model=model, profile_name=name, options=options, backend="diffusers",
                      cache_dir=str(cache), start_timeout_s=300, request_timeout_s=300,
                      in_process=in_process)


def _still_running(pids: list[int]) -> list[int]:
    """Those of ``pids`` still running (zombies count as gone)."""
    return [pid for pid in pids if running(pid)]


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    shared = os.environ.get("OMNI_PERF_CACHE_DIR")
    return Path(shared) if shared else tmp_path_factory.mktemp("cache")


@pytest.fixture
def usp2(cache: Path) -> Iterator[RankGroupEngine]:
    engine = diffusers_engine.create(_spec(cache, "usp2", USP2), NO_GPU)
    assert isinstance(engine, RankGroupEngine)
    engine.start()
    try:
        yield engine
    finally:
        engine.stop()


def test_ulysses_over_two_processes_matches_one_process(usp2: RankGroupEngine,
                                                        cache: Path) -> None:
    parallel = usp2.generate(REQUEST)
    pids = usp2.pids()
    assert len({p for p in pids}) >= 2, "one worker per rank"
    assert usp2.describe().applied["ranks"] == 2
    assert "ulysses_degree=2" in usp2.describe().applied["parallel"]
    assert len(parallel.engine_metrics["rank_latency_s"]) == 2
    single = diffusers_engine.create(_spec(cache, "eager", {"enforce_eager": True}), NO_GPU)
    single.start()
    try:
        reference = single.generate(REQUEST)
    finally:
        single.stop()
    assert len(parallel.frames) == 1 and parallel.frames[0].shape == reference.frames[0].shape
    score = skimage_metrics.structural_similarity(
        parallel.frames[0], reference.frames[0], channel_axis=-1, data_range=255)
    # The split sequence is gathered back exactly; only float summation order differs.
    assert score > 0.99
    usp2.stop()
    assert _still_running(pids) == []


def test_a_rank_killed_mid_request_takes_the_group_down(cache: Path) -> None:
    engine = diffusers_engine.create(_spec(cache, "usp2", USP2), NO_GPU)
    assert isinstance(engine, RankGroupEngine)
    engine.start()
    pids = engine.pids()
    victim = engine.ranks[1].pids()[0]
    long_request = GenerationRequest(width=128, height=128, num_inference_steps=400)
    timer = threading.Timer(1.0, os.kill, (victim, 9))
    timer.start()
    try:
        with pytest.raises(EngineError) as failure:
            engine.generate(long_request)
    finally:
        timer.cancel()
        engine.stop()
    message = str(failure.value)
    assert "rank 1 of 2" in message and "killed by signal 9" in message
    assert "the other ranks were stopped with it" in message
    assert _still_running(pids) == []


def test_a_rank_that_cannot_load_fails_the_start_with_its_cause(tmp_path: Path) -> None:
    folder = tmp_path / "not-a-model"
    folder.mkdir()
    (folder / "model_index.json").write_text('{"_class_name": "NoSuchPipeline"}')
    engine = diffusers_engine.create(
        _spec(tmp_path, "usp2", USP2, model=str(folder)), NO_GPU)
    with pytest.raises(EngineError, match=r"rank \d of 2: .*failed during start"):
        engine.start()


@pytest.mark.parametrize(("options", "device", "gpus", "expected"), [
    ({"ring_degree": 2}, "cpu", 0, "ring_degree needs an attention backend"),
    ({"tensor_parallel_size": 2}, "cpu", 0, "supports cuda devices only"),
    ({"cfg_parallel_size": 2}, "cuda", 2, "CFG parallelism"),
    ({"ulysses_degree": 2, "vae_patch_parallel_size": 2}, "cuda", 2,
     "VAE patch parallelism"),
    ({"tensor_parallel_size": 2, "ulysses_degree": 2}, "cuda", 4,
     "cannot combine tensor and context parallelism"),
    ({"ulysses_degree": 2, "ring_degree": 2}, "cuda", 2, "needs 4 GPUs, 2 visible"),
])
def test_what_the_backend_cannot_run_is_named(options: dict[str, object], device: str,
                                              gpus: int, expected: str) -> None:
    reasons = diffusers_parallel.unsupported_reasons(options, device=device, gpu_count=gpus)
    assert any(expected in reason for reason in reasons), reasons


@pytest.mark.parametrize(("options", "device", "gpus"), [
    ({"ulysses_degree": 2}, "cpu", 0),
    ({"ulysses_degree": 2, "ring_degree": 2}, "cuda", 4),
    ({"tensor_parallel_size": 2}, "cuda", 2),
])
def test_what_the_backend_can_run_passes(options: dict[str, object], device: str,
                                         gpus: int) -> None:
    assert diffusers_parallel.unsupported_reasons(options, device=device, gpu_count=gpus) == []


def test_in_process_mode_refuses_several_ranks(cache: Path) -> None:
    with pytest.raises(ProfileUnsupported, match="drop --omni-in-process"):
        diffusers_engine.create(_spec(cache, "usp2", USP2, in_process=True), NO_GPU)
