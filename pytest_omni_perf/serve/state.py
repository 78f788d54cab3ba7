"""What the shipped server holds between requests: the runner, its rules, the video jobs.

Generation runs one request at a time under a lock, as vLLM-Omni's single diffusion engine
does; the HTTP side never blocks on that lock while it reads a request.
"""

from __future__ import annotations

import inspect
import json
import sys
import threading
import time
import traceback
from typing import TYPE_CHECKING, Any

from pytest_omni_perf.engines.diffusers_inputs import max_input_images
from pytest_omni_perf.engines.diffusers_sampling import FIXED_CALL_ARGS
from pytest_omni_perf.omni_wire import encode_mp4
from pytest_omni_perf.serve.protocol import PipelineRules

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt

    from pytest_omni_perf.engines.base import GenerationRequest
    from pytest_omni_perf.engines.diffusers_runner import DiffusersRunner

Frames = list["npt.NDArray[np.uint8]"]


def log(message: str) -> None:
    """One line in the server's log (stderr), flushed so a failing start shows it."""
    print(f"[pytest_omni_perf.serve] {message}", file=sys.stderr, flush=True)


def pipeline_rules(pipe: Any) -> PipelineRules:
    """The request rules of a loaded diffusers pipeline.

    Sizes: a multiple of the VAE's spatial scale times the transformer's patch (Flux packs
    latents 2x2 on top: ``FluxPipeline.check_inputs`` wants ``vae_scale_factor * 2``; Wan's
    ``check_inputs`` wants 16 = 8 x patch 2). Frames: ``num_frames - 1`` a multiple of the
    VAE's temporal scale (Wan rounds other counts silently). Other pipelines resize or
    round what breaks these, so a request that passes them is rendered as asked.
    """
    spatial = getattr(pipe, "vae_scale_factor_spatial", None) or \
        getattr(pipe, "vae_scale_factor", None) or 8
    config = getattr(getattr(pipe, "transformer", None), "config", None)
    patch = getattr(config, "patch_size", None) or 1
    if isinstance(patch, (list, tuple)):
        patch = patch[-1]
    if hasattr(pipe, "_pack_latents"):
        patch = max(int(patch), 2)
    params = inspect.signature(pipe.__call__).parameters
    frames = params.get("num_frames")
    default = frames.default if frames is not None else None
    image = params.get("image")
    return PipelineRules(
        multiple=int(spatial) * int(patch), video=frames is not None,
        frame_step=int(getattr(pipe, "vae_scale_factor_temporal", None) or 1),
        default_frames=default if isinstance(default, int) else None,
        needs_image=image is not None and image.default is inspect.Parameter.empty,
        max_images=max_input_images(pipe),
        takes=frozenset(params) - FIXED_CALL_ARGS
        | ({"flow_shift"} if _static_shift(pipe) else set()))


def _static_shift(pipe: Any) -> bool:
    """Whether a request's flow_shift can be honoured (the scheduler shifts statically)."""
    from pytest_omni_perf.engines.base import ProfileUnsupported
    from pytest_omni_perf.engines.diffusers_sampling import shifted_scheduler

    try:
        shifted_scheduler(pipe, 1.0, "flow_shift")
    except ProfileUnsupported:
        return False
    return True


class ServerState:
    """The engine runner, its rules, the jobs, and the lock that makes generation serial."""

    def __init__(self, model_name: str) -> None:
        self.model_name = model_name
        self.runner: DiffusersRunner | None = None
        self.rules = PipelineRules()
        self.info: dict[str, Any] = {}
        self.ready = threading.Event()
        self.lock = threading.Lock()
        self.jobs: dict[str, dict[str, Any]] = {}
        self.videos: dict[str, bytes] = {}
        self.created = int(time.time())

    def generate(self, request: GenerationRequest) -> tuple[Frames, dict[str, Any]]:
        """Run one request under the lock; returns frames and the vLLM-Omni-style metrics."""
        kind = f"video {request.num_frames} frames" if request.is_video else "image"
        if request.images:
            kind += f" from {len(request.images)} input image(s)"
        log(f"generating {kind} {request.width}x{request.height}, "
            f"{request.num_inference_steps} steps, seed {request.seed}")
        with self.lock:
            if self.runner is None:
                raise RuntimeError("the server is shutting down")
            began = time.perf_counter()
            output = self.runner.generate(request)
            elapsed = time.perf_counter() - began
        engine = json.loads(json.dumps(output.engine_metrics, default=str))
        peak = engine.get("torch_peak_bytes")
        metrics = {"stage_durations": {"stage_0_gen_ms": round(output.engine_latency_s * 1e3, 3)},
                   "peak_memory_mb": round(peak / 2**20, 3) if peak else 0.0,
                   "inference_time_s": round(elapsed, 6), "engine_metrics": engine}
        return output.frames, metrics

    def run_job(self, job_id: str, request: GenerationRequest, fps: float) -> None:
        """Background body of ``POST /v1/videos``: the job's outcome lands in ``jobs``."""
        job = self.jobs[job_id]
        job["status"] = "in_progress"
        try:
            frames, metrics = self.generate(request)
            self.videos[job_id] = encode_mp4(frames, fps)
        except Exception as exc:  # noqa: BLE001 - any failure is the job's outcome
            traceback.print_exc()
            job.update(status="failed",
                       error={"code": 500, "message": f"{type(exc).__name__}: {exc}"})
            return
        job.update(status="completed", progress=100, completed_at=int(time.time()),
                   file_name=f"{job_id}.mp4", num_frames=len(frames),
                   inference_time_s=metrics["inference_time_s"],
                   stage_durations=metrics["stage_durations"],
                   peak_memory_mb=metrics["peak_memory_mb"], metrics=metrics)
